"""TensorBoard as the dashboard: the kNN monitor (validation kNN top-1 in the epoch logs, without changing
the training it watches) and the run's final metrics, HParams and pictures in its logs/ folder."""

import csv
import json
import math

import keras
import numpy as np
import pytest

from sslzoo import config as config_lib
from sslzoo.config import ConfigError
from sslzoo.data import load_splits
from sslzoo.evaluation.monitor import SECONDS, TOP1, KNNMonitor, fixed_subset
from sslzoo.training import trainer
from sslzoo.training.trainer import train_run

from test_training import small_config

MONITOR = ["eval.monitor_examples=150", "eval.random_init=false", "eval.keep_features=false"]


def _history(run):
    with open(run / "history.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def tensorboard_values(folder):
    """{tag: [values in step order]} of every scalar-like summary in the event files under `folder`."""
    import tensorflow as tf

    values = {}
    for path in sorted(folder.rglob("events.out.tfevents*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                values.setdefault(value.tag, []).append((event.step, value))
    return {tag: [value for _, value in sorted(pairs, key=lambda pair: pair[0])] for tag, pairs in values.items()}


def _weights(run):
    return keras.saving.load_model(run / "encoder.keras").get_weights()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same tiny run twice: without the monitor, and with it every epoch."""
    root = tmp_path_factory.mktemp("monitor")
    train_run(small_config("trainer.epochs=2", *MONITOR), root / "off", verbose=0)
    train_run(small_config("trainer.epochs=2", "eval.monitor_every=1", *MONITOR), root / "on", verbose=0)
    return root / "off", root / "on"


def test_every_epoch_has_a_top1_and_its_cost_in_history(runs):
    _, on = runs
    rows = _history(on)
    assert [row["epoch"] for row in rows] == ["0", "1"]
    for row in rows:
        assert 0.0 <= float(row[TOP1]) <= 100.0
        assert float(row[SECONDS]) > 0.0
    import tensorflow as tf

    logged = [float(tf.make_ndarray(value.tensor)) for value in tensorboard_values(on / "logs")[f"epoch_{TOP1}"]]
    assert logged == pytest.approx([float(row[TOP1]) for row in rows], abs=1e-4)


def test_last_top1_is_the_knn_of_the_final_encoder_on_the_same_subset(runs):
    _, on = runs
    config = config_lib.load(on / "config.yaml")
    encoder = keras.saving.load_model(on / "encoder.keras")
    splits = load_splits(config.data)
    monitor = KNNMonitor.from_splits(encoder, splits, every=1, examples=150, seed=config.trainer.seed,
                                     k=config.eval.knn_k, temperature=config.eval.knn_temperature)
    # A subset of the 360 training images as the bank; all 40 validation images as queries.
    assert len(monitor.bank_labels) == 150 < len(splits.train) and len(monitor.query_labels) == len(splits.val)
    assert float(_history(on)[-1][TOP1]) == pytest.approx(monitor.measure(), abs=1e-3)
    # Every measurement reuses one traced forward pass (no retracing per epoch).
    assert monitor.measure() == pytest.approx(float(_history(on)[-1][TOP1]), abs=1e-3)
    assert monitor.forward.experimental_get_tracing_count() == 1


def test_the_monitor_does_not_change_the_training(runs):
    off, on = runs
    assert TOP1 not in _history(off)[0]
    for a, b in zip(_weights(off), _weights(on), strict=True):
        np.testing.assert_array_equal(a, b)


class _Interrupted(Exception):
    pass


def test_a_resumed_run_with_the_monitor_ends_like_the_run_without(runs, tmp_path, monkeypatch):
    off, _ = runs
    config = small_config("trainer.epochs=2", "eval.monitor_every=2", *MONITOR)
    run = tmp_path / "resumed"

    class StopAfterFirstEpoch(keras.callbacks.TensorBoard):
        # The last callback: the first epoch is checkpointed and in history.csv when the run stops.
        def on_epoch_end(self, epoch, logs=None):
            super().on_epoch_end(epoch, logs)
            raise _Interrupted

    with monkeypatch.context() as patch:
        patch.setattr(trainer.keras.callbacks, "TensorBoard", StopAfterFirstEpoch)
        with pytest.raises(_Interrupted):
            train_run(config, run, verbose=0)
    metrics = train_run(config, run, verbose=0)
    assert metrics["resumed_from_epoch"] == 1
    rows = _history(run)
    # Epoch 1 had no measurement (every 2 epochs): a nan placeholder keeps the column in the first session.
    assert [row["epoch"] for row in rows] == ["0", "1"]
    assert math.isnan(float(rows[0][TOP1])) and 0.0 <= float(rows[1][TOP1]) <= 100.0
    for a, b in zip(_weights(off), _weights(run), strict=True):
        np.testing.assert_array_equal(a, b)


def test_placeholders_reach_the_csv_but_not_what_follows():
    monitor = KNNMonitor(None, None, [], None, [], num_classes=2, every=3)
    logs = {"loss": 1.0}
    monitor.on_epoch_end(0, logs)  # epoch 1 of every 3: no measurement, no encoder call
    assert math.isnan(logs[TOP1]) and math.isnan(logs[SECONDS])
    KNNMonitor.placeholder_remover().on_epoch_end(0, logs)
    assert logs == {"loss": 1.0}


def test_fixed_subset_is_seeded_sorted_and_capped():
    first = fixed_subset(1000, 100, seed=3)
    assert np.array_equal(first, fixed_subset(1000, 100, seed=3))
    assert not np.array_equal(first, fixed_subset(1000, 100, seed=4))
    assert len(np.unique(first)) == 100 and np.all(np.diff(first) > 0) and first.max() < 1000
    assert np.array_equal(fixed_subset(50, 100, seed=3), np.arange(50))


@pytest.mark.parametrize("override, fragment", [
    ("eval.monitor_every=-1", "eval.monitor_every must be >= 0"),
    ("eval.monitor_examples=0", "eval.monitor_examples must be >= 1"),
])
def test_bad_monitor_settings_are_refused_with_the_key(override, fragment):
    with pytest.raises(ConfigError, match=fragment):
        small_config(override)


def _summaries(folder, plugin):
    return {tag: values for tag, values in tensorboard_values(folder).items()
            if values[0].metadata.plugin_data.plugin_name == plugin}


def test_final_metrics_are_scalars_and_text_in_the_logs(runs):
    import tensorflow as tf

    _, on = runs
    metrics = json.loads((on / "metrics.json").read_text())
    scalars = _summaries(on / "logs", "scalars")
    # Only the top folder: the final numbers are not mixed into the train/validation epoch curves.
    top = {tag for tag in _summaries_top(on / "logs")}
    for key in ("knn_top1", "linear_top1", "train_seconds"):
        (value,) = scalars[f"final/{key}"]
        assert float(tf.make_ndarray(value.tensor)) == pytest.approx(metrics[key], rel=1e-6)
        assert f"final/{key}" in top
    assert "final/pretext_val/rotation_top1" in scalars and "final/machine/cpus" not in scalars
    (table,) = _summaries(on / "logs", "text")["final/metrics"]
    text = tf.make_ndarray(table.tensor).item().decode()
    assert f"| knn_top1 | {metrics['knn_top1']:g} |" in text


def _summaries_top(folder):
    import tensorflow as tf

    return {value.tag for path in folder.glob("events.out.tfevents*")
            for event in tf.compat.v1.train.summary_iterator(str(path)) for value in event.summary.value}


def test_hparams_session_holds_the_runs_main_settings(runs):
    from tensorboard.plugins.hparams import plugin_data_pb2

    _, on = runs
    (start,) = [plugin_data_pb2.HParamsPluginData.FromString(value.metadata.plugin_data.content)
                for value in _summaries(on / "logs", "hparams")["_hparams_/session_start_info"]]
    hparams = start.session_start_info.hparams
    config = config_lib.load(on / "config.yaml")
    assert hparams["method"].string_value == "rotnet" and hparams["encoder"].string_value == "convnet_small"
    assert hparams["epochs"].number_value == 2 and hparams["batch_size"].number_value == 32
    assert hparams["learning_rate"].number_value == pytest.approx(config.optimizer.learning_rate)


def test_the_runs_pictures_are_images_in_the_logs(runs):
    _, on = runs
    metrics = json.loads((on / "metrics.json").read_text())
    images = _summaries(on / "logs", "images")
    expected = {f"pictures/{name}" for name in [*metrics["pictures"], "curves.png", "embedding_map.png",
                                                 "retrieval.png"]}
    assert all((on / tag.split("/", 1)[1]).is_file() for tag in expected)
    assert set(images) == expected
    import tensorflow as tf

    (curves,) = images["pictures/curves.png"]
    width, height, png = tf.make_ndarray(curves.tensor)
    picture = tf.io.decode_png(tf.io.read_file(str(on / "curves.png")))
    assert (int(width), int(height)) == (picture.shape[1], picture.shape[0]) and png.startswith(b"\x89PNG")
