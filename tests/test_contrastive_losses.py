"""NT-Xent and InfoNCE against NumPy loops written from the papers' pseudocode, plus closed forms.

Cross-replica behaviour (global negatives) is in tests/test_distributed.py.
"""

import math

import numpy as np
import pytest
import tensorflow as tf

from sslzoo.losses import info_nce, nt_xent
from sslzoo.methods.base import top1


def _cosine(a, b):
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def nt_xent_reference(z_1, z_2, temperature, normalize=True):
    """SimCLR Algorithm 1, literally: views interleaved as z_(2k-1), z_(2k) (0-based: 2k, 2k+1).

    l(i, j) = -log exp(s_ij / t) / sum_{k != i} exp(s_ik / t);  L = 1/(2N) sum_k [l(2k-1, 2k) + l(2k, 2k-1)],
    s the cosine similarity, or the dot product without normalisation (Table 5's "no l2 norm" rows).
    """
    n = len(z_1)
    z = np.empty((2 * n, z_1.shape[1]))
    z[0::2], z[1::2] = z_1, z_2
    similarity = _cosine if normalize else (lambda a, b: float(a @ b))
    sim = [[similarity(z[i], z[j]) for j in range(2 * n)] for i in range(2 * n)]

    def loss_term(i, j):
        denominator = sum(math.exp(sim[i][k] / temperature) for k in range(2 * n) if k != i)
        return -math.log(math.exp(sim[i][j] / temperature) / denominator)

    return sum(loss_term(2 * k, 2 * k + 1) + loss_term(2 * k + 1, 2 * k) for k in range(n)) / (2 * n)


def info_nce_reference(query, positive, negatives, temperature):
    """MoCo Algorithm 1: logits = [q.k+, q.queue] / t, label 0, mean cross-entropy over the batch."""
    total = 0.0
    for q, k in zip(query, positive):
        q = q / np.linalg.norm(q)
        k = k / np.linalg.norm(k)
        logits = [q @ k / temperature] + [q @ (m / np.linalg.norm(m)) / temperature for m in negatives]
        total += -logits[0] + math.log(sum(math.exp(v) for v in logits))
    return total / len(query)


@pytest.mark.parametrize("n, dim, temperature", [(1, 3, 0.5), (4, 8, 0.1), (7, 5, 1.0)])
def test_nt_xent_matches_algorithm_1(n, dim, temperature):
    rng = np.random.default_rng(n)
    z_1 = rng.normal(size=(n, dim)).astype(np.float32)
    z_2 = (z_1 + 0.5 * rng.normal(size=(n, dim))).astype(np.float32) * 3.0  # scale must not matter
    loss, logits, labels = nt_xent(z_1, z_2, temperature)
    assert loss.numpy() == pytest.approx(nt_xent_reference(z_1, z_2, temperature), rel=1e-4, abs=1e-5)
    assert logits.shape == (2 * n, 2 * n) and labels.shape == (2 * n,)
    # The logits and labels are the loss's own: their mean cross-entropy is the loss.
    again = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
    assert again.numpy() == pytest.approx(loss.numpy(), rel=1e-6)


@pytest.mark.parametrize("n, dim, temperature", [(1, 3, 0.5), (4, 8, 0.5), (7, 5, 1.0)])
def test_nt_xent_without_normalization_scores_dot_products(n, dim, temperature):
    rng = np.random.default_rng(10 + n)
    z_1 = (0.5 * rng.normal(size=(n, dim))).astype(np.float32)
    z_2 = (z_1 + 0.3 * rng.normal(size=(n, dim))).astype(np.float32)
    loss, logits, labels = nt_xent(z_1, z_2, temperature, normalize=False)
    expected = nt_xent_reference(z_1.astype(np.float64), z_2.astype(np.float64), temperature, normalize=False)
    assert loss.numpy() == pytest.approx(expected, rel=1e-4, abs=1e-5)
    assert logits.shape == (2 * n, 2 * n) and labels.shape == (2 * n,)
    # Unlike the cosine, the dot product sees the scale: doubling z changes the loss.
    if n > 1:
        doubled, _, _ = nt_xent(2 * z_1, 2 * z_2, temperature, normalize=False)
        assert abs(float(doubled) - float(loss)) > 1e-3
        cosine, _, _ = nt_xent(z_1, z_2, temperature)
        assert float(nt_xent(2 * z_1, 2 * z_2, temperature)[0]) == pytest.approx(float(cosine), rel=1e-5)


def test_nt_xent_identical_embeddings_give_log_2n_minus_1():
    # Every similarity is 1: the positive is one of 2N-1 equal candidates.
    n = 6
    z = np.tile(np.array([[0.3, -1.0, 2.0]], np.float32), (n, 1))
    loss, _, _ = nt_xent(z, z, temperature=0.2)
    assert loss.numpy() == pytest.approx(math.log(2 * n - 1), rel=1e-6)


def test_nt_xent_accuracy_and_loss_when_views_are_separable():
    # Orthogonal images with identical views: the positive wins every row and the loss is small.
    n = 5
    z = np.eye(n, 8, dtype=np.float32)
    loss, logits, labels = nt_xent(z, z, temperature=0.1)
    assert top1(logits, labels).numpy() == 1.0
    # Closed form: -log(e^10 / (e^10 + (2N-2) e^0)).
    # (float32 log-sum-exp around 10 loses about 1e-6 absolute.)
    assert loss.numpy() == pytest.approx(math.log1p((2 * n - 2) * math.exp(-10.0)), abs=2e-6)


def test_nt_xent_self_similarity_is_excluded():
    z_1 = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    _, logits, labels = nt_xent(z_1, -z_1, temperature=0.5)
    # Each anchor's own column: the second block's entry at its label.
    n = 3
    own = [logits[i, n + labels[i]] for i in range(n)] + [logits[n + i, n + labels[n + i]] for i in range(n)]
    assert max(float(v) for v in own) < -1e8


def test_nt_xent_gradients_are_finite_and_loss_is_float32_for_half_inputs():
    z_1 = tf.Variable(np.random.default_rng(1).normal(size=(4, 6)).astype(np.float16))
    z_2 = tf.Variable(np.random.default_rng(2).normal(size=(4, 6)).astype(np.float16))
    with tf.GradientTape() as tape:
        loss, logits, _ = nt_xent(z_1, z_2, temperature=0.1)
    grads = tape.gradient(loss, [z_1, z_2])
    assert loss.dtype == tf.float32 and logits.dtype == tf.float32
    assert all(np.isfinite(g.numpy()).all() for g in grads)


@pytest.mark.parametrize("n, k, temperature", [(1, 1, 0.07), (5, 9, 0.2), (3, 32, 1.0)])
def test_info_nce_matches_moco_algorithm_1(n, k, temperature):
    rng = np.random.default_rng(k)
    query = rng.normal(size=(n, 6)).astype(np.float32)
    positive = (query + rng.normal(size=(n, 6))).astype(np.float32)
    negatives = rng.normal(size=(k, 6)).astype(np.float32)
    loss, logits, labels = info_nce(query, positive, negatives, temperature)
    expected = info_nce_reference(query, positive, negatives, temperature)
    assert loss.numpy() == pytest.approx(expected, rel=1e-4, abs=1e-5)
    assert logits.shape == (n, 1 + k)
    assert (labels.numpy() == 0).all()


def test_info_nce_closed_form_when_all_keys_are_the_query():
    # Every logit equals 1/t, so the positive is one of K+1 equal candidates: log(K + 1).
    k = 15
    query = np.ones((4, 3), np.float32)
    loss, _, _ = info_nce(query, query, np.ones((k, 3), np.float32), temperature=0.07)
    assert loss.numpy() == pytest.approx(math.log(k + 1), rel=1e-5)


def test_info_nce_normalizes_inputs():
    rng = np.random.default_rng(3)
    query, positive = rng.normal(size=(2, 4, 5)).astype(np.float32)
    negatives = rng.normal(size=(7, 5)).astype(np.float32)
    unit = info_nce(query, positive, negatives, 0.2)[0]
    scaled = info_nce(4.0 * query, 0.5 * positive, 9.0 * negatives, 0.2)[0]
    assert scaled.numpy() == pytest.approx(unit.numpy(), rel=1e-5)
