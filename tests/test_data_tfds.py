"""Tests for the `tfds` source: the fast not-prepared error, and the real read path on a tiny built dataset."""

import time

import numpy as np
import pytest
import tensorflow_datasets as tfds

from sslzoo.config import DataConfig
from sslzoo.data import DataError, DatasetNotPreparedError, load_splits

TINY_CLASSES = ["dark", "mid", "light"]
TINY_EXAMPLES = 30


def tiny_grey(label):
    return 40 + 80 * label


class SslzooTinyGreys(tfds.core.GeneratorBasedBuilder):
    """30 grayscale images of 3 classes (a solid grey per class) in two sizes; nothing to download.

    Defined once at module level: TFDS registers a builder class by name when the class is defined.
    """

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        features = tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(None, None, 1)),
            "label": tfds.features.ClassLabel(names=TINY_CLASSES),
        })
        # Not `self.dataset_info_from_configs`: that reads metadata files from the builder's package, and a
        # pytest module is no package ("TypeError: 'test_data_tfds' is not a package").
        return tfds.core.DatasetInfo(builder=self, features=features, supervised_keys=("image", "label"))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        for i in range(TINY_EXAMPLES):
            label = i % 3
            shape = (12, 12, 1) if i % 2 else (10, 16, 1)  # both need resizing to 8x8; one is not square
            yield i, {"image": np.full(shape, tiny_grey(label), np.uint8), "label": label}


def tfds_config(tmp_path, name, **overrides):
    return DataConfig(source="tfds", name=name, split="train", data_dir=str(tmp_path), **overrides)


def test_unprepared_dataset_fails_fast_saying_how_to_prepare_it(tmp_path):
    start = time.perf_counter()
    with pytest.raises(DatasetNotPreparedError) as info:
        load_splits(tfds_config(tmp_path, "cifar10"))
    assert time.perf_counter() - start < 10
    message = str(info.value)
    assert str(tmp_path) in message and "'cifar10' is not prepared" in message
    assert "download_and_prepare()" in message and "data.source=folder" in message
    assert isinstance(info.value, DataError)


def test_unknown_dataset_name_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="no dataset named 'no_such_dataset_xyz'"):
        load_splits(tfds_config(tmp_path, "no_such_dataset_xyz"))


def test_prepared_tiny_dataset_is_read_as_rgb_uint8(tmp_path):
    SslzooTinyGreys(data_dir=str(tmp_path)).download_and_prepare()
    splits = load_splits(tfds_config(tmp_path, "sslzoo_tiny_greys", image_size=8))
    assert splits.class_names == TINY_CLASSES
    assert len(splits.train) == 27 and len(splits.val) == 3
    assert np.bincount(splits.val.labels).tolist() == [1, 1, 1]
    assert splits.stats["source"] == "tfds" and splits.stats["files"] == TINY_EXAMPLES
    for part in (splits.train, splits.val):
        assert part.images.dtype == np.uint8 and part.images.shape[1:] == (8, 8, 3)
        assert part.labels.dtype == np.int32
        # Grayscale replicated to RGB, and a solid grey survives resizing exactly.
        expected = np.array([tiny_grey(c) for c in range(3)], np.uint8)[part.labels]
        assert np.array_equal(part.images, np.broadcast_to(expected[:, None, None, None], part.images.shape))


def test_unknown_split_is_a_clear_error(tmp_path):
    SslzooTinyGreys(data_dir=str(tmp_path)).download_and_prepare()
    config = DataConfig(source="tfds", name="sslzoo_tiny_greys", split="validation", data_dir=str(tmp_path))
    with pytest.raises(DataError, match="no split 'validation'.*train"):
        load_splits(config)
