"""The tf.data input pipeline over in-memory uint8 images: per-epoch stateless shuffle, batch, augment.

Every epoch's order is a stateless permutation of (seed, epoch), and every batch's augmentation seed is a
function of (seed, epoch, batch index), so starting at `first_epoch=k` reproduces exactly the batches of
epoch k of an uninterrupted run: that is what keeps resume after a crash deterministic.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np
import tensorflow as tf

Augment = Callable[[tf.Tensor, tf.Tensor, tf.Tensor], Any]


def epoch_order(num_examples: int, seed: int, epoch, shuffle: bool = True) -> tf.Tensor:
    """int32 [N]: the example order of `epoch` (the identity when not shuffling)."""
    if not shuffle:
        return tf.range(num_examples, dtype=tf.int32)
    epoch = tf.cast(epoch, tf.int32)
    keys = tf.random.stateless_uniform([num_examples], seed=tf.stack([tf.constant(seed, tf.int32), epoch]))
    return tf.cast(tf.argsort(keys, stable=True), tf.int32)


def batch_seed(seed: int, epoch, batch_index, batches_per_epoch: int) -> tf.Tensor:
    """int32 [2] stateless seed, distinct for every (seed, epoch, batch index): [seed, global batch number]."""
    step = tf.cast(epoch, tf.int32) * batches_per_epoch + tf.cast(batch_index, tf.int32)
    return tf.stack([tf.constant(seed, tf.int32), step])


def without_autotune(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """`dataset` with tf.data's autotuning thread off (`AUTOTUNE` values take tf.data's static defaults).

    Destroying an iterator waits out that thread's current sleep, which grows as the iterator ages: on
    this project's 2-core machine RotNet fits of 30-40 s returned up to 31 s late, and an `sslzoo select`
    final training overran its deadline by 12 s; without the thread, never. Throughput stayed within
    noise (`scripts/pipeline_teardown.py`: 641 vs 628 images/s, means of 5 alternating pairs spread over
    588-670). Every pipeline the project iterates goes through here.
    """
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)


def num_batches(num_examples: int, batch_size: int, drop_remainder: bool = True) -> int:
    return num_examples // batch_size if drop_remainder else -(-num_examples // batch_size)


def make_pipeline(images: np.ndarray, labels: np.ndarray, *, batch_size: int, shuffle: bool = True,
                  seed: int = 0, first_epoch: int = 0, num_epochs: int = 1,
                  augment: Optional[Augment] = None, drop_remainder: bool = True,
                  steps_per_epoch: int = 0) -> tf.data.Dataset:
    """Batches for epochs `first_epoch .. first_epoch + num_epochs - 1`, one after the other.

    Args:
        images: uint8 [N, H, W, 3].
        labels: int [N].
        augment: optional `augment(images, labels, seed)`, called on each batch with images float32
            [B, H, W, 3] in [0, 1], labels int32 [B] and seed int32 [2]; its return value is yielded.
        steps_per_epoch: > 0 keeps only the first that many batches of each epoch, so a short epoch
            still sees a fresh order each time and Keras' epochs stay aligned with the pipeline's.
    Returns:
        A dataset of `{"images": float32 [B, H, W, 3] in [0, 1], "labels": int32 [B]}` (or what `augment`
        returns), with known cardinality num_epochs * batches per epoch.
    """
    images = np.asarray(images)
    labels = np.asarray(labels)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be uint8 [N, H, W, 3], got {images.dtype} {images.shape}")
    if len(labels) != len(images):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    n = len(images)
    per_epoch = num_batches(n, batch_size, drop_remainder)
    if per_epoch == 0:
        raise ValueError(f"{n} examples make no full batch of {batch_size}; lower the batch size "
                         f"or pass drop_remainder=False")
    taken = min(steps_per_epoch, per_epoch) if steps_per_epoch > 0 else per_epoch
    # The arrays become captured constants of the dataset's functions: gathered per batch, never copied
    # per example.
    images_t = tf.constant(images)
    labels_t = tf.constant(labels.astype(np.int32))

    def _epoch_batches(epoch):
        order = epoch_order(n, seed, epoch, shuffle)
        indices = tf.data.Dataset.from_tensor_slices(order).batch(batch_size, drop_remainder=drop_remainder)
        return indices.take(taken).enumerate().map(
            lambda b, idx: (epoch, b, (tf.gather(images_t, idx), tf.gather(labels_t, idx))))

    epochs = tf.data.Dataset.range(first_epoch, first_epoch + num_epochs)
    return augment_batches(epochs.flat_map(_epoch_batches), seed=seed, per_epoch=per_epoch, augment=augment,
                           cardinality=num_epochs * taken)


def augment_batches(dataset: tf.data.Dataset, *, seed: int, per_epoch: int, augment: Optional[Augment],
                    cardinality: int) -> tf.data.Dataset:
    """The tail every input pipeline shares (in memory, streamed files, shards).

    Args:
        dataset: elements (epoch, batch index, (uint8 images [B, H, W, 3], int32 labels [B])).
        seed, per_epoch: the run's seed and the full epoch's batch count (`batch_seed`'s arguments).
        augment: the method's `augment`, or None.
        cardinality: the number of batches, declared so Keras knows the epoch length.
    Returns:
        Batches scaled to [0, 1] and augmented with the (seed, epoch, batch) seed, in a deterministic
        order, prefetched.
    """

    def _augment(epoch, batch_index, batch):
        images, labels = batch
        images = tf.cast(images, tf.float32) * (1.0 / 255.0)
        if augment is None:
            return {"images": images, "labels": labels}
        return augment(images, labels, batch_seed(seed, epoch, batch_index, per_epoch))

    dataset = dataset.map(_augment, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(cardinality))
    options = tf.data.Options()
    options.deterministic = True
    return without_autotune(dataset.with_options(options).prefetch(tf.data.AUTOTUNE))
