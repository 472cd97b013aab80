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
