"""Colour clusters: k-means on ab values, nearest-centre assignment (NumPy and TensorFlow), determinism."""

import numpy as np
import tensorflow as tf

from sslzoo.methods.video_colorization import fit_colour_clusters
from sslzoo.video.kmeans import assign, assign_tf, fit_kmeans


def blobs(seed=0, n=3000):
    rng = np.random.default_rng(seed)
    centres = rng.uniform(-80, 80, size=(16, 2))
    return centres[rng.integers(0, 16, n)] + rng.normal(scale=6.0, size=(n, 2))


def nearest_by_loop(points, centres):
    return np.array([int(np.argmin([np.sum((p - c) ** 2) for c in centres])) for p in points])


def test_every_ab_value_maps_to_its_nearest_centre():
    points = blobs()
    centres = fit_kmeans(points, k=16, seed=0)
    assert centres.shape == (16, 2) and centres.dtype == np.float32
    expected = nearest_by_loop(points, centres)
    np.testing.assert_array_equal(assign(points, centres), expected)
    np.testing.assert_array_equal(assign_tf(tf.constant(points, tf.float32), centres).numpy(), expected)
    # Any ab value, not only training points: a grid over the whole ab plane, batched like a feature map.
    grid = np.stack(np.meshgrid(np.linspace(-110, 110, 23), np.linspace(-110, 110, 23)), -1).astype(np.float32)
    np.testing.assert_array_equal(assign_tf(grid, centres).numpy().ravel(),
                                  nearest_by_loop(grid.reshape(-1, 2), centres))


def test_centres_are_the_means_of_their_members():
    points = blobs(1)
    centres = fit_kmeans(points, k=16, seed=3, iterations=100)
    labels = assign(points, centres)
    for j in range(16):
        members = points[labels == j]
        if len(members):
            np.testing.assert_allclose(centres[j], members.mean(axis=0), atol=1e-3)


def test_kmeans_is_deterministic_for_a_seed():
    points = blobs(2)
    np.testing.assert_array_equal(fit_kmeans(points, 16, seed=5), fit_kmeans(points, 16, seed=5))
    # Subsampling is seeded too.
    np.testing.assert_array_equal(fit_kmeans(points, 16, seed=5, max_points=500),
                                  fit_kmeans(points, 16, seed=5, max_points=500))


def test_fewer_distinct_colours_than_clusters():
    points = np.repeat(np.array([[10.0, -5.0], [-30.0, 40.0]]), 50, axis=0)
    centres = fit_kmeans(points, 4, seed=0)
    assert np.isfinite(centres).all()
    assert set(map(tuple, np.round(centres[assign(points, centres)], 3))) == {(10.0, -5.0), (-30.0, 40.0)}


def test_colour_clusters_of_frames_span_their_colours():
    rng = np.random.default_rng(0)
    palette = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [128, 128, 128]], np.uint8)
    frames = palette[rng.integers(0, 4, size=(6, 4, 8, 8))]  # clips [N, T, S, S, 3] of four colours
    centres = fit_colour_clusters(frames, 4, seed=0, max_pixels=1000)
    from sslzoo.color import rgb_to_lab

    ab = rgb_to_lab(tf.constant(palette, tf.float32) / 255.0).numpy()[:, 1:]
    # Each palette colour is a cluster of its own: its nearest centre is (almost) itself.
    np.testing.assert_allclose(np.sort(centres[assign(ab, centres)], axis=0), np.sort(ab, axis=0), atol=1e-3)
    np.testing.assert_array_equal(centres, fit_colour_clusters(frames, 4, seed=0, max_pixels=1000))
