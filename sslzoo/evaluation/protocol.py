"""The zoo's evaluation protocol: frozen features -> weighted kNN and a linear probe, on one split."""

from __future__ import annotations

from typing import Any, Dict, Tuple

import keras

from sslzoo.evaluation.features import extract_features
from sslzoo.evaluation.knn import knn_top1
from sslzoo.evaluation.linear import linear_probe


def evaluate_encoder(encoder: keras.Model, splits, config, seed: int = 0) -> Tuple[Dict[str, Any], keras.Model]:
    """kNN top-1 and linear-probe top-1 (percent) of `encoder` on `splits.val`, trained on `splits.train`.

    Args:
        encoder: images float32 [N, S, S, 3] in [0, 1] -> features [N, D].
        splits: `sslzoo.data.DataSplits`.
        config: `sslzoo.config.EvalConfig`.
        seed: the linear probe's initialisation and batch order.
    Returns:
        ({"knn_top1", "linear_top1"}, the linear head: raw features [N, D] -> class probabilities).
    """
    num_classes = len(splits.class_names)
    train_features = extract_features(encoder, splits.train.images)
    val_features = extract_features(encoder, splits.val.images)
    knn = knn_top1(
        train_features, splits.train.labels, val_features, splits.val.labels, num_classes,
        k=config.knn_k, temperature=config.knn_temperature,
    )
    linear, head = linear_probe(
        train_features, splits.train.labels, val_features, splits.val.labels, num_classes,
        epochs=config.linear_epochs, learning_rate=config.linear_learning_rate,
        weight_decay=config.linear_weight_decay, batch_size=config.linear_batch_size, seed=seed,
    )
    return {"knn_top1": round(float(knn), 2), "linear_top1": round(float(linear), 2)}, head
