"""One training path for every method and every data kind: data -> method.fit -> evaluator -> run folder.

`train_run(config, run_dir)` is what `train.py` calls. Its stages are public and the same for images
and clips: the `load` of the data kind registered for `data.source`, `training_steps`,
`start_training` (build, compile, `prepare`, restore), `fit`, the kind's evaluator (registered in
`EVALUATORS`: kNN + linear probe for images, tracking J for clips), `write_dashboard` (the final
metrics, HParams and pictures into TensorBoard's logs/) and `write_outputs`. Rerunning it on
the same run folder resumes from the last finished epoch (the folder's config must match), so `kill -9`
costs at most one epoch. Everything that can be checked without the data (`check_run`) is checked before
the run folder is touched, and the run holds the folder's lock (`sslzoo.training.lock`) throughout.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf
import yaml

from sslzoo.backbones import validate_encoder_options
from sslzoo.config import Config, ConfigError, parse_options
from sslzoo.config import load as load_config
from sslzoo.data import split_pipeline
from sslzoo.data.kinds import TrainingData, check_paths, kind_for_source
from sslzoo.errors import TrainingDivergedError
from sslzoo.evaluation.context import RunContext
from sslzoo.evaluation.dashboard import write_dashboard
from sslzoo.evaluation.monitor import KNNMonitor
from sslzoo.files import atomic_write, atomic_write_text
from sslzoo.layers.builtin import with_builtin_layers
from sslzoo.optimizers import build_optimizer
from sslzoo.registry import ENCODERS, EVALUATORS, METHODS
from sslzoo.training import evaluators  # noqa: F401  (registers the image evaluator)
from sslzoo.training.budget import BudgetState, TimeBudget
from sslzoo.training.checkpoints import EpochCheckpoint, RunState
from sslzoo.training.build import INIT_WEIGHTS, build_models, initial_encoder  # noqa: F401  (public stages)
from sslzoo.training.evaluators import PARITY_SAMPLES
from sslzoo.training.lock import hold_run_folder
from sslzoo.training.strategy import input_workers, make_strategy
from sslzoo.video import plugin as _video_plugin  # noqa: F401  (registers the clip kind and tracking evaluator)

log = logging.getLogger(__name__)


def _check_run_folder(config: Config, run_dir: Path) -> None:
    saved = run_dir / "config.yaml"
    if saved.exists():
        # Through the config loader, so a folder written before a new config field existed (with its
        # default) still counts as the same run.
        previous = load_config(saved).to_dict()
        if previous != config.to_dict():
            raise ConfigError(
                f"run folder '{run_dir}' holds a run with a different config; resuming it with this one "
                "would mix two runs. Use another --output, or delete the folder to start over."
            )


def save_run_config(config: Config, run_dir: Path) -> None:
    """Writes the config.yaml a resume of `run_dir` is checked against."""
    atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(config.to_dict(), sort_keys=False))


def check_names(config: Config) -> None:
    """Unknown method or encoder names, and unknown or mistyped method and encoder options, fail before
    any data is read, listing what is allowed (checks that need the built encoder come at build time)."""
    for kind, registry, name in (("method.name", METHODS, config.method.name),
                                 ("encoder.name", ENCODERS, config.encoder.name)):
        if name not in registry:
            raise ConfigError(f"{kind} '{name}' is not registered; available: {', '.join(registry.names())}")
    validate_encoder_options(config.encoder.name, config.encoder.options)
    parse_options(METHODS.get(config.method.name).Options, config.method.options, "method.options")
    kind_for_source(config.data.source)
    if config.eval.evaluator and config.eval.evaluator not in EVALUATORS:
        raise ConfigError(f"eval.evaluator '{config.eval.evaluator}' is not registered; available: "
                          f"{', '.join(EVALUATORS.names())} (or \"\" for the data kind's own)")


def check_output(run_dir: Path) -> None:
    """The run folder can be a folder: neither it nor a parent is an existing file."""
    if "\0" in str(run_dir):
        raise ConfigError(f"run folder {str(run_dir)!r} holds a NUL character, which no path can; pass another --output")
    for folder in (run_dir, *run_dir.parents):
        if folder.exists():
            if not folder.is_dir():
                what = "is a file" if folder == run_dir else f"lies under '{folder}', which is a file"
                raise ConfigError(f"run folder '{run_dir}' {what}; pass --output a folder (e.g. runs/<name>)")
            return


def check_run(config: Config, run_dir: Path) -> None:
    """Every check that needs neither the data nor the built model, done before anything is decoded or
    written: names and options, the paths the data kind reads, the run folder's path."""
    check_names(config)
    check_paths(kind_for_source(config.data.source), config)
    check_output(run_dir)


def train_run(config: Config, run_dir: str | Path, verbose: int | str = "auto") -> Dict[str, Any]:
    """Pretrains, evaluates and writes the run folder; returns the metrics written to metrics.json.

    Raises `RunFolderInUseError` while another process trains or evaluates in `run_dir`.
    """
    run_dir = Path(run_dir)
    check_run(config, run_dir)
    with hold_run_folder(run_dir):
        _check_run_folder(config, run_dir)
        return _train(config, run_dir, verbose)


def _train(config: Config, run_dir: Path, verbose: int | str) -> Dict[str, Any]:
    kind = kind_for_source(config.data.source)
    # The strategy first: a mirrored run on CPUs must split the CPU before TensorFlow initialises.
    strategy = make_strategy(config.trainer.strategy, config.trainer.cpu_replicas)
    keras.utils.set_random_seed(config.trainer.seed)
    previous_policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(config.trainer.mixed_precision)
    try:
        data = kind.load(config)
        check_monitor(config, data)
        steps = training_steps(config, data, input_workers(strategy))
        encoder, method, state, first_epoch = start_training(
            config, run_dir, strategy, steps, data.prepare_images, data.num_classes,
            check_method=lambda method: kind.check_method(method, config),
        )
        training = fit(method, state, data, config, run_dir, first_epoch, steps, verbose, strategy)
        run = RunContext(config, run_dir, encoder, method, data, training,
                         initial_encoder=lambda: initial_encoder(config, run_dir, data.num_classes))
        evaluation = EVALUATORS.get(config.eval.evaluator or kind.evaluator)(run)
        # Before metrics.json, which marks the run finished: a rerun of a killed run writes it again.
        write_dashboard(run_dir, config, evaluation.metrics)
        write_outputs(run_dir, encoder, evaluation.probe_splits, evaluation.metrics)
        return evaluation.metrics
    finally:
        # The policy is process-global; a run must not change what later code in the process builds.
        keras.mixed_precision.set_global_policy(previous_policy)


def training_steps(config: Config, data: TrainingData, workers: int = 1) -> int:
    """Optimizer steps per epoch: one pass over the training examples, or `trainer.steps_per_epoch`; with
    input sharded by file across `workers`, no more than the batches every worker can make."""
    batch_size = config.trainer.batch_size
    examples = len(data.splits.train.labels)
    batches_per_epoch = examples // batch_size
    if batches_per_epoch < 1:
        raise ConfigError(
            f"trainer.batch_size={batch_size} is larger than the {examples} training {data.unit}; "
            "lower it or use more data"
        )
    steps = min(config.trainer.steps_per_epoch or batches_per_epoch, batches_per_epoch)
    if _sharded_by_file(data, workers):
        if batch_size % workers:
            raise ConfigError(f"trainer.batch_size={batch_size} does not split evenly across {workers} workers; "
                              f"use a multiple of {workers}")
        reader = data.splits.train.reader
        per_worker = reader.worker_steps(data.splits.train, batch_size // workers, config.trainer.seed,
                                         config.trainer.epochs, workers)
        if per_worker < 1:
            raise ConfigError(f"a worker's share of the shards in '{config.data.path}' makes no batch of "
                              f"{batch_size // workers} in some epoch; prepare smaller shards "
                              "(python -m sslzoo.prepare --shard-size-mb) or lower trainer.batch_size")
        steps = min(steps, per_worker)
    return steps


def _sharded_by_file(data: TrainingData, workers: int) -> bool:
    """Each worker reads its own files when the split streams from a reader that can deal them out
    (prepared shards); otherwise every worker builds the whole pipeline and Keras splits the batches."""
    train = data.splits.train
    return workers > 1 and train.streamed and hasattr(train.reader, "worker_pipeline")


def start_training(config: Config, run_dir: Path, strategy, steps: int, train_images: np.ndarray,
                   num_classes: int, check_method: Optional[Callable] = None):
    """Builds the method under `strategy`, compiles, writes config.yaml, runs the method's `prepare`
    hook on `train_images`, keeps the initial encoder weights, restores the latest checkpoint.

    Returns (encoder, method, state, first_epoch). `check_method(method)` may refuse the method early
    (e.g. an image method on video data).
    """
    epochs = config.trainer.epochs
    with strategy.scope():
        encoder, method = build_models(config, num_classes)
        if check_method is not None:
            check_method(method)
        # A budgeted run's length is a variable its schedules read, kept up to date as it trains.
        budget = BudgetState(steps * epochs) if config.trainer.time_budget_s else None
        horizon = budget.horizon if budget else None
        optimizer = build_optimizer(config.optimizer, steps_per_epoch=steps, epochs=epochs, horizon=horizon)
        method.compile(optimizer=optimizer, jit_compile=config.trainer.jit_compile)
        optimizer.build(method.trainable_variables)
        # Before fit traces the train step. It may refuse an optimizer the method's options cannot work
        # with (DINO's weight-decay schedule needs decoupled decay).
        method.set_run_length(horizon if budget else steps * epochs, steps_per_epoch=steps)
        # Only now: a config refused while building or compiling must not leave a config.yaml that would
        # refuse the corrected command as "a different config".
        run_dir.mkdir(parents=True, exist_ok=True)
        save_run_config(config, run_dir)
        state = RunState(method, optimizer, run_dir / "checkpoints", budget=budget)
        method.prepare(train_images, run_dir)
    if not (run_dir / INIT_WEIGHTS).exists():
        # The random-init baseline is this exact encoder before training, kept so a resumed run
        # compares against the same weights.
        # Built-in layers, as encoder.keras: a weights file names layers by class, so the fused layer's
        # weights would not load into the saved encoder (or a clone of it) with plain Keras.
        atomic_write(run_dir / INIT_WEIGHTS, lambda tmp: with_builtin_layers(encoder).save_weights(tmp),
                     suffix=".weights.h5")
    first_epoch = state.restore_latest()
    if first_epoch:
        log.info("resuming %s from epoch %d of %d", run_dir, first_epoch, epochs)
    return encoder, method, state, first_epoch


def previous_speed(run_dir: Path) -> Dict[str, Any]:
    """The training figures of the run that did the training (a rerun of a finished run keeps them)."""
    keys = ("train_seconds", "images_per_second", "clips_per_second", "resumed_from_epoch")
    path = run_dir / "metrics.json"
    previous = json.loads(path.read_text()) if path.exists() else {}
    return {key: previous[key] for key in keys if key in previous}


def fit(method, state, data: TrainingData, config: Config, run_dir: Path, first_epoch: int, steps: int,
        verbose, strategy=None, until_epoch: Optional[int] = None,
        extra_callbacks: Sequence = ()) -> Dict[str, Any]:
    """Trains from `first_epoch` to `until_epoch` (default `trainer.epochs`); returns the figures of the
    training for metrics.json. Stopping early leaves the schedule that of `trainer.epochs`: continuing later
    trains exactly as one uninterrupted run would. `extra_callbacks` run after the checkpoint's (one may stop
    the training at an epoch's end: `model.stop_training`)."""
    epochs = config.trainer.epochs if until_epoch is None else until_epoch
    figures = {"epochs": epochs, "steps_per_epoch": steps, "batch_size": config.trainer.batch_size}
    budget = config.trainer.time_budget_s
    if budget:
        figures["time_budget_s"] = budget
        if state.budget.finished(budget, int(method.optimizer.iterations.numpy())) or first_epoch >= epochs:
            return {**previous_speed(run_dir), **figures, "epochs": first_epoch,
                    "budget_spent_s": round(float(state.budget.spent.numpy()), 2)}
    if first_epoch >= epochs:
        return {**previous_speed(run_dir), **figures}
    pipeline = dict(shuffle=True, seed=config.trainer.seed, first_epoch=first_epoch,
                    num_epochs=epochs - first_epoch, steps_per_epoch=steps, augment=method.augment)
    train = data.splits.train
    workers = input_workers(strategy) if strategy is not None else 1
    if _sharded_by_file(data, workers):
        figures["input_sharding"] = "file"

        def worker_input(context: tf.distribute.InputContext):
            return train.reader.worker_pipeline(
                train, shard_index=context.input_pipeline_id, num_shards=context.num_input_pipelines,
                batch_size=context.get_per_replica_batch_size(config.trainer.batch_size), **pipeline)

        dataset = strategy.distribute_datasets_from_function(worker_input)
    else:
        dataset = split_pipeline(train, batch_size=config.trainer.batch_size, **pipeline)
    # Order matters: Keras hands every callback the same logs dict in list order, so the monitor's
    # figures must be in it before the CSV and TensorBoard callbacks record them.
    # The budget's callback records the seconds spent before the checkpoint's saves them.
    time_budget = TimeBudget(budget, state.budget, steps * config.trainer.epochs) if budget else None
    callbacks = [
        keras.callbacks.TerminateOnNaN(raise_error=True),
        *([time_budget] if time_budget else []),
        EpochCheckpoint(state, config.trainer.checkpoint_every, epochs),
        *extra_callbacks,
        *_monitor(method, data, config),
        keras.callbacks.CSVLogger(str(run_dir / "history.csv"), append=True),
        *([KNNMonitor.placeholder_remover()] if config.eval.monitor_every else []),
        keras.callbacks.TensorBoard(str(run_dir / "logs"), write_graph=False),
    ]
    start = time.perf_counter()
    try:
        history = method.fit(
            dataset,
            epochs=epochs,
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
    seconds = time.perf_counter() - start
    if time_budget:
        # A budget may end inside an epoch: count the steps taken, and report the run's length as trained.
        taken = time_budget.steps
        figures.update(epochs=first_epoch + len(history.epoch), total_steps=int(state.budget.horizon.numpy()),
                       budget_spent_s=round(float(state.budget.spent.numpy()), 2),
                       stopped_by_budget=time_budget.stopped)
    else:
        # The epochs run, not those asked for: a callback may have stopped the training early.
        taken = len(history.epoch) * steps
    rate = taken * config.trainer.batch_size / seconds
    return {"train_seconds": round(seconds, 2), f"{data.unit}_per_second": round(rate, 1),
            "resumed_from_epoch": first_epoch, **figures}


def pretrain(config: Config, run_dir: str | Path, data: TrainingData, until_epoch: Optional[int] = None,
             verbose: int | str = 0, extra_callbacks: Sequence = ()):
    """Pretrains `run_dir` on already-loaded `data` from its last checkpoint to `until_epoch` (default
    `trainer.epochs`), without evaluating; returns (encoder, method, training figures).

    The stage a search runs many times on one loaded data set (`sslzoo select`: each rung continues the
    previous rung's checkpoint). The optimizer schedule and the method's run length are always those of
    `trainer.epochs`, so stopping at `until_epoch` and continuing later is one uninterrupted run. The
    default strategy only (a mirrored run must split the CPU before TensorFlow starts: use `train_run`).
    `extra_callbacks` as `fit`'s.
    """
    run_dir = Path(run_dir)
    epochs = config.trainer.epochs
    until = epochs if until_epoch is None else int(until_epoch)
    if not 1 <= until <= epochs:
        raise ConfigError(f"until_epoch={until_epoch} must lie in 1..trainer.epochs ({epochs})")
    if config.trainer.strategy != "default":
        raise ConfigError(f"trainer.strategy={config.trainer.strategy}: pretrain() runs the default strategy; "
                          "use train_run for a distributed run")
    check_run(config, run_dir)
    kind = kind_for_source(config.data.source)
    strategy = make_strategy("default", config.trainer.cpu_replicas)
    keras.utils.set_random_seed(config.trainer.seed)
    previous_policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(config.trainer.mixed_precision)
    try:
        with hold_run_folder(run_dir):
            _check_run_folder(config, run_dir)
            check_monitor(config, data)
            steps = training_steps(config, data)
            encoder, method, state, first_epoch = start_training(
                config, run_dir, strategy, steps, data.prepare_images, data.num_classes,
                check_method=lambda method: kind.check_method(method, config))
            if first_epoch > until:
                raise ConfigError(f"run folder '{run_dir}' has trained {first_epoch} epochs, past until_epoch={until}")
            training = fit(method, state, data, config, run_dir, first_epoch, steps, verbose, strategy,
                           until_epoch=until, extra_callbacks=extra_callbacks)
        return encoder, method, training
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)


def check_monitor(config: Config, data: TrainingData) -> None:
    """The kNN monitor needs labelled data; refused before config.yaml is written, so the corrected
    command is not turned away as a different run."""
    if config.eval.monitor_every and data.probe_splits is None:
        raise ConfigError(f"eval.monitor_every={config.eval.monitor_every} needs labelled data for its kNN, and "
                          "this run has none; set eval.data_path to a labelled folder or eval.monitor_every=0")


def _monitor(method, data: TrainingData, config: Config) -> list:
    """The kNN monitor (eval.monitor_every > 0) on the labelled data the final kNN uses, or nothing."""
    evaluation = config.eval
    if not evaluation.monitor_every:
        return []
    return [KNNMonitor.from_splits(method.encoder, data.probe_splits, every=evaluation.monitor_every,
                                   examples=evaluation.monitor_examples, seed=config.trainer.seed,
                                   k=evaluation.knn_k, temperature=evaluation.knn_temperature)]


def write_outputs(run_dir: Path, encoder, splits, metrics: Dict[str, Any]) -> None:
    """encoder.keras, the parity samples export.py measures on, and metrics.json (last: a run folder with
    metrics.json is a finished run)."""
    # Built-in layers only, so the run's encoder loads with plain Keras (sslzoo/layers/batch_norm.py).
    atomic_write(run_dir / "encoder.keras", lambda tmp: with_builtin_layers(encoder).save(tmp))
    samples = splits.val.take(np.arange(min(32, len(splits.val))))
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
    from sslzoo.data import load_splits

    run_dir = Path(run_dir)
    check_output(run_dir)
    missing = [name for name in ("config.yaml", "encoder.keras") if not (run_dir / name).is_file()]
    if missing:
        raise ConfigError(f"run folder '{run_dir}' has no {' or '.join(missing)}: re-evaluating needs a trained "
                          f"run; train it first (python train.py --config <config> --output {run_dir})")
    config = load_config(run_dir / "config.yaml")
    check_paths(kind_for_source(config.data.source), config)
    with hold_run_folder(run_dir, create=False):
        encoder = keras.saving.load_model(run_dir / "encoder.keras", safe_mode=True)
        splits = load_splits(config.data)
        metrics = evaluators.probe_metrics(config, run_dir, encoder, splits)
        previous = run_dir / "metrics.json"
        if previous.exists():
            metrics = {**json.loads(previous.read_text()), **metrics}
        atomic_write_text(previous, json.dumps(metrics, indent=2, default=_json_default))
    return metrics
