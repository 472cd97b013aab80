"""One candidate's work in `sslzoo select`: calibrating its speed, training a rung, scoring the encoder.

A rung continues the candidate's previous rung: its run folder starts as a copy of the parent trial's,
and `trainer.pretrain` resumes the copied checkpoint (never training from scratch). Scores are on the
tuning part of the labelled set only.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import keras
import numpy as np

from sslzoo.config import ConfigError
from sslzoo.evaluation.features import extract_features
from sslzoo.evaluation.knn import knn_leave_one_out_top1, knn_top1
from sslzoo.files import atomic_directory, atomic_write, atomic_write_text
from sslzoo.layers.builtin import with_builtin_layers
from sslzoo.select.plan import Speed

CALIBRATION_STEPS = 5  # timed steps after the first (which traces)
SCORE_FILE = "score.json"
ENCODER_FILE = "encoder.keras"
# Files of a parent trial a rung does not inherit: its own score and encoder replace them.
NOT_INHERITED = (SCORE_FILE, ENCODER_FILE, ".lock")


class _StepTimes(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.times: List[float] = []

    def on_train_batch_end(self, batch, logs=None):
        self.times.append(time.perf_counter())


class Deadline(keras.callbacks.Callback):
    """Stops training at the end of an epoch when another epoch as long as the last would end after `deadline`.

    Args:
        deadline: a time on `clock`.
        clock: monotonic seconds; default `time.perf_counter` (a test's fake clock makes the epochs' lengths
            exact).
    """

    def __init__(self, deadline: float, clock: Optional[Callable[[], float]] = None):
        super().__init__()
        self.deadline = deadline
        self.clock = clock or time.perf_counter
        self.started = None
        self.stopped_early = False

    def on_epoch_begin(self, epoch, logs=None):
        self.started = self.clock()

    def on_epoch_end(self, epoch, logs=None):
        now = self.clock()
        if now + (now - self.started) > self.deadline:
            self.model.stop_training = True
            self.stopped_early = True


def calibrate(config, data, score_images: np.ndarray, steps: int = CALIBRATION_STEPS) -> Speed:
    """Times `steps` training steps of `config`'s method on `data` after the first (traced) one.

    Args:
        config: the candidate's config (as its trials train it).
        data: the loaded `TrainingData`.
        score_images: uint8 images the trial's scoring embeds (timed as part of the overhead).
    Raises:
        whatever building or training the method on this data raises (the caller leaves the arm out).
    """
    from sslzoo.data import split_pipeline
    from sslzoo.optimizers import build_optimizer
    from sslzoo.training.build import build_models

    batch = config.trainer.batch_size
    start = time.perf_counter()
    keras.utils.set_random_seed(config.trainer.seed)
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(config.trainer.mixed_precision)
    try:
        _, method = build_models(config, data.num_classes)
        optimizer = build_optimizer(config.optimizer, steps_per_epoch=steps + 1, epochs=1)
        method.compile(optimizer=optimizer, jit_compile=config.trainer.jit_compile)
        optimizer.build(method.trainable_variables)
        method.set_run_length(steps + 1, steps_per_epoch=steps + 1)
        with tempfile.TemporaryDirectory() as scratch:
            method.prepare(data.prepare_images, Path(scratch))
        per_epoch = min(steps + 1, len(data.splits.train) // batch)  # a small data set: several passes
        if per_epoch < 1:
            raise ConfigError(f"trainer.batch_size={batch} is larger than the {len(data.splits.train)} training "
                              "images; use more data")
        epochs = -(-(steps + 1) // per_epoch)
        dataset = split_pipeline(data.splits.train, batch_size=batch, shuffle=True, seed=config.trainer.seed,
                                 first_epoch=0, num_epochs=epochs, steps_per_epoch=per_epoch,
                                 augment=method.augment)
        timer = _StepTimes()
        method.fit(dataset, epochs=epochs, steps_per_epoch=per_epoch, callbacks=[timer], verbose=0, shuffle=False)
        scoring = time.perf_counter()
        extract_features(method.encoder, score_images)
        score_seconds = time.perf_counter() - scoring
    finally:
        keras.mixed_precision.set_global_policy(previous)
        keras.backend.clear_session()
    times = timer.times
    per_image = (times[-1] - times[0]) / (len(times) - 1) / batch
    return Speed(seconds_per_image=per_image, overhead_seconds=(times[0] - start) + score_seconds, batch_size=batch,
                 score_seconds=score_seconds)


def _probe(fit_x, fit_y, eval_x, eval_y, num_classes: int, evaluation, seed: int) -> float:
    from sslzoo.evaluation.linear import linear_probe

    top1, _ = linear_probe(fit_x, fit_y, eval_x, eval_y, num_classes, epochs=evaluation.linear_epochs,
                           learning_rate=evaluation.linear_learning_rate,
                           weight_decay=evaluation.linear_weight_decay,
                           batch_size=evaluation.linear_batch_size, seed=seed)
    return float(top1)


def score_features(features: np.ndarray, labels: np.ndarray, num_classes: int, metric: str, evaluation,
                   seed: int = 0) -> float:
    """The search's objective on the tuning part: leave-one-out kNN top-1, or a 2-fold linear probe's
    (`evaluation`: the candidate's `EvalConfig`, the zoo's kNN and probe settings)."""
    if metric == "knn":
        return round(knn_leave_one_out_top1(features, labels, num_classes, k=evaluation.knn_k,
                                            temperature=evaluation.knn_temperature), 2)
    from sslzoo.data.splits import stratified_split

    first, second = stratified_split(labels, val_fraction=0.5, seed=seed)
    scores = [_probe(features[a], labels[a], features[b], labels[b], num_classes, evaluation, seed)
              for a, b in ((first, second), (second, first))]
    return round(float(np.mean(scores)), 2)


def held_back_scores(bank: np.ndarray, bank_labels: np.ndarray, queries: np.ndarray, query_labels: np.ndarray,
                     num_classes: int, evaluation, seed: int = 0) -> Dict[str, float]:
    """kNN (bank: the tuning part) and linear probe (fit on the tuning part) top-1 on the held-back part."""
    knn = knn_top1(bank, bank_labels, queries, query_labels, num_classes, k=evaluation.knn_k,
                   temperature=evaluation.knn_temperature)
    linear = _probe(bank, bank_labels, queries, query_labels, num_classes, evaluation, seed)
    return {"knn_top1": round(float(knn), 2), "linear_top1": round(linear, 2)}


def inherit(parent: Path, child: Path) -> None:
    """The child's run folder starts as a copy of the parent's (checkpoints included), published whole."""
    if child.exists():
        return  # an interrupted child: its own checkpoints are newer than the parent's
    ignore = shutil.ignore_patterns(*NOT_INHERITED)
    with atomic_directory(child) as scratch:
        shutil.copytree(parent, scratch, ignore=ignore, dirs_exist_ok=True)


def read_score(run_dir: Path) -> Optional[Dict]:
    path = run_dir / SCORE_FILE
    return json.loads(path.read_text()) if path.exists() else None


def train_and_score(config, run_dir: Path, data, until_units: int, score: Callable[[keras.Model], float],
                    extra_callbacks=(), extra: Optional[Dict] = None) -> Dict:
    """Trains `run_dir` to `until_units`, scores its encoder, writes encoder.keras and score.json (last,
    with `extra` in it: a score.json marks a finished trial)."""
    from sslzoo.errors import TrainingDivergedError
    from sslzoo.training.trainer import pretrain

    start = time.perf_counter()
    try:
        encoder, _, training = pretrain(config, run_dir, data, until_epoch=until_units,
                                        extra_callbacks=extra_callbacks)
    except TrainingDivergedError as error:
        keras.backend.clear_session()
        record = {**(extra or {}), "units": trained_units(run_dir), "score": None,
                  "diverged": str(error).split(". ")[0],
                  "seconds": round(time.perf_counter() - start, 2)}
        atomic_write_text(run_dir / SCORE_FILE, json.dumps(record, indent=2))
        return record
    scoring = time.perf_counter()
    value = score(encoder)
    trained = trained_units(run_dir)
    atomic_write(run_dir / ENCODER_FILE, lambda tmp: with_builtin_layers(encoder).save(tmp))
    record = {**(extra or {}), "units": trained, "score": value, "train_seconds": training.get("train_seconds", 0.0),
              "score_seconds": round(time.perf_counter() - scoring, 2),
              "seconds": round(time.perf_counter() - start, 2)}
    atomic_write_text(run_dir / SCORE_FILE, json.dumps(record, indent=2))
    keras.backend.clear_session()
    return record


def trained_units(run_dir: Path) -> int:
    """Finished epochs (units) of a run folder: the number its newest checkpoint is saved under."""
    import tensorflow as tf

    latest = tf.train.latest_checkpoint(str(run_dir / "checkpoints"))
    return int(latest.rsplit("-", 1)[1]) if latest else 0


def load_encoder(run_dir: Path) -> keras.Model:
    return keras.saving.load_model(run_dir / ENCODER_FILE, safe_mode=True)
