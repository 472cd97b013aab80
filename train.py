"""Pretrain a self-supervised encoder, evaluate it, and write the run folder: the checkout's entry point
of `sslzoo train`.

    python train.py --config zoo_configs/rotnet_convnet_small_cifar10.yaml \
        [--set data.source=folder data.path=photos/ trainer.epochs=1] [--output runs/<name>] [--eval-only]

The same command as `sslzoo train` and `python -m sslzoo.training` (sslzoo/training/cli.py).
"""

import sys

from sslzoo.training.cli import main, parse_args, summary  # noqa: F401  (the checkout's entry point)

if __name__ == "__main__":
    sys.exit(main())
