"""Distributed correctness: SimCLR on 2 replicas trains exactly like 1 device with the same global batch.

Both tests run TensorFlow in subprocesses: logical CPU devices must be configured before TensorFlow
initialises, and MultiWorkerMirroredStrategy needs one process per worker.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": ""}

# One SGD step of SimCLR on a global batch of 16 images: on the default strategy (one device), and on
# MirroredStrategy over 2 logical CPUs with global negatives (the default) and with local-only negatives.
# Prints JSON: the logged loss and the encoder/projector update of each, flattened.
MIRRORED_SCRIPT = textwrap.dedent(
    """
    import functools, json, sys
    import numpy as np
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

    import keras
    from sslzoo.backbones import build_encoder
    from sslzoo.losses import nt_xent
    from sslzoo.methods import build_method
    from sslzoo.methods import simclr as simclr_module

    keras.utils.set_random_seed(0)
    images = np.random.default_rng(0).uniform(size=(16, 32, 32, 3)).astype("float32")

    def build():
        encoder = build_encoder("convnet_small", 32, width=0.25)
        return build_method("simclr", {"projection_dim": 16, "temperature": 0.2}, encoder)

    reference = build()
    initial = [w.copy() for w in reference.get_weights()]
    batch = reference.augment(tf.constant(images), tf.zeros([16], tf.int32), tf.constant([1, 2]))
    batch = {k: v.numpy() for k, v in batch.items()}

    def one_step(strategy):
        with strategy.scope():
            method = build()
            method.set_weights(initial)
            method.compile(optimizer=keras.optimizers.SGD(learning_rate=0.5))
        history = method.fit(tf.data.Dataset.from_tensors(batch), epochs=1, verbose=0, shuffle=False)
        synchronized = [l.synchronized for l in method.encoder.layers
                        if isinstance(l, keras.layers.BatchNormalization)]
        update = np.concatenate([(w - w0).ravel() for w, w0 in zip(method.get_weights(), initial)])
        return {"loss": float(np.mean(history.history["loss"])), "update": update.tolist(),
                "global_bn": bool(synchronized) and all(synchronized)}

    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    results = {"single": one_step(tf.distribute.get_strategy()), "global": one_step(mirrored)}
    simclr_module.nt_xent = functools.partial(nt_xent, cross_replica=False)
    results["local"] = one_step(mirrored)
    print("RESULT " + json.dumps(results))
    """
)


def _run(script: str, timeout: int = 300) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, result.stderr[-4000:]
    line = next(l for l in result.stdout.splitlines() if l.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def test_two_replicas_train_like_one_device_with_global_negatives():
    results = _run(MIRRORED_SCRIPT)
    single, global_, local = (results[k] for k in ("single", "global", "local"))
    step = np.abs(np.array(single["update"])).max()
    assert step > 1e-4  # the step did something
    assert global_["global_bn"] and not single["global_bn"]
    # Same loss (global batch of 16 -> 31 candidates per anchor) and the same SGD step.
    assert global_["loss"] == pytest.approx(single["loss"], rel=1e-5)
    global_error = np.abs(np.array(global_["update"]) - np.array(single["update"])).max()
    assert global_error < 1e-3 * step, (global_error, step)
    # Local negatives only (15 candidates per anchor): a different loss and a different step, so this
    # test would catch a loss that forgot to gather.
    assert abs(local["loss"] - single["loss"]) > 0.1
    local_error = np.abs(np.array(local["update"]) - np.array(single["update"])).max()
    assert local_error > 0.05 * step, (local_error, step)


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


MULTI_WORKER_CONFIG = """
data: {source: synthetic, synthetic_examples: 160, image_size: 32}
encoder: {name: convnet_small, options: {width: 0.25}}
method: {name: simclr, options: {projection_dim: 16}}
optimizer: {name: lars, learning_rate: 1.0, weight_decay: 0.0001, nesterov: false, schedule: cosine, warmup_epochs: 0.5}
trainer: {epochs: 2, batch_size: 16, steps_per_epoch: 2, strategy: multi_worker}
eval: {linear_epochs: 1, knn_k: 5, random_init: false}
"""


def _streamed_folder(tmp_path) -> list[str]:
    """A small unlabelled folder of generated images, streamed from its files (data.cache=none)."""
    from PIL import Image

    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(96):
        pixels = (rng.random((32, 32, 3)) * 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"img{i:03d}.png")
    return ["--set", "data.source=folder", f"data.path={folder}", "data.labels=none", "data.cache=none"]


def _prepared_shards(tmp_path) -> list[str]:
    """The same folder packed into eight-odd TFRecord shards, streamed (each worker reads its own shards)."""
    from sslzoo.prepare import main as prepare

    _streamed_folder(tmp_path)
    assert prepare([str(tmp_path / "photos"), "--output", str(tmp_path / "shards"), "--labels", "none",
                    "--shard-size-mb", "0.04"]) == 0
    return ["--set", "data.source=tfrecord", f"data.path={tmp_path / 'shards'}", "data.cache=none"]


@pytest.mark.parametrize("data", ["synthetic", "streamed_folder", "tfrecord_shards"])
def test_two_workers_on_localhost_train_identical_weights(tmp_path, data):
    """Two train.py processes under MultiWorkerMirroredStrategy (TF_CONFIG, loopback addresses): on
    in-memory data, on a folder streamed from its files (input sharded by data across the workers), and on
    prepared shards (sharded by file: each worker reads only its own shards). With the default fused batch
    norm the saved encoder and its initial weights load with plain Keras (they once did not: the weights
    file named the fused layers by their class)."""
    config = tmp_path / "simclr_multi_worker.yaml"
    config.write_text(MULTI_WORKER_CONFIG)
    overrides = {"synthetic": lambda _: [], "streamed_folder": _streamed_folder,
                 "tfrecord_shards": _prepared_shards}[data](tmp_path)
    workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    processes = []
    for index in range(2):
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        command = [sys.executable, "train.py", "--config", str(config), "--quiet", *overrides,
                   "--output", str(tmp_path / f"worker{index}")]
        log = open(tmp_path / f"worker{index}.log", "w")
        processes.append((subprocess.Popen(
            command, cwd=ROOT, env={**ENV, "TF_CONFIG": json.dumps(tf_config)}, stdout=log, stderr=log
        ), log))
    try:
        codes = [process.wait(timeout=300) for process, _ in processes]
    finally:
        for process, log in processes:
            if process.poll() is None:
                process.kill()
            log.close()
    logs = [(tmp_path / f"worker{i}.log").read_text()[-3000:] for i in range(2)]
    assert codes == [0, 0], logs

    encoders = [keras.saving.load_model(tmp_path / f"worker{i}" / "encoder.keras") for i in range(2)]
    initial = keras.models.clone_model(encoders[0])
    initial.load_weights(tmp_path / "worker0" / "init.weights.h5")
    for a, b in zip(encoders[0].get_weights(), encoders[1].get_weights()):
        np.testing.assert_array_equal(a, b)
    moved = max(np.abs(a - b).max() for a, b in zip(encoders[0].get_weights(), initial.get_weights()))
    assert moved > 1e-4  # they trained, in lockstep
    histories = [(tmp_path / f"worker{i}" / "history.csv").read_text() for i in range(2)]
    assert histories[0] == histories[1] and len(histories[0].splitlines()) == 3  # header + 2 epochs
    sharding = [json.loads((tmp_path / f"worker{i}" / "metrics.json").read_text()).get("input_sharding")
                for i in range(2)]
    assert sharding == (["file", "file"] if data == "tfrecord_shards" else [None, None])
