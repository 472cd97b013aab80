"""`python -m sslzoo.claims --data folder:PATH [--only NAME,...] [--seeds 3]`: the papers' claims, tested.

Each claim's arms train with every seed under the claim's CPU budget (sslzoo/claims/__init__.py); the
verdict per claim is printed and written, with the per-seed figures, to OUTPUT/<claim>/report.md and
results.json, and every claim run so far to OUTPUT/claims.md. A rerun resumes: finished runs are read.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import List, Optional

from sslzoo.benchmark.entries import parse_data
from sslzoo.claims import CLAIMS
from sslzoo.claims.run import ClaimRunError, run_claim
from sslzoo.config import ConfigError
from sslzoo.files import atomic_write_text


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m sslzoo.claims", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="folder:PATH (a labelled folder, e.g. CIFAR-10's training images), "
                                       "tfds:NAME or synthetic")
    parser.add_argument("--only", default="", help="comma-separated claim names (default: every claim)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per arm, trainer.seed 0..N-1 (default 3)")
    parser.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                        help="config overrides for every arm of every claim (e.g. a smaller budget)")
    parser.add_argument("--output", default="runs/claims", help="folder of the runs and reports (default runs/claims)")
    parser.add_argument("--list", action="store_true", help="print the claims and their arms, and exit")
    return parser.parse_args(argv)


def chosen_claims(only: str) -> list:
    names = [name for name in only.split(",") if name]
    unknown = [name for name in names if name not in CLAIMS]
    if unknown:
        raise ConfigError(f"--only: unknown claim {', '.join(unknown)}; known: {', '.join(CLAIMS)}")
    return [CLAIMS[name] for name in names] if names else list(CLAIMS.values())


def summary(output: Path) -> str:
    """One row per claim with results in `output`."""
    lines = ["| claim | source | verdict | seeds | metric | seconds (the invocation that wrote it) |",
             "|---|---|---|---|---|---|"]
    for name in CLAIMS:
        path = output / name / "results.json"
        if path.exists():
            result = json.loads(path.read_text())
            lines.append(f"| [{name}]({name}/report.md) | {result['source']} | {result['verdict']} | "
                         f"{len(result['seeds'])} | {result['metric']} | {result['seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    try:
        claims = chosen_claims(args.only)
        if args.list:
            for claim in claims:
                arms = "; ".join(f"{arm.name}: {' '.join(arm.overrides) or '(the config)'}" for arm in claim.arms)
                print(f"{claim.name} ({claim.source}): {claim.statement}\n  {claim.config} {' '.join(claim.budget)}"
                      f"\n  {arms}")
            return 0
        if not args.data:
            raise ConfigError("--data is required: folder:PATH, tfds:NAME or synthetic")
        if args.seeds < 1:
            raise ConfigError(f"--seeds {args.seeds}: give 1 or more (3 or more for a verdict other than "
                              "inconclusive)")
        values = parse_data(args.data, must_exist=True)
        data = [f"data.{key}={value}" for key, value in values.items()]
        output = Path(args.output)
        if output.exists() and not output.is_dir():
            raise ConfigError(f"--output {output} is a file: give a folder (new, or one a claims run wrote)")
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for claim in claims:
        try:
            result = run_claim(claim, range(args.seeds), data, args.set, output,
                               progress=lambda line: print(line, file=sys.stderr, flush=True))
        except ClaimRunError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        print(f"{claim.name}: {result['verdict']} ({output / claim.name / 'report.md'})", flush=True)
        atomic_write_text(output / "claims.md", summary(output))
    return 0


if __name__ == "__main__":
    sys.exit(main())
