"""Colour clusters: k-means on the ab channels of training frames, and nearest-centre assignment.

The paper quantises colour into 16 categories so the prediction is a classification (regressing colour
averages it). Fitting is NumPy (k-means++ seeding, Lloyd iterations) and deterministic for a seed; the
assignment has a NumPy and a TensorFlow form, the latter used inside the model.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf


def squared_distances(points: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """float64 [N, K]: |p - c|^2 for every point and centre."""
    points = np.asarray(points, np.float64)
    centres = np.asarray(centres, np.float64)
    return ((points[:, None, :] - centres[None, :, :]) ** 2).sum(axis=-1)


def assign(points: np.ndarray, centres: np.ndarray, chunk: int = 65536) -> np.ndarray:
    """int32 [N]: the index of the nearest centre of each point (ties go to the lower index)."""
    points = np.asarray(points)
    out = np.empty(len(points), np.int32)
    for start in range(0, len(points), chunk):
        out[start:start + chunk] = np.argmin(squared_distances(points[start:start + chunk], centres), axis=1)
    return out


def assign_tf(points: tf.Tensor, centres: tf.Tensor) -> tf.Tensor:
    """int32 [...]: nearest centre index of points [..., C] among centres [K, C] (TensorFlow)."""
    points = tf.cast(points, tf.float32)
    centres = tf.cast(centres, tf.float32)
    # |p - c|^2 = |p|^2 - 2 p.c + |c|^2; |p|^2 is the same for every centre and drops out of the argmin.
    scores = -2.0 * tf.tensordot(points, centres, axes=[[-1], [1]]) + tf.reduce_sum(centres * centres, axis=1)
    return tf.argmin(scores, axis=-1, output_type=tf.int32)


def _plus_plus(points: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding (Arthur & Vassilvitskii, 2007): spread the initial centres out."""
    centres = [points[rng.integers(len(points))]]
    closest = squared_distances(points, np.array(centres))[:, 0]
    for _ in range(1, k):
        total = closest.sum()
        if total <= 0:  # fewer distinct points than k: repeat a point
            centres.append(points[rng.integers(len(points))])
            continue
        centres.append(points[rng.choice(len(points), p=closest / total)])
        closest = np.minimum(closest, squared_distances(points, centres[-1][None])[:, 0])
    return np.array(centres, np.float64)


def fit_kmeans(points: np.ndarray, k: int = 16, seed: int = 0, iterations: int = 50,
               max_points: int = 100_000) -> np.ndarray:
    """k-means centres, float32 [k, C], deterministic for `seed`.

    Args:
        points: float [N, C] (ab values of training pixels).
        k: number of clusters (the paper: 16).
        iterations: Lloyd iterations at most (stops earlier once the assignment is stable).
        max_points: a seeded random subset of at most this many points is clustered.
    """
    points = np.asarray(points, np.float64).reshape(-1, np.shape(points)[-1])
    if len(points) == 0:
        raise ValueError("k-means needs at least one point")
    rng = np.random.default_rng([seed, 0xAB])
    if len(points) > max_points:
        points = points[np.sort(rng.choice(len(points), max_points, replace=False))]
    centres = _plus_plus(points, k, rng)
    labels = None
    for _ in range(iterations):
        new_labels = assign(points, centres)
        if labels is not None and np.array_equal(new_labels, labels):
            break
        labels = new_labels
        for j in range(k):
            members = points[labels == j]
            if len(members):  # an empty cluster keeps its centre
                centres[j] = members.mean(axis=0)
    return centres.astype(np.float32)
