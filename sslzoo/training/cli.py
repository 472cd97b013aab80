"""Pretrain a self-supervised encoder, evaluate it, and write the run folder.

    sslzoo train --config rotnet_convnet_small_cifar10 \
        [--set data.source=folder data.path=photos/ trainer.epochs=1] \
        [--output runs/<name>] [--eval-only] [--debug]

Rerunning the same command on the same --output resumes from the last finished epoch. `python train.py`
in a checkout and `python -m sslzoo.training` are this command; `--config` takes a YAML path or a shipped
config's name, with or without .yaml (`sslzoo list` lists them).
One process at a time trains in a run folder (a second one is refused, exit code 2). An error is one line
on stderr, exit code 2 (1 for a diverged training); --debug adds its traceback.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from sslzoo.cli_errors import OneLineParser, report
from sslzoo.errors import TrainingDivergedError


def parse_args(argv=None) -> argparse.Namespace:
    parser = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True,
                        help="YAML config: a path, or a shipped config's name, e.g. rotnet_convnet_small_cifar10")
    parser.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                        help="override config values, e.g. --set trainer.epochs=1 data.source=folder")
    parser.add_argument("--output", help="run folder (default: runs/<config name>)")
    parser.add_argument("--eval-only", action="store_true", help="re-evaluate the run's trained encoder")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--debug", action="store_true", help="print the traceback of an error, not just its line")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    output = Path(args.output or Path("runs") / Path(args.config).stem)
    try:
        metrics = _run(args, output)
    except Exception as error:
        return report(error, debug=args.debug, codes={TrainingDivergedError: 1})
    print(summary(output, metrics))
    return 0


def _run(args: argparse.Namespace, output: Path) -> dict:
    # Imported after argument parsing so --help is instant, and TensorFlow only once the config is valid.
    from sslzoo import config as config_lib
    from sslzoo.settings import resolve_config
    from sslzoo.startup import quiet_tensorflow

    config = config_lib.load(resolve_config(args.config), args.set)
    print(start_line(config, output, args.eval_only), flush=True)
    quiet_tensorflow()
    from sslzoo.training.trainer import evaluate_run, train_run

    if args.eval_only:
        return evaluate_run(output)
    return train_run(config, output, verbose=0 if args.quiet else "auto")


def start_line(config, output: Path, eval_only: bool = False) -> str:
    """The command's first line of output, printed before TensorFlow starts."""
    data = config.data
    where = data.name if data.source == "tfds" else data.path if data.path else ""
    source = f"{data.source} data" + (f" ({where})" if where else "")
    action = "evaluating" if eval_only else "training"
    return f"sslzoo: {action} {config.method.name} ({config.encoder.name}) on {source} -> {output}"


def summary(output: Path, metrics: dict) -> str:
    baseline = metrics.get("random_init", {})
    lines = [
        f"run: {output}",
        f"method={metrics['method']} encoder={metrics['encoder']} dataset={metrics['dataset']}",
    ]
    if "knn_top1" in metrics:
        lines += [
            f"kNN top-1     {metrics['knn_top1']:6.2f}%   (random init {baseline.get('knn_top1', float('nan')):6.2f}%)",
            f"linear top-1  {metrics['linear_top1']:6.2f}%   (random init {baseline.get('linear_top1', float('nan')):6.2f}%)",
        ]
    else:
        lines.append(f"evaluation {metrics.get('evaluation', 'not run')}: add --set eval.data_path=<labelled folder>")
    if metrics.get("images_per_second"):
        lines.append(f"training: {metrics['train_seconds']} s, {metrics['images_per_second']} images/s")
    lines.append(f"metrics: {output / 'metrics.json'}")
    return "\n".join(lines)
