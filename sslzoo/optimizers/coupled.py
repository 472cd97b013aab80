"""SGD and Adam with coupled L2 weight decay (the gradient form of PyTorch/Caffe `weight_decay`).

Keras 3's `weight_decay` argument is decoupled (Loshchilov & Hutter): `w -= lr * wd * w` is applied beside the
update, outside the momentum/Adam statistics. The recipes reproduced here (RotNet: SGD, Nesterov, momentum 0.9,
weight decay 5e-4 in PyTorch) use the coupled form `g += wd * w`, which passes through the momentum. For SGD the
two differ by a factor of about 1/(1 - momentum) in effective decay strength, so the classes below keep the
published numbers meaning what they meant.
"""

from __future__ import annotations

import keras
from keras import ops


class _CoupledWeightDecay:
    """Mixin: adds `weight_decay * w` to every gradient and switches off Keras' decoupled decay step."""

    def _apply_weight_decay(self, variables):
        # The decay is in the gradient (see `update_step`); the base class's decoupled step must not run.
        return

    def update_step(self, gradient, variable, learning_rate):
        if self.weight_decay:
            gradient = ops.cast(gradient, variable.dtype)
            gradient = ops.add(gradient, ops.multiply(ops.cast(self.weight_decay, variable.dtype), variable))
        return super().update_step(gradient, variable, learning_rate)


@keras.saving.register_keras_serializable(package="sslzoo")
class CoupledSGD(_CoupledWeightDecay, keras.optimizers.SGD):
    """`keras.optimizers.SGD` whose `weight_decay` is coupled L2: `g <- g + weight_decay * w` on every variable.

    Update (Keras' velocity form, learning rate inside the velocity):
    `v = momentum * v - lr * (g + wd * w)`, `w += v` (Nesterov: `w += momentum * v - lr * (g + wd * w)`).
    With a constant rate this equals PyTorch's `SGD(momentum, nesterov, weight_decay)`; at a rate change the
    velocity keeps the old rate for a few steps instead of being rescaled at once.

    Args: as `keras.optimizers.SGD`; `weight_decay` is the coupled L2 coefficient (0 or None for none).
    Reference: Gidaris, Singh, Komodakis, "Unsupervised Representation Learning by Predicting Image
    Rotations", ICLR 2018 (the recipe this reproduces).
    """


@keras.saving.register_keras_serializable(package="sslzoo")
class CoupledAdam(_CoupledWeightDecay, keras.optimizers.Adam):
    """`keras.optimizers.Adam` with coupled L2: `g <- g + weight_decay * w` before the moment estimates.

    Args: as `keras.optimizers.Adam`; `weight_decay` is the coupled L2 coefficient (0 or None for none).
    Reference: Kingma & Ba, "Adam", ICLR 2015 (L2 as in PyTorch `Adam(weight_decay=...)`).
    """
