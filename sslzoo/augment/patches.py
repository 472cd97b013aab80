"""Patch-pair sampling for relative patch location (Doersch, Gupta, Efros, ICCV 2015).

All ops are batched tf ops on float32 images [B, H, W, 3] with stateless seeds, so they run inside tf.data
and an epoch's batches reproduce.

Geometry: a 3x3 grid of cells, each `patch + gap` apart, placed at a random position on the image where
room allows. The centre patch and ONE random neighbour are cut out, each shifted independently by up to
+-jitter pixels on both axes. The label is the neighbour's position in reading order:

    0 1 2
    3 . 4
    5 6 7

Bound on the separation of the two patches along an axis where the neighbour is displaced: the nominal
gap is `gap`; each patch moves by at most `jitter` towards the other, so the separation lies in
[gap - 2 * jitter, gap + 2 * jitter]. `check_geometry` requires gap >= 2 * jitter: patches never overlap.
"""

from __future__ import annotations

from typing import Dict, Sequence

import tensorflow as tf

from sslzoo.augment.ops import split_seed
from sslzoo.config import ConfigError

# (row, col) of each label in the 3x3 grid, reading order without the centre.
NEIGHBOUR_CELLS = ((0, 0), (0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1), (2, 2))
# Index of each label's cell in a row-major 3x3 grid (4 is the centre).
NEIGHBOUR_INDICES = tuple(3 * r + c for r, c in NEIGHBOUR_CELLS)
# Paper / D-code: a third of the patches are downsampled (to 10..95 px for 96 px patches) and upsampled back.
PIXELATION_FRACTION = 1.0 / 3.0
PIXELATION_MIN_RATIO = 10.0 / 96.0


def grid_extent(patch: int, gap: int, jitter: int) -> int:
    """Pixels the jittered 3x3 grid needs along each axis: 3 * patch + 2 * gap + 2 * jitter."""
    return 3 * patch + 2 * gap + 2 * jitter


def check_geometry(image_size: int, patch: int, gap: int, jitter: int, what: str = "relpatch") -> None:
    """Raises ConfigError, naming the numbers and a fix, if the grid does not fit or patches can overlap."""
    if patch < 1 or gap < 0 or jitter < 0:
        raise ConfigError(
            f"{what}: patch_size {patch} must be >= 1, gap {gap} and jitter {jitter} must be >= 0"
        )
    if gap < 2 * jitter:
        raise ConfigError(
            f"{what}: gap {gap} < 2 * jitter {jitter}: two jittered patches could overlap and the net could "
            f"match their shared pixels; use gap >= {2 * jitter} or jitter <= {gap // 2}"
        )
    extent = grid_extent(patch, gap, jitter)
    if extent > image_size:
        largest = (image_size - 2 * gap - 2 * jitter) // 3
        hint = f"patch_size <= {largest}" if largest >= 1 else "smaller gap/jitter"
        raise ConfigError(
            f"{what}: the 3x3 grid needs 3*patch_size + 2*gap + 2*jitter = 3*{patch} + 2*{gap} + 2*{jitter} "
            f"= {extent} px but the (resized) image is {image_size} px; use {hint}, a larger "
            f"method.options.resize_to (e.g. {extent}), or smaller gap/jitter (CIFAR: resize_to 64 with "
            "patch 13, gap 8, jitter 4; or native 32 with patch 8, gap 2, jitter 1)"
        )


def crop_patches(images: tf.Tensor, top_left: tf.Tensor, patch: int) -> tf.Tensor:
    """Exact crops: images [B, H, W, C], top_left int32 [B, 2] (row, col) -> [B, patch, patch, C]."""
    offsets = tf.range(patch)[tf.newaxis, :]
    rows = top_left[:, :1] + offsets
    cols = top_left[:, 1:] + offsets
    cropped = tf.gather(images, rows, axis=1, batch_dims=1)
    return tf.gather(cropped, cols, axis=2, batch_dims=1)


def sample_patch_pairs(
    images: tf.Tensor, patch: int, gap: int, jitter: int, seed: tf.Tensor
) -> Dict[str, tf.Tensor]:
    """One (centre, neighbour) pair per image.

    Args:
        images: float [B, S, S, C]; S >= grid_extent(patch, gap, jitter) (see check_geometry).
        patch, gap, jitter: geometry in pixels of `images`.
        seed: int [2] stateless seed.
    Returns:
        {"centre": [B, patch, patch, C], "neighbour": [B, patch, patch, C], "labels": int32 [B] in 0..7,
         "centre_yx", "neighbour_yx": int32 [B, 2] top-left (row, col) of each patch in `images`}.
    """
    grid_seed, label_seed, jitter_seed = split_seed(seed, 3)
    batch = tf.shape(images)[0]
    size = tf.shape(images)[1]
    room = size - grid_extent(patch, gap, jitter)
    # Top-left of the grid's jitter margin, uniform over every position where the grid fits.
    origin = tf.random.stateless_uniform([batch, 2], seed=grid_seed, minval=0, maxval=room + 1, dtype=tf.int32)
    labels = tf.random.stateless_uniform([batch], seed=label_seed, minval=0, maxval=8, dtype=tf.int32)
    cells = tf.gather(tf.constant(NEIGHBOUR_CELLS, dtype=tf.int32), labels)  # [B, 2] (row, col)
    shifts = tf.random.stateless_uniform(
        [2, batch, 2], seed=jitter_seed, minval=-jitter, maxval=jitter + 1, dtype=tf.int32
    )
    step = patch + gap
    centre_yx = origin + jitter + step + shifts[0]
    neighbour_yx = origin + jitter + cells * step + shifts[1]
    return {
        "centre": crop_patches(images, centre_yx, patch),
        "neighbour": crop_patches(images, neighbour_yx, patch),
        "labels": labels,
        "centre_yx": centre_yx,
        "neighbour_yx": neighbour_yx,
    }


def sample_patch_grid(
    images: tf.Tensor, patch: int, gap: int, jitter: int, seed: tf.Tensor
) -> Dict[str, tf.Tensor]:
    """All nine patches of one jittered 3x3 grid per image: the centre and its 8 neighbours.

    The D-code trains on every valid pair of a sampled grid; this gives the 8 (centre, neighbour) pairs of
    one grid for the price of 9 patch encodings instead of 16.

    Args:
        images: float [B, S, S, C]; S >= grid_extent(patch, gap, jitter).
        patch, gap, jitter: geometry in pixels of `images`.
        seed: int [2] stateless seed.
    Returns:
        {"patches": [B, 9, patch, patch, C] in reading order (index 4 is the centre),
         "top_left": int32 [B, 9, 2] (row, col) of each patch in `images`}.
    """
    grid_seed, jitter_seed = split_seed(seed, 2)
    batch = tf.shape(images)[0]
    room = tf.shape(images)[1] - grid_extent(patch, gap, jitter)
    origin = tf.random.stateless_uniform([batch, 1, 2], seed=grid_seed, minval=0, maxval=room + 1, dtype=tf.int32)
    shifts = tf.random.stateless_uniform(
        [batch, 9, 2], seed=jitter_seed, minval=-jitter, maxval=jitter + 1, dtype=tf.int32
    )
    cells = tf.constant([(r, c) for r in range(3) for c in range(3)], tf.int32)[tf.newaxis]  # [1, 9, 2]
    top_left = origin + jitter + cells * (patch + gap) + shifts
    offsets = tf.range(patch)
    rows = top_left[..., :1] + offsets  # [B, 9, patch]
    cols = top_left[..., 1:] + offsets
    patches = tf.gather(images, rows, axis=1, batch_dims=1)  # [B, 9, patch, S, C]
    patches = tf.gather(patches, cols, axis=3, batch_dims=2)  # [B, 9, patch, patch, C]
    return {"patches": patches, "top_left": top_left}


def _resampling_matrices(sizes: tf.Tensor, patch: int) -> tf.Tensor:
    """Per-patch [patch, patch] matrices: area-downsample to `sizes` px, bilinear-upsample back to `patch`."""
    s = tf.cast(sizes, tf.float32)[:, tf.newaxis, tf.newaxis]  # [B, 1, 1]
    low = tf.range(patch, dtype=tf.float32)  # low-res index k (rows >= s are unused and get zero weight)
    high = tf.range(patch, dtype=tf.float32)  # full-res index i
    scale = patch / s  # source pixels per low-res pixel
    # Down [B, k, i]: overlap of source pixel [i, i+1) with low-res cell [k*scale, (k+1)*scale), / scale.
    k, i = low[tf.newaxis, :, tf.newaxis], high[tf.newaxis, tf.newaxis, :]
    overlap = tf.minimum(i + 1.0, (k + 1.0) * scale) - tf.maximum(i, k * scale)
    down = tf.maximum(overlap, 0.0) / scale * tf.cast(k < s, tf.float32)
    # Up [B, i, k]: half-pixel-centre bilinear from s px to patch px, edges clamped.
    i2, k2 = high[tf.newaxis, :, tf.newaxis], low[tf.newaxis, tf.newaxis, :]
    coord = tf.clip_by_value((i2 + 0.5) / scale - 0.5, 0.0, s - 1.0)
    up = tf.maximum(1.0 - tf.abs(coord - k2), 0.0) * tf.cast(k2 < s, tf.float32)
    return tf.matmul(up, down)  # [B, patch, patch]


def random_pixelation(patches: tf.Tensor, seed: tf.Tensor, fraction: float = PIXELATION_FRACTION) -> tf.Tensor:
    """Downsamples `fraction` of the patches to a random size in [patch * 10/96, patch - 1] and back.

    Rows and columns resample separately (area down, bilinear up), one matrix per patch, so the whole
    batch is three matmuls however the sizes vary.
    """
    patch = int(patches.shape[1])
    if patch < 2:
        return patches
    pick_seed, size_seed = split_seed(seed, 2)
    batch = tf.shape(patches)[0]
    smallest = max(1, int(round(patch * PIXELATION_MIN_RATIO)))
    sizes = tf.random.stateless_uniform([batch], seed=size_seed, minval=smallest, maxval=patch, dtype=tf.int32)
    chosen = tf.random.stateless_uniform([batch], seed=pick_seed) < fraction
    matrices = _resampling_matrices(sizes, patch)
    resampled = tf.einsum("bij,bjkc,blk->bilc", matrices, patches, matrices)
    return tf.where(chosen[:, tf.newaxis, tf.newaxis, tf.newaxis], resampled, patches)


def color_drop(patches: tf.Tensor, seed: tf.Tensor, noise: float) -> tf.Tensor:
    """Keeps one random channel per patch, mean-subtracted; the others become uniform noise in +-noise.

    The D-code's countermeasure to chromatic aberration: the two replaced channels carry nothing about the
    image, so colour fringes at the lens edges cannot locate the patch.
    """
    keep_seed, noise_seed = split_seed(seed, 2)
    batch = tf.shape(patches)[0]
    keep = tf.random.stateless_uniform([batch], seed=keep_seed, minval=0, maxval=3, dtype=tf.int32)
    mask = tf.one_hot(keep, 3, dtype=patches.dtype)[:, tf.newaxis, tf.newaxis, :]
    centred = patches - tf.reduce_mean(patches, axis=[1, 2], keepdims=True)
    fill = tf.random.stateless_uniform(tf.shape(patches), seed=noise_seed, minval=-noise, maxval=noise)
    return mask * centred + (1.0 - mask) * fill


def normalize_patches(patches: tf.Tensor, epsilon: float = 1e-6) -> tf.Tensor:
    """Each patch to zero mean and unit standard deviation over all its pixels and channels."""
    mean, variance = tf.nn.moments(patches, axes=[1, 2, 3], keepdims=True)
    return (patches - mean) * tf.math.rsqrt(variance + epsilon)


def to_encoder_input(normalized: tf.Tensor, mean: Sequence[float], std: Sequence[float]) -> tf.Tensor:
    """The fixed affine `mean + std * z` (per channel) into the encoder's input units.

    The encoder's own Normalization layer computes `(x - mean) / std`, so it hands the convolutions exactly
    the per-patch-normalised z, while full images (the evaluated path) keep their dataset normalisation:
    both reach the first conv roughly zero-mean, unit-variance.
    """
    mean = tf.constant(mean, tf.float32)
    std = tf.constant(std, tf.float32)
    return mean + std * normalized
