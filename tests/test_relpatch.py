import numpy as np
import pytest
import tensorflow as tf

from sslzoo.augment.patches import (
    NEIGHBOUR_CELLS,
    color_drop,
    normalize_patches,
    random_pixelation,
    sample_patch_pairs,
)
from sslzoo.backbones import build_encoder
from sslzoo.config import ConfigError
from sslzoo.data import load_splits
from sslzoo.methods import build_method
from sslzoo.training.trainer import build_models
from tests.harness import check_method_contract, first_batch, tiny_config

# Reading order of the 8 neighbours: (row, col) displacement of the neighbour relative to the centre.
DISPLACEMENT = {0: (-1, -1), 1: (-1, 0), 2: (-1, 1), 3: (0, -1), 4: (0, 1), 5: (1, -1), 6: (1, 0), 7: (1, 1)}
SMALL = {"patch_size": 8, "gap": 2, "jitter": 1, "head_width": 16, "head_depth": 1}


def _check_pairs(images, out, patch, gap, jitter):
    assert 4 * jitter < patch + gap  # else positions alone cannot tell the label apart
    images = np.asarray(images)
    labels = out["labels"].numpy()
    centre_yx, neighbour_yx = out["centre_yx"].numpy(), out["neighbour_yx"].numpy()
    size = images.shape[1]
    assert set(labels) <= set(range(8))
    for b, label in enumerate(labels):
        cy, cx = centre_yx[b]
        ny, nx = neighbour_yx[b]
        # Patches are exact crops at the returned positions, inside the image.
        for yx in (centre_yx[b], neighbour_yx[b]):
            assert 0 <= yx.min() and yx.max() + patch <= size
        np.testing.assert_array_equal(out["centre"][b], images[b, cy:cy + patch, cx:cx + patch])
        np.testing.assert_array_equal(out["neighbour"][b], images[b, ny:ny + patch, nx:nx + patch])
        # The label is the neighbour's position relative to the centre (reading order).
        dy, dx = ny - cy, nx - cx
        step = patch + gap
        # An undisplaced axis moves <= 2*jitter, a displaced one >= step - 2*jitter (> 2*jitter here).
        located = tuple(int(np.sign(d)) if abs(d) > 2 * jitter else 0 for d in (dy, dx))
        assert located == DISPLACEMENT[label], (label, dy, dx)
        for axis, d in zip((0, 1), (dy, dx)):
            expected = DISPLACEMENT[label][axis]
            # Jitter: each patch moves <= jitter from its cell, so the offset is within 2*jitter of nominal.
            assert abs(d - expected * step) <= 2 * jitter
            if expected:
                # Separation along a displaced axis: |d| - patch in [gap - 2*jitter, gap + 2*jitter].
                assert gap - 2 * jitter <= abs(d) - patch <= gap + 2 * jitter
    return labels


@pytest.mark.parametrize("patch, gap, jitter, size", [(8, 2, 1, 32), (9, 2, 0, 31), (16, 4, 2, 64), (7, 6, 3, 40)])
def test_pair_labels_geometry_gap_and_jitter_eagerly(patch, gap, jitter, size):
    images = tf.random.uniform((64, size, size, 3), seed=1)
    out = sample_patch_pairs(images, patch, gap, jitter, tf.constant([3, 4]))
    labels = _check_pairs(images, out, patch, gap, jitter)
    assert len(set(labels)) == 8  # every position drawn in 64 samples
    # Jitter is used (not always zero) and stays within +-jitter of the cell (checked above).
    offsets = out["neighbour_yx"].numpy() - out["centre_yx"].numpy()
    steps = np.array([DISPLACEMENT[l] for l in labels]) * (patch + gap)
    assert (np.abs(offsets - steps).max() > 0) == (jitter > 0)


def test_pair_labels_inside_tf_data():
    patch, gap, jitter = 8, 2, 1
    images = tf.random.uniform((4, 16, 32, 32, 3), seed=2)
    dataset = tf.data.Dataset.from_tensor_slices(images).enumerate().map(
        lambda i, x: (x, sample_patch_pairs(x, patch, gap, jitter, tf.stack([tf.cast(i, tf.int32), 7])))
    )
    for batch, out in dataset:
        _check_pairs(batch, out, patch, gap, jitter)


def test_method_augment_in_the_pipeline_cuts_located_patches():
    """No jitter, no countermeasures: find both patches in the image; their grid cells give the label."""
    options = {**SMALL, "jitter": 0, "color_drop": False, "per_patch_norm": False, "pixelation": False}
    config = tiny_config("relpatch", options)
    splits = load_splits(config.data)
    _, method = build_models(config, num_classes=len(splits.class_names))
    batch = first_batch(method, splits, batch_size=16)  # runs method.augment inside tf.data
    images, labels = batch["images"].numpy(), batch["pretext_labels"].numpy()
    patch, step = 8, 10
    windows = np.lib.stride_tricks.sliding_window_view(images, (patch, patch), axis=(1, 2))
    for b in range(16):
        where = []
        for key in ("centre", "neighbour"):
            target = np.moveaxis(batch[key].numpy()[b], -1, 0)  # [3, p, p] like the windows' tail
            hits = np.argwhere(np.all(windows[b] == target, axis=(2, 3, 4)))
            assert len(hits) >= 1
            where.append(hits[0])
        (cy, cx), (ny, nx) = where
        assert ((ny - cy) // step if ny != cy else 0, (nx - cx) // step if nx != cx else 0) == DISPLACEMENT[labels[b]]
        assert abs(ny - cy) in (0, step) and abs(nx - cx) in (0, step)
    assert batch["images"].shape == (16, 32, 32, 3) and batch["labels"].shape == (16,)


def test_color_drop_leaves_exactly_one_informative_channel():
    patches = tf.random.uniform((32, 9, 9, 3), seed=5)
    other = tf.random.uniform((32, 9, 9, 3), seed=6)
    noise = 0.01
    seed = tf.constant([1, 2])
    out, out_other = color_drop(patches, seed, noise).numpy(), color_drop(other, seed, noise).numpy()
    centred = patches.numpy() - patches.numpy().mean(axis=(1, 2), keepdims=True)
    kept = []
    for b in range(32):
        informative = [c for c in range(3) if np.allclose(out[b, ..., c], centred[b, ..., c], atol=1e-6)]
        assert len(informative) == 1
        kept.append(informative[0])
        for c in set(range(3)) - set(informative):
            # Replaced channels: bounded noise that does not depend on the image at all.
            assert np.abs(out[b, ..., c]).max() <= noise
            np.testing.assert_array_equal(out[b, ..., c], out_other[b, ..., c])
    assert len(set(kept)) == 3  # each channel is kept for some patch


def test_per_patch_normalisation_reaches_the_encoder_as_zero_mean_unit_std():
    z = normalize_patches(tf.random.uniform((8, 9, 9, 3), seed=3) * 0.3 + 0.2).numpy()
    np.testing.assert_allclose(z.mean(axis=(1, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(z.std(axis=(1, 2, 3)), 1, atol=1e-3)
    # Through the method: after the encoder's own Normalization layer, each patch is exactly z.
    encoder = build_encoder("convnet_small", 32, width=0.25)
    method = build_method("relpatch", SMALL, encoder)
    data = method.augment(tf.random.uniform((8, 32, 32, 3), seed=4), tf.zeros(8, tf.int32), tf.constant([0, 1]))
    for key in ("centre", "neighbour"):
        seen = encoder.get_layer("normalization")(data[key]).numpy()
        np.testing.assert_allclose(seen.mean(axis=(1, 2, 3)), 0, atol=1e-4)
        np.testing.assert_allclose(seen.std(axis=(1, 2, 3)), 1, atol=1e-3)


def test_pixelation_hits_about_a_third_and_keeps_constant_patches():
    patches = tf.random.uniform((300, 16, 16, 3), seed=8)
    out = random_pixelation(patches, tf.constant([5, 6])).numpy()
    changed = np.abs(out - patches.numpy()).max(axis=(1, 2, 3)) > 1e-6
    assert 60 < changed.sum() < 140
    # Area-down / bilinear-up is a proper resampling: constants stay constant, the mean is kept roughly.
    flat = random_pixelation(tf.fill((50, 16, 16, 3), 0.7), tf.constant([5, 6])).numpy()
    np.testing.assert_allclose(flat, 0.7, atol=1e-5)
    # Resampled patches lose detail: lower pixel-to-pixel variation than the originals.
    grad = lambda x: np.abs(np.diff(x, axis=1)).mean(axis=(1, 2, 3))
    assert np.all(grad(out[changed]) < grad(patches.numpy()[changed]))


@pytest.mark.parametrize(
    "options, fragment",
    [
        ({}, r"3\*96 \+ 2\*48 \+ 2\*7 = 398 px but the \(resized\) image is 32 px"),
        ({"patch_size": 10, "gap": 2, "jitter": 1, "head_depth": 1}, r"= 36 px .* use patch_size <= 8"),
        ({"resize_to": 64, "patch_size": 20, "gap": 4, "jitter": 2}, r"= 72 px but the \(resized\) image is 64"),
        ({"patch_size": 8, "gap": 2, "jitter": 2}, r"gap 2 < 2 \* jitter 2"),
        ({**SMALL, "resize_to": -1}, "resize_to -1"),
        ({**SMALL, "colour_drop": True}, "unknown method.options key"),
        ({**SMALL, "pixelation": 1}, "expected bool"),
    ],
)
def test_bad_options_fail_clearly(options, fragment):
    encoder = build_encoder("convnet_small", 32, width=0.25)
    with pytest.raises(ConfigError, match=fragment):
        build_method("relpatch", options, encoder)


def test_relpatch_passes_the_method_contract(tmp_path):
    check_method_contract("relpatch", {**SMALL, "resize_to": 48, "patch_size": 12, "gap": 4, "jitter": 2}, tmp_path)


def test_native_resolution_contract_loss_is_near_chance():
    encoder = build_encoder("convnet_small", 32, width=0.25)
    method = build_method("relpatch", SMALL, encoder, num_classes=10)
    data = method.augment(tf.random.uniform((8, 32, 32, 3)), tf.range(8), tf.constant([0, 0]))
    loss, logs = method.compute_loss_and_logs(data, training=False)
    assert abs(float(logs["loss"]) - np.log(8)) < 1.0 and "probe_top1" in logs
    assert NEIGHBOUR_CELLS[4] == (1, 2)  # label 4 is "right"
