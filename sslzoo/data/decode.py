"""Robust image decoding into RGB uint8 tensors of one fixed size, by content, in parallel with tf.data.

Every decoder here ends in `[S, S, 3]` uint8: grayscale is replicated to three channels, alpha is dropped,
palette images are expanded, CMYK JPEGs are converted by the JPEG decoder, 16-bit PNGs are scaled (not
truncated) to 8 bits, GIFs keep their first frame. Images of another size are resized with antialiasing,
keeping the aspect ratio, and centre-cropped.
"""

from __future__ import annotations

import os
from typing import Callable, Sequence, Tuple

import numpy as np
import tensorflow as tf

from sslzoo.data.pipeline import without_autotune

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def to_rgb(image: tf.Tensor) -> tf.Tensor:
    """Grayscale -> 3 equal channels, RGBA / gray+alpha -> drop alpha. image: [H, W, C], C in 1..4."""
    channels = tf.shape(image)[-1]
    image = tf.cond(channels >= 3, lambda: image[..., :3], lambda: tf.tile(image[..., :1], [1, 1, 3]))
    return tf.ensure_shape(image, [None, None, 3])


def to_uint8(image: tf.Tensor) -> tf.Tensor:
    """Scales any integer or [0, 1] float image to uint8 by value range, rounding (16 bit: v * 255/65535)."""
    if image.dtype == tf.uint8:
        return image
    if image.dtype.is_integer:
        scale = 255.0 / image.dtype.max
        image = tf.cast(image, tf.float32) * scale
    else:
        image = tf.cast(image, tf.float32) * 255.0
    return tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)


def resize_uint8(image: tf.Tensor, size: int) -> tf.Tensor:
    """Resizes uint8 [H, W, 3] to [size, size, 3]: antialiased, aspect kept, centre crop; no-op at size.

    Keeping the aspect ratio (shorter side -> size, then centre crop) avoids stretching non-square photos;
    square images, the common case, are simply resized.
    """
    shape = tf.shape(image)
    height, width = shape[0], shape[1]

    def _resize():
        scale = tf.cast(size, tf.float32) / tf.cast(tf.minimum(height, width), tf.float32)
        new_h = tf.maximum(size, tf.cast(tf.round(tf.cast(height, tf.float32) * scale), tf.int32))
        new_w = tf.maximum(size, tf.cast(tf.round(tf.cast(width, tf.float32) * scale), tf.int32))
        resized = tf.image.resize(image, [new_h, new_w], method="bilinear", antialias=True)
        top, left = (new_h - size) // 2, (new_w - size) // 2
        resized = resized[top:top + size, left:left + size, :]
        return tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)

    same = tf.logical_and(tf.equal(height, size), tf.equal(width, size))
    image = tf.cond(same, lambda: image, _resize)
    return tf.ensure_shape(image, [size, size, 3])


def decode_image(contents: tf.Tensor, image_size: int) -> tf.Tensor:
    """Encoded bytes (JPEG, PNG, BMP, GIF, WebP; format sniffed from the bytes) -> uint8 [S, S, 3].

    Raises `tf.errors.InvalidArgumentError` (inside tf.data: an element error) on undecodable bytes.
    """
    is_png = tf.equal(tf.strings.substr(contents, 0, len(_PNG_SIGNATURE)), _PNG_SIGNATURE)

    def _png():
        # Decoding every PNG as 16 bit is exact for 8-bit files (v * 257) and lets 16-bit files be
        # scaled by 255/65535 instead of truncated to their high byte.
        return to_uint8(tf.io.decode_png(contents, channels=3, dtype=tf.uint16))

    def _other():
        return tf.io.decode_image(contents, channels=3, expand_animations=False, dtype=tf.uint8)

    image = tf.cond(is_png, _png, _other)
    return resize_uint8(tf.ensure_shape(image, [None, None, 3]), image_size)


def encode_paths(paths: Sequence[str]) -> tf.Tensor:
    """A string tensor of file paths; fsencode keeps non-UTF-8 names byte for byte."""
    return tf.constant([os.fsencode(p) for p in paths], dtype=tf.string)


def read_and_decode(path: tf.Tensor, image_size: int) -> tf.Tensor:
    """uint8 [S, S, 3] of one file (`tf.io.read_file` goes through TF's file systems: gs://, s3://)."""
    return decode_image(tf.io.read_file(path), image_size)


def scan_files(paths: Sequence[str], image_size: int, keep: Callable[[int], bool] = lambda i: True,
               batch_size: int = 512) -> Tuple[np.ndarray, np.ndarray]:
    """Decodes every file once, in parallel; returns (indices that decoded, their pixels where `keep`).

    Args:
        paths: N files (already past the header check).
        image_size: S.
        keep: which decoded indices to keep pixels of (all for an in-memory split; the validation part
            only for a streamed one), so a large streamed split is decoded without being held.
    Returns:
        ok: int64 [M] sorted indices of the files that decoded.
        images: uint8 [K, S, S, 3], the kept ones among `ok`, in `ok` order.
    """
    n = len(paths)
    if n == 0:
        return np.zeros([0], np.int64), np.zeros([0, image_size, image_size, 3], np.uint8)
    keep_mask = np.array([bool(keep(i)) for i in range(n)])
    slots = np.cumsum(keep_mask) - 1  # where a kept index lands in the kept array
    images = np.zeros([int(keep_mask.sum()), image_size, image_size, 3], np.uint8)
    decoded = np.zeros([n], bool)

    def _read(index, path):
        return index, read_and_decode(path, image_size)

    dataset = tf.data.Dataset.from_tensor_slices((np.arange(n, dtype=np.int64), encode_paths(paths)))
    # Order does not matter (each image carries its index); ignore_errors drops the files that fail.
    dataset = dataset.map(_read, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
    dataset = without_autotune(dataset.ignore_errors().batch(batch_size).prefetch(tf.data.AUTOTUNE))
    for index, batch in dataset.as_numpy_iterator():
        decoded[index] = True
        kept = keep_mask[index]
        if kept.any():
            images[slots[index[kept]]] = batch[kept]
    ok = np.flatnonzero(decoded)
    return ok, images[np.flatnonzero(decoded[keep_mask])] if len(images) else images


def decode_files(paths: Sequence[str], image_size: int, batch_size: int = 512
                 ) -> Tuple[np.ndarray, np.ndarray]:
    """Reads and decodes image files in parallel; undecodable or unreadable files are skipped.

    Args:
        paths: N file paths.
        image_size: S, the output side length.
    Returns:
        images: uint8 [M, S, S, 3] for the M files that decoded, in the order of `ok`.
        ok: int64 [M], sorted indices into `paths` of the files that decoded; the rest are bad.
    """
    ok, images = scan_files(paths, image_size, batch_size=batch_size)
    return images, ok
