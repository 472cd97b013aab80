"""Heads are plain functional Keras models so they serialize and export like encoders."""

from __future__ import annotations

from typing import Sequence

import keras
from keras import layers


def mlp_head(
    input_dim: int,
    hidden_dims: Sequence[int],
    output_dim: int,
    batch_norm: bool = True,
    name: str = "head",
) -> keras.Model:
    """An MLP: (Dense -> [BN] -> ReLU) per hidden width, then a linear output layer.

    Args:
        input_dim: D of the input features [N, D].
        hidden_dims: widths of the hidden layers; empty for a linear head.
        output_dim: width of the output [N, output_dim] (logits, projections...).
        batch_norm: BN after each hidden Dense (SimCLR's projector, RotNet's non-linear classifier).
        name: model name.
    """
    inputs = keras.Input((input_dim,), name=f"{name}_input")
    x = inputs
    for i, width in enumerate(hidden_dims):
        x = layers.Dense(width, use_bias=not batch_norm, name=f"{name}_dense{i + 1}")(x)
        if batch_norm:
            x = layers.BatchNormalization(momentum=0.9, name=f"{name}_bn{i + 1}")(x)
        x = layers.ReLU(name=f"{name}_relu{i + 1}")(x)
    outputs = layers.Dense(output_dim, name=f"{name}_out")(x)
    return keras.Model(inputs, outputs, name=name)


def conv_head(
    input_shape: Sequence[int],
    filters: Sequence[int],
    output_dim: int,
    name: str = "head",
) -> keras.Model:
    """Conv3x3-BN-ReLU layers on a feature map, global average pooling, then a linear layer.

    Args:
        input_shape: (h, w, c) of the feature map [N, h, w, c].
        filters: widths of the conv layers.
        output_dim: number of outputs [N, output_dim].
        name: model name.
    Reference: the "RotNet + conv" head of Gidaris et al. 2018 puts conv layers between the evaluated
    features and the rotation classifier, so the later, task-specific layers stay out of the encoder.
    """
    inputs = keras.Input(tuple(input_shape), name=f"{name}_input")
    x = inputs
    for i, width in enumerate(filters):
        x = layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"{name}_conv{i + 1}")(x)
        x = layers.BatchNormalization(momentum=0.9, name=f"{name}_bn{i + 1}")(x)
        x = layers.ReLU(name=f"{name}_relu{i + 1}")(x)
    x = layers.GlobalAveragePooling2D(name=f"{name}_pool")(x)
    outputs = layers.Dense(output_dim, name=f"{name}_out")(x)
    return keras.Model(inputs, outputs, name=name)
