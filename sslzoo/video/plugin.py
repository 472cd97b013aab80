"""Video as a plug-in of the one trainer: the clip data kind and the tracking evaluator.

`ClipKind` (sources video_synthetic | video_folder | video_tfds) hands the trainer clips tiled side by
side into the pipeline's uint8 images (the video method's `augment` unpacks them). The "tracking"
evaluator propagates the first frame's instance masks through each evaluation clip with the learned
attention and scores J (mean IoU), next to baselines measured in the same run (the first mask copied
unchanged, propagation with raw-pixel similarity) and the same network at its initial weights. A kNN /
linear probe of the pooled features (frames labelled by their clip's class) is kept for the model card
and `export.py --head linear`. Nothing here imports the trainer; the trainer finds both by registry.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

import keras
import numpy as np
import tensorflow as tf

from sslzoo.config import Config, ConfigError
from sslzoo.data import DataSplits, ImageSet
from sslzoo.data.kinds import DataKind, TrainingData
from sslzoo.evaluation.context import Evaluation, RunContext, machine
from sslzoo.evaluation.protocol import evaluate_encoder
from sslzoo.files import atomic_write
from sslzoo.registry import DATA_KINDS, EVALUATORS
from sslzoo.video import davis, propagation
from sslzoo.video.davis import AnnotatedVideo
from sslzoo.video.generator import Clips
from sslzoo.video.pictures import save_video_strip
from sslzoo.video.embedding import embedding_function, feature_map_model
from sslzoo.video.sources import VideoData, load_video_data

log = logging.getLogger(__name__)

# Raw-pixel baselines get the best of these temperatures on the evaluation clips themselves (an oracle
# choice), so the learned embedding is compared with the strongest version of the baseline.
PIXEL_TEMPERATURES = (0.0003, 0.001, 0.003, 0.01, 0.03, 0.1)
STRIP_FRAMES = 8


def tile_clips(frames: np.ndarray) -> np.ndarray:
    """uint8 [N, T, S, S, 3] -> [N, S, T*S, 3]: frames side by side, the image layout `make_pipeline` takes
    (the method's `augment` unpacks them)."""
    count, steps, size = frames.shape[:3]
    return np.ascontiguousarray(np.transpose(frames, (0, 2, 1, 3, 4)).reshape(count, size, steps * size, 3))


class ClipKind(DataKind):
    """Clips of frames for video methods; scored by tracking (J)."""

    sources = ("video_synthetic", "video_folder", "video_tfds")
    evaluator = "tracking"

    def load(self, config: Config) -> TrainingData:
        data = load_video_data(config.data)
        # The pipeline's val split only feeds image-run stages, which the tracking evaluator replaces.
        splits = DataSplits(ImageSet(tile_clips(data.train.frames), data.train.labels),
                            ImageSet(tile_clips(data.train.frames[:1]), data.train.labels[:1]),
                            data.class_names, {})
        source = config.data.name if config.data.source == "video_tfds" else config.data.path or "built-in"
        # Clips carry no labels to probe online.
        return TrainingData(splits, num_classes=0, prepare_images=data.train.frames,
                            label=f"{config.data.source}:{source}", unit="clips", payload=data)

    def paths(self, config: Config) -> List[Tuple[str, str]]:
        data = config.data
        paths = [("data.path", data.path)] if data.path and data.source != "video_tfds" else []
        if data.annotations_path and data.source != "video_tfds":
            paths.append(("data.annotations_path", data.annotations_path))
        if data.track_frames_path and data.source != "video_tfds":
            paths.append(("data.track_frames_path", data.track_frames_path))
        return paths

    def check_method(self, method, config: Config) -> None:
        if not hasattr(method, "num_frames") or not hasattr(method, "embedder"):
            raise ConfigError(f"method '{config.method.name}' is not a video method (video sources need one, "
                              "e.g. video_colorization); use an image source (folder, tfds, synthetic) for it")
        if config.data.clip_length != method.num_frames:
            raise ConfigError(f"data.clip_length={config.data.clip_length} but the method uses "
                              f"{method.num_frames} frames per clip (method.options.num_references + 1); "
                              f"set data.clip_length={method.num_frames}")


DATA_KINDS.register("clip")(ClipKind())


@EVALUATORS.register("tracking")
def evaluate_video_run(run: RunContext) -> Evaluation:
    """Tracking J (learned, random init, baselines) on every evaluation set, the frame probe, pictures."""
    config, method, data = run.config, run.method, run.data.payload
    start = time.perf_counter()
    metrics: Dict[str, Any] = {"method": config.method.name, "encoder": config.encoder.name,
                               "dataset": run.data.label}
    initial = run.initial_encoder()
    metrics["tracking"] = {"generated": evaluate_tracking(method, initial, data.evaluation["generated"], config)}
    metrics["j_mean"] = metrics["tracking"]["generated"]["learned"]["j_mean"]
    if data.evaluation.get("annotated"):
        metrics["tracking"]["annotated"] = evaluate_annotated(method, initial, data.evaluation["annotated"],
                                                              config, run.run_dir)
        metrics["j_mean_annotated"] = metrics["tracking"]["annotated"]["learned"]["j_mean"]
    probe_splits = _probe_splits(data)
    metrics.update(_probe(run.encoder, initial, probe_splits, config, run.run_dir))
    metrics["eval_seconds"] = round(time.perf_counter() - start, 2)
    metrics.update({**run.training, "pretext_val": _pretext_val(method, data, config),
                    "pictures": _pictures(method, data, config, run.run_dir)})
    metrics["data"] = {"num_train_clips": len(data.train), "clip_length": config.data.clip_length,
                       "class_names": list(data.class_names), **data.stats}
    metrics["machine"] = machine()
    return Evaluation(metrics, probe_splits)


def embedding_features(method, embedder: keras.Model) -> propagation.FeatureFn:
    """frames uint8 [T, S, S, 3] -> the embedding [T, h, w, E] the method's attention compares."""
    return embedding_function(embedder, cosine=method.similarity == "cosine")


def _j_of(clips: Clips, track) -> Dict[str, Any]:
    per_clip = [propagation.clip_j(track(clips.frames[i], clips.masks[i]), clips.masks[i]) for i in range(len(clips))]
    summary = propagation.summarize(per_clip)
    summary["per_clip"] = [None if j is None else round(j * 100.0, 2) for j in per_clip]
    return summary


def evaluate_tracking(method, initial_encoder: keras.Model, clips: Clips, config: Config) -> Dict[str, Any]:
    """J of the learned embedding, of the same network at its initial weights, and of both baselines."""
    temperature = method.propagation_temperature
    references = method.num_references
    results: Dict[str, Any] = {"clips": len(clips), "frames": int(clips.frames.shape[1]),
                               "propagation_temperature": temperature, "references": references}
    initial_embedder = keras.Model(initial_encoder.input, initial_encoder.get_layer("feature_map").output)
    for name, embedder in (("learned", method.embedder), ("random_init", initial_embedder)):
        features = embedding_features(method, embedder)
        results[name] = _j_of(clips, lambda f, m, fn=features: propagation.track_clip(
            f, m, fn, temperature, references))
    results["copy_first_mask"] = _j_of(clips, lambda f, m: propagation.copy_first_mask(m))
    for name, colour in (("raw_pixels_rgb", True), ("raw_pixels_grey", False)):
        results[name] = _best_pixel_baseline(clips, method.grid, colour, references)
    return results


def evaluate_annotated(method, initial_encoder: keras.Model, videos: List[AnnotatedVideo], config: Config,
                       run_dir: Path) -> Dict[str, Any]:
    """The DAVIS semi-supervised protocol on real annotated videos, whole, J at the masks' resolution.

    Trackers, all on the same frames: the learned embedding, the same network at its initial weights, the
    learned embedding with 1 reference frame (the paper's ablation of the number of references), the first
    mask copied, and raw RGB / grey pixels on the learned embedding's grid at their best temperature. Writes
    tracking.md (J per video) and one strip per video (tracking_<video>.png).
    """
    temperature, references = method.propagation_temperature, method.num_references
    cosine = method.similarity == "cosine"
    learned = feature_map_model(method.encoder)
    initial = feature_map_model(initial_encoder)
    stride = config.data.image_size // method.grid

    def tracker(features, count, temperature=temperature, similarity=propagation.DOT):
        return lambda v: propagation.track_video(v.frames, v.masks[0], features, temperature, count, similarity)

    learned_features = last_frames_cache(embedding_function(learned, cosine))
    trackers = {"learned": tracker(learned_features, references),
                "random_init": tracker(embedding_function(initial, cosine), references)}
    if references != 1:
        trackers["learned_1_reference"] = tracker(learned_features, 1)
    trackers["copy_first_mask"] = lambda v: propagation.copy_first_mask(v.masks)
    grid = lambda frames: (frames.shape[1] // stride, frames.shape[2] // stride)  # noqa: E731
    pixels = {}
    for name, colour in (("raw_pixels_rgb", True), ("raw_pixels_grey", False)):
        features = last_frames_cache(propagation.pixel_features(grid, colour))
        pixels[name] = {t: f"{name}@{t}" for t in PIXEL_TEMPERATURES}
        trackers.update({key: tracker(features, references, t, propagation.NEG_SQUARED_DISTANCE)
                         for t, key in pixels[name].items()})
    table, kept = davis.evaluate_videos(videos, trackers, keep=("learned",))
    for name, keys in pixels.items():
        table[name] = best_temperature({t: table.pop(key) for t, key in keys.items()})
    names = [video.name for video in videos]
    frames = videos[0].frames.shape[1:3]
    header = (f"# Tracking J on {len(videos)} annotated videos (DAVIS semi-supervised protocol)\n\n"
              f"Frames at {frames[0]} px short side ({frames[0]}x{frames[1]} for {names[0]}), features at "
              f"1/{stride}; J (mean IoU, points) over frames 1..T-1 at the masks' own resolution. Learned: "
              f"{references} reference frame(s), temperature {temperature}. Raw pixels at their best temperature "
              f"(RGB {table['raw_pixels_rgb']['temperature']}, grey {table['raw_pixels_grey']['temperature']}), "
              "chosen on these videos.\n\n")
    atomic_write(run_dir / "tracking.md", lambda tmp: tmp.write_text(header + davis.markdown_table(table, names)))
    strips = [save_video_strip(run_dir / f"tracking_{video.name}.png", video, kept["learned"][video.name])
              for video in videos]
    return {"videos": len(videos), "frames": sum(len(v.frames) for v in videos), "frame_size": list(frames),
            "stride": stride, "propagation_temperature": temperature, "references": references, **table,
            "strips": strips}


def _best_pixel_baseline(clips: Clips, grid: int, colour: bool, references: int) -> Dict[str, Any]:
    features = propagation.pixel_features(grid, colour)
    return best_temperature({t: _j_of(clips, lambda f, m, t=t: propagation.track_clip(
        f, m, features, t, references, propagation.NEG_SQUARED_DISTANCE)) for t in PIXEL_TEMPERATURES})


def best_temperature(results: Dict[float, Dict[str, Any]]) -> Dict[str, Any]:
    """The result with the highest J among {temperature: result}, marked with its temperature (the first
    on ties)."""
    temperature = max(results, key=lambda t: (results[t]["j_mean"], -list(results).index(t)))
    return {**results[temperature], "temperature": temperature}


def last_frames_cache(features: propagation.FeatureFn) -> propagation.FeatureFn:
    """`features` remembering its last frames array: trackers taking turns on one video share one pass."""
    last: Dict[str, Any] = {}

    def cached(frames: np.ndarray) -> np.ndarray:
        if last.get("frames") is not frames:
            last.clear()
            last.update(frames=frames, value=features(frames))
        return last["value"]

    return cached


def _probe_splits(data: VideoData) -> DataSplits:
    """First frames of the training clips (train) and of the generated evaluation clips (val), labelled by
    their clip's class (the first object's shape for generated clips)."""
    evaluation = data.evaluation["generated"]
    return DataSplits(ImageSet(data.train.frames[:, 0], data.train.labels),
                      ImageSet(evaluation.frames[:, 0], evaluation.labels), data.class_names, {})


def _probe(encoder, initial, splits: DataSplits, config: Config, run_dir: Path) -> Dict[str, Any]:
    """kNN / linear probe of pooled features on frames, trained vs initial weights; writes linear_head.keras."""
    trained, head = evaluate_encoder(encoder, splits, config.eval, seed=config.trainer.seed)
    atomic_write(run_dir / "linear_head.keras", lambda tmp: head.save(tmp))
    metrics = {"knn_top1": trained["knn_top1"], "linear_top1": trained["linear_top1"]}
    if config.eval.random_init:
        baseline, _ = evaluate_encoder(initial, splits, config.eval, seed=config.trainer.seed)
        metrics["random_init"] = {"knn_top1": baseline["knn_top1"], "linear_top1": baseline["linear_top1"]}
    return metrics


def _pretext_val(method, data: VideoData, config: Config) -> Dict[str, float]:
    """The colorization loss and accuracy on the first 4 frames of the generated evaluation clips."""
    clips = data.evaluation["generated"].frames[:, : method.num_frames]
    if clips.shape[1] < method.num_frames:
        return {}
    images = tf.constant(tile_clips(clips), tf.float32) / 255.0
    batch = method.augment(images, tf.zeros([len(clips)], tf.int32), tf.constant([config.trainer.seed, 0]))
    _, logs = method.compute_loss_and_logs(batch, training=False)
    return {name: round(float(value), 4) for name, value in logs.items()}


def _pictures(method, data: VideoData, config: Config, run_dir: Path) -> List[str]:
    """colorization.png (what is copied) and tracking.png (one generated clip tracked over time)."""
    from sslzoo.video.pictures import save_tracking_strip

    clips = data.evaluation["generated"]
    names = []
    if clips.frames.shape[1] >= method.num_frames:
        count = min(8, len(clips))
        images = tf.constant(tile_clips(clips.frames[:count, : method.num_frames]), tf.float32) / 255.0
        batch = method.augment(images, tf.zeros([count], tf.int32), tf.constant([config.trainer.seed, 0]))
        names += method.save_pictures(batch, run_dir)
    frames, masks = clips.frames[0][:STRIP_FRAMES], clips.masks[0][:STRIP_FRAMES]
    features = embedding_features(method, method.embedder)
    predicted = propagation.track_clip(frames, masks, features, method.propagation_temperature, method.num_references)
    colourized = colourize_clip(method, frames, features)
    pixels = propagation.track_clip(frames, masks, propagation.pixel_features(method.grid, True), 0.01,
                                    method.num_references, propagation.NEG_SQUARED_DISTANCE)
    names.append(save_tracking_strip(
        run_dir / "tracking.png", frames, colourized, predicted, masks,
        baselines={"raw pixels": pixels, "copy first": propagation.copy_first_mask(masks)},
        title="frame 0's masks and colours propagated by the learned attention"))
    return names


def colourize_clip(method, frames: np.ndarray, features: propagation.FeatureFn) -> np.ndarray:
    """float RGB [T, S, S, 3]: frame 0's colour clusters propagated through the clip (what the pointer copies)."""
    from sslzoo.methods.video_colorization import colour_labels
    from sslzoo.video.pictures import colourize

    images = tf.constant(frames, tf.float32) / 255.0
    grid = method.grid
    first = colour_labels(images[:1], method.color_centers, grid).numpy().reshape(grid, grid)
    first = propagation.one_hot_masks(first, method.num_colors)
    soft = propagation.propagate(features(frames), first, method.propagation_temperature, method.num_references)
    ab = np.tensordot(soft, method.color_centers.numpy(), axes=[[-1], [0]])
    return colourize(images.numpy(), ab)


def read_metrics(run_dir: str | Path) -> Dict[str, Any]:
    return json.loads((Path(run_dir) / "metrics.json").read_text())
