"""Video sources behind one interface: `load_video_data(DataConfig) -> VideoData`.

- `video_synthetic`: clips from the built-in generator (objects cut from the built-in synthetic images, or
  from the images of the folder `data.path`, e.g. ../shared/data/cifar10/train).
- `video_folder`: videos as frame folders, `<data.path>/<video>/<frame>.jpg` (frames in file-name order),
  resized with the aspect ratio kept and cut into square windows across the long side for training; with
  `data.annotations_path`, `<annotations>/<video>/<frame>.png` masks (the DAVIS layout, `sslzoo.video.davis`)
  make those videos a tracking benchmark, scored whole by the DAVIS protocol.
- `video_tfds`: a TFDS video dataset by name (`data.name`, e.g. "davis", "ucf101"), read only when it is
  prepared in `data.data_dir`; a video feature [T, H, W, 3] gives the frames, a [T, H, W, 1] one (e.g.
  DAVIS' segmentations) the masks, a class label the labels.

Every source also yields the generated tracking clips (`generated`), so every run is scored on clips with
exact ground truth, plus the real annotated videos when there are some (`annotated`, a list of
`AnnotatedVideo`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import tensorflow as tf

from sslzoo.data.decode import decode_files, resize_uint8, to_rgb, to_uint8
from sslzoo.errors import DataError, DatasetNotPreparedError
from sslzoo.data.synthetic import CLASS_NAMES
from sslzoo.data.tfds_source import not_prepared_message
from sslzoo.video.davis import (AnnotatedVideo, frame_files, read_annotated_videos, read_frame, video_names,
                               void_as_background)
from sslzoo.video.generator import Clips, generate_clips

logger = logging.getLogger(__name__)

POOL_IMAGES = 2000  # images cut into objects/backgrounds per pool (train and eval pools are disjoint)
_FOLDER_LAYOUT = "expected <root>/<video name>/<frame files> (one subfolder of JPEG/PNG frames per video)"


@dataclass
class VideoData:
    """Training clips and tracking-evaluation clips.

    Args:
        train: clips of data.clip_length frames (masks may be None).
        evaluation: {"generated": clips with masks, "annotated": [AnnotatedVideo] real videos (if any)}.
        class_names: names of `Clips.labels` (one name when the source has no labels).
        stats: {"source", ...} loading figures.
    """

    train: Clips
    evaluation: Dict[str, object]
    class_names: List[str]
    stats: Dict[str, object] = field(default_factory=dict)


def load_video_data(cfg) -> VideoData:
    """Loads the video source named by `cfg.source` (a `sslzoo.config.DataConfig`)."""
    generated = generate_clips(cfg.eval_clips, cfg.eval_clip_length or 12, cfg.image_size,
                               seed=2 * cfg.split_seed + 1, pool=_object_pool(cfg, part=1))
    if cfg.source == "video_synthetic":
        train = generate_clips(cfg.num_clips, cfg.clip_length, cfg.image_size, seed=2 * cfg.split_seed,
                               pool=_object_pool(cfg, part=0))
        evaluation = {"generated": generated}
        stats = {"source": "video_synthetic", "objects": cfg.path or "built-in shapes",
                 "train_clips": len(train), "eval_clips": len(generated)}
        if cfg.annotations_path:  # the transfer case: trained on generated clips, tracking real videos
            evaluation["annotated"] = _annotated(cfg, cfg.track_frames_path)
            stats["annotated_videos"] = [video.name for video in evaluation["annotated"]]
        return VideoData(train, evaluation, list(CLASS_NAMES), stats)
    if cfg.source == "video_folder":
        videos = read_frame_folders(cfg.path, cfg.image_size, cfg.frame_step)
        annotated = _annotated(cfg, cfg.track_frames_path or cfg.path) if cfg.annotations_path else None
        labels = np.zeros(len(videos), np.int32)
        class_names = ["video"]
    elif cfg.source == "video_tfds":
        videos, annotated, labels, class_names = read_tfds_videos(cfg)
    else:
        raise DataError(f"data.source '{cfg.source}' is not a video source (video_synthetic, video_folder, "
                        "video_tfds)")
    train = cut_clips(videos, labels, cfg.clip_length, cfg.num_clips, cfg.split_seed)
    evaluation = {"generated": generated}
    if annotated is not None and len(annotated):
        evaluation["annotated"] = annotated
    stats = {"source": cfg.source, "videos": len(videos), "train_clips": len(train),
             "eval_clips": {name: len(clips) for name, clips in evaluation.items()}}
    if annotated:
        stats["annotated_videos"] = [video.name for video in annotated]
    return VideoData(train, evaluation, class_names, stats)


def _annotated(cfg, frames_root: str) -> List[AnnotatedVideo]:
    if not frames_root:
        raise DataError("data.annotations_path needs the annotated videos' frames: set data.track_frames_path "
                        "(e.g. <DAVIS>/JPEGImages/480p)")
    # Every frame, whatever data.frame_step thins training to: the protocol scores every frame.
    return read_annotated_videos(frames_root, cfg.annotations_path, cfg.track_size or cfg.image_size,
                                 max_videos=cfg.eval_clips)


def _object_pool(cfg, part: int) -> Optional[np.ndarray]:
    """uint8 images to cut objects from: None (built-in shapes) unless the synthetic source names an image
    folder; part 0 (training) and part 1 (evaluation) are disjoint halves of a seeded selection."""
    if cfg.source != "video_synthetic" or not cfg.path:
        return None
    from sslzoo.data.folder import list_image_folder

    paths, _, _ = list_image_folder(cfg.path)
    order = np.random.default_rng([cfg.split_seed, 0x9001]).permutation(len(paths))
    half = min(POOL_IMAGES, len(paths) // 2)
    chosen = order[part * half:(part + 1) * half]
    images, _ = decode_files([paths[i] for i in chosen], cfg.image_size)
    if len(images) < 8:
        raise DataError(f"data.path '{cfg.path}' gave {len(images)} decodable images for the clip generator; "
                        "it needs at least 16 images (8 per pool)")
    return images


def read_frame_folders(root: str, size: int, frame_step: int = 1) -> Dict[str, np.ndarray]:
    """{video name: uint8 [T, h, w, 3]} from `<root>/<video>/<frame>` (every `frame_step`-th frame), short
    side `size` with the aspect ratio kept."""
    root_path = Path(root).expanduser()
    if not root_path.is_dir():
        raise DataError(f"video folder '{root}' does not exist or is not a folder; {_FOLDER_LAYOUT}")
    videos: Dict[str, np.ndarray] = {}
    for name in video_names(root_path):
        frames = frame_files(root_path / name)[::frame_step]
        if len(frames) < 2:
            continue
        video = [read_frame(f, size) for f in frames]
        if len({frame.shape for frame in video}) > 1:
            raise DataError(f"video '{name}' in '{root}': its frames differ in size; one video's frames must "
                            "share one size")
        videos[name] = np.stack(video)
    if not videos:
        raise DataError(f"video folder '{root}' holds no video with at least 2 frames; {_FOLDER_LAYOUT}")
    return videos


def _resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """Nearest-neighbour resize with the aspect kept and a centre crop, like `resize_uint8` for frames."""
    height, width = mask.shape
    scale = size / min(height, width)
    new_h, new_w = max(size, int(round(height * scale))), max(size, int(round(width * scale)))
    rows = np.minimum((np.arange(new_h) + 0.5) / scale, height - 1).astype(int)
    cols = np.minimum((np.arange(new_w) + 0.5) / scale, width - 1).astype(int)
    resized = mask[rows][:, cols]
    top, left = (new_h - size) // 2, (new_w - size) // 2
    resized = resized[top:top + size, left:left + size]
    return void_as_background(resized)


def square_windows(height: int, width: int) -> List[tuple]:
    """(top, left) of the square windows of side min(h, w) that cover a frame: ceil(long / short) of them,
    evenly spaced from one end of the long side to the other."""
    side, long = min(height, width), max(height, width)
    count = -(-long // side)
    offsets = [0] if count == 1 else [round(i * (long - side) / (count - 1)) for i in range(count)]
    return [(o, 0) if height > width else (0, o) for o in offsets]


def cut_clips(videos: Dict[str, np.ndarray], labels: np.ndarray, clip_length: int, max_clips: int, seed: int
              ) -> Clips:
    """Non-overlapping clips of `clip_length` consecutive frames from every video, in every square window
    across the frames' long side (`square_windows`); a seeded subset of at most `max_clips` (0 = all)."""
    frames, clip_labels, names = [], [], []
    for (name, video), label in zip(sorted(videos.items()), labels):
        height, width = video.shape[1:3]
        side = min(height, width)
        windows = square_windows(height, width)
        for start in range(0, len(video) - clip_length + 1, clip_length):
            for top, left in windows:
                frames.append(video[start:start + clip_length, top:top + side, left:left + side])
                clip_labels.append(label)
                names.append(f"{name}@{start}" + (f"+{top + left}" if len(windows) > 1 else ""))
    if not frames:
        raise DataError(f"no video has {clip_length} frames (data.clip_length) after data.frame_step")
    chosen = np.arange(len(frames))
    if 0 < max_clips < len(frames):
        chosen = np.sort(np.random.default_rng([seed, 0xC11]).choice(len(frames), max_clips, replace=False))
    return Clips(np.stack([frames[i] for i in chosen]), None, np.asarray(clip_labels, np.int32)[chosen],
                 [names[i] for i in chosen])


def _flatten(example, prefix: str = "") -> Dict[str, np.ndarray]:
    out = {}
    for key, value in example.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}/"))
        else:
            out[f"{prefix}{key}"] = value
    return out


def read_tfds_videos(cfg):
    """(videos, annotated clips or None, labels, class names) of a prepared TFDS video dataset.

    Never downloads: an unprepared dataset fails at once with the command that prepares it.
    """
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(cfg.name, data_dir=cfg.data_dir or None)
    except tfds.core.registered.DatasetNotFoundError as error:
        raise DataError(f"TFDS has no dataset named '{cfg.name}' (data.name); video datasets include 'davis', "
                        "'ucf101', 'kinetics400'") from error
    if not builder.is_prepared():
        raise DatasetNotPreparedError(not_prepared_message(
            cfg.name, str(builder.data_dir_root), kind="video dataset",
            instead="--set data.source=video_folder data.path=<root>/<video>/<frame>.jpg, or "
                    "data.source=video_synthetic (built-in clips)",
        ))
    label_names = ["video"]
    for key, feature in builder.info.features.items():
        if isinstance(feature, tfds.features.ClassLabel):
            label_names = list(feature.names)
    videos, masks, labels, names = {}, [], [], []
    dataset = builder.as_dataset(split=cfg.split, shuffle_files=False)
    for index, example in enumerate(dataset.as_numpy_iterator()):
        values = _flatten(example)
        frames = [v for v in values.values() if getattr(v, "ndim", 0) == 4 and v.shape[-1] == 3]
        if not frames:
            raise DataError(f"TFDS dataset '{cfg.name}' has no video feature [T, H, W, 3]")
        video = frames[0][:: cfg.frame_step]
        name = f"{cfg.name}_{index:05d}"
        videos[name] = np.stack([resize_uint8(to_rgb(to_uint8(tf.constant(f))), cfg.image_size).numpy()
                                 for f in video])
        segmentation = [v for v in values.values() if getattr(v, "ndim", 0) == 4 and v.shape[-1] == 1]
        if segmentation and len(masks) < cfg.eval_clips:
            # Whole videos, as the DAVIS protocol scores them.
            masks.append((name, np.stack([_resize_mask(m[..., 0], cfg.image_size)
                                          for m in segmentation[0][:: cfg.frame_step]])))
        label = [v for k, v in values.items() if k.endswith("label") and np.ndim(v) == 0]
        labels.append(int(label[0]) if label else 0)
        names.append(name)
    if not videos:
        raise DataError(f"TFDS dataset '{cfg.name}' split '{cfg.split}' is empty")
    annotated = [AnnotatedVideo(n, videos[n][: len(m)], m) for n, m in masks] or None
    return videos, annotated, np.asarray(labels, np.int32), label_names
