#!/usr/bin/env python
"""The folders docs/select.md's measurements read, made from one labelled folder as links (no image copied).

    python scripts/select_folders.py --data <labelled root/<class>/<image>> --output <scratch>/split \
        [--per-class 50] [--val-fraction 0.1] [--seed 0]

writes
- `<output>/train/<class>/...`: the benchmark's training split of --data (stratified, `--val-fraction`,
  `--seed`: the split `python -m sslzoo.select.validate` and the zoo benchmark report on), `select --data`;
- `<output>/val/<class>/...`: its validation split, never read by a search;
- `<output>/eval<per-class>/<class>/...`: `--per-class` images of every class drawn from the training split
  (`numpy.random.default_rng(seed)`, one permutation per class in sorted class order), `select --eval-data`.

Refuses an output folder that exists, so an earlier draw is never mixed with a new one.
"""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

import numpy as np


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--per-class", type=int, default=50)
    parser.add_argument("--val-fraction", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from sslzoo.data.folder import list_image_folder
    from sslzoo.data.splits import stratified_split

    output = Path(args.output)
    if output.exists():
        raise SystemExit(f"{output} exists: name a new --output (an earlier draw is never mixed with a new one)")
    paths, labels, names = list_image_folder(args.data)
    train, val = stratified_split(labels, val_fraction=args.val_fraction, seed=args.seed)
    rng = np.random.default_rng(args.seed)
    labelled = []
    for label in range(len(names)):
        members = train[labels[train] == label]
        if len(members) < args.per_class:
            raise SystemExit(f"class '{names[label]}' has {len(members)} training-split images, fewer than "
                             f"--per-class {args.per_class}: lower --per-class")
        labelled.append(members[rng.permutation(len(members))[:args.per_class]])
    # Built beside the output and renamed at the end, so an interrupted run leaves no half-made draw.
    partial = output.with_name(output.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    for part, indices in (("train", train), ("val", val), (f"eval{args.per_class}", np.concatenate(labelled))):
        for i in indices:
            folder = partial / part / names[labels[i]]
            folder.mkdir(parents=True, exist_ok=True)
            os.symlink(Path(paths[i]).resolve(), folder / Path(paths[i]).name)
        print(f"{part}: {len(indices)} images")
    partial.rename(output)


if __name__ == "__main__":
    main()
