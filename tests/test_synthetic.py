"""Tests for the `synthetic` source: deterministic, balanced, varied, and orientation-bearing shapes."""

import numpy as np
import pytest

from sslzoo.config import DataConfig
from sslzoo.data import load_splits
from sslzoo.data.synthetic import CLASS_NAMES, SHAPES, make_shapes

ORIENTATION_FREE = {"disc", "ring"}


def test_generation_is_deterministic_for_a_seed_and_differs_across_seeds():
    images, labels = make_shapes(300, image_size=32, seed=4)
    again_images, again_labels = make_shapes(300, image_size=32, seed=4)
    assert np.array_equal(images, again_images) and np.array_equal(labels, again_labels)
    other_images, _ = make_shapes(300, image_size=32, seed=5)
    assert not np.array_equal(images, other_images)


def test_classes_are_balanced_and_named():
    images, labels = make_shapes(500, image_size=32, seed=0)
    assert images.dtype == np.uint8 and images.shape == (500, 32, 32, 3)
    assert labels.dtype == np.int32 and np.bincount(labels).tolist() == [50] * 10
    assert len(set(CLASS_NAMES)) == 10 and all(name.replace(" ", "").isalpha() for name in CLASS_NAMES)


def test_images_differ_and_are_not_flat():
    images, labels = make_shapes(200, image_size=32, seed=1)
    flat = images.reshape(len(images), -1)
    assert len(np.unique(flat, axis=0)) == len(images)
    assert (images.reshape(len(images), -1, 3).std(axis=1).max(axis=1) > 10).all()  # a shape on a background
    # Same class, different appearance: colour varies between images of a class.
    first_class = images[labels == 0]
    assert first_class.reshape(len(first_class), -1).mean(axis=1).std() > 5


@pytest.mark.parametrize("name", [n for n in SHAPES if n not in ORIENTATION_FREE])
def test_oriented_shapes_change_under_every_rotation(name):
    """Rotation prediction needs an upright pose that 90/180/270 degree turns visibly change."""
    line = np.linspace(-1, 1, 64)
    v, u = -line[:, None], line[None, :]  # rows go down, v goes up
    mask = SHAPES[name](np.broadcast_to(u, (64, 64)), np.broadcast_to(v, (64, 64)))
    assert 0.15 < mask.mean() < 0.85
    for k in (1, 2, 3):
        assert (mask != np.rot90(mask, k)).mean() > 0.08, (name, k)


def test_load_splits_synthetic_is_stratified_and_disjoint():
    config = DataConfig(source="synthetic", synthetic_examples=400, image_size=24, val_fraction=0.2, split_seed=3)
    splits = load_splits(config)
    assert splits.class_names == CLASS_NAMES
    assert splits.train.images.shape == (320, 24, 24, 3) and splits.val.images.shape == (80, 24, 24, 3)
    assert np.bincount(splits.val.labels).tolist() == [8] * 10
    train_rows = {image.tobytes() for image in splits.train.images}
    assert not any(image.tobytes() in train_rows for image in splits.val.images)
    assert splits.stats == {"source": "synthetic", "files": 400, "bad_images": 0, "bad_fraction": 0.0,
                            "bad_examples": []}
    again = load_splits(config)
    assert np.array_equal(again.val.images, splits.val.images)
