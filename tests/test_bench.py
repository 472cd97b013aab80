"""The benchmark script's measurements run (speed targets are met by running it, never in a test)."""

import os
import time

import numpy as np
import pytest
from PIL import Image

from sslzoo.augment.views import two_views
from sslzoo.bench import (InconsistentMeasurement, SteadyWindow, _between, _snapshot, alternate,
                          jpeg_augment_rate, throughput_table)


def test_jpeg_augment_rate_reads_decodes_and_augments_every_batch(tmp_path):
    seen = []

    def augment(images, labels, seed):
        view_1, view_2 = two_views(images, seed)
        seen.append(view_1.shape)  # traced once inside tf.data: the static shape of a batch
        return {"view_1": view_1, "view_2": view_2}

    for i in range(20):
        pixels = np.random.default_rng(i).integers(0, 256, (32, 32, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / f"{i:02d}.jpg")
    rate = jpeg_augment_rate(str(tmp_path), augment, batch_size=4, batches=3)
    assert np.isfinite(rate) and rate > 0
    assert seen and tuple(seen[0]) == (4, 32, 32, 3)


def _fake(rates, log, name, images=1000):
    """A measurement returning a measured row for the next of `rates` (images/s), logging its calls."""
    rates = iter(rates)

    def measure():
        log.append(name)
        return {"seconds": images / next(rates), "cpu_share": 0.5}

    return measure


def test_step_and_end_to_end_alternate_and_report_every_round_with_medians():
    log = []
    result = alternate(_fake([100, 110, 90], log, "step"), _fake([95, 80, 97], log, "end"), images=1000, rounds=3)
    assert log == ["step", "end"] * 3  # alternating: neither gains from always running second
    assert result["step_rounds"] == [100.0, 110.0, 90.0] and result["end_to_end_rounds"] == [95.0, 80.0, 97.0]
    assert result["step_images_per_second"] == 100.0 and result["end_to_end_images_per_second"] == 95.0
    assert result["step_spread"] == 0.2  # (110 - 90) / 100
    assert result["end_to_end_over_step"] == 0.95 and result["attempts"] == 1


def test_a_step_slower_than_end_to_end_is_measured_again_not_reported(capsys):
    log = []
    # First attempt: step 60 against end to end 95 (impossible: end to end includes the step).
    result = alternate(_fake([60, 61, 59, 100, 101, 99], log, "step"), _fake([95] * 6, log, "end"),
                       images=1000, rounds=3)
    assert len(log) == 12 and result["attempts"] == 2
    assert result["step_images_per_second"] == 100.0
    assert "not a result" in capsys.readouterr().err


def test_a_step_that_stays_slower_than_end_to_end_stops_the_bench(capsys):
    with pytest.raises(InconsistentMeasurement, match=r"\[60.0, 60.0\]"):
        alternate(_fake([60] * 4, [], "step"), _fake([95] * 4, [], "end"), images=1000, rounds=2, attempts=2)
    assert capsys.readouterr().err.count("Measuring again (2 of 2)") == 1  # not once more before stopping
    # Within the 5% tolerance it is a result.
    assert alternate(_fake([96] * 2, [], "step"), _fake([100] * 2, [], "end"), images=1000, rounds=2)["attempts"] == 1


def _timed(work) -> dict:
    start = _snapshot()
    work()
    return _between(start, _snapshot())


def test_a_measured_row_reports_the_share_of_the_cpus_the_work_used():
    busy = _timed(lambda: sum(i * i for i in range(3_000_000)))
    idle = _timed(lambda: time.sleep(0.3))
    assert busy["seconds"] > 0 and idle["seconds"] >= 0.3
    cores = os.cpu_count()
    assert busy["cpu_share"] > 0.5 / cores  # one busy thread: up to 1 / cores of the machine
    assert idle["cpu_share"] < 0.2 / cores


def test_the_steady_window_times_the_steps_after_the_skipped_ones():
    import keras

    class Slow(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            time.sleep(0.3 if batch < 2 else 0.05)  # the skipped steps are the slow ones

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    x, y = np.zeros((8, 2), np.float32), np.zeros((8, 1), np.float32)
    window = SteadyWindow(skip=2)
    model.fit(x, y, batch_size=1, epochs=1, steps_per_epoch=6, verbose=0, callbacks=[Slow(), window])
    seconds = window.row()["seconds"]
    assert 4 * 0.05 <= seconds < 0.6  # the 4 steps after the second, none of the 0.3 s ones
    short = SteadyWindow(skip=2)
    model.fit(x, y, batch_size=4, epochs=1, steps_per_epoch=2, verbose=0, callbacks=[short])
    with pytest.raises(ValueError, match="nothing was timed"):
        short.row()


def test_the_throughput_table_has_a_row_per_method_and_flags_slow_input():
    row = {"method": "rotnet", "config": "rotnet_convnet_small_cifar10", "batch_size": 128,
           "step_images_per_second": 1000.0, "step_rounds": [1000.0, 990.0, 1010.0],
           "end_to_end_images_per_second": 850.0, "end_to_end_rounds": [850.0, 840.0, 860.0],
           "end_to_end_over_step": 0.85, "pipeline_images_per_second": 5000.0}
    stopped = {"method": "simclr", "config": "simclr_convnet_small_cifar10", "not_measured": "..."}
    lines = throughput_table([row, stopped]).splitlines()
    assert len(lines) == 4 and all(line.count("|") == 7 for line in lines)
    assert "1,000.0 (1,000.0 / 990.0 / 1,010.0)" in lines[2] and "0.85 **below 0.9**" in lines[2]
    assert "not measured" in lines[3]
