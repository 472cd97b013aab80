"""A finished search's encoders under the zoo benchmark's protocol, for measuring `select` itself.

    python -m sslzoo.select.validate runs/select --data <labelled root/<class>/<image> folder> \
        [--val-fraction 0.1] [--split-seed 0]

The labelled folder is split as the benchmark splits it (stratified, `--val-fraction`, `--split-seed`);
the winner, the runner-up, the default method and the random-init encoder are scored by kNN (bank: the
training split) and a linear probe (trained on it) on the validation split, with the winner's config's
evaluation settings. The numbers sit beside the benchmark's table (`docs/benchmark.md`) when the data is
the same. Writes `<output>/validation.json`. This is a measurement of the search, never an input to it:
a search's own decisions use only the tuning part of its --eval-data.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def benchmark_splits(config, data: str | Path, val_fraction: float = 0.1, split_seed: int = 0):
    """The labelled folder `data` split as the zoo benchmark splits it (stratified), read at `config`'s image size."""
    from sslzoo import config as config_lib
    from sslzoo.data import load_splits

    labelled = config_lib.from_dict(config.to_dict(), [
        "data.source=folder", f"data.path={Path(data).resolve()}", "data.labels=subfolders",
        f"data.val_fraction={val_fraction}", f"data.split_seed={split_seed}", "data.max_examples=0",
        "data.cache=memory"])
    return load_splits(labelled.data)


def validate(output: str | Path, data: str, val_fraction: float = 0.1, split_seed: int = 0) -> dict:
    from sslzoo import config as config_lib
    from sslzoo.evaluation.protocol import evaluate_encoder
    from sslzoo.files import atomic_write_text
    from sslzoo.select import search
    from sslzoo.select import trial as trials
    from sslzoo.training.build import initial_encoder

    output = Path(output)
    result = json.loads((output / search.RESULT_FILE).read_text())
    config = config_lib.load(output / search.WINNER / "config.yaml")
    splits = benchmark_splits(config, data, val_fraction, split_seed)
    folders = {"winner": output / search.WINNER}
    for row in result["held_back"]:
        if row["role"] in ("runner-up", "default"):
            trial = next(r["trial"] for r in result["trials"]
                         if r["candidate"] == row["candidate"] and r["units"] == row["units"])
            folders[row["role"]] = output / search.TRIALS / trial
    rows = []
    for role, folder in folders.items():
        scores, _ = evaluate_encoder(trials.load_encoder(folder), splits, config.eval, seed=config.trainer.seed)
        candidate = next(r["candidate"] for r in result["held_back"] if r["role"] == role)
        rows.append({"role": role, "candidate": candidate, "run": str(folder.relative_to(output)), **scores})
    scores, _ = evaluate_encoder(initial_encoder(config, output / search.WINNER, 0), splits, config.eval,
                                 seed=config.trainer.seed)
    rows.append({"role": "random init", "candidate": f"{result['winner']['candidate']} at initialization", **scores})
    report = {"data": str(data), "val_fraction": val_fraction, "split_seed": split_seed,
              "num_train": int(len(splits.train)), "num_val": int(len(splits.val)), "rows": rows}
    atomic_write_text(output / "validation.json", json.dumps(report, indent=2))
    return report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output", help="a finished sslzoo select folder")
    parser.add_argument("--data", required=True, help="labelled folder root/<class>/<image>")
    parser.add_argument("--val-fraction", type=float, default=0.1)
    parser.add_argument("--split-seed", type=int, default=0)
    args = parser.parse_args(argv)
    report = validate(args.output, args.data, args.val_fraction, args.split_seed)
    for row in report["rows"]:
        print(f"{row['role']:<12} {row['candidate']:<28} kNN {row['knn_top1']:6.2f}  linear {row['linear_top1']:6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
