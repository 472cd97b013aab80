"""The zoo's evaluation protocol: frozen features -> weighted kNN and a linear probe, on one split.

Features are extracted once per encoder (`split_features`) and handed on: the run's report draws its
embedding map and retrieval grid from them, and the run folder keeps them (`save_features`) so that the
export's TFLite accuracy check compares against them instead of running the Keras encoder again.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import keras
import numpy as np

from sslzoo.evaluation.features import extract_features
from sslzoo.evaluation.knn import knn_top1
from sslzoo.evaluation.linear import linear_probe
from sslzoo.files import atomic_write

FEATURES_FILE = "features.npz"
# Images whose features are stored beside the split features: a reader recomputes these few with the
# encoder it holds and reuses the file only when they agree (same encoder, same preprocessing).
CHECK_IMAGES = 8
CHECK_TOLERANCE = 1e-4


@dataclass
class SplitFeatures:
    """float32 features [N, D] of a split's train and val images, in the split's order."""

    train: np.ndarray
    val: np.ndarray


def split_features(encoder: keras.Model, splits) -> SplitFeatures:
    """One inference pass of `encoder` over `splits.train` and `splits.val`."""
    return SplitFeatures(extract_features(encoder, splits.train), extract_features(encoder, splits.val))


def evaluate_features(features: SplitFeatures, splits, config, seed: int = 0) -> Tuple[Dict[str, Any], keras.Model]:
    """kNN top-1 and linear-probe top-1 (percent) on `splits.val`, trained on `splits.train`.

    Args:
        features: the encoder's `SplitFeatures` of `splits`.
        splits: `sslzoo.data.DataSplits`.
        config: `sslzoo.config.EvalConfig`.
        seed: the linear probe's initialisation and batch order.
    Returns:
        ({"knn_top1", "linear_top1"}, the linear head: raw features [N, D] -> class probabilities).
    """
    num_classes = len(splits.class_names)
    knn = knn_top1(
        features.train, splits.train.labels, features.val, splits.val.labels, num_classes,
        k=config.knn_k, temperature=config.knn_temperature,
    )
    linear, head = linear_probe(
        features.train, splits.train.labels, features.val, splits.val.labels, num_classes,
        epochs=config.linear_epochs, learning_rate=config.linear_learning_rate,
        weight_decay=config.linear_weight_decay, batch_size=config.linear_batch_size, seed=seed,
    )
    return {"knn_top1": round(float(knn), 2), "linear_top1": round(float(linear), 2)}, head


def evaluate_encoder(encoder: keras.Model, splits, config, seed: int = 0) -> Tuple[Dict[str, Any], keras.Model]:
    """`evaluate_features` of a fresh `split_features` pass (see there)."""
    return evaluate_features(split_features(encoder, splits), splits, config, seed=seed)


def save_features(path: str | Path, features: SplitFeatures, splits) -> Path:
    """Writes the features with the first val images' features as a fingerprint of the encoder."""
    check = features.val[:CHECK_IMAGES]

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as stream:
            np.savez(stream, train=features.train, val=features.val, check=check)

    return atomic_write(path, write)


def load_features(path: str | Path, encoder: keras.Model, splits) -> Optional[SplitFeatures]:
    """The stored features when they belong to this encoder and split; None otherwise (then extract)."""
    path = Path(path)
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as stored:
        train, val, check = stored["train"], stored["val"], stored["check"]
    if len(train) != len(splits.train) or len(val) != len(splits.val) or len(check) == 0:
        return None
    fresh = extract_features(encoder, splits.val.take(np.arange(len(check))))
    if fresh.shape != check.shape or float(np.max(np.abs(fresh - check))) > CHECK_TOLERANCE:
        return None
    return SplitFeatures(train, val)
