"""The files of an embedding folder and how to read them, without TensorFlow (searching needs none).

    DIR/embeddings.npy   float32 (or float16) [N, D], row i is the image on line i of paths.txt
    DIR/paths.txt        N paths relative to the image folder, one per line, UTF-8
    DIR/embed.json       model (name, path, sha256), preprocessing, count, dim, dtype, bad files, projector
    DIR/metadata.tsv, sprite.png, embedding.ckpt-1.*, checkpoint, projector_config.pbtxt   (projector.py)
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import List

from sslzoo.errors import DataError

EMBEDDINGS = "embeddings.npy"
PATHS = "paths.txt"
SUMMARY = "embed.json"
FORMAT_VERSION = 1


def partial_dir(output: Path) -> Path:
    """Where an unfinished run keeps its plan and chunks: a hidden sibling of the output."""
    return output.parent / f".{output.name}.partial"


def is_finished(output: Path) -> bool:
    return (output / SUMMARY).is_file()


def read_summary(folder: str | os.PathLike) -> dict:
    """embed.json of a finished embedding folder."""
    folder = Path(folder).expanduser()
    path = folder / SUMMARY
    if not path.is_file():
        partial = partial_dir(folder.absolute())
        hint = (f"; an interrupted run is in '{partial}': rerun its embed command to finish it"
                if partial.is_dir() else "; make one with: sslzoo embed MODEL IMAGES --output DIR")
        raise DataError(f"'{folder}' is not a finished embedding folder (no {SUMMARY}){hint}")
    return json.loads(path.read_text())


def read_paths(folder: str | os.PathLike) -> List[str]:
    """paths.txt as a list (names that are not UTF-8 come back as written, by surrogate escapes)."""
    text = (Path(folder).expanduser() / PATHS).read_text(encoding="utf-8", errors="surrogateescape")
    return text.split("\n")[:-1]
