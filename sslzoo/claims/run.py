"""Trains a claim's arms, one `train.py` child per arm and seed, and writes its results and report.

A finished run (its metrics.json) is read, not trained again, so an interrupted claim resumes where it
stopped; the trainer itself refuses a folder trained with another config.
"""

from __future__ import annotations

import json
import math
import subprocess
import time
from pathlib import Path
from typing import Callable, Dict, List, Sequence

from sslzoo import settings
from sslzoo.benchmark.runner import log_tail
from sslzoo.claims import Claim, spread, verdict
from sslzoo.files import atomic_write_text

LOG_TAIL_LINES = 40  # a Python traceback's length: the failing train.py's error and where it came from


class ClaimRunError(RuntimeError):
    """An arm's training failed; the message names the run folder and ends with its log."""


def arm_command(claim: Claim, arm_overrides: Sequence[str], data: Sequence[str], extra: Sequence[str],
                seed: int, run_dir: Path) -> List[str]:
    """The arm's `train.py` command: the claim's config, the data, the claim's budget, the arm's setting,
    the seed, then the user's overrides (which apply to every arm alike)."""
    return [*settings.train_command(), "--config", claim.config, "--quiet", "--set", *data, *claim.budget,
            *arm_overrides, f"trainer.seed={seed}", "eval.random_init=false", *extra, "--output", str(run_dir)]


def run_arm(command: Sequence[str], run_dir: Path) -> dict:
    """metrics.json of the run in `run_dir`, training it first unless it finished before."""
    metrics = run_dir / "metrics.json"
    if not metrics.exists():
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        log = run_dir.parent / f"{run_dir.name}.log"
        with open(log, "ab") as handle:  # appended: an interrupted attempt's log stays above the resumed one's
            handle.write(f"=== {' '.join(command)}\n".encode())
            handle.flush()
            code = subprocess.call(list(command), stdout=handle, stderr=subprocess.STDOUT, cwd=settings.child_cwd())
        if code != 0 or not metrics.exists():
            tail = log_tail(log, LOG_TAIL_LINES)
            raise ClaimRunError(f"{run_dir}: training failed (exit code {code}); rerun the same command to resume "
                                f"after fixing it. Log {log}:\n{tail}")
    return json.loads(metrics.read_text())


def run_claim(claim: Claim, seeds: Sequence[int], data: Sequence[str], extra: Sequence[str], output: Path,
              progress: Callable[[str], None] = print) -> dict:
    """Every arm of `claim` for every seed (seeds outermost, so an interrupted claim has balanced arms);
    returns and writes the results (results.json, report.md in `output`/claim.name)."""
    folder = output / claim.name
    runs: Dict[str, List[dict]] = {arm.name: [] for arm in claim.arms}
    start = time.perf_counter()
    for seed in seeds:
        for arm in claim.arms:
            run_dir = folder / arm.name / f"seed{seed}"
            progress(f"{claim.name}: {arm.name}, seed {seed}")
            metrics = run_arm(arm_command(claim, arm.overrides, data, extra, seed, run_dir), run_dir)
            runs[arm.name].append({"seed": seed, "knn_top1": metrics.get("knn_top1"),
                                   "linear_top1": metrics.get("linear_top1"),
                                   "train_seconds": metrics.get("train_seconds")})
    values = {name: [run[claim.metric] for run in rows] for name, rows in runs.items()}
    result, pairs = verdict(claim, values)
    results = {"claim": claim.name, "source": claim.source, "statement": claim.statement,
               "config": claim.config, "budget": list(claim.budget), "overrides": list(extra),
               "metric": claim.metric, "seeds": list(seeds), "verdict": result, "pairs": pairs,
               "arms": {arm.name: {"overrides": list(arm.overrides), "runs": runs[arm.name]} for arm in claim.arms},
               "seconds": round(time.perf_counter() - start, 1)}
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / "results.json", json.dumps(results, indent=2) + "\n")
    atomic_write_text(folder / "report.md", report(results))
    return results


def _interval(values: Sequence[float]) -> str:
    mean, std = spread(values)
    return f"{mean:.2f}" if math.isnan(std) else f"{mean:.2f} +- {std:.2f}"


def report(results: dict) -> str:
    """A claim's markdown report: the claim, each arm's mean +- std and per-seed values, the verdict."""
    metric = results["metric"]
    lines = [f"## {results['claim']}: {results['verdict']}", "",
             f"{results['statement']} ({results['source']}).", "",
             f"Config `{results['config']}` with `{' '.join(results['budget'] + results['overrides'])}`, "
             f"seeds {', '.join(str(seed) for seed in results['seeds'])}; metric: {metric} (%).", "",
             "| arm | overrides | mean +- std | per seed | kNN top-1 per seed |", "|---|---|---|---|---|"]
    for name, arm in results["arms"].items():
        values = [run[metric] for run in arm["runs"]]
        knn = [run["knn_top1"] for run in arm["runs"]]
        lines.append(f"| {name} | `{' '.join(arm['overrides']) or '(the config)'}` | {_interval(values)} | "
                     f"{' / '.join(f'{v:.2f}' for v in values)} | {' / '.join(f'{v:.2f}' for v in knn)} |")
    lines += ["", *[f"- {pair['better']} beats {pair['worse']}: {pair['verdict']}" for pair in results["pairs"]]]
    return "\n".join(lines) + "\n"
