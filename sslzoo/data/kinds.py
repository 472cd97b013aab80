"""Data kinds: what a config's `data.source` trains on, as the trainer sees it.

A data kind turns a config into `TrainingData`: the uint8 images the input pipeline feeds the method's
`augment` (clips arrive as frames tiled side by side), the labels the online probe may use, what
`method.prepare` fits on, and the kind's own payload for its evaluator. Kinds are registered in
`sslzoo.registry.DATA_KINDS` and chosen by `data.source`; each names the evaluator that scores its runs
(`sslzoo.registry.EVALUATORS`). The trainer knows nothing else about them.
"""

from __future__ import annotations

import abc
import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Optional, Tuple

import numpy as np

from sslzoo.data.sources import load_splits
from sslzoo.data.splits import DataSplits
from sslzoo.errors import ConfigError, DataError
from sslzoo.portable import portable_path
from sslzoo.registry import DATA_KINDS


@dataclass
class TrainingData:
    """What a data kind hands the trainer.

    Args:
        splits: `train` is what the pipeline feeds `augment` (uint8 [N, H, W, 3]); `val` serves the pretext
            metrics and pictures of image runs.
        num_classes: classes the online probe may predict (0: no labels to probe).
        prepare_images: uint8 images (or clips) `method.prepare` fits on.
        label: the dataset as metrics.json names it.
        unit: what one training example is ("images", "clips"), for the speed figure.
        payload: the kind's own data, for its evaluator.
        probe_splits: the labelled splits kNN, the linear probe and fine-tuning use: `eval.data_path` when
            set, else the training data when it has labels, else None (evaluation skipped).
    """

    splits: DataSplits
    num_classes: int
    prepare_images: np.ndarray
    label: str
    unit: str = "images"
    payload: Any = None
    probe_splits: Optional[DataSplits] = None


class DataKind(abc.ABC):
    """Base of a data kind: the sources it reads, how it loads, which evaluator scores it."""

    sources: Tuple[str, ...] = ()
    evaluator: str = ""

    @abc.abstractmethod
    def load(self, config) -> TrainingData:
        """The `TrainingData` of `config` (its data section, and `eval.data_path` where the kind uses it)."""

    def check_method(self, method, config) -> None:
        """Refuses a method that cannot train on this kind, before any data is read into it."""

    def paths(self, config) -> List[Tuple[str, str]]:
        """(config key, path) of every file or folder `load` reads, checked to exist before any work."""
        return []


class ImageKind(DataKind):
    """Labelled or unlabelled images: folder, TFDS or generated; scored by kNN and a linear probe."""

    sources = ("folder", "list", "tfrecord", "tfds", "synthetic")
    evaluator = "knn_linear"

    def paths(self, config) -> List[Tuple[str, str]]:
        paths = [("data.path", config.data.path)] if config.data.source in ("folder", "list", "tfrecord") else []
        return paths + ([("eval.data_path", config.eval.data_path)] if config.eval.data_path else [])

    def load(self, config) -> TrainingData:
        splits = load_splits(config.data)
        labelled = splits.train.labelled and bool(splits.class_names)
        probe = load_eval_splits(config) if config.eval.data_path else (splits if labelled else None)
        return TrainingData(splits, num_classes=len(splits.class_names) if labelled else 0,
                            prepare_images=prepare_subset(splits.train), label=dataset_label(config),
                            probe_splits=probe)


# What `method.prepare` fits on when the training images are streamed: a fixed, evenly spread subset
# (colour priors and clusters converge long before this many images).
PREPARE_IMAGES = 10_000


def prepare_subset(train) -> np.ndarray:
    """The training images `method.prepare` sees: all of an in-memory split, a spread subset of a streamed one."""
    if not train.streamed:
        return train.images
    count = min(len(train), PREPARE_IMAGES)
    return train.take(np.linspace(0, len(train) - 1, count).astype(np.int64))


def load_eval_splits(config) -> DataSplits:
    """`eval.data_path`, a labelled root/<class>/<image> folder, split into probe-train and probe-val
    (stratified, `data.split_seed`, `eval.val_fraction`), decoded in memory at `data.image_size`."""
    data = dataclasses.replace(config.data, source="folder", path=config.eval.data_path, labels="subfolders",
                               val_fraction=config.eval.val_fraction, max_examples=0, cache="memory",
                               holdout="validation")
    return load_splits(data)


def dataset_label(config) -> str:
    data = config.data
    if data.source == "tfds":
        return f"tfds:{data.name}"
    if data.source == "folder":
        return f"folder:{portable_path(data.path)}"  # never this machine's absolute path (metrics, cards)
    return "synthetic"


def check_paths(kind: DataKind, config) -> None:
    """Every path the kind will read exists: a typo fails in a second, not after other data was decoded."""
    for key, path in kind.paths(config):
        if "://" in path:
            continue  # a TensorFlow file system URL (gs://...): its reader checks it
        local = Path(os.path.expanduser(path))  # os.path's: Path's raises on an unknown ~user
        if not local.exists():
            where = "" if local.is_absolute() else f" (relative to {Path.cwd()})"
            raise DataError(f"{key} '{path}' does not exist{where}; fix it, e.g. --set {key}=<existing path>")


def kind_for_source(source: str) -> DataKind:
    """The registered data kind that reads `data.source`."""
    for name in DATA_KINDS.names():
        kind = DATA_KINDS.get(name)
        if source in kind.sources:
            return kind
    raise ConfigError(f"data.source '{source}' is read by no registered data kind")


DATA_KINDS.register("image")(ImageKind())
