"""Hyperparameter search with keras-tuner; never measured on the reported validation split.

    python tune.py probe --run runs/<name> [--algorithm hyperband|bayesian|random] [--max-trials N]
        [--output <run>/tuning/probe]
    python tune.py pretext --config zoo_configs/<cfg>.yaml \
        --param method.options.temperature=0.05,0.1,0.2,0.5 [--param optimizer.learning_rate=float:0.01:1:log] \
        [--set trainer.epochs=2 data.max_examples=8000] [--algorithm bayesian|random] [--max-trials N] \
        [--output runs/tune_<config name>]

probe: the linear probe's learning rate and weight decay on a finished run's frozen features.
pretext: any config value; each trial is an ordinary training run (<output>/trials/<id>), scored by kNN top-1.
--param forms: key=a,b,c (choices; lists as [0,1],[0,1,2,3]), key=float:lo:hi[:log], key=int:lo:hi[:log].
Objectives use a tuning split carved from the training split (data.holdout=tuning); the best and the default
setting are evaluated once on the validation split at the end. Results: <output>/tuning.json and tuning.md.
Rerunning the same command on the same --output resumes the search.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from pathlib import Path


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="search", required=True)

    probe = commands.add_parser("probe", help="tune the linear probe of a finished run")
    probe.add_argument("--run", required=True, help="run folder written by train.py")
    probe.add_argument("--algorithm", default="hyperband", choices=("hyperband", "bayesian", "random"))
    probe.add_argument("--max-trials", type=int, default=0,
                       help="cap on trials (default: 10; Hyperband's own schedule for hyperband)")

    pretext = commands.add_parser("pretext", help="tune config values, one training run per trial")
    pretext.add_argument("--config", required=True, help="YAML config, e.g. zoo_configs/<cfg>.yaml")
    pretext.add_argument("--param", action="append", default=[], metavar="KEY=SPEC", required=True,
                         help="a searched value: key=a,b,c | key=float:lo:hi[:log] | key=int:lo:hi[:log]")
    pretext.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                         help="override config values for every trial, e.g. --set trainer.epochs=2")
    pretext.add_argument("--algorithm", default="bayesian", choices=("bayesian", "random"))
    pretext.add_argument("--max-trials", type=int, default=6)

    for sub in (probe, pretext):
        sub.add_argument("--output", help="results folder (probe: <run>/tuning/probe; pretext: runs/tune_<config>)")
        sub.add_argument("--seed", type=int, help="oracle seed (default: the config's trainer.seed)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # Import after argument parsing so --help is instant.
    from sslzoo import config as config_lib
    from sslzoo import tuning
    from sslzoo.data import DataError

    command = "python tune.py " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    try:
        if args.search == "probe":
            output = Path(args.output) if args.output else Path(args.run) / "tuning" / "probe"
            results = tuning.search_probe(args.run, output, algorithm=args.algorithm, max_trials=args.max_trials,
                                          seed=args.seed, command=command)
        else:
            specs = [tuning.parse_param(text) for text in args.param]
            config = config_lib.load(args.config, args.set)
            output = Path(args.output or Path("runs") / f"tune_{Path(args.config).stem}")
            results = tuning.search_pretext(config, specs, output, algorithm=args.algorithm,
                                            max_trials=args.max_trials, seed=args.seed, config_path=args.config,
                                            sets=args.set, command=command)
    except (config_lib.ConfigError, DataError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(tuning.summary(results, output))
    return 0


if __name__ == "__main__":
    sys.exit(main())
