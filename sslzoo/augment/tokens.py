"""Images as sequences of patches, and MAE's per-image random masking of them.

`patchify` / `unpatchify` follow the official MAE code: patches in row-major order over the grid, each
flattened as (row in the patch, column in the patch, channel). `random_masking` draws one uniform noise
value per patch from a stateless seed and keeps the patches with the smallest noise (the official
`random_masking`: argsort of the noise, the first `len_keep` kept), so each image has its own mask and a
batch's masks reproduce from its seed.

Reference: He et al., "Masked Autoencoders Are Scalable Vision Learners", CVPR 2022 (`models_mae.py`).
"""

from __future__ import annotations

from typing import Tuple

import tensorflow as tf


def patchify(images: tf.Tensor, patch_size: int) -> tf.Tensor:
    """[N, H, W, C] -> [N, (H/p)(W/p), p*p*C]: patch k = row * (W/p) + col, values in (py, px, c) order.

    Raises ValueError when p does not divide a known H or W.
    """
    p = int(patch_size)
    height, width, channels = images.shape[1], images.shape[2], images.shape[3]
    if p < 1 or any(side is not None and side % p for side in (height, width)):
        raise ValueError(f"patchify: patch size {patch_size} must be >= 1 and divide the image ({height} x {width}); "
                         "use a divisor of the image side")
    shape = tf.shape(images)
    rows, cols = shape[1] // p, shape[2] // p
    x = tf.reshape(images, [shape[0], rows, p, cols, p, shape[3]])
    x = tf.transpose(x, [0, 1, 3, 2, 4, 5])  # [N, rows, cols, py, px, C]
    patches = tf.reshape(x, [shape[0], rows * cols, p * p * shape[3]])
    if height is not None and width is not None and channels is not None:
        patches.set_shape([images.shape[0], (height // p) * (width // p), p * p * channels])
    return patches


def unpatchify(patches: tf.Tensor, patch_size: int, channels: int = 3) -> tf.Tensor:
    """The inverse of `patchify` for square images: [N, L, p*p*C] -> [N, sqrt(L) p, sqrt(L) p, C].

    Raises ValueError when L is not a square or the last axis is not p*p*C.
    """
    p, c = int(patch_size), int(channels)
    length, values = patches.shape[1], patches.shape[2]
    side = int(round(length ** 0.5)) if length is not None else None
    if (side is not None and side * side != length) or (values is not None and values != p * p * c):
        raise ValueError(f"unpatchify: need [N, L, p*p*C] with L a square and p*p*C = {p * p * c} "
                         f"(patch size {p}, {c} channels), got {patches.shape}")
    if side is None:
        side = tf.cast(tf.round(tf.sqrt(tf.cast(tf.shape(patches)[1], tf.float32))), tf.int32)
    batch = tf.shape(patches)[0]
    x = tf.reshape(patches, [batch, side, side, p, p, c])
    x = tf.transpose(x, [0, 1, 3, 2, 4, 5])  # [N, rows, py, cols, px, C]
    return tf.reshape(x, [batch, side * p, side * p, c])


def keep_count(num_patches: int, mask_ratio: float) -> int:
    """Patches left visible: int(L * (1 - mask_ratio)), the official `len_keep`."""
    return int(num_patches * (1 - mask_ratio))


def random_masking(batch, num_patches: int, mask_ratio: float, seed: tf.Tensor
                   ) -> Tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """A random subset of `keep_count(L, mask_ratio)` patches per image, the rest masked.

    Args:
        batch: N (an int or a scalar tensor).
        num_patches: L.
        mask_ratio: fraction of the patches to mask, in [0, 1).
        seed: int [2] stateless seed.
    Returns:
        ids_keep int32 [N, len_keep]: the visible patches, in the order the noise sorts them;
        ids_restore int32 [N, L]: the inverse permutation (position of patch k in the sorted order), which
            puts [visible, masked] tokens back in grid order;
        mask float32 [N, L]: 1 on masked patches, 0 on visible ones, in grid order.
    """
    length = int(num_patches)
    if not 0.0 <= mask_ratio < 1.0:
        raise ValueError(f"random_masking: mask_ratio {mask_ratio} must be in [0, 1)")
    len_keep = keep_count(length, mask_ratio)
    noise = tf.random.stateless_uniform(tf.stack([batch, length]), seed=seed)
    # Ascending: the smallest noise values are kept. Ties (probability ~0) break by index, stably.
    ids_shuffle = tf.argsort(noise, axis=1, stable=True)
    ids_restore = tf.argsort(ids_shuffle, axis=1, stable=True)
    ids_keep = ids_shuffle[:, :len_keep]
    # The official code unshuffles [0] * len_keep + [1] * (L - len_keep) with ids_restore: a patch is
    # masked exactly when its rank in the noise order is len_keep or more.
    mask = tf.cast(ids_restore >= len_keep, tf.float32)
    return tf.cast(ids_keep, tf.int32), tf.cast(ids_restore, tf.int32), mask
