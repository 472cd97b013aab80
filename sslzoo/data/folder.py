"""The `folder` source: root/<class>/<image files>, decoded in parallel, bad files skipped and counted."""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import List, Tuple

import numpy as np

from sslzoo.data.decode import decode_files
from sslzoo.data.sources import DataError, DataSplits, ImageSet, check_split_sizes, make_stats, split_indices

logger = logging.getLogger(__name__)

# Listing is by extension (so stray notes or metadata files are not "bad images"); decoding is by content,
# so a PNG named .jpg still loads.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".gif", ".webp")

_LAYOUT = "expected <root>/<class name>/<image files> (one subfolder per class, JPEG/PNG/BMP/GIF images)"


def _visible_entries(directory: Path) -> List[os.DirEntry]:
    with os.scandir(directory) as entries:
        return sorted((e for e in entries if not e.name.startswith(".")), key=lambda e: e.name)


def list_image_folder(root: str | Path) -> Tuple[List[str], np.ndarray, List[str]]:
    """Lists root/<class>/<image> in a fixed (sorted) order.

    Returns:
        paths: N file paths, class by class, sorted by name within a class.
        labels: int32 [N], index of the class in `class_names`.
        class_names: sorted subfolder names.
    """
    root = Path(root).expanduser()
    if not root.exists():
        raise DataError(f"image folder '{root}' does not exist; {_LAYOUT}")
    if not root.is_dir():
        raise DataError(f"'{root}' is not a folder; {_LAYOUT}")
    entries = _visible_entries(root)
    class_dirs = [e for e in entries if e.is_dir()]
    if not class_dirs:
        loose = sum(1 for e in entries if e.is_file() and e.name.lower().endswith(IMAGE_EXTENSIONS))
        found = f"it holds {loose} images directly but no class subfolders" if loose else "it is empty"
        if entries and not loose:
            found = f"it holds no class subfolders (only {len(entries)} other files)"
        raise DataError(f"image folder '{root}': {found}; {_LAYOUT}")

    paths: List[str] = []
    labels: List[int] = []
    empty: List[str] = []
    for label, class_dir in enumerate(class_dirs):
        files = [e.path for e in _visible_entries(Path(class_dir.path))
                 if e.is_file() and e.name.lower().endswith(IMAGE_EXTENSIONS)]
        if not files:
            empty.append(class_dir.name)
        paths.extend(files)
        labels.extend([label] * len(files))
    if not paths:
        raise DataError(f"image folder '{root}' has class subfolders ({', '.join(d.name for d in class_dirs[:5])}"
                        f"{', ...' if len(class_dirs) > 5 else ''}) but no image files in them "
                        f"(extensions {', '.join(IMAGE_EXTENSIONS)}); {_LAYOUT}")
    if empty:
        # A class without examples would have no place in a stratified split or a probe's evaluation.
        raise DataError(f"image folder '{root}': class subfolder(s) {', '.join(empty[:10])} hold no image files; "
                        f"add images or remove those folders; {_LAYOUT}")
    return paths, np.asarray(labels, np.int32), [d.name for d in class_dirs]


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


def load_folder(cfg) -> DataSplits:
    """Lists cfg.path, splits the file list (so small runs decode only what they use), then decodes.

    Args:
        cfg: DataConfig with source="folder".
    """
    paths, labels, class_names = list_image_folder(cfg.path)
    train_idx, val_idx = split_indices(labels, cfg)
    used = np.concatenate([train_idx, val_idx])
    images, ok = decode_files([paths[i] for i in used], cfg.image_size)
    bad_mask = np.ones(len(used), bool)
    bad_mask[ok] = False
    bad_paths = [paths[i] for i in used[bad_mask]]
    check_bad_fraction(bad_paths, len(used), cfg.max_bad_fraction, cfg.path)

    is_train = np.arange(len(used)) < len(train_idx)
    ok_train, ok_val = is_train[ok], ~is_train[ok]
    ok_labels = labels[used[ok]]
    check_split_sizes(int(ok_train.sum()), int(ok_val.sum()), cfg)
    return DataSplits(
        train=ImageSet(images[ok_train], ok_labels[ok_train]),
        val=ImageSet(images[ok_val], ok_labels[ok_val]),
        class_names=class_names,
        stats=make_stats("folder", len(used), bad_paths),
    )
