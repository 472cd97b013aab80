"""Re-evaluate a finished run: `python -m sslzoo.evaluate --run runs/<name>`."""

from __future__ import annotations

import argparse
import json


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run", required=True, help="run folder written by train.py")
    args = parser.parse_args(argv)
    from sslzoo.training.trainer import evaluate_run

    print(json.dumps(evaluate_run(args.run), indent=2))


if __name__ == "__main__":
    main()
