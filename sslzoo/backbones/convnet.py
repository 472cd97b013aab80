"""`convnet_small`: a small, fast ConvNet for CPU experiments."""

from __future__ import annotations

from typing import Sequence

import keras

from sslzoo.backbones.common import (
    BN_MOMENTUM,
    CIFAR_MEAN,
    CIFAR_STD,
    FEATURE_MAP,
    check_image_size,
    check_norm,
    conv_bn,
    image_input,
    pooled_features,
    scaled_width,
)
from sslzoo.registry import register_encoder

BASE_WIDTHS = (32, 64, 128, 256)


@register_encoder("convnet_small")
def convnet_small(
    image_size: int = 32,
    width: float = 1.0,
    blocks: int = 4,
    mean: Sequence[float] = CIFAR_MEAN,
    std: Sequence[float] = CIFAR_STD,
    bn_momentum: float = BN_MOMENTUM,
    norm: str = "batch",
) -> keras.Model:
    """A VGG-like ConvNet: `blocks` x (Conv3x3-BN-ReLU), 2x2 max-pool between blocks, global average pool.

    Widths are 32, 64, 128, 256 (doubling past block 4) times `width`; at 32x32 with 4 blocks the
    feature map is 4x4x256 and the features 256-d.

    Args:
        image_size: S; input float32 RGB `[N, S, S, 3]` in [0, 1].
        width: channel multiplier.
        blocks: number of conv blocks (>= 1); a pool follows every block but the last.
        mean, std: per-channel input statistics in [0, 1] units.
        bn_momentum: Keras BatchNormalization momentum.
        norm: "batch" (batch norm on the fused kernel), "batch_keras" (Keras' own ops) or "layer"
            (per-example layer norm, e.g. CPC v2's patch encoder, which must not share statistics between
            patches); see `common.normalization`.

    Returns:
        keras.Model `images [N, S, S, 3] -> features [N, D]`, D = 32 * 2**(blocks - 1) * width.

    Reference: Simonyan & Zisserman, "Very Deep Convolutional Networks", ICLR 2015 (the VGG pattern).
    """
    if isinstance(blocks, bool) or not isinstance(blocks, int) or blocks < 1:
        raise ValueError(f"blocks must be an integer >= 1, got {blocks!r}")
    # Every pool halves the map; keep at least one pixel at the end.
    check_image_size(image_size, minimum=2 ** (blocks - 1))
    check_norm(norm)
    inputs, x = image_input(image_size, mean, std)
    for index in range(blocks):
        base = BASE_WIDTHS[index] if index < len(BASE_WIDTHS) else BASE_WIDTHS[-1] * 2 ** (index - 3)
        last = index == blocks - 1
        name = f"block{index + 1}"
        x = conv_bn(
            x,
            scaled_width(base, width),
            3,
            name=name,
            bn_momentum=bn_momentum,
            relu_name=FEATURE_MAP if last else None,
            norm=norm,
        )
        if not last:
            x = keras.layers.MaxPooling2D(pool_size=2, name=f"{name}_pool")(x)
    return pooled_features(inputs, x, name="convnet_small")
