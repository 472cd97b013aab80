"""MAE's decoder: the encoded visible tokens plus a shared mask token for every hidden patch, back in grid
order, through a small transformer to the pixels of every patch.

Built-in layers and keras.ops only, so a saved method loads under `safe_mode`. The mask token is a learned
vector made as the ViT's class token is (`backbones.vit.learned_vector`: an `EinsumDense` kernel on a
constant 1).

Reference: He et al., "Masked Autoencoders Are Scalable Vision Learners", CVPR 2022
(`models_mae.py`: `forward_decoder`).
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from sslzoo.backbones.vit import LAYER_NORM_EPSILON, learned_vector, sincos_position_table, transformer_block


def masked_decoder(num_patches: int, encoder_dim: int, patch_dim: int, width: int = 512, depth: int = 8,
                   num_heads: int = 16, mlp_ratio: float = 4.0, name: str = "decoder") -> keras.Model:
    """The MAE decoder, `[latent [N, 1 + K, D], ids_restore [N, L]] -> predictions [N, L, patch_dim]`.

    latent is the encoder's class token and K visible tokens (`backbones.vit.encode_visible`), ids_restore
    the inverse permutation from `augment.tokens.random_masking`. As the official `forward_decoder`: a
    linear embedding D -> width; the visible tokens followed by mask tokens, gathered with ids_restore into
    grid order, the class token kept in front; fixed 2-D sin-cos positions (zero for the class token);
    pre-norm blocks; LayerNorm; a linear map to the pixels of each patch; the class token dropped.

    Args:
        num_patches: L, a square (the patch grid).
        encoder_dim: D, the encoder's token width.
        patch_dim: values per patch, p*p*3.
        width: decoder token width (official: 512; a multiple of 4 and of num_heads).
        depth: transformer blocks (official: 8).
        num_heads: attention heads (official: 16).
        mlp_ratio: MLP hidden width / width (official: 4).
        name: model name.
    Raises ValueError for a non-square L or a width the heads or the sin-cos table cannot divide.
    """
    grid = int(round(num_patches ** 0.5))
    if grid * grid != num_patches:
        raise ValueError(f"masked_decoder: num_patches {num_patches} is not a square grid")
    if width % 4 or width % num_heads:
        raise ValueError(f"masked_decoder: width {width} must be a multiple of 4 (the sin-cos table) and of "
                         f"num_heads {num_heads}; e.g. width {4 * num_heads * max(1, round(width / (4 * num_heads)))}")
    latent = keras.Input((None, encoder_dim), name="latent")
    ids_restore = keras.Input((num_patches,), dtype="int32", name="ids_restore")
    x = keras.layers.Dense(width, name="decoder_embed")(latent)
    one = ops.ones_like(x[:, 0, :1])  # [N, 1]: the sequence length is not static here
    # L copies of the mask token after the K visible ones: ids_restore only reaches index L - 1, so the
    # extra copies are never gathered and the result equals the official L - K copies, at a static shape.
    mask_tokens = ops.repeat(learned_vector(one, 1, width, "mask_token"), num_patches, axis=1)
    tokens = keras.layers.Concatenate(axis=1, name="with_mask_tokens")([x[:, 1:], mask_tokens])
    tokens = ops.take_along_axis(tokens, ops.expand_dims(ids_restore, -1), axis=1)
    x = keras.layers.Concatenate(axis=1, name="unshuffled")([x[:, :1], tokens])
    positions = np.concatenate([np.zeros((1, width), np.float32), sincos_position_table(grid, width)])
    x = ops.add(x, positions)
    for index in range(depth):
        x = transformer_block(x, num_heads, int(width * mlp_ratio), 0.0, name=f"decoder_block{index + 1}")
    x = keras.layers.LayerNormalization(epsilon=LAYER_NORM_EPSILON, name="decoder_norm")(x)
    x = keras.layers.Dense(patch_dim, name="decoder_pred")(x)
    return keras.Model([latent, ids_restore], x[:, 1:], name=name)
