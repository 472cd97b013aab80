"""Throughput benchmark of the training path on this machine.

    python -m sslzoo.bench [--config zoo_configs/rotnet_convnet_small_cifar10.yaml] [--encoder resnet18]
        [--precision mixed_bfloat16] [--batch-size 128] [--steps 40] [--data ../shared/data/cifar10/train]
        [--set encoder.options.width=1.0 ...]

Prints: this CPU's float32 matmul GFLOP/s (the ceiling), the method's training step's images/s on
in-memory input, the input pipeline alone (in-memory uint8 -> the method's augmentation), the
augmentation from JPEG files (read + decode + augment, e.g. SimCLR's two views), end to end from the image
folder, and the peak memory of the README demo. An image is one source image (RotNet turns it into four
rotated inputs, SimCLR into two views).
Targets: end to end >= 90% of the in-memory step rate (issues 2 and 6); README demo peak memory < 4 GB.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess

import time
from pathlib import Path
from typing import Sequence

import keras
import tensorflow as tf

from sslzoo import config as config_lib
from sslzoo import settings
from sslzoo.data import load_splits, split_pipeline
from sslzoo.data.decode import read_and_decode
from sslzoo.data.pipeline import without_autotune
from sslzoo.optimizers import build_optimizer
from sslzoo.training.trainer import build_models

ROOT = settings.child_cwd()


def matmul_gflops(size: int = 2048, repeats: int = 10) -> float:
    a = tf.random.uniform((size, size))
    b = tf.random.uniform((size, size))
    matmul = tf.function(lambda x, y: tf.matmul(x, y))
    matmul(a, b).numpy()
    start = time.perf_counter()
    for _ in range(repeats):
        result = matmul(a, b)
    result.numpy()
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e9


def _config(path: str, data_path: str, encoder: str, batch_size: int, precision: str,
            extra: Sequence[str] = ()) -> config_lib.Config:
    overrides = ["data.source=folder", f"data.path={data_path}", f"trainer.batch_size={batch_size}",
                 f"trainer.mixed_precision={precision}"]
    if encoder:
        overrides.append(f"encoder.name={encoder}")
    return config_lib.load(settings.resolve_config(path), [*overrides, *extra])  # a path or a shipped name


def jpeg_augment_rate(data_path: str, augment, batch_size: int, batches: int, image_size: int = 32) -> float:
    """Images/s of read + decode + the method's batched augmentation, straight from the JPEG files (what a
    PyTorch DataLoader with a per-image transform does), on tf.data's parallel reader."""
    files = sorted(str(f) for f in Path(data_path).rglob("*") if f.suffix.lower() in (".jpg", ".jpeg"))
    if not files:
        raise SystemExit(f"--data {data_path}: no JPEG files to time the JPEG augmentation on")
    files = files[: batch_size * (batches + 2)]

    def decode(path):
        # The training path's own decode: by content, shorter side resized to image_size, centre crop.
        return read_and_decode(path, image_size)

    # As the training pipeline: uint8 batches, scaled to [0, 1] right before the augmentation.
    dataset = without_autotune(
        tf.data.Dataset.from_tensor_slices(files)
        .map(decode, num_parallel_calls=tf.data.AUTOTUNE)
        .batch(batch_size, drop_remainder=True)
        .enumerate()
        .map(lambda i, x: augment(tf.cast(x, tf.float32) * (1.0 / 255.0), tf.zeros([batch_size], tf.int32),
                                  tf.stack([tf.cast(i, tf.int32), 0])),
             num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )
    iterator = iter(dataset)
    next(iterator)  # tracing
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches * batch_size / (time.perf_counter() - start)


def _timed_fit(method, dataset, steps: int, warmup: int = 5) -> float:
    """Seconds of `fit` over `steps` batches of a repeating `dataset`, after `warmup` batches (tracing,
    thread pools); Keras keeps the traced train function between the two calls."""
    method.fit(dataset, steps_per_epoch=warmup, epochs=1, verbose=0, shuffle=False)
    start = time.perf_counter()
    method.fit(dataset, steps_per_epoch=steps, epochs=1, verbose=0, shuffle=False)
    return time.perf_counter() - start


def bench_training(config: config_lib.Config, steps: int, rounds: int = 2) -> dict:
    start = time.perf_counter()
    splits = load_splits(config.data)
    decode_seconds = time.perf_counter() - start
    batch = config.trainer.batch_size
    _, method = build_models(config, num_classes=len(splits.class_names))
    method.compile(optimizer=build_optimizer(config.optimizer, steps_per_epoch=100, epochs=1))

    def pipeline(epochs):
        # Streamed from the files with --stream (data.cache=none), else from the decoded in-memory split.
        return split_pipeline(splits.train, batch_size=batch, seed=0, num_epochs=epochs, augment=method.augment)

    # The in-memory input: up to 10 distinct augmented batches, made once and cycled, so the step trains on
    # data as it does end to end rather than on one batch it memorises. (At 128 px the in-memory step still
    # measured 31-48 images/s across runs, either input; the cause is not known.)
    held = min(steps, 10)
    in_memory = pipeline(1).take(held).cache().repeat()
    for _ in in_memory.take(held):
        pass
    _timed_fit(method, in_memory, steps)  # oneDNN primitive caches and thread pools settle here

    start = time.perf_counter()
    count = 0
    for data in pipeline(2).take(steps * 3):
        count += int(data["labels"].shape[0])
    pipeline_rate = count / (time.perf_counter() - start)

    # Alternate the two measurements and keep each one's best, so neither gains from running second (and a
    # slow spell of this shared machine, which has cost either one a third of its rate, is outvoted).
    step_seconds, end_to_end_seconds = float("inf"), float("inf")
    for _ in range(rounds):
        step_seconds = min(step_seconds, _timed_fit(method, in_memory, steps))
        end_to_end_seconds = min(end_to_end_seconds, _timed_fit(method, pipeline(10).repeat(), steps))
    step_rate = steps * batch / step_seconds
    end_to_end_rate = steps * batch / end_to_end_seconds
    jpeg_rate = jpeg_augment_rate(
        config.data.path, method.augment, batch, batches=max(steps, 20), image_size=config.data.image_size
    )
    return {
        "method": config.method.name,
        "encoder": config.encoder.name,
        "precision": config.trainer.mixed_precision,
        "streamed": bool(splits.train.streamed),
        "batch_size": batch,
        "decode_seconds": round(decode_seconds, 1),
        "decoded_images": int(len(splits.train.labels) + len(splits.val.labels)),
        "step_images_per_second": round(step_rate, 1),
        "pipeline_images_per_second": round(pipeline_rate, 1),
        "jpeg_augment_images_per_second": round(jpeg_rate, 1),
        "end_to_end_images_per_second": round(end_to_end_rate, 1),
        "end_to_end_over_step": round(end_to_end_rate / step_rate, 3),
    }


def demo_peak_memory_mb(output: Path) -> float:
    """Runs the README demo's training in a child process and reports its peak resident memory."""
    subprocess.run(
        [*settings.train_command(), "--config", str(settings.config_dir() / "rotnet_convnet_small_synthetic.yaml"),
         "--output", str(output), "--quiet"],
        cwd=settings.child_cwd(), check=True, capture_output=True,
    )
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # Linux reports KiB


def stream_peak_memory_mb(folder: str, config_path: str, image_size: int, steps: int, output: Path) -> dict:
    """Peak resident memory of a streamed training run (data.cache=none, unlabelled) on `folder`, in a
    child process of its own: what the own-data issue asks to stay flat as the folder grows."""
    command = [*settings.train_command(), "--config", config_path, "--quiet", "--output", str(output), "--set",
               "data.source=folder", f"data.path={folder}", "data.labels=none", "data.cache=none",
               f"data.image_size={image_size}", "trainer.epochs=1", f"trainer.steps_per_epoch={steps}",
               "eval.random_init=false"]
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=settings.child_cwd(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"streamed run on {folder} failed: {process.stderr.read().decode()[-2000:]}")
    metrics = json.loads((output / "metrics.json").read_text())
    return {"folder": folder, "images": metrics["data"]["num_train"] + metrics["data"]["num_val"],
            "peak_rss_mb": round(usage.ru_maxrss / 1024, 1), "seconds": round(time.perf_counter() - start, 1)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(ROOT.parent / "shared/data/cifar10/train"))
    parser.add_argument("--config", default=str(settings.config_dir() / "rotnet_convnet_small_cifar10.yaml"))
    parser.add_argument("--encoder", default="", help="override the config's encoder (e.g. resnet18)")
    parser.add_argument("--precision", default="float32", choices=["float32", "mixed_bfloat16", "mixed_float16"])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="config overrides, as train.py's (e.g. encoder.options.width=1.0)")
    parser.add_argument("--rounds", type=int, default=2,
                        help="alternating rounds of in-memory step and end to end; each keeps its best")
    parser.add_argument("--skip-demo", action="store_true", help="skip the README demo memory run")
    parser.add_argument("--stream", action="store_true",
                        help="end to end streamed from the image files (data.cache=none) instead of from memory")
    parser.add_argument("--stream-memory", nargs="+", metavar="FOLDER",
                        help="only measure the peak memory of a streamed run on each folder (e.g. 10k and 100k "
                             "images), at --image-size, for --steps steps")
    parser.add_argument("--image-size", type=int, default=64)
    args = parser.parse_args(argv)
    if args.stream_memory:
        import tempfile

        rows = []
        with tempfile.TemporaryDirectory() as tmp:
            for i, folder in enumerate(args.stream_memory):
                rows.append(stream_peak_memory_mb(folder, args.config, args.image_size, args.steps,
                                                  Path(tmp) / f"run{i}"))
                print(json.dumps(rows[-1]), flush=True)
        if len(rows) > 1:
            print(json.dumps({"peak_rss_ratio_last_over_first": round(rows[-1]["peak_rss_mb"] / rows[0]["peak_rss_mb"], 3)}))
        return
    if args.stream:
        args.set = [*args.set, "data.cache=none"]

    results = {"matmul_gflops": round(matmul_gflops(), 1)}
    config = _config(args.config, args.data, args.encoder, args.batch_size, args.precision, args.set)
    keras.mixed_precision.set_global_policy(config.trainer.mixed_precision)
    results.update(bench_training(config, args.steps, args.rounds))
    if not args.skip_demo:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            results["demo_peak_memory_mb"] = round(demo_peak_memory_mb(Path(tmp) / "demo"), 1)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
