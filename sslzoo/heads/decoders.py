"""Context-encoder parts: the channel-wise fully-connected bottleneck, the decoder and the discriminator.

All three are functional models of built-in Keras layers (the channel-wise layer is an `EinsumDense` with
one weight matrix per channel), so they serialize with the method under `safe_mode`.
Reference: Pathak, Krahenbuhl, Donahue, Darrell, Efros, "Context Encoders: Feature Learning by
Inpainting", CVPR 2016 (section 3.1; DCGAN-style layers from the authors' `train.lua`).
"""

from __future__ import annotations

import math
from typing import Sequence

import keras
from keras import layers

from sslzoo.config import ConfigError

_BN_MOMENTUM = 0.9  # PyTorch-style, like the encoders (see sslzoo.backbones.common.BN_MOMENTUM)


# DCGAN initialisation of the reference code (`weights_init`): conv ~ N(0, 0.02), BN scale ~ N(1, 0.02).
# A new initializer per layer, made when the layer is built: an unseeded Keras initializer draws its seed
# from Python's `random` when it is constructed, so one made at import time took a seed that
# `keras.utils.set_random_seed` never reached (runs differed across processes) and gave every layer of the
# same shape the same weights.
def _conv_init() -> keras.initializers.Initializer:
    return keras.initializers.RandomNormal(0.0, 0.02)


def _gamma_init() -> keras.initializers.Initializer:
    return keras.initializers.RandomNormal(1.0, 0.02)


def _bn(name: str) -> layers.BatchNormalization:
    return layers.BatchNormalization(momentum=_BN_MOMENTUM, epsilon=1e-5, gamma_initializer=_gamma_init(), name=name)


def channel_wise_dense(x, name: str):
    """The paper's channel-wise fully-connected layer, then its stride-1 convolution across channels.

    A fully-connected layer between two h x w x C maps has (hwC)^2 weights; the channel-wise version
    connects every position to every position *within* each channel (C (hw)^2 weights), so information
    travels across the whole image at a cost a small map can afford, and the 1x1 convolution that follows
    mixes the channels (paper, section 3.1).

    Args:
        x: feature map [N, h, w, C].
    Returns:
        [N, h, w, C].
    """
    height, width, channels = (int(d) for d in x.shape[1:])
    positions = height * width
    x = layers.Reshape((positions, channels), name=f"{name}_flatten")(x)
    # Weight [C, s, t]: per channel c, a dense map from the s input positions to the t output positions.
    x = layers.EinsumDense(
        "nsc,cst->ntc", output_shape=(positions, channels), bias_axes="tc",
        kernel_initializer="glorot_uniform", name=f"{name}_channel_fc",
    )(x)
    x = layers.Reshape((height, width, channels), name=f"{name}_unflatten")(x)
    x = layers.Conv2D(channels, 1, use_bias=False, kernel_initializer=_conv_init(), name=f"{name}_mix")(x)
    x = _bn(f"{name}_mix_bn")(x)
    return layers.ReLU(name=f"{name}_mix_relu")(x)


def upsampling_steps(feature_size: int, output_size: int) -> int:
    """How many stride-2 transposed convolutions take a feature_size map to output_size; ConfigError
    when output_size / feature_size is not a power of two >= 2."""
    ratio = output_size / feature_size
    steps = int(round(math.log2(ratio))) if ratio > 0 else 0
    if steps < 1 or feature_size * 2 ** steps != output_size:
        raise ConfigError(
            f"the decoder upsamples the encoder's {feature_size}x{feature_size} feature map by stride-2 "
            f"steps, so the predicted region must be {feature_size} * 2^k pixels wide (k >= 1), got "
            f"{output_size}; choose e.g. method.options.region_size "
            f"{', '.join(str(feature_size * 2 ** k) for k in (1, 2, 3))}"
        )
    return steps


def context_decoder(feature_map_shape: Sequence[int], output_size: int, width: int = 64,
                    name: str = "decoder") -> keras.Model:
    """Feature map -> channel-wise FC bottleneck -> transposed convs -> tanh image of the predicted region.

    Like the code's netG decoder: 4x4 stride-2 transposed convolutions with BN + ReLU, halving the width
    each step, the last one to 3 channels and tanh (pixels in [-1, 1]).

    Args:
        feature_map_shape: (h, w, C) of the encoder's feature map.
        output_size: side of the predicted region (h * 2^k).
        width: channels of the last hidden transposed convolution (the code's ngf).
    Returns:
        keras.Model [N, h, w, C] -> [N, output_size, output_size, 3] in [-1, 1].
    """
    height = int(feature_map_shape[0])
    steps = upsampling_steps(height, output_size)
    inputs = keras.Input(tuple(int(d) for d in feature_map_shape), name=f"{name}_input")
    x = channel_wise_dense(inputs, name=f"{name}_bottleneck")
    for index in range(steps - 1):
        filters = width * 2 ** (steps - 2 - index)
        x = layers.Conv2DTranspose(filters, 4, strides=2, padding="same", use_bias=False,
                                   kernel_initializer=_conv_init(), name=f"{name}_up{index + 1}")(x)
        x = _bn(f"{name}_bn{index + 1}")(x)
        x = layers.ReLU(name=f"{name}_relu{index + 1}")(x)
    x = layers.Conv2DTranspose(3, 4, strides=2, padding="same", kernel_initializer=_conv_init(),
                               name=f"{name}_up{steps}")(x)
    outputs = layers.Activation("tanh", name=f"{name}_tanh", dtype="float32")(x)
    return keras.Model(inputs, outputs, name=name)


def context_discriminator(input_size: int, width: int = 64, name: str = "discriminator") -> keras.Model:
    """DCGAN discriminator on the predicted region: one logit per image (sigmoid in the loss).

    The code's netD (conditionAdv = 0): 4x4 stride-2 convolutions with LeakyReLU(0.2) (BN from the
    second on), doubling the width, down to a 4x4 map, then one convolution over that map to a logit.

    Args:
        input_size: side of the region it judges; images in [-1, 1].
        width: channels of the first convolution (the code's ndf).
    Returns:
        keras.Model [N, input_size, input_size, 3] -> logits [N, 1].
    """
    if input_size < 2:
        raise ConfigError(f"the discriminator needs a region of at least 2x2 pixels, got {input_size}")
    inputs = keras.Input((input_size, input_size, 3), name=f"{name}_input")
    x, size, filters, index = inputs, input_size, width, 0
    while size > 4:
        index += 1
        x = layers.Conv2D(filters, 4, strides=2, padding="same", use_bias=index == 1,
                          kernel_initializer=_conv_init(), name=f"{name}_conv{index}")(x)
        if index > 1:
            x = _bn(f"{name}_bn{index}")(x)
        x = layers.LeakyReLU(negative_slope=0.2, name=f"{name}_lrelu{index}")(x)
        size, filters = (size + 1) // 2, filters * 2
    x = layers.Conv2D(1, size, padding="valid", kernel_initializer=_conv_init(), name=f"{name}_logit")(x)
    outputs = layers.Flatten(name=f"{name}_flatten", dtype="float32")(x)
    return keras.Model(inputs, outputs, name=name)
