"""Batched augmentation ops on float32 images [B, H, W, C].

Each op takes a stateless `seed` (int32 [2]) instead of drawing from a global generator: the pipeline hands
every batch its own seed derived from (run seed, epoch, batch index), so rerunning an epoch after a resume
reproduces the same augmentations.
"""

from __future__ import annotations

import math
from typing import Sequence

import tensorflow as tf


def split_seed(seed: tf.Tensor, num: int) -> list[tf.Tensor]:
    """Derives `num` independent stateless seeds from one."""
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=num)
    return [seeds[i] for i in range(num)]


def random_crop_with_padding(images: tf.Tensor, padding: int, seed: tf.Tensor) -> tf.Tensor:
    """Zero-pads every image by `padding` and crops back to its size at a random offset per image.

    Args:
        images: float [B, H, W, C].
        padding: pixels added on each side (RotNet/CIFAR: 4).
        seed: int [2] stateless seed.
    Returns:
        float [B, H, W, C]; each image shifted by up to `padding` pixels, exposed borders zero.
    """
    if padding <= 0:
        return images
    height, width = tf.shape(images)[1], tf.shape(images)[2]
    padded = tf.pad(images, [[0, 0], [padding, padding], [padding, padding], [0, 0]])
    batch = tf.shape(images)[0]
    offsets = tf.random.stateless_uniform(
        [batch, 2], seed=seed, minval=0, maxval=2 * padding + 1, dtype=tf.int32
    )
    # Gathering rows then columns per image is exact (no interpolation) and stays a whole-batch op.
    rows = offsets[:, :1] + tf.range(height)[tf.newaxis, :]
    cols = offsets[:, 1:] + tf.range(width)[tf.newaxis, :]
    cropped = tf.gather(padded, rows, axis=1, batch_dims=1)
    return tf.gather(cropped, cols, axis=2, batch_dims=1)


def random_flip_left_right(images: tf.Tensor, seed: tf.Tensor, probability: float = 0.5) -> tf.Tensor:
    """Mirrors each image horizontally with `probability`, independently per image."""
    batch = tf.shape(images)[0]
    flip = tf.random.stateless_uniform([batch], seed=seed) < probability
    return tf.where(flip[:, tf.newaxis, tf.newaxis, tf.newaxis], tf.reverse(images, axis=[2]), images)


def rotate_batch(images: tf.Tensor, rotations: Sequence[int], step: int = 90) -> tuple[tf.Tensor, tf.Tensor]:
    """Every image in every rotation: RotNet's batch layout.

    Args:
        images: [B, H, W, C] with H == W.
        rotations: counter-clockwise rotations in units of `step` degrees, e.g. (0, 1, 2, 3).
        step: degrees of one unit: 90 (quarter turns) or 45 (the paper's eight rotations).
    Returns:
        (rotated [R*B, H, W, C], pretext_labels int32 [R*B]): block r holds all B images turned by
        rotations[r] * step degrees, labelled r. Multiples of 90 degrees are exact transposes/flips, so no
        interpolation border betrays the rotation (RotNet paper, section 2); the others are resampled
        (`rotate_resampled`).
    """
    rotated = [rotate(images, r * step) for r in rotations]
    batch = tf.shape(images)[0]
    labels = tf.repeat(tf.range(len(rotations), dtype=tf.int32), batch)
    return tf.concat(rotated, axis=0), labels


def rotate(images: tf.Tensor, degrees: int) -> tf.Tensor:
    """Counter-clockwise rotation of square images [B, H, W, C] by `degrees`: the whole quarter turns with
    rot90 (exact), only the rest resampled."""
    quarter_turns, rest = divmod(int(degrees), 90)
    images = tf.image.rot90(images, k=quarter_turns % 4)
    return rotate_resampled(images, rest) if rest else images


def rotate_resampled(images: tf.Tensor, degrees: float) -> tf.Tensor:
    """Counter-clockwise rotation about the image centre by bilinear resampling, in the graph (a projective
    transform). The corners the rotated square leaves empty are filled by reflection rather than a
    constant, so they are not a flat mark of the angle (the seams still are).

    Args:
        images: float [B, H, W, C].
        degrees: any angle; multiples of 90 are better done by `rotate`, exactly.
    Returns:
        float [B, H, W, C].
    """
    angle = math.radians(degrees)
    cos, sin = math.cos(angle), math.sin(angle)
    height = tf.cast(tf.shape(images)[1], tf.float32) - 1.0
    width = tf.cast(tf.shape(images)[2], tf.float32) - 1.0
    # The transform maps each output pixel (x, y) to the input point it samples: the inverse rotation
    # about the centre ((W - 1) / 2, (H - 1) / 2); with y pointing down this turns the content
    # counter-clockwise on screen, as rot90 does.
    x_offset = (width - (cos * width - sin * height)) / 2.0
    y_offset = (height - (sin * width + cos * height)) / 2.0
    transform = tf.stack([cos, -sin, x_offset, sin, cos, y_offset, 0.0, 0.0])[tf.newaxis]
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images, transforms=transform, output_shape=tf.shape(images)[1:3], fill_value=0.0,
        interpolation="BILINEAR", fill_mode="REFLECT",
    )


def solarize(images: tf.Tensor, apply: tf.Tensor, threshold: float = 0.5) -> tf.Tensor:
    """Inverts every pixel value at or above `threshold` (x -> 1 - x) in the images where `apply` is True.

    The convention of PIL's `ImageOps.solarize` and torchvision's `solarize` (invert where
    x >= threshold; PIL's default 128 on uint8) and of BYOL's own `solarize` on floats
    (`where(x < threshold, x, 1 - x)`): for x = i / 255 and threshold 128 / 255 this is exactly PIL's
    uint8 result divided by 255.
    Args:
        images: float [B, H, W, C] in [0, 1].
        apply: bool [B]; the caller draws it (BYOL: probability 0 for the first view, 0.2 for the second).
        threshold: in [0, 1].
    Returns:
        float [B, H, W, C], the images where `apply` is False unchanged.
    Reference: Grill et al., "Bootstrap Your Own Latent", NeurIPS 2020 (the image-augmentation
    appendix: solarization probabilities 0 and 0.2 for the two views).
    """
    inverted = tf.where(images >= tf.cast(threshold, images.dtype), 1.0 - images, images)
    return tf.where(tf.reshape(apply, [-1, 1, 1, 1]), inverted, images)
