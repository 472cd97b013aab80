"""Runs one entry's `train.py` in a subprocess, watching its run folder for the phase and ETA."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

from sslzoo import settings
from sslzoo.benchmark.entries import Entry
from sslzoo.benchmark.state import DONE, FAILED, RUNNING, BenchmarkState

POLL_SECONDS = 2.0
REPORT_EVERY_SECONDS = 60.0  # a progress line at least this often, even with no phase change
SAVE_EVERY_SECONDS = 30.0  # elapsed time saved this often, so a killed benchmark keeps most of it
LOG_TAIL_LINES = 20
EVALUATING = "evaluating (kNN, linear, fine-tune)"


def train_command(entry: Entry, overrides: Sequence[str], run_dir: Path) -> List[str]:
    return [*settings.train_command(), "--config", str(entry.config), "--set", *overrides,
            "--output", str(run_dir), "--quiet"]


def finished_epochs(run_dir: Path) -> int:
    """Rows of history.csv: one per finished epoch (CSVLogger appends across resumes)."""
    path = run_dir / "history.csv"
    if not path.exists():
        return 0
    return max(0, sum(1 for line in path.read_text().splitlines() if line.strip()) - 1)


def phase(run_dir: Path, epochs: int, started: float, budget_seconds: Optional[float] = None) -> str:
    """What the run is doing, read from its folder: metrics.json newer than `started` means done.

    With a budget in seconds, `epochs` is only a cap the run does not reach: the phase names the budget."""
    metrics = run_dir / "metrics.json"
    if metrics.exists() and metrics.stat().st_mtime >= started:
        return "done"
    done = finished_epochs(run_dir)
    if done >= epochs:
        return EVALUATING
    if done == 0 and not (run_dir / "init.weights.h5").exists():
        return "starting (data, model)"
    if budget_seconds:
        return f"pretraining epoch {done + 1} of a {budget_seconds:g} s budget"
    return f"pretraining epoch {done + 1}/{epochs}"


def estimate_eta(finished_seconds: Sequence[float], remaining_after_current: int, current_elapsed: float,
                 current_fraction: float) -> Optional[float]:
    """Seconds left: the current entry plus the remaining ones, each at the finished entries' mean.

    Without finished entries the current one is extrapolated from its share of finished epochs
    (`current_fraction`, which ignores evaluation), and the others are assumed to take as long.
    None when nothing is known yet.
    """
    if finished_seconds:
        mean = sum(finished_seconds) / len(finished_seconds)
        return max(0.0, mean - current_elapsed) + mean * remaining_after_current
    if current_fraction <= 0:
        return None
    total = current_elapsed / current_fraction
    return max(0.0, total - current_elapsed) + total * remaining_after_current


def format_seconds(seconds: Optional[float]) -> str:
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    if not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def run_entry(entry: Entry, overrides: Sequence[str], run_dir: Path, state: BenchmarkState,
              progress: Callable[[str, float], None], epochs: int) -> Dict:
    """Trains and evaluates `entry` (resuming its run folder), recording wall-clock and peak memory.

    Args:
        progress: called with (phase, elapsed seconds of this entry including earlier attempts).
        epochs: the budget, for the phase display.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    record = state.records.get(entry.stem, {})
    earlier = float(record.get("wall_clock_s") or 0.0)  # time spent by interrupted attempts
    attempts = int(record.get("attempts") or 0) + 1
    started_wall = time.time()
    state.update(entry.stem, status=RUNNING, attempts=attempts, started=started_wall,
                 command=train_command(entry, overrides, run_dir))
    log_path = run_dir / "train.log"
    start = time.perf_counter()
    with open(log_path, "ab") as log:
        log.write(f"\n=== benchmark attempt {attempts} at {time.strftime('%Y-%m-%d %H:%M:%S')} ===\n".encode())
        log.flush()
        process = subprocess.Popen(train_command(entry, overrides, run_dir), stdout=log, stderr=subprocess.STDOUT,
                                   cwd=settings.child_cwd(), env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
        status, rusage = _watch(process, run_dir, epochs, started_wall, start, earlier, state, entry, progress)
    elapsed = earlier + time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    peak_mb = round(rusage.ru_maxrss / 1024.0, 1)  # ru_maxrss is in KiB on Linux, and per child
    fields = {"status": DONE if code == 0 and (run_dir / "metrics.json").exists() else FAILED,
              "returncode": code, "wall_clock_s": round(elapsed, 1),
              "peak_mem_mb": max(peak_mb, float(record.get("peak_mem_mb") or 0.0)), "finished": time.time()}
    fields["log_tail"] = "" if fields["status"] == DONE else log_tail(log_path)
    return state.update(entry.stem, **fields)


def _watch(process, run_dir, epochs, started_wall, start, earlier, state, entry, progress):
    last_phase, last_report, last_save = None, 0.0, time.perf_counter()
    try:
        while True:
            pid, status, rusage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                process.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
                return status, rusage
            now = time.perf_counter()
            current = phase(run_dir, epochs, started_wall, state.settings.get("budget_seconds"))
            if current != last_phase or now - last_report >= REPORT_EVERY_SECONDS:
                progress(current, earlier + now - start)
                last_phase, last_report = current, now
            if now - last_save >= SAVE_EVERY_SECONDS:
                state.update(entry.stem, wall_clock_s=round(earlier + now - start, 1))
                last_save = now
            time.sleep(POLL_SECONDS)
    except BaseException:
        # Ctrl-C: stop the child too and keep the time spent, so the rerun resumes with the right total.
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        state.update(entry.stem, wall_clock_s=round(earlier + time.perf_counter() - start, 1))
        raise
