"""The end of a run in TensorBoard: its final metrics as scalars, text and HParams, and its pictures.

    write_dashboard(run_dir, config, metrics)   # the trainer calls this once the evaluation is done

Written into `<run>/logs/`, the folder Keras' TensorBoard callback writes the epoch curves under
(`train/`, `validation/`), so `tensorboard --logdir runs/` shows every run as one HParams session
(`<name>/logs`) whose columns are the run's main settings and whose metrics are the final numbers:
runs compare in the HParams tab. No experiment config (`hparams_config`) is written: each run writing its
own would leave TensorBoard to pick one of them, and runs differ in which metrics they have (fine-tuning,
tracking J), so TensorBoard infers the columns from all sessions instead.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Iterable, List, Tuple

from sslzoo.evaluation.report import CURVES, EMBEDDING_MAP, RETRIEVAL

LOGS = "logs"
FINAL = "final"  # tag prefix of the final metrics, apart from the per-epoch "epoch_*" curves
PICTURES = "pictures"
# Sections of metrics.json that describe rather than measure the run.
NOT_MEASURES = ("machine", "data", "dataset", "pictures", "report", "method", "encoder")


def hparams_of(config) -> Dict[str, Any]:
    """The settings a run is compared by in the HParams tab (bool, int, float or str each)."""
    return {
        "method": config.method.name,
        "encoder": config.encoder.name,
        "epochs": config.trainer.epochs,
        "batch_size": config.trainer.batch_size,
        "learning_rate": config.optimizer.learning_rate,
        "optimizer": config.optimizer.name,
        "schedule": config.optimizer.schedule,
        "image_size": config.data.image_size,
        "data_source": config.data.source,
        "seed": config.trainer.seed,
    }


def final_numbers(metrics: Dict[str, Any], prefix: str = FINAL) -> List[Tuple[str, float]]:
    """(tag, value) for every number in metrics.json, nested keys joined by "/" (`final/random_init/knn_top1`)."""
    numbers = []
    for key, value in metrics.items():
        if prefix == FINAL and key in NOT_MEASURES:
            continue
        tag = f"{prefix}/{key}"
        if isinstance(value, dict):
            numbers.extend(final_numbers(value, tag))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            numbers.append((tag, float(value)))
    return numbers


def run_pictures(run_dir: Path, metrics: Dict[str, Any]) -> List[Path]:
    """The PNGs the run left in its folder: the method's pretext pictures and the report's figures."""
    names = [*metrics.get("pictures", []), CURVES, EMBEDDING_MAP, RETRIEVAL]
    return [run_dir / name for name in dict.fromkeys(names) if str(name).endswith(".png") and (run_dir / name).is_file()]


def _table(numbers: Iterable[Tuple[str, float]]) -> str:
    rows = "\n".join(f"| {tag[len(FINAL) + 1:]} | {value:g} |" for tag, value in numbers)
    return f"| metric | value |\n|---|---|\n{rows}"


def write_dashboard(run_dir: str | Path, config, metrics: Dict[str, Any]) -> Path:
    """Writes the final metrics (scalars `final/...` and a text table, the whole metrics.json as text), the
    HParams session and the run's PNGs (`pictures/<file name>`) into `<run_dir>/logs`, all at the step of the
    last epoch; returns that folder."""
    import tensorflow as tf
    from tensorboard.plugins.hparams import api as hp

    run_dir = Path(run_dir)
    step = int(config.trainer.epochs)
    numbers = final_numbers(metrics)
    writer = tf.summary.create_file_writer(str(run_dir / LOGS))
    try:
        with writer.as_default():
            hp.hparams(hparams_of(config), trial_id=run_dir.name)
            for tag, value in numbers:
                tf.summary.scalar(tag, value, step=step)
            tf.summary.text(f"{FINAL}/metrics", _table(numbers), step=step)
            # Indented: Markdown shows it as code, keeping the JSON's layout.
            text = json.dumps(metrics, indent=2, default=str).replace("\n", "\n    ")
            tf.summary.text(f"{FINAL}/metrics.json", "    " + text, step=step)
            for path in run_pictures(run_dir, metrics):
                image = tf.io.decode_png(tf.io.read_file(str(path)))
                tf.summary.image(f"{PICTURES}/{path.name}", image[tf.newaxis], step=step)
    finally:
        writer.close()
    return run_dir / LOGS
