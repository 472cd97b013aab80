"""Learning-rate schedules: linear warmup + cosine decay, warmup around any schedule, and `build_schedule`.

Step convention: a schedule is called with `optimizer.iterations`, the 0-based index of the update about to
be applied, so epoch `e` covers steps `e * steps_per_epoch ... (e + 1) * steps_per_epoch - 1`.

Warmup convention: step `s < warmup_steps` gets `target * (s + 1) / warmup_steps`. The ramp starts at
`target / warmup_steps` rather than 0 so that no update is wasted at rate 0 (SimCLR's `s / warmup_steps`
spends its first step doing nothing, which matters only for very short runs), and it reaches the full rate
on the last warmup step.
"""

from __future__ import annotations

import math
from typing import Union

import keras
from keras import ops

from sslzoo.config import PIECEWISE_BUDGET, OptimizerConfig

Schedule = keras.optimizers.schedules.LearningRateSchedule


@keras.saving.register_keras_serializable(package="sslzoo")
class WarmupCosine(Schedule):
    """Linear warmup to `base_lr` over `warmup_steps`, then cosine decay to `final_lr` at `total_steps`.

    `lr(s) = base_lr * (s + 1) / warmup_steps` for `s < warmup_steps`, then with
    `p = (s - warmup_steps) / (total_steps - warmup_steps)` clipped to [0, 1]:
    `lr(s) = final_lr + 0.5 * (base_lr - final_lr) * (1 + cos(pi * p))`. So `lr(warmup_steps) = base_lr`,
    the midpoint of the decay is `(base_lr + final_lr) / 2`, and `lr(s) = final_lr` for `s >= total_steps`.

    Args:
        base_lr: float, peak learning rate.
        total_steps: int, step at which the decay reaches `final_lr` (the run length).
        warmup_steps: int >= 0, length of the linear warmup.
        final_lr: float, rate at the end of the decay.
        name: optional name.
        horizon: optional integer `tf.Variable` read instead of `total_steps` at every call: the run length
            of a time-budgeted run, re-estimated as it trains (`sslzoo.training.budget`). Not part of the
            config (`total_steps` there is its value when asked).

    Reference: Loshchilov & Hutter, "SGDR", ICLR 2017 (cosine); Goyal et al., "Accurate, Large Minibatch SGD",
    2017 (warmup); as combined in SimCLR (Chen et al., ICML 2020).
    """

    def __init__(self, base_lr: float, total_steps: int, warmup_steps: int = 0, final_lr: float = 0.0, name=None,
                 horizon=None):
        if total_steps < 1:
            raise ValueError(f"WarmupCosine: total_steps must be >= 1, got {total_steps}")
        if warmup_steps < 0:
            raise ValueError(f"WarmupCosine: warmup_steps must be >= 0, got {warmup_steps}")
        self.base_lr = float(base_lr)
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)
        self.final_lr = float(final_lr)
        self.name = name
        self.horizon = horizon

    def __call__(self, step):
        step = ops.cast(step, "float32")
        warmup = float(self.warmup_steps)
        # max(.., 1) keeps a warmup as long as the run (no decay phase) from dividing by zero.
        if self.horizon is None:
            decay_steps = float(max(self.total_steps - self.warmup_steps, 1))
        else:
            decay_steps = ops.maximum(ops.cast(self.horizon, "float32") - warmup, 1.0)
        progress = ops.clip((step - warmup) / decay_steps, 0.0, 1.0)
        cosine = self.final_lr + 0.5 * (self.base_lr - self.final_lr) * (1.0 + ops.cos(math.pi * progress))
        if self.warmup_steps == 0:
            return cosine
        ramp = self.base_lr * (step + 1.0) / warmup
        return ops.where(step < warmup, ramp, cosine)

    def get_config(self):
        return {
            "base_lr": self.base_lr,
            "total_steps": self.total_steps if self.horizon is None else int(self.horizon.numpy()),
            "warmup_steps": self.warmup_steps,
            "final_lr": self.final_lr,
            "name": self.name,
        }


@keras.saving.register_keras_serializable(package="sslzoo")
class LinearWarmup(Schedule):
    """Scales another schedule (or a constant) by `min(1, (s + 1) / warmup_steps)`.

    Unlike `WarmupCosine`, the wrapped schedule keeps its own step axis: a piecewise table still changes at its
    stated epochs, and the warmup only damps its first `warmup_steps` steps (Goyal et al.'s gradual warmup).

    Args:
        schedule: a `LearningRateSchedule` or a float.
        warmup_steps: int >= 1, length of the ramp.
        name: optional name.

    Reference: Goyal et al., "Accurate, Large Minibatch SGD: Training ImageNet in 1 Hour", 2017.
    """

    def __init__(self, schedule: Union[Schedule, float], warmup_steps: int, name=None):
        if warmup_steps < 1:
            raise ValueError(f"LinearWarmup: warmup_steps must be >= 1, got {warmup_steps}")
        if isinstance(schedule, dict):
            schedule = keras.optimizers.schedules.deserialize(schedule)
        self.schedule = schedule
        self.warmup_steps = int(warmup_steps)
        self.name = name

    def __call__(self, step):
        step_f = ops.cast(step, "float32")
        ramp = ops.minimum((step_f + 1.0) / float(self.warmup_steps), 1.0)
        target = self.schedule(step) if isinstance(self.schedule, Schedule) else float(self.schedule)
        return ops.multiply(ops.cast(target, "float32"), ramp)

    def get_config(self):
        schedule = self.schedule
        if isinstance(schedule, Schedule):
            schedule = keras.optimizers.schedules.serialize(schedule)
        return {"schedule": schedule, "warmup_steps": self.warmup_steps, "name": self.name}


def epochs_to_steps(epochs: float, steps_per_epoch: int) -> int:
    """A (possibly fractional) number of epochs -> whole optimizer steps, rounded to the nearest."""
    return int(round(float(epochs) * steps_per_epoch))


def piecewise_by_epoch(boundaries, values, steps_per_epoch: int) -> keras.optimizers.schedules.PiecewiseConstantDecay:
    """RotNet's table `(max_epoch, lr)`: `values[i]` applies while `epoch < boundaries[i]`, as a step schedule.

    Keras' `PiecewiseConstantDecay` uses `values[i]` while `step <= step_boundaries[i]`; the first step of
    epoch `b` is `b * steps_per_epoch`, so the step boundary is one less than that.

    Args:
        boundaries: epochs (ascending, > 0) at which the rate changes; floats allowed.
        values: `len(boundaries) + 1` rates.
        steps_per_epoch: optimizer steps per epoch.
    """
    if len(values) != len(boundaries) + 1:
        raise ValueError(f"piecewise schedule: {len(values)} values for {len(boundaries)} boundaries; need one more")
    step_boundaries = [epochs_to_steps(b, steps_per_epoch) - 1 for b in boundaries]
    if any(b < 0 for b in step_boundaries) or any(a >= b for a, b in zip(step_boundaries, step_boundaries[1:])):
        raise ValueError(f"piecewise schedule: boundaries {list(boundaries)} must be > 0 epochs and increasing")
    return keras.optimizers.schedules.PiecewiseConstantDecay(step_boundaries, [float(v) for v in values])


def build_schedule(cfg: OptimizerConfig, steps_per_epoch: int, epochs: int, horizon=None) -> Union[Schedule, float]:
    """The learning rate an optimizer takes, from `cfg.schedule`.

    "cosine"    -> `WarmupCosine(cfg.learning_rate)` over the whole run, `cfg.warmup_epochs` of warmup.
    "piecewise" -> `cfg.values` changing at `cfg.boundaries` (epochs, RotNet semantics); `cfg.learning_rate`
                   is not used (the table holds absolute rates); wrapped in `LinearWarmup` if warmup_epochs > 0.
    "constant"  -> `cfg.learning_rate` as a float, or `LinearWarmup` of it if warmup_epochs > 0.

    Args:
        cfg: the run's `OptimizerConfig`.
        steps_per_epoch: optimizer steps per epoch (> 0).
        epochs: epochs in the run (> 0).
        horizon: optional integer `tf.Variable`, the run length a time-budgeted run re-estimates as it goes;
            the cosine decays over it instead of `steps_per_epoch * epochs`. A piecewise table is in epochs,
            which such a run does not know in advance: refused.
    """
    if steps_per_epoch < 1 or epochs < 1:
        raise ValueError(f"build_schedule: steps_per_epoch ({steps_per_epoch}) and epochs ({epochs}) must be >= 1")
    warmup_steps = epochs_to_steps(cfg.warmup_epochs, steps_per_epoch)
    if cfg.schedule == "cosine":
        return WarmupCosine(float(cfg.learning_rate), steps_per_epoch * epochs, warmup_steps, horizon=horizon)
    if cfg.schedule == "piecewise":
        if horizon is not None:
            raise ValueError(PIECEWISE_BUDGET)
        schedule = piecewise_by_epoch(cfg.boundaries, cfg.values, steps_per_epoch)
    elif cfg.schedule == "constant":
        schedule = float(cfg.learning_rate)
    else:
        raise ValueError(f"optimizer.schedule: unknown schedule '{cfg.schedule}'; allowed: cosine, piecewise, constant")
    return LinearWarmup(schedule, warmup_steps) if warmup_steps > 0 else schedule


def base_learning_rate(learning_rate) -> float:
    """The rate a schedule is built around: `base_lr` of a `WarmupCosine` (also inside a `LinearWarmup`),
    the value of a constant, else the schedule's value at step 0. Accepts a schedule, its serialised
    dict (`optimizer.get_config()["learning_rate"]`) or a number."""
    if isinstance(learning_rate, dict):
        learning_rate = keras.optimizers.schedules.deserialize(learning_rate)
    if isinstance(learning_rate, WarmupCosine):
        return learning_rate.base_lr
    if isinstance(learning_rate, LinearWarmup):
        return base_learning_rate(learning_rate.schedule)
    if isinstance(learning_rate, Schedule):
        return float(learning_rate(0))
    return float(learning_rate)
