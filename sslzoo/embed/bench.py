"""Measurements behind docs/embed.md: `embed` throughput, and where faiss overtakes chunked NumPy.

    python -m sslzoo.embed.bench embed --images FOLDER [--model simclr_convnet_small_cifar10] [--count 5000]
        [--batch-size 64]
    python -m sslzoo.embed.bench search [--dims 256 512] [--sizes 1000 10000 100000 1000000] [--queries 1 1000]
        [--duplicates-max 100000]

`embed` times the command's own path (`embed_folder`) on the first `count` images of a folder, taken
class by class in equal numbers (symlinked into a temporary folder), and the decode+preprocess pipeline
alone, so you can tell whether the encoder or the JPEG decoding bounds the rate.
`search` times exact top-10 cosine search on random unit vectors: NumPy (`search.top_k`, chunked) against
faiss (`IndexFlatIP`: the index is built from the vectors, then searched; both counted, since `neighbors`
builds it on every call), for 1 query and for a batch of queries, and the all-pairs `duplicates` up to
`--duplicates-max` rows. faiss is optional (`pip install faiss-cpu`): without it only NumPy is timed.
Each line prints the machine's 1-minute load average: the CPU may be shared.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import List, Optional

import numpy as np

from sslzoo.embed import search


def _load() -> str:
    return f"load {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"


def _best(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def bench_embed(model: str, images: str, count: int, batch_size: int) -> dict:
    from sslzoo.data.stream import decoded_batches
    from sslzoo.embed.job import embed_folder

    root = Path(images).expanduser()
    classes = sorted(p for p in root.iterdir() if p.is_dir()) or [root]
    per_class = -(-count // len(classes))
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / "images"
        chosen = []
        for directory in classes:
            files = sorted(p for p in directory.iterdir() if p.is_file())[:per_class]
            (folder / directory.name).mkdir(parents=True)
            for path in files:
                (folder / directory.name / path.name).symlink_to(path.resolve())
                chosen.append(str(path))
        chosen = chosen[:count]
        load_before = _load()
        summary = embed_folder(model, folder, Path(scratch) / "out", batch_size=batch_size, progress=False)
        start = time.perf_counter()
        decoded = sum(len(b) for b in decoded_batches(chosen, summary["model"]["image_size"], batch_size))
        decode_rate = decoded / (time.perf_counter() - start)
    result = {"model": model, "images": summary["count"], "batch_size": batch_size,
              "embed_images_per_second": summary["images_per_second"], "command_seconds": summary["seconds"],
              "decode_only_images_per_second": round(decode_rate, 1), "load_before": load_before,
              "load_after": _load()}
    print(json.dumps(result), flush=True)
    return result


def _faiss_search(vectors, queries, k):
    index = search._faiss_index(vectors, search.BLOCK_ROWS)
    return index.search(search.normalize(queries), k)


def bench_search(dims: List[int], sizes: List[int], queries: List[int], duplicates_max: int, k: int = 10,
                 threshold: float = 0.9) -> List[dict]:
    rng = np.random.default_rng(0)
    has_faiss = search._faiss() is not None
    rows = []
    for dim in dims:
        for n in sizes:
            try:
                vectors = search.normalize(rng.standard_normal((n, dim), dtype=np.float32))
            except MemoryError:
                print(json.dumps({"dim": dim, "n": n, "skipped": "out of memory"}), flush=True)
                continue
            repeats = 3 if n * dim <= 10_000_000 else 1
            for q in queries:
                batch = rng.standard_normal((q, dim), dtype=np.float32)
                row = {"dim": dim, "n": n, "queries": q, "k": k,
                       "numpy_s": _best(lambda: search.top_k(vectors, batch, k, backend="numpy"), repeats)}
                if has_faiss:
                    row["faiss_s"] = _best(lambda: _faiss_search(vectors, batch, k), repeats)
                row["load"] = _load()
                print(json.dumps(row), flush=True)
                rows.append(row)
            if n <= duplicates_max:
                row = {"dim": dim, "n": n, "duplicates": threshold,
                       "numpy_s": _best(lambda: search.duplicates(vectors, threshold, backend="numpy"), 1)}
                if has_faiss:
                    row["faiss_s"] = _best(lambda: search.duplicates(vectors, threshold, backend="faiss"), 1)
                row["load"] = _load()
                print(json.dumps(row), flush=True)
                rows.append(row)
            vectors = None  # free the matrix before the next size
    return rows


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sslzoo.embed.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    embed = commands.add_parser("embed", help="images/s of embed on an image folder")
    embed.add_argument("--model", default="simclr_convnet_small_cifar10")
    embed.add_argument("--images", required=True, help="an image folder, e.g. CIFAR-10's train/<class>/*.jpg")
    embed.add_argument("--count", type=int, default=5000)
    embed.add_argument("--batch-size", type=int, default=64)
    searching = commands.add_parser("search", help="NumPy vs faiss exact cosine search")
    searching.add_argument("--dims", type=int, nargs="+", default=[256, 512])
    searching.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000, 1_000_000])
    searching.add_argument("--queries", type=int, nargs="+", default=[1, 1000])
    searching.add_argument("--duplicates-max", type=int, default=100_000,
                           help="time the all-pairs duplicates search up to this many rows")
    args = parser.parse_args(argv)
    print(json.dumps({"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                      "numpy": np.__version__, "faiss": getattr(search._faiss(), "__version__", None),
                      "load": _load()}), flush=True)
    if args.command == "embed":
        bench_embed(args.model, args.images, args.count, args.batch_size)
    else:
        bench_search(args.dims, args.sizes, args.queries, args.duplicates_max)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
