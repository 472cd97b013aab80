"""The `tfds` source: any prepared TFDS image classification dataset, read into memory as uint8 RGB.

We never download: offline, `tfds.load` retries for minutes before failing, so an unprepared dataset is
reported at once with the command that prepares it.
"""

from __future__ import annotations

import logging
from typing import List, Tuple

import numpy as np
import tensorflow as tf

from sslzoo.data.decode import resize_uint8, to_rgb, to_uint8
from sslzoo.data.pipeline import without_autotune
from sslzoo.data.splits import DataSplits, make_stats, split_arrays
from sslzoo.errors import DataError, DatasetNotPreparedError

logger = logging.getLogger(__name__)


def _builder(name: str, data_dir: str | None):
    import tensorflow_datasets as tfds

    try:
        return tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError as error:
        # TFDS' own message lists every dataset it knows; the first line is the useful part.
        raise DataError(f"TFDS has no dataset named '{name}' (data.name); check the spelling, e.g. 'cifar10', "
                        f"'mnist', 'imagenette/160px' (`tfds.list_builders()` lists them), or use "
                        f"--set data.source=folder data.path=<images root>") from error


def not_prepared_message(
    name: str,
    data_dir: str,
    kind: str = "dataset",
    instead: str = "--set data.source=folder data.path=<images root> / data.source=synthetic",
) -> str:
    """The offline error for a TFDS dataset missing from DATA_DIR: how to prepare it, and what to use
    instead (`instead`, the config overrides of the local alternatives)."""
    prepare = (f"python -c \"import tensorflow_datasets as tfds; "
               f"tfds.builder('{name}', data_dir='{data_dir}').download_and_prepare()\"")
    return (f"{kind} '{name}' is not prepared in DATA_DIR ({data_dir}); prepare it on a machine with network "
            f"access (`{prepare}`) and copy {data_dir} here, or use {instead}")


def _image_and_label_keys(features) -> Tuple[str, str]:
    """Names of the image feature and of the class-label feature ('label' preferred)."""
    import tensorflow_datasets as tfds

    images = [k for k, f in features.items() if isinstance(f, tfds.features.Image)]
    labels = [k for k, f in features.items() if isinstance(f, tfds.features.ClassLabel)]
    if not images or not labels:
        raise DataError(f"TFDS dataset features {list(features.keys())} are not an image classification "
                        f"dataset: need an Image feature and a ClassLabel feature")
    return images[0], ("label" if "label" in labels else labels[0])


def load_tfds(cfg) -> DataSplits:
    """Reads split cfg.split of TFDS dataset cfg.name from cfg.data_dir into memory, then splits it.

    Args:
        cfg: DataConfig with source="tfds".
    Raises:
        DatasetNotPreparedError: the dataset is not prepared in the data dir (checked before any read).
    """
    builder = _builder(cfg.name, cfg.data_dir or None)
    if not builder.is_prepared():
        raise DatasetNotPreparedError(not_prepared_message(cfg.name, str(builder.data_dir_root)))
    features = builder.info.features
    image_key, label_key = _image_and_label_keys(features)
    class_names: List[str] = list(features[label_key].names)

    def _example(example):
        image = resize_uint8(to_rgb(to_uint8(example[image_key])), cfg.image_size)
        return image, tf.cast(example[label_key], tf.int32)

    try:
        dataset = builder.as_dataset(split=cfg.split, shuffle_files=False)
    except (ValueError, KeyError) as error:  # an unknown split name
        raise DataError(f"TFDS dataset '{cfg.name}' has no split '{cfg.split}' (data.split); it has "
                        f"{', '.join(builder.info.splits.keys())}") from error
    dataset = without_autotune(
        dataset.map(_example, num_parallel_calls=tf.data.AUTOTUNE).batch(1024).prefetch(tf.data.AUTOTUNE))
    image_batches, label_batches = [], []
    for images, labels in dataset.as_numpy_iterator():
        image_batches.append(images)
        label_batches.append(labels)
    if not label_batches:
        raise DataError(f"TFDS dataset '{cfg.name}' split '{cfg.split}' is empty")
    images, labels = np.concatenate(image_batches), np.concatenate(label_batches)
    logger.info("read %d examples of tfds '%s' split '%s'", len(labels), cfg.name, cfg.split)
    return split_arrays(images, labels, class_names, cfg, make_stats("tfds", len(labels)))
