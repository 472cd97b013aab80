"""The two commands: `embed` (a folder -> embeddings, projector files) and `neighbors` (search them).

    python -m sslzoo.embed embed MODEL IMAGES --output DIR [--batch-size 64] [--float16] [--overwrite]
    python -m sslzoo.embed neighbors DIR --query IMAGE|INDEX [-k 10]
    python -m sslzoo.embed neighbors DIR --duplicates 0.98 [--limit 100]

`embed_main(argv)` and `neighbors_main(argv)` return the exit code: 0, or 2 for a user error printed as one
line on stderr (`sslzoo.cli_errors`; `--debug` adds the traceback).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import List, Optional

from sslzoo.cli_errors import OneLineParser, report
from sslzoo.errors import DataError

EMBED_DESCRIPTION = """Embed every image under IMAGES (any depth, any size, JPEG/PNG/BMP/GIF/WebP) with MODEL, with
the preprocessing the export serves with, and write into DIR: embeddings.npy, paths.txt (relative to
IMAGES), embed.json, and TensorBoard projector files (tensorboard --logdir DIR). Unreadable images are
listed in embed.json and skipped. Interrupted? Rerun the same command: it goes on from the last finished
chunk."""

NEIGHBORS_DESCRIPTION = """Nearest neighbours (cosine) in an embedding folder made by `embed`: of one query (an
image file, embedded with the model recorded in embed.json, or a row INDEX or a path listed in paths.txt),
or every near-duplicate pair above a cosine threshold."""


def _embed_parser(prog: str = "sslzoo embed") -> argparse.ArgumentParser:
    from sslzoo.embed.defaults import BATCH_SIZE, CHUNK_SIZE, LABEL_MODES, MAX_PIXELS

    parser = OneLineParser(prog=prog, description=EMBED_DESCRIPTION)
    parser.add_argument("model", metavar="MODEL", help="a shipped model name (see sslzoo.list_models()), an "
                                                       "export folder, or a .keras file")
    parser.add_argument("images", metavar="IMAGES", help="the image folder")
    parser.add_argument("--output", required=True, metavar="DIR", help="the folder to create")
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE, help=f"images per batch ({BATCH_SIZE})")
    parser.add_argument("--float16", action="store_true", help="store the embeddings as float16 (half the size)")
    parser.add_argument("--overwrite", action="store_true", help="replace a finished DIR (and discard an "
                                                                 "interrupted run of another job there)")
    parser.add_argument("--labels", choices=LABEL_MODES, default="auto",
                        help="class column of metadata.tsv: subfolders (IMAGES/<class>/...), none, or auto "
                             "(subfolders when every image lies in a subfolder)")
    parser.add_argument("--chunk-size", type=int, default=CHUNK_SIZE, help=f"images per resumable chunk "
                                                                           f"({CHUNK_SIZE})")
    parser.add_argument("--max-pixels", type=int, default=MAX_PIXELS,
                        help="images whose header declares more pixels are skipped as bad (decompression-bomb "
                             f"guard, {MAX_PIXELS})")
    parser.add_argument("--debug", action="store_true", help="print the traceback of an error")
    return parser


def embed_main(argv: Optional[List[str]] = None) -> int:
    """`embed MODEL IMAGES --output DIR ...`; returns the exit code."""
    args = _embed_parser().parse_args(argv)
    try:
        from sslzoo.embed.job import embed_folder

        summary = embed_folder(args.model, args.images, args.output, batch_size=args.batch_size,
                               float16=args.float16, overwrite=args.overwrite, labels=args.labels,
                               chunk_size=args.chunk_size, max_pixels=args.max_pixels)
    except (Exception, KeyboardInterrupt) as error:  # noqa: BLE001  (report() re-raises bugs)
        if isinstance(error, KeyboardInterrupt):
            print("\ninterrupted: rerun the same command to go on from the last finished chunk", file=sys.stderr)
            return 130
        return report(error, debug=args.debug, prefix="embed")
    rate = summary["images_per_second"]
    print(f"embedded {summary['count']} images ({summary['dim']}-d {summary['dtype']}) with "
          f"{summary['model']['name']} into '{args.output}' in {summary['seconds']:.1f} s"
          + (f" ({rate:.0f} images/s)" if rate else ""))
    bad = summary["bad"]
    if bad:
        print(f"{len(bad)} bad file(s) skipped, listed in embed.json, e.g. {bad[0]['path']}: {bad[0]['error']}")
    if summary["projector"]["sprite"].get("skipped"):
        print(f"no sprite: {summary['projector']['sprite']['skipped']}")
    print(f"view the map: tensorboard --logdir {args.output}  (Projector tab)")
    return 0


def _neighbors_parser(prog: str = "sslzoo neighbors") -> argparse.ArgumentParser:
    from sslzoo.embed.search import BACKENDS

    parser = OneLineParser(prog=prog, description=NEIGHBORS_DESCRIPTION)
    parser.add_argument("folder", metavar="DIR", help="an embedding folder written by embed")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--query", metavar="IMAGE|INDEX", help="an image file, a row number of paths.txt (from 0) "
                                                             "or a path as listed there")
    what.add_argument("--duplicates", type=float, metavar="THRESHOLD",
                      help="list pairs whose cosine similarity is >= THRESHOLD (e.g. 0.98)")
    parser.add_argument("-k", type=int, default=10, help="neighbours of the query (10)")
    parser.add_argument("--limit", type=int, default=100, help="duplicate pairs printed, most similar first (100)")
    parser.add_argument("--backend", choices=BACKENDS, default="auto",
                        help="auto: NumPy for small folders, faiss above the measured crossover when installed")
    parser.add_argument("--debug", action="store_true", help="print the traceback of an error")
    return parser


def neighbors_main(argv: Optional[List[str]] = None) -> int:
    """`neighbors DIR --query IMAGE|INDEX [-k 10]` or `--duplicates THRESHOLD`; returns the exit code."""
    args = _neighbors_parser().parse_args(argv)
    try:
        if args.query is not None:
            _print_neighbors(args)
        else:
            _print_duplicates(args)
    except (Exception, KeyboardInterrupt) as error:  # noqa: BLE001  (report() re-raises bugs)
        if isinstance(error, KeyboardInterrupt):
            return 130
        return report(error, debug=args.debug, prefix="neighbors")
    return 0


def _open(folder: str):
    import numpy as np

    from sslzoo.embed.outputs import EMBEDDINGS, read_paths, read_summary

    summary = read_summary(folder)
    embeddings = np.load(Path(folder).expanduser() / EMBEDDINGS, mmap_mode="r")
    paths = read_paths(folder)
    if len(paths) != len(embeddings):
        raise DataError(f"'{folder}': {len(paths)} paths but {len(embeddings)} embeddings; embed the folder again")
    return summary, embeddings, paths


def query_vector(query: str, summary: dict, embeddings, paths: List[str]):
    """(vector [D], description, row or None) for --query: an index, a listed path, or an image file."""
    import numpy as np

    stripped = query.strip()
    if stripped.lstrip("-").isdigit() and not os.path.isfile(query):
        index = int(stripped)
        if not 0 <= index < len(paths):
            raise DataError(f"--query {index}: the index must be in 0..{len(paths) - 1} (rows of paths.txt)")
        return np.asarray(embeddings[index], np.float32), f"row {index} ({paths[index]})", index
    if query in paths and not os.path.isfile(query):
        index = paths.index(query)
        return np.asarray(embeddings[index], np.float32), f"row {index} ({query})", index
    if not os.path.isfile(query):
        raise DataError(f"--query '{query}' is neither an image file, nor a row number 0..{len(paths) - 1}, nor a "
                        "path listed in paths.txt")
    from sslzoo.embed.model import embed_file, load_recorded

    encoder = load_recorded(summary["model"])
    return embed_file(encoder, query, summary.get("max_pixels")), f"image '{query}' (embedded with " \
        f"{summary['model']['name']})", None


def _print_neighbors(args) -> None:
    from sslzoo.embed.search import top_k

    if args.k < 1:
        raise DataError(f"-k must be >= 1, got {args.k}")
    summary, embeddings, paths = _open(args.folder)
    vector, description, _ = query_vector(args.query, summary, embeddings, paths)
    scores, indices = top_k(embeddings, vector, k=args.k, backend=args.backend)
    print(f"{len(indices[0])} nearest of {len(paths)} to {description}, cosine similarity:")
    print(f"{'rank':>4}  {'score':>7}  {'index':>7}  path")
    for rank, (score, index) in enumerate(zip(scores[0], indices[0]), start=1):
        print(f"{rank:>4}  {score:>7.4f}  {index:>7}  {paths[index]}")


def _print_duplicates(args) -> None:
    from sslzoo.embed.search import duplicates

    if not -1.0 <= args.duplicates <= 1.0:
        raise DataError(f"--duplicates {args.duplicates}: a cosine threshold must be in [-1, 1]")
    if args.limit < 1:
        raise DataError(f"--limit must be >= 1, got {args.limit}")
    summary, embeddings, paths = _open(args.folder)
    pairs, scores, total = duplicates(embeddings, args.duplicates, limit=args.limit, backend=args.backend)
    shown = f" (the {len(pairs)} most similar shown; --limit)" if total > len(pairs) else ""
    print(f"{total} pairs of {len(paths)} images with cosine similarity >= {args.duplicates}{shown}:")
    if len(pairs):
        print(f"{'score':>7}  {'i':>7}  {'j':>7}  path i  |  path j")
    for (i, j), score in zip(pairs, scores):
        print(f"{score:>7.4f}  {i:>7}  {j:>7}  {paths[i]}  |  {paths[j]}")
