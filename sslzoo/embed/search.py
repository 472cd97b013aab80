"""Exact cosine nearest neighbours and near-duplicate pairs over an embeddings matrix.

    scores, indices = top_k(embeddings, queries, k=10)          # [Q, k] each, best first
    pairs, scores, total = duplicates(embeddings, threshold=0.95)

NumPy does it with chunked matrix products: the embeddings are read (a memory-mapped .npy is fine) and
normalised `block_rows` rows at a time, so memory stays at about `block_rows x (D + queries)` floats
whatever N is. faiss (`pip install faiss-cpu`, the `faiss` extra; an exact `IndexFlatIP`, so the answers
are the same) is imported only when `backend="auto"` picks it, which is where it was measured faster on
this project's 2-core CPU (docs/embed.md, `python -m sslzoo.embed.bench search`):
- a batch of at least `FAISS_MIN_QUERIES` queries over more than `FAISS_MIN_ROWS` rows: faiss (1.3-4x
  faster with 1,000 queries at 1e4..1e6 rows); without faiss, NumPy and one log line suggesting it;
- one query (what `neighbors --query` asks): NumPy at every size measured (1e3..1e6 rows, 256/512-d):
  building faiss' index costs more than NumPy's one pass over the rows;
- all pairs (`duplicates`): NumPy; faiss' range search was no faster (1e3..3e4 rows).
"""

from __future__ import annotations

import logging
from typing import Iterator, Optional, Tuple

import numpy as np

from sslzoo.errors import SslzooError

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "numpy", "faiss")
# Where faiss beats chunked NumPy for top-k (docs/embed.md, measured with `python -m sslzoo.embed.bench search`):
# batches of >= 100 queries over > 10,000 rows. A single query is faster in NumPy at every size measured.
FAISS_MIN_ROWS = 10_000
FAISS_MIN_QUERIES = 100
# Rows normalised per block: 16k x 512 float32 = 32 MB, plus the [Q, block] scores.
BLOCK_ROWS = 16_384
FAISS_HINT = "pip install faiss-cpu would be faster"


class FaissMissingError(SslzooError, ImportError):
    """--backend faiss without faiss installed."""


def normalize(vectors: np.ndarray) -> np.ndarray:
    """float32 copy with unit rows (an all-zero row stays zero, its cosine with anything 0)."""
    vectors = np.asarray(vectors, np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, np.float32(1e-12))


def blocks(embeddings: np.ndarray, block_rows: int = BLOCK_ROWS) -> Iterator[Tuple[int, np.ndarray]]:
    """(start, normalised float32 rows start..start+block_rows) over the whole matrix."""
    for start in range(0, len(embeddings), block_rows):
        yield start, normalize(embeddings[start:start + block_rows])


def choose_backend(rows: int, backend: str = "auto", queries: int = 1) -> str:
    """"numpy" or "faiss" for a top-k search of `queries` vectors over `rows` vectors.

    "auto": faiss for at least FAISS_MIN_QUERIES queries over more than FAISS_MIN_ROWS rows when it is
    installed (else NumPy and one log line suggesting it), NumPy otherwise. "faiss" forces faiss and fails
    when it is missing; "numpy" forces NumPy.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "numpy" or (backend == "auto" and (rows <= FAISS_MIN_ROWS or queries < FAISS_MIN_QUERIES)):
        return "numpy"
    if _faiss() is None:
        if backend == "faiss":
            raise FaissMissingError("--backend faiss needs faiss: pip install faiss-cpu (or the sslzoo[faiss] extra)")
        logger.warning("searching %d vectors for %d queries with NumPy; %s", rows, queries, FAISS_HINT)
        return "numpy"
    return "faiss"


def _faiss():
    try:
        import faiss
    except ImportError:
        return None
    return faiss


def _order(scores: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """Column order per row: score descending, then index ascending (ties broken the same every time)."""
    return np.lexsort((indices, -scores), axis=-1)


def top_k(embeddings: np.ndarray, queries: np.ndarray, k: int = 10, backend: str = "auto",
          block_rows: int = BLOCK_ROWS) -> Tuple[np.ndarray, np.ndarray]:
    """The k most cosine-similar rows of `embeddings` for each query, best first.

    Args:
        embeddings: [N, D] (float16 or float32; a memory map is read block by block).
        queries: [Q, D] or [D].
        k: neighbours per query (capped at N).
        backend: see `choose_backend`.
    Returns:
        scores float32 [Q, k] (cosine, descending; ties by lower index), indices int64 [Q, k].
    """
    queries = normalize(np.atleast_2d(queries))
    n = len(embeddings)
    k = int(min(k, n))
    if k <= 0 or not len(queries):
        return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
    if choose_backend(n, backend, len(queries)) == "faiss":
        index = _faiss_index(embeddings, block_rows)
        scores, indices = index.search(queries, k)
        indices = indices.astype(np.int64)
    else:
        scores, indices = _numpy_top_k(embeddings, queries, k, block_rows)
    order = _order(scores, indices)
    return np.take_along_axis(scores, order, 1), np.take_along_axis(indices, order, 1)


def _numpy_top_k(embeddings, queries, k, block_rows):
    best_scores = np.full((len(queries), 0), -np.inf, np.float32)
    best_indices = np.zeros((len(queries), 0), np.int64)
    for start, block in blocks(embeddings, block_rows):
        scores = queries @ block.T  # [Q, b]
        indices = np.broadcast_to(np.arange(start, start + len(block), dtype=np.int64), scores.shape)
        scores = np.concatenate([best_scores, scores], axis=1)
        indices = np.concatenate([best_indices, indices], axis=1)
        if scores.shape[1] > k:
            keep = np.argpartition(-scores, k - 1, axis=1)[:, :k]
            scores, indices = np.take_along_axis(scores, keep, 1), np.take_along_axis(indices, keep, 1)
        best_scores, best_indices = scores, indices
    return best_scores, best_indices


def _faiss_index(embeddings, block_rows):
    faiss = _faiss()
    index = faiss.IndexFlatIP(int(embeddings.shape[1]))
    for _, block in blocks(embeddings, block_rows):
        index.add(np.ascontiguousarray(block))
    return index


def duplicates(embeddings: np.ndarray, threshold: float, limit: Optional[int] = 1000, backend: str = "auto",
               block_rows: int = 4096) -> Tuple[np.ndarray, np.ndarray, int]:
    """Pairs of rows (i < j) whose cosine similarity is >= threshold.

    Args:
        embeddings: [N, D].
        threshold: cosine in [-1, 1] (0.95-0.99 finds resized or re-encoded copies; 1.0 - 1e-6 exact ones).
        limit: keep only the `limit` most similar pairs (None: all); `total` still counts them all.
        backend: "auto" and "numpy": blockwise NumPy; "faiss": faiss' range search (measured no faster).
        block_rows: rows per block of the blockwise all-pairs product (memory ~ block_rows^2 floats).
    Returns:
        pairs int64 [P, 2] (i < j), scores float32 [P] (descending; ties by (i, j)), total pairs found.
    """
    n = len(embeddings)
    found_pairs, found_scores, total = [], [], 0
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    use_faiss = backend == "faiss" and choose_backend(n, "faiss") == "faiss"
    index = _faiss_index(embeddings, block_rows) if use_faiss else None
    for start, rows in blocks(embeddings, block_rows):
        if use_faiss:
            # range_search keeps inner products above the radius; the exact >= test is done below.
            lims, scores, columns = index.range_search(np.ascontiguousarray(rows), float(threshold) - 1e-6)
            row_ids = np.repeat(np.arange(start, start + len(rows), dtype=np.int64), np.diff(lims.astype(np.int64)))
            columns = columns.astype(np.int64)
            keep = (columns > row_ids) & (scores >= threshold)
            block_pairs = np.stack([row_ids[keep], columns[keep]], axis=1)
            block_scores = scores[keep].astype(np.float32)
        else:
            block_pairs, block_scores = [], []
            for other_start, others in blocks(embeddings[start:], block_rows):
                other_start += start
                scores = rows @ others.T
                i, j = np.nonzero(scores >= threshold)
                keep = other_start + j > start + i
                block_pairs.append(np.stack([start + i[keep], other_start + j[keep]], axis=1).astype(np.int64))
                block_scores.append(scores[i[keep], j[keep]])
            block_pairs = np.concatenate(block_pairs) if block_pairs else np.zeros((0, 2), np.int64)
            block_scores = np.concatenate(block_scores) if block_scores else np.zeros((0,), np.float32)
        total += len(block_scores)
        found_pairs.append(block_pairs)
        found_scores.append(block_scores)
        if limit is not None:
            found_pairs, found_scores = _best_pairs(found_pairs, found_scores, limit)
    pairs = np.concatenate(found_pairs) if found_pairs else np.zeros((0, 2), np.int64)
    scores = np.concatenate(found_scores) if found_scores else np.zeros((0,), np.float32)
    order = np.lexsort((pairs[:, 1], pairs[:, 0], -scores)) if len(scores) else np.zeros((0,), np.int64)
    if limit is not None:
        order = order[:limit]
    return pairs[order], scores[order].astype(np.float32), total


def _best_pairs(pairs, scores, limit):
    """The `limit` best pairs so far, as one-element lists (memory stays at `limit` pairs)."""
    pairs = np.concatenate(pairs).reshape(-1, 2)
    scores = np.concatenate(scores)
    if len(scores) > limit:
        keep = np.lexsort((pairs[:, 1], pairs[:, 0], -scores))[:limit]
        pairs, scores = pairs[keep], scores[keep]
    return [pairs], [scores]
