"""`embed`: a folder of images through an encoder, resumable by chunk, published whole at the end.

    summary = embed_folder("simclr_convnet_small_cifar10", "photos/", "photos_embedded/")

What happens:
1. The images are listed (every image at any depth, sorted folder by folder; hidden files and other
   extensions passed over and counted), and split into chunks of `chunk_size` files in that order.
2. Work goes into a hidden sibling of the output, `.<output name>.partial/`: `plan.json` (model sha256,
   folder, listing fingerprint, image size, chunk size) and one `chunk-NNNNN.npz` per finished chunk
   (written to a temporary file and renamed, so a chunk file is complete or absent). Each chunk: every
   file's header is checked (zero-byte, not an image, more than `max_pixels`), then the rest are read,
   decoded and preprocessed in `tf.data` exactly as the export's `embed_images` signature does, batched
   and run through the encoder. A file that fails is a bad file with its error, never a crash.
3. A rerun of the same command after an interruption finds the plan and the finished chunks and goes on
   from the first missing chunk; its batches are the ones an uninterrupted run makes, so it ends with the
   same files. A plan made for another model or another listing is refused (--overwrite starts afresh).
4. At the end every output file is written into a temporary folder that is renamed to the output
   (`sslzoo.files.atomic_directory`): the output is absent or complete, never half-written. Then the
   partial folder is removed. A finished output is never replaced without `overwrite=True`.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np

from sslzoo import __version__
from sslzoo.data.headers import BadImageError, check_pixels
from sslzoo.data.listing import list_images
from sslzoo.data.pipeline import without_autotune
from sslzoo.embed import projector
from sslzoo.embed.defaults import BATCH_SIZE, CHUNK_SIZE, LABEL_MODES, MAX_PIXELS
from sslzoo.embed.model import PREPROCESSING, Encoder, load_encoder
from sslzoo.embed.outputs import EMBEDDINGS, FORMAT_VERSION, PATHS, SUMMARY, is_finished, partial_dir
from sslzoo.errors import DataError, SslzooError
from sslzoo.files import atomic_directory, atomic_write, atomic_write_text

logger = logging.getLogger(__name__)

PLAN = "plan.json"
# Keys of plan.json that must match for a rerun to continue the chunks already made.
_PLAN_KEYS = ("images", "model_sha256", "image_size", "chunk_size", "files", "listing_sha256", "labels", "thumbnail")


class EmbedOutputError(SslzooError, FileExistsError):
    """The output folder is finished, holds something else, or holds an interrupted run of another job."""


@dataclass
class Listed:
    """The files of one job: absolute paths, their paths relative to the image folder, classes."""

    paths: List[str]
    relative: List[str]
    classes: Optional[List[str]]  # None: no class column (labels "none")
    unlisted_bad: List[dict]
    passed_over: Dict[str, int]


def check_output(output: Path, overwrite: bool) -> None:
    """Refuses, before any work, an output that is finished (without --overwrite) or is not ours."""
    if output.exists() and not output.is_dir():
        raise EmbedOutputError(f"--output '{output}' is a file; give a folder to create")
    if is_finished(output):
        if not overwrite:
            raise EmbedOutputError(f"'{output}' already holds a finished embedding ({SUMMARY}); pass --overwrite "
                                   "to replace it, or choose another --output")
        return
    if output.is_dir() and any(output.iterdir()):
        raise EmbedOutputError(f"--output '{output}' is a non-empty folder without {SUMMARY} (not an embed "
                               "output); choose a new or empty folder (--overwrite only replaces a finished "
                               "embedding)")


def _relative(path: str, root: Path) -> str:
    return Path(os.path.relpath(path, root)).as_posix()


def list_job(images: Path, labels: str, exclude: List[Path]) -> Listed:
    """Every image under `images` (recursive, sorted), minus anything under `exclude` (the output).

    labels: "subfolders" -> a class column from each image's first folder under `images` (every image
    must lie in one); "none" -> no class column; "auto" -> "subfolders" when every image lies in a
    subfolder, else "none".
    """
    if labels not in LABEL_MODES:
        raise DataError(f"--labels must be one of {', '.join(LABEL_MODES)}, got {labels!r}")
    if not images.is_dir():
        raise DataError(f"IMAGES '{images}' {'is not a folder' if images.exists() else 'does not exist'}; give "
                        "the folder of images to embed")
    try:
        listing = list_images(images, labels="none")
    except DataError as error:  # the listing speaks of the training config's data.labels and data.path
        raise DataError(str(error).split("; with data.labels=none")[0].replace("data.labels=none, ", "")) from None
    excluded = [str(p) + os.sep for p in exclude]
    paths, relative, unlisted_bad = [], [], []
    for path in listing.paths:
        if any(os.path.abspath(path).startswith(prefix) for prefix in excluded):
            continue
        name = _relative(path, images)
        if len(name.splitlines()) != 1 or name != name.strip("\r\n"):
            # paths.txt holds one path per line; a name with a line break cannot be written there.
            unlisted_bad.append({"path": name.replace("\n", "\\n").replace("\r", "\\r"),
                                 "error": "its name holds a line break; rename it"})
            continue
        paths.append(path)
        relative.append(name)
    for kind in ("symlink_loop", "unreadable"):
        for path in listing.skipped.get(kind, []):
            unlisted_bad.append({"path": _relative(path, images),
                                 "error": "a symlink loop" if kind == "symlink_loop" else
                                 "unreadable (a broken link, a special file or a folder that cannot be opened)"})
    if not paths:
        raise DataError(f"no image files under '{images}' (outside the output folder)")
    in_subfolder = ["/" in name for name in relative]
    if labels == "subfolders" and not all(in_subfolder):
        loose = [name for name, inside in zip(relative, in_subfolder) if not inside]
        raise DataError(f"--labels subfolders: {len(loose)} images lie directly in '{images}' (e.g. {loose[0]}), "
                        "not in a class subfolder; use --labels none or auto")
    labelled = labels == "subfolders" or (labels == "auto" and all(in_subfolder))
    classes = [name.split("/", 1)[0] for name in relative] if labelled else None
    ours = [str(p) for p in exclude]
    passed_over = {}
    for kind, found in listing.skipped.items():
        # The output and its partial folder may sit inside the image folder: they are not the user's files.
        found = [p for p in found if not any(os.path.abspath(p) == mine or os.path.abspath(p).startswith(
            mine + os.sep) for mine in ours)]
        if kind not in ("symlink_loop", "unreadable") and found:
            passed_over[kind] = len(found)
    return Listed(paths, relative, classes, unlisted_bad, passed_over)


def _listing_sha256(listed: Listed) -> str:
    digest = hashlib.sha256()
    for name in listed.relative:
        digest.update(os.fsencode(name) + b"\n")
    return digest.hexdigest()


# ----------------------------------------------------------------------------------------------- chunks


def _chunk_path(partial: Path, chunk: int) -> Path:
    return partial / f"chunk-{chunk:05d}.npz"


def _decode_error(path: str, image_size: int) -> str:
    """The error TensorFlow gives for one file the pipeline dropped (decoded alone, eagerly)."""
    import tensorflow as tf

    from sslzoo.data.decode import read_and_decode

    try:
        read_and_decode(tf.constant(os.fsencode(path)), image_size)
    except Exception as error:  # noqa: BLE001  (any failure of this one file is its error)
        message = getattr(error, "message", None) or str(error)
        return f"could not be decoded: {type(error).__name__}: {' '.join(str(message).split())}"[:500]
    return "could not be decoded in the batch pipeline"


def embed_chunk(encoder: Encoder, paths: List[str], start: int, batch_size: int, thumb: int,
                max_pixels: int) -> dict:
    """Embeddings of the files of one chunk.

    Returns a dict of arrays: "indices" int64 [M] (global positions of the files that worked),
    "embeddings" float32 [M, D], "thumbnails" uint8 [M, t, t, 3] (t=0: none), "bad" a JSON string of
    [[global index, error], ...].
    """
    import tensorflow as tf

    from sslzoo.data.decode import encode_paths, read_and_decode

    size = encoder.image_size
    bad: Dict[int, str] = {}
    good = []
    for offset, path in enumerate(paths):
        try:
            check_pixels(path, max_pixels)
        except BadImageError as error:
            bad[start + offset] = error.reason
            continue
        good.append(offset)
    indices, embeddings, thumbnails = [], [], []
    if good:
        positions = np.asarray(good, np.int64) + start

        def _read(index, path):
            image = read_and_decode(path, size)
            if thumb and thumb != size:
                small = tf.image.resize(image, [thumb, thumb], method="area")
                small = tf.cast(tf.clip_by_value(tf.round(small), 0.0, 255.0), tf.uint8)
            else:
                small = image if thumb else tf.zeros([0, 0, 3], tf.uint8)
            return index, image, small

        dataset = tf.data.Dataset.from_tensor_slices((positions, encode_paths([paths[i] for i in good])))
        # deterministic: the batches, hence the floating-point results, are the same on every run.
        dataset = dataset.map(_read, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        dataset = without_autotune(dataset.ignore_errors().batch(batch_size).prefetch(2))
        function = encoder.function()
        for index, images, small in dataset:
            indices.append(index.numpy())
            embeddings.append(function(images).numpy())
            thumbnails.append(small.numpy())
        done = set(np.concatenate(indices).tolist()) if indices else set()
        for position in positions.tolist():
            if position not in done:
                bad[position] = _decode_error(paths[position - start], size)
    dim = encoder.dim
    shape = (thumb, thumb, 3) if thumb else (0, 0, 3)
    return {
        "indices": np.concatenate(indices) if indices else np.zeros([0], np.int64),
        "embeddings": np.concatenate(embeddings) if embeddings else np.zeros([0, dim], np.float32),
        "thumbnails": np.concatenate(thumbnails) if thumbnails else np.zeros((0, *shape), np.uint8),
        "bad": np.asarray(json.dumps(sorted(bad.items()))),
    }


def save_chunk(path: Path, arrays: dict) -> None:
    """One chunk file, written whole or not at all (temporary file + rename)."""

    def _write(temporary: Path):
        with open(temporary, "wb") as stream:
            np.savez(stream, **arrays)
            stream.flush()
            os.fsync(stream.fileno())

    atomic_write(path, _write)


def load_chunk(path: Path) -> dict:
    with np.load(path, allow_pickle=False) as data:
        arrays = {key: data[key] for key in data.files}
    arrays["bad"] = [(int(i), str(e)) for i, e in json.loads(str(arrays["bad"]))]
    return arrays


# ------------------------------------------------------------------------------------------------- plan


def _start_partial(partial: Path, plan: dict, overwrite: bool) -> List[int]:
    """Creates or reuses the partial folder; returns the chunks already finished."""
    plan_file = partial / PLAN
    if partial.is_dir() and plan_file.is_file():
        try:
            previous = json.loads(plan_file.read_text())
        except ValueError:
            previous = None
        differs = [key for key in _PLAN_KEYS if previous is None or previous.get(key) != plan.get(key)]
        if not differs:
            return sorted(int(p.stem.split("-")[1]) for p in partial.glob("chunk-*.npz"))
        if not overwrite:
            raise EmbedOutputError(
                f"'{partial}' holds an interrupted embedding of another job (different "
                f"{', '.join(differs)}); rerun that command to finish it, or pass --overwrite to discard it "
                "and start this one")
        logger.warning("discarding the interrupted embedding in %s (different %s)", partial, ", ".join(differs))
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    atomic_write_text(plan_file, json.dumps(plan, indent=2, sort_keys=True) + "\n")
    return []


# -------------------------------------------------------------------------------------------------- run


def _progress_bar(total: int):
    import keras

    interactive = sys.stdout.isatty()
    return keras.utils.Progbar(total, unit_name="image", interval=0.1 if interactive else 10.0)


def embed_folder(model: str, images: str | os.PathLike, output: str | os.PathLike, *,
                 batch_size: int = BATCH_SIZE, float16: bool = False, overwrite: bool = False,
                 labels: str = "auto", chunk_size: int = CHUNK_SIZE, max_pixels: int = MAX_PIXELS,
                 progress: bool = True, on_chunk: Optional[Callable[[int], None]] = None) -> dict:
    """Embeds every image under `images` with `model`; writes `output` (see the module docstring).

    Args:
        model: a shipped name, an export folder or a .keras file (as `sslzoo.load`).
        images: the image folder (any depth, any size; `<class>/<image>` gives a class column).
        output: the folder to create.
        batch_size: images per encoder call.
        float16: store embeddings.npy (and the projector checkpoint) as float16.
        overwrite: replace a finished output; also discard an interrupted run of another job.
        labels: "auto" | "subfolders" | "none" (see `list_job`).
        chunk_size: files per resumable chunk.
        max_pixels: images whose header declares more pixels are bad files (decompression-bomb guard).
        progress: show a progress bar.
        on_chunk: called with each chunk number once its file is written (tests interrupt here).
    Returns:
        The summary written to embed.json.
    """
    if batch_size < 1 or chunk_size < 1:
        raise DataError(f"--batch-size and the chunk size must be >= 1 (got {batch_size}, {chunk_size})")
    started = time.monotonic()
    images = Path(images).expanduser().absolute()
    output = Path(output).expanduser().absolute()
    check_output(output, overwrite)
    encoder = load_encoder(model)
    partial = partial_dir(output)
    listed = list_job(images, labels, exclude=[output, partial])
    n = len(listed.paths)
    thumb = projector.thumbnail_size(n, encoder.image_size)
    plan = {"format_version": FORMAT_VERSION, "images": str(images), "model_sha256": encoder.record["sha256"],
            "image_size": encoder.image_size, "chunk_size": int(chunk_size), "files": n,
            "listing_sha256": _listing_sha256(listed), "labels": "none" if listed.classes is None else "subfolders",
            "thumbnail": thumb}
    finished = set(_start_partial(partial, plan, overwrite))
    chunks = range((n + chunk_size - 1) // chunk_size)
    todo = [c for c in chunks if c not in finished]
    done_files = sum(min(chunk_size, n - c * chunk_size) for c in finished)
    if finished:
        print(f"resuming: {len(finished)} of {len(chunks)} chunks ({done_files} of {n} files) already embedded in "
              f"'{partial}'", flush=True)
    # The bar counts this run's files, so its rate and ETA are not skewed by the chunks resumed.
    bar = _progress_bar(n - done_files) if progress and todo else None
    computed_files, compute_started = 0, time.monotonic()
    for chunk in todo:
        start = chunk * chunk_size
        paths = listed.paths[start:start + chunk_size]
        arrays = embed_chunk(encoder, paths, start, batch_size, thumb, max_pixels)
        save_chunk(_chunk_path(partial, chunk), arrays)
        computed_files += len(paths)
        if bar is not None:
            bar.update(computed_files)
        if on_chunk is not None:
            on_chunk(chunk)
    compute_seconds = time.monotonic() - compute_started
    summary = {
        "format_version": FORMAT_VERSION,
        "sslzoo_version": __version__,
        "created_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "model": encoder.record,
        "preprocessing": dict(PREPROCESSING, image_size=encoder.image_size),
        "images": str(images),
        "labels": plan["labels"],
        "batch_size": int(batch_size),
        "chunk_size": int(chunk_size),
        "max_pixels": int(max_pixels),
        "resumed_chunks": len(finished),
        "embed_seconds": round(compute_seconds, 3),
        "images_per_second": round(computed_files / compute_seconds, 1) if computed_files and compute_seconds else None,
    }
    summary = _publish(output, partial, listed, encoder, summary, len(chunks), thumb, float16, overwrite)
    return dict(summary, seconds=round(time.monotonic() - started, 3))  # the whole command, resumes included


def _publish(output: Path, partial: Path, listed: Listed, encoder: Encoder, summary: dict, num_chunks: int,
             thumb: int, float16: bool, overwrite: bool) -> dict:
    """Assembles the finished chunks into the output folder, written whole, then drops the partial folder."""
    dtype = np.float16 if float16 else np.float32
    # Pass 1: which files worked, and the bad ones, chunk by chunk (only the small arrays stay in memory).
    kept: List[np.ndarray] = []
    bad: List[dict] = []
    for chunk in range(num_chunks):
        arrays = load_chunk(_chunk_path(partial, chunk))
        kept.append(arrays["indices"])
        bad.extend({"path": listed.relative[i], "error": error} for i, error in arrays["bad"])
    kept_indices = np.concatenate(kept) if kept else np.zeros([0], np.int64)
    count = len(kept_indices)
    bad.extend(listed.unlisted_bad)
    if count == 0:
        raise DataError(f"none of the {len(listed.paths)} images under '{summary['images']}' could be read; "
                        f"e.g. {bad[0]['path']}: {bad[0]['error']}" if bad else "no images")
    relative = [listed.relative[i] for i in kept_indices]
    classes = [listed.classes[i] for i in kept_indices] if listed.classes is not None else None
    force = output.exists()  # a finished output with --overwrite (checked), or an empty folder
    if force and is_finished(output) and not overwrite:
        raise EmbedOutputError(f"'{output}' was finished by another process meanwhile; pass --overwrite to "
                               "replace it")
    with atomic_directory(output, force=force) as folder:
        embeddings = np.lib.format.open_memmap(folder / EMBEDDINGS, mode="w+", dtype=dtype,
                                               shape=(count, encoder.dim))
        row = 0
        for chunk in range(num_chunks):
            block = load_chunk(_chunk_path(partial, chunk))["embeddings"]
            embeddings[row:row + len(block)] = block.astype(dtype)
            row += len(block)
        embeddings.flush()
        with open(folder / PATHS, "w", encoding="utf-8", errors="surrogateescape", newline="\n") as stream:
            stream.writelines(name + "\n" for name in relative)
        projector.write_metadata(folder / projector.METADATA, relative, classes)
        sprite = None
        if thumb:
            size = projector.write_sprite(
                folder / projector.SPRITE,
                (load_chunk(_chunk_path(partial, chunk))["thumbnails"] for chunk in range(num_chunks)),
                count, thumb)
            sprite = {"image_path": projector.SPRITE, "single_image_dim": [thumb, thumb], "size": size}
        checkpoint = projector.write_checkpoint(folder, np.asarray(embeddings))
        del embeddings  # close the memory map before the folder is renamed
        (folder / projector.PROJECTOR_CONFIG).write_text(projector.config_text(count, encoder.dim, sprite))
        summary.update({
            "count": count,
            "dim": encoder.dim,
            "dtype": np.dtype(dtype).name,
            "class_names": sorted(set(classes)) if classes is not None else [],
            "bad": bad,
            "passed_over": listed.passed_over,
            "files": {"embeddings": EMBEDDINGS, "paths": PATHS, "summary": SUMMARY},
            "projector": {
                "config": projector.PROJECTOR_CONFIG, "checkpoint": checkpoint, "tensor_name": projector.TENSOR_NAME,
                "metadata": projector.METADATA,
                "sprite": sprite or {"skipped": f"{count} images: above {projector.SPRITE_MAX_IMAGES} the "
                                                f"thumbnails would be under {projector.MIN_THUMBNAIL} px in the "
                                                f"projector's {projector.SPRITE_MAX_SIDE} px sprite"},
            },
        })
        (folder / SUMMARY).write_text(json.dumps(summary, indent=2, allow_nan=False) + "\n")
    shutil.rmtree(partial, ignore_errors=True)
    return summary
