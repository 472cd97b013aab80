"""Weighted k-nearest-neighbour classification on frozen features (Wu et al. 2018)."""

from __future__ import annotations

import numpy as np
import tensorflow as tf


def knn_predict(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    query_features: np.ndarray,
    num_classes: int,
    k: int = 200,
    temperature: float = 0.07,
    batch_size: int = 1024,
) -> np.ndarray:
    """Class predicted for each query by the temperature-weighted cosine kNN vote.

    Features are L2-normalised; each query takes its `k` most cosine-similar training features (`k` capped at
    the train size); neighbour `i` adds `exp(s_i / T)` to its class; the class with the largest sum wins.

    Args:
        train_features: float [N, D].
        train_labels: int [N], in [0, num_classes).
        query_features: float [M, D].
        num_classes: number of classes C.
        k: neighbours per query.
        temperature: T in exp(similarity / T).
        batch_size: queries per similarity block (memory is about batch_size x N floats).

    Returns:
        int32 [M] predicted classes.

    Reference: Wu, Xiong, Yu, Lin, "Unsupervised Feature Learning via Non-Parametric Instance
    Discrimination", CVPR 2018 (weighted kNN, k=200, T=0.07).
    """
    train_labels = np.asarray(train_labels).astype(np.int32).reshape(-1)
    if len(train_labels) == 0:
        raise ValueError("knn_predict: no training features")
    if len(query_features) == 0:
        return np.zeros((0,), np.int32)
    if temperature <= 0:
        raise ValueError(f"knn_predict: temperature must be > 0, got {temperature}")
    k = int(min(k, len(train_labels)))
    train = tf.math.l2_normalize(tf.convert_to_tensor(train_features, tf.float32), axis=1)
    queries = tf.math.l2_normalize(tf.convert_to_tensor(query_features, tf.float32), axis=1)
    train_one_hot = tf.one_hot(train_labels, num_classes, dtype=tf.float32)
    blocks = [
        _predict_block(queries[start : start + batch_size], train, train_one_hot, k, float(temperature)).numpy()
        for start in range(0, int(queries.shape[0]), batch_size)
    ]
    return np.concatenate(blocks).astype(np.int32)


def knn_top1(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    query_features: np.ndarray,
    query_labels: np.ndarray,
    num_classes: int,
    k: int = 200,
    temperature: float = 0.07,
    batch_size: int = 1024,
) -> float:
    """Top-1 accuracy (percent, 0-100) of the weighted kNN classifier; 0.0 for no queries.

    Args: as `knn_predict`, plus query_labels: int [M].
    Reference: Wu et al., CVPR 2018.
    """
    query_labels = np.asarray(query_labels).astype(np.int32).reshape(-1)
    if len(query_labels) == 0:
        return 0.0
    predictions = knn_predict(train_features, train_labels, query_features, num_classes, k, temperature, batch_size)
    return 100.0 * float(np.mean(predictions == query_labels))


def _predict_block(queries, train, train_one_hot, k, temperature):
    """Predicted labels [B] for one block of normalised queries [B, D] against normalised train [N, D]."""
    similarities = tf.matmul(queries, train, transpose_b=True)  # [B, N]
    top_similarities, top_indices = tf.math.top_k(similarities, k=k)  # [B, k], sorted descending
    # Subtracting each query's best similarity rescales all its weights by one constant, which leaves the
    # argmax unchanged and keeps exp() finite for small temperatures (exp(1 / 0.01) overflows float32).
    weights = tf.exp((top_similarities - top_similarities[:, :1]) / temperature)  # [B, k]
    neighbour_classes = tf.gather(train_one_hot, top_indices)  # [B, k, C]
    votes = tf.einsum("bk,bkc->bc", weights, neighbour_classes)  # [B, C]
    return tf.argmax(votes, axis=1, output_type=tf.int32)


def knn_leave_one_out_top1(features: np.ndarray, labels: np.ndarray, num_classes: int, k: int = 200,
                           temperature: float = 0.07) -> float:
    """Top-1 (percent) of the weighted kNN vote where every example is a query against all the others.

    The score of a small labelled set without splitting it further (`sslzoo select`): example i is
    classified by `knn_predict` with the other N-1 examples as the bank, which is what this computes for
    all i at once (the similarity of i with itself is excluded, `k` is capped at N-1).

    Args:
        features: float [N, D], N >= 2.
        labels: int [N], in [0, num_classes).
    """
    labels = np.asarray(labels).astype(np.int64).reshape(-1)
    count = len(labels)
    if count < 2:
        raise ValueError(f"knn_leave_one_out_top1: needs at least 2 examples, got {count}")
    if temperature <= 0:
        raise ValueError(f"knn_leave_one_out_top1: temperature must be > 0, got {temperature}")
    features = np.asarray(features, np.float64)
    unit = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
    similarity = unit @ unit.T
    np.fill_diagonal(similarity, -np.inf)
    k = int(min(k, count - 1))
    nearest = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
    weights = np.exp(np.take_along_axis(similarity, nearest, axis=1) / temperature)
    votes = np.zeros((count, num_classes))
    np.add.at(votes, (np.repeat(np.arange(count), k), labels[nearest].reshape(-1)), weights.reshape(-1))
    return 100.0 * float(np.mean(votes.argmax(axis=1) == labels))
