"""`python -m sslzoo ...`: the `sslzoo` command (sslzoo/cli.py)."""

import sys

from sslzoo.cli import main

if __name__ == "__main__":
    sys.exit(main())
