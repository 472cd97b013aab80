"""Real annotated videos (the DAVIS layout) and the DAVIS semi-supervised tracking protocol.

    <frames root>/<video>/<frame>.jpg        e.g. DAVIS/JPEGImages/480p
    <annotations root>/<video>/<frame>.png   e.g. DAVIS/Annotations/480p

    videos = read_annotated_videos(frames_root, annotations_root, size=128)
    table = evaluate_videos(videos, {"learned": tracker, "copy first mask": copy})   # J per video, and mean

Frames are resized to a short side of `size` with the aspect ratio kept (the long side rounded to a multiple
of 8 so feature cells tile the frame). Masks stay at their own resolution, and J is computed there: the
propagated soft masks are upsampled to it, as the DAVIS benchmark scores 480p masks whatever the tracker's
internal resolution.

Mask files: DAVIS-2016 PNGs are greyscale with 0 background and 255 object; DAVIS-2017 PNGs are palette
images whose index is the object id, 255 marking void pixels (scored as background here).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Sequence

import numpy as np
from PIL import Image

from sslzoo.errors import DataError

FRAME_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
MULTIPLE = 8  # the long side is rounded to a multiple of this (the encoders' strides divide it)


@dataclass
class AnnotatedVideo:
    """One video of the tracking benchmark.

    Args:
        name: the video's folder name.
        frames: uint8 [T, h, w, 3], short side `size`, aspect kept.
        masks: uint8 [T, H, W] object ids (0 background) at the annotation's own resolution.
    """

    name: str
    frames: np.ndarray
    masks: np.ndarray

    @property
    def num_objects(self) -> int:
        return int(self.masks[0].max())


def frame_files(folder: str | Path, extensions=FRAME_EXTENSIONS) -> List[str]:
    """The frame files of one video folder, in file-name order (hidden files skipped)."""
    with os.scandir(folder) as entries:
        return sorted(e.path for e in entries
                      if e.is_file() and not e.name.startswith(".") and e.name.lower().endswith(extensions))


def video_names(root: str | Path) -> List[str]:
    with os.scandir(root) as entries:
        return sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))


def kept_aspect_size(height: int, width: int, size: int, multiple: int = MULTIPLE) -> tuple:
    """(h, w) with the short side `size` and the long side the nearest multiple of `multiple` to the
    aspect-kept length (at least `size`)."""
    scale = size / min(height, width)

    def side(length: int) -> int:
        if length == min(height, width):
            return size
        return max(size, int(round(length * scale / multiple)) * multiple)

    return side(height), side(width)


def read_frame(path: str, size: int, multiple: int = MULTIPLE) -> np.ndarray:
    """uint8 [h, w, 3] of one frame, short side `size`, aspect kept (antialiased bilinear)."""
    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
            height, width = kept_aspect_size(image.height, image.width, size, multiple)
            return np.asarray(image.resize((width, height), Image.BILINEAR), np.uint8)
    except (OSError, ValueError) as error:
        raise DataError(f"frame '{path}' could not be decoded ({error}); a video with a missing frame would "
                        "jump in time, so fix or remove that video") from error


VOID = 255  # DAVIS-2017 marks object borders void; the protocol here scores them as background


def void_as_background(ids: np.ndarray) -> np.ndarray:
    """uint8 object ids with VOID pixels set to background (0)."""
    return np.where(ids == VOID, 0, ids).astype(np.uint8)


def read_mask(path: str) -> np.ndarray:
    """uint8 [H, W] object ids of one annotation PNG (0 background).

    Palette PNGs (DAVIS-2017) hold the ids as indices, 255 = void; greyscale PNGs whose only values are 0
    and 255 are DAVIS-2016's binary masks (255 = the object); other greyscale PNGs hold ids directly.
    """
    try:
        with Image.open(path) as image:
            if image.mode == "P":
                return void_as_background(np.asarray(image))
            values = np.asarray(image.convert("L"))
    except (OSError, ValueError) as error:
        raise DataError(f"mask '{path}' could not be decoded ({error})") from error
    if np.isin(values, (0, 255)).all():
        return (values == 255).astype(np.uint8)
    return void_as_background(values)


def read_annotated_videos(frames_root: str | Path, annotations_root: str | Path, size: int,
                          frame_step: int = 1, max_videos: int = 0, multiple: int = MULTIPLE
                          ) -> List[AnnotatedVideo]:
    """Every video with both frames and masks, in name order (at most `max_videos`, 0 = all).

    Every kept frame needs its mask: DAVIS annotates every frame, and the protocol scores every frame.
    """
    frames_root, annotations_root = Path(frames_root).expanduser(), Path(annotations_root).expanduser()
    for label, root in (("frames", frames_root), ("annotations", annotations_root)):
        if not root.is_dir():
            raise DataError(f"{label} folder '{root}' does not exist; expected <root>/<video>/<frame files> "
                            "(the DAVIS layout: JPEGImages/480p and Annotations/480p)")
    names = [n for n in video_names(annotations_root) if (frames_root / n).is_dir()]
    if max_videos:
        names = names[:max_videos]
    videos = []
    for name in names:
        frames = frame_files(frames_root / name)[::frame_step]
        masks = frame_files(annotations_root / name, (".png",))[::frame_step]
        if len(frames) != len(masks):
            raise DataError(f"video '{name}': {len(frames)} frames in {frames_root / name} but {len(masks)} masks "
                            f"in {annotations_root / name}; every frame needs its mask")
        if len(frames) < 2:
            continue
        mask_stack = np.stack([read_mask(m) for m in masks])
        if mask_stack[0].max() == 0:
            raise DataError(f"video '{name}': the first mask ({masks[0]}) marks no object, so there is nothing "
                            "to track; remove the video or fix its first mask")
        videos.append(AnnotatedVideo(name, np.stack([read_frame(f, size, multiple) for f in frames]), mask_stack))
    if not videos:
        raise DataError(f"no video has both frames under '{frames_root}' and masks under '{annotations_root}' "
                        "(matching <video> folder names, at least 2 frames)")
    return videos


Tracker = Callable[[AnnotatedVideo], np.ndarray]  # a video -> predicted masks uint8 [T, H, W]


def video_j(predicted: np.ndarray, truth: np.ndarray) -> float:
    """J of one video: the IoU of each object averaged over frames 1..T-1 (frame 0 is given), then over
    objects; an object absent in both prediction and truth counts as 1 (the DAVIS convention)."""
    from sslzoo.video.propagation import jaccard

    return float(jaccard(predicted[1:], truth[1:], int(truth[0].max())).mean(axis=1).mean())


def strip_indices(length: int, count: int = 6) -> List[int]:
    """`count` frame indices evenly spaced from the first frame to the last (the frames a strip shows)."""
    return sorted({int(round(i)) for i in np.linspace(0, length - 1, min(count, length))})


def evaluate_videos(videos: Sequence[AnnotatedVideo], trackers: Dict[str, Tracker], keep: Sequence[str] = ()
                    ) -> tuple:
    """Scores every tracker on every video.

    Returns:
        ({tracker: {"j_mean": mean over videos (points), "per_video": {name: J (points)}}},
         {tracker in `keep`: {video name: its predicted masks at `strip_indices`}}).
    """
    per_video, kept = {name: {} for name in trackers}, {name: {} for name in keep}
    # Video by video, so trackers sharing a feature function can share one pass over a video's frames.
    for video in videos:
        for name, track in trackers.items():
            predicted = track(video)
            per_video[name][video.name] = round(100.0 * video_j(predicted, video.masks), 2)
            if name in kept:
                kept[name][video.name] = predicted[strip_indices(len(predicted))]
    table = {name: {"j_mean": round(float(np.mean(list(scores.values()))), 2), "per_video": scores}
             for name, scores in per_video.items()}
    return table, kept


def markdown_table(table: Dict[str, Dict], names: Sequence[str]) -> str:
    """Rows: videos then the mean; columns: trackers (J in points)."""
    trackers = list(table)
    lines = ["| video | " + " | ".join(trackers) + " |", "|---" * (len(trackers) + 1) + "|"]
    for name in names:
        lines.append(f"| {name} | " + " | ".join(f"{table[t]['per_video'][name]:.1f}" for t in trackers) + " |")
    lines.append("| **mean** | " + " | ".join(f"**{table[t]['j_mean']:.1f}**" for t in trackers) + " |")
    return "\n".join(lines) + "\n"
