"""`python -m sslzoo.training --config ...`: pretrain, evaluate, write the run folder (see `cli.py`)."""

import sys

from sslzoo.training.cli import main

sys.exit(main())
