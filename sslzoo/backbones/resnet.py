"""`resnet18` and `resnet50` with a CIFAR stem (3x3 s1, no pool) or an ImageNet stem (7x7 s2 + max-pool).

Layout follows torchvision / SimCLR's `resnet.py` ("v1.5": a bottleneck's stride sits on its 3x3 conv),
bias-free convs followed by BN, projection shortcuts (1x1 conv + BN) where the shape changes, no fc.
"""

from __future__ import annotations

from typing import Optional, Sequence

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
    symmetric_pool,
)
from sslzoo.registry import register_encoder

STAGE_WIDTHS = (64, 128, 256, 512)
STEMS = ("cifar", "imagenet")


def _shortcut(x, out_channels: int, strides: int, name: str, bn_momentum: float, norm: str = "batch"):
    """Identity, or a 1x1 conv + BN projection when the block changes the shape (He et al.'s option B)."""
    if strides == 1 and x.shape[-1] == out_channels:
        return x
    return conv_bn(
        x, out_channels, 1, strides=strides, relu=False, name=f"{name}_shortcut", bn_momentum=bn_momentum,
        norm=norm,
    )


def basic_block(
    x, filters: int, strides: int, name: str, bn_momentum: float, out_name: Optional[str] = None,
    norm: str = "batch",
):
    """ResNet basic block: 3x3 conv-BN-ReLU, 3x3 conv-BN, add the shortcut, ReLU.

    Args:
        x: `[N, H, W, C]`.
        out_name: name of the block's final ReLU (default `{name}_out`).
        norm: one of `common.NORMS`.

    Returns:
        `[N, H / strides, W / strides, filters]`.
    """
    shortcut = _shortcut(x, filters, strides, name, bn_momentum, norm)
    x = conv_bn(x, filters, 3, strides=strides, name=name, index=1, bn_momentum=bn_momentum, norm=norm)
    x = conv_bn(x, filters, 3, relu=False, name=name, index=2, bn_momentum=bn_momentum, norm=norm)
    x = keras.layers.Add(name=f"{name}_add")([shortcut, x])
    return keras.layers.ReLU(name=out_name or f"{name}_out")(x)


def bottleneck_block(
    x, filters: int, strides: int, name: str, bn_momentum: float, out_name: Optional[str] = None,
    norm: str = "batch",
):
    """ResNet bottleneck block: 1x1 conv (filters), 3x3 conv (filters, strided), 1x1 conv (4 * filters).

    Args:
        x: `[N, H, W, C]`.
        out_name: name of the block's final ReLU (default `{name}_out`).
        norm: one of `common.NORMS`.

    Returns:
        `[N, H / strides, W / strides, 4 * filters]`.
    """
    shortcut = _shortcut(x, 4 * filters, strides, name, bn_momentum, norm)
    x = conv_bn(x, filters, 1, name=name, index=1, bn_momentum=bn_momentum, norm=norm)
    x = conv_bn(x, filters, 3, strides=strides, name=name, index=2, bn_momentum=bn_momentum, norm=norm)
    x = conv_bn(x, 4 * filters, 1, relu=False, name=name, index=3, bn_momentum=bn_momentum, norm=norm)
    x = keras.layers.Add(name=f"{name}_add")([shortcut, x])
    return keras.layers.ReLU(name=out_name or f"{name}_out")(x)


def build_resnet(
    name: str,
    stage_blocks: Sequence[int],
    bottleneck: bool,
    image_size: int,
    stem: Optional[str],
    width: float,
    mean: Sequence[float],
    std: Sequence[float],
    bn_momentum: float,
    norm: str = "batch",
) -> keras.Model:
    """A ResNet encoder without its classifier.

    Args:
        name: model name.
        stage_blocks: blocks per stage, e.g. (2, 2, 2, 2); stage widths are 64, 128, 256, 512 (x width).
        bottleneck: bottleneck blocks (output 4x the stage width) instead of basic blocks.
        image_size: S; input float32 RGB `[N, S, S, 3]` in [0, 1].
        stem: "cifar" (3x3 s1 conv, no pool: S/8 output), "imagenet" (7x7 s2 conv + 3x3 s2 max-pool:
            S/32 output), or None: "cifar" when S <= 64, else "imagenet".
        width: channel multiplier.
        norm: "batch" (batch norm on the fused kernel), "batch_keras" (Keras' own ops) or "layer"
            (per-example layer norm); see `common.normalization`.

    Returns:
        keras.Model `images [N, S, S, 3] -> features [N, D]`.

    Reference: He, Zhang, Ren, Sun, "Deep Residual Learning for Image Recognition", CVPR 2016.
    """
    if stem is None:
        stem = "cifar" if isinstance(image_size, int) and image_size <= 64 else "imagenet"
    if stem not in STEMS:
        raise ValueError(f"stem must be one of {', '.join(STEMS)}, got {stem!r}")
    # The minimum keeps the last stage at >= 1x1 without relying on padding alone.
    check_image_size(image_size, minimum=8 if stem == "cifar" else 32)
    check_norm(norm)
    inputs, x = image_input(image_size, mean, std)
    stem_width = scaled_width(STAGE_WIDTHS[0], width)
    if stem == "cifar":
        # SimCLR B.9 / MoCo CIFAR: a 7x7 s2 conv and a max-pool would leave a 32x32 image at 8x8 before
        # stage 1, throwing away most of its detail.
        x = conv_bn(x, stem_width, 3, name="stem", bn_momentum=bn_momentum, norm=norm)
    else:
        x = conv_bn(x, stem_width, 7, strides=2, name="stem", bn_momentum=bn_momentum, norm=norm)
        x = symmetric_pool(x, "max", pool_size=3, strides=2, name="stem_pool")
    block_fn = bottleneck_block if bottleneck else basic_block
    for stage, num_blocks in enumerate(stage_blocks):
        filters = scaled_width(STAGE_WIDTHS[stage], width)
        for block in range(num_blocks):
            strides = 2 if stage > 0 and block == 0 else 1
            last = stage == len(stage_blocks) - 1 and block == num_blocks - 1
            x = block_fn(
                x,
                filters,
                strides,
                name=f"stage{stage + 1}_block{block + 1}",
                bn_momentum=bn_momentum,
                out_name=FEATURE_MAP if last else None,
                norm=norm,
            )
    return pooled_features(inputs, x, name=name)


@register_encoder("resnet18")
def resnet18(
    image_size: int = 32,
    stem: Optional[str] = None,
    width: float = 1.0,
    mean: Sequence[float] = CIFAR_MEAN,
    std: Sequence[float] = CIFAR_STD,
    bn_momentum: float = BN_MOMENTUM,
    norm: str = "batch",
) -> keras.Model:
    """ResNet-18 encoder: basic blocks [2, 2, 2, 2], 512-d features (x width).

    Args:
        image_size: S; input float32 RGB `[N, S, S, 3]` in [0, 1].
        stem: "cifar", "imagenet" or None (cifar when S <= 64). Feature map: S/8 (cifar), S/32 (imagenet).
        width: channel multiplier.
        mean, std: per-channel input statistics in [0, 1] units.
        bn_momentum: Keras BatchNormalization momentum.
        norm: "batch" or "layer" (per-example layer norm, e.g. CPC v2's patch encoder).

    Returns:
        keras.Model `images [N, S, S, 3] -> features [N, 512 * width]`.

    Reference: He, Zhang, Ren, Sun, "Deep Residual Learning for Image Recognition", CVPR 2016.
    """
    return build_resnet(
        "resnet18", (2, 2, 2, 2), False, image_size, stem, width, mean, std, bn_momentum, norm=norm
    )


@register_encoder("resnet50")
def resnet50(
    image_size: int = 32,
    stem: Optional[str] = None,
    width: float = 1.0,
    mean: Sequence[float] = CIFAR_MEAN,
    std: Sequence[float] = CIFAR_STD,
    bn_momentum: float = BN_MOMENTUM,
    norm: str = "batch",
) -> keras.Model:
    """ResNet-50 encoder: bottleneck blocks [3, 4, 6, 3], 2048-d features (x width).

    Args:
        image_size: S; input float32 RGB `[N, S, S, 3]` in [0, 1].
        stem: "cifar", "imagenet" or None (cifar when S <= 64). Feature map: S/8 (cifar), S/32 (imagenet).
        width: channel multiplier.
        mean, std: per-channel input statistics in [0, 1] units.
        bn_momentum: Keras BatchNormalization momentum.
        norm: "batch" or "layer" (per-example layer norm, e.g. CPC v2's patch encoder).

    Returns:
        keras.Model `images [N, S, S, 3] -> features [N, 2048 * width]`.

    Reference: He, Zhang, Ren, Sun, "Deep Residual Learning for Image Recognition", CVPR 2016.
    """
    return build_resnet(
        "resnet50", (3, 4, 6, 3), True, image_size, stem, width, mean, std, bn_momentum, norm=norm
    )
