"""Inpainting masks for the context encoder: central square, random blocks, random regions.

Every mask function is batched and stateless-seeded (the same seed gives the same masks, inside tf.data or
eagerly) and returns float32 `[B, S, S, 1]` with 1 on the pixels dropped from the input (the *hole*).
`overlap_weights` turns a hole into the per-pixel weights of the reconstruction loss: 1 in the hole,
`overlap_weight` on the visible pixels within `overlap` pixels of it (Chebyshev distance), 0 elsewhere.

Central masks follow the context-encoder code (`train.lua`, `overlapPred`): the *predicted* region is the
central `region_size` square; the hole in the input is that square shrunk by `overlap` pixels per side, so
the ring between them is visible, predicted, and weighted 10x. The same ring is what `overlap_weights`
gives for any hole, so random masks get the same treatment.

At 32 px that ring outweighs the hole: with weight 10 it carries ~89% of the L2 weight for central masks
and ~94% for random regions (the code's 128-px geometry: 75%), so the loss is mostly autoencoding visible
pixels. `ring_share_weights` instead sets each image's ring weight from its own pixel counts so the ring
carries a chosen fraction of the weight (`ring_weight_share` measures that fraction).
"""

from __future__ import annotations

import tensorflow as tf

from sslzoo.augment.ops import split_seed
from sslzoo.config import ConfigError

MASK_KINDS = ("central", "random_block", "random_region")


def central_square_bounds(image_size: int, region_size: int, overlap: int) -> tuple[int, int, int]:
    """(region offset, hole offset, hole size) of the centred predicted square and its input hole."""
    region_offset = (image_size - region_size) // 2
    return region_offset, region_offset + overlap, region_size - 2 * overlap


def central_hole(batch_size, image_size: int, region_size: int, overlap: int) -> tf.Tensor:
    """The centred hole: the `region_size` square shrunk by `overlap` per side, for every image.

    Returns:
        float32 [B, S, S, 1]; 1 on the (region_size - 2 * overlap)^2 hole pixels.
    """
    _, offset, size = central_square_bounds(image_size, region_size, overlap)
    inside = tf.logical_and(tf.range(image_size) >= offset, tf.range(image_size) < offset + size)
    square = tf.cast(tf.logical_and(inside[:, tf.newaxis], inside[tf.newaxis, :]), tf.float32)
    return tf.tile(square[tf.newaxis, :, :, tf.newaxis], [batch_size, 1, 1, 1])


def random_block_hole(batch_size, image_size: int, block_size: int, num_blocks: int, seed) -> tf.Tensor:
    """`num_blocks` squares of `block_size` per image at independent uniform positions (may overlap).

    The paper's "random block" masks: several smaller, possibly overlapping blocks covering up to 1/4 of the
    image (4 blocks of S/4 at most cover exactly 1/4).

    Returns:
        float32 [B, S, S, 1]; 1 on the union of the blocks.
    """
    corners = tf.random.stateless_uniform(
        [batch_size, num_blocks, 2], seed=seed, minval=0, maxval=image_size - block_size + 1, dtype=tf.int32
    )
    positions = tf.range(image_size)
    # [B, K, S]: is row/column s inside block k's span?
    rows = (positions >= corners[..., :1]) & (positions < corners[..., :1] + block_size)
    cols = (positions >= corners[..., 1:]) & (positions < corners[..., 1:] + block_size)
    blocks = tf.logical_and(rows[:, :, :, tf.newaxis], cols[:, :, tf.newaxis, :])  # [B, K, S, S]
    return tf.cast(tf.reduce_any(blocks, axis=1), tf.float32)[..., tf.newaxis]


def random_region_hole(
    batch_size, image_size: int, noise_size: int, min_coverage: float, max_coverage: float, seed
) -> tf.Tensor:
    """Blob-shaped holes: low-resolution uniform noise, upsampled bicubically, thresholded per image.

    The context-encoder code (`train_random.lua`) thresholds one big upsampled noise pattern at density
    0.25 and rejects crops whose hole covers less than 20% or more than 30%. Here each image draws its own
    coverage c in [min_coverage, max_coverage] and its threshold is the c-quantile of its own noise, which
    hits the coverage without rejection sampling (so it stays a fixed-cost batched op).

    Args:
        noise_size: side of the noise grid; smaller gives larger, smoother blobs (the code's res = 0.06
            gives ~7.7 noise cells across a 128-pixel crop, about 8 across a 32-pixel CIFAR image).

    Returns:
        float32 [B, S, S, 1]; 1 on round(c * S * S) pixels per image.
    """
    noise_seed, coverage_seed = split_seed(seed, 2)
    noise = tf.random.stateless_uniform([batch_size, noise_size, noise_size, 1], seed=noise_seed)
    field = tf.image.resize(noise, [image_size, image_size], method="bicubic")
    flat = tf.reshape(field, [batch_size, image_size * image_size])
    coverage = tf.random.stateless_uniform(
        [batch_size], seed=coverage_seed, minval=min_coverage, maxval=max_coverage
    )
    count = tf.cast(tf.round(coverage * float(image_size * image_size)), tf.int32)
    count = tf.clip_by_value(count, 1, image_size * image_size)
    # The count-th smallest value of each image's field is its threshold: the `count` lowest pixels form
    # the hole (ties have probability zero for continuous noise).
    ordered = tf.sort(flat, axis=1)
    threshold = tf.gather(ordered, count - 1, axis=1, batch_dims=1)
    hole = tf.cast(flat <= threshold[:, tf.newaxis], tf.float32)
    return tf.reshape(hole, [batch_size, image_size, image_size, 1])


def overlap_weights(hole: tf.Tensor, overlap: int, overlap_weight: float) -> tf.Tensor:
    """Per-pixel reconstruction weights: 1 in the hole, `overlap_weight` on the ring, 0 elsewhere.

    Args:
        hole: float32 [B, S, S, 1], 1 on dropped pixels.
        overlap: ring width in pixels (the code's `overlapPred`); 0 gives no ring.
        overlap_weight: the ring's weight relative to the hole (the code's `overlapL2Weight` = 10).
    Returns:
        float32 [B, S, S, 1].
    """
    return hole + overlap_weight * ring_mask(hole, overlap)


def ring_mask(hole: tf.Tensor, overlap: int) -> tf.Tensor:
    """The visible pixels within `overlap` (Chebyshev) of the hole: float32 [B, S, S, 1], 1 on the ring."""
    if overlap <= 0:
        return tf.zeros_like(hole)
    window = 2 * overlap + 1
    # A max-pool is a binary dilation: every pixel within `overlap` (Chebyshev) of the hole.
    return tf.nn.max_pool2d(hole, ksize=window, strides=1, padding="SAME") - hole


def ring_share_weight(hole_pixels, ring_pixels, ring_share: float):
    """The ring weight (hole weight 1) giving the ring `ring_share` of the total weight:
    w * ring / (hole + w * ring) = share  <=>  w = share / (1 - share) * hole / ring; 0 when there is no ring.

    Args:
        hole_pixels, ring_pixels: counts (numbers or float tensors of the same shape).
        ring_share: in [0, 1); 0 weights the hole only.
    """
    if not 0.0 <= ring_share < 1.0:
        raise ConfigError(f"method.options.ring_share {ring_share}: must be in [0, 1) (the code's 128-px "
                          "geometry: 0.75; 0 = hole only)")
    ratio = ring_share / (1.0 - ring_share)
    return tf.math.divide_no_nan(ratio * tf.cast(hole_pixels, tf.float32), tf.cast(ring_pixels, tf.float32))


def ring_share_weights(hole: tf.Tensor, overlap: int, ring_share: float) -> tf.Tensor:
    """Per-pixel weights like `overlap_weights`, but each image's ring weight is set from its own hole and
    ring pixel counts so that the ring carries exactly `ring_share` of that image's total weight.

    Args:
        hole: float32 [B, S, S, 1], 1 on dropped pixels.
        overlap: ring width in pixels.
        ring_share: fraction of the weight on the ring, in [0, 1) (0.75 reproduces the code's 128-px
            central geometry to within 0.4 points; 0 = hole only).
    Returns:
        float32 [B, S, S, 1]: 1 in the hole, the image's ring weight on its ring, 0 elsewhere.
    """
    ring = ring_mask(hole, overlap)
    weight = ring_share_weight(tf.reduce_sum(hole, axis=[1, 2, 3]), tf.reduce_sum(ring, axis=[1, 2, 3]),
                               ring_share)
    return hole + weight[:, tf.newaxis, tf.newaxis, tf.newaxis] * ring


def ring_weight_share(hole: tf.Tensor, weights: tf.Tensor) -> tf.Tensor:
    """Per image, the fraction of the total weight on visible pixels (the ring): float32 [B].

    Args:
        hole: float32 [B, S, S, 1]; weights: float32 [B, S, S, 1] on the same pixels.
    """
    total = tf.reduce_sum(weights, axis=[1, 2, 3])
    return tf.math.divide_no_nan(tf.reduce_sum(weights * (1.0 - hole), axis=[1, 2, 3]), total)


def make_hole(kind: str, batch_size, image_size: int, options: dict, seed) -> tf.Tensor:
    """The hole of mask `kind` for a batch; `options` holds the keys `check_mask_options` validates."""
    if kind == "central":
        return central_hole(batch_size, image_size, options["region_size"], options["overlap"])
    if kind == "random_block":
        return random_block_hole(batch_size, image_size, options["block_size"], options["num_blocks"], seed)
    if kind == "random_region":
        low, high = options["coverage"]
        return random_region_hole(batch_size, image_size, options["noise_size"], low, high, seed)
    raise ConfigError(f"method.options.mask '{kind}': use one of {', '.join(MASK_KINDS)}")


def check_mask_options(kind: str, image_size: int, options: dict) -> None:
    """Raises ConfigError naming the bad mask setting and a value that works for `image_size`."""
    if kind not in MASK_KINDS:
        raise ConfigError(f"method.options.mask '{kind}': use one of {', '.join(MASK_KINDS)}")
    overlap = options["overlap"]
    if overlap < 0:
        raise ConfigError(f"method.options.overlap {overlap}: must be >= 0 (the card: 2 at 32x32)")
    if options["overlap_weight"] < 0:
        raise ConfigError(f"method.options.overlap_weight {options['overlap_weight']}: must be >= 0 (paper: 10)")
    share = options.get("ring_share")
    if share is not None and not 0.0 <= share < 1.0:
        raise ConfigError(f"method.options.ring_share {share}: must be in [0, 1) or null (the code's 128-px "
                          "geometry: 0.75; 0 = hole only; null = overlap_weight)")
    if kind == "central":
        region = options["region_size"]
        if not 0 < region <= image_size:
            raise ConfigError(
                f"method.options.region_size {region}: must be in (0, {image_size}] for {image_size}x{image_size} "
                f"images (paper: half the side, {image_size // 2})"
            )
        if region - 2 * overlap < 1:
            raise ConfigError(
                f"method.options.overlap {overlap} leaves no hole in a {region}x{region} region "
                f"(hole = region_size - 2 * overlap); use overlap <= {(region - 1) // 2}"
            )
    elif kind == "random_block":
        size, count = options["block_size"], options["num_blocks"]
        if not 0 < size <= image_size:
            raise ConfigError(f"method.options.block_size {size}: must be in (0, {image_size}]")
        if count < 1:
            raise ConfigError(f"method.options.num_blocks {count}: must be >= 1")
    else:
        coverage = options["coverage"]
        if len(coverage) != 2 or not 0.0 < coverage[0] <= coverage[1] < 1.0:
            raise ConfigError(
                f"method.options.coverage {coverage}: need [low, high] with 0 < low <= high < 1 "
                "(the code keeps masks covering 20-30%: [0.2, 0.3])"
            )
        if not 2 <= options["noise_size"] <= image_size:
            raise ConfigError(f"method.options.noise_size {options['noise_size']}: must be in [2, {image_size}]")
