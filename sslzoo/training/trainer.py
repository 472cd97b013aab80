"""One training path for every method: data -> method.fit -> evaluation -> run folder.

`train_run(config, run_dir)` is what `train.py` calls. Rerunning it on the same run folder resumes from
the last finished epoch (the folder's config must match), so `kill -9` costs at most one epoch.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional

import keras
import numpy as np
import tensorflow as tf
import yaml

from sslzoo import __version__
from sslzoo.backbones import build_encoder, encoder_options
from sslzoo.config import Config, ConfigError
from sslzoo.config import from_dict as config_from_dict
from sslzoo.data import load_splits, make_pipeline
from sslzoo.evaluation import finetune
from sslzoo.evaluation.protocol import evaluate_encoder
from sslzoo.layers.batch_norm import with_builtin_batch_norm
from sslzoo.methods import build_method
from sslzoo.optimizers import build_optimizer
from sslzoo.registry import ENCODERS, METHODS
from sslzoo.report import build_report
from sslzoo.training.checkpoints import EpochCheckpoint, RunState, atomic_write, atomic_write_text
from sslzoo.training.strategy import make_strategy

log = logging.getLogger(__name__)

INIT_WEIGHTS = "init.weights.h5"
PARITY_SAMPLES = "parity_samples.npy"
FINETUNE_ENCODER = "finetune_encoder.keras"
FINETUNE_HEAD = "finetune_head.keras"


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or infinite; the run folder keeps the last good checkpoint."""


def dataset_label(config: Config) -> str:
    data = config.data
    if data.source == "tfds":
        return f"tfds:{data.name}"
    if data.source == "folder":
        return f"folder:{data.path}"
    return "synthetic"


def build_models(config: Config, num_classes: int):
    """The evaluated encoder (with its untrained weights) and the method around it.

    The evaluated encoder is `method.encoder`: usually the configured encoder itself, but a method may
    wrap it (e.g. RGB -> Lab inside the model) or build it from several encoders via `make_encoder`.
    """

    def make_encoder(**overrides) -> keras.Model:
        options = {**config.encoder.options, **overrides}
        return build_encoder(config.encoder.name, config.data.image_size, **options)

    method = build_method(
        config.method.name,
        config.method.options,
        make_encoder(),
        num_classes=num_classes if config.method.online_probe else 0,
        make_encoder=make_encoder,
    )
    return method.encoder, method


def _check_run_folder(config: Config, run_dir: Path) -> None:
    saved = run_dir / "config.yaml"
    if saved.exists():
        # Through from_dict, so a folder written before a new config field existed (with its default)
        # still counts as the same run.
        previous = config_from_dict(yaml.safe_load(saved.read_text())).to_dict()
        if previous != config.to_dict():
            raise ConfigError(
                f"run folder '{run_dir}' holds a run with a different config; resuming it with this one "
                "would mix two runs. Use another --output, or delete the folder to start over."
            )


def check_names(config: Config) -> None:
    """Unknown method or encoder names fail before any data is read, listing the registered ones."""
    for kind, registry, name in (("method.name", METHODS, config.method.name),
                                 ("encoder.name", ENCODERS, config.encoder.name)):
        if name not in registry:
            raise ConfigError(f"{kind} '{name}' is not registered; available: {', '.join(registry.names())}")
    allowed = encoder_options(config.encoder.name)
    unknown = sorted(set(config.encoder.options) - set(allowed))
    if unknown:
        raise ConfigError(
            f"encoder.options {', '.join(unknown)} not accepted by '{config.encoder.name}'; "
            f"allowed: {', '.join(sorted(allowed))}"
        )


def train_run(config: Config, run_dir: str | Path, verbose: int | str = "auto") -> Dict[str, Any]:
    """Pretrains, evaluates and writes the run folder; returns the metrics written to metrics.json."""
    run_dir = Path(run_dir)
    check_names(config)
    _check_run_folder(config, run_dir)
    # The strategy first: a mirrored run on CPUs must split the CPU before TensorFlow initialises.
    strategy = make_strategy(config.trainer.strategy, config.trainer.cpu_replicas)
    keras.utils.set_random_seed(config.trainer.seed)
    previous_policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(config.trainer.mixed_precision)
    try:
        if config.data.source.startswith("video_"):  # clips in, tracking evaluation out
            from sslzoo.video.run import train_video

            return train_video(config, run_dir, strategy, verbose)
        return _train(config, run_dir, strategy, verbose)
    finally:
        # The policy is process-global; a run must not change what later code in the process builds.
        keras.mixed_precision.set_global_policy(previous_policy)


def _train(config: Config, run_dir: Path, strategy, verbose) -> Dict[str, Any]:
    splits = load_splits(config.data)
    num_classes = len(splits.class_names)
    batch_size = config.trainer.batch_size
    batches_per_epoch = len(splits.train.labels) // batch_size
    if batches_per_epoch < 1:
        raise ConfigError(
            f"trainer.batch_size={batch_size} is larger than the training split "
            f"({len(splits.train.labels)} images); lower it or use more data"
        )
    steps = min(config.trainer.steps_per_epoch or batches_per_epoch, batches_per_epoch)
    epochs = config.trainer.epochs

    encoder, method, state, first_epoch = start_training(
        config, run_dir, strategy, steps, splits.train.images, num_classes
    )
    if first_epoch < epochs:
        train_seconds = _fit(method, state, splits, config, run_dir, first_epoch, steps, verbose)
        speed = {
            "train_seconds": round(train_seconds, 2),
            "images_per_second": round((epochs - first_epoch) * steps * batch_size / train_seconds, 1),
            "resumed_from_epoch": first_epoch,
        }
    else:
        # Nothing left to train: keep the figures of the run that did the training.
        speed = _previous_speed(run_dir)

    metrics = _evaluate(config, run_dir, encoder, splits)
    metrics.update(
        {
            **speed,
            "epochs": epochs,
            "steps_per_epoch": steps,
            "batch_size": batch_size,
            "pretext_val": _pretext_val(method, splits, config),
            "pictures": _pictures(method, splits, config, run_dir),
        }
    )
    metrics["report"] = build_report(run_dir, metrics, encoder, splits)  # report.md + its figures
    _write_outputs(run_dir, encoder, splits, metrics)
    return metrics


def start_training(config: Config, run_dir: Path, strategy, steps: int, train_images: np.ndarray,
                   num_classes: int, check_method: Optional[Callable] = None):
    """Writes config.yaml, builds and compiles the method under `strategy`, runs its `prepare` hook on
    `train_images`, keeps the initial encoder weights, restores the latest checkpoint.

    Returns (encoder, method, state, first_epoch). `check_method(method)` may refuse the method early
    (e.g. an image method on video data).
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(config.to_dict(), sort_keys=False))
    epochs = config.trainer.epochs
    with strategy.scope():
        encoder, method = build_models(config, num_classes)
        if check_method is not None:
            check_method(method)
        optimizer = build_optimizer(config.optimizer, steps_per_epoch=steps, epochs=epochs)
        method.compile(optimizer=optimizer, jit_compile=config.trainer.jit_compile)
        optimizer.build(method.trainable_variables)
        state = RunState(method, optimizer, run_dir / "checkpoints")
        method.prepare(train_images, run_dir)
    if not (run_dir / INIT_WEIGHTS).exists():
        # The random-init baseline is this exact encoder before training, kept so a resumed run
        # compares against the same weights.
        atomic_write(run_dir / INIT_WEIGHTS, lambda tmp: encoder.save_weights(tmp), suffix=".weights.h5")
    first_epoch = state.restore_latest()
    if first_epoch:
        log.info("resuming %s from epoch %d of %d", run_dir, first_epoch, epochs)
    return encoder, method, state, first_epoch


def _previous_speed(run_dir: Path) -> Dict[str, Any]:
    keys = ("train_seconds", "images_per_second", "resumed_from_epoch")
    path = run_dir / "metrics.json"
    previous = json.loads(path.read_text()) if path.exists() else {}
    return {key: previous.get(key) for key in keys}


def _fit(method, state, splits, config, run_dir, first_epoch, steps, verbose) -> float:
    train = splits.train
    dataset = make_pipeline(
        train.images,
        train.labels,
        batch_size=config.trainer.batch_size,
        shuffle=True,
        seed=config.trainer.seed,
        first_epoch=first_epoch,
        num_epochs=config.trainer.epochs - first_epoch,
        steps_per_epoch=steps,
        augment=method.augment,
    )
    callbacks = [
        keras.callbacks.TerminateOnNaN(raise_error=True),
        EpochCheckpoint(state, config.trainer.checkpoint_every, config.trainer.epochs),
        keras.callbacks.CSVLogger(str(run_dir / "history.csv"), append=True),
        keras.callbacks.TensorBoard(str(run_dir / "logs"), write_graph=False),
    ]
    start = time.perf_counter()
    try:
        method.fit(
            dataset,
            epochs=config.trainer.epochs,
            initial_epoch=first_epoch,
            steps_per_epoch=steps,
            callbacks=callbacks,
            verbose=verbose,
            shuffle=False,  # the pipeline shuffles, per epoch and reproducibly
        )
    except RuntimeError as error:
        if "NaN" not in str(error) and "Inf" not in str(error):
            raise
        raise TrainingDivergedError(
            f"training diverged: {error}. The last good checkpoint is kept at "
            f"{state.latest or '(none yet: it failed in the first epoch)'}; lower optimizer.learning_rate "
            "or add warmup (optimizer.warmup_epochs), then rerun the same command to resume from it."
        ) from error
    return time.perf_counter() - start


def _pretext_val(method, splits, config) -> Dict[str, float]:
    """The pretext task's own metrics on the validation split (e.g. rotation accuracy)."""
    val = splits.val
    batch = min(config.trainer.batch_size, len(val.labels))
    dataset = make_pipeline(
        val.images, val.labels, batch_size=batch, shuffle=False, seed=config.trainer.seed,
        augment=method.augment,
    )
    results = method.evaluate(dataset, verbose=0, return_dict=True)
    return {name: round(float(np.mean(value)), 4) for name, value in results.items()}


def _pictures(method, splits, config, run_dir: Path) -> list:
    """The method's pretext pictures on the first validation images (the same ones in every run)."""
    val = splits.val
    batch = min(16, len(val.labels))
    dataset = make_pipeline(
        val.images[:batch], val.labels[:batch], batch_size=batch, shuffle=False, seed=config.trainer.seed,
        augment=method.augment,
    )
    return list(method.save_pictures(next(iter(dataset)), run_dir))


def _evaluate(config: Config, run_dir: Path, encoder, splits) -> Dict[str, Any]:
    """kNN and linear probe for the trained encoder and the same encoder at its initial weights."""
    evaluation = config.eval
    trained, head = evaluate_encoder(encoder, splits, evaluation, seed=config.trainer.seed)
    metrics: Dict[str, Any] = {
        "method": config.method.name,
        "encoder": config.encoder.name,
        "dataset": dataset_label(config),
        "knn_top1": trained["knn_top1"],
        "linear_top1": trained["linear_top1"],
    }
    if evaluation.finetune_epochs:
        metrics["finetune_top1"], tuned, tuned_head = _finetune(encoder, splits, config)
        atomic_write(run_dir / FINETUNE_ENCODER, lambda tmp: with_builtin_batch_norm(tuned).save(tmp))
        atomic_write(run_dir / FINETUNE_HEAD, lambda tmp: tuned_head.save(tmp))
    if evaluation.random_init:
        initial, _ = build_models(config, len(splits.class_names))
        initial.load_weights(run_dir / INIT_WEIGHTS)
        baseline, _ = evaluate_encoder(initial, splits, evaluation, seed=config.trainer.seed)
        metrics["random_init"] = {"knn_top1": baseline["knn_top1"], "linear_top1": baseline["linear_top1"]}
        if evaluation.finetune_epochs:
            metrics["random_init"]["finetune_top1"] = _finetune(initial, splits, config)[0]
    metrics["data"] = {
        "num_train": int(len(splits.train.labels)),
        "num_val": int(len(splits.val.labels)),
        "class_names": list(splits.class_names),
        **splits.stats,
    }
    metrics["machine"] = {
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "sslzoo": __version__,
    }
    atomic_write(run_dir / "linear_head.keras", lambda tmp: head.save(tmp))
    return metrics


def _finetune(encoder, splits, config: Config):
    top1, tuned, head = finetune(
        encoder, splits, label_fraction=config.eval.finetune_label_fraction,
        epochs=config.eval.finetune_epochs, learning_rate=config.eval.finetune_learning_rate,
        batch_size=config.trainer.batch_size, seed=config.trainer.seed,
    )
    return round(top1, 2), tuned, head


def _write_outputs(run_dir: Path, encoder, splits, metrics: Dict[str, Any]) -> None:
    # Built-in layers only, so the run's encoder loads with plain Keras (sslzoo/layers/batch_norm.py).
    atomic_write(run_dir / "encoder.keras", lambda tmp: with_builtin_batch_norm(encoder).save(tmp))
    # A few validation images travel with the run so export.py can measure parity on real inputs.
    samples = splits.val.images[:32]
    atomic_write(run_dir / PARITY_SAMPLES, lambda tmp: np.save(tmp, samples, allow_pickle=False))
    atomic_write_text(run_dir / "metrics.json", json.dumps(metrics, indent=2, default=_json_default))


def _json_default(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def evaluate_run(run_dir: str | Path) -> Dict[str, Any]:
    """Re-evaluates a finished run's encoder (train.py --eval-only, python -m sslzoo.evaluate)."""
    from sslzoo.config import load

    run_dir = Path(run_dir)
    config = load(run_dir / "config.yaml")
    encoder = keras.saving.load_model(run_dir / "encoder.keras", safe_mode=True)
    splits = load_splits(config.data)
    metrics = _evaluate(config, run_dir, encoder, splits)
    previous = run_dir / "metrics.json"
    if previous.exists():
        metrics = {**json.loads(previous.read_text()), **metrics}
    atomic_write_text(previous, json.dumps(metrics, indent=2, default=_json_default))
    return metrics
