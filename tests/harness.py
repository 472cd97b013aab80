"""The contract every method passes, on a tiny model: one call checks a method end to end.

    from tests.harness import check_method_contract
    def test_contract(tmp_path):
        check_method_contract("rotnet", {"head": "conv"}, tmp_path)
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import keras
import tensorflow as tf
from PIL import Image

import sslzoo
from sslzoo import config as config_lib
from sslzoo.data import load_splits, make_pipeline
from sslzoo.export import export_encoder, read_card
from sslzoo.optimizers import build_optimizer
from sslzoo.training.trainer import build_models

TINY_ENCODER = {"name": "convnet_small", "options": {"width": 0.25}}


def tiny_config(method: str, options: dict, image_size: int = 32, **sections) -> config_lib.Config:
    """A config small enough for a unit test: synthetic data, a quarter-width ConvNet, one step."""
    values = {
        "data": {"source": "synthetic", "synthetic_examples": 200, "image_size": image_size},
        "encoder": copy.deepcopy(TINY_ENCODER),  # callers may update it: never the shared default
        "method": {"name": method, "options": options},
        "optimizer": {"name": "sgd", "learning_rate": 0.05, "schedule": "constant"},
        "trainer": {"epochs": 1, "batch_size": 16, "steps_per_epoch": 1},
        "eval": {"linear_epochs": 2, "knn_k": 10},
    }
    for section, updates in sections.items():
        values.setdefault(section, {}).update(updates)
    return config_lib.from_dict(values)


def first_batch(method, splits, batch_size=16):
    dataset = make_pipeline(
        splits.train.images, splits.train.labels, batch_size=batch_size, shuffle=True, seed=0,
        augment=method.augment,
    )
    return next(iter(dataset))


def fit_one_step(method_name: str, options: dict, **sections):
    """One optimizer step of a method through Keras' fit on the tiny config; asserts a finite loss and that
    the evaluated encoder's weights moved. Returns (method, the batch, the step's logs)."""
    keras.utils.set_random_seed(0)
    config = tiny_config(method_name, options, **sections)
    splits = load_splits(config.data)
    encoder, method = build_models(config, num_classes=len(splits.class_names))
    method.compile(optimizer=build_optimizer(config.optimizer, steps_per_epoch=1, epochs=1))
    batch = first_batch(method, splits)
    before = [w.copy() for w in encoder.get_weights()]
    history = method.fit(tf.data.Dataset.from_tensors(batch), epochs=1, verbose=0, shuffle=False)
    logs = {name: values[0] for name, values in history.history.items()}
    assert np.isfinite(logs["loss"]), f"{method_name} {options}: loss is {logs['loss']}"
    assert any(not np.allclose(a, b) for a, b in zip(before, encoder.get_weights())), \
        f"{method_name} {options}: one fit step left every encoder weight unchanged"
    return method, batch, logs


def check_method_contract(method_name: str, options: dict, tmp_path, image_size: int = 32, **sections) -> None:
    """Fit step, pretext pictures, config round trip, .keras save/load, SavedModel and TFLite parity.

    `sections` update the tiny config's sections (e.g. `optimizer={"learning_rate": 1e-3}` for a loss whose
    plain-SGD step at 0.05 would blow the features up to thousands, where parity is judged in absolute terms;
    `encoder={"name": "vit_tiny", "options": {...}}` for another encoder than the quarter-width ConvNet).
    """
    keras.utils.set_random_seed(0)
    config = tiny_config(method_name, options, image_size=image_size, **sections)
    splits = load_splits(config.data)
    encoder, method = build_models(config, num_classes=len(splits.class_names))
    optimizer = build_optimizer(config.optimizer, steps_per_epoch=1, epochs=1)
    method.compile(optimizer=optimizer)
    batch = first_batch(method, splits)

    # 1. One fit step: finite loss, and the encoder's weights move.
    before = [w.copy() for w in encoder.get_weights()]
    history = method.fit(tf.data.Dataset.from_tensors(batch), epochs=1, verbose=0, shuffle=False)
    loss = history.history["loss"][0]
    assert np.isfinite(loss), f"{method_name}: loss is {loss}"
    moved = [not np.allclose(a, b) for a, b in zip(before, encoder.get_weights())]
    assert any(moved), f"{method_name}: one fit step left every encoder weight unchanged"

    # 1b. The method draws its pretext task: at least one PNG, readable, in the folder it was given.
    pictures = method.save_pictures(batch, tmp_path)
    assert pictures, f"{method_name}: save_pictures wrote no picture"
    for name in pictures:
        with Image.open(tmp_path / name) as picture:
            assert picture.format == "PNG" and min(picture.size) >= 64, (name, picture.size)

    # 2. Config round trip: from_config(get_config()) rebuilds an equal configuration.
    rebuilt = type(method).from_config(method.get_config())
    assert keras.saving.serialize_keras_object(rebuilt)["config"].keys() == method.get_config().keys()
    assert rebuilt.encoder.count_params() == encoder.count_params()

    # 3. .keras save/load: same features and same pretext loss in inference mode.
    path = tmp_path / f"{method_name}.keras"
    method.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    images = batch["images"][:8]
    np.testing.assert_allclose(
        loaded.encoder(images, training=False), encoder(images, training=False), atol=1e-6
    )
    loss_a, _ = method.compute_loss_and_logs(batch, training=False)
    loss_b, _ = loaded.compute_loss_and_logs(batch, training=False)
    np.testing.assert_allclose(float(loss_a), float(loss_b), rtol=1e-5, atol=1e-6)

    # 4. Export: SavedModel parity <= 1e-5 at batch 1/7/32 and TFLite <= 1e-4 (measured by the exporter
    # on real images); the loaded export gives the encoder's features.
    samples = splits.val.images[:32].astype("float32") / 255.0
    out = export_encoder(
        encoder, tmp_path / "export", image_size=image_size,
        card={"method": method_name, "encoder": config.encoder.name}, sample_images=samples,
    )
    card = read_card(out)
    parity = card["parity"]
    assert max(parity["saved_model_max_abs_diff"].values()) <= 1e-5
    assert parity["tflite_max_abs_diff"] <= 1e-4
    reloaded = sslzoo.load(str(out))
    np.testing.assert_allclose(reloaded.predict(samples, verbose=0), encoder.predict(samples, verbose=0), atol=1e-5)


ROOT = Path(__file__).resolve().parents[1]
CIFAR = ROOT.parent / "shared" / "data" / "cifar10" / "train"


def train_on_cifar(run: Path, config: str, *overrides: str) -> dict:
    """Runs train.py on the shared CIFAR-10 folder as a user would and returns its metrics.json.

    A missing ../shared is a failure, not a skip: without it a method's learning is unproven.
    """
    if not CIFAR.is_dir():
        pytest.fail(
            f"CIFAR-10 images not found at {CIFAR}: the learning tests need ../shared/data/cifar10/train "
            "beside the repository (CI has it)."
        )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(ROOT)}
    command = [
        sys.executable, "train.py", "--config", config, "--quiet",
        "--set", "data.source=folder", "data.path=../shared/data/cifar10/train", *overrides, "--output", str(run),
    ]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((run / "metrics.json").read_text())


def assert_beats_random_init(metrics: dict, knn_margin: float, linear_margin: float) -> None:
    """The learning criterion: on the 1,000-image validation split, the trained encoder's kNN and linear
    top-1 beat the same run's random-init encoder by the margins (points)."""
    baseline = metrics["random_init"]
    assert metrics["data"]["num_val"] == 1000 and metrics["data"]["bad_images"] == 0, metrics["data"]
    assert metrics["knn_top1"] >= baseline["knn_top1"] + knn_margin, (metrics["knn_top1"], baseline)
    assert metrics["linear_top1"] >= baseline["linear_top1"] + linear_margin, (metrics["linear_top1"], baseline)
