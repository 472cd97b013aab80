"""sRGB <-> CIE Lab: reference values, round trip, and the same numbers eagerly, in tf.data and in a model."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from sslzoo.color import lab_to_rgb, lightness, rgb_to_lab

# skimage.color.rgb2lab (D65, 2 degree observer) on the sRGB corners and mid grey.
REFERENCE = [
    ((1.0, 1.0, 1.0), (100.0, 0.0, 0.0)),
    ((0.0, 0.0, 0.0), (0.0, 0.0, 0.0)),
    ((1.0, 0.0, 0.0), (53.2408, 80.0925, 67.2032)),
    ((0.0, 1.0, 0.0), (87.7347, -86.1827, 83.1793)),
    ((0.0, 0.0, 1.0), (32.2970, 79.1875, -107.8602)),
    ((1.0, 1.0, 0.0), (97.1393, -21.5537, 94.4780)),
    ((0.0, 1.0, 1.0), (91.1132, -48.0875, -14.1312)),
    ((1.0, 0.0, 1.0), (60.3242, 98.2343, -60.8249)),
    ((128 / 255, 128 / 255, 128 / 255), (53.5850, 0.0, 0.0)),
]


def numpy_rgb_to_lab(rgb):
    """Float64 textbook conversion (sRGB curve, Lindbloom's matrix, D65, CIE f) as an independent check."""
    rgb = np.asarray(rgb, np.float64)
    linear = np.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    matrix = np.array([[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750],
                       [0.0193339, 0.1191920, 0.9503041]])
    xyz = linear @ matrix.T / np.array([0.95047, 1.0, 1.08883])
    delta = 6 / 29
    f = np.where(xyz > delta**3, np.cbrt(xyz), xyz / (3 * delta**2) + 4 / 29)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)


@pytest.mark.parametrize("rgb, lab", REFERENCE)
def test_reference_colours(rgb, lab):
    ours = rgb_to_lab(tf.constant([rgb], tf.float32)).numpy()[0]
    np.testing.assert_allclose(ours, lab, atol=1e-2)
    np.testing.assert_allclose(lab_to_rgb(tf.constant([lab], tf.float32)).numpy()[0], rgb, atol=1e-3)


def test_matches_a_float64_reference_on_random_images():
    images = np.random.default_rng(0).random((4, 16, 16, 3)).astype(np.float32)
    np.testing.assert_allclose(rgb_to_lab(tf.constant(images)).numpy(), numpy_rgb_to_lab(images), atol=2e-3)
    np.testing.assert_allclose(lightness(tf.constant(images)).numpy()[..., 0], numpy_rgb_to_lab(images)[..., 0],
                               atol=2e-3)


def test_round_trip_error_is_below_1e_3():
    rng = np.random.default_rng(1)
    images = rng.random((8, 32, 32, 3)).astype(np.float32)
    # Include the darkest values, where the linear segments of both curves take over.
    images[0] = rng.random((32, 32, 3)) * 0.01
    back = lab_to_rgb(rgb_to_lab(tf.constant(images))).numpy()
    assert np.abs(back - images).max() <= 1e-3


def test_out_of_gamut_lab_is_clipped_unless_asked():
    lab = tf.constant([[20.0, 90.0, -100.0]])
    assert np.all((lab_to_rgb(lab).numpy() >= 0) & (lab_to_rgb(lab).numpy() <= 1))
    unclipped = lab_to_rgb(lab, clip=False).numpy()
    assert np.isfinite(unclipped).all() and (unclipped.min() < 0 or unclipped.max() > 1)


def test_same_values_eagerly_inside_tf_data_and_inside_a_saved_model(tmp_path):
    images = np.random.default_rng(2).random((6, 8, 8, 3)).astype(np.float32)
    eager = rgb_to_lab(tf.constant(images)).numpy()
    mapped = next(iter(tf.data.Dataset.from_tensors(images).map(rgb_to_lab))).numpy()
    np.testing.assert_allclose(mapped, eager, atol=1e-5)
    # Symbolic use: a functional model with built-in operations only, reloaded in safe mode.
    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, rgb_to_lab(inputs))
    model.save(tmp_path / "lab.keras")
    loaded = keras.saving.load_model(tmp_path / "lab.keras", safe_mode=True)
    np.testing.assert_allclose(loaded(images).numpy(), eager, atol=1e-5)
