"""Streaming input: images read and decoded inside tf.data, per epoch, never held in memory as a whole.

`make_file_pipeline` yields exactly the batches `make_pipeline` yields for the same decoded images: the
epoch order is the same stateless permutation of (seed, epoch), each index is read and decoded in that
order (parallel, deterministic), batched, and each batch's augmentation seed is the same function of
(seed, epoch, batch index). So a streamed run resumes exactly, and switching `data.cache` between
`memory` and `none` changes memory use, not results.

The files given here are the ones the scan (`sslzoo.data.decode.scan_files`) decoded without error: a file that fails in
the middle of an epoch would shift every later batch and break exact resume, so bad files are found
and counted once, up front, and never reach the pipeline.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import tensorflow as tf

from sslzoo.data.decode import encode_paths, read_and_decode
from sslzoo.data.pipeline import (
    Augment, augment_batches, epoch_order, make_pipeline, num_batches, without_autotune,
)


def make_file_pipeline(paths: Sequence[str], labels: np.ndarray, *, image_size: int, batch_size: int,
                       shuffle: bool = True, seed: int = 0, first_epoch: int = 0, num_epochs: int = 1,
                       augment: Optional[Augment] = None, drop_remainder: bool = True,
                       steps_per_epoch: int = 0) -> tf.data.Dataset:
    """Batches for epochs `first_epoch .. first_epoch + num_epochs - 1`, decoded from `paths` as they go.

    Args: as `sslzoo.data.pipeline.make_pipeline`, with `paths` (N files that decode) and `image_size`
    in place of the in-memory images.
    Returns:
        The same elements as `make_pipeline` over the decoded images, with the same known cardinality.
    """
    labels = np.asarray(labels)
    n = len(paths)
    if len(labels) != n:
        raise ValueError(f"{n} paths but {len(labels)} labels")
    per_epoch = num_batches(n, batch_size, drop_remainder)
    if per_epoch == 0:
        raise ValueError(f"{n} examples make no full batch of {batch_size}; lower the batch size "
                         f"or pass drop_remainder=False")
    taken = min(steps_per_epoch, per_epoch) if steps_per_epoch > 0 else per_epoch
    paths_t = encode_paths(paths)
    labels_t = tf.constant(labels.astype(np.int32))

    def _decode(index):
        return read_and_decode(tf.gather(paths_t, index), image_size), tf.gather(labels_t, index)

    def _epoch_batches(epoch):
        order = epoch_order(n, seed, epoch, shuffle)
        # Only the examples of the batches this epoch uses are read (steps_per_epoch may cut it short).
        order = order[: taken * batch_size] if drop_remainder else order
        examples = tf.data.Dataset.from_tensor_slices(order)
        examples = examples.map(_decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        batches = examples.batch(batch_size, drop_remainder=drop_remainder).take(taken)
        return batches.enumerate().map(lambda b, batch: (epoch, b, batch))

    epochs = tf.data.Dataset.range(first_epoch, first_epoch + num_epochs)
    return augment_batches(epochs.flat_map(_epoch_batches), seed=seed, per_epoch=per_epoch, augment=augment,
                           cardinality=num_epochs * taken)


def decoded_batches(paths: Sequence[str], image_size: int, batch_size: int = 256):
    """uint8 [<=B, S, S, 3] batches of `paths` in order (features of a streamed split, a few pictures)."""
    if not len(paths):
        return
    dataset = tf.data.Dataset.from_tensor_slices(encode_paths(paths))
    dataset = dataset.map(lambda p: read_and_decode(p, image_size), num_parallel_calls=tf.data.AUTOTUNE,
                          deterministic=True)
    yield from without_autotune(dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)).as_numpy_iterator()


def decode_some(paths: Sequence[str], image_size: int) -> np.ndarray:
    """uint8 [len(paths), S, S, 3]: the few images a report or a picture needs, decoded now."""
    blocks = list(decoded_batches(paths, image_size))
    if not blocks:
        return np.zeros([0, image_size, image_size, 3], np.uint8)
    return np.concatenate(blocks, axis=0)


class FileReader:
    """How a split streamed from its image files is read (`ImageSet.reader`)."""

    def take(self, image_set, indices: np.ndarray) -> np.ndarray:
        return decode_some([image_set.paths[i] for i in indices], image_set.image_size)

    def batches(self, image_set, batch_size: int):
        yield from decoded_batches(image_set.paths, image_set.image_size, batch_size)

    def pipeline(self, image_set, **kwargs) -> tf.data.Dataset:
        return make_file_pipeline(image_set.paths, image_set.labels, image_size=image_set.image_size, **kwargs)


def split_pipeline(image_set, **kwargs) -> tf.data.Dataset:
    """`make_pipeline` over an in-memory `ImageSet`; over a streamed one, its reader's pipeline."""
    if image_set.streamed:
        return image_set.reader.pipeline(image_set, **kwargs)
    return make_pipeline(image_set.images, image_set.labels, **kwargs)
