"""PNG grids for the pictures every run leaves in its folder (pretext samples, predictions).

    save_image_grid(run_dir / "pretext.png", [("input", inputs), ("prediction", outputs)],
                    captions=[["", ""], ["ok", "wrong"]])

Rows are named image batches; cells are drawn with matplotlib's Agg backend (no display needed) and the
file is written atomically, so a crash never leaves a half-written PNG.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Tuple

import numpy as np

from sslzoo.files import atomic_write


def _displayable(image: np.ndarray) -> np.ndarray:
    """[H, W, C] float (any range) or uint8 -> float [H, W, 3] in [0, 1] for imshow."""
    image = np.asarray(image)
    if image.dtype == np.uint8:
        image = image.astype(np.float32) / 255.0
    image = image.astype(np.float32)
    if image.ndim == 2:
        image = image[..., None]
    if image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=-1)
    low, high = float(image.min()), float(image.max())
    if low < 0.0 or high > 1.0:  # e.g. normalised patches: stretch to the visible range
        image = (image - low) / max(high - low, 1e-6)
    return np.clip(image, 0.0, 1.0)


def save_image_grid(
    path: str | Path,
    rows: Sequence[Tuple[str, np.ndarray]],
    captions: Optional[Sequence[Sequence[str]]] = None,
    title: str = "",
    cell_inches: float = 1.1,
) -> str:
    """Writes a grid (one row per `(name, images [N, H, W, C])`) to `path`; returns the file name.

    Args:
        captions: per row, a caption per image (e.g. "true 3 / pred 5"), or None.
    """
    import matplotlib

    matplotlib.use("Agg")  # headless; a no-op when already selected
    import matplotlib.pyplot as plt

    path = Path(path)
    columns = max(len(images) for _, images in rows)
    figure, axes = plt.subplots(
        len(rows), columns, figsize=(cell_inches * columns + 1.2, cell_inches * len(rows) + 0.6), squeeze=False
    )
    for r, (name, images) in enumerate(rows):
        for c in range(columns):
            axis = axes[r][c]
            axis.set_xticks([])
            axis.set_yticks([])
            if c >= len(images):
                axis.axis("off")
                continue
            axis.imshow(_displayable(images[c]), interpolation="nearest")
            if captions is not None and captions[r] and c < len(captions[r]) and captions[r][c]:
                axis.set_xlabel(captions[r][c], fontsize=6)
        axes[r][0].set_ylabel(name, fontsize=7)
    if title:
        figure.suptitle(title, fontsize=8)
    figure.tight_layout()
    atomic_write(path, lambda tmp: figure.savefig(tmp, dpi=110, format="png"), suffix=".png")
    plt.close(figure)
    return path.name


def mosaic(tiles: Sequence[Optional[np.ndarray]], columns: int = 3, gap: int = 1) -> np.ndarray:
    """Lays `tiles` (each [t, t, C] in any range, or None for an empty cell) on a grid with white gaps.

    Each tile is stretched to the visible range on its own, as a normalised patch would be looked at.
    """
    size = next(np.asarray(t).shape[0] for t in tiles if t is not None)
    rows = -(-len(tiles) // columns)
    canvas = np.ones((rows * size + (rows - 1) * gap, columns * size + (columns - 1) * gap, 3), np.float32)
    for index, tile in enumerate(tiles):
        if tile is None:
            continue
        r, c = divmod(index, columns)
        top, left = r * (size + gap), c * (size + gap)
        canvas[top:top + size, left:left + size] = _displayable(tile)
    return canvas


def save_view_pairs(path: str | Path, data, count: int, scores: Sequence[float], score_name: str,
                    title: str) -> str:
    """The joint-embedding methods' picture: a row of source images, their view 1 and view 2 (from a
    batch of the method's `augment`), view 2 captioned with `score_name` and the pair's score."""
    rows = [("image", np.asarray(data["images"][:count])), ("view 1", np.asarray(data["view_1"][:count])),
            ("view 2", np.asarray(data["view_2"][:count]))]
    captions = [[""] * count, [""] * count, [f"{score_name} {s:.2f}" for s in scores]]
    return save_image_grid(path, rows, captions=captions, title=title)


def pair_cosines(a, b) -> np.ndarray:
    """[N] cosine of each row of `a` with the same row of `b` (float32)."""
    a = np.asarray(a, np.float32)
    b = np.asarray(b, np.float32)
    return np.sum(a * b, -1) / np.maximum(np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1), 1e-12)
