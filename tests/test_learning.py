"""RotNet learns: on the CIFAR-10 validation split its encoder beats the same encoder at random init.

The whole user path runs here, as a user runs it: train.py on the CIFAR folder -> export.py -> sslzoo.load.
Budget: 10,000 of the 50,000 training images (9,000 train / 1,000 validation, stratified), 2 epochs, with
the config's half-width ConvNet (4 epochs until the suite outgrew 25 minutes; then kNN +8.9 / +6.3 / +10.1,
linear +8.6 / +6.1 / +5.3 over random init for seeds 1 / 2 / 3). At 2 epochs, the test's command plus
`--set trainer.seed=S` for S = 1 / 2 / 3, with one TensorFlow thread as the suite runs (tests/conftest.py),
2-core CPU, 2026-12-02: kNN +8.4 / +5.2 / +7.7, linear +8.4 / +6.0 / +5.2 points. The asserted margins are
half the smallest gain of those seeds, rounded down, set before seed 0 (this test's run) was measured:
kNN +6.1, linear +2.8 then.
"""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import sslzoo
from tests.harness import ROOT, train_on_cifar

KNN_MARGIN, LINEAR_MARGIN = 2.6, 2.6


@pytest.fixture(scope="module")
def cifar_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("cifar") / "rotnet"
    metrics = train_on_cifar(run, "zoo_configs/rotnet_convnet_small_cifar10.yaml",
                             "data.max_examples=10000", "trainer.epochs=2")
    return run, metrics


def test_rotnet_beats_its_random_init_encoder_on_cifar10_validation(cifar_run):
    _, metrics = cifar_run
    baseline = metrics["random_init"]
    assert metrics["data"]["num_val"] == 1000 and metrics["data"]["bad_images"] == 0
    assert metrics["knn_top1"] >= baseline["knn_top1"] + KNN_MARGIN, metrics
    assert metrics["linear_top1"] >= baseline["linear_top1"] + LINEAR_MARGIN, metrics
    # The pretext task itself is learned well above chance (25% for four rotations).
    assert metrics["pretext_val"]["rotation_top1"] > 0.5


def test_cifar_run_exports_and_loads(cifar_run, tmp_path):
    run, metrics = cifar_run
    out = tmp_path / "exported" / "rotnet_convnet_small_cifar10"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "export.py", "--run", str(run), "--output", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    encoder = sslzoo.load(str(out))
    images = np.load(run / "parity_samples.npy").astype("float32") / 255.0
    reference = keras.saving.load_model(run / "encoder.keras", safe_mode=True)
    np.testing.assert_allclose(encoder.predict(images, verbose=0), reference.predict(images, verbose=0), atol=1e-5)
    card = json.loads((out / "model_card.json").read_text())
    assert card["knn_top1"] == metrics["knn_top1"] and card["method"] == "rotnet"
