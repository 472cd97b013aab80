"""Data sources behind one interface: `load_splits(DataConfig) -> DataSplits`, plus the shared split.

A source turns `cfg` into labelled uint8 RGB images; the split is the same for all of them: deterministic
and stratified, so a run, its resume and its evaluation always see the same train/val examples.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Dict, List, Tuple

import numpy as np

logger = logging.getLogger(__name__)


class DataError(ValueError):
    """The data cannot be used as configured: missing/empty folder, too many bad images, unknown dataset."""


class DatasetNotPreparedError(DataError):
    """A TFDS dataset is not downloaded and prepared in its data_dir (and we never download implicitly)."""


@dataclass
class ImageSet:
    """Labelled images held in memory.

    Args:
        images: uint8 [N, S, S, 3], RGB.
        labels: int32 [N], class indices into `DataSplits.class_names`.
    """

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class DataSplits:
    """The train and val splits of one dataset, their class names and loading statistics.

    Args:
        train, val: disjoint `ImageSet`s.
        class_names: names of the classes, indexed by label.
        stats: {"source", "files" (examples seen), "bad_images", "bad_fraction", "bad_examples" (<= 10 paths)}.
    """

    train: ImageSet
    val: ImageSet
    class_names: List[str]
    stats: Dict[str, Any] = field(default_factory=dict)


def make_stats(source: str, files: int, bad_paths: List[str] = ()) -> Dict[str, Any]:
    bad = len(bad_paths)
    return {
        "source": source,
        "files": int(files),
        "bad_images": bad,
        "bad_fraction": bad / files if files else 0.0,
        "bad_examples": [str(p) for p in list(bad_paths)[:10]],
    }


def _round_half_up(x: np.ndarray) -> np.ndarray:
    # Python's round() is banker's rounding (round(2.5) == 2); half-up is easier to predict.
    return np.floor(np.asarray(x, np.float64) + 0.5).astype(np.int64)


def _subset_sizes(counts: np.ndarray, total: int) -> np.ndarray:
    """Per-class sizes proportional to `counts` that sum to `total` (largest-remainder rounding)."""
    exact = counts * (total / counts.sum())
    sizes = np.floor(exact).astype(np.int64)
    order = np.argsort(-(exact - sizes), kind="stable")  # ties go to the lower class index
    sizes[order[: total - sizes.sum()]] += 1
    return np.minimum(sizes, counts)


def stratified_split(labels: np.ndarray, *, val_fraction: float, seed: int, max_examples: int = 0
                     ) -> Tuple[np.ndarray, np.ndarray]:
    """Deterministic stratified (optionally subsampled) train/val split.

    Within each class (examples in their given order) one permutation from `np.random.default_rng(seed)`
    decides everything: its first `k_c` entries are the subset kept (all of the class unless
    `max_examples` > 0), and of those the first round(val_fraction * k_c) go to val.

    Args:
        labels: int [N].
    Returns:
        train_indices, val_indices: sorted int64 index arrays into `labels`, disjoint.
    """
    labels = np.asarray(labels)
    classes = np.unique(labels)
    members = [np.flatnonzero(labels == c) for c in classes]
    counts = np.array([len(m) for m in members], np.int64)
    keep = counts if max_examples <= 0 or max_examples >= counts.sum() else _subset_sizes(counts, max_examples)
    rng = np.random.default_rng(seed)
    train, val = [], []
    for indices, k in zip(members, keep):
        chosen = indices[rng.permutation(len(indices))[:k]]
        n_val = int(_round_half_up(val_fraction * k))
        val.append(chosen[:n_val])
        train.append(chosen[n_val:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


def split_indices(labels: np.ndarray, cfg) -> Tuple[np.ndarray, np.ndarray]:
    """The (train, val) indices a run uses: `stratified_split` as configured by `cfg` (a DataConfig).

    With `cfg.holdout == "tuning"` the validation split is set aside unused, and a stratified
    `cfg.tuning_fraction` of the training split (its own fixed seed) becomes the run's "val": hyperparameter
    search then never sees the validation split it is finally reported on.
    """
    train_idx, val_idx = stratified_split(labels, val_fraction=cfg.val_fraction, seed=cfg.split_seed,
                                          max_examples=cfg.max_examples)
    if getattr(cfg, "holdout", "validation") != "tuning":
        return train_idx, val_idx
    keep, tune = tuning_carve(np.asarray(labels)[train_idx], cfg)
    return train_idx[keep], train_idx[tune]


def tuning_carve(train_labels: np.ndarray, cfg) -> Tuple[np.ndarray, np.ndarray]:
    """(kept, tuning) indices into the training split's labels, as `data.holdout=tuning` carves them."""
    # A seed different from the first split's, so the carve does not mirror its per-class order.
    return stratified_split(train_labels, val_fraction=cfg.tuning_fraction, seed=cfg.split_seed + 1)


def check_split_sizes(n_train: int, n_val: int, cfg) -> None:
    if n_train == 0 or n_val == 0:
        raise DataError(
            f"the split left {n_train} train and {n_val} val examples (data.val_fraction={cfg.val_fraction}, "
            f"data.max_examples={cfg.max_examples}); both need at least one: use more examples "
            f"(--set data.max_examples=...) or change data.val_fraction")


def split_arrays(images: np.ndarray, labels: np.ndarray, class_names: List[str], cfg,
                 stats: Dict[str, Any]) -> DataSplits:
    """Applies `stratified_split` (configured by `cfg`, a DataConfig) to in-memory images [N, S, S, 3]."""
    labels = np.asarray(labels, np.int32)
    train_idx, val_idx = split_indices(labels, cfg)
    check_split_sizes(len(train_idx), len(val_idx), cfg)
    return DataSplits(
        train=ImageSet(images[train_idx], labels[train_idx]),
        val=ImageSet(images[val_idx], labels[val_idx]),
        class_names=list(class_names),
        stats=stats,
    )


def load_splits(cfg) -> DataSplits:
    """Loads the source named by `cfg.source` and splits it.

    Args:
        cfg: `sslzoo.config.DataConfig`.
    Returns:
        `DataSplits` with uint8 [N, cfg.image_size, cfg.image_size, 3] images.
    """
    # Imported here so that e.g. the synthetic source never pays for importing tensorflow_datasets.
    if cfg.source == "folder":
        from sslzoo.data.folder import load_folder

        splits = load_folder(cfg)
    elif cfg.source == "tfds":
        from sslzoo.data.tfds_source import load_tfds

        splits = load_tfds(cfg)
    elif cfg.source == "synthetic":
        from sslzoo.data.synthetic import load_synthetic

        splits = load_synthetic(cfg)
    else:
        raise DataError(f"data.source '{cfg.source}' is not one of folder, tfds, synthetic")
    logger.info("data (%s): %d train, %d val, %d classes", cfg.source, len(splits.train), len(splits.val),
                len(splits.class_names))
    return splits
