"""The fused batch norm is Keras' BatchNormalization computed differently: same numbers, same contract."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from sslzoo.layers import FusedBatchNormalization


def _pair(momentum=0.9, **kwargs):
    x = np.random.default_rng(0).normal(2.0, 3.0, (8, 5, 5, 16)).astype("float32")
    reference, fused = keras.layers.BatchNormalization(momentum=momentum, **kwargs), FusedBatchNormalization(
        momentum=momentum, **kwargs)
    for layer in (reference, fused):
        layer.build(x.shape)
        if layer.scale:
            layer.gamma.assign(np.linspace(0.5, 2.0, 16))
        if layer.center:
            layer.beta.assign(np.linspace(-1.0, 1.0, 16))
    return x, reference, fused


@pytest.mark.parametrize("options", [{}, {"center": False, "scale": False, "epsilon": 1e-5}])
def test_training_step_matches_keras(options):
    """Outputs, moving statistics (Keras' biased-variance rule) and gradients agree with Keras' layer."""
    x, reference, fused = _pair(**options)
    inputs = tf.constant(x)
    outputs, grads = [], []
    for layer in (reference, fused):
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            y = layer(inputs, training=True)
            loss = tf.reduce_sum(y ** 3)  # a non-linear loss, so the backward pass is really exercised
        outputs.append(y.numpy())
        grads.append(tape.gradient(loss, [inputs, *layer.trainable_weights]))
    np.testing.assert_allclose(outputs[1], outputs[0], atol=2e-6)
    np.testing.assert_allclose(fused.moving_mean.numpy(), reference.moving_mean.numpy(), atol=1e-6)
    np.testing.assert_allclose(fused.moving_variance.numpy(), reference.moving_variance.numpy(), rtol=1e-6)
    for got, want in zip(grads[1], grads[0]):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=1e-3)
    # Inference uses the moving statistics, like Keras.
    np.testing.assert_allclose(fused(x, training=False).numpy(), reference(x, training=False).numpy(), atol=2e-6)


def test_bfloat16_in_and_out_statistics_in_float32():
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        layer = FusedBatchNormalization()
        x = tf.random.stateless_normal((4, 3, 3, 8), seed=[1, 2], dtype=tf.bfloat16)
        y = layer(x, training=True)
        assert y.dtype == tf.bfloat16 and layer.moving_mean.dtype == "float32"
        # Normalised: per-channel mean ~0, std ~1 (bfloat16 has ~3 significant digits).
        np.testing.assert_allclose(tf.reduce_mean(tf.cast(y, tf.float32), [0, 1, 2]), 0.0, atol=2e-2)
    finally:
        keras.mixed_precision.set_global_policy(previous)


def test_cases_the_kernel_does_not_cover_fall_back_to_keras():
    """Cross-replica statistics (SimCLR's synchronized BN) and 2-D inputs take Keras' own path."""
    x, reference, fused = _pair()
    fused.synchronized = reference.synchronized = True
    np.testing.assert_allclose(fused(x, training=True), reference(x, training=True), atol=1e-6)
    dense = FusedBatchNormalization()
    flat = x.reshape(8, -1)
    assert dense(flat, training=True).shape == flat.shape


def test_saves_and_loads_as_itself(tmp_path):
    inputs = keras.Input((5, 5, 16))
    model = keras.Model(inputs, FusedBatchNormalization(name="bn")(inputs))
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True)
    assert type(loaded.get_layer("bn")) is FusedBatchNormalization


@pytest.mark.parametrize("name", ["convnet_small", "resnet18"])
def test_encoders_train_fused_by_default_and_save_with_builtin_layers_only(name):
    """The default `norm: batch` (and its older name batch_fused) trains on the fused layer; what is saved
    and exported holds Keras' own layer (so it loads without sslzoo) with the same weights and features;
    `norm: batch_keras` builds Keras' own layer."""
    from sslzoo.backbones import build_encoder
    from sslzoo.layers.builtin import with_builtin_layers

    options = {"width": 0.25} if name == "resnet18" else {}
    fused = build_encoder(name, 32, **options)
    assert any(isinstance(layer, FusedBatchNormalization) for layer in fused.layers)
    alias = build_encoder(name, 32, norm="batch_fused", **options)
    assert [type(x) for x in alias.layers] == [type(x) for x in fused.layers]
    builtin = with_builtin_layers(fused)
    assert all(type(layer).__module__.startswith("keras.src.") for layer in builtin.layers)
    images = np.random.default_rng(0).random((2, 32, 32, 3), dtype=np.float32)
    # The two kernels apply the same affine map in a different order, so they differ by float32 rounding,
    # which grows with the features (ResNet-18's reach ~17 here: 1.3e-5 apart, 8e-7 relative, on one
    # TensorFlow thread): relative and absolute bounds together.
    np.testing.assert_allclose(builtin(images), fused(images), rtol=2e-6, atol=1e-5)
    plain = build_encoder(name, 32, norm="batch_keras", **options)
    assert any(type(x) is keras.layers.BatchNormalization for x in plain.layers)
    assert with_builtin_layers(plain) is plain  # nothing to swap: the model itself
