"""DINO's last layer: a bias-free Dense whose kernel columns are L2-normalised on every call.

DINO's head ends in `nn.utils.weight_norm(nn.Linear(bottleneck, K, bias=False))` with the norm g filled
with 1 and, with `norm_last_layer=True` (the default), frozen: each output is then the dot product of the
(L2-normalised) bottleneck with a unit-norm prototype, a cosine. Keras has no weight-norm wrapper, so
this is a small registered layer; it saves and loads in `.keras` files under `safe_mode` (no lambdas).
"""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="sslzoo")
class WeightNormalizedDense(keras.layers.Layer):
    """outputs = inputs @ (g * v / ||v||), the norm taken over each column of v (one per output unit).

    Args:
        units: K, the output width.
        trainable_norm: False (DINO's `norm_last_layer=True`): g is fixed at 1, so every column of the
            effective kernel has unit norm; True (`norm_last_layer=False`): g is a trainable [K] vector
            initialised to 1, as `weight_g.data.fill_(1)`.
        kernel_initializer: the direction parameter v [D, K]; only its direction matters.
    Shapes: inputs [N, D] -> outputs [N, K]. There is no bias.
    Reference: Caron et al., "Emerging Properties in Self-Supervised Vision Transformers", ICCV 2021
    (section 3.1 and the official `DINOHead`); Salimans & Kingma, "Weight Normalization", NeurIPS 2016.
    """

    def __init__(self, units: int, trainable_norm: bool = False, kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)
        self.trainable_norm = bool(trainable_norm)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, input_shape):
        # autocast=False: under mixed precision the kernel is read in float32 and normalised there (a
        # bfloat16 sum of D squares would miss the unit norm); only the product runs in the compute dtype.
        self.kernel = self.add_weight(
            name="kernel", shape=(int(input_shape[-1]), self.units), initializer=self.kernel_initializer,
            autocast=False)
        self.norm = (self.add_weight(name="norm", shape=(self.units,), initializer="ones", autocast=False)
                     if self.trainable_norm else None)

    def normalized_kernel(self):
        """The effective kernel g * v / ||v|| [D, K], float32: columns of norm g (1 when g is fixed)."""
        kernel = self.kernel * ops.rsqrt(ops.sum(ops.square(self.kernel), axis=0, keepdims=True))
        return kernel if self.norm is None else kernel * self.norm

    def call(self, inputs):
        return ops.matmul(inputs, ops.cast(self.normalized_kernel(), inputs.dtype))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def get_config(self):
        return {**super().get_config(), "units": self.units, "trainable_norm": self.trainable_norm,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer)}
