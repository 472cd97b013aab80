"""Measured quality of a TFLite variant against its Keras encoder, and the deployment targets.

```python
results = measure_variant(tflite_bytes, keras_features_fn, images, eval_data=EvalData(...))
report = check_targets(results, {"knn_top1": 59.1, "linear_top1": 63.3}, "int8", float32_results=f32)
```
`measure_variant` returns `size_bytes`, `max_abs_diff` and `mean_cosine` (TFLite vs Keras features on the
same images), `latency_ms` (`{"1": ms, "2": ms}`: median per image at batch 1 over `runs` timed calls after
`warmup` calls, one fresh `ai_edge_litert` interpreter per thread count; the runner call only, input
already quantized) and, with `eval_data`, `knn_top1` / `linear_top1` on the val split from TFLite features.

Linear top-1 uses the *same head*: the Keras run's `linear_head.keras` (standardisation inside) applied
to the TFLite val features with `top1_percent`. That isolates what the conversion changed (no retraining
noise, no 30 epochs of Adam per variant) and is what a deployed classifier export does: the head is
trained once on Keras features. Without a head, `eval_data.linear_head=None`, a probe is retrained on the
TFLite train features with `linear_probe` (`linear_method` in the results says which).

Targets, checked by `check_targets`:
* float32: max abs diff <= 1e-4, else `TFLiteParityError`.
* int8: size <= 0.3x float32 and mean cosine >= 0.98 (missed -> warning and `passed=False`);
  latency <= 0.6x float32 at 1 thread (a warning only: latency is noisy on shared cores).
* every variant: top-1 drop vs Keras <= 1 point is the target (warning above), > 2 points raises
  `AccuracyDropError` unless `allow_accuracy_drop=True`.
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, Mapping, Optional, Union

import numpy as np

from sslzoo.export.litert_model import TFLiteModel
from sslzoo.errors import AccuracyDropError, TFLiteParityError  # noqa: F401  (raised here)

logger = logging.getLogger(__name__)

FLOAT32_MAX_ABS_DIFF = 1e-4
INT8_MIN_COSINE = 0.98
INT8_MAX_SIZE_RATIO = 0.3
INT8_MAX_LATENCY_RATIO = 0.6
TOP1_DROP_TARGET = 1.0  # points: above this, warn
TOP1_DROP_LIMIT = 2.0  # points: above this, raise


class TargetWarning(UserWarning):
    """A deployment target missed that does not fail the export (size, cosine, latency, a 1-2 point drop)."""


@dataclass
class EvalData:
    """The split a variant's top-1 is measured on: uint8 images, int labels, and the Keras figures.

    `linear_head` is the Keras run's linear head (features -> probabilities); see the module docstring.
    """

    train_images: np.ndarray
    train_labels: np.ndarray
    val_images: np.ndarray
    val_labels: np.ndarray
    num_classes: int
    keras_knn_top1: Optional[float] = None
    keras_linear_top1: Optional[float] = None
    linear_head: object = None
    knn_k: int = 200
    knn_temperature: float = 0.07
    linear_epochs: int = 30


def _as_eval_data(eval_data: Union[EvalData, Mapping, None]) -> Optional[EvalData]:
    if eval_data is None or isinstance(eval_data, EvalData):
        return eval_data
    return EvalData(**dict(eval_data))


def _as_float01(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    if images.dtype == np.uint8:
        return images.astype(np.float32) / 255.0
    return images.astype(np.float32)


def max_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    if a.shape != b.shape:
        return float("inf")
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))) if a.size else 0.0


def mean_cosine(a: np.ndarray, b: np.ndarray, eps: float = 1e-12) -> float:
    """Mean over rows of cos(a_i, b_i); two all-zero rows count as 1 (identical), one zero row as 0."""
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    both_zero = (np.linalg.norm(a, axis=1) < eps) & (np.linalg.norm(b, axis=1) < eps)
    cosines = np.where(norms > eps, np.sum(a * b, axis=1) / np.maximum(norms, eps), 0.0)
    cosines = np.where(both_zero, 1.0, cosines)
    return float(np.mean(cosines))


def measure_latency(tflite: Union[bytes, str], image: np.ndarray, threads: Iterable[int] = (1, 2),
                    runs: int = 20, warmup: int = 3) -> Dict[str, float]:
    """Median milliseconds of one batch-1 call per thread count: `{"1": ms, "2": ms}`.

    `image` is one float32 image `[S, S, 3]` or `[1, S, S, 3]` in [0, 1]; it is quantized once beforehand
    for int8-io models, so only the interpreter's invoke (plus the runner's copy in/out) is timed.
    """
    image = _as_float01(image)
    if image.ndim == 3:
        image = image[None]
    latency = {}
    for count in threads:
        model = TFLiteModel(tflite, num_threads=int(count))
        prepared = model.prepare_input(image[:1])
        for _ in range(max(warmup, 1)):  # the first call also allocates tensors and sets up XNNPACK
            model.run_prepared(prepared)
        timings = []
        for _ in range(max(runs, 1)):
            started = time.perf_counter()
            model.run_prepared(prepared)
            timings.append((time.perf_counter() - started) * 1000.0)
        latency[str(int(count))] = float(np.median(timings))
    return latency


def measure_variant(tflite_bytes: Union[bytes, str], reference: Union[Callable[[np.ndarray], np.ndarray], np.ndarray],
                    images: np.ndarray, *, eval_data: Union[EvalData, Mapping, None] = None,
                    threads: Iterable[int] = (1, 2), runs: int = 20, warmup: int = 3,
                    batch_size: int = 256) -> dict:
    """Size, feature agreement, latency and (with `eval_data`) top-1 of one TFLite variant.

    Args:
        tflite_bytes: the flatbuffer (or a path to a `.tflite`).
        reference: Keras features of `images` (float [N, D]) or a function images -> features
            (e.g. `lambda x: encoder(x, training=False)`).
        images: float32 [N, S, S, 3] in [0, 1] (uint8 is scaled by 1/255), the parity images.
        eval_data: `EvalData` (or a mapping of its fields) for `knn_top1` / `linear_top1` on its val split.
        threads, runs, warmup: the latency measurement (see `measure_latency`).
        batch_size: images per interpreter call when extracting features.

    Returns:
        dict with size_bytes, max_abs_diff, mean_cosine, num_images, latency_ms {"1", "2"}, and with
        eval_data: knn_top1, linear_top1, linear_method ("keras_head" or "retrained"), keras_knn_top1,
        keras_linear_top1, knn_drop, linear_drop (points, Keras minus TFLite; None without a Keras figure).
    """
    if isinstance(tflite_bytes, (bytes, bytearray)):
        size = len(tflite_bytes)
    else:
        from pathlib import Path

        size = Path(tflite_bytes).stat().st_size
    images = _as_float01(images)
    reference_features = reference(images) if callable(reference) else reference
    reference_features = np.asarray(reference_features, np.float32)
    model = TFLiteModel(tflite_bytes)
    features = model.predict(images, batch_size=batch_size)
    results = {
        "size_bytes": int(size),
        "num_images": int(len(images)),
        "max_abs_diff": max_abs_diff(features, reference_features),
        # The float32 tolerance is relative to this (largest |feature|, at least 1): float32 keeps ~7 digits.
        "feature_scale": max(1.0, float(np.max(np.abs(reference_features)))) if reference_features.size else 1.0,
        "mean_cosine": mean_cosine(features, reference_features),
        "quantized_io": bool(model.quantized_io),
        "latency_ms": measure_latency(tflite_bytes, images[:1], threads=threads, runs=runs, warmup=warmup),
    }
    data = _as_eval_data(eval_data)
    if data is not None:
        results.update(_top1(model, data, batch_size))
    return results


def _top1(model: TFLiteModel, data: EvalData, batch_size: int) -> dict:
    from sslzoo.evaluation import knn_top1, linear_probe, top1_percent

    train_features = model.predict(_as_float01(data.train_images), batch_size=batch_size)
    val_features = model.predict(_as_float01(data.val_images), batch_size=batch_size)
    knn = knn_top1(train_features, data.train_labels, val_features, data.val_labels, data.num_classes,
                   k=data.knn_k, temperature=data.knn_temperature)
    if data.linear_head is not None:
        linear = top1_percent(data.linear_head, val_features, data.val_labels)
        method = "keras_head"
    else:
        linear, _ = linear_probe(train_features, data.train_labels, val_features, data.val_labels,
                                 data.num_classes, epochs=data.linear_epochs)
        method = "retrained"

    def drop(keras_value, value):
        return None if keras_value is None else float(keras_value) - float(value)

    return {
        "knn_top1": float(knn),
        "linear_top1": float(linear),
        "linear_method": method,
        "keras_knn_top1": data.keras_knn_top1,
        "keras_linear_top1": data.keras_linear_top1,
        "knn_drop": drop(data.keras_knn_top1, knn),
        "linear_drop": drop(data.keras_linear_top1, linear),
    }


def check_targets(results: Mapping, keras_top1: Union[float, Mapping, None], variant: str,
                  allow_accuracy_drop: bool = False, *, float32_results: Optional[Mapping] = None,
                  metric: str = "knn_top1") -> dict:
    """Checks one variant's `measure_variant` results against the deployment targets.

    Args:
        results: `measure_variant` output (only the keys a check needs must be present).
        keras_top1: the Keras encoder's top-1: a number (compared with `results[metric]`), a mapping
            `{"knn_top1": .., "linear_top1": ..}` (each compared with the same key of `results`), or None.
        variant: "float32", "float16", "dynamic" or "int8".
        allow_accuracy_drop: turn a > 2 point drop from an error into a warning.
        float32_results: the float32 variant's results, for the int8 size and latency ratios.
        metric: the results key a plain-number `keras_top1` is compared with.

    Returns:
        `{"variant", "passed", "checks": [{"name", "value", "target", "ok", "severity"}], "warnings": [...]}`;
        severity "error" (raised), "target" (warned, `passed` False) or "report" (latency: warned only).

    Raises:
        TFLiteParityError: float32 max abs diff > 1e-4 x the features' largest magnitude above 1 (or NaN).
        AccuracyDropError: a top-1 drop > 2 points, unless `allow_accuracy_drop`.
    """
    from sslzoo.export.tflite import VARIANTS

    if variant not in VARIANTS:
        raise ValueError(f"unknown TFLite variant {variant!r}; allowed: {', '.join(VARIANTS)}")
    checks, problems = [], []

    def add(name, value, target, ok, severity):
        checks.append({"name": name, "value": value, "target": target, "ok": bool(ok), "severity": severity})
        if not ok:
            problems.append(f"{variant}: {name} = {value} misses the target {target}")

    if variant == "float32" and "max_abs_diff" in results:
        diff, scale = results["max_abs_diff"], results.get("feature_scale", 1.0)
        limit = FLOAT32_MAX_ABS_DIFF * scale
        target = f"<= {FLOAT32_MAX_ABS_DIFF}" + (f" x feature scale {scale:.4g}" if scale > 1.0 else "")
        add("max_abs_diff", diff, target, diff <= limit, "error")
        if not diff <= limit:  # `not <=` so that NaN fails too
            raise TFLiteParityError(f"float32 TFLite differs from Keras: max abs diff {diff} > {limit:.4g} ({target})")

    if variant == "int8":
        if "mean_cosine" in results:
            cosine = results["mean_cosine"]
            add("mean_cosine", cosine, f">= {INT8_MIN_COSINE}", cosine >= INT8_MIN_COSINE, "target")
        if float32_results is not None and "size_bytes" in results:
            ratio = results["size_bytes"] / float32_results["size_bytes"]
            add("size_ratio", ratio, f"<= {INT8_MAX_SIZE_RATIO}", ratio <= INT8_MAX_SIZE_RATIO, "target")
        if float32_results is not None and "latency_ms" in results and "latency_ms" in float32_results:
            for threads, ms in results["latency_ms"].items():
                base = float32_results["latency_ms"].get(threads)
                if base:
                    ratio = ms / base
                    add(f"latency_ratio_{threads}t", ratio, f"<= {INT8_MAX_LATENCY_RATIO}",
                        ratio <= INT8_MAX_LATENCY_RATIO, "report")

    drops = _accuracy_drops(results, keras_top1, metric)
    too_large = []
    for name, drop in drops.items():
        ok = drop <= TOP1_DROP_TARGET
        add(f"{name}_drop", drop, f"<= {TOP1_DROP_TARGET} points (error above {TOP1_DROP_LIMIT})", ok,
            "error" if drop > TOP1_DROP_LIMIT and not allow_accuracy_drop else "target")
        if drop > TOP1_DROP_LIMIT:
            too_large.append(f"{name} drops {drop:.2f} points")
    if too_large and not allow_accuracy_drop:
        raise AccuracyDropError(f"TFLite {variant}: {', '.join(too_large)} vs Keras (limit {TOP1_DROP_LIMIT}); "
                                "pass allow_accuracy_drop=True to export it anyway")

    for message in problems:
        warnings.warn(message, TargetWarning, stacklevel=2)
        logger.warning(message)
    passed = all(check["ok"] for check in checks if check["severity"] != "report")
    return {"variant": variant, "passed": passed, "checks": checks, "warnings": problems}


def _accuracy_drops(results: Mapping, keras_top1, metric: str) -> Dict[str, float]:
    """`{metric: keras - tflite}` for every top-1 both sides have."""
    if keras_top1 is None:
        return {}
    if isinstance(keras_top1, Mapping):
        pairs = {key: value for key, value in keras_top1.items() if value is not None}
    else:
        pairs = {metric: keras_top1}
    drops = {}
    for key, keras_value in pairs.items():
        if results.get(key) is None:
            raise KeyError(f"results have no {key!r} to compare with the Keras top-1 (measure with eval_data)")
        drops[key] = float(keras_value) - float(results[key])
    return drops
