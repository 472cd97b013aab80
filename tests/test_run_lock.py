"""One process per run folder: a second train.py on the same --output is refused naming the first, and a
lock left by a dead process is taken over."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sslzoo.errors import RunFolderInUseError
from sslzoo.training import cli
from sslzoo.training.lock import LOCK_NAME, hold_run_folder

ROOT = Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / "zoo_configs" / "rotnet_convnet_small_synthetic.yaml")
TINY = ["encoder.options.width=0.25", "method.options.head_width=16", "trainer.batch_size=16",
        "trainer.epochs=1", "trainer.steps_per_epoch=1", "eval.random_init=false"]
DEAD_PID = "999999999"  # above any pid_max: no process can have it
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT)}


def wait_for(condition, process, what, seconds=180):
    deadline = time.monotonic() + seconds
    while not condition():
        assert process.poll() is None, f"the process ended before {what}"
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.1)


def lock_text(run: Path) -> str:
    try:
        return (run / LOCK_NAME).read_text()
    except FileNotFoundError:
        return ""


def image_list(folder: Path, count: int = 48) -> str:
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return "".join(f"{folder / f'{i}.png'}\n" for i in range(count))


def feed_fifo(fifo: Path, text: str, process) -> None:
    """Writes `text` into the FIFO once the process reads it (without blocking on a dead reader)."""
    deadline = time.monotonic() + 60
    while True:
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            break
        except OSError as error:
            if error.errno != errno.ENXIO:  # ENXIO: no reader has opened it yet
                raise
            assert process.poll() is None and time.monotonic() < deadline, "the first run never read its list"
            time.sleep(0.1)
    os.set_blocking(fd, True)
    with os.fdopen(fd, "w") as stream:
        stream.write(text)


def test_a_second_run_on_the_same_folder_is_refused_and_the_first_finishes(tmp_path, capsys):
    # The first run's image list is a FIFO: it holds the lock and then waits, reading the list, until the
    # test has seen the second one refused. No timing guess decides which run holds the folder.
    fifo = tmp_path / "images.txt"
    os.mkfifo(fifo)
    run = tmp_path / "run"
    run.mkdir()
    (run / LOCK_NAME).write_text(f"{DEAD_PID}\npython train.py --output {run}\n")  # left by a killed run
    command = ["--config", CONFIG, "--quiet", "--set", *TINY, "data.source=list", f"data.path={fifo}",
               "--output", str(run)]
    with open(tmp_path / "first.err", "w") as first_err:
        first = subprocess.Popen([sys.executable, "train.py", *command], cwd=ROOT, env=ENV,
                                 stdout=subprocess.DEVNULL, stderr=first_err)
    try:
        wait_for(lambda: lock_text(run).startswith(f"{first.pid}\n"), first, "the first run held the lock")
        assert "train.py" in lock_text(run)

        # The second trains on generated images: were it let in, it would train and fail the test rather
        # than wait forever on the FIFO.
        second = [*command[:-2], "data.source=synthetic", "data.synthetic_examples=200", "--output", str(run)]
        assert cli.main(second) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
        assert f"is in use by PID {first.pid} (" in err and "train.py" in err and "--output" in err

        feed_fifo(fifo, image_list(tmp_path / "images"), first)
        assert first.wait(timeout=300) == 0, (tmp_path / "first.err").read_text()[-3000:]
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    log = (tmp_path / "first.err").read_text()
    assert f"taking over {run / LOCK_NAME}: the process that left it (PID {DEAD_PID}" in log
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["method"] == "rotnet" and metrics["steps_per_epoch"] == 1
    assert not (run / LOCK_NAME).exists()  # released and removed at the end of the run


def test_a_lock_held_by_a_killed_process_is_taken_over(tmp_path):
    run = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom sslzoo.training.lock import hold_run_folder\n"
         "with hold_run_folder(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(120)\n", str(run)],
        env=ENV, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(RunFolderInUseError, match=f"in use by PID {holder.pid} "):
            with hold_run_folder(run):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert lock_text(run).startswith(f"{holder.pid}\n")  # a kill -9 leaves the file, not the lock
    with hold_run_folder(run) as lock:
        assert lock.read_text().splitlines()[0] == str(os.getpid())
    assert os.listdir(run) == []


def test_one_holder_at_a_time_and_a_refused_or_empty_run_leaves_no_folder(tmp_path):
    run = tmp_path / "runs" / "new"
    with hold_run_folder(run):
        with pytest.raises(RunFolderInUseError, match=f"'{run}' is in use by PID {os.getpid()} "):
            with hold_run_folder(run):
                pass
        assert (run / LOCK_NAME).exists()
    assert os.listdir(tmp_path) == []  # made for the run, nothing written: removed, parents too
    with hold_run_folder(run):
        (run / "config.yaml").write_text("kept")
    assert os.listdir(run) == ["config.yaml"]
    with pytest.raises(RunFolderInUseError):
        with hold_run_folder(tmp_path / "other"):
            with hold_run_folder(tmp_path / "other"):
                pass
    assert sorted(os.listdir(tmp_path)) == ["runs"]
