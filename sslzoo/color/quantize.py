"""Quantised colour targets of colorization (Zhang, Isola, Efros, ECCV 2016) and split-brain autoencoders.

The ab plane is cut into cells of `grid_size` (paper: 10) centred on multiples of the grid size; the bins
are the cells sRGB colours can reach. The paper keeps Q = 313 in-gamut bins; here the in-gamut cells are
recomputed by converting a dense sRGB sampling (65^3 colours, every 1/64 step) to Lab and keeping every cell
hit by the nearest-centre rule: that gives Q = 261 for sRGB, exactly the cells that all 2^24 8-bit sRGB
colours hit (checked once by brute force), so every pixel of a decoded image falls in a bin. (The paper's
larger set also holds cells that no sRGB colour reaches.)

Pieces, in the paper's notation (Section 2.1-2.3):
- `soft_encode`: Z, the target distribution over the k nearest bins with a Gaussian kernel (sigma 5);
- `empirical_prior`, `smooth_prior`, `rebalancing_weights`: p, p~ and w proportional to
  ((1 - lambda) p~ + lambda / Q)^-1 with E_p~[w] = 1;
- `annealed_mean`: H(Z) = E[f_T(Z)], f_T(z) = softmax(log z / T), T = 0.38;
- `soft_cross_entropy`: the (rebalanced) multinomial cross-entropy L_cl(Z^, Z).
"""

from __future__ import annotations

import functools

import numpy as np
import tensorflow as tf

from sslzoo.color.lab import rgb_to_lab

GRID_SIZE = 10
# Split-brain's ab -> L task: L in [0, 100] as 50 bins of width 2 (SB-paper, Section 3.2).
L_BINS = 50
L_RANGE = 100.0


@functools.lru_cache(maxsize=8)
def _in_gamut_cells(grid_size: int, samples: int) -> tuple:
    levels = np.linspace(0.0, 1.0, samples, dtype=np.float32)
    rgb = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), axis=-1).reshape(-1, 3)
    ab = rgb_to_lab(tf.constant(rgb)).numpy()[:, 1:]
    cells = np.unique(np.round(ab / grid_size).astype(np.int64), axis=0)  # sorted by (a, b)
    return tuple(map(tuple, cells))


def ab_bins(grid_size: int = GRID_SIZE, samples: int = 65) -> np.ndarray:
    """The in-gamut ab bin centres, float32 [Q, 2] sorted by (a, b); deterministic, cached.

    Args:
        grid_size: cell size in ab units (paper: 10).
        samples: sRGB sampling per channel used to find the cells sRGB colours reach.
    """
    return np.asarray(_in_gamut_cells(int(grid_size), int(samples)), np.float32) * grid_size


def _squared_distances(ab: tf.Tensor, centers: np.ndarray) -> tf.Tensor:
    ab = tf.cast(ab, tf.float32)
    centers = tf.constant(centers, tf.float32)
    # |x|^2 - 2 x.c + |c|^2 keeps this one matmul instead of a [..., Q, 2] difference tensor.
    flat = tf.reshape(ab, [-1, 2])
    d2 = (tf.reduce_sum(flat**2, -1, keepdims=True) - 2.0 * tf.matmul(flat, centers, transpose_b=True)
          + tf.reduce_sum(centers**2, -1)[tf.newaxis, :])
    shape = tf.concat([tf.shape(ab)[:-1], [len(centers)]], 0)
    return tf.reshape(tf.maximum(d2, 0.0), shape)


def nearest_bin(ab: tf.Tensor, centers: np.ndarray) -> tf.Tensor:
    """Index of the nearest bin centre for every ab value: int32 [...] from ab [..., 2]."""
    return tf.argmin(_squared_distances(ab, centers), axis=-1, output_type=tf.int32)


def soft_encode(ab: tf.Tensor, centers: np.ndarray, neighbors: int = 5, sigma: float = 5.0):
    """Z: each ab value as a distribution over its `neighbors` nearest bins (Gaussian kernel, `sigma`).

    Args:
        ab: float [..., 2].
        centers: bin centres [Q, 2] (`ab_bins()`).
        neighbors: k nearest bins (paper: 5; the released code's NNEncLayer uses 10).
        sigma: kernel width in ab units (paper: 5).
    Returns:
        (indices int32 [..., k] nearest first, weights float32 [..., k] summing to 1). The sparse form keeps
        targets k values per pixel instead of Q; `dense_encoding` expands it.
    """
    d2 = _squared_distances(ab, centers)
    negative, indices = tf.math.top_k(-d2, k=neighbors)
    # Softmax of -d^2 / (2 sigma^2) is the normalised Gaussian kernel, and stays finite far from every bin.
    weights = tf.nn.softmax(negative / (2.0 * sigma**2), axis=-1)
    return indices, weights


def dense_encoding(indices: tf.Tensor, weights: tf.Tensor, num_bins: int) -> tf.Tensor:
    """The sparse (indices, weights) targets as a dense distribution [..., Q]."""
    return tf.reduce_sum(tf.one_hot(indices, num_bins, dtype=weights.dtype) * weights[..., tf.newaxis], axis=-2)


def empirical_prior(ab: np.ndarray, centers: np.ndarray, grid_size: int = GRID_SIZE) -> np.ndarray:
    """p: the fraction of ab values whose nearest bin is q, float64 [Q] summing to 1.

    Args:
        ab: float [..., 2] (flattened).
        centers: the in-gamut bin centres [Q, 2], multiples of `grid_size` (`ab_bins(grid_size)`).
    """
    ab = np.asarray(ab, np.float32).reshape(-1, 2)
    cells = np.round(ab / grid_size).astype(np.int64)
    grid = np.round(np.asarray(centers) / grid_size).astype(np.int64)
    # A value whose own grid cell is in gamut has that cell's centre as its nearest in-gamut centre, so a
    # table lookup replaces a distance to every bin (millions of pixels at once).
    low = np.minimum(cells.min(0), grid.min(0))
    span = np.maximum(cells.max(0), grid.max(0)) - low + 1
    table = np.full(span[0] * span[1], -1, np.int64)
    table[(grid[:, 0] - low[0]) * span[1] + grid[:, 1] - low[1]] = np.arange(len(grid))
    bins = table[(cells[:, 0] - low[0]) * span[1] + cells[:, 1] - low[1]]
    outside = bins < 0
    if outside.any():  # only for ab values no sRGB colour has (e.g. synthetic inputs)
        bins[outside] = nearest_bin(tf.constant(ab[outside]), centers).numpy()
    counts = np.bincount(bins, minlength=len(centers)).astype(np.float64)
    return counts / max(counts.sum(), 1.0)


def smooth_prior(prior: np.ndarray, centers: np.ndarray, sigma: float = 5.0) -> np.ndarray:
    """p~: the prior blurred by a Gaussian of `sigma` ab units over the bins (each bin's mass is spread
    over the in-gamut bins with weights summing to 1, so p~ sums to 1 as p does)."""
    centers = np.asarray(centers, np.float64)
    d2 = ((centers[:, None, :] - centers[None, :, :]) ** 2).sum(-1)
    kernel = np.exp(-d2 / (2.0 * sigma**2))
    kernel /= kernel.sum(axis=0, keepdims=True)  # column j: where bin j's mass goes
    return kernel @ np.asarray(prior, np.float64)


def rebalancing_weights(smoothed_prior: np.ndarray, lam: float = 0.5) -> np.ndarray:
    """w = ((1 - lam) p~ + lam / Q)^-1, scaled so that E_p~[w] = sum_q p~_q w_q = 1 (paper, Eq. 4)."""
    p = np.asarray(smoothed_prior, np.float64)
    weights = 1.0 / ((1.0 - lam) * p + lam / len(p))
    return weights / np.sum(p * weights)


def annealed_mean(probabilities: tf.Tensor, centers: np.ndarray, temperature: float = 0.38) -> tf.Tensor:
    """H(Z) = sum_q f_T(Z)_q c_q with f_T(z) = softmax(log z / T): T = 1 is the mean, T -> 0 the mode.

    Args:
        probabilities: [..., Q] distributions over the bins. Returns: ab [..., 2].
    """
    log_p = tf.math.log(tf.maximum(tf.cast(probabilities, tf.float32), 1e-30))
    return _expectation(log_p / temperature, centers)


def annealed_mean_from_logits(logits: tf.Tensor, centers: np.ndarray, temperature: float = 0.38) -> tf.Tensor:
    """`annealed_mean(softmax(logits))`, exactly: log softmax differs from the logits by a constant."""
    return _expectation(tf.cast(logits, tf.float32) / temperature, centers)


def _expectation(logits: tf.Tensor, centers) -> tf.Tensor:
    weights = tf.nn.softmax(logits, axis=-1)
    return tf.tensordot(weights, tf.constant(np.asarray(centers), tf.float32), axes=1)


def soft_cross_entropy(logits: tf.Tensor, indices: tf.Tensor, weights: tf.Tensor) -> tf.Tensor:
    """Per-pixel -sum_q Z_q log softmax(logits)_q for sparse targets Z (`soft_encode`).

    Args:
        logits: [..., Q]; indices int [..., k]; weights float [..., k] (a 1-hot target is k = 1, weight 1).
    Returns:
        [...] cross-entropy per pixel; the caller weights (rebalancing, grey mask) and averages.
    """
    log_p = tf.nn.log_softmax(tf.cast(logits, tf.float32), axis=-1)
    picked = tf.gather(log_p, tf.cast(indices, tf.int32), axis=-1, batch_dims=len(indices.shape) - 1)
    return -tf.reduce_sum(tf.cast(weights, tf.float32) * picked, axis=-1)


def lightness_bin(lightness: tf.Tensor, num_bins: int = L_BINS) -> tf.Tensor:
    """Split-brain's L target: int32 [...] in [0, num_bins) from L [...] in [0, 100] (bins of 100/num_bins)."""
    index = tf.floor(tf.cast(lightness, tf.float32) * (num_bins / L_RANGE))
    return tf.cast(tf.clip_by_value(index, 0.0, num_bins - 1.0), tf.int32)


def lightness_centers(num_bins: int = L_BINS) -> np.ndarray:
    """L at the centre of every bin, float32 [num_bins, 1] (for the expected L of a prediction)."""
    width = L_RANGE / num_bins
    return ((np.arange(num_bins, dtype=np.float32) + 0.5) * width)[:, None]
