"""Hyperparameter search with keras-tuner: the checkout's entry point of `sslzoo tune`.

    python tune.py probe --run runs/<name> [--algorithm hyperband|bayesian|random] [--max-trials N]
    python tune.py pretext --config zoo_configs/<cfg>.yaml --param method.options.temperature=0.05,0.1,0.2 \
        [--set trainer.epochs=2 data.max_examples=8000] [--algorithm bayesian|random] [--max-trials N]

The same command as `sslzoo tune` and `python -m sslzoo.tuning` (sslzoo/tuning.py: `main`).
"""

import sys

from sslzoo.tuning import main, parse_args  # noqa: F401  (the checkout's entry point)

if __name__ == "__main__":
    sys.exit(main())
