"""The `folder` and `list` sources: your images, labelled by subfolder or not, bad files skipped and counted."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np

from sslzoo.data.headers import BadImageError, check_pixels, image_header
from sslzoo.data.listing import IMAGE_EXTENSIONS, list_images, read_list_file  # noqa: F401 (re-exported)
from sslzoo.data.splits import (  # noqa: F401  (check_bad_fraction: re-exported)
    DataSplits, ImageSet, check_bad_fraction, check_split_sizes, hold_in_memory, make_stats, split_indices,
)
from sslzoo.data.decode import scan_files
from sslzoo.data.stream import FileReader


def list_image_folder(root: str | Path) -> Tuple[List[str], np.ndarray, List[str]]:
    """Lists root/<class>/<image> in a fixed (sorted) order: `list_images(root, labels="subfolders")`.

    Returns:
        paths: N file paths, class by class, sorted by name within a class.
        labels: int32 [N], index of the class in `class_names`.
        class_names: sorted subfolder names.
    """
    listing = list_images(root, labels="subfolders")
    return listing.paths, listing.labels, listing.class_names


def load_folder(cfg) -> DataSplits:
    """The `folder` and `list` sources: list, split, check headers, decode once; stream or hold in memory.

    The split comes first, so a run on a subset decodes only what it uses. Every used file's header is
    checked before anything is decoded (zero-byte files, non-images and decompression bombs above
    `data.max_pixels` are bad without costing memory), then every remaining file is decoded once: the
    ones that fail are bad too. Bad files are skipped, named and counted, and the run stops when more
    than `data.max_bad_fraction` are bad. The validation split is held in memory; the training split
    too when `data.cache` says so (`auto`: while it fits in `data.memory_limit_mb`), else it is streamed
    from its files every epoch (`sslzoo.data.stream`), with identical batches.

    Args:
        cfg: DataConfig with source "folder" (`data.labels`: subfolders | none) or "list".
    """
    if cfg.source == "list":
        listing = read_list_file(cfg.path)
    else:
        listing = list_images(cfg.path, labels=getattr(cfg, "labels", "subfolders"))
    paths, labels = listing.paths, np.asarray(listing.labels, np.int32)
    train_idx, val_idx = split_indices(labels, cfg)
    used = np.concatenate([train_idx, val_idx])
    is_train = np.arange(len(used)) < len(train_idx)

    bad: Dict[int, str] = {}  # position in `used` -> reason
    max_pixels = getattr(cfg, "max_pixels", 0)
    for position, index in enumerate(used):
        try:
            check_pixels(paths[index], max_pixels) if max_pixels else image_header(paths[index])
        except BadImageError as error:
            bad[position] = error.reason
    candidates = np.array([p for p in range(len(used)) if p not in bad], np.int64)
    size = cfg.image_size
    in_memory = hold_in_memory(cfg, int(is_train[candidates].sum()))
    ok, images = scan_files([paths[used[p]] for p in candidates], size,
                            keep=lambda j: in_memory or not is_train[candidates[j]])
    decoded = candidates[ok]
    for position in sorted(set(candidates.tolist()) - set(decoded.tolist())):
        bad[position] = "could not be decoded (truncated or corrupt image data)"
    # Links that loop and files that could not be read are bad files too; hidden and non-image files
    # are passed over and only counted.
    unlisted_bad = listing.skipped.get("symlink_loop", []) + listing.skipped.get("unreadable", [])
    bad_paths = [paths[used[p]] for p in sorted(bad)] + list(unlisted_bad)
    check_bad_fraction(bad_paths, len(used) + len(unlisted_bad), cfg.max_bad_fraction, cfg.path)

    train_ok, val_ok = decoded[is_train[decoded]], decoded[~is_train[decoded]]
    check_split_sizes(len(train_ok), len(val_ok), cfg)
    # `images` holds the kept pixels in `decoded` order: every decoded file's when in memory, else only
    # the validation files'.
    if in_memory:
        train_images, val_images = images[is_train[decoded]], images[~is_train[decoded]]
    else:
        train_images, val_images = None, images
    stats = make_stats(cfg.source, len(used) + len(unlisted_bad), bad_paths)
    stats["bad_reasons"] = [f"{paths[used[p]]}: {bad[p]}" for p in sorted(bad)][:10] + \
        [f"{path}: a symlink loop or an unreadable file" for path in unlisted_bad][:10]
    stats["passed_over"] = {kind: count for kind, count in listing.skipped_counts().items()
                            if kind not in ("symlink_loop", "unreadable")}
    return DataSplits(
        train=ImageSet(train_images, labels[used[train_ok]], [paths[used[p]] for p in train_ok], size,
                       reader=None if in_memory else FileReader()),
        val=ImageSet(val_images, labels[used[val_ok]], [paths[used[p]] for p in val_ok], size),
        class_names=listing.class_names,
        stats=stats,
    )
