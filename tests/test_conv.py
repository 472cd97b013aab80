"""SmallMapConv2D: Keras' Conv2D whose kernel gradient on small bfloat16 maps is computed as matrix products."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from sslzoo.backbones import build_encoder
from sslzoo.layers.builtin import BUILTIN, with_builtin_layers
from sslzoo.layers.conv import MAX_POSITIONS, SmallMapConv2D, conv2d_gemm_kernel_grad


def _native_grads(x, kernel, strides, padding, dy):
    with tf.GradientTape() as tape:
        tape.watch([x, kernel])
        y = tf.nn.conv2d(x, kernel, strides, padding)
    return y, tape.gradient(y, [x, kernel], output_gradients=dy)


@pytest.mark.parametrize("size, kernel_size, channels, filters, strides, padding", [
    (4, 3, 5, 7, 1, "SAME"),   # a last stage's 3x3 conv
    (9, 3, 4, 6, 2, "VALID"),  # the strided conv after its explicit zero padding (8x8 -> 4x4)
    (8, 1, 4, 6, 2, "VALID"),  # the 1x1 projection shortcut
    (6, 3, 3, 2, 1, "SAME"),
    (5, 2, 3, 4, 1, "SAME"),   # an even kernel pads unevenly: the patches, not the shifted slices
])
def test_the_gemm_kernel_gradient_is_the_convolutions_gradient(size, kernel_size, channels, filters, strides,
                                                               padding):
    """In float64 the matrix products (shifted slices for stride 1, patches otherwise) equal TensorFlow's Conv2DBackpropFilter to
    rounding, and the output and input gradient are TensorFlow's own."""
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(3, size, size, channels)))
    kernel = tf.constant(rng.normal(size=(kernel_size, kernel_size, channels, filters)))
    dy = tf.constant(rng.normal(size=tf.nn.conv2d(x, kernel, strides, padding).shape))
    y_native, (dx_native, dk_native) = _native_grads(x, kernel, strides, padding, dy)
    with tf.GradientTape() as tape:
        tape.watch([x, kernel])
        y = conv2d_gemm_kernel_grad(x, kernel, strides, padding)
    dx, dk = tape.gradient(y, [x, kernel], output_gradients=dy)
    np.testing.assert_array_equal(y.numpy(), y_native.numpy())
    np.testing.assert_allclose(dx.numpy(), dx_native.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dk.numpy(), dk_native.numpy(), rtol=1e-10, atol=1e-10)


def _gradient_op_types(layer, inputs):
    @tf.function
    def grads(x):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.cast(layer(x), tf.float32))
        return tape.gradient(loss, layer.trainable_variables)

    return {op.type for op in grads.get_concrete_function(inputs).graph.get_operations()}


@pytest.mark.parametrize("dtype, size, strides, gemm", [
    ("mixed_bfloat16", 8, 1, True),     # 64 output positions, stride 1: the shifted slices
    ("mixed_bfloat16", 16, 1, False),   # 256 positions: oneDNN's own kernel measured faster
    ("mixed_bfloat16", 9, 2, True),     # a strided conv's 4x4 output: the patches
    ("mixed_bfloat16", 17, 2, False),   # its 8x8 output: oneDNN's own kernel
    ("float32", 4, 1, False),           # float32: no gain measured, Keras' path exactly
])
def test_the_gemm_is_used_only_on_small_bfloat16_maps(dtype, size, strides, gemm):
    out = size // strides
    limit = MAX_POSITIONS["shifted" if strides == 1 else "patches"]
    assert (out * out <= limit) == gemm or dtype == "float32"
    keras.mixed_precision.set_global_policy(dtype)
    try:
        layer = SmallMapConv2D(8, 3, strides=strides, padding="same" if strides == 1 else "valid", use_bias=False)
        inputs = tf.TensorSpec([2, size, size, 4], tf.float32)
        layer.build(inputs.shape)
        ops = _gradient_op_types(layer, inputs)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert ("MatMul" in ops) == gemm
    assert ("Conv2DBackpropFilter" in ops) == (not gemm)


def test_a_bfloat16_resnet_stage_trains_as_with_keras_conv():
    """The layer under mixed_bfloat16 gives Keras Conv2D's outputs and, within bfloat16's rounding, its
    gradients; `with_builtin_layers` swaps it back to Keras' Conv2D with the same weights."""
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        fast = SmallMapConv2D(16, 3, padding="same", use_bias=False, name="c")
        keras_conv = keras.layers.Conv2D(16, 3, padding="same", use_bias=False, name="c")
        x = tf.random.stateless_uniform([4, 4, 4, 32], seed=[1, 2])
        fast.build(x.shape), keras_conv.build(x.shape)
        keras_conv.set_weights(fast.get_weights())
        results = []
        for layer in (fast, keras_conv):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = layer(x)
                loss = tf.reduce_sum(tf.cast(y, tf.float32) ** 2)
            results.append((y, *tape.gradient(loss, [x, layer.kernel])))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    (y_fast, dx_fast, dk_fast), (y_keras, dx_keras, dk_keras) = results
    np.testing.assert_array_equal(y_fast.numpy(), y_keras.numpy())
    np.testing.assert_array_equal(dx_fast.numpy(), dx_keras.numpy())
    # bfloat16 keeps 8 significant bits: the two summation orders agree to a few of its units.
    scale = float(tf.reduce_max(tf.abs(dk_keras)))
    np.testing.assert_allclose(dk_fast.numpy(), dk_keras.numpy(), atol=2 ** -6 * scale)


def test_encoders_use_it_and_artifacts_hold_keras_conv():
    model = build_encoder("resnet18", image_size=32, width=0.25)
    assert any(isinstance(layer, SmallMapConv2D) for layer in model.layers)
    builtin = with_builtin_layers(model, only=(SmallMapConv2D,))  # the convs alone: outputs to the bit
    assert not any(isinstance(layer, SmallMapConv2D) for layer in builtin.layers)
    assert sum(type(layer) is keras.layers.Conv2D for layer in builtin.layers) == sum(
        isinstance(layer, keras.layers.Conv2D) for layer in model.layers)
    x = tf.random.stateless_uniform([2, 32, 32, 3], seed=[0, 1])
    np.testing.assert_array_equal(builtin(x, training=False).numpy(), model(x, training=False).numpy())
    assert not any(type(layer) in BUILTIN for layer in with_builtin_layers(model).layers)
    keras_only = build_encoder("resnet18", image_size=32, width=0.25, norm="batch_keras")
    assert not any(isinstance(layer, SmallMapConv2D) for layer in keras_only.layers)
