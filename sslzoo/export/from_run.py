"""From a run folder to an export: what export.py does."""

from __future__ import annotations

import json
import logging
import shlex
from pathlib import Path
from typing import Mapping, Sequence

import keras
import numpy as np
import yaml

from sslzoo import extras
from sslzoo.export import export_encoder

log = logging.getLogger(__name__)

HEADS = ("none", "linear", "finetune")
# A streamed labelled split is checked on at most this many of its training images.
EVAL_TRAIN_IMAGES = 10_000
REPRESENTATIVE_IMAGES = 300  # int8 calibration: the issue asks for 200-500 training images


def export_run(run_dir: str | Path, output_dir: str | Path, force: bool = False, head: str = "none",
               tflite: Sequence[str] = ("float32",), int8_io: bool = False,
               allow_accuracy_drop: bool = False, evaluate: bool = True, onnx: bool = False,
               card_extra: Mapping | None = None) -> Path:
    """Exports the trained encoder of `run_dir` to `output_dir` with a model card built from the run.

    Args:
        run_dir: folder written by `train.py` (config.yaml, metrics.json, encoder.keras, linear_head.keras).
        output_dir: e.g. exported/<name>; must not exist unless `force`.
        force: replace an existing export (still atomically).
        head: "none"; "linear" attaches the run's linear probe head; "finetune" exports the run's
            fine-tuned encoder with its head (train with eval.finetune_epochs > 0).
        tflite: TFLite variants (float32, float16, dynamic, int8).
        int8_io: int8 input/output tensors for the int8 variant.
        allow_accuracy_drop: export even when a TFLite variant loses more than 2 points of top-1.
        evaluate: measure kNN / linear top-1 of every TFLite variant on the run's validation split
            (needs the run's data; int8 needs it anyway for calibration).
        onnx: also export `encoder.onnx` (parity checked in onnxruntime).
        card_extra: more plain-data fields for the model card (e.g. the benchmark's numbers); they may
            not replace the fields built from the run.
    """
    run_dir, output_dir = Path(run_dir), Path(output_dir)
    if onnx:
        extras.require("onnx", "--format onnx")  # before any work, not after the SavedModel and TFLite
    if head not in HEADS:
        raise ValueError(f"--head {head!r}: use one of {', '.join(HEADS)}")
    files = ["config.yaml", "metrics.json", "encoder.keras"]
    if head != "none" or (run_dir / "linear_head.keras").exists():
        files.append("linear_head.keras")  # an unlabelled run has none: it exports its encoder alone
    if head == "finetune":
        files += ["finetune_encoder.keras", "finetune_head.keras"]
    missing = [name for name in files if not (run_dir / name).exists()]
    if missing:
        hint = (" (fine-tuning is off by default: train with --set eval.finetune_epochs=10)"
                if head == "finetune" else "")
        raise FileNotFoundError(
            f"run folder '{run_dir}' lacks {', '.join(missing)}{hint}; train it to the end first "
            f"(python train.py --config <config> --output {run_dir})"
        )
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    prefix = "finetune_" if head == "finetune" else ""
    encoder = keras.saving.load_model(run_dir / f"{prefix}encoder.keras", safe_mode=True)
    head_file = run_dir / ("finetune_head.keras" if head == "finetune" else "linear_head.keras")
    classifier = keras.saving.load_model(head_file, safe_mode=True) if head_file.exists() else None

    samples = None
    if (run_dir / "parity_samples.npy").exists():
        samples = np.load(run_dir / "parity_samples.npy", allow_pickle=False).astype("float32") / 255.0
    data = _load_run_data(config, needed="int8" in tflite, wanted=evaluate)
    representative, eval_data = None, None
    if data is not None:
        representative = _representative(data.splits.train, config["trainer"]["seed"])
        if evaluate and classifier is not None and data.probe_splits is not None:
            eval_data = _eval_data(encoder, classifier, data.probe_splits, config, run_dir)

    card = {
        "name": output_dir.name,
        "method": metrics.get("method"),
        "encoder": metrics.get("encoder"),
        "dataset": metrics.get("dataset"),
        "knn_top1": metrics.get("knn_top1"),
        "linear_top1": metrics.get("linear_top1"),
        "metrics": metrics,
        "config": config,
        "reproduce": reproduce_command(run_dir, output_dir),
    }
    clashes = sorted(set(card_extra or {}) & set(card))
    if clashes:
        raise ValueError(f"card_extra sets fields built from the run: {', '.join(clashes)}")
    card.update(card_extra or {})
    return export_encoder(
        encoder,
        output_dir,
        image_size=int(config["data"]["image_size"]),
        card=card,
        sample_images=samples,
        force=force,
        head=None if head == "none" else classifier,
        class_names=None if head == "none" else list(metrics["data"]["class_names"]),
        head_kind="finetune" if head == "finetune" else "linear_probe",
        tflite_variants=tuple(tflite),
        representative_images=representative,
        int8_io=int8_io,
        eval_data=eval_data,
        allow_accuracy_drop=allow_accuracy_drop,
        onnx=onnx,
    )


def _load_run_data(config: dict, needed: bool, wanted: bool):
    """The run's data as it trained on it (`TrainingData`: the training split for int8 calibration, the
    labelled probe split for the accuracy check), or None when it is not needed."""
    if not (needed or wanted):
        return None
    from sslzoo import config as config_lib
    from sslzoo.data import DataError
    from sslzoo.data.kinds import ImageKind

    run_config = config_lib.from_dict(config)
    try:
        if run_config.data.source not in ImageKind.sources:
            raise DataError(f"data.source={run_config.data.source} holds no single images to calibrate or score on")
        return ImageKind().load(run_config)
    except DataError as error:
        if needed:
            raise DataError(f"the int8 TFLite variant calibrates on the run's training images: {error}") from error
        log.warning("TFLite variants are exported without validation top-1: %s", error)
        return None


def _representative(train, seed: int) -> np.ndarray:
    count = min(REPRESENTATIVE_IMAGES, len(train))
    chosen = np.sort(np.random.default_rng(seed).permutation(len(train))[:count])
    return train.take(chosen)


def _eval_data(encoder, classifier, splits, config: dict, run_dir: Path):
    """Validation-split figures of the Keras model, the reference every TFLite variant is held to.

    The features come from the run's own evaluation (features.npz) when they belong to this encoder;
    otherwise (a fine-tuned encoder, an older run) they are extracted here."""
    from sslzoo.evaluation import knn_top1, top1_percent
    from sslzoo.data.splits import in_memory_subset
    from sslzoo.evaluation.protocol import FEATURES_FILE, load_features, split_features
    from sslzoo.export.tflite_quality import EvalData

    evaluation = config["eval"]
    num_classes = len(splits.class_names)
    if splits.train.streamed:
        # The TFLite variants are scored on arrays: a streamed split is checked on a spread subset of it.
        splits = in_memory_subset(splits, EVAL_TRAIN_IMAGES)
        features = split_features(encoder, splits)
    else:
        features = load_features(run_dir / FEATURES_FILE, encoder, splits) or split_features(encoder, splits)
    train_features, val_features = features.train, features.val
    return EvalData(
        train_images=splits.train.images, train_labels=splits.train.labels,
        val_images=splits.val.images, val_labels=splits.val.labels, num_classes=num_classes,
        keras_knn_top1=knn_top1(train_features, splits.train.labels, val_features, splits.val.labels,
                                num_classes, k=evaluation["knn_k"], temperature=evaluation["knn_temperature"]),
        keras_linear_top1=top1_percent(classifier, val_features, splits.val.labels),
        linear_head=classifier, knn_k=evaluation["knn_k"], knn_temperature=evaluation["knn_temperature"],
    )


def reproduce_command(run_dir: Path, output_dir: Path) -> str:
    """The commands that rebuild this export from the run's resolved config."""
    config = shlex.quote(str(run_dir / "config.yaml"))
    return (
        f"python train.py --config {config} --output {shlex.quote(str(run_dir))} && "
        f"python export.py --run {shlex.quote(str(run_dir))} --output {shlex.quote(str(output_dir))}"
    )
