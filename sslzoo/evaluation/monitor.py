"""kNN top-1 during training: a Keras callback that puts the current encoder's score into the epoch logs.

    monitor = KNNMonitor.from_splits(encoder, probe_splits, every=1, examples=1000, seed=0, k=200, temperature=0.07)
    callbacks = [monitor, CSVLogger(...), monitor.placeholder_remover(), TensorBoard(...)]

Every `every` epochs the encoder (inference mode, `extract_features`) embeds a fixed subset of the training
split (the kNN bank) and of the validation split (the queries), and the same weighted kNN as the final
evaluation (`knn_top1`) scores it. The subsets are drawn once with NumPy's own generator seeded by the run
seed, so the monitor consumes none of the TensorFlow/Keras randomness the training draws from: a run with the
monitor ends with the weights of the run without it.

It must sit before the callbacks that record the logs (Keras hands every callback the same logs dict, in
list order). On the other epochs it logs NaN placeholders: Keras' CSVLogger fixes its columns at the first
epoch end of each session, so a key missing then would never get a column (and a resumed session appends
rows under the old header). `placeholder_remover()`, placed after the CSVLogger and before TensorBoard,
takes the placeholders out again so that TensorBoard's curves have no NaN points.
"""

from __future__ import annotations

import math
import time
from typing import Optional

import keras
import numpy as np

from sslzoo.evaluation.features import extract_features, feature_function
from sslzoo.evaluation.knn import knn_top1

TOP1 = "knn_monitor_top1"
SECONDS = "knn_monitor_seconds"


def fixed_subset(count: int, size: int, seed: int) -> np.ndarray:
    """At most `size` of `count` indices, increasing; the same for the same seed, in every session."""
    if count <= size:
        return np.arange(count)
    return np.sort(np.random.default_rng(seed).choice(count, size=size, replace=False))


class KNNMonitor(keras.callbacks.Callback):
    """Logs `knn_monitor_top1` (percent) and `knn_monitor_seconds` every `every` epochs.

    Args:
        encoder: the encoder being trained (shared with the method, so it sees the current weights).
        bank_images, bank_labels: uint8 [N, S, S, 3] and int [N], the kNN's training features' images.
        query_images, query_labels: uint8 [M, S, S, 3] and int [M], what it classifies.
        num_classes: classes of the labels.
        every: epochs between two measurements (epoch numbers `every`, `2 * every`, ... counted from 1).
        k, temperature: the weighted kNN's (the run's `eval.knn_k`, `eval.knn_temperature`).
    """

    def __init__(self, encoder, bank_images, bank_labels, query_images, query_labels, num_classes: int,
                 every: int, k: int = 200, temperature: float = 0.07):
        super().__init__()
        if every < 1:
            raise ValueError(f"KNNMonitor: every must be >= 1, got {every}")
        self.encoder = encoder
        self.bank_images, self.bank_labels = bank_images, np.asarray(bank_labels)
        self.query_images, self.query_labels = query_images, np.asarray(query_labels)
        self.num_classes, self.every, self.k, self.temperature = num_classes, every, k, temperature
        # Traced once for the whole run (at the first measurement): a new trace per measurement made
        # TensorFlow warn about retracing on every epoch.
        self.forward = None

    @classmethod
    def from_splits(cls, encoder, splits, every: int, examples: int, seed: int, k: int = 200,
                    temperature: float = 0.07) -> "KNNMonitor":
        """A monitor on fixed subsets of `splits.train` (bank) and `splits.val` (queries), `examples` each
        at most; the pixels are taken (decoded, when streamed) once, here."""
        # Different streams for the two splits, so equal sizes do not pick the same positions in both.
        bank = fixed_subset(len(splits.train), examples, seed)
        queries = fixed_subset(len(splits.val), examples, seed + 1)
        return cls(encoder, splits.train.take(bank), splits.train.labels[bank], splits.val.take(queries),
                   splits.val.labels[queries], len(splits.class_names), every, k, temperature)

    def measure(self) -> float:
        """kNN top-1 (percent) of the encoder as it is now, on the monitor's subsets."""
        if self.forward is None:
            self.forward = feature_function(self.encoder, tuple(self.encoder.input_shape[1:]))
        bank = extract_features(self.encoder, self.bank_images, forward=self.forward)
        queries = extract_features(self.encoder, self.query_images, forward=self.forward)
        return knn_top1(bank, self.bank_labels, queries, self.query_labels, self.num_classes,
                        k=self.k, temperature=self.temperature)

    def on_epoch_end(self, epoch: int, logs: Optional[dict] = None) -> None:
        if logs is None:
            return
        if (epoch + 1) % self.every:
            logs[TOP1] = logs[SECONDS] = math.nan
            return
        start = time.perf_counter()
        top1 = self.measure()
        logs[TOP1] = round(top1, 4)
        logs[SECONDS] = round(time.perf_counter() - start, 4)

    @staticmethod
    def placeholder_remover() -> keras.callbacks.Callback:
        """A callback that drops the NaN placeholders of the epochs without a measurement."""
        return _DropPlaceholders()


class _DropPlaceholders(keras.callbacks.Callback):
    def on_epoch_end(self, epoch: int, logs: Optional[dict] = None) -> None:
        for key in (TOP1, SECONDS):
            if logs is not None and isinstance(logs.get(key), float) and math.isnan(logs[key]):
                del logs[key]
