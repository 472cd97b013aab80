"""Heads are plain functional Keras models so they serialize and export like encoders.

Built-in layers only, except DINO's weight-normalised last layer (`sslzoo.layers.WeightNormalizedDense`, a
registered layer that loads under `safe_mode`)."""

from __future__ import annotations

from typing import Literal, Optional, Sequence

import keras
from keras import layers

from sslzoo.layers.weight_norm import WeightNormalizedDense


def mlp_head(
    input_dim: int,
    hidden_dims: Sequence[int],
    output_dim: int,
    batch_norm: bool = True,
    name: str = "head",
    activation: Literal["relu", "gelu"] = "relu",
    last_batch_norm: bool = False,
    kernel_initializer="glorot_uniform",
    output_bias: Optional[bool] = None,
) -> keras.Model:
    """An MLP: (Dense -> [BN] -> activation) per hidden width, then a linear output layer [-> BN].

    Args:
        input_dim: D of the input features [N, D].
        hidden_dims: widths of the hidden layers; empty for a linear head.
        output_dim: width of the output [N, output_dim] (logits, projections...).
        batch_norm: BN after each hidden Dense (SimCLR's projector, RotNet's non-linear classifier).
        name: model name.
        activation: "relu", or "gelu" (the exact, erf form, as torch's nn.GELU in DINO's head).
        last_batch_norm: BN on the output too, without scale and offset (affine=False) and after a
            bias-free output Dense (a bias before BN is cancelled by its mean): SimSiam's projector, whose
            official code ends in `nn.BatchNorm1d(dim, affine=False)` (the paper says only "BN applied to
            each fc layer, including its output fc").
        kernel_initializer: of every Dense (DINO's head: truncated normal, std 0.02).
        output_bias: a bias on the output Dense; None = only without `last_batch_norm`. False for MoCo v3's
            predictor, whose official `_build_mlp` makes every Linear bias-free, also the last one without BN.
    Reference: Chen & He, "Exploring Simple Siamese Representation Learning", CVPR 2021 (section 3, "Baseline
    settings", and the official builder.py); Caron et al., "Emerging Properties in Self-Supervised Vision Transformers",
    ICCV 2021 (the official `DINOHead`).
    """
    inputs = keras.Input((input_dim,), name=f"{name}_input")
    outputs = _mlp(inputs, hidden_dims, output_dim, batch_norm, name, activation, last_batch_norm,
                   kernel_initializer, output_bias)
    return keras.Model(inputs, outputs, name=name)


def projection_head(
    input_dim: int,
    kind: Literal["none", "linear", "nonlinear"],
    output_dim: int,
    hidden_dim: int = 0,
    depth: int = 1,
    batch_norm: bool = True,
    name: str = "projector",
) -> keras.Model:
    """SimCLR's projection head g: features h [N, D] -> projections z, in the three forms of its Fig. 8.

    Args:
        input_dim: D of h.
        kind: "none" (z = h, [N, D]: an identity model without weights), "linear" (one Dense to
            `output_dim`, with bias), "nonlinear" (`depth` hidden Dense -> [BN] -> ReLU layers of
            `hidden_dim`, then a Dense to `output_dim`: `mlp_head`, so depth 1 is the paper's
            g(h) = W2 ReLU(W1 h)).
        output_dim: width of z for "linear" and "nonlinear".
        hidden_dim: width of the hidden layers (0 = D, the paper's choice).
        depth: hidden layers of "nonlinear" (>= 1; SimCLR v2 studies 2 and 3).
        batch_norm: BN after each hidden Dense ("nonlinear" only: "linear" has no hidden layer).
        name: model name.
    Reference: Chen, Kornblith, Norouzi, Hinton, "A Simple Framework for Contrastive Learning of Visual
    Representations", ICML 2020 (section 4.2, Fig. 8); Chen et al., "Big Self-Supervised Models are Strong
    Semi-Supervised Learners", NeurIPS 2020 (deeper heads).
    """
    if kind == "none":
        inputs = keras.Input((input_dim,), name=f"{name}_input")
        return keras.Model(inputs, layers.Identity(name=f"{name}_identity")(inputs), name=name)
    if kind == "linear":
        return mlp_head(input_dim, [], output_dim, batch_norm=False, name=name)
    if kind == "nonlinear":
        if depth < 1:
            raise ValueError(f"depth {depth}: a nonlinear head needs at least 1 hidden layer")
        return mlp_head(input_dim, [hidden_dim or input_dim] * depth, output_dim, batch_norm=batch_norm,
                        name=name)
    raise ValueError(f"kind {kind!r}: use 'none', 'linear' or 'nonlinear'")


def _mlp(x, hidden_dims, output_dim, batch_norm, name, activation, last_batch_norm, kernel_initializer,
         output_bias=None):
    for i, width in enumerate(hidden_dims):
        x = layers.Dense(width, use_bias=not batch_norm, kernel_initializer=kernel_initializer,
                         name=f"{name}_dense{i + 1}")(x)
        if batch_norm:
            x = layers.BatchNormalization(momentum=0.9, name=f"{name}_bn{i + 1}")(x)
        x = _activation(activation, f"{name}_{activation}{i + 1}")(x)
    if output_bias is None:
        output_bias = not last_batch_norm
    x = layers.Dense(output_dim, use_bias=output_bias, kernel_initializer=kernel_initializer,
                     name=f"{name}_out")(x)
    if last_batch_norm:
        x = layers.BatchNormalization(momentum=0.9, center=False, scale=False, name=f"{name}_out_bn")(x)
    return x


def _activation(kind: str, name: str) -> layers.Layer:
    if kind == "relu":
        return layers.ReLU(name=name)
    if kind == "gelu":
        return layers.Activation("gelu", name=name)
    raise ValueError(f"activation {kind!r}: use 'relu' or 'gelu'")


def dino_head(
    input_dim: int,
    output_dim: int,
    hidden_dim: int = 2048,
    bottleneck_dim: int = 256,
    num_layers: int = 3,
    batch_norm: bool = False,
    norm_last_layer: bool = True,
    name: str = "dino_head",
) -> keras.Model:
    """DINO's projection head: an MLP with GELU to a bottleneck, L2 normalisation, a weight-normalised layer.

    features [N, D] -> (Dense -> [BN] -> GELU) x (num_layers - 1) -> Dense to the bottleneck
    -> L2-normalise -> `WeightNormalizedDense` (no bias) -> logits [N, output_dim] (K prototypes).
    Args:
        input_dim: D; output_dim: K (the paper: 65536); hidden_dim: 2048; bottleneck_dim: 256;
        num_layers: Dense layers of the MLP (the paper: 3; at least 1).
        batch_norm: BN after the hidden Dense layers (`use_bn`; off for ViTs, on in the ResNet runs).
        norm_last_layer: the last layer's column norms fixed at 1 (True, the official default) or
            trainable from 1 (False; the official README sets it for ViT-S, trading stability for accuracy).
    Dense kernels start from a truncated normal with std 0.02 and zero biases (`DINOHead._init_weights`).
    Reference: Caron, Touvron, Misra, Jegou, Mairal, Bojanowski, Joulin, "Emerging Properties in
    Self-Supervised Vision Transformers", ICCV 2021 (section 3.1; the official vision_transformer.py).
    """
    if num_layers < 1:
        raise ValueError(f"num_layers {num_layers}: use at least 1")
    inputs = keras.Input((input_dim,), name=f"{name}_input")
    x = _mlp(inputs, [hidden_dim] * (num_layers - 1), bottleneck_dim, batch_norm, name, "gelu", False,
             keras.initializers.TruncatedNormal(stddev=0.02))
    # float32 under mixed precision: the bottleneck starts out tiny (std-0.02 layers), and in float16 its
    # sum of squares underflows to 0 (rsqrt -> inf, NaN logits at the first step).
    x = layers.UnitNormalization(axis=-1, dtype="float32", name=f"{name}_l2")(x)
    outputs = WeightNormalizedDense(output_dim, trainable_norm=not norm_last_layer, name=f"{name}_last")(x)
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
