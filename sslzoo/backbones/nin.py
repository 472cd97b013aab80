"""`nin`: RotNet's Network-in-Network, and `nin_blocks` for the blocks a pretext head stacks on top.

Mirrors `architectures/NetworkInNetwork.py` of gidariss/FeatureLearningRotNet with the CIFAR config
(`num_stages=4`, `use_avg_on_conv3=False`): each block is three Conv-BN-ReLU layers (bias-free convs),
block 1 ends with MaxPool(3, s2, pad 1) and block 2 with AvgPool(3, s2, pad 1); later blocks keep the size.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import keras

from sslzoo.backbones.common import (
    BN_MOMENTUM,
    CIFAR_MEAN,
    CIFAR_STD,
    FEATURE_MAP,
    check_image_size,
    conv_bn,
    image_input,
    pooled_features,
    symmetric_pool,
)
from sslzoo.registry import register_encoder

NIN_WIDTH = 192  # nChannels in the reference code; nChannels2 = 160 and nChannels3 = 96 exist only in block 1


def nin_block_spec(block: int) -> Tuple[List[Tuple[int, int]], Optional[str]]:
    """(filters, kernel_size) of a block's three convs and its pooling ("max", "avg" or None); 1-based."""
    if block == 1:
        return [(NIN_WIDTH, 5), (160, 1), (96, 1)], "max"
    if block == 2:
        return [(NIN_WIDTH, 5), (NIN_WIDTH, 1), (NIN_WIDTH, 1)], "avg"
    return [(NIN_WIDTH, 3), (NIN_WIDTH, 1), (NIN_WIDTH, 1)], None


def nin_input_channels(block: int) -> int:
    """Channels a block expects: RGB for block 1, block 1's 96 for block 2, 192 afterwards."""
    return {1: 3, 2: 96}.get(block, NIN_WIDTH)


def nin_block(x, block: int, bn_momentum: float = BN_MOMENTUM, out_name: Optional[str] = None):
    """One NIN block: Conv(k)-BN-ReLU, Conv1x1-BN-ReLU, Conv1x1-BN-ReLU, then its pooling if any.

    Args:
        x: `[N, H, W, C]` with C = `nin_input_channels(block)`.
        block: 1-based block index (decides kernel sizes, widths and pooling).
        out_name: name of the block's last layer (default `block{block}_pool` / `block{block}_relu3`).

    Returns:
        `[N, H', W', 96 or 192]`; H' = ceil(H / 2) after blocks 1 and 2, else H.
    """
    convs, pool = nin_block_spec(block)
    name = f"block{block}"
    for index, (filters, kernel_size) in enumerate(convs, start=1):
        last_layer = index == len(convs) and pool is None
        x = conv_bn(
            x,
            filters,
            kernel_size,
            name=name,
            index=index,
            bn_momentum=bn_momentum,
            relu_name=out_name if last_layer else None,
        )
    if pool is not None:
        x = symmetric_pool(x, pool, pool_size=3, strides=2, name=out_name or f"{name}_pool")
    return x


def _check_block_range(first_block: int, last_block: int) -> None:
    for value in (first_block, last_block):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"NIN block indices must be integers, got {value!r}")
    if not 1 <= first_block <= last_block:
        raise ValueError(f"need 1 <= first_block <= last_block, got {first_block}, {last_block}")


def nin_blocks(
    first_block: int, last_block: int, name: Optional[str] = None, bn_momentum: float = BN_MOMENTUM
) -> keras.Model:
    """NIN blocks `first_block..last_block` (1-based, inclusive) as a model for any spatial size.

    RotNet's pretext classifier is the blocks after the evaluated one + GAP + Linear (blocks 3-4 on the
    block-2 feature map of its NIN4), and its "RotNet + conv" evaluation head is a fresh block 3; this
    builds those stacks with the encoder's layout.

    Args:
        first_block, last_block: block range; the input must have `nin_input_channels(first_block)`
            channels (192 for blocks >= 3).
        name: model name (default `nin_blocks{first}_{last}`).

    Returns:
        keras.Model `[N, H, W, C_in] -> [N, H', W', 192]` (96 channels if `last_block` is 1).

    Reference: Lin, Chen, Yan, "Network In Network", ICLR 2014; Gidaris, Singh, Komodakis,
    "Unsupervised Representation Learning by Predicting Image Rotations", ICLR 2018.
    """
    _check_block_range(first_block, last_block)
    name = name or f"nin_blocks{first_block}_{last_block}"
    inputs = keras.Input(shape=(None, None, nin_input_channels(first_block)), name=f"{name}_input")
    x = inputs
    for block in range(first_block, last_block + 1):
        x = nin_block(x, block, bn_momentum=bn_momentum)
    return keras.Model(inputs, x, name=name)


def nin_block_count(model: keras.Model) -> Optional[int]:
    """k when `model` is a `nin` encoder of blocks 1..k (the NIN block layout and a "feature_map"), else
    None: a head that continues the NIN starts at block k + 1."""
    layers = {layer.name: layer for layer in model.layers}

    def is_block(block: int) -> bool:
        convs, _ = nin_block_spec(block)
        found = [layers.get(f"block{block}_conv{index}") for index in range(1, len(convs) + 1)]
        return all(isinstance(layer, keras.layers.Conv2D) and layer.filters == filters
                   and tuple(layer.kernel_size) == (kernel, kernel) for layer, (filters, kernel) in zip(found, convs))

    count = 0
    while is_block(count + 1):
        count += 1
    return count if count and FEATURE_MAP in layers else None


@register_encoder("nin")
def nin(
    image_size: int = 32,
    blocks: int = 2,
    mean: Sequence[float] = CIFAR_MEAN,
    std: Sequence[float] = CIFAR_STD,
    bn_momentum: float = BN_MOMENTUM,
) -> keras.Model:
    """RotNet's Network-in-Network encoder: NIN blocks 1..`blocks`, then global average pooling.

    The default `blocks=2` is the part RotNet evaluates (block-2 features, `out_feat_keys=['conv2']`);
    its pretext head adds `nin_blocks(3, 4)`. At 32x32 the feature map is 8x8x192, features 192-d.

    Args:
        image_size: S; input float32 RGB `[N, S, S, 3]` in [0, 1].
        blocks: number of NIN blocks (>= 1; 4 is the full CIFAR RotNet trunk).
        mean, std: per-channel input statistics in [0, 1] units.
        bn_momentum: Keras BatchNormalization momentum.

    Returns:
        keras.Model `images [N, S, S, 3] -> features [N, D]`, D = 96 if blocks == 1 else 192.

    Reference: Lin, Chen, Yan, "Network In Network", ICLR 2014; Gidaris, Singh, Komodakis,
    "Unsupervised Representation Learning by Predicting Image Rotations", ICLR 2018.
    """
    if isinstance(blocks, bool) or not isinstance(blocks, int) or blocks < 1:
        raise ValueError(f"blocks must be an integer >= 1, got {blocks!r}")
    check_image_size(image_size, minimum=5)  # the first 5x5 conv should see a whole kernel
    inputs, x = image_input(image_size, mean, std)
    for block in range(1, blocks + 1):
        x = nin_block(x, block, bn_momentum=bn_momentum, out_name=FEATURE_MAP if block == blocks else None)
    return pooled_features(inputs, x, name=f"nin{blocks}")
