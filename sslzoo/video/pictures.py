"""Pictures of video colorization: what the pointer copies (colours) and what it tracks (masks)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import tensorflow as tf

from sslzoo.color import lab_to_rgb, rgb_to_lab
from sslzoo.pictures import save_image_grid

# Instance colours for mask pictures: background black, then distinct hues.
PALETTE = np.array([[0, 0, 0], [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
                    [145, 30, 180], [70, 240, 240], [240, 50, 230]], np.uint8)


def paint_masks(masks: np.ndarray) -> np.ndarray:
    """uint8 [..., 3] colour pictures of instance masks [...] (ids beyond the palette wrap around)."""
    masks = np.asarray(masks).astype(np.int64)
    return PALETTE[np.where(masks == 0, 0, (masks - 1) % (len(PALETTE) - 1) + 1)]


def greyscale(frames: np.ndarray) -> np.ndarray:
    """float [N, S, S, 3] in [0, 1]: the L the network sees, as a grey picture."""
    lab = rgb_to_lab(tf.cast(frames, tf.float32) / (255.0 if np.asarray(frames).dtype == np.uint8 else 1.0))
    return np.repeat(lab[..., :1].numpy() / 100.0, 3, axis=-1)


def colourize(frames: np.ndarray, ab: np.ndarray) -> np.ndarray:
    """float RGB [N, S, S, 3]: the frames' own L with a predicted ab.

    Args:
        frames: float [N, S, S, 3] in [0, 1] (only their lightness is kept).
        ab: [N, h, w, 2] in Lab units (e.g. the expected ab of predicted colour-cluster distributions).
    """
    size = frames.shape[1]
    ab = tf.image.resize(np.asarray(ab, np.float32), [size, size], method="bilinear")
    lightness = rgb_to_lab(tf.cast(frames, tf.float32))[..., :1]
    return lab_to_rgb(tf.concat([lightness, ab], axis=-1)).numpy()


def save_colorization_picture(method, frames: tf.Tensor, path: Path, clips: int = 8) -> str:
    """One column per clip: its reference frames and target in grey, the true colours, the prediction."""
    steps = method.num_frames
    frames = np.asarray(frames)[: clips * steps]
    predicted, _, _ = method.predict_colours(tf.constant(frames), training=False)
    count = len(frames) // steps
    by_clip = frames.reshape(count, steps, *frames.shape[1:])
    grid = method.grid
    targets = by_clip[:, -1]
    colourized = colourize(targets, method.predicted_ab(predicted).numpy().reshape(count, grid, grid, 2))
    rows = [(f"reference {r + 1} (grey)", greyscale(by_clip[:, r])) for r in range(steps - 1)]
    rows += [("target (grey)", greyscale(targets)), ("target colour", targets), ("copied colour", colourized)]
    return save_image_grid(path, rows, title="video colorization: colours copied from the references")


def save_tracking_strip(path: Path, frames: np.ndarray, colourized: np.ndarray, predicted: np.ndarray,
                        truth: np.ndarray, baselines: Optional[dict] = None, title: str = "") -> str:
    """One clip over time: grey input, colours propagated from frame 0, propagated masks, ground truth.

    Args:
        frames: uint8 [T, S, S, 3]; colourized: float [T, S, S, 3]; predicted, truth: uint8 [T, S, S].
        baselines: optional {name: masks [T, S, S]} drawn as extra rows.
    """
    rows = [("grey input", greyscale(frames)), ("colour (true)", frames), ("colour (propagated)", colourized),
            ("masks (propagated)", paint_masks(predicted))]
    for name, masks in (baselines or {}).items():
        rows.append((f"masks ({name})", paint_masks(masks)))
    rows.append(("masks (truth)", paint_masks(truth)))
    captions = [[f"t={t}" for t in range(len(frames))]] + [[] for _ in rows[1:]]
    return save_image_grid(path, rows, captions=captions, title=title)


def overlay_masks(frames: np.ndarray, masks: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """uint8 [N, h, w, 3]: frames with their instance masks painted over (masks of any resolution are
    resized to the frames' by nearest neighbour)."""
    height, width = frames.shape[1:3]
    rows = (np.arange(height) + 0.5) * masks.shape[1] / height
    cols = (np.arange(width) + 0.5) * masks.shape[2] / width
    small = masks[:, rows.astype(int)][:, :, cols.astype(int)]
    painted = paint_masks(small).astype(np.float32)
    blend = np.where(small[..., None] > 0, (1 - alpha) * frames + alpha * painted, frames)
    return blend.astype(np.uint8)


def save_video_strip(path: Path, video, predicted: np.ndarray) -> str:
    """One annotated video over time: the propagated masks on the frames, and the ground truth beside them.

    Args:
        video: a `sslzoo.video.davis.AnnotatedVideo`.
        predicted: uint8 [n, H, W] the predicted masks at `davis.strip_indices(len(video.frames))`.
    """
    from sslzoo.video.davis import strip_indices, video_j

    indices = strip_indices(len(video.frames))
    frames = video.frames[indices]
    captions = [[f"t={t}" for t in indices], []]
    rows = [("propagated", overlay_masks(frames, predicted)), ("truth", overlay_masks(frames, video.masks[indices]))]
    score = 100.0 * video_j(predicted, video.masks[indices]) if len(indices) > 1 else float("nan")
    return save_image_grid(path, rows, captions=captions, cell_inches=1.6,
                           title=f"{video.name}: frame 0's mask propagated by the learned attention "
                                 f"(J on the frames shown {score:.1f})")
