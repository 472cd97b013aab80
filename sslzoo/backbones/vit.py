"""`vit_tiny` and `vit_small`: Vision Transformer encoders (class token after the final LayerNorm).

Built-in layers and keras.ops only, like every encoder, so a saved ViT loads under `safe_mode` without
sslzoo (the zoo's loader cannot import the backbones to register custom layers). The two learned vectors
a ViT needs besides its layers, the class token and the learned position table, are each an `EinsumDense`
kernel applied to a constant 1: the product is the kernel itself, exactly, and its gradient is the usual
dense one. The fixed sin-cos table is a constant in the graph (it is in the model config, not a weight, so
`from_config` and `clone_model` can never re-randomise it).

Spatial features: there is no "feature_map" layer, because the features (the class token) are not a
pooling of the patch tokens, and Keras keeps only layers on the path to the output. The final LayerNorm,
named "tokens", gives `[N, 1 + P, D]` (index 0 the class token, then the patches row by row);
`patch_token_model(encoder)` reshapes the patches to `[N, S/p, S/p, D]`. So the ViT serves the methods
that read pooled features (simclr, moco, byol, simsiam, barlow_twins, vicreg, supervised, rotnet with a
linear or mlp head) and MAE, which runs the encoder's own layers on the visible patches
(`encode_visible`); it cannot serve those that read the encoder's "feature_map" (rotnet's conv / nin
heads, context_encoder, colorization, splitbrain, video_colorization) or rebuild it at the patch size
with `at_input_size` (relpatch, jigsaw, cpc): its position table fixes the input size.
"""

from __future__ import annotations

from typing import Literal, Optional, Sequence

import keras
import numpy as np
from keras import ops

from sslzoo.backbones.common import CIFAR_MEAN, CIFAR_STD, FEATURES, check_image_size, image_input
from sslzoo.registry import register_encoder

TOKENS = "tokens"  # the final LayerNorm: [N, 1 + P, D], class token first
POSITION_EMBEDDINGS = ("learned", "sincos")
LAYER_NORM_EPSILON = 1e-6  # the official ViT / MAE / MoCo v3 value (Keras defaults to 1e-3)
TOKEN_STDDEV = 0.02  # truncated normal for the class token and the learned positions (MAE, DINO, timm)
MAX_DEFAULT_PATCH = 16  # ViT's 224 px patch


def default_patch_size(image_size: int) -> int:
    """The patch side used when `patch_size` is None: an 8x8 token grid (4 px at 32 px, 8 px at 64 px),
    but never patches above 16 px (ViT's 14x14 grid at 224 px), so attention stays cheap at small sizes
    and the sequence stays the usual length at large ones."""
    return max(1, min(MAX_DEFAULT_PATCH, image_size // 8))


def check_patch_size(image_size: int, patch_size: Optional[int]) -> int:
    """`patch_size` (None: `default_patch_size(image_size)`) if it is an integer >= 1 dividing `image_size`,
    else ValueError naming both and the patch sizes nearest to it that would fit."""
    chosen = default_patch_size(image_size) if patch_size is None else patch_size
    if isinstance(chosen, bool) or not isinstance(chosen, int) or chosen < 1:
        raise ValueError(f"patch_size must be an integer >= 1, got {chosen!r}")
    if image_size % chosen:
        nearest = sorted((d for d in range(1, image_size + 1) if image_size % d == 0),
                         key=lambda d: (abs(d - chosen), d))[:2]
        which = f"patch_size {chosen}" + (f" (the default at {image_size} px)" if patch_size is None else "")
        examples = " or ".join(str(d) for d in sorted(nearest))
        raise ValueError(
            f"image_size {image_size} is not divisible by {which}: the patches must tile the image; set "
            f"encoder.options.patch_size to a divisor of {image_size} (e.g. {examples}) or resize the images "
            f"to a multiple of {chosen}"
        )
    return chosen


def sincos_position_table(grid_size: int, dim: int) -> np.ndarray:
    """MAE's fixed 2-D sin-cos position table for a `grid_size` x `grid_size` patch grid, float32 [P, D].

    Patch k = row * grid_size + col (the row-major order of the patch tokens). The first D/2 channels
    encode the column, the last D/2 the row; each half is [sin, cos] of the coordinate times the
    frequencies 10000^(-i / (D/4)), i < D/4. (MoCo v3's table has the row in the first half instead.)

    Args:
        grid_size: patches per side, S / p.
        dim: D, a multiple of 4.
    Returns:
        float32 [grid_size**2, dim]; the class token gets no position (MAE's zero row), so it is not here.
    Reference: He et al., "Masked Autoencoders Are Scalable Vision Learners", CVPR 2022
    (`get_2d_sincos_pos_embed`); Chen, Xie, He, "An Empirical Study of Training Self-Supervised Vision
    Transformers", ICCV 2021.
    """
    if dim % 4:
        raise ValueError(f"a sin-cos position embedding needs embed_dim divisible by 4, got {dim}")
    quarter = dim // 4
    frequencies = 1.0 / 10000.0 ** (np.arange(quarter, dtype=np.float64) / quarter)
    rows, cols = np.divmod(np.arange(grid_size * grid_size, dtype=np.float64), grid_size)

    def encode(coordinate):
        angles = np.outer(coordinate, frequencies)
        return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)

    return np.concatenate([encode(cols), encode(rows)], axis=1).astype(np.float32)


def learned_vector(one, length: int, dim: int, name: str):
    """`[N, length, D]`: a trainable `[1, length, D]` table (truncated normal, std 0.02) for every example.

    `one` is `[N, 1]` of ones; the EinsumDense contracts its size-1 axis with the kernel, so the output
    is the kernel itself (1.0 * w, exact) and the kernel has the shape of MAE's `cls_token`/`pos_embed`.
    """
    return keras.layers.EinsumDense(
        "nc,ctd->ntd", output_shape=(length, dim),
        kernel_initializer=keras.initializers.TruncatedNormal(stddev=TOKEN_STDDEV), name=name,
    )(one)


def _dropout(x, rate: float, name: str):
    return keras.layers.Dropout(rate, name=name)(x) if rate else x


def transformer_block(x, num_heads: int, mlp_dim: int, dropout: float, name: str):
    """Pre-norm encoder block: x + MHA(LN(x)), then x + MLP(LN(x)) with a GELU hidden layer.

    Args:
        x: `[N, T, D]`.
        num_heads: attention heads (D divisible by it); key/value width D / num_heads each.
        mlp_dim: hidden width of the MLP.
        dropout: after the attention's output projection and after both MLP layers (0: none).
        name: prefix, e.g. "block1": `{name}_ln1`, `{name}_attn`, `{name}_ln2`, `{name}_mlp1`, `{name}_mlp2`.
    Returns:
        `[N, T, D]`.
    """
    dim = int(x.shape[-1])

    def new_layer(suffix: str):
        # Made when the wiring first asks for it, so the layers are created (and draw their initial
        # weights) in the order they are applied.
        full = f"{name}_{suffix}"
        if suffix in ("ln1", "ln2"):
            return keras.layers.LayerNormalization(epsilon=LAYER_NORM_EPSILON, name=full)
        if suffix == "attn":
            # Keras' default glorot_uniform for the projections, kept for simplicity: its fans are those of
            # the [D, H, D/H] kernels, so the range is narrower than xavier on one D x D matrix (MAE's).
            return keras.layers.MultiHeadAttention(num_heads, dim // num_heads, name=full)
        if suffix.endswith("dropout"):
            return keras.layers.Dropout(dropout, name=full) if dropout else None
        if suffix == "mlp1":
            # Exact (erf) GELU, as PyTorch's nn.GELU in the reference ViTs.
            return keras.layers.Dense(mlp_dim, activation="gelu", name=full)
        if suffix == "mlp2":
            return keras.layers.Dense(dim, name=full)
        return keras.layers.Add(name=full)

    return _block(x, new_layer)


def _block(x, layer, training=None):
    """The one wiring of a block, on the layers `layer(suffix)` returns (None: a Dropout left out).
    `transformer_block` builds new layers through it; `encode_visible` reruns an encoder's own."""

    def dropped(y, suffix):
        dropout = layer(suffix)
        return y if dropout is None else dropout(y, training=training)

    y = layer("ln1")(x)
    y = layer("attn")(y, y, training=training)
    y = dropped(y, "attn_dropout")
    x = layer("add1")([x, y])
    y = layer("ln2")(x)
    y = layer("mlp1")(y)
    y = dropped(y, "mlp1_dropout")
    y = layer("mlp2")(y)
    y = dropped(y, "mlp2_dropout")
    return layer("add2")([x, y])


def build_vit(
    name: str,
    image_size: int,
    patch_size: Optional[int],
    embed_dim: int,
    depth: int,
    num_heads: int,
    mlp_ratio: float = 4.0,
    position_embedding: str = "learned",
    frozen_patch_embedding: bool = False,
    dropout: float = 0.0,
    mean: Sequence[float] = CIFAR_MEAN,
    std: Sequence[float] = CIFAR_STD,
) -> keras.Model:
    """A Vision Transformer encoder: patches -> class token + positions -> pre-norm blocks -> LayerNorm.

    Args:
        name: model name.
        image_size: S; input float32 RGB `[N, S, S, 3]` in [0, 1].
        patch_size: p, dividing S; None: `default_patch_size(S)` (4 at 32 px, 16 from 128 px up).
        embed_dim: D (a multiple of `num_heads`, and of 4 for "sincos").
        depth: number of transformer blocks (>= 1).
        num_heads: attention heads per block.
        mlp_ratio: MLP hidden width / D.
        position_embedding: "learned" (a trainable table for the class token and every patch, as ViT) or
            "sincos" (MAE's fixed 2-D sin-cos table on the patches, none on the class token).
        frozen_patch_embedding: keep the patch projection at its random initialisation (trainable=False),
            MoCo v3's fix for the training instability that starts in the first layer.
        dropout: rate after the embeddings, the attention output and both MLP layers (0: no Dropout layers).
        mean, std: per-channel input statistics in [0, 1] units.

    Returns:
        keras.Model `images [N, S, S, 3] -> features [N, D]` (the class token after the final LayerNorm),
        with the LayerNorm's output `[N, 1 + (S/p)^2, D]` as layer "tokens".

    Reference: Dosovitskiy et al., "An Image is Worth 16x16 Words: Transformers for Image Recognition at
    Scale", ICLR 2021; He et al., MAE, CVPR 2022 (sin-cos table); Chen, Xie, He, MoCo v3, ICCV 2021
    (frozen patch projection).
    """
    check_image_size(image_size, minimum=1)
    patch_size = check_patch_size(image_size, patch_size)
    for key, value in (("embed_dim", embed_dim), ("depth", depth), ("num_heads", num_heads)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{key} must be an integer >= 1, got {value!r}")
    if embed_dim % num_heads:
        raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
    if position_embedding not in POSITION_EMBEDDINGS:
        raise ValueError(f"position_embedding must be one of {', '.join(POSITION_EMBEDDINGS)}, "
                         f"got {position_embedding!r}")
    if position_embedding == "sincos" and embed_dim % 4:
        raise ValueError(f"position_embedding 'sincos' needs embed_dim divisible by 4, got {embed_dim}")
    if isinstance(mlp_ratio, bool) or not isinstance(mlp_ratio, (int, float)) or not mlp_ratio > 0:
        raise ValueError(f"mlp_ratio must be a number > 0, got {mlp_ratio!r}")
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be a number in [0, 1), got {dropout!r}")

    grid = image_size // patch_size
    num_patches = grid * grid
    inputs, x = image_input(image_size, mean, std)
    # Xavier-uniform on the projection seen as a (3 p^2 -> D) linear map, as MAE and MoCo v3 do; Keras'
    # own conv fans (x p^2 on the output side) would give a range about p times narrower.
    fan_in, fan_out = 3 * patch_size * patch_size, embed_dim
    patch_init = keras.initializers.VarianceScaling(
        scale=(fan_in + fan_out * patch_size * patch_size) / (fan_in + fan_out), mode="fan_avg",
        distribution="uniform")
    x = keras.layers.Conv2D(embed_dim, patch_size, strides=patch_size, kernel_initializer=patch_init,
                            trainable=not frozen_patch_embedding, name="patch_embed")(x)
    patches = keras.layers.Reshape((num_patches, embed_dim), name="patch_tokens")(x)
    one = ops.ones_like(patches[:, :1, 0])  # [N, 1]: what the learned vectors are broadcast from
    if position_embedding == "sincos":
        patches = ops.add(patches, sincos_position_table(grid, embed_dim))
    class_token = learned_vector(one, 1, embed_dim, "cls_token")
    x = keras.layers.Concatenate(axis=1, name="embeddings")([class_token, patches])
    if position_embedding == "learned":
        positions = learned_vector(one, 1 + num_patches, embed_dim, "pos_embed")
        x = keras.layers.Add(name="embeddings_with_positions")([x, positions])
    x = _dropout(x, dropout, "embeddings_dropout")
    mlp_dim = int(embed_dim * mlp_ratio)
    for index in range(depth):
        x = transformer_block(x, num_heads, mlp_dim, dropout, name=f"block{index + 1}")
    x = keras.layers.LayerNormalization(epsilon=LAYER_NORM_EPSILON, name=TOKENS)(x)
    features = keras.layers.Identity(name=FEATURES)(x[:, 0])
    return keras.Model(inputs, features, name=name)


def patch_token_model(encoder: keras.Model) -> keras.Model:
    """`images -> [N, S/p, S/p, D]`: a ViT's normalised patch tokens on their grid, sharing its weights."""
    tokens = encoder.get_layer(TOKENS).output
    side = int(round((int(tokens.shape[1]) - 1) ** 0.5))
    grid = keras.layers.Reshape((side, side, int(tokens.shape[2])), name=f"{encoder.name}_patch_grid")(
        tokens[:, 1:])
    return keras.Model(encoder.input, grid, name=f"{encoder.name}_patch_tokens")


def is_vit(encoder: keras.Model) -> bool:
    """Whether `encoder` is one of sslzoo's ViTs (it has the final token LayerNorm)."""
    return any(layer.name == TOKENS for layer in encoder.layers)


def vit_patch_size(encoder: keras.Model) -> int:
    """p of a ViT encoder: the stride of its patch projection."""
    return int(encoder.get_layer("patch_embed").strides[0])


def _layer_or_none(encoder: keras.Model, name: str):
    try:
        return encoder.get_layer(name)
    except ValueError:
        return None


def encode_visible(encoder: keras.Model, images, ids_keep, training: bool = False):
    """A ViT encoder's own layers (same weights) on the visible patches only: MAE's `forward_encoder`.

    The patches are embedded and given their positions as in the full encoder, then only those in
    `ids_keep` go on, behind the class token, through the blocks and the final LayerNorm "tokens". With
    every patch kept in order, the result is the encoder's "tokens" output (and its class token the
    encoder's features).

    Args:
        encoder: a ViT from `build_vit` (`is_vit`).
        images: float32 `[N, S, S, 3]` in [0, 1].
        ids_keep: int `[N, K]`, indices into the row-major patch grid (`augment.tokens.random_masking`).
        training: passed to the attention and Dropout layers.
    Returns:
        `[N, 1 + K, D]`: the class token, then the visible patches in the order of `ids_keep`.
    Reference: He et al., "Masked Autoencoders Are Scalable Vision Learners", CVPR 2022.
    """
    if not is_vit(encoder):
        raise ValueError(f"encode_visible needs one of sslzoo's ViT encoders (vit_tiny, vit_small); "
                         f"'{encoder.name}' has no '{TOKENS}' layer")
    x = encoder.get_layer("normalization")(images)
    x = encoder.get_layer("patch_embed")(x)
    patches = encoder.get_layer("patch_tokens")(x)
    one = ops.ones_like(patches[:, :1, 0])
    class_token = encoder.get_layer("cls_token")(one)
    learned = _layer_or_none(encoder, "pos_embed")
    if learned is None:
        grid = int(round(int(patches.shape[1]) ** 0.5))
        patches = ops.add(patches, sincos_position_table(grid, int(patches.shape[2])))
    else:
        positions = learned(one)
        class_token = ops.add(class_token, positions[:, :1])
        patches = ops.add(patches, positions[:, 1:])
    visible = ops.take_along_axis(patches, ops.expand_dims(ops.cast(ids_keep, "int32"), -1), axis=1)
    x = encoder.get_layer("embeddings")([class_token, visible])
    dropout = _layer_or_none(encoder, "embeddings_dropout")
    if dropout is not None:
        x = dropout(x, training=training)
    depth = sum(1 for layer in encoder.layers if layer.name.startswith("block") and layer.name.endswith("_ln1"))
    for index in range(depth):
        prefix = f"block{index + 1}"
        x = _block(x, lambda suffix: _layer_or_none(encoder, f"{prefix}_{suffix}"), training)
    return encoder.get_layer(TOKENS)(x)


@register_encoder("vit_tiny")
def vit_tiny(
    image_size: int = 32,
    patch_size: Optional[int] = None,
    embed_dim: int = 192,
    depth: int = 12,
    num_heads: int = 3,
    mlp_ratio: float = 4.0,
    position_embedding: Literal["learned", "sincos"] = "learned",
    frozen_patch_embedding: bool = False,
    dropout: float = 0.0,
    mean: Sequence[float] = CIFAR_MEAN,
    std: Sequence[float] = CIFAR_STD,
) -> keras.Model:
    """ViT-Tiny: D 192, 12 blocks of 3 heads, MLP 768; 192-d features (the class token).

    Args:
        image_size: S; input float32 RGB `[N, S, S, 3]` in [0, 1].
        patch_size: p, dividing S; None: 4 at 32 px (an 8x8 grid), S/8 up to 16 px patches.
        embed_dim, depth, num_heads, mlp_ratio: overrides of the ViT-Tiny shape (see `build_vit`).
        position_embedding: "learned" or "sincos" (fixed 2-D sin-cos, MAE / MoCo v3).
        frozen_patch_embedding: MoCo v3's random, never-trained patch projection.
        dropout: dropout rate (0 for self-supervised pre-training).
        mean, std: per-channel input statistics in [0, 1] units.

    Returns:
        keras.Model `images [N, S, S, 3] -> features [N, embed_dim]`.

    Reference: Dosovitskiy et al., ICLR 2021; the Tiny/Small shapes are DeiT's (Touvron et al., ICML 2021).
    """
    return build_vit("vit_tiny", image_size, patch_size, embed_dim, depth, num_heads, mlp_ratio,
                     position_embedding, frozen_patch_embedding, dropout, mean, std)


@register_encoder("vit_small")
def vit_small(
    image_size: int = 32,
    patch_size: Optional[int] = None,
    embed_dim: int = 384,
    depth: int = 12,
    num_heads: int = 6,
    mlp_ratio: float = 4.0,
    position_embedding: Literal["learned", "sincos"] = "learned",
    frozen_patch_embedding: bool = False,
    dropout: float = 0.0,
    mean: Sequence[float] = CIFAR_MEAN,
    std: Sequence[float] = CIFAR_STD,
) -> keras.Model:
    """ViT-Small: D 384, 12 blocks of 6 heads, MLP 1536; 384-d features (the class token).

    Args: as `vit_tiny`.

    Returns:
        keras.Model `images [N, S, S, 3] -> features [N, embed_dim]`.

    Reference: Dosovitskiy et al., ICLR 2021; the Tiny/Small shapes are DeiT's (Touvron et al., ICML 2021).
    """
    return build_vit("vit_small", image_size, patch_size, embed_dim, depth, num_heads, mlp_ratio,
                     position_embedding, frozen_patch_embedding, dropout, mean, std)
