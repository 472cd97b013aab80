"""What every image source returns (`DataSplits` of `ImageSet`s) and the split they all share.

The split is the same for every source: deterministic and stratified, so a run, its resume and its
evaluation always see the same train/val examples.
"""

from __future__ import annotations

import logging
import math

from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np
from sslzoo.errors import DataError

logger = logging.getLogger(__name__)

@dataclass
class ImageSet:
    """Images of one split: held in memory, or streamed from their files.

    Args:
        images: uint8 [N, S, S, 3], RGB; None when the split is streamed (`data.cache`).
        labels: int32 [N], class indices into `DataSplits.class_names`; -1 for unlabelled images.
        paths: the N files, in the same order (None for sources that are not files).
        image_size: S, what a streamed example decodes to.
        reader: how a streamed split is read (`sslzoo.data.stream.FileReader` for files,
            `sslzoo.data.tfrecord_source.RecordReader` for prepared shards): its `take`, `batches` and
            `pipeline`; None in memory.
    """

    images: Optional[np.ndarray]
    labels: np.ndarray
    paths: Optional[List[str]] = None
    image_size: int = 0
    reader: Any = None

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def streamed(self) -> bool:
        return self.images is None

    @property
    def labelled(self) -> bool:
        return bool(len(self.labels)) and bool(np.all(np.asarray(self.labels) >= 0))

    def take(self, indices) -> np.ndarray:
        """uint8 [*indices.shape, S, S, 3] of the given examples (decoded now when streamed)."""
        indices = np.asarray(indices, np.int64)
        if not self.streamed:
            return self.images[indices]
        images = self.reader.take(self, indices.reshape(-1))
        return images.reshape(indices.shape + images.shape[1:])

    def batches(self, batch_size: int = 512) -> Iterator[np.ndarray]:
        """uint8 [<=B, S, S, 3] batches of the whole split, in order."""
        if not self.streamed:
            for start in range(0, len(self.images), batch_size):
                yield self.images[start:start + batch_size]
            return
        yield from self.reader.batches(self, batch_size)


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


def in_memory_subset(splits: "DataSplits", max_train: int) -> "DataSplits":
    """`splits` with an in-memory val and at most `max_train` evenly spread training images, decoded."""
    count = min(len(splits.train), max_train)
    chosen = np.linspace(0, len(splits.train) - 1, count).astype(np.int64) if count else np.zeros(0, np.int64)
    train = ImageSet(splits.train.take(chosen), np.asarray(splits.train.labels)[chosen])
    val = ImageSet(splits.val.take(np.arange(len(splits.val))), splits.val.labels)
    return DataSplits(train, val, splits.class_names, splits.stats)


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


def check_bad_fraction(bad_paths: List[str], total: int, max_bad_fraction: float, root) -> None:
    """Logs the bad files; raises DataError if more than `max_bad_fraction` of `total` are bad."""
    if not bad_paths:
        return
    fraction = len(bad_paths) / total
    examples = ", ".join(str(p) for p in bad_paths[:5])
    logger.warning("%d of %d images in '%s' (%.2f%%) could not be decoded and are skipped, e.g. %s",
                   len(bad_paths), total, root, 100 * fraction, examples)
    if fraction > max_bad_fraction:
        allowed = math.ceil(fraction * 100) / 100
        raise DataError(
            f"{len(bad_paths)} of {total} images in '{root}' ({100 * fraction:.2f}%) could not be decoded "
            f"(zero-byte, truncated or not an image), more than data.max_bad_fraction={max_bad_fraction} "
            f"allows; e.g. {examples}. Fix or remove the bad files, or accept skipping them with "
            f"--set data.max_bad_fraction={allowed:g}")


def hold_in_memory(cfg, train_images: int) -> bool:
    """`data.cache`: memory | none as said; auto holds the decoded training split while it fits."""
    cache = getattr(cfg, "cache", "memory")
    if cache != "auto":
        return cache == "memory"
    needed = train_images * cfg.image_size * cfg.image_size * 3
    return needed <= cfg.memory_limit_mb * 2 ** 20
