"""Pretrain a self-supervised encoder, evaluate it, and write the run folder.

    python -m sslzoo.training --config zoo_configs/rotnet_convnet_small_cifar10.yaml \
        [--set data.source=folder data.path=../shared/data/cifar10/train trainer.epochs=1] \
        [--output runs/<name>] [--eval-only]

Rerunning the same command on the same --output resumes from the last finished epoch. `train.py` in a
checkout is this command; `--config` also takes a shipped config's name (e.g. rotnet_convnet_small_cifar10).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="YAML config, e.g. zoo_configs/<method>_<encoder>_<dataset>.yaml")
    parser.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                        help="override config values, e.g. --set trainer.epochs=1 data.source=folder")
    parser.add_argument("--output", help="run folder (default: runs/<config name>)")
    parser.add_argument("--eval-only", action="store_true", help="re-evaluate the run's trained encoder")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # Import after argument parsing so --help is instant.
    from sslzoo import config as config_lib
    from sslzoo.data import DataError
    from sslzoo.settings import resolve_config
    from sslzoo.training.trainer import TrainingDivergedError, check_names, evaluate_run, train_run

    try:
        config = config_lib.load(resolve_config(args.config), args.set)
        check_names(config)
    except config_lib.ConfigError as error:
        print(f"config error: {error}", file=sys.stderr)
        return 2
    output = Path(args.output or Path("runs") / Path(args.config).stem)
    try:
        if args.eval_only:
            metrics = evaluate_run(output)
        else:
            metrics = train_run(config, output, verbose=0 if args.quiet else "auto")
    except (config_lib.ConfigError, DataError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except TrainingDivergedError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(summary(output, metrics))
    return 0


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
