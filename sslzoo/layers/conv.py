"""Conv2D whose kernel gradient on small bfloat16 feature maps is computed as matrix products: the same
layer, faster on CPU.

On a CPU with AMX, oneDNN's bfloat16 `Conv2DBackpropFilter` is slow where the feature map is small and the
channels many (a ResNet's last stage: 4x4 maps, 512 channels), because it reduces over few positions per
output. The same gradient is `patches(x)^T @ dy`, one bfloat16 GEMM over N x H' x W' rows, which oneDNN runs
near its peak (or one GEMM per kernel tap over the shifted input). Measured (batch 256, 2-core Xeon with
AMX, alone): the 4x4x512 -> 512 kernel gradient 96 ms native against 18 ms; the stride-2 8x8x256 ->
4x4x512 one 64 ms against 18 ms. On larger maps the native kernel wins (`MAX_POSITIONS`), and in float32
neither wins at 4x4 (79 ms against 80 ms), so only bfloat16 maps up to those sizes take the GEMMs.

The forward pass and the input gradient are TensorFlow's own ops, so outputs are unchanged; the kernel
gradient equals the native one up to summation order (checked against it in float64 in the tests). Saved and
exported encoders hold Keras' own Conv2D (`sslzoo.layers.with_builtin_layers`).
"""

from __future__ import annotations

import keras
import tensorflow as tf

# Output positions (H' x W') up to which the GEMM kernel gradient is used, measured per path (batch 256,
# bfloat16, alone): the shifted slices of a stride-1 conv beat oneDNN at 4x4x512 (18 against 96 ms) and
# 8x8x256 (22 against 32 ms), not at 16x16x128 (39 against 18 ms); the patches of a strided conv beat it
# at 4x4 outputs (18 against 64 ms), not at 8x8 (30 against 28 ms).
MAX_POSITIONS = {"shifted": 64, "patches": 16}


def conv2d_gemm_kernel_grad(x, kernel, strides: int, padding: str):
    """`tf.nn.conv2d(x, kernel, strides, padding)` (NHWC, no dilation) whose kernel gradient is computed as
    matrix products of the input and the output gradient (`_kernel_grad`).

    Args:
        x: `[N, H, W, C]`; kernel: `[kh, kw, C, O]`; padding: "SAME" or "VALID".
    """
    step = [1, strides, strides, 1]

    @tf.custom_gradient
    def conv(x, kernel):
        def grad(dy):
            dx = tf.raw_ops.Conv2DBackpropInput(
                input_sizes=tf.shape(x), filter=kernel, out_backprop=dy, strides=step, padding=padding)
            return dx, _kernel_grad(x, dy, kernel.shape, strides, padding)

        return tf.nn.conv2d(x, kernel, step, padding), grad

    return conv(x, kernel)


def _path(kernel_shape, strides: int, padding: str) -> str:
    kh, kw = kernel_shape[:2]
    return "shifted" if strides == 1 and padding == "SAME" and kh % 2 and kw % 2 else "patches"


def _kernel_grad(x, dy, kernel_shape, strides: int, padding: str):
    """dL/dkernel `[kh, kw, C, O]` of a convolution of `x` with output gradient `dy`, as matrix products."""
    kh, kw, channels, filters = kernel_shape
    rows = tf.reshape(dy, [-1, filters])
    if _path(kernel_shape, strides, padding) == "shifted":
        # One GEMM per kernel tap over the shifted input (contiguous slices): measured 18 ms against the
        # patches' 33 ms for the 4x4x512 -> 512 kernel gradient.
        padded = tf.pad(x, [[0, 0], [(kh - 1) // 2] * 2, [(kw - 1) // 2] * 2, [0, 0]])
        height, width = dy.shape[1], dy.shape[2]
        taps = [tf.matmul(tf.reshape(padded[:, i:i + height, j:j + width, :], [-1, channels]), rows,
                          transpose_a=True) for i in range(kh) for j in range(kw)]
        return tf.reshape(tf.stack(taps), kernel_shape)
    # Strided slices are slow in TensorFlow (51 ms against 18 ms for the stride-2 8x8x256 -> 4x4x512 one):
    # the patches, one GEMM. extract_patches orders each patch (row, column, channel): HWIO flattened.
    patches = tf.image.extract_patches(x, [1, kh, kw, 1], [1, strides, strides, 1], [1, 1, 1, 1], padding)
    return tf.reshape(tf.matmul(tf.reshape(patches, [-1, kh * kw * channels]), rows, transpose_a=True),
                      kernel_shape)


@keras.saving.register_keras_serializable(package="sslzoo")
class SmallMapConv2D(keras.layers.Conv2D):
    """`keras.layers.Conv2D` with the GEMM kernel gradient of `conv2d_gemm_kernel_grad` on small bfloat16
    maps (a training-speed detail: same weights, same config, same outputs)."""

    def _gemm_applies(self, inputs) -> bool:
        if keras.backend.backend() != "tensorflow" or inputs.dtype != tf.bfloat16 or len(inputs.shape) != 4:
            return False
        if self.data_format != "channels_last" or self.groups != 1 or tuple(self.dilation_rate) != (1, 1):
            return False
        if self.strides[0] != self.strides[1] or None in inputs.shape[1:3]:
            return False
        if tf.config.list_logical_devices("GPU"):  # measured on oneDNN only
            return False
        out = self.compute_output_shape(inputs.shape)
        path = _path(self.kernel_size, self.strides[0], self.padding.upper())
        return out[1] * out[2] <= MAX_POSITIONS[path]

    def convolution_op(self, inputs, kernel):
        if not self._gemm_applies(inputs):
            return super().convolution_op(inputs, kernel)
        # A tensor, not the variable: a custom gradient of a variable read would need a `variables` argument.
        kernel = tf.cast(kernel, inputs.dtype)
        return conv2d_gemm_kernel_grad(inputs, kernel, self.strides[0], self.padding.upper())
