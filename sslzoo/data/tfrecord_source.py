"""The `tfrecord` source: shards written by `python -m sslzoo.prepare`, local or on an object store.

Loading reads every record once in manifest order: its header is checked (no decompression bombs) and it
is decoded once, so bad records are found, named and counted up front, as for a folder. The split is the
folder sources' split over the records' positions in manifest order. The validation split is held in
memory; the training split too when `data.cache` allows, else every epoch streams the shards in an order
fixed by (seed, epoch) (`sslzoo.data.tfrecord.epoch_dataset`: shards permuted, then a seeded shuffle
buffer), keeping the records of the training split, so a resumed run sees exactly the epochs it missed.
"""

from __future__ import annotations

import collections
from typing import Dict, List, Optional

import numpy as np
import tensorflow as tf

from sslzoo.data.decode import decode_image
from sslzoo.data.headers import BadImageError, check_pixels, image_header
from sslzoo.data.pipeline import Augment, augment_batches, num_batches, without_autotune
from sslzoo.data.splits import (
    DataSplits, ImageSet, check_bad_fraction, check_split_sizes, hold_in_memory, make_stats, split_indices,
)
from sslzoo.data.tfrecord import derived_seed, epoch_dataset, epoch_shards, read_manifest, shard_dataset

# Records held in the shuffle buffer of a streamed epoch (bytes, not pixels: ~100 MB for 10 kB JPEGs).
SHUFFLE_RECORDS = 10_000


def load_tfrecord(cfg) -> DataSplits:
    """Reads, checks and splits the shards in `cfg.path` (see the module docstring)."""
    manifest = read_manifest(cfg.path)
    labels: List[int] = []
    paths: List[str] = []
    bad: Dict[int, str] = {}
    shard_names = [shard["name"] for shard in manifest["shards"]]
    shard_of: List[str] = []
    records = shard_dataset(cfg.path, with_path=True, with_shard=True)
    for position, (data, label, path, shard) in enumerate(records.as_numpy_iterator()):
        paths.append(path.decode("utf-8", "surrogateescape"))
        shard_of.append(shard_names[shard])
        labels.append(int(label))
        try:
            check_pixels(data, cfg.max_pixels, name=paths[-1]) if cfg.max_pixels else image_header(data, name=paths[-1])
        except BadImageError as error:
            bad[position] = error.reason
    labels_array = np.asarray(labels, np.int32)
    train_idx, val_idx = split_indices(labels_array, cfg)
    is_val = np.zeros(len(paths), bool)
    is_val[val_idx] = True
    in_split = np.zeros(len(paths), bool)
    in_split[np.concatenate([train_idx, val_idx])] = True
    in_memory = hold_in_memory(cfg, len(train_idx))

    # One decode pass over the records: which decode, and the pixels of those held in memory.
    wanted = in_split & ~np.isin(np.arange(len(paths)), list(bad))
    keep = wanted & (is_val | in_memory)
    decoded = np.zeros(len(paths), bool)
    pixels: Dict[int, np.ndarray] = {}
    records = shard_dataset(cfg.path).enumerate()
    records = records.filter(lambda i, record: tf.gather(tf.constant(wanted), i))
    records = records.map(lambda i, record: (i, decode_image(record[0], cfg.image_size)),
                          num_parallel_calls=tf.data.AUTOTUNE, deterministic=False).ignore_errors()
    for index, image in without_autotune(records).as_numpy_iterator():
        decoded[index] = True
        if keep[index]:
            pixels[int(index)] = image
    for position in np.flatnonzero(wanted & ~decoded):
        bad[int(position)] = "could not be decoded (truncated or corrupt image data)"
    used = np.flatnonzero(in_split)
    bad_paths = [paths[p] for p in sorted(bad) if in_split[p]]
    check_bad_fraction(bad_paths, len(used), cfg.max_bad_fraction, cfg.path)

    train_ok = np.array([p for p in train_idx if decoded[p]], np.int64)
    val_ok = np.array([p for p in val_idx if decoded[p]], np.int64)
    check_split_sizes(len(train_ok), len(val_ok), cfg)
    size = cfg.image_size

    def stack(positions):
        return np.stack([pixels[int(p)] for p in positions]) if len(positions) else \
            np.zeros([0, size, size, 3], np.uint8)

    reader = None if in_memory else RecordReader(str(cfg.path), {paths[p]: shard_of[p] for p in train_ok})
    train = ImageSet(stack(train_ok) if in_memory else None, labels_array[train_ok],
                     [paths[p] for p in train_ok], size, reader=reader)
    stats = make_stats("tfrecord", len(used), bad_paths)
    stats["bad_reasons"] = [f"{paths[p]}: {bad[p]}" for p in sorted(bad) if in_split[p]][:10]
    return DataSplits(train, ImageSet(stack(val_ok), labels_array[val_ok], [paths[p] for p in val_ok], size),
                      class_names=list(manifest.get("class_names") or []), stats=stats)


def _kept(image_set: ImageSet) -> tf.lookup.StaticHashTable:
    """path -> 1 for the split's records, 0 for every other record in the shards."""
    keys = tf.constant(list(image_set.paths) or [""], tf.string)
    values = tf.ones([len(image_set.paths) or 1], tf.int32) * (1 if image_set.paths else 0)
    return tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(keys, values), default_value=0)


def _split_records(image_set: ImageSet, dataset: tf.data.Dataset) -> tf.data.Dataset:
    table = _kept(image_set)
    return dataset.filter(lambda data, label, path: tf.equal(table.lookup(path), 1))


def make_tfrecord_pipeline(image_set: ImageSet, *, batch_size: int, shuffle: bool = True, seed: int = 0,
                           first_epoch: int = 0, num_epochs: int = 1, augment: Augment = None,
                           drop_remainder: bool = True, steps_per_epoch: int = 0, shard_index: int = 0,
                           num_shards: int = 1) -> tf.data.Dataset:
    """Epochs of a streamed tfrecord split, each in the order fixed by (seed, epoch); the same elements
    and cardinality contract as `make_pipeline`.

    With `num_shards` > 1 this is worker `shard_index`'s input only (sharding by file): it reads the shards
    `epoch_shards` deals it each epoch, makes `steps_per_epoch` batches of `batch_size` (the per-worker
    batch; `RecordReader.worker_steps` gives a count every worker can make) and seeds its augmentation
    apart from the other workers'.
    """
    if num_shards > 1 and not (shuffle and steps_per_epoch > 0 and drop_remainder):
        raise ValueError("a worker's share of the shards needs shuffle, drop_remainder and steps_per_epoch "
                         "(RecordReader.worker_steps), so every worker makes the same number of batches")
    per_epoch = num_batches(len(image_set), batch_size, drop_remainder) if num_shards == 1 else steps_per_epoch
    if per_epoch == 0:
        raise ValueError(f"{len(image_set)} examples make no full batch of {batch_size}")
    taken = min(steps_per_epoch, per_epoch) if steps_per_epoch > 0 else per_epoch
    size = image_set.image_size

    def one_epoch(epoch: int) -> tf.data.Dataset:
        if shuffle:
            records = epoch_dataset(image_set.reader.directory, seed, epoch, buffer=SHUFFLE_RECORDS,
                                    with_path=True, shard_index=shard_index, num_shards=num_shards)
        else:
            records = shard_dataset(image_set.reader.directory, with_path=True)
        records = _split_records(image_set, records)
        images = records.map(lambda data, label, path: (decode_image(data, size), label),
                             num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        batches = images.batch(batch_size, drop_remainder=drop_remainder).take(taken).enumerate()
        return batches.map(lambda b, batch: (tf.constant(epoch, tf.int64), b, batch))

    # Built epoch by epoch in Python: the shard order of an epoch is a Python-side function of (seed, epoch).
    epochs = [one_epoch(e) for e in range(first_epoch, first_epoch + num_epochs)]
    dataset = epochs[0]
    for more in epochs[1:]:
        dataset = dataset.concatenate(more)
    augment_seed = seed if num_shards == 1 else derived_seed(seed, 0, "augment", f"worker {shard_index}")
    return augment_batches(dataset, seed=augment_seed, per_epoch=per_epoch, augment=augment,
                           cardinality=num_epochs * taken)


def record_batches(image_set: ImageSet, batch_size: int):
    """uint8 batches of a streamed tfrecord split in manifest order (features, pictures)."""
    records = _split_records(image_set, shard_dataset(image_set.reader.directory, with_path=True))
    images = records.map(lambda data, label, path: decode_image(data, image_set.image_size),
                         num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    yield from without_autotune(images.batch(batch_size).prefetch(tf.data.AUTOTUNE)).as_numpy_iterator()


def take_records(image_set: ImageSet, indices: np.ndarray) -> np.ndarray:
    """uint8 [len(indices), S, S, 3] of a streamed tfrecord split's examples at `indices` (one pass over
    the shards, decoding only those)."""
    wanted = [image_set.paths[i] for i in indices]
    subset = ImageSet(None, np.zeros(len(set(wanted)), np.int32), sorted(set(wanted)), image_set.image_size,
                      reader=image_set.reader)
    found: Dict[str, np.ndarray] = {}
    records = _split_records(subset, shard_dataset(image_set.reader.directory, with_path=True))
    records = records.map(lambda data, label, path: (path, decode_image(data, image_set.image_size)),
                          num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    for path, image in without_autotune(records).as_numpy_iterator():
        found[path.decode("utf-8", "surrogateescape")] = image
    size = image_set.image_size
    if not wanted:
        return np.zeros([0, size, size, 3], np.uint8)
    return np.stack([found[p] for p in wanted])


class RecordReader:
    """How a split streamed from prepared shards is read (`ImageSet.reader`).

    Args:
        directory: the folder `python -m sslzoo.prepare` wrote (local, or a tf.io.gfile URL).
        shard_of: each record's shard name, by path (at least for the split's paths): what sharding by
            file needs to count a worker's records.
    """

    def __init__(self, directory: str, shard_of: Optional[Dict[str, str]] = None):
        self.directory = directory
        self.shard_of = dict(shard_of or {})

    def take(self, image_set: ImageSet, indices: np.ndarray) -> np.ndarray:
        return take_records(image_set, indices)

    def batches(self, image_set: ImageSet, batch_size: int):
        yield from record_batches(image_set, batch_size)

    def pipeline(self, image_set: ImageSet, **kwargs) -> tf.data.Dataset:
        return make_tfrecord_pipeline(image_set, **kwargs)

    def worker_steps(self, image_set: ImageSet, batch_size: int, seed: int, epochs: int, num_workers: int) -> int:
        """Batches of `batch_size` that every one of `num_workers` workers can make in every epoch from
        the shards dealt to it (they differ in size, and a collective step needs every worker)."""
        manifest = read_manifest(self.directory)
        counts = collections.Counter(self.shard_of[path] for path in image_set.paths)
        return min(
            sum(counts[name] for name in epoch_shards(manifest, seed, epoch, worker, num_workers, self.directory))
            // batch_size
            for epoch in range(epochs) for worker in range(num_workers)
        )

    def worker_pipeline(self, image_set: ImageSet, *, shard_index: int, num_shards: int,
                        **kwargs) -> tf.data.Dataset:
        """Worker `shard_index`'s own batches, read only from its shards (see `make_tfrecord_pipeline`)."""
        return make_tfrecord_pipeline(image_set, shard_index=shard_index, num_shards=num_shards, **kwargs)
