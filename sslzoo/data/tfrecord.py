"""TFRecord shards of encoded image bytes plus a manifest: the data path for object stores and many machines.

    manifest = write_shards(paths, labels, class_names, "shards/", root="photos/")
    verify_shards("shards/")
    ds = epoch_dataset("shards/", seed=0, epoch=3, shard_index=worker, num_shards=workers)  # (bytes, label)

Records hold each file's bytes as they are, never decoded pixels: shards are as small as the source, and
decoding and augmentation stay in the training pipeline (`sslzoo.data.decode.decode_image`). Shards are
written with `tf.io.TFRecordWriter` and read through `tf.io.gfile`, so an output or a reader on gs:// or
s3:// works wherever TensorFlow has that file system.

Record features: `image/encoded` (bytes), `image/label` (int64, -1 when unlabelled), `image/path` (the
file's path relative to the source root, utf-8).
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import datetime
import hashlib
import json
import os
import re
import struct
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from sslzoo.errors import DataError
from sslzoo.files import atomic_directory

FORMAT = "sslzoo.tfrecord"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"

_MB = 1 << 20
_CHUNK = 1 << 20
# A fixed number of shards read at once, never AUTOTUNE: TF derives an autotuned cycle length from the
# machine's core count, and the interleaved record order would then change when a run resumes on another
# machine (TFRecordDataset(num_parallel_reads=AUTOTUNE) has that problem).
_CYCLE = 8
_READ_AHEAD = 32  # files read ahead of the writer; bounds memory to ~32 source files
_READ_THREADS = 8  # object-store reads are latency-bound, so a few more threads than cores pay off
# Serialised-Example overhead beyond the image and path bytes, plus TFRecord framing (16 bytes); only
# used to plan shard sizes, so an estimate is enough.
_RECORD_OVERHEAD = 64
_SHARD_NAME = re.compile(r"shard-\d{5,}-of-\d{5,}\.tfrecord")

_FEATURES = {
    "image/encoded": tf.io.FixedLenFeature([], tf.string),
    "image/label": tf.io.FixedLenFeature([], tf.int64, default_value=-1),
    "image/path": tf.io.FixedLenFeature([], tf.string, default_value=""),
}

Progress = Callable[[int, int, int], None]


def _is_local(path: str) -> bool:
    return "://" not in path or path.startswith("file://")


def _local(path: str) -> str:
    return path[len("file://"):] if path.startswith("file://") else path


def _join(directory: str, name: str) -> str:
    if _is_local(directory):
        return os.path.join(_local(directory), name)
    return directory.rstrip("/") + "/" + name


def shard_name(index: int, count: int) -> str:
    """The file name of shard `index` of `count`, e.g. shard-00003-of-00012.tfrecord."""
    return f"shard-{index:05d}-of-{count:05d}.tfrecord"


def _error_text(error: BaseException) -> str:
    message = getattr(error, "message", None) or str(error) or type(error).__name__
    return f"{type(error).__name__}: {message}".replace("\n", " ")


def _read_bytes(path: str) -> bytes:
    # fsencode: a file name that is not valid UTF-8 still reaches TensorFlow's file system byte for byte
    # (a str holding surrogate escapes is refused by its bindings).
    with tf.io.gfile.GFile(os.fsencode(path), "rb") as stream:
        return stream.read()


def _source_size(path: str) -> Tuple[Optional[int], str]:
    """(size in bytes, "") for a readable non-empty file, else (None, why it is skipped)."""
    try:
        size = tf.io.gfile.stat(os.fsencode(path)).length
    except (tf.errors.OpError, OSError) as error:
        return None, _error_text(error)
    # stat succeeds on a file without read permission; catching that here keeps shard plans exact.
    if _is_local(path) and not os.access(_local(path), os.R_OK):
        return None, "PermissionError: not readable"
    if size == 0:
        return None, "empty file"
    return size, ""


def _relative(path: str, root: str) -> str:
    if _is_local(path) and _is_local(root):
        relative = os.path.relpath(os.path.abspath(_local(path)), os.path.abspath(_local(root)))
        if relative == os.pardir or relative.startswith(os.pardir + os.sep):
            raise DataError(f"'{path}' is not inside the source root '{root}'")
        return relative.replace(os.sep, "/")
    prefix = root.rstrip("/") + "/"
    if not path.startswith(prefix):
        raise DataError(f"'{path}' is not inside the source root '{root}'")
    return path[len(prefix):]


def _common_root(paths: Sequence[str]) -> str:
    if all(_is_local(p) for p in paths):
        return os.path.commonpath([os.path.dirname(os.path.abspath(_local(p))) for p in paths])
    return os.path.commonprefix([p.rsplit("/", 1)[0] + "/" for p in paths]).rsplit("/", 1)[0]


def _example(data: bytes, label: int, relative: str) -> bytes:
    feature = {
        "image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[data])),
        "image/label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
        # surrogateescape: a non-UTF-8 file name is stored as its raw bytes rather than refused.
        "image/path": tf.train.Feature(bytes_list=tf.train.BytesList(
            value=[relative.encode("utf-8", "surrogateescape")])),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def _digest(path: str) -> Tuple[str, int, Optional[int]]:
    """Streams a shard once: (hex sha256, size in bytes, record count or None if the framing is broken).

    Records are counted from the TFRecord framing (uint64 length, 4-byte length CRC, data, 4-byte data
    CRC) while hashing, so verifying a shard reads it once and needs no TensorFlow parsing.
    """
    digest = hashlib.sha256()
    size = records = 0
    skip = 0  # bytes still to pass before the next record header
    header = b""
    with tf.io.gfile.GFile(path, "rb") as stream:
        while True:
            chunk = stream.read(_CHUNK)
            if not chunk:
                break
            digest.update(chunk)
            size += len(chunk)
            position = 0
            while position < len(chunk):
                if skip:
                    step = min(skip, len(chunk) - position)
                    position += step
                    skip -= step
                    continue
                take = min(8 - len(header), len(chunk) - position)
                header += chunk[position:position + take]
                position += take
                if len(header) == 8:
                    skip = 4 + struct.unpack("<Q", header)[0] + 4
                    header = b""
                    records += 1
    complete = skip == 0 and not header
    return digest.hexdigest(), size, records if complete else None


def _plan_shards(sizes: Sequence[int], target: float) -> List[List[int]]:
    """Splits items, in order, into runs of about `target` estimated bytes (at least one item per shard)."""
    shards: List[List[int]] = []
    current: List[int] = []
    filled = 0
    for index, size in enumerate(sizes):
        if current and filled + size > target:
            shards.append(current)
            current, filled = [], 0
        current.append(index)
        filled += size
    if current:
        shards.append(current)
    return shards


def _read_ahead(paths: Sequence[str]) -> Iterator[Tuple[Optional[bytes], str]]:
    """Yields (bytes, "") or (None, reason) for each path in order, reading a bounded window ahead."""

    def _read(path):
        try:
            return _read_bytes(path), ""
        except (tf.errors.OpError, OSError) as error:
            return None, _error_text(error)

    pending: collections.deque = collections.deque()
    remaining = iter(paths)
    with concurrent.futures.ThreadPoolExecutor(_READ_THREADS) as pool:
        try:
            for path in remaining:
                pending.append(pool.submit(_read, path))
                if len(pending) >= _READ_AHEAD:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


def check_output(output_dir: str | os.PathLike, *, force: bool = False,
                 source_root: str | os.PathLike | None = None) -> None:
    """Raises DataError if `output_dir` may not be written: it exists (without force), or is not shards.

    Args:
        output_dir: the shard folder to be written (local, file://, or a TF file system URL).
        force: allow replacing an existing folder of prepared shards.
        source_root: the folder the images come from; the output may not overlap it.
    """
    output = os.fspath(output_dir)
    if _is_local(output):
        path = Path(_local(output)).expanduser().absolute()
        if source_root is not None and _is_local(os.fspath(source_root)):
            root = Path(_local(os.fspath(source_root))).expanduser().resolve()
            resolved = path.resolve()
            if resolved == root or root in resolved.parents or resolved in root.parents:
                raise DataError(f"output '{path}' overlaps the source folder '{root}'; "
                                f"write the shards outside it")
        if not path.exists():
            return
        if not force:
            raise DataError(f"'{path}' already exists; refusing to overwrite it. "
                            f"Pass --force (force=True) to replace it")
        # --force deletes the old folder: allow that only for prepared shards, so a mistyped --output can
        # never wipe out a folder of something else.
        if not path.is_dir() or (any(path.iterdir()) and not (path / MANIFEST).is_file()):
            raise DataError(f"'{path}' exists and is not a folder of prepared shards (no {MANIFEST}); "
                            f"--force replaces only prepared shards, so choose another --output")
        return
    if not tf.io.gfile.exists(output) or not tf.io.gfile.listdir(output):
        return
    if not force:
        raise DataError(f"'{output}' already exists; refusing to overwrite it. Pass --force (force=True) to "
                        f"replace it")
    if not tf.io.gfile.exists(_join(output, MANIFEST)):
        raise DataError(f"'{output}' exists and is not a folder of prepared shards (no {MANIFEST}); "
                        f"--force replaces only prepared shards, so choose another --output")


def write_shards(paths: Sequence[str | os.PathLike], labels: Optional[Sequence[int]],
                 class_names: Sequence[str], output_dir: str | os.PathLike, *, shard_size_mb: float = 100,
                 force: bool = False, root: str | os.PathLike | None = None,
                 progress: Optional[Progress] = None, skipped: Sequence[Tuple[str, str]] = ()) -> Dict:
    """Writes the files' bytes as TFRecord shards of about `shard_size_mb` MiB, plus manifest.json.

    Args:
        paths: N image files; records keep this order.
        labels: N class indices into `class_names`, or None (all -1) for unlabelled images.
        class_names: the class names; empty when unlabelled.
        output_dir: the shard folder. A local one appears whole or not at all; an existing one is
            refused unless `force`, which replaces only a folder of prepared shards.
        shard_size_mb: target shard size in MiB (1 MiB = 2**20 bytes).
        root: the source root that `image/path` is relative to; default the files' common folder.
        progress: called as progress(files done, files total, shard bytes written) after every file.
        skipped: (path, reason) of files the lister already passed over, to be listed in the manifest.
    Returns:
        The manifest dict (also written as `manifest.json`). Unreadable and empty files are skipped and
        listed under "skipped".
    """
    paths = [os.fspath(p) for p in paths]
    n = len(paths)
    if n == 0:
        raise DataError("no image files to write")
    labels = np.full([n], -1, np.int64) if labels is None else np.asarray(labels, np.int64).reshape(-1)
    if len(labels) != n:
        raise DataError(f"{n} paths but {len(labels)} labels")
    class_names = [str(c) for c in class_names]
    bad = (labels != -1) & ((labels < 0) | (labels >= len(class_names)))
    if bad.any():
        raise DataError(f"label {int(labels[bad][0])} is not -1 or an index into {len(class_names)} class names")
    if not shard_size_mb > 0:
        raise DataError(f"shard size must be > 0 MiB, got {shard_size_mb}")
    root = os.fspath(root) if root is not None else _common_root(paths)
    output = os.fspath(output_dir)
    check_output(output, force=force, source_root=root)

    relative = [_relative(p, root) for p in paths]
    skipped = [{"path": _relative(os.fspath(p), root), "reason": reason} for p, reason in skipped]
    kept, estimates = [], []
    for index, path in enumerate(paths):
        size, reason = _source_size(path)
        if size is None:
            skipped.append({"path": relative[index], "reason": reason})
        else:
            kept.append(index)
            estimates.append(size + len(relative[index].encode("utf-8", "surrogateescape")) + _RECORD_OVERHEAD)
    if not kept:
        examples = "; ".join(f"{s['path']}: {s['reason']}" for s in skipped[:3])
        raise DataError(f"none of the {n} files could be read, e.g. {examples}")
    plan = [[kept[i] for i in shard] for shard in _plan_shards(estimates, shard_size_mb * _MB)]

    def _write(directory: str) -> Dict:
        return _write_plan(directory, plan, paths, labels, relative, class_names, root, skipped,
                           shard_size_mb, progress, n)

    if _is_local(output):
        with atomic_directory(Path(_local(output)).expanduser(), force=force) as temp:
            manifest = _write(str(temp))
            _write_manifest(str(temp), manifest)
        return manifest
    # atomic_directory renames a local folder; an object store has no atomic folder rename. There the
    # shards are written in place and the manifest last: readers start from the manifest, so a killed
    # run leaves no manifest (the old one is removed first) rather than one naming half-written shards.
    if tf.io.gfile.exists(_join(output, MANIFEST)):
        tf.io.gfile.remove(_join(output, MANIFEST))
    tf.io.gfile.makedirs(output)
    manifest = _write(output)
    names = {shard["name"] for shard in manifest["shards"]}
    for stale in tf.io.gfile.listdir(output):
        # A forced rewrite with fewer shards must not leave the old run's extra shards beside the new ones.
        stale = stale.rstrip("/")
        if _SHARD_NAME.fullmatch(stale) and stale not in names:
            tf.io.gfile.remove(_join(output, stale))
    _write_manifest(output, manifest)
    return manifest


def _write_plan(directory, plan, paths, labels, relative, class_names, root, skipped, shard_size_mb,
                progress, total) -> Dict:
    """Writes the planned shards into `directory` and returns the manifest (not yet written)."""
    shards = []
    class_counts = collections.Counter()
    done = total - sum(len(s) for s in plan)  # files skipped before reading count as done
    written = 0
    order = [index for shard in plan for index in shard]
    with contextlib.closing(_read_ahead([paths[i] for i in order])) as reads:
        for number, members in enumerate(plan):
            name = shard_name(number, len(plan))
            target = _join(directory, name)
            records = 0
            with tf.io.TFRecordWriter(target) as writer:
                for index in members:
                    data, reason = next(reads)
                    done += 1
                    if data is None:
                        # Read failed after a successful stat (the file vanished or an I/O error): the
                        # shard keeps its planned name with one record fewer.
                        skipped.append({"path": relative[index], "reason": reason})
                    elif not data:
                        skipped.append({"path": relative[index], "reason": "empty file"})
                    else:
                        label = int(labels[index])
                        writer.write(_example(data, label, relative[index]))
                        records += 1
                        if label >= 0:
                            class_counts[class_names[label]] += 1
                    if progress is not None:
                        progress(done, total, written)
            # Hashing what was stored (read back through the same file system) also checks the write.
            sha256, size, counted = _digest(target)
            if counted != records:
                raise DataError(f"shard {name} holds {counted} records after writing {records}; "
                                f"the output file system did not store it intact")
            written += size
            shards.append({"name": name, "records": records, "bytes": size, "sha256": sha256})
            if progress is not None:
                progress(done, total, written)
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "source_root": os.path.abspath(_local(root)) if _is_local(root) else root,
        "count": sum(s["records"] for s in shards),
        "bytes": written,
        "class_names": list(class_names),
        "class_counts": {c: class_counts.get(c, 0) for c in class_names},
        "unlabelled": sum(s["records"] for s in shards) - sum(class_counts.values()),
        "shard_size_mb": shard_size_mb,
        "features": {"image/encoded": "bytes", "image/label": "int64", "image/path": "bytes"},
        "skipped": sorted(skipped, key=lambda s: s["path"]),
        "shards": shards,
    }


def _write_manifest(directory: str, manifest: Dict) -> None:
    with tf.io.gfile.GFile(_join(directory, MANIFEST), "w") as stream:
        stream.write(json.dumps(manifest, indent=2) + "\n")


def read_manifest(directory: str | os.PathLike) -> Dict:
    """Reads and checks a shard folder's manifest.json.

    Args:
        directory: a folder written by `write_shards` (local or a TF file system URL).
    Returns:
        The manifest dict.
    """
    directory = os.fspath(directory)
    path = _join(directory, MANIFEST)
    if not tf.io.gfile.exists(path):
        raise DataError(f"'{directory}' has no {MANIFEST}: not a folder of prepared shards; make one with "
                        f"python -m sslzoo.prepare FOLDER --output {directory}")
    try:
        with tf.io.gfile.GFile(path, "r") as stream:
            manifest = json.loads(stream.read())
    except (ValueError, tf.errors.OpError) as error:
        raise DataError(f"'{path}' cannot be read as JSON ({_error_text(error)}); prepare the shards again")
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise DataError(f"'{path}' is not an sslzoo shard manifest (format {FORMAT!r})")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise DataError(f"'{path}' has format version {manifest.get('format_version')}; this sslzoo reads "
                        f"version {FORMAT_VERSION}: prepare the shards again or upgrade sslzoo")
    shards = manifest.get("shards")
    if not isinstance(shards, list) or not shards:
        raise DataError(f"'{path}' lists no shards; prepare the shards again")
    for shard in shards:
        # Names are joined to `directory`: a plain shard name only, so a manifest can never point outside.
        if not isinstance(shard, dict) or not _SHARD_NAME.fullmatch(str(shard.get("name", ""))):
            raise DataError(f"'{path}' lists a malformed shard entry {shard!r}; prepare the shards again")
    return manifest


def verify_shards(directory: str | os.PathLike) -> None:
    """Re-hashes every shard and raises DataError naming the first missing, changed or miscounted one.

    Args:
        directory: a folder written by `write_shards`.
    """
    directory = os.fspath(directory)
    manifest = read_manifest(directory)
    total = 0
    for shard in manifest["shards"]:
        name = shard["name"]
        path = _join(directory, name)
        if not tf.io.gfile.exists(path):
            raise DataError(f"shard {name} listed in '{_join(directory, MANIFEST)}' is missing; copy it "
                            f"again or prepare the shards again")
        sha256, size, records = _digest(path)
        if sha256 != shard.get("sha256"):
            raise DataError(f"shard {name} in '{directory}' is corrupt: its sha256 {sha256[:16]}... "
                            f"({size} bytes) differs from the manifest's {str(shard.get('sha256'))[:16]}... "
                            f"({shard.get('bytes')} bytes); copy it again or prepare the shards again")
        if records != shard.get("records"):
            raise DataError(f"shard {name} in '{directory}' holds {records} records but the manifest says "
                            f"{shard.get('records')}; prepare the shards again")
        total += records
    if total != manifest.get("count"):
        raise DataError(f"the shards in '{directory}' hold {total} records but the manifest's count is "
                        f"{manifest.get('count')}; prepare the shards again")


def _worker_shards(names: List[str], shard_index: int, num_shards: int, directory: str) -> List[str]:
    if num_shards < 1 or not 0 <= shard_index < num_shards:
        raise DataError(f"worker shard_index={shard_index} must be in [0, num_shards={num_shards})")
    if num_shards > len(names):
        # A worker without a shard would have no data and stall the others at their first collective.
        raise DataError(f"'{directory}' has {len(names)} shards, too few for {num_shards} workers; prepare it "
                        f"with a smaller --shard-size-mb")
    return names[shard_index::num_shards]


def _parse(record: tf.Tensor, with_path: bool) -> Tuple[tf.Tensor, ...]:
    example = tf.io.parse_single_example(record, _FEATURES)
    parsed = (example["image/encoded"], tf.cast(example["image/label"], tf.int32))
    return (*parsed, example["image/path"]) if with_path else parsed


def _records(files: List[str], with_path: bool = False, with_shard: bool = False) -> tf.data.Dataset:
    """(encoded bytes, int32 label[, path][, shard index]) from `files`, read in parallel in a
    deterministic order; the shard index is the file's position in `files`.

    The order is a fixed function of `files`: one record at a time from each of `_CYCLE` open shards in
    turn, the next shard in `files` taking the place of a finished one.
    """
    # block_length=1 also bounds memory: TF buffers 2 * block_length + 1 records per open shard (a block
    # as long as a shard, to emit shards whole, would hold whole shards in memory).
    dataset = tf.data.Dataset.from_tensor_slices((tf.range(len(files), dtype=tf.int32), files)).interleave(
        lambda index, file: tf.data.TFRecordDataset(file).map(lambda record: (record, index)),
        cycle_length=min(_CYCLE, len(files)), block_length=1, num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True)

    def _parse_record(record, index):
        parsed = _parse(record, with_path)
        return (*parsed, index) if with_shard else parsed

    return dataset.map(_parse_record, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def shard_dataset(directory: str | os.PathLike, *, shard_index: int = 0, num_shards: int = 1,
                  with_path: bool = False, with_shard: bool = False) -> tf.data.Dataset:
    """This worker's records in a fixed order (its shards taken in manifest order), as (bytes, int32 label).

    Args:
        directory: a folder written by `write_shards`.
        shard_index: this worker's index; it reads shards[shard_index::num_shards] (sharding by file).
        num_shards: the number of workers.
        with_path: also yield each record's relative path.
        with_shard: also yield the index, in the manifest, of the shard each record is in (one worker).
    Returns:
        A tf.data.Dataset of (string scalar, int32 scalar[, string scalar][, int32 scalar]), label -1 for
        unlabelled images.
    """
    directory = os.fspath(directory)
    manifest = read_manifest(directory)
    names = _worker_shards([s["name"] for s in manifest["shards"]], shard_index, num_shards, directory)
    return _records([_join(directory, n) for n in names], with_path, with_shard)


def derived_seed(seed: int, epoch: int, purpose: str, name: str = "") -> int:
    # sha256 rather than a numpy or TF generator: the value is fixed forever, across library versions.
    text = f"{int(seed)}:{int(epoch)}:{purpose}:{name}".encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "little") & 0x7FFFFFFF


def epoch_shards(manifest: Dict, seed: int, epoch: int, shard_index: int = 0, num_shards: int = 1,
                 directory: str = "") -> List[str]:
    """The shard names worker `shard_index` of `num_shards` reads in `epoch`, in its reading order: all
    shards permuted by (seed, epoch), then dealt out one at a time."""
    names = sorted((s["name"] for s in manifest["shards"]),
                   key=lambda name: derived_seed(seed, epoch, "shard-order", name))
    return _worker_shards(names, shard_index, num_shards, directory)


def epoch_dataset(directory: str | os.PathLike, seed: int, epoch: int, *, buffer: int = 10000,
                  shard_index: int = 0, num_shards: int = 1, with_path: bool = False) -> tf.data.Dataset:
    """One epoch of this worker's records in an order fixed by (seed, epoch), as (encoded bytes, label).

    The shards are permuted by (seed, epoch) and then dealt out to workers (so all workers together still
    read every record exactly once, and a worker sees different shards each epoch), read a few at a time
    interleaved record by record, and shuffled in a `buffer`-record window seeded by (seed, epoch).
    Rebuilding the dataset for epoch k on resume gives exactly epoch k again. The shuffle op also mixes in
    TensorFlow's global seed (`tf.random.set_seed`), so that must be the same on resume too.

    Args:
        directory: a folder written by `write_shards`.
        seed: the run's seed.
        epoch: the epoch number.
        buffer: shuffle buffer size in records.
        shard_index: this worker's index in [0, num_shards).
        num_shards: the number of workers.
    Returns:
        A tf.data.Dataset of (string scalar, int32 scalar), label -1 for unlabelled images.
    """
    if buffer < 1:
        raise DataError(f"shuffle buffer must be >= 1 record, got {buffer}")
    directory = os.fspath(directory)
    names = epoch_shards(read_manifest(directory), seed, epoch, shard_index, num_shards, directory)
    dataset = _records([_join(directory, n) for n in names], with_path)
    return dataset.shuffle(buffer, seed=derived_seed(seed, epoch, "shuffle"), reshuffle_each_iteration=False)
