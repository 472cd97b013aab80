"""LARS against a NumPy reference of its update rule; coupled-L2 SGD/Adam; `build_optimizer`."""

import copy

import numpy as np
import pytest
import tensorflow as tf

import keras
from sslzoo.config import OptimizerConfig
from sslzoo.optimizers import LARS, CoupledAdam, CoupledSGD, build_optimizer
from sslzoo.optimizers.schedules import WarmupCosine


def lars_reference(w, gradients, lr, momentum, weight_decay, eta, nesterov, decay, adapt):
    """LARS written straight from You et al. 2017 / SimCLR's lars_optimizer.py, float64, one variable."""
    w = np.asarray(w, np.float64).copy()
    v = np.zeros_like(w)
    for g in gradients:
        g = np.asarray(g, np.float64)
        if decay:
            g = g + weight_decay * w
        trust_ratio = 1.0
        if adapt:
            w_norm, g_norm = np.linalg.norm(w), np.linalg.norm(g)
            trust_ratio = eta * w_norm / g_norm if (w_norm > 0 and g_norm > 0) else 1.0
        v = momentum * v + lr * trust_ratio * g
        w = w - (momentum * v + lr * trust_ratio * g if nesterov else v)
    return w


def dense_layer(name="dense", units=3, inputs=4, kernel=None):
    layer = keras.layers.Dense(units, name=name, kernel_initializer="random_normal", bias_initializer="random_normal")
    layer.build((None, inputs))
    if kernel is not None:
        layer.kernel.assign(kernel)
    return layer


def run_steps(optimizer, variables, gradients_per_step):
    for gradients in gradients_per_step:
        optimizer.apply([tf.constant(g, tf.float32) for g in gradients], variables)


def random_gradients(variables, steps, seed=0):
    rng = np.random.default_rng(seed)
    return [[rng.normal(size=v.shape).astype(np.float32) for v in variables] for _ in range(steps)]


@pytest.mark.parametrize("nesterov", [False, True])
def test_lars_matches_numpy_reference_kernel_adapted_bias_excluded(nesterov):
    keras.utils.set_random_seed(1)
    layer = dense_layer()
    variables = [layer.kernel, layer.bias]
    start = [v.numpy().copy() for v in variables]
    steps = random_gradients(variables, steps=5)
    settings = dict(lr=0.5, momentum=0.9, weight_decay=0.01, eta=0.2, nesterov=nesterov)
    optimizer = LARS(
        learning_rate=settings["lr"], momentum=settings["momentum"], weight_decay=settings["weight_decay"],
        eta=settings["eta"], nesterov=nesterov,
    )
    run_steps(optimizer, variables, steps)

    kernel_expected = lars_reference(start[0], [s[0] for s in steps], decay=True, adapt=True, **settings)
    bias_expected = lars_reference(start[1], [s[1] for s in steps], decay=False, adapt=False, **settings)
    np.testing.assert_allclose(layer.kernel.numpy(), kernel_expected, atol=1e-6)
    np.testing.assert_allclose(layer.bias.numpy(), bias_expected, atol=1e-6)
    # The reference differs from plain momentum SGD, so the match above is not a coincidence.
    plain = lars_reference(start[0], [s[0] for s in steps], decay=False, adapt=False, **settings)
    assert np.abs(kernel_expected - plain).max() > 1e-2


def test_lars_name_patterns_match_keras_variable_paths():
    keras.utils.set_random_seed(2)
    projector = dense_layer(name="projector")
    encoder = dense_layer(name="encoder_dense")
    variables = [projector.kernel, encoder.kernel, encoder.bias]
    start = [v.numpy().copy() for v in variables]
    steps = random_gradients(variables, steps=3, seed=3)
    settings = dict(lr=0.3, momentum=0.9, weight_decay=0.05, eta=0.5, nesterov=False)
    optimizer = LARS(
        learning_rate=0.3, momentum=0.9, weight_decay=0.05, eta=0.5,
        exclude_from_weight_decay=["projector"], exclude_from_layer_adaptation=[], skip_1d_variables=False,
    )
    run_steps(optimizer, variables, steps)
    expected = [
        lars_reference(start[0], [s[0] for s in steps], decay=False, adapt=True, **settings),
        lars_reference(start[1], [s[1] for s in steps], decay=True, adapt=True, **settings),
        lars_reference(start[2], [s[2] for s in steps], decay=True, adapt=True, **settings),  # 1-D not skipped
    ]
    for variable, want in zip(variables, expected):
        np.testing.assert_allclose(variable.numpy(), want, atol=1e-6)


def test_lars_trust_ratio_is_one_for_zero_weights_and_zero_gradient_is_finite():
    layer = dense_layer(kernel=np.zeros((4, 3), np.float32))
    gradient = np.full((4, 3), 0.25, np.float32)
    optimizer = LARS(learning_rate=0.1, momentum=0.9, weight_decay=0.01, eta=0.001)
    optimizer.apply([tf.constant(gradient), tf.zeros((3,))], [layer.kernel, layer.bias])
    # w = 0, so ||w|| = 0: ratio 1, v = lr * g, w = -v (an eta-scaled step would be 1000x smaller).
    np.testing.assert_allclose(layer.kernel.numpy(), -0.1 * gradient, atol=1e-7)
    before = layer.kernel.numpy().copy()
    velocity = optimizer.momentums[0].numpy().copy()
    optimizer.apply([tf.zeros((4, 3)), tf.zeros((3,))], [layer.kernel, layer.bias])
    # A zero gradient with weight decay is not zero (g' = wd * w), so only check finiteness and the rule.
    expected = lars_reference(before, [np.zeros((4, 3))], 0.1, 0.9, 0.01, 0.001, False, True, True)
    expected_with_velocity = expected - 0.9 * velocity
    assert np.all(np.isfinite(layer.kernel.numpy()))
    np.testing.assert_allclose(layer.kernel.numpy(), expected_with_velocity, atol=1e-6)


def test_lars_get_config_round_trip_with_schedule():
    schedule = WarmupCosine(base_lr=4.8, total_steps=1000, warmup_steps=100)
    optimizer = LARS(learning_rate=schedule, momentum=0.8, weight_decay=1e-6, eta=0.002, nesterov=True,
                     exclude_from_weight_decay=["head"], exclude_from_layer_adaptation=["bn"])
    config = optimizer.get_config()
    restored = LARS.from_config(copy.deepcopy(config))  # from_config rewrites the dict it is given
    assert restored.get_config() == config
    for key, value in dict(momentum=0.8, weight_decay=1e-6, eta=0.002, nesterov=True,
                           exclude_from_weight_decay=["head"], exclude_from_layer_adaptation=["bn"],
                           skip_1d_variables=True).items():
        assert config[key] == value
    via_keras = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert isinstance(via_keras, LARS) and isinstance(via_keras._learning_rate, WarmupCosine)
    assert via_keras.get_config() == config
    # The base class must not also apply Keras' decoupled decay.
    assert restored.weight_decay == 1e-6


def test_lars_state_in_optimizer_variables_and_checkpoint(tmp_path):
    layer = dense_layer()
    variables = [layer.kernel, layer.bias]
    optimizer = LARS(learning_rate=0.1, weight_decay=1e-3)
    run_steps(optimizer, variables, random_gradients(variables, steps=2))
    momentum_paths = [v.path for v in optimizer.variables if "momentum" in v.path]
    assert len(momentum_paths) == 2 and all(np.abs(m.numpy()).sum() > 0 for m in optimizer.momentums)

    saved = [m.numpy().copy() for m in optimizer.momentums]
    tf.train.Checkpoint(optimizer=optimizer).write(str(tmp_path / "ckpt"))
    fresh = LARS(learning_rate=0.1, weight_decay=1e-3)
    fresh.build(variables)
    tf.train.Checkpoint(optimizer=fresh).read(str(tmp_path / "ckpt")).assert_consumed()
    for want, got in zip(saved, fresh.momentums):
        np.testing.assert_array_equal(got.numpy(), want)
    assert int(fresh.iterations.numpy()) == 2


def test_lars_trains_a_tiny_model_with_fit():
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 8)).astype(np.float32)
    y = (x @ rng.normal(size=(8, 1))).astype(np.float32)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"),
                              keras.layers.BatchNormalization(), keras.layers.Dense(1)])
    # Kernels move by about lr * eta of their norm per step; biases and BN (1-D, not adapted) take lr itself.
    model.compile(optimizer=LARS(learning_rate=0.1, weight_decay=1e-6, eta=0.2), loss="mse")
    history = model.fit(x, y, batch_size=64, epochs=8, verbose=0).history["loss"]
    assert np.all(np.isfinite(history)) and history[-1] < 0.5 * history[0]


def coupled_twin_check(coupled, plain, weight_decay, steps=4):
    """Coupled-L2 optimizer on w == the plain optimizer fed g + wd * w, step by step."""
    keras.utils.set_random_seed(4)
    a, b = dense_layer(name="a"), dense_layer(name="b")
    b.kernel.assign(a.kernel)
    b.bias.assign(a.bias)
    for gradients in random_gradients([a.kernel, a.bias], steps, seed=5):
        coupled.apply([tf.constant(g) for g in gradients], [a.kernel, a.bias])
        effective = [g + weight_decay * v.numpy() for g, v in zip(gradients, [b.kernel, b.bias])]
        plain.apply([tf.constant(g) for g in effective], [b.kernel, b.bias])
    np.testing.assert_allclose(a.kernel.numpy(), b.kernel.numpy(), atol=1e-6)
    np.testing.assert_allclose(a.bias.numpy(), b.bias.numpy(), atol=1e-6)


def test_coupled_sgd_is_l2_through_the_momentum():
    coupled_twin_check(CoupledSGD(0.1, momentum=0.9, nesterov=True, weight_decay=0.05),
                       keras.optimizers.SGD(0.1, momentum=0.9, nesterov=True), weight_decay=0.05)


def test_coupled_sgd_matches_numpy_reference():
    layer = dense_layer()
    w0 = layer.kernel.numpy().copy()
    steps = random_gradients([layer.kernel, layer.bias], steps=3, seed=6)
    optimizer = CoupledSGD(0.1, momentum=0.9, nesterov=True, weight_decay=0.05)
    run_steps(optimizer, [layer.kernel, layer.bias], steps)
    w, v = w0.astype(np.float64), np.zeros_like(w0, np.float64)
    for g in (s[0] for s in steps):
        g = g + 0.05 * w
        v = 0.9 * v - 0.1 * g
        w = w + 0.9 * v - 0.1 * g
    np.testing.assert_allclose(layer.kernel.numpy(), w, atol=1e-6)


def test_coupled_adam_is_l2_before_the_moments():
    coupled_twin_check(CoupledAdam(0.01, weight_decay=0.1), keras.optimizers.Adam(0.01), weight_decay=0.1)


def test_coupled_round_trip():
    optimizer = CoupledSGD(0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    restored = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert isinstance(restored, CoupledSGD) and restored.get_config() == optimizer.get_config()


@pytest.mark.parametrize("name, cls", [
    ("sgd", CoupledSGD), ("adam", CoupledAdam), ("adamw", keras.optimizers.AdamW),
    ("lamb", keras.optimizers.Lamb), ("lars", LARS),
])
def test_build_optimizer_names_and_schedule(name, cls):
    cfg = OptimizerConfig(name=name, learning_rate=0.2, warmup_epochs=1.0, schedule="cosine")
    optimizer = build_optimizer(cfg, steps_per_epoch=10, epochs=5)
    assert type(optimizer) is cls
    assert isinstance(optimizer._learning_rate, WarmupCosine)
    assert optimizer._learning_rate.total_steps == 50 and optimizer._learning_rate.warmup_steps == 10
    layer = dense_layer()
    before = layer.kernel.numpy().copy()
    optimizer.apply([tf.ones((4, 3)), tf.ones((3,))], [layer.kernel, layer.bias])
    assert not np.allclose(before, layer.kernel.numpy())


def test_build_optimizer_rotnet_recipe():
    cfg = OptimizerConfig(name="sgd", learning_rate=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4,
                          schedule="piecewise", boundaries=[60, 120, 160], values=[0.1, 0.02, 0.004, 0.0008])
    optimizer = build_optimizer(cfg, steps_per_epoch=10, epochs=200)
    assert optimizer.momentum == 0.9 and optimizer.nesterov and optimizer.weight_decay == 5e-4
    optimizer.iterations.assign(600)
    assert float(optimizer.learning_rate) == pytest.approx(0.02)


def test_build_optimizer_lars_skips_1d_and_adamw_excludes_bias():
    lars = build_optimizer(OptimizerConfig(name="lars", nesterov=False, weight_decay=1e-6), 10, 2)
    assert lars.skip_1d_variables and not lars.nesterov and lars.weight_decay == 1e-6
    adamw = build_optimizer(OptimizerConfig(name="adamw", weight_decay=0.05), 10, 2)
    layer = dense_layer()
    assert adamw._use_weight_decay(layer.kernel) and not adamw._use_weight_decay(layer.bias)


@pytest.mark.parametrize("name", ["adam", "adamw", "lamb"])
def test_beta_2_reaches_the_adam_family_and_defaults_to_keras(name):
    assert build_optimizer(OptimizerConfig(name=name), 10, 2).beta_2 == pytest.approx(0.999)
    assert build_optimizer(OptimizerConfig(name=name, beta_2=0.95), 10, 2).beta_2 == pytest.approx(0.95)


@pytest.mark.parametrize("loss_scaled", [False, True])
def test_a_constant_rate_copy_keeps_the_kind_and_settings_at_the_base_rate(loss_scaled):
    from sslzoo.optimizers import with_constant_learning_rate
    from sslzoo.optimizers.schedules import LinearWarmup, WarmupCosine

    schedule = LinearWarmup(WarmupCosine(0.3, total_steps=100, final_lr=0.01), warmup_steps=10)
    optimizer = LARS(learning_rate=schedule, momentum=0.8, weight_decay=1e-4)
    if loss_scaled:
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    copy = with_constant_learning_rate(optimizer, "fixed")
    inner, original = (copy.inner_optimizer, optimizer.inner_optimizer) if loss_scaled else (copy, optimizer)
    assert isinstance(copy, type(optimizer)) and isinstance(inner, LARS) and inner.name == "fixed"
    settings = {k: v for k, v in original.get_config().items() if k not in ("learning_rate", "name")}
    assert {k: v for k, v in inner.get_config().items() if k not in ("learning_rate", "name")} == settings
    variable = keras.Variable(np.ones((3, 3), "float32"))
    inner.build([variable])
    for step in (0, 50, 99):
        inner.iterations.assign(step)
        assert float(inner.learning_rate) == pytest.approx(0.3)
