"""Learning-rate schedules: closed-form values, RotNet's epoch table at exact steps, serialization."""

import math

import numpy as np
import pytest
import tensorflow as tf

import keras
from sslzoo.config import OptimizerConfig
from sslzoo.optimizers.schedules import LinearWarmup, WarmupCosine, build_schedule, piecewise_by_epoch


def lr_at(schedule, step):
    return float(schedule(tf.constant(step, tf.int64)))


def test_warmup_cosine_closed_form():
    base, final = 1.0, 0.1
    schedule = WarmupCosine(base_lr=base, total_steps=110, warmup_steps=10, final_lr=final)
    assert lr_at(schedule, 0) == pytest.approx(base / 10)  # (s + 1) / warmup: no update at rate 0
    assert lr_at(schedule, 4) == pytest.approx(base * 5 / 10)
    assert lr_at(schedule, 9) == pytest.approx(base)  # last warmup step reaches the peak
    assert lr_at(schedule, 10) == pytest.approx(base)  # cosine starts at the peak
    assert lr_at(schedule, 60) == pytest.approx((base + final) / 2, abs=1e-6)  # midpoint of the decay
    assert lr_at(schedule, 35) == pytest.approx(final + 0.5 * (base - final) * (1 + math.cos(math.pi * 0.25)))
    assert lr_at(schedule, 110) == pytest.approx(final)
    assert lr_at(schedule, 500) == pytest.approx(final)  # stays at final_lr past the end
    decay = [lr_at(schedule, s) for s in range(10, 111)]
    assert np.all(np.diff(decay) <= 1e-7)


def test_warmup_cosine_without_warmup_and_with_warmup_spanning_the_run():
    schedule = WarmupCosine(base_lr=0.5, total_steps=100)
    assert lr_at(schedule, 0) == pytest.approx(0.5)
    assert lr_at(schedule, 50) == pytest.approx(0.25)
    assert lr_at(schedule, 100) == pytest.approx(0.0, abs=1e-7)
    all_warmup = WarmupCosine(base_lr=0.5, total_steps=10, warmup_steps=10)
    assert [round(lr_at(all_warmup, s), 6) for s in (0, 9, 10)] == [0.05, 0.5, 0.5]


def test_rotnet_table_changes_at_exact_steps():
    # RotNet CIFAR: (60, 0.1), (120, 0.02), (160, 0.004), (200, 0.0008); an entry applies while epoch < bound.
    steps_per_epoch = 391
    schedule = piecewise_by_epoch([60, 120, 160], [0.1, 0.02, 0.004, 0.0008], steps_per_epoch)
    expected = {0: 0.1, 60 * 391 - 1: 0.1, 60 * 391: 0.02, 120 * 391 - 1: 0.02, 120 * 391: 0.004,
                160 * 391 - 1: 0.004, 160 * 391: 0.0008, 200 * 391 - 1: 0.0008}
    for step, value in expected.items():
        assert lr_at(schedule, step) == pytest.approx(value), step


def test_piecewise_epoch_semantics_through_an_optimizer():
    # 2 steps per epoch, rate 1.0 in epoch 0 and 0.5 from epoch 1: with gradient 1 and no momentum the
    # weight moves by the rate used at each update, so the rate the optimizer read is visible directly.
    schedule = piecewise_by_epoch([1], [1.0, 0.5], steps_per_epoch=2)
    optimizer = keras.optimizers.SGD(learning_rate=schedule)
    weight = keras.Variable(np.zeros(1, np.float32))
    moves = []
    for _ in range(4):
        before = float(weight.numpy()[0])
        optimizer.apply([tf.ones(1)], [weight])
        moves.append(before - float(weight.numpy()[0]))
    np.testing.assert_allclose(moves, [1.0, 1.0, 0.5, 0.5], atol=1e-7)


def test_piecewise_rejects_bad_tables():
    with pytest.raises(ValueError, match="one more"):
        piecewise_by_epoch([10, 20], [0.1, 0.01], 5)
    with pytest.raises(ValueError, match="increasing"):
        piecewise_by_epoch([20, 10], [0.1, 0.01, 0.001], 5)


def test_build_schedule_kinds():
    cosine = build_schedule(OptimizerConfig(schedule="cosine", learning_rate=0.3, warmup_epochs=0.5), 20, 10)
    assert isinstance(cosine, WarmupCosine)
    assert (cosine.base_lr, cosine.total_steps, cosine.warmup_steps) == (0.3, 200, 10)

    assert build_schedule(OptimizerConfig(schedule="constant", learning_rate=0.01), 20, 10) == 0.01
    constant_warm = build_schedule(OptimizerConfig(schedule="constant", learning_rate=0.01, warmup_epochs=1), 20, 3)
    assert isinstance(constant_warm, LinearWarmup)
    assert lr_at(constant_warm, 0) == pytest.approx(0.01 / 20) and lr_at(constant_warm, 19) == pytest.approx(0.01)
    assert lr_at(constant_warm, 59) == pytest.approx(0.01)

    piecewise = build_schedule(OptimizerConfig(schedule="piecewise", boundaries=[60, 120, 160],
                                               values=[0.1, 0.02, 0.004, 0.0008]), 10, 200)
    assert isinstance(piecewise, keras.optimizers.schedules.PiecewiseConstantDecay)
    assert piecewise.boundaries == [599, 1199, 1599]

    warm_piecewise = build_schedule(OptimizerConfig(schedule="piecewise", boundaries=[2], values=[0.1, 0.01],
                                                    warmup_epochs=1), 10, 4)
    assert isinstance(warm_piecewise, LinearWarmup)
    values = [lr_at(warm_piecewise, s) for s in (0, 4, 9, 19, 20)]
    np.testing.assert_allclose(values, [0.01, 0.05, 0.1, 0.1, 0.01], rtol=1e-6)


@pytest.mark.parametrize("schedule", [
    WarmupCosine(base_lr=1.5, total_steps=300, warmup_steps=30, final_lr=0.01, name="cos"),
    LinearWarmup(piecewise_by_epoch([2, 4], [0.1, 0.01, 0.001], 10), warmup_steps=7),
    LinearWarmup(0.25, warmup_steps=5),
])
def test_schedule_serialization_round_trip(schedule):
    restored = keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(schedule))
    assert type(restored) is type(schedule)
    for step in (0, 3, 7, 29, 30, 45, 150, 300, 400):
        assert lr_at(restored, step) == pytest.approx(lr_at(schedule, step))
    # Through an optimizer config, as a checkpointed / saved model carries it.
    optimizer = keras.optimizers.deserialize(keras.optimizers.serialize(keras.optimizers.SGD(schedule)))
    assert lr_at(optimizer._learning_rate, 45) == pytest.approx(lr_at(schedule, 45))
