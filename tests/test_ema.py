"""The momentum (EMA) target: the copy, the update rule against NumPy, what it leaves alone, and BYOL's
cosine schedule of the momentum. MoCo's own use of it is tested in tests/test_moco.py."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from sslzoo.layers import cosine_momentum, momentum_copy, momentum_pairs, momentum_update


def small_model(name="online"):
    inputs = keras.Input((5,))
    x = keras.layers.Dense(4, name="dense")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    outputs = keras.layers.Dense(3, name="out")(x)
    return keras.Model(inputs, outputs, name=name)


def online_and_target():
    keras.utils.set_random_seed(0)
    online = small_model()
    return online, momentum_copy(online, "target")


def test_momentum_copy_starts_equal_and_is_never_trained():
    online, target = online_and_target()
    for a, b in zip(online.weights, target.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert target.trainable_weights == [] and target.name == "target"
    assert {id(v) for v in target.weights}.isdisjoint(id(v) for v in online.weights)
    # Its layers stay trainable: BN normalises with batch statistics and updates its moving mean.
    x = tf.random.stateless_normal([8, 5], seed=[0, 1]) + 3.0
    before = target.get_layer("bn").moving_mean.numpy()
    target(x, training=True)
    assert not np.allclose(target.get_layer("bn").moving_mean.numpy(), before)


def test_pairs_are_the_online_models_trainable_parameters():
    online, target = online_and_target()
    pairs = momentum_pairs([online], [target])
    assert [o.path for _, o in pairs] == [v.path for v in online.trainable_weights]
    assert [t.path for t, _ in pairs] == [v.path for v in target.weights if "moving" not in v.path]
    with pytest.raises(ValueError):
        momentum_pairs([online, online], [target])


@pytest.mark.parametrize("momentum", [0.0, 0.9, 0.996, 1.0])
def test_update_matches_numpy_over_steps_and_leaves_bn_statistics_alone(momentum):
    online, target = online_and_target()
    pairs = momentum_pairs([online], [target])
    rng = np.random.default_rng(1)
    initial = [t.numpy() for t, _ in pairs]
    expected = initial
    bn = target.get_layer("bn")
    statistics = [bn.moving_mean.numpy(), bn.moving_variance.numpy()]
    online_bn = online.get_layer("bn")
    online_bn.moving_mean.assign(rng.normal(size=4))  # would leak into the target if they were averaged
    m = np.float32(momentum)
    for _ in range(3):
        for _, source in pairs:  # stands in for an optimizer step on the online model
            source.assign(source.numpy() + rng.normal(size=source.shape).astype(np.float32))
        momentum_update(pairs, momentum)
        expected = [m * e + np.float32(1.0 - momentum) * o.numpy() for e, (_, o) in zip(expected, pairs)]
        for (t, o), e in zip(pairs, expected):
            np.testing.assert_allclose(t.numpy(), e, rtol=1e-6, atol=1e-7)
            if momentum == 0.0:
                np.testing.assert_array_equal(t.numpy(), o.numpy())  # m = 0: a plain copy
    if momentum == 1.0:  # m = 1: frozen at the initial weights
        for (t, _), start in zip(pairs, initial):
            np.testing.assert_array_equal(t.numpy(), start)
    np.testing.assert_array_equal(bn.moving_mean.numpy(), statistics[0])
    np.testing.assert_array_equal(bn.moving_variance.numpy(), statistics[1])


def test_update_takes_a_scheduled_momentum_tensor_inside_tf_function():
    online, target = online_and_target()
    pairs = momentum_pairs([online], [target])
    initial = [t.numpy() for t, _ in pairs]
    for _, source in pairs:
        source.assign(source + 1.0)
    step = tf.Variable(250, dtype=tf.int64)  # as optimizer.iterations
    tf.function(lambda: momentum_update(pairs, cosine_momentum(0.9, step, 1000)))()
    m = 1.0 - 0.1 * (math.cos(math.pi / 4) + 1.0) / 2.0
    for (t, o), w in zip(pairs, initial):
        np.testing.assert_allclose(t.numpy(), m * w + (1 - m) * o.numpy(), rtol=1e-6, atol=1e-6)


def test_cosine_momentum_goes_from_base_to_one():
    base, total = 0.996, 1000
    assert float(cosine_momentum(base, 0, total)) == pytest.approx(base, abs=1e-7)
    assert float(cosine_momentum(base, total // 2, total)) == pytest.approx((1 + base) / 2, abs=1e-7)
    assert float(cosine_momentum(base, total, total)) == 1.0
    assert float(cosine_momentum(base, total // 4, total)) == pytest.approx(
        1 - (1 - base) * (math.cos(math.pi / 4) + 1) / 2, abs=1e-7)
    values = [float(cosine_momentum(base, k, total)) for k in range(0, total + 1, 50)]
    assert all(b >= a for a, b in zip(values, values[1:]))  # never decreases
    # Outside [0, K] it stays at its ends instead of following the periodic cosine back down.
    assert float(cosine_momentum(base, 3 * total // 2, total)) == 1.0
    assert float(cosine_momentum(base, -5, total)) == pytest.approx(base, abs=1e-7)
    assert cosine_momentum(base, tf.constant(10, tf.int64), total).dtype == tf.float32
