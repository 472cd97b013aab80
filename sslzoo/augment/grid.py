"""CPC's overlapping patch grid and per-patch augmentations (van den Oord et al. 2018; Hénaff et al. 2020).

The paper cuts a 256x256 image into a 7x7 grid of 64x64 patches with 50% overlap (stride 32). Everything
that runs per batch is TensorFlow ops with stateless seeds (it runs inside tf.data); the geometry check is
plain Python, run once when the method is built.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

import tensorflow as tf

from sslzoo.augment.ops import random_crop_with_padding, random_flip_left_right, split_seed
from sslzoo.config import ConfigError


def grid_size(image_size: int, patch_size: int, stride: int) -> int:
    """Patches per side of the grid: (image_size - patch_size) / stride + 1."""
    return (image_size - patch_size) // stride + 1


def patch_positions(image_size: int, patch_size: int, stride: int) -> list[int]:
    """Top (or left) pixel of every grid row (or column): 0, stride, 2 * stride, ..."""
    return [i * stride for i in range(grid_size(image_size, patch_size, stride))]


def check_grid(image_size: int, patch_size: int, stride: int, steps: int, resize: int = 0,
               first_step: int = 1) -> int:
    """Validates CPC's grid geometry; returns the grid size n (an n x n grid). Bad numbers fail naming the fix.

    Args:
        image_size: S of the input images.
        patch_size: P, the side of a patch.
        stride: pixels between neighbouring patches (P / 2 is the paper's 50% overlap).
        steps: K, how many rows ahead the context predicts; the grid needs first_step + K rows.
        resize: > 0 resizes the image to resize x resize before cutting.
        first_step: the nearest row predicted (rows first_step..first_step + K - 1 below the context).
    """
    source = resize or image_size
    where = f"the {source}x{source} image" + (" after resize" if resize else "")
    if patch_size < 1 or stride < 1:
        raise ConfigError(
            f"method.options.patch_size {patch_size} and patch_stride {stride} must both be >= 1 "
            "(e.g. patch_size 8, patch_stride 4 for a 7x7 grid on 32x32 images)"
        )
    if patch_size > source:
        raise ConfigError(
            f"method.options.patch_size {patch_size} is larger than {where}; use patch_size <= {source}"
            + ("" if resize else " or set method.options.resize to upsample first")
        )
    if (source - patch_size) % stride:
        fits = [s for s in range(1, source - patch_size + 1) if (source - patch_size) % s == 0]
        raise ConfigError(
            f"method.options.patch_stride {stride} does not tile {where} with {patch_size}-px patches: "
            f"(image {source} - patch {patch_size}) must be a multiple of the stride, or the last "
            f"{(source - patch_size) % stride} px would never be seen; strides that fit: {fits}"
        )
    n = grid_size(source, patch_size, stride)
    last = n - first_step
    if steps < 1 or steps > last:
        skipped = (f" (skip_overlapping starts at row {first_step}: patches of nearer rows overlap or touch "
                   "the context's)" if first_step > 1 else "")
        raise ConfigError(
            f"method.options.steps {steps}: the context predicts rows {first_step}..{first_step + steps - 1} "
            f"ahead inside a {n}x{n} grid{skipped}, so steps must be in [1, {max(last, 0)}]; use fewer steps "
            "or a smaller patch_stride"
        )
    return n


def cut_grid(images: tf.Tensor, patch_size: int, stride: int) -> tf.Tensor:
    """Cuts every image into its overlapping grid of patches.

    Args:
        images: float [B, S, S, C]; (S - patch_size) must be a multiple of `stride`.
        patch_size: P.
        stride: pixels between neighbouring patches.
    Returns:
        float [B, n * n, P, P, C] in row-major grid order: patch r * n + c covers rows
        [r * stride, r * stride + P) and columns [c * stride, c * stride + P) of the image.
    """
    channels = images.shape[-1] or tf.shape(images)[-1]
    # extract_patches flattens each patch row-major as (row, column, channel): an exact copy, one op.
    patches = tf.image.extract_patches(
        images, sizes=[1, patch_size, patch_size, 1], strides=[1, stride, stride, 1],
        rates=[1, 1, 1, 1], padding="VALID",
    )
    batch = tf.shape(images)[0]
    return tf.reshape(patches, [batch, -1, patch_size, patch_size, channels])


def drop_colours(patches: tf.Tensor, probability: float, fill: Sequence[float], seed: tf.Tensor) -> tf.Tensor:
    """CPC v2's colour dropping: with `probability`, a patch keeps one random channel of three.

    Args:
        patches: float [N, P, P, 3].
        probability: chance that a patch loses two of its channels.
        fill: per-channel value a dropped channel takes; the encoder's input mean, so a dropped channel
            is zero after the encoder's own normalisation (like dropout), not a dark colour.
        seed: int [2] stateless seed.
    Returns:
        float [N, P, P, 3].
    """
    if probability <= 0:
        return patches
    drop_seed, channel_seed = split_seed(seed, 2)
    count = tf.shape(patches)[0]
    dropped = tf.random.stateless_uniform([count], seed=drop_seed) < probability
    kept = tf.random.stateless_uniform([count], seed=channel_seed, minval=0, maxval=3, dtype=tf.int32)
    keep = tf.one_hot(kept, 3, dtype=patches.dtype)  # [N, 3]
    keep = tf.where(dropped[:, tf.newaxis], keep, tf.ones_like(keep))[:, tf.newaxis, tf.newaxis, :]
    fill = tf.constant(list(fill), patches.dtype)
    return patches * keep + fill * (1.0 - keep)


def augment_patches(
    patches: tf.Tensor,
    seed: tf.Tensor,
    flip_probability: float = 0.0,
    colour_drop_probability: float = 0.0,
    jitter: int = 0,
    fill: Sequence[float] = (0.0, 0.0, 0.0),
) -> tf.Tensor:
    """Independent augmentations per patch: CPC v2's flips and colour dropping, CPC v1's position jitter.

    Args:
        patches: float [B, M, P, P, 3].
        seed: int [2] stateless seed.
        flip_probability: each patch is mirrored left-right with this chance.
        colour_drop_probability: see `drop_colours`.
        jitter: J >= 0; each patch's content shifts by up to J px with a zero border (CPC v1's random
            60x60 sub-crop padded back to 64: overlapping patches must not be matched by their shared
            pixels alone).
        fill: see `drop_colours`.
    Returns:
        float [B, M, P, P, 3].
    """
    flip_seed, colour_seed, jitter_seed = split_seed(seed, 3)
    shape = tf.shape(patches)
    flat = tf.reshape(patches, tf.concat([[-1], shape[2:]], axis=0))
    if flip_probability > 0:
        flat = random_flip_left_right(flat, flip_seed, probability=flip_probability)
    flat = drop_colours(flat, colour_drop_probability, fill, colour_seed)
    flat = random_crop_with_padding(flat, jitter, jitter_seed)
    return tf.reshape(flat, shape)


def patch_mosaic(patches, grid: int, gap: int = 1, background: float = 1.0):
    """Lays an image's grid of patches out with `gap` px between them, for pictures (NumPy).

    Args:
        patches: array [n * n, P, P, C] in row-major grid order.
    Returns:
        array [n * P + (n - 1) * gap, same, C].
    """
    patches = np.asarray(patches)
    size = patches.shape[1]
    side = grid * size + (grid - 1) * gap
    mosaic = np.full((side, side, patches.shape[-1]), background, patches.dtype)
    for index, patch in enumerate(patches):
        top, left = (index // grid) * (size + gap), (index % grid) * (size + gap)
        mosaic[top:top + size, left:left + size] = patch
    return mosaic
