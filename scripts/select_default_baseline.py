#!/usr/bin/env python
"""One arm of `sslzoo select` trained alone for a fixed number of units: docs/select.md's baselines.

The default a user would pick, trained for a whole budget:

    python scripts/select_default_baseline.py --data <unlabelled> --eval-data <labelled, 50 per class> \
        --validation-data <labelled root/<class>/<image>> --units 218 --unit-steps 312 --seconds 3600 \
        --output runs/simclr_hour [--method simclr] [--seed 0]

and a row of the exhaustive answer (every method at the winner's final budget), e.g. MoCo v1 at 145 units:
`--method moco_v1 --units 145 --seconds 100000`.

Trains the method's arm as the search would (its zoo config on --data, `candidate_config`), its schedule
stretched over `--units` units of `--unit-steps` steps (`schedule_overrides`), stopped at an epoch end
before `--seconds` of training (`Deadline`); then scores it as `python -m sslzoo.select.validate` scores a
search's rows (the benchmark's protocol on --validation-data's 10% split, seed 0) and by kNN on select's
held-back part of --eval-data (same split, seed 0). Writes `<output>/result.json`.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for flag in ("--data", "--eval-data", "--validation-data", "--output"):
        parser.add_argument(flag, required=True)
    parser.add_argument("--method", default="simclr")
    parser.add_argument("--units", type=int, required=True)
    parser.add_argument("--unit-steps", type=int, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from sslzoo import config as config_lib
    from sslzoo.data.kinds import ImageKind
    from sslzoo.evaluation.features import extract_features
    from sslzoo.evaluation.protocol import evaluate_encoder
    from sslzoo.files import atomic_write_text
    from sslzoo.select import search, space
    from sslzoo.select import trial as trials
    from sslzoo.select.labelled import LabelledSet
    from sslzoo.select.plan import schedule_overrides
    from sslzoo.select.validate import benchmark_splits
    from sslzoo.training import trainer

    output = Path(args.output)
    settings = search.Settings(data=args.data, eval_data=args.eval_data, budget_minutes=args.seconds / 60)
    candidate = space.candidates(space.discover_arms([args.method]), per_arm=1, seed=0)[0]
    config = search.candidate_config(candidate, settings)
    config = config_lib.from_dict(config.to_dict(), [*schedule_overrides(config, args.units, args.unit_steps),
                                                     f"trainer.seed={args.seed}"])
    data = ImageKind().load(config)
    start = time.perf_counter()
    deadline = trials.Deadline(start + args.seconds)
    encoder, _, training = trainer.pretrain(config, output / "run", data, extra_callbacks=[deadline])
    validation, _ = evaluate_encoder(encoder, benchmark_splits(config, args.validation_data), config.eval, seed=0)
    part = LabelledSet(args.eval_data, config.data.image_size, held_back_fraction=settings.held_back, seed=0)
    (tuning, tuning_labels), (held, held_labels) = part.tuning(), part.held_back()
    held_back = trials.held_back_scores(extract_features(encoder, tuning), tuning_labels,
                                        extract_features(encoder, held), held_labels, part.num_classes,
                                        config.eval, 0)
    result = {"method": args.method, "seed": args.seed, "planned_units": args.units,
              "units": trials.trained_units(output / "run"), "training": training,
              "validation": validation, "held_back": held_back}
    atomic_write_text(output / "result.json", json.dumps(result, indent=2, default=str))
    print(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
