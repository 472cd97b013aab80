"""mlp_head's options for the new methods (output BN without scale and offset, GELU) with its defaults
unchanged, SimCLR's projection head in its three forms, and DINO's head: its forward pass, the
weight-normalised last layer, safe-mode loading."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from sslzoo.heads import dino_head, mlp_head, projection_head
from sslzoo.layers import WeightNormalizedDense


def _gelu(x):
    return 0.5 * x * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))


def _dense(layer, x):
    weights = layer.get_weights()
    return x @ weights[0] + (weights[1] if len(weights) > 1 else 0.0)


def test_mlp_head_defaults_are_unchanged():
    head = mlp_head(8, [16], 4, name="p")
    assert [(type(l).__name__, l.name) for l in head.layers] == [
        ("InputLayer", "p_input"), ("Dense", "p_dense1"), ("BatchNormalization", "p_bn1"),
        ("ReLU", "p_relu1"), ("Dense", "p_out")]
    assert not head.get_layer("p_dense1").use_bias and head.get_layer("p_out").use_bias
    plain = mlp_head(8, [16, 16], 4, batch_norm=False)
    assert [type(l).__name__ for l in plain.layers[1:]] == ["Dense", "ReLU", "Dense", "ReLU", "Dense"]


def test_projection_head_none_is_the_identity_without_weights():
    head = projection_head(6, "none", 128)
    x = np.random.default_rng(0).normal(size=(4, 6)).astype(np.float32)
    np.testing.assert_array_equal(head(x).numpy(), x)
    assert head.weights == [] and head.output_shape == (None, 6)  # z = h: projection_dim does not apply


def test_projection_head_linear_is_one_dense_layer():
    keras.utils.set_random_seed(0)
    head = projection_head(6, "linear", 3, hidden_dim=32, depth=4, name="g")
    assert [type(l).__name__ for l in head.layers[1:]] == ["Dense"]
    x = np.random.default_rng(1).normal(size=(4, 6)).astype(np.float32)
    np.testing.assert_allclose(head(x).numpy(), _dense(head.get_layer("g_out"), x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("depth", [1, 3])
def test_projection_head_nonlinear_has_depth_hidden_layers_of_the_feature_width(depth):
    head = projection_head(6, "nonlinear", 3, depth=depth, name="g")
    dense = [l for l in head.layers if isinstance(l, keras.layers.Dense)]
    assert [l.units for l in dense] == [6] * depth + [3]  # hidden width 0 = the input's
    assert sum(isinstance(l, keras.layers.BatchNormalization) for l in head.layers) == depth
    assert [l.units for l in projection_head(6, "nonlinear", 3, hidden_dim=10, depth=2).layers
            if isinstance(l, keras.layers.Dense)] == [10, 10, 3]


def test_projection_head_depth_one_is_the_mlp_head_simclr_always_had():
    # Same layers, names and initial weights as the head SimCLR built before the options existed.
    keras.utils.set_random_seed(5)
    head = projection_head(8, "nonlinear", 4, name="projector")
    keras.utils.set_random_seed(5)
    before = mlp_head(8, [8], 4, batch_norm=True, name="projector")
    assert head.get_config() == before.get_config()
    for a, b in zip(head.get_weights(), before.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_projection_head_refuses_unknown_forms():
    with pytest.raises(ValueError, match="'none', 'linear' or 'nonlinear'"):
        projection_head(6, "mlp", 3)
    with pytest.raises(ValueError, match="depth 0"):
        projection_head(6, "nonlinear", 3, depth=0)


def test_last_batch_norm_standardises_the_output_without_scale_or_offset():
    keras.utils.set_random_seed(0)
    head = mlp_head(8, [16], 6, last_batch_norm=True, name="proj")
    out_bn = head.get_layer("proj_out_bn")
    assert not head.get_layer("proj_out").use_bias
    assert out_bn.trainable_weights == []  # affine=False, as SimSiam's nn.BatchNorm1d(dim, affine=False)
    x = np.random.default_rng(0).normal(size=(32, 8)).astype(np.float32) * 2.0 + 1.0
    before_bn = keras.Model(head.input, head.get_layer("proj_out").output)(x, training=True).numpy()
    y = head(x, training=True).numpy()
    mean, variance = before_bn.mean(0), before_bn.var(0)
    np.testing.assert_allclose(y, (before_bn - mean) / np.sqrt(variance + out_bn.epsilon), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(y.mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(y.var(0), variance / (variance + out_bn.epsilon), rtol=1e-4)
    # A training step moves the moving mean by (1 - momentum) towards the batch mean (the two calls above,
    # in training mode, have moved it already).
    moving = out_bn.moving_mean.numpy()
    head.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    head.fit(x, np.zeros((32, 6), np.float32), batch_size=32, epochs=1, verbose=0, shuffle=False)
    np.testing.assert_allclose(out_bn.moving_mean.numpy(), 0.9 * moving + 0.1 * mean, rtol=1e-4, atol=1e-6)


def test_gelu_head_is_the_exact_erf_gelu_mlp():
    keras.utils.set_random_seed(1)
    head = mlp_head(5, [7, 3], 2, batch_norm=False, activation="gelu", name="g")
    x = np.random.default_rng(1).normal(size=(4, 5)).astype(np.float32)
    expected = _dense(head.get_layer("g_out"), _gelu(_dense(head.get_layer("g_dense2"),
                                                            _gelu(_dense(head.get_layer("g_dense1"), x)))))
    np.testing.assert_allclose(head(x).numpy(), expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="gelu"):
        mlp_head(5, [7], 2, activation="tanh")


def test_dino_head_is_mlp_l2_normalisation_and_unit_prototypes():
    keras.utils.set_random_seed(2)
    head = dino_head(6, 20, hidden_dim=12, bottleneck_dim=5, num_layers=3)
    x = np.random.default_rng(2).normal(size=(8, 6)).astype(np.float32)
    h = _gelu(_dense(head.get_layer("dino_head_dense1"), x))
    h = _dense(head.get_layer("dino_head_out"), _gelu(_dense(head.get_layer("dino_head_dense2"), h)))
    h = h / np.linalg.norm(h, axis=1, keepdims=True)
    v = head.get_layer("dino_head_last").kernel.numpy()
    logits = head(x).numpy()
    np.testing.assert_allclose(logits, h @ (v / np.linalg.norm(v, axis=0)), rtol=1e-5, atol=1e-6)
    assert logits.shape == (8, 20) and np.abs(logits).max() <= 1.0 + 1e-6  # cosines
    # DINOHead._init_weights: truncated normal (std 0.02) kernels, zero biases.
    kernel = head.get_layer("dino_head_dense1").kernel.numpy()
    assert 0.01 < kernel.std() < 0.03 and np.abs(kernel).max() <= 0.04 + 1e-6
    assert head.get_layer("dino_head_last").trainable_weights == [head.get_layer("dino_head_last").kernel]


def test_weight_normalised_layer_keeps_unit_columns_through_a_training_step():
    keras.utils.set_random_seed(3)
    head = dino_head(6, 10, hidden_dim=8, bottleneck_dim=4)
    last = head.get_layer("dino_head_last")
    x = np.random.default_rng(3).normal(size=(16, 6)).astype(np.float32)
    target = tf.one_hot(np.arange(16) % 10, 10)
    v0 = last.kernel.numpy()
    with tf.GradientTape() as tape:
        loss = keras.losses.categorical_crossentropy(target, head(x, training=True) / 0.1, from_logits=True)
        loss = tf.reduce_mean(loss)
    grads = tape.gradient(loss, head.trainable_weights)
    grad_v = grads[[w.path for w in head.trainable_weights].index(last.kernel.path)].numpy()
    # With the norm fixed, the loss does not depend on each column's length: its gradient is orthogonal
    # to the column...
    np.testing.assert_allclose(np.sum(grad_v * v0, axis=0), 0.0, atol=1e-6)
    lr = 0.5
    keras.optimizers.SGD(lr).apply_gradients(zip(grads, head.trainable_weights))
    v1 = last.kernel.numpy()
    assert np.abs(v1 - v0).max() > 1e-4
    # ... so plain SGD lengthens every column by exactly Pythagoras, and the effective columns stay unit.
    np.testing.assert_allclose(np.sum(v1 ** 2, 0), np.sum(v0 ** 2, 0) + lr ** 2 * np.sum(grad_v ** 2, 0), rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(last.normalized_kernel().numpy(), axis=0), 1.0, rtol=1e-6)


def test_trainable_norm_scales_the_columns():
    layer = WeightNormalizedDense(3, trainable_norm=True)
    layer.build((None, 4))
    assert [w.name for w in layer.trainable_weights] == ["kernel", "norm"]
    np.testing.assert_array_equal(layer.norm.numpy(), 1.0)  # weight_g.data.fill_(1)
    layer.norm.assign([0.5, 2.0, 3.0])
    np.testing.assert_allclose(np.linalg.norm(layer.normalized_kernel().numpy(), axis=0), [0.5, 2.0, 3.0], rtol=1e-6)


def test_dino_head_round_trips_a_keras_file_under_safe_mode(tmp_path):
    keras.utils.set_random_seed(4)
    for norm_last_layer in (True, False):
        head = dino_head(6, 10, hidden_dim=8, bottleneck_dim=4, batch_norm=True, norm_last_layer=norm_last_layer)
        path = tmp_path / f"head_{norm_last_layer}.keras"
        head.save(path)
        loaded = keras.saving.load_model(path, safe_mode=True)
        x = np.random.default_rng(4).normal(size=(3, 6)).astype(np.float32)
        np.testing.assert_allclose(loaded(x).numpy(), head(x).numpy(), rtol=1e-6, atol=1e-7)
        assert loaded.get_layer("dino_head_last").trainable_norm is not norm_last_layer
