#!/usr/bin/env python
"""Writes the sslzoo model index for a folder of exports.

    python scripts/make_index.py --exports exported --output site/index.json

Every export folder (one with `model_card.json`) under `--exports` is verified against its card, then
listed with each file's sha256 and size, the card's own sha256 and size, and the card's headline numbers
(method, encoder, dataset, knn_top1, linear_top1, image_size, feature_dim). Serve the index and the export
folders side by side: files are fetched from `<base>/<name>/<relative path>`, where `<base>` is the folder
of index.json. Clients use it with `SSLZOO_INDEX_URL=<base>` (or `sslzoo.load(name, index_url=<base>)`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sslzoo.zoo.remote import build_index, write_index  # noqa: E402

__all__ = ["build_index", "write_index", "main"]


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--exports", default="exported", help="folder holding one export folder per model")
    parser.add_argument("--output", required=True, help="where to write the index, e.g. site/index.json")
    args = parser.parse_args(argv)
    index = write_index(args.exports, args.output)
    names = ", ".join(index["models"]) or "(none)"
    print(f"wrote {args.output}: {len(index['models'])} model(s): {names}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
