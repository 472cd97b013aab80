"""Pieces shared by every encoder: the image input with in-model normalisation, conv-BN-ReLU, pooling.

Only built-in Keras layers are used, so a saved encoder loads with `safe_mode=True` without sslzoo.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple

import keras

from sslzoo.layers.batch_norm import FusedBatchNormalization
from sslzoo.layers.conv import SmallMapConv2D

# CIFAR-10 per-channel statistics used by RotNet's official `dataloader.py`, in [0, 1] units.
CIFAR_MEAN: Tuple[float, float, float] = (125.3 / 255.0, 123.0 / 255.0, 113.9 / 255.0)
CIFAR_STD: Tuple[float, float, float] = (63.0 / 255.0, 62.1 / 255.0, 66.7 / 255.0)

# PyTorch-style BN: Keras momentum 0.9 == PyTorch momentum 0.1. Keras' default 0.99 makes the moving
# statistics a ~100-step average that still remembers its (0, 1) initialisation after a few hundred
# steps; our CPU runs are short (a few epochs of a CIFAR subset), so inference-mode features (kNN, linear
# probe, export) would use stale statistics. 0.9 tracks the weights within ~20 steps, like the reference
# PyTorch code (RotNet, MoCo CIFAR, torchvision ResNets).
BN_MOMENTUM = 0.9
# PyTorch's BN epsilon (Keras defaults to 1e-3); keeps the layer numerically the reference layer.
BN_EPSILON = 1e-5

FEATURE_MAP = "feature_map"  # the last spatial activation; methods needing spatial features read it
FEATURES = "features"  # the pooled output [N, D]
# Encoder option `norm`: batch norm on TF's fused kernel (the default: Keras' layer, about a fifth faster on
# CPU, see sslzoo/layers/batch_norm.py; "batch_fused" is its older name, kept so recorded commands run);
# Keras' own BatchNormalization ("batch_keras"); or per-example layer norm.
NORMS = ("batch", "batch_fused", "batch_keras", "layer")


def conv_initializer() -> keras.initializers.Initializer:
    """He-normal with fan_out, as torchvision's ResNet and RotNet's NIN (`normal(0, sqrt(2 / (k*k*out)))`)."""
    return keras.initializers.VarianceScaling(scale=2.0, mode="fan_out", distribution="untruncated_normal")


def check_image_size(image_size: int, minimum: int) -> int:
    """Return `image_size` as an int, or raise ValueError if it is not an integer >= `minimum`."""
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < minimum:
        raise ValueError(f"image_size must be an integer >= {minimum} for this encoder, got {image_size!r}")
    return image_size


def check_stats(mean: Sequence[float], std: Sequence[float]) -> Tuple[list, list]:
    """Validate per-channel RGB stats; returns (mean, variance) as plain float lists (JSON-serialisable)."""
    mean = [float(m) for m in mean]
    std = [float(s) for s in std]
    if len(mean) != 3 or len(std) != 3:
        raise ValueError(f"mean and std need 3 values (R, G, B), got {len(mean)} and {len(std)}")
    if not all(math.isfinite(m) for m in mean) or not all(math.isfinite(s) and s > 0 for s in std):
        raise ValueError(f"mean must be finite and std finite and > 0, got mean={mean}, std={std}")
    return mean, [s * s for s in std]


def check_norm(norm: str) -> str:
    """Return `norm` if it is a known normalisation (one of NORMS), else raise ValueError."""
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {', '.join(NORMS)}, got {norm!r}")
    return norm


def normalization(x, norm: str, name: str, suffix: str = "", bn_momentum: float = BN_MOMENTUM):
    """BatchNormalization, or layer normalisation of each example (over H, W and C, per-channel scale).

    "layer" is GroupNormalization with one group: statistics of one example only, so examples (and
    CPC's patches) cannot exchange information through the batch (CPC v2's reason to drop BN), and the
    per-channel gamma/beta do not depend on the input size (LayerNormalization over H, W, C would hold
    H x W x C weights and break `at_input_size`).
    """
    if check_norm(norm) == "layer":
        return keras.layers.GroupNormalization(groups=1, epsilon=BN_EPSILON, name=f"{name}_ln{suffix}")(x)
    # The fused kernel computes Keras' layer (sslzoo/layers/batch_norm.py) with other rounding; "batch_keras"
    # keeps Keras' own ops, e.g. to reproduce a run recorded before the fused kernel became the default.
    batch_norm = keras.layers.BatchNormalization if norm == "batch_keras" else FusedBatchNormalization
    return batch_norm(
        momentum=bn_momentum, epsilon=BN_EPSILON, name=f"{name}_bn{suffix}"
    )(x)


def scaled_width(base: int, width: float) -> int:
    """Channel count `base * width`, rounded, at least 1."""
    if not (isinstance(width, (int, float)) and not isinstance(width, bool)) or not width > 0:
        raise ValueError(f"width must be a number > 0, got {width!r}")
    return max(1, int(round(base * width)))


def image_input(
    image_size: int, mean: Sequence[float] = CIFAR_MEAN, std: Sequence[float] = CIFAR_STD
) -> Tuple[keras.KerasTensor, keras.KerasTensor]:
    """The encoder's input and its normalised image.

    Args:
        image_size: S; the input is float32 RGB `[N, S, S, 3]` in [0, 1].
        mean, std: per-channel statistics in [0, 1] units.

    Returns:
        (inputs, normalised) where `normalised = (inputs - mean) / std`, `[N, S, S, 3]`.
    """
    mean, variance = check_stats(mean, std)
    inputs = keras.Input(shape=(image_size, image_size, 3), dtype="float32", name="images")
    # Normalising inside the model makes an exported encoder's input spec simply "RGB in [0, 1]"; given
    # stats, the layer holds them as constants in its config (no weights, nothing to adapt).
    x = keras.layers.Normalization(mean=mean, variance=variance, name="normalization")(inputs)
    return inputs, x


def conv_bn(
    x,
    filters: int,
    kernel_size: int,
    name: str,
    strides: int = 1,
    relu: bool = True,
    bn_momentum: float = BN_MOMENTUM,
    relu_name: Optional[str] = None,
    index: Optional[int] = None,
    norm: str = "batch",
):
    """Conv (no bias: the norm's beta replaces it) -> BN (or layer norm) -> optional ReLU.

    Stride 1 uses "same" padding. A strided conv pads (k - 1) // 2 on every side explicitly, as PyTorch
    and SimCLR's `conv2d_fixed_padding` do; Keras' "same" would pad only bottom/right on even inputs.

    Args:
        x: `[N, H, W, C]`.
        name: prefix; layers are `{name}_conv{index}`, `{name}_bn{index}`, `{name}_relu{index}` (the
            ReLU is `relu_name` if given), e.g. "block2_conv1".
        norm: one of NORMS: batch norm is `{name}_bn{index}`, layer norm `{name}_ln{index}` (see
            `normalization`).

    Returns:
        `[N, H / strides, W / strides, filters]`.
    """
    suffix = "" if index is None else str(index)
    padding = "same"
    if strides > 1:
        pad = (kernel_size - 1) // 2
        if pad:
            x = keras.layers.ZeroPadding2D(padding=pad, name=f"{name}_pad{suffix}")(x)
        padding = "valid"
    # SmallMapConv2D is Keras' Conv2D with a faster kernel gradient on small bfloat16 maps
    # (sslzoo/layers/conv.py); "batch_keras" keeps Keras' own layers throughout.
    conv = keras.layers.Conv2D if norm == "batch_keras" else SmallMapConv2D
    x = conv(
        filters,
        kernel_size,
        strides=strides,
        padding=padding,
        use_bias=False,
        kernel_initializer=conv_initializer(),
        name=f"{name}_conv{suffix}",
    )(x)
    x = normalization(x, norm, name, suffix, bn_momentum=bn_momentum)
    if relu:
        x = keras.layers.ReLU(name=relu_name or f"{name}_relu{suffix}")(x)
    return x


def symmetric_pool(x, kind: str, pool_size: int, strides: int, name: str):
    """Max/avg pooling padded (pool_size - 1) // 2 zeros on every side, like PyTorch's `padding=1` pools.

    The output size equals "same" padding's (ceil(H / strides)), but windows stay centred as in the
    reference code. Zero padding equals PyTorch semantics here: max-pool inputs follow a ReLU (>= 0, so a
    zero never beats the window's max) and PyTorch's AvgPool2d counts padded zeros (count_include_pad).

    Args:
        x: `[N, H, W, C]`; kind: "max" or "avg"; name: the pooling layer's name (`{name}_pad` for padding).
    """
    pad = (pool_size - 1) // 2
    if pad:
        x = keras.layers.ZeroPadding2D(padding=pad, name=f"{name}_pad")(x)
    pool = {"max": keras.layers.MaxPooling2D, "avg": keras.layers.AveragePooling2D}[kind]
    return pool(pool_size=pool_size, strides=strides, padding="valid", name=name)(x)


def pooled_features(inputs, feature_map, name: str) -> keras.Model:
    """The encoder model: global average pooling of `feature_map` into `features` `[N, D]`."""
    features = keras.layers.GlobalAveragePooling2D(name=FEATURES)(feature_map)
    return keras.Model(inputs, features, name=name)
