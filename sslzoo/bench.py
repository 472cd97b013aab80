"""Throughput benchmark of the training path on this machine.

    python -m sslzoo.bench [--config zoo_configs/rotnet_convnet_small_cifar10.yaml] [--encoder resnet18]
        [--precision mixed_bfloat16] [--batch-size 128] [--steps 40] [--data ../shared/data/cifar10/train]
        [--set encoder.options.width=1.0 ...]

Prints: this CPU's float32 matmul GFLOP/s (the ceiling), the method's training step's images/s on
in-memory input, the input pipeline alone (in-memory uint8 -> the method's augmentation), the
augmentation from JPEG files (read + decode + augment, e.g. SimCLR's two views), end to end from the image
folder, and the peak memory of the README demo. An image is one source image (RotNet turns it into four
rotated inputs, SimCLR into two views). The step and end to end alternate for --rounds rounds; each figure
is the median, printed with every round, the spread and the CPU share each round had; each is timed from
the end of a fit's second step to its last (`SteadyWindow`). A step slower than end to end (which includes
it) is measured again, never printed as a result. `--all` does this for every image method.
Targets: end to end >= 90% of the in-memory step rate; README demo peak memory < 4 GB.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import keras
import tensorflow as tf

from sslzoo import config as config_lib
from sslzoo import settings
from sslzoo.data import load_splits, split_pipeline
from sslzoo.data.decode import read_and_decode
from sslzoo.data.pipeline import without_autotune
from sslzoo.optimizers import build_optimizer
from sslzoo.training.budget import SETTLING_STEPS
from sslzoo.training.trainer import build_models

ROOT = settings.child_cwd()
# Of every timed fit, the steps a training run pays once (see SteadyWindow): the same count the wall-clock
# budget leaves out of its rate.
SKIPPED_STEPS = SETTLING_STEPS


def matmul_gflops(size: int = 2048, repeats: int = 10, dtype: str = "float32") -> float:
    """This CPU's GEMM rate in `dtype`: with a step's FLOPs, the ceiling of any framework's step rate."""
    a = tf.cast(tf.random.uniform((size, size)), dtype)
    b = tf.cast(tf.random.uniform((size, size)), dtype)
    matmul = tf.function(lambda x, y: tf.matmul(x, y))
    matmul(a, b).numpy()
    start = time.perf_counter()
    for _ in range(repeats):
        result = matmul(a, b)
    result.numpy()
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e9


def _config(path: str, data_path: str, encoder: str, batch_size: Optional[int], precision: str,
            extra: Sequence[str] = ()) -> config_lib.Config:
    overrides = ["data.source=folder", f"data.path={data_path}", f"trainer.mixed_precision={precision}"]
    if batch_size:
        overrides.append(f"trainer.batch_size={batch_size}")
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


class InconsistentMeasurement(RuntimeError):
    """The in-memory step measured slower than end to end (step plus input), attempt after attempt."""


def _steal_ticks() -> int | None:
    """CPU ticks the hypervisor has taken from this machine so far (Linux `/proc/stat`), else None."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
        return int(fields[8])
    except (OSError, IndexError, ValueError):
        return None


def _snapshot() -> tuple:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return time.perf_counter(), usage.ru_utime + usage.ru_stime, _steal_ticks()


def _between(start: tuple, end: tuple) -> dict:
    """Wall seconds between two `_snapshot`s, the share of the machine's CPUs this process used in them (a
    round slowed by another job shows below its neighbours) and the share the hypervisor stole."""
    cores = os.cpu_count() or 1
    seconds = end[0] - start[0]
    row = {"seconds": seconds, "cpu_share": round((end[1] - start[1]) / (seconds * cores), 3)}
    if start[2] is not None and end[2] is not None:
        row["steal_share"] = round((end[2] - start[2]) / os.sysconf("SC_CLK_TCK") / (seconds * cores), 4)
    return row


class SteadyWindow(keras.callbacks.Callback):
    """Times a `fit` from the end of its `skip`-th batch to the end of its last: the steady rate, without
    what every call pays once (a new input iterator filling its shuffle buffer, the first dispatch), which
    a training run pays once per run."""

    def __init__(self, skip: int):
        super().__init__()
        self.skip = skip
        self.start = self.end = None
        self.timed = 0

    def on_train_batch_end(self, batch, logs=None):
        if batch + 1 == self.skip:
            self.start = _snapshot()
        elif batch + 1 > self.skip:
            self.end = _snapshot()
            self.timed += 1

    def row(self) -> dict:
        if not self.timed:
            raise ValueError(f"the fit ran no more than {self.skip} batches: nothing was timed")
        return _between(self.start, self.end)


def alternate(measure_step, measure_end_to_end, images: int, rounds: int, attempts: int = 3,
              tolerance: float = 0.05) -> dict:
    """Alternates the in-memory step and end-to-end measurements for `rounds` rounds (so neither gains from
    running second) and returns every round with the medians and their spread.

    Each `measure_*()` returns a `SteadyWindow.row()` for a fixed `images` of training. End to end is step plus
    input, so a step median more than `tolerance` below the end-to-end median is a faulty measurement
    (another job, a slow spell of the machine), not a result: it is reported on stderr and measured again,
    up to `attempts` times, then `InconsistentMeasurement` is raised with every round.
    """
    tried = []
    for attempt in range(attempts):
        step, end_to_end = [], []
        for _ in range(rounds):
            step.append(measure_step())
            end_to_end.append(measure_end_to_end())
        result = {"rounds": rounds}
        for name, rows in (("step", step), ("end_to_end", end_to_end)):
            rates = [images / row["seconds"] for row in rows]
            median = statistics.median(rates)
            result[f"{name}_images_per_second"] = round(median, 1)
            result[f"{name}_rounds"] = [round(rate, 1) for rate in rates]
            result[f"{name}_spread"] = round((max(rates) - min(rates)) / median, 3)
            result[f"{name}_cpu_share"] = [row["cpu_share"] for row in rows]
            if all("steal_share" in row for row in rows):
                result[f"{name}_steal_share"] = [row["steal_share"] for row in rows]
        ratio = result["end_to_end_images_per_second"] / result["step_images_per_second"]
        result["end_to_end_over_step"] = round(ratio, 3)
        if ratio <= 1 + tolerance:
            result["attempts"] = attempt + 1
            return result
        tried.append(result)
        if attempt + 1 < attempts:
            print(f"bench: the in-memory step ({result['step_rounds']} images/s) measured below end to end "
                  f"({result['end_to_end_rounds']}), which includes it: not a result; CPU share per round "
                  f"{result['step_cpu_share']} / {result['end_to_end_cpu_share']}. Measuring again "
                  f"({attempt + 2} of {attempts}).", file=sys.stderr, flush=True)
    raise InconsistentMeasurement(
        f"the in-memory step stayed more than {tolerance:.0%} slower than end to end in {attempts} attempts: "
        f"{json.dumps(tried)}. Run the bench on an idle machine (no other job on its cores).")


def bench_training(config: config_lib.Config, steps: int, rounds: int = 3, attempts: int = 3,
                   min_seconds: float = 0.0) -> dict:
    if steps <= SKIPPED_STEPS:
        raise ValueError(f"--steps {steps}: time more than the {SKIPPED_STEPS} steps each measurement skips")
    start = time.perf_counter()
    splits = load_splits(config.data)
    decode_seconds = time.perf_counter() - start
    batch = config.trainer.batch_size
    _, method = build_models(config, num_classes=len(splits.class_names))
    method.compile(optimizer=build_optimizer(config.optimizer, steps_per_epoch=100, epochs=1))

    def pipeline(epochs):
        # Streamed from the files with --stream (data.cache=none), else from the decoded in-memory split.
        return split_pipeline(splits.train, batch_size=batch, seed=0, num_epochs=epochs, augment=method.augment)

    def fit(dataset, count, callbacks=()):
        # Keras keeps the traced train function from one call to the next.
        method.fit(dataset, steps_per_epoch=count, epochs=1, verbose=0, shuffle=False, callbacks=list(callbacks))

    def measure(dataset):
        window = SteadyWindow(SKIPPED_STEPS)
        fit(dataset, steps, [window])
        return window.row()

    # The in-memory input: up to 10 distinct augmented batches, made once and cycled, so the step trains on
    # data as it does end to end rather than on one batch it memorises.
    held = min(steps, 10)
    in_memory = pipeline(1).take(held).cache().repeat()
    for _ in in_memory.take(held):
        pass
    fit(in_memory, 5)  # tracing
    settle = SteadyWindow(SKIPPED_STEPS)
    fit(in_memory, steps, [settle])  # oneDNN primitive caches and thread pools settle here
    # A fast model's few steps last a fraction of a second, where a scheduler's hiccup is a third of the
    # figure: every measurement lasts at least min_seconds.
    step_seconds = settle.row()["seconds"] / (steps - SKIPPED_STEPS)
    steps = max(steps, SKIPPED_STEPS + math.ceil(min_seconds / step_seconds))

    start = time.perf_counter()
    count = 0
    for data in pipeline(2).take(steps * 3):
        count += int(data["labels"].shape[0])
    pipeline_rate = count / (time.perf_counter() - start)

    measured = alternate(lambda: measure(in_memory), lambda: measure(pipeline(10).repeat()),
                         images=(steps - SKIPPED_STEPS) * batch, rounds=rounds, attempts=attempts)
    jpeg_rate = jpeg_augment_rate(
        config.data.path, method.augment, batch, batches=max(steps, 20), image_size=config.data.image_size
    )
    return {
        "method": config.method.name,
        "encoder": config.encoder.name,
        "precision": config.trainer.mixed_precision,
        "streamed": bool(splits.train.streamed),
        "batch_size": batch,
        "timed_steps": steps - SKIPPED_STEPS,
        "decode_seconds": round(decode_seconds, 1),
        "decoded_images": int(len(splits.train.labels) + len(splits.val.labels)),
        "pipeline_images_per_second": round(pipeline_rate, 1),
        "jpeg_augment_images_per_second": round(jpeg_rate, 1),
        **measured,
    }


def bench_all(data_path: str, steps: int, rounds: int, attempts: int, precision: str = "float32",
              batch_size: Optional[int] = None, extra: Sequence[str] = (), min_seconds: float = 0.0) -> list:
    """`bench_training` for every registered image method on its zoo config (`*_convnet_small_cifar10.yaml`,
    the zoo benchmark's entries) as a user gets it: the config's own encoder options and batch size unless
    `batch_size` or `extra` overrides are given. One row per method; a method whose step stays slower than
    its end to end gets a row saying so and no figures."""
    from sslzoo.benchmark.entries import discover_entries
    from sslzoo.registry import METHODS

    rows = []
    for entry in discover_entries(METHODS.names()):
        config = _config(str(entry.config), data_path, "", batch_size, precision, extra)
        keras.mixed_precision.set_global_policy(config.trainer.mixed_precision)
        try:
            row = {"config": entry.stem, **bench_training(config, steps, rounds, attempts, min_seconds)}
        except InconsistentMeasurement as error:
            row = {"config": entry.stem, "method": entry.method, "not_measured": str(error)}
        finally:
            keras.backend.clear_session()
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def throughput_table(rows: Sequence[dict]) -> str:
    """The README's table: every method's in-memory step and end to end (medians, every round in brackets)."""
    lines = ["| method (config) | batch | step images/s (rounds) | end to end images/s (rounds) | end to end / step "
             "| input alone images/s |",
             "|---|---|---|---|---|---|"]
    for row in rows:
        if "not_measured" in row:
            lines.append(f"| {row['method']} (`{row['config']}`) | | not measured: the step stayed below end to end "
                         "| | | |")
            continue

        def rate(name):
            return f"{row[name + '_images_per_second']:,.1f} ({' / '.join(f'{r:,.1f}' for r in row[name + '_rounds'])})"

        ratio = row["end_to_end_over_step"]
        lines.append(f"| {row['method']} (`{row['config']}`) | {row['batch_size']} | {rate('step')} | "
                     f"{rate('end_to_end')} | {ratio:.2f}{' **below 0.9**' if ratio < 0.9 else ''} | "
                     f"{row['pipeline_images_per_second']:,.0f} |")
    return "\n".join(lines)


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
    parser.add_argument("--batch-size", type=int, default=None,
                        help="batch size (default 128; with --all each config's own)")
    parser.add_argument("--all", action="store_true",
                        help="every registered image method on its *_convnet_small_cifar10 config: step and end "
                             "to end, then a markdown table")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="config overrides, as train.py's (e.g. encoder.options.width=1.0)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="alternating rounds of in-memory step and end to end; every round is reported and "
                             "each figure is the median")
    parser.add_argument("--min-seconds", type=float, default=5.0,
                        help="time more than --steps steps when they would last less than this (fast models)")
    parser.add_argument("--attempts", type=int, default=3,
                        help="measure again when the step comes out more than 5%% below end to end, up to this "
                             "many times, then stop with an error")
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

    if args.all:
        rows = bench_all(args.data, args.steps, args.rounds, args.attempts, args.precision, args.batch_size, args.set,
                         args.min_seconds)
        print(throughput_table(rows))
        return
    results = {"matmul_gflops": round(matmul_gflops(), 1),
               "matmul_gflops_bfloat16": round(matmul_gflops(dtype="bfloat16"), 1)}
    config = _config(args.config, args.data, args.encoder, args.batch_size or 128, args.precision, args.set)
    keras.mixed_precision.set_global_policy(config.trainer.mixed_precision)
    try:
        results.update(bench_training(config, args.steps, args.rounds, args.attempts, args.min_seconds))
    except InconsistentMeasurement as error:
        raise SystemExit(f"bench: {error}") from None
    if not args.skip_demo:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            results["demo_peak_memory_mb"] = round(demo_peak_memory_mb(Path(tmp) / "demo"), 1)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
