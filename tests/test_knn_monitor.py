"""The kNN monitor: validation kNN top-1 in the epoch logs, without changing the training it watches."""

import csv
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
