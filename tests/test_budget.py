"""Training for a wall-clock budget (`trainer.time_budget_s`): the horizon, the stop, the resume."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from sslzoo import config as config_lib
from sslzoo.config import ConfigError
from sslzoo.layers import ema
from sslzoo.optimizers import build_optimizer
from sslzoo.optimizers.schedules import WarmupCosine
from sslzoo.training import budget as budget_module
from sslzoo.training import trainer
from sslzoo.training.budget import BudgetState, TimeBudget
from tests.harness import tiny_config


def test_a_cosine_over_a_horizon_variable_is_the_cosine_of_its_current_value():
    horizon = tf.Variable(100, dtype=tf.int64)
    follows = WarmupCosine(0.4, total_steps=1, warmup_steps=10, final_lr=0.01, horizon=horizon)
    steps = np.arange(0, 260, 7)
    for length in (100, 250, 37):
        horizon.assign(length)
        fixed = WarmupCosine(0.4, total_steps=length, warmup_steps=10, final_lr=0.01)
        np.testing.assert_allclose([float(follows(s)) for s in steps], [float(fixed(s)) for s in steps], rtol=1e-6)
    assert follows.get_config()["total_steps"] == 37
    # Momentum schedules read the same variable: BYOL's tau at k = K / 2 is the midpoint (1 + tau_base) / 2.
    horizon.assign(80)
    assert float(ema.scheduled_momentum(0.99, 40, horizon)) == pytest.approx(0.995, abs=1e-6)


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


class Steps(keras.callbacks.Callback):
    """Advances the fake clock by each step's cost (the first step traces: 5 s, then 1 s) and records what
    the schedule will use next."""

    def __init__(self, clock, state):
        super().__init__()
        self.clock, self.state, self.horizons, self.rates = clock, state, [], []

    def on_train_batch_begin(self, batch, logs=None):
        self.clock.now += 5.0 if not self.horizons else 1.0

    def on_train_batch_end(self, batch, logs=None):
        self.horizons.append(int(self.state.horizon.numpy()))
        self.rates.append(float(self.model.optimizer.learning_rate))  # the next step's rate


def test_the_budget_stops_before_it_is_passed_and_the_horizon_meets_the_steps_taken():
    clock, state = FakeClock(), BudgetState(initial_horizon=400)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(WarmupCosine(0.1, total_steps=1, horizon=state.horizon)), loss="mse")
    steps = Steps(clock, state)
    budget = TimeBudget(20.0, state, max_steps=400, clock=clock)
    x, y = np.zeros((8, 2), np.float32), np.zeros((8, 1), np.float32)
    model.fit(x, y, batch_size=2, epochs=100, steps_per_epoch=4, verbose=0, callbacks=[budget, steps])
    # 5 s of tracing, then 1 s a step: step n ends at n + 4 s, so 16 steps end exactly at the budget.
    assert budget.stopped and int(model.optimizer.iterations.numpy()) == 16 and clock.now == 20.0
    assert float(state.spent.numpy()) == 20.0 and int(state.horizon.numpy()) == 16
    # None after the traced first step; after the second, 2 + 14 s left / 3 s a step (tracing included);
    # from the third on, measured past the traced steps, the estimate is the truth.
    assert steps.horizons[:2] == [400, 6] and steps.horizons[2:] == [16] * 14
    expected = [float(WarmupCosine(0.1, total_steps=16)(k)) for k in range(3, 16)]
    np.testing.assert_allclose(steps.rates[2:15], expected, rtol=1e-6)


def _budget_config(seconds: float, **changes):
    config = tiny_config("rotnet", {}, trainer={"epochs": 200, "steps_per_epoch": 2, "time_budget_s": seconds},
                         optimizer={"name": "sgd", "learning_rate": 0.05, "schedule": "cosine"})
    return config_lib.from_dict(config.to_dict(), ["method.online_probe=false",
                                                   *[f"{k}={v}" for k, v in changes.items()]])


class TickingClock:
    """A clock that advances `tick` seconds at every read: a trainer-level run then spends its budget in
    the same number of steps however loaded the machine is."""

    def __init__(self, tick: float):
        self.tick, self.now = tick, 0.0

    def __call__(self):
        self.now += self.tick
        return self.now


def test_a_budgeted_run_resumes_within_the_same_budget(tmp_path, monkeypatch):
    from sslzoo.data.kinds import ImageKind

    monkeypatch.setattr(budget_module, "now", TickingClock(0.25))

    config = _budget_config(6.0)
    data = ImageKind().load(config)
    _, _, first = trainer.pretrain(config, tmp_path / "run", data, until_epoch=2)  # as if killed after 2 epochs
    assert first["epochs"] == 2 and 0 < first["budget_spent_s"] < 6.0 and not first["stopped_by_budget"]
    _, method, rest = trainer.pretrain(config, tmp_path / "run", data)
    assert rest["resumed_from_epoch"] == 2 and rest["stopped_by_budget"]
    # The earlier run's seconds count: the two together stay within the budget plus about a step and an
    # epoch's end (a checkpoint save).
    assert first["budget_spent_s"] < rest["budget_spent_s"] <= 6.0 + 1.0
    assert rest["total_steps"] == int(method.optimizer.iterations.numpy()) > 4
    assert rest["epochs"] < 200
    _, _, again = trainer.pretrain(config, tmp_path / "run", data)  # nothing left: returns at once
    assert again["budget_spent_s"] == rest["budget_spent_s"] and again["epochs"] == rest["epochs"]


def test_train_py_reports_the_budget_in_metrics(tmp_path, monkeypatch):
    monkeypatch.setattr(budget_module, "now", TickingClock(0.25))
    config = _budget_config(4.0, **{"eval.random_init": "false"})
    metrics = trainer.train_run(config, tmp_path / "run", verbose=0)
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved == json.loads(json.dumps(metrics))
    assert saved["time_budget_s"] == 4.0 and saved["stopped_by_budget"] and saved["budget_spent_s"] <= 4.0 + 1.0
    assert saved["epochs"] < 200 and saved["total_steps"] >= 2


@pytest.mark.parametrize("change, message", [
    ({"trainer.time_budget_s": -1}, "time_budget_s must be >= 0"),
    ({"optimizer.schedule": "piecewise", "optimizer.boundaries": "[1]", "optimizer.values": "[0.1,0.01]"},
     "piecewise changes the rate at fixed epochs"),
    ({"trainer.strategy": "multi_worker"}, "each worker's clock"),
])
def test_budgets_the_run_cannot_keep_are_refused(change, message):
    with pytest.raises(ConfigError, match=message):
        _budget_config(10.0, **change)


def test_a_budget_reaches_the_methods_schedules(tmp_path):
    """BYOL's momentum follows the horizon the trainer gives it (the same variable as the optimizer's)."""
    from sslzoo.data.kinds import ImageKind

    config = tiny_config("byol", {}, trainer={"epochs": 50, "steps_per_epoch": 2, "time_budget_s": 3.0},
                         optimizer={"name": "sgd", "learning_rate": 0.05, "schedule": "cosine"})
    _, method, training = trainer.pretrain(config, tmp_path / "run", ImageKind().load(config))
    assert isinstance(method.total_steps, tf.Variable)
    assert int(method.total_steps.numpy()) == training["total_steps"]
    assert method.optimizer._learning_rate.horizon is method.total_steps
    with pytest.raises(ValueError, match="piecewise"):
        build_optimizer(config_lib.from_dict(config.to_dict(), [
            "optimizer.schedule=piecewise", "optimizer.boundaries=[1]", "optimizer.values=[0.1,0.01]",
            "trainer.time_budget_s=0"]).optimizer, 2, 2, horizon=method.total_steps)
