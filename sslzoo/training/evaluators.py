"""The image evaluator: what a finished image run is scored by, and what it leaves in its folder.

Registered as "knn_linear" (the image data kind's evaluator): weighted kNN and a linear probe on frozen
features for the trained encoder and the same encoder at its initial weights (optionally fine-tuning
too), the pretext task's own validation metrics, the method's pictures, and report.md. The features are
extracted once and reused by the report and, through the run folder, by the export's accuracy check.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

import numpy as np

from sslzoo.config import Config
from sslzoo.data import ImageSet, split_pipeline
from sslzoo.evaluation import finetune
from sslzoo.evaluation.context import Evaluation, RunContext, machine
from sslzoo.evaluation.protocol import FEATURES_FILE, evaluate_features, save_features, split_features
from sslzoo.files import atomic_write
from sslzoo.layers.builtin import with_builtin_layers
from sslzoo.registry import EVALUATORS
from sslzoo.evaluation.report import build_report
from sslzoo.training.build import initial_encoder

PARITY_SAMPLES = "parity_samples.npy"
FINETUNE_ENCODER = "finetune_encoder.keras"
FINETUNE_HEAD = "finetune_head.keras"


@EVALUATORS.register("knn_linear")
def evaluate_image_run(run: RunContext) -> Evaluation:
    """kNN + linear probe (+ fine-tuning) vs random init, pretext metrics, pictures and report.md.

    The probes run on `run.data.probe_splits` (the eval.data_path folder, or the labelled training data);
    without labelled data they are skipped and said so, and the rest is still measured and drawn."""
    config, splits, probe = run.config, run.data.splits, run.data.probe_splits
    if probe is not None:
        features = split_features(run.encoder, probe)
        metrics = probe_metrics(config, run.run_dir, run.encoder, probe, features=features,
                                initial_encoder=run.initial_encoder)
    else:
        features = None
        metrics = {"method": config.method.name, "encoder": config.encoder.name,
                   "evaluation": "skipped: no labelled data", "machine": machine()}
    metrics["data"] = data_summary(splits, probe)
    metrics["dataset"] = run.data.label
    metrics.update(run.training)
    metrics["pretext_val"] = pretext_metrics(run.method, splits, config)
    metrics["pictures"] = pictures(run.method, splits, config, run.run_dir)
    # The report draws the probe data when there is some (labelled map and retrieval), else the training data.
    drawn = probe if probe is not None else splits
    metrics["report"] = build_report(run.run_dir, metrics, run.encoder, drawn, features=features)
    if config.eval.keep_features and features is not None:
        save_features(run.run_dir / FEATURES_FILE, features, probe)
    return Evaluation(metrics, drawn)


def data_summary(splits, probe) -> Dict[str, Any]:
    """metrics.json's "data": the training data's counts and bad files, and the labelled probe data's."""
    summary = {
        "num_train": int(len(splits.train)),
        "num_val": int(len(splits.val)),
        "class_names": list(splits.class_names),
        "streamed": bool(splits.train.streamed),
        **splits.stats,
    }
    if probe is not None and probe is not splits:
        summary["probe"] = {"num_train": int(len(probe.train)), "num_val": int(len(probe.val)),
                            "class_names": list(probe.class_names), **probe.stats}
    return summary


def probe_metrics(config: Config, run_dir: Path, encoder, splits, features=None,
                  initial_encoder=None) -> Dict[str, Any]:
    """kNN and linear probe for the trained encoder and the same encoder at its initial weights."""
    evaluation = config.eval
    features = features or split_features(encoder, splits)
    trained, head = evaluate_features(features, splits, evaluation, seed=config.trainer.seed)
    metrics: Dict[str, Any] = {
        "method": config.method.name,
        "encoder": config.encoder.name,
        "knn_top1": trained["knn_top1"],
        "linear_top1": trained["linear_top1"],
    }
    if evaluation.finetune_epochs:
        metrics["finetune_top1"], tuned, tuned_head = _finetune(encoder, splits, config)
        atomic_write(run_dir / FINETUNE_ENCODER, lambda tmp: with_builtin_layers(tuned).save(tmp))
        atomic_write(run_dir / FINETUNE_HEAD, lambda tmp: tuned_head.save(tmp))
    if evaluation.random_init:
        initial = initial_encoder() if initial_encoder is not None else _initial_from_folder(config, run_dir, splits)
        baseline, _ = evaluate_features(split_features(initial, splits), splits, evaluation, seed=config.trainer.seed)
        metrics["random_init"] = {"knn_top1": baseline["knn_top1"], "linear_top1": baseline["linear_top1"]}
        if evaluation.finetune_epochs:
            metrics["random_init"]["finetune_top1"] = _finetune(initial, splits, config)[0]
    metrics["data"] = data_summary(splits, None)
    metrics["machine"] = machine()
    atomic_write(run_dir / "linear_head.keras", lambda tmp: head.save(tmp))
    return metrics


def _initial_from_folder(config: Config, run_dir: Path, splits):
    # Re-evaluating a finished run (train.py --eval-only): the initial weights are in the folder.
    return initial_encoder(config, run_dir, len(splits.class_names))


def pretext_metrics(method, splits, config) -> Dict[str, float]:
    """The pretext task's own metrics on the validation split (e.g. rotation accuracy)."""
    val = splits.val
    batch = min(config.trainer.batch_size, len(val.labels))
    dataset = split_pipeline(val, batch_size=batch, shuffle=False, seed=config.trainer.seed, augment=method.augment)
    results = method.evaluate(dataset, verbose=0, return_dict=True)
    return {name: round(float(np.mean(value)), 4) for name, value in results.items()}


def pictures(method, splits, config, run_dir: Path) -> list:
    """The method's pretext pictures on the first validation images (the same ones in every run)."""
    val = splits.val
    batch = min(16, len(val.labels))
    first = ImageSet(val.take(np.arange(batch)), val.labels[:batch])
    dataset = split_pipeline(first, batch_size=batch, shuffle=False, seed=config.trainer.seed, augment=method.augment)
    return list(method.save_pictures(next(iter(dataset)), run_dir))


def _finetune(encoder, splits, config: Config):
    top1, tuned, head = finetune(
        encoder, splits, label_fraction=config.eval.finetune_label_fraction,
        epochs=config.eval.finetune_epochs, learning_rate=config.eval.finetune_learning_rate,
        batch_size=config.trainer.batch_size, seed=config.trainer.seed,
    )
    return round(top1, 2), tuned, head
