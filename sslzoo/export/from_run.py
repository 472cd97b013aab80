"""From a run folder to an export: what export.py does."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import keras
import numpy as np
import yaml

from sslzoo.export import export_encoder


def export_run(run_dir: str | Path, output_dir: str | Path, force: bool = False) -> Path:
    """Exports the trained encoder of `run_dir` to `output_dir` with a model card built from the run.

    Args:
        run_dir: folder written by `train.py` (config.yaml, metrics.json, encoder.keras).
        output_dir: e.g. exported/<name>; must not exist unless `force`.
        force: replace an existing export (still atomically).
    """
    run_dir, output_dir = Path(run_dir), Path(output_dir)
    needed = ["config.yaml", "metrics.json", "encoder.keras"]
    missing = [name for name in needed if not (run_dir / name).exists()]
    if missing:
        raise FileNotFoundError(
            f"run folder '{run_dir}' lacks {', '.join(missing)}; train it to the end first "
            f"(python train.py --config <config> --output {run_dir})"
        )
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    encoder = keras.saving.load_model(run_dir / "encoder.keras", safe_mode=True)
    samples_path = run_dir / "parity_samples.npy"
    samples = None
    if samples_path.exists():
        samples = np.load(samples_path, allow_pickle=False).astype("float32") / 255.0
    card = {
        "name": output_dir.name,
        "method": metrics.get("method"),
        "encoder": metrics.get("encoder"),
        "dataset": metrics.get("dataset"),
        "knn_top1": metrics.get("knn_top1"),
        "linear_top1": metrics.get("linear_top1"),
        "metrics": metrics,
        "config": config,
        "reproduce": reproduce_command(run_dir, output_dir),
    }
    return export_encoder(
        encoder,
        output_dir,
        image_size=int(config["data"]["image_size"]),
        card=card,
        sample_images=samples,
        force=force,
    )


def reproduce_command(run_dir: Path, output_dir: Path) -> str:
    """The commands that rebuild this export from the run's resolved config."""
    config = shlex.quote(str(run_dir / "config.yaml"))
    return (
        f"python train.py --config {config} --output {shlex.quote(str(run_dir))} && "
        f"python export.py --run {shlex.quote(str(run_dir))} --output {shlex.quote(str(output_dir))}"
    )
