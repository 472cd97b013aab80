"""results.csv / results.md / results.png, rebuilt from benchmark.json and the run folders."""

from __future__ import annotations

import csv
import datetime
import io
import json
import os
import platform
import re
from importlib import metadata
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from sslzoo.benchmark.entries import Entry, encoder_label
from sslzoo.benchmark.state import BenchmarkState
from sslzoo.files import atomic_write, atomic_write_text

COLUMNS = ("name", "method", "kind", "knn_top1", "linear_top1", "finetune10_top1", "train_images_per_s",
           "wall_clock_s", "peak_mem_mb", "status")
METRICS = (("knn_top1", "kNN"), ("linear_top1", "linear"), ("finetune10_top1", "fine-tune 10%"))
RANDOM_INIT = "random_init"


def read_metrics(run_dir: Path) -> Dict:
    path = run_dir / "metrics.json"
    return json.loads(path.read_text()) if path.exists() else {}


def build_rows(entries: Sequence[Entry], state: BenchmarkState) -> List[Dict]:
    """One row per entry (pending ones too), after a random_init row taken from the supervised run."""
    rows = []
    for entry in entries:
        record = state.records.get(entry.stem, {})
        metrics = read_metrics(state.folder / "runs" / entry.stem) if record.get("status") == "done" else {}
        rows.append({
            "name": entry.stem, "method": entry.method, "kind": entry.kind,
            "knn_top1": metrics.get("knn_top1"), "linear_top1": metrics.get("linear_top1"),
            "finetune10_top1": metrics.get("finetune_top1"),
            "train_images_per_s": metrics.get("images_per_second"),
            "wall_clock_s": record.get("wall_clock_s"), "peak_mem_mb": record.get("peak_mem_mb"),
            "status": record.get("status", "pending"),
        })
        if entry.is_supervised and metrics.get("random_init"):
            baseline = metrics["random_init"]
            rows.insert(0, {
                "name": RANDOM_INIT, "method": entry.encoder, "kind": "baseline",
                "knn_top1": baseline.get("knn_top1"), "linear_top1": baseline.get("linear_top1"),
                "finetune10_top1": baseline.get("finetune_top1"), "train_images_per_s": None,
                "wall_clock_s": None, "peak_mem_mb": None, "status": "done",
            })
    return rows


def rows_csv(rows: Sequence[Dict]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: "" if row.get(key) is None else row[key] for key in COLUMNS})
    return out.getvalue()


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}" if value < 1000 else f"{value:.0f}"
    return str(value)


def markdown_table(rows: Sequence[Dict]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(key)) for key in COLUMNS) + " |")
    return "\n".join(lines)


def machine() -> Dict:
    """CPU model, cores, RAM and library versions, without importing TensorFlow."""
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram_gb = None
    try:
        ram_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        pass
    versions = {}
    for package in ("tensorflow", "keras"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return {"cpu": cpu, "cores": os.cpu_count(), "ram_gb": ram_gb, **versions, "python": platform.python_version()}


def machine_label(info: Dict) -> str:
    return (f"{info['cpu']}, {info['cores']} cores, {info['ram_gb']} GB RAM, no GPU; TensorFlow "
            f"{info['tensorflow']}, Keras {info['keras']}, Python {info['python']}")


def budget_label(settings: Dict) -> str:
    steps = f", at most {settings['steps_per_epoch']} steps an epoch" if settings.get("steps_per_epoch") else ""
    extra = f"; overrides for every entry: {' '.join(settings['overrides'])}" if settings.get("overrides") else ""
    length = f"{settings['epochs']} epoch(s) of pretraining"
    if settings.get("budget_seconds"):
        length = (f"{settings['budget_seconds']:g} s of pretraining per entry on this machine (trainer.time_budget_s, "
                  f"at most {settings['epochs']} epochs; a piecewise schedule becomes the cosine from its first rate)")
    return (f"{length}{steps}; fine-tuning {settings['finetune_epochs']} "
            f"epoch(s) on {settings['finetune_label_fraction']:.0%} of the training labels{extra}")


def data_label(settings: Dict) -> str:
    size = f", {settings['max_examples']} examples" if settings.get("max_examples") else ", all examples"
    return f"{settings['data']}{size} (10% held out as the validation split, deterministic)"


def effective_batch_size(entry: Entry, settings: Dict) -> int:
    """The config's batch size, unless the benchmark's --set overrides it for every entry."""
    for text in settings.get("overrides", []):
        key, _, value = text.partition("=")
        if key.strip() == "trainer.batch_size":
            return int(value)
    return entry.batch_size


def markdown(rows: Sequence[Dict], entries: Sequence[Entry], settings: Dict, info: Dict, excluded: Sequence[str]) -> str:
    batch_sizes = ", ".join(f"{short_name(e.stem)} {effective_batch_size(e, settings)}" for e in entries)
    norms = [f"{e.stem} (norm={e.encoder_options['norm']})" for e in entries if "norm" in e.encoder_options]
    commands = "\n".join(settings.get("commands", [])) or "-"
    lines = [
        "# sslzoo benchmark", "",
        markdown_table(rows), "",
        f"- Command:\n\n```\n{commands}\n```\n",
        f"- Date: {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}",
        f"- Machine: {machine_label(info)}",
        f"- Encoder: {encoder_label(entries)} for every entry"
        + (f"; normalisation as in the method's paper for {', '.join(norms)}" if norms else ""),
        f"- Data: {data_label(settings)}",
        f"- Budget: {budget_label(settings)}. "
        + ("Every entry trains for the same seconds of the same machine, so each sees as many training images "
           "as its speed affords (about train_images_per_s times the budget); "
           if settings.get("budget_seconds") else
           "Every entry makes the same number of passes over the same training split, so each sees the same "
           "number of training images; ")
        + f"batch sizes are the configs' own unless --set overrides them ({batch_sizes}).",
        "- Columns: top-1 in % on the validation split; kNN and linear probe on frozen features; "
        "finetune10_top1 fine-tunes encoder + head on 10% of the training labels; train_images_per_s is "
        "pretraining throughput (source images/s); wall_clock_s is the whole entry (data loading, "
        "pretraining, all evaluations); peak_mem_mb is the subprocess's peak resident memory.",
        f"- random_init is the supervised entry's encoder before training (the same {entries[0].encoder if entries else 'encoder'}, "
        "untrained); "
        "supervised trains it with cross-entropy on the labels within the same budget.",
        "- Published numbers for these methods come from GPU runs of hundreds of epochs on larger networks; "
        "these are short CPU runs, meant to compare the methods with each other under one budget.",
    ]
    if excluded:
        lines.append(f"- Not benchmarked: {', '.join(excluded)} (trains on video clips, not images).")
    failed = [row["name"] for row in rows if row["status"] == "failed"]
    if failed:
        lines.append(f"- Failed: {', '.join(failed)} (log tails in benchmark.json, logs in runs/<name>/train.log).")
    return "\n".join(lines) + "\n"


def short_name(name: str) -> str:
    """`simclr_convnet_small_cifar10` -> `simclr`: the method part of a config stem (any encoder)."""
    return re.sub(r"_(convnet_small|vit_tiny|vit_small|resnet18)_cifar10$", "", name)


def draw_chart(rows: Sequence[Dict], path: Path) -> Path:
    """Grouped bars (kNN / linear / fine-tune) per entry; random init as dashed lines; supervised hatched."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    baseline = next((row for row in rows if row["name"] == RANDOM_INIT), None)
    bars = [row for row in rows if row["name"] != RANDOM_INIT]
    colors = ("tab:blue", "tab:orange", "tab:green")
    width = 0.8 / len(METRICS)
    figure, axes = plt.subplots(figsize=(max(6.0, 0.9 * len(bars) + 3), 4.5))
    handles = [Patch(facecolor=color, label=label) for (_, label), color in zip(METRICS, colors)]
    for index, ((key, label), color) in enumerate(zip(METRICS, colors)):
        for position, row in enumerate(bars):
            if row.get(key) is not None:
                axes.bar(position + (index - 1) * width, row[key], width, color=color, edgecolor="black",
                         linewidth=0.3, hatch="//" if row["kind"] == "supervised" else None)
        if baseline and baseline.get(key) is not None:
            handles.append(axes.axhline(baseline[key], color=color, linestyle="--", linewidth=1.2,
                                        label=f"random init {label} ({baseline[key]:.1f})"))
    if any(row["kind"] == "supervised" for row in bars):
        handles.append(Patch(facecolor="white", edgecolor="black", hatch="//", label="supervised (uses labels)"))
    axes.set_xticks(range(len(bars)))
    axes.set_xticklabels([short_name(row["name"]) + (" *" if row["kind"] == "supervised" else "") for row in bars],
                         rotation=30, ha="right")
    axes.set_ylabel("top-1 (%)")
    axes.set_title("sslzoo benchmark: same encoder, same budget")
    axes.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=110, bbox_inches="tight"), suffix=".png")
    plt.close(figure)
    return path


def write_reports(entries: Sequence[Entry], state: BenchmarkState, excluded: Sequence[str] = (),
                  info: Optional[Dict] = None) -> List[Dict]:
    """Writes results.csv, results.md and results.png into the benchmark folder; returns the rows."""
    rows = build_rows(entries, state)
    info = info or machine()
    atomic_write_text(state.folder / "results.csv", rows_csv(rows))
    atomic_write_text(state.folder / "results.md", markdown(rows, entries, state.settings, info, excluded))
    draw_chart(rows, state.folder / "results.png")
    return rows
