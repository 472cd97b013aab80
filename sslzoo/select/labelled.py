"""The small labelled set `sslzoo select` scores with, split once into a tuning part and a held-back part.

The split is of file paths (stratified, seeded), made before any image is decoded. The search decodes only
the tuning part; the held-back part is decoded by `held_back()`, which the search calls once, after the
winner is chosen, for the final report. Every decode goes through `decode_paths`, so a test can watch
which files are read and when.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Tuple

import numpy as np

from sslzoo.data.decode import decode_files
from sslzoo.data.listing import list_images
from sslzoo.data.splits import stratified_split
from sslzoo.errors import DataError

MIN_PER_CLASS = 2  # a tuning part needs two examples of a class for leave-one-out kNN to see it at all


def decode_paths(paths: List[str], image_size: int) -> Tuple[np.ndarray, np.ndarray]:
    """uint8 [M, S, S, 3] images of the files that decode, and their sorted indices into `paths`."""
    return decode_files(paths, image_size)


@dataclass
class LabelledSet:
    """A labelled root/<class>/<image> folder, split into tuning and held-back file lists.

    Args:
        root: the folder.
        image_size: the side images are decoded at (the unlabelled data's).
        held_back_fraction: stratified share of every class kept for the final report.
        seed: the split's seed.
    """

    root: str
    image_size: int
    held_back_fraction: float = 0.5
    seed: int = 0

    def __post_init__(self):
        if not 0.0 < self.held_back_fraction < 1.0:
            raise DataError(f"--held-back {self.held_back_fraction}: must lie strictly between 0 and 1")
        listing = list_images(self.root, labels="subfolders")
        self.class_names = list(listing.class_names)
        if len(self.class_names) < 2:
            raise DataError(f"--eval-data '{self.root}' has {len(self.class_names)} class folder(s); scoring "
                            "needs at least 2: root/<class>/<image>, e.g. 10-50 images per class")
        labels = np.asarray(listing.labels)
        tuning, held = stratified_split(labels, val_fraction=self.held_back_fraction, seed=self.seed)
        paths = np.asarray(listing.paths)
        self.tuning_paths, self.tuning_labels = list(paths[tuning]), labels[tuning]
        self.held_back_paths, self.held_back_labels = list(paths[held]), labels[held]
        counts = np.bincount(self.tuning_labels, minlength=len(self.class_names))
        sparse = [self.class_names[c] for c in np.flatnonzero(counts < MIN_PER_CLASS)]
        if sparse or not len(self.held_back_paths):
            raise DataError(
                f"--eval-data '{self.root}': too few labelled images to split into tuning and held-back parts "
                f"(classes with fewer than {MIN_PER_CLASS} tuning images: {', '.join(sparse) or 'none'}); "
                "give every class at least 5 images (10-50 is typical)")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def tuning(self) -> Tuple[np.ndarray, np.ndarray]:
        """The tuning part, decoded: (uint8 images, labels); files that fail to decode are left out."""
        return self._decode(self.tuning_paths, self.tuning_labels, "tuning")

    def held_back(self) -> Tuple[np.ndarray, np.ndarray]:
        """The held-back part, decoded: read only for the final report."""
        return self._decode(self.held_back_paths, self.held_back_labels, "held-back")

    def _decode(self, paths: List[str], labels: np.ndarray, part: str) -> Tuple[np.ndarray, np.ndarray]:
        images, ok = decode_paths(paths, self.image_size)
        if len(ok) < 2:
            raise DataError(f"--eval-data '{self.root}': only {len(ok)} of the {len(paths)} {part} images decode; "
                            "fix or replace the files")
        return images, labels[ok]

    def describe(self) -> dict:
        return {"root": str(Path(self.root)), "classes": self.num_classes,
                "tuning_images": len(self.tuning_paths), "held_back_images": len(self.held_back_paths),
                "held_back_fraction": self.held_back_fraction, "seed": self.seed}
