"""Jigsaw puzzles: the maximal-Hamming permutation set and batched 3x3 tile cutting (Noroozi & Favaro 2016).

Everything here that runs per batch is TensorFlow ops with stateless seeds (it runs inside tf.data); the
permutation set is NumPy, computed once per method.
"""

from __future__ import annotations

import functools
import itertools
import math
from typing import Sequence

import numpy as np
import tensorflow as tf

from sslzoo.augment.ops import split_seed
from sslzoo.config import ConfigError

GRID = 3
NUM_TILES = GRID * GRID
MAX_PERMUTATIONS = math.factorial(NUM_TILES)  # 362,880


@functools.lru_cache(maxsize=1)
def all_permutations() -> np.ndarray:
    """Every permutation of 0..8, int8 [9!, 9], in lexicographic order (itertools' order)."""
    return np.array(list(itertools.permutations(range(NUM_TILES))), dtype=np.int8)


def max_hamming_permutations(count: int, seed: int = 0) -> np.ndarray:
    """The paper's permutation set: greedy selection for maximal mean Hamming distance.

    Starts from a permutation drawn at random (from `seed`) among all 9!, then repeatedly adds the remaining
    permutation with the largest mean Hamming distance to those chosen (`select_permutations.py
    --selection max` of the reference code; ties go to the first in lexicographic order, as its argmax
    over the lexicographically ordered remaining list). A running sum of distances to the chosen set makes
    each step one vectorised pass over the 9! candidates.

    Args:
        count: N, 2 <= N <= 9!.
        seed: picks the starting permutation; the set is a deterministic function of (count, seed).
    Returns:
        int32 [N, 9]; row k is p_k, and shuffled position i holds original tile p_k[i].
    """
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or not 2 <= count <= MAX_PERMUTATIONS:
        raise ConfigError(
            f"method.options.num_permutations {count!r}: need an integer in [2, {MAX_PERMUTATIONS}] "
            "(there are 9! = 362,880 orders of 9 tiles; the paper uses 100 to 1000)"
        )
    candidates = all_permutations()
    # Position-major copy: 9 contiguous columns, so each step is 9 fast vector compares (~1 ms for all 9!)
    # instead of a strided row-wise reduction (~8 ms).
    columns = np.ascontiguousarray(candidates.T)
    start = int(np.random.default_rng(seed).integers(MAX_PERMUTATIONS))
    distance_sum = np.zeros(MAX_PERMUTATIONS, dtype=np.int32)
    taken = np.zeros(MAX_PERMUTATIONS, dtype=bool)
    chosen = [start]
    for _ in range(count - 1):
        last = chosen[-1]
        taken[last] = True
        for position in range(NUM_TILES):
            distance_sum += columns[position] != candidates[last, position]
        # The mean is the sum over the same number of chosen rows: the same arg-max. Taken rows drop out.
        scores = np.where(taken, -1, distance_sum)
        chosen.append(int(np.argmax(scores)))
    return candidates[chosen].astype(np.int32)


def hamming_stats(permutations: np.ndarray) -> tuple[float, float]:
    """(minimum, mean) pairwise Hamming distance of a permutation set [N, 9]."""
    p = np.asarray(permutations)
    distances = (p[:, None, :] != p[None, :, :]).sum(axis=-1)
    off_diagonal = distances[~np.eye(len(p), dtype=bool)]
    return float(off_diagonal.min()), float(off_diagonal.mean())


def check_geometry(image_size: int, grid_size: int, tile_size: int, channel_jitter: int,
                   resize: int = 0) -> int:
    """Validates the puzzle geometry; returns the cell size. Bad numbers fail naming the fix."""
    source = resize or image_size
    if grid_size > source:
        raise ConfigError(
            f"method.options.grid_size {grid_size} is larger than the {source}x{source} image"
            f"{' after resize' if resize else ''}: the 3x3 grid must fit inside it; use grid_size <= {source}"
            + ("" if resize else " or set method.options.resize to upsample first")
        )
    if grid_size < GRID:
        raise ConfigError(f"method.options.grid_size {grid_size}: need at least 3 (one pixel per cell)")
    cell = grid_size // GRID
    if tile_size < 1:
        raise ConfigError(f"method.options.tile_size {tile_size}: need a positive tile size")
    if tile_size + channel_jitter > cell:
        raise ConfigError(
            f"method.options.tile_size {tile_size} + channel_jitter {channel_jitter} exceeds the "
            f"{cell}x{cell} cell (grid_size {grid_size} / 3): tiles must fit inside their cells (the gap "
            f"is the paper's edge-continuity countermeasure); use tile_size <= {cell - channel_jitter} or a "
            "larger grid_size"
        )
    return cell


def cut_tiles(images: tf.Tensor, grid_size: int, tile_size: int, seed: tf.Tensor,
              channel_jitter: int = 0, return_positions: bool = False):
    """Cuts a 3x3 grid of tiles, one at a random position inside each cell.

    Args:
        images: float [B, H, W, 3], H, W >= grid_size.
        grid_size: G; a G x G square at a random offset in the image is split into 3x3 cells of G // 3.
        tile_size: t <= cell - channel_jitter; each tile sits at a random offset inside its cell.
        seed: int [2] stateless seed.
        channel_jitter: J >= 0; each colour channel of a tile is shifted by its own 0..J pixels in both
            directions (the paper's countermeasure against chromatic aberration).
        return_positions: also return the tiles' top-left corners int32 [B, 9, 2] (of channel 0) in image
            coordinates, with the grid's offset int32 [B, 2].
    Returns:
        tiles float [B, 9, t, t, 3] in row-major cell order (tile i is cell (i // 3, i % 3)).
    """
    grid_seed, position_seed, jitter_seed = split_seed(seed, 3)
    batch = tf.shape(images)[0]
    height, width = tf.shape(images)[1], tf.shape(images)[2]
    cell = grid_size // GRID
    # Grid offset: anywhere the grid fits (random-crop augmentation, the loader's RandomCrop).
    grid_offset = tf.random.stateless_uniform(
        [batch, 2], seed=grid_seed, minval=0, maxval=tf.int32.max, dtype=tf.int32
    ) % tf.stack([height - grid_size + 1, width - grid_size + 1])
    slack = cell - tile_size - channel_jitter + 1
    within = tf.random.stateless_uniform(
        [batch, NUM_TILES, 2], seed=position_seed, minval=0, maxval=slack, dtype=tf.int32
    )
    cells = tf.constant([[i // GRID, i % GRID] for i in range(NUM_TILES)], dtype=tf.int32) * cell
    corners = grid_offset[:, tf.newaxis, :] + cells[tf.newaxis] + within  # [B, 9, 2]
    if channel_jitter > 0:
        shifts = tf.random.stateless_uniform(
            [batch, NUM_TILES, 3, 2], seed=jitter_seed, minval=0, maxval=channel_jitter + 1, dtype=tf.int32
        )
    else:
        shifts = tf.zeros([batch, NUM_TILES, 3, 2], tf.int32)
    steps = tf.range(tile_size)
    channels = []
    for c in range(3):
        start = corners + shifts[:, :, c, :]
        rows = start[..., :1] + steps  # [B, 9, t]
        cols = start[..., 1:] + steps
        plane = images[..., c]  # [B, H, W]
        picked = tf.gather(plane, rows, axis=1, batch_dims=1)  # [B, 9, t, W]
        channels.append(tf.gather(picked, cols, axis=3, batch_dims=2))  # [B, 9, t, t]
    tiles = tf.stack(channels, axis=-1)
    if return_positions:
        return tiles, corners, grid_offset
    return tiles


def normalize_tiles(tiles: tf.Tensor, mean: Sequence[float], std: Sequence[float]) -> tf.Tensor:
    """Per-tile, per-channel standardisation, expressed in the encoder's input units.

    Each tile channel gets mean 0 and std 1 (constant channels: std treated as 1, as the reference loader),
    then maps back through the encoder's own input normalisation `(x - mean) / std`, so after the encoder's
    Normalization layer every tile channel is exactly zero-mean and unit-std.
    """
    tile_mean = tf.reduce_mean(tiles, axis=[-3, -2], keepdims=True)
    tile_std = tf.math.reduce_std(tiles, axis=[-3, -2], keepdims=True)
    tile_std = tf.where(tile_std < 1e-6, tf.ones_like(tile_std), tile_std)
    standard = (tiles - tile_mean) / tile_std
    return standard * tf.constant(std, tf.float32) + tf.constant(mean, tf.float32)


def random_grayscale(images: tf.Tensor, probability: float, seed: tf.Tensor) -> tf.Tensor:
    """Converts each image to grey (replicated to 3 channels) with `probability`."""
    if probability <= 0:
        return images
    batch = tf.shape(images)[0]
    gray = tf.repeat(tf.image.rgb_to_grayscale(images), 3, axis=-1)
    pick = tf.random.stateless_uniform([batch], seed=seed) < probability
    return tf.where(pick[:, tf.newaxis, tf.newaxis, tf.newaxis], gray, images)


def shuffle_tiles(tiles: tf.Tensor, permutations: tf.Tensor, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Reorders each puzzle by a random permutation of the set.

    Args:
        tiles: [B, 9, ...] in original (row-major cell) order.
        permutations: int32 [N, 9].
    Returns:
        (shuffled [B, 9, ...] where position i holds original tile p_k[i], labels k int32 [B]).
        The inverse permutation argsort(p_k) restores the original order.
    """
    batch = tf.shape(tiles)[0]
    count = tf.shape(permutations)[0]
    labels = tf.random.stateless_uniform([batch], seed=seed, minval=0, maxval=count, dtype=tf.int32)
    order = tf.gather(permutations, labels)  # [B, 9]
    return tf.gather(tiles, order, axis=1, batch_dims=1), labels
