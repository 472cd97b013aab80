"""Export a trained run's encoder: SavedModel (TF Serving layout), TFLite, .keras and a model card.

    python export.py --run runs/<name> --output exported/<name> [--force]

An existing export is never overwritten unless --force; the new export is written to a temporary folder
and renamed into place, so a failure leaves the previous export intact.
"""

from __future__ import annotations

import argparse
import logging
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="run folder written by train.py")
    parser.add_argument("--output", required=True, help="export folder, e.g. exported/<name>")
    parser.add_argument("--force", action="store_true", help="replace an existing export")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from sslzoo.export import ExportExistsError
    from sslzoo.export.from_run import export_run

    try:
        path = export_run(args.run, args.output, force=args.force)
    except (ExportExistsError, FileNotFoundError) as error:
        print(f"export error: {error}", file=sys.stderr)
        return 2
    print(f"exported {args.run} -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
