"""Video sources behind one interface: `load_video_data(DataConfig) -> VideoData`.

- `video_synthetic`: clips from the built-in generator (objects cut from the built-in synthetic images, or
  from the images of the folder `data.path`, e.g. ../shared/data/cifar10/train).
- `video_folder`: videos as frame folders, `<data.path>/<video>/<frame>.jpg` (frames in file-name order);
  with `data.annotations_path`, `<annotations>/<video>/<frame>.png` instance masks (the DAVIS layout:
  palette PNGs whose index is the object id) make those videos a tracking benchmark.
- `video_tfds`: a TFDS video dataset by name (`data.name`, e.g. "davis", "ucf101"), read only when it is
  prepared in `data.data_dir`; a video feature [T, H, W, 3] gives the frames, a [T, H, W, 1] one (e.g.
  DAVIS' segmentations) the masks, a class label the labels.

Every source also yields the generated tracking clips (`generated`), so every run is scored on clips with
exact ground truth, plus the real annotated videos when there are some (`annotated`).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import tensorflow as tf

from sslzoo.data.decode import decode_files, resize_uint8, to_rgb, to_uint8
from sslzoo.errors import DataError, DatasetNotPreparedError
from sslzoo.data.synthetic import CLASS_NAMES
from sslzoo.data.tfds_source import not_prepared_message
from sslzoo.video.generator import Clips, generate_clips

logger = logging.getLogger(__name__)

FRAME_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
POOL_IMAGES = 2000  # images cut into objects/backgrounds per pool (train and eval pools are disjoint)
_FOLDER_LAYOUT = "expected <root>/<video name>/<frame files> (one subfolder of JPEG/PNG frames per video)"


@dataclass
class VideoData:
    """Training clips and tracking-evaluation clips.

    Args:
        train: clips of data.clip_length frames (masks may be None).
        evaluation: {"generated": clips with masks, "annotated": real annotated videos (if any)}.
        class_names: names of `Clips.labels` (one name when the source has no labels).
        stats: {"source", ...} loading figures.
    """

    train: Clips
    evaluation: Dict[str, Clips]
    class_names: List[str]
    stats: Dict[str, object] = field(default_factory=dict)


def load_video_data(cfg) -> VideoData:
    """Loads the video source named by `cfg.source` (a `sslzoo.config.DataConfig`)."""
    generated = generate_clips(cfg.eval_clips, cfg.eval_clip_length or 12, cfg.image_size,
                               seed=2 * cfg.split_seed + 1, pool=_object_pool(cfg, part=1))
    if cfg.source == "video_synthetic":
        train = generate_clips(cfg.num_clips, cfg.clip_length, cfg.image_size, seed=2 * cfg.split_seed,
                               pool=_object_pool(cfg, part=0))
        return VideoData(train, {"generated": generated}, list(CLASS_NAMES),
                         {"source": "video_synthetic", "objects": cfg.path or "built-in shapes",
                          "train_clips": len(train), "eval_clips": len(generated)})
    if cfg.source == "video_folder":
        videos = read_frame_folders(cfg.path, cfg.image_size, cfg.frame_step)
        annotated = read_annotations(cfg, videos) if cfg.annotations_path else None
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
    return VideoData(train, evaluation, class_names, stats)


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


def _sorted_entries(directory: Path) -> List[os.DirEntry]:
    with os.scandir(directory) as entries:
        return sorted((e for e in entries if not e.name.startswith(".")), key=lambda e: e.name)


def read_frame_folders(root: str, size: int, frame_step: int = 1) -> Dict[str, np.ndarray]:
    """{video name: uint8 [T, S, S, 3]} from `<root>/<video>/<frame>` (every `frame_step`-th frame)."""
    root_path = Path(root).expanduser()
    if not root_path.is_dir():
        raise DataError(f"video folder '{root}' does not exist or is not a folder; {_FOLDER_LAYOUT}")
    videos: Dict[str, np.ndarray] = {}
    for entry in _sorted_entries(root_path):
        if not entry.is_dir():
            continue
        frames = [e.path for e in _sorted_entries(Path(entry.path))
                  if e.is_file() and e.name.lower().endswith(FRAME_EXTENSIONS)][::frame_step]
        if len(frames) < 2:
            continue
        images, ok = decode_files(frames, size)
        if len(ok) < len(frames):
            raise DataError(f"video '{entry.name}' in '{root}': {len(frames) - len(ok)} frame(s) could not be "
                            "decoded; a video with a missing frame would jump in time, so fix or remove them")
        videos[entry.name] = images
    if not videos:
        raise DataError(f"video folder '{root}' holds no video with at least 2 frames; {_FOLDER_LAYOUT}")
    return videos


def _decode_mask(path: str, size: int) -> np.ndarray:
    """uint8 [S, S] object ids of a palette PNG (DAVIS: index 0 background, 1..K objects, 255 void)."""
    mask = tf.io.decode_png(tf.io.read_file(path), channels=1)  # palette PNGs decode to their indices
    return _resize_mask(mask.numpy()[..., 0], size)


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
    return np.where(resized == 255, 0, resized).astype(np.uint8)  # DAVIS' void border counts as background


def read_annotations(cfg, videos: Dict[str, np.ndarray]) -> Clips:
    """The annotated videos as tracking clips: `<annotations_path>/<video>/<frame>.png` per frame."""
    root = Path(cfg.annotations_path).expanduser()
    if not root.is_dir():
        raise DataError(f"data.annotations_path '{root}' does not exist; expected <root>/<video>/<frame>.png "
                        "instance masks (the DAVIS Annotations layout)")
    frames, masks, names = [], [], []
    for name in sorted(videos)[: cfg.eval_clips]:
        folder = root / name
        if not folder.is_dir():
            continue
        files = [e.path for e in _sorted_entries(folder) if e.name.lower().endswith(".png")][:: cfg.frame_step]
        if len(files) != len(videos[name]):
            raise DataError(f"video '{name}': {len(videos[name])} frames but {len(files)} masks in {folder}; "
                            "every kept frame needs its mask")
        length = cfg.eval_clip_length or len(files)
        frames.append(videos[name][:length])
        masks.append(np.stack([_decode_mask(f, cfg.image_size) for f in files[:length]]))
        names.append(name)
    return _as_clips(frames, masks, names)


def _as_clips(frames: List[np.ndarray], masks: List[np.ndarray], names: List[str]) -> Clips:
    """Clips of equal length: the shortest video's length (annotated videos differ in length)."""
    if not frames:
        return Clips(np.zeros([0, 2, 1, 1, 3], np.uint8), np.zeros([0, 2, 1, 1], np.uint8), np.zeros([0], np.int32), [])
    length = min(len(f) for f in frames)
    return Clips(np.stack([f[:length] for f in frames]), np.stack([m[:length] for m in masks]),
                 np.zeros(len(frames), np.int32), names)


def cut_clips(videos: Dict[str, np.ndarray], labels: np.ndarray, clip_length: int, max_clips: int, seed: int
              ) -> Clips:
    """Non-overlapping clips of `clip_length` consecutive frames from every video; a seeded subset of at
    most `max_clips` (0 = all)."""
    frames, clip_labels, names = [], [], []
    for (name, video), label in zip(sorted(videos.items()), labels):
        for start in range(0, len(video) - clip_length + 1, clip_length):
            frames.append(video[start:start + clip_length])
            clip_labels.append(label)
            names.append(f"{name}@{start}")
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
            length = cfg.eval_clip_length or len(video)
            masks.append((name, np.stack([_resize_mask(m[..., 0], cfg.image_size)
                                          for m in segmentation[0][:: cfg.frame_step][:length]])))
        label = [v for k, v in values.items() if k.endswith("label") and np.ndim(v) == 0]
        labels.append(int(label[0]) if label else 0)
        names.append(name)
    if not videos:
        raise DataError(f"TFDS dataset '{cfg.name}' split '{cfg.split}' is empty")
    annotated = None
    if masks:
        annotated = _as_clips([videos[n][: len(m)] for n, m in masks], [m for _, m in masks], [n for n, _ in masks])
    return videos, annotated, np.asarray(labels, np.int32), label_names
