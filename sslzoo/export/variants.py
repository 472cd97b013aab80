"""TFLite variants of an export (float32, float16, dynamic, int8) with their measured quality, and the
classifier TFLite when a head is attached. Called by `export_encoder` inside its staging folder."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, Optional, Sequence

import numpy as np

from sslzoo.export.tflite import VARIANTS, convert_to_tflite, convert_variant
from sslzoo.export.tflite_quality import EvalData, check_targets, measure_variant

logger = logging.getLogger(__name__)

CLASSIFIER_TFLITE = "classifier.tflite"


def variant_file(variant: str) -> str:
    """`encoder.tflite` for float32 (the file every export has), `encoder_<variant>.tflite` otherwise."""
    return "encoder.tflite" if variant == "float32" else f"encoder_{variant}.tflite"


def check_variants(variants: Sequence[str], representative_images: Optional[np.ndarray]) -> list:
    """Validates the requested variants before any work; float32 always comes first (the reference)."""
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown TFLite variant(s) {', '.join(unknown)}; allowed: {', '.join(VARIANTS)}")
    if "int8" in variants and representative_images is None:
        raise ValueError("the int8 variant needs representative_images (200-500 training images)")
    return ["float32"] + [v for v in VARIANTS if v in variants and v != "float32"]


def export_variants(staging: Path, saved_model_dir: Path, variants: Sequence[str], *, reference_fn,
                    images: np.ndarray, representative_images: Optional[np.ndarray] = None,
                    int8_io: bool = False, eval_data: Optional[EvalData] = None,
                    allow_accuracy_drop: bool = False, mediapipe: bool = False) -> Dict[str, dict]:
    """Writes every requested variant into `staging` and returns the card's `"tflite"` entry.

    Each entry holds size_bytes, max_abs_diff and mean_cosine against Keras on `images`, latency_ms at
    batch 1 for 1 and 2 threads, knn_top1 / linear_top1 on the validation split (with `eval_data`), and
    the target check. With `mediapipe`, each newly converted variant gets ImageEmbedder metadata
    (`sslzoo.export.mediapipe_metadata`) before it is measured. A float32 parity miss or a top-1 drop
    over 2 points raises (unless `allow_accuracy_drop`), which aborts the whole export.
    """
    keras_top1 = None
    if eval_data is not None:
        keras_top1 = {"knn_top1": eval_data.keras_knn_top1, "linear_top1": eval_data.keras_linear_top1}
    entries: Dict[str, dict] = {}
    for variant in variants:
        path = staging / variant_file(variant)
        if not path.exists():
            path.write_bytes(convert_variant(saved_model_dir, variant, representative_images,
                                             int8_io=int8_io and variant == "int8"))
            if mediapipe:  # before measuring: the card's size and figures are the shipped file's
                from sslzoo.export.mediapipe_metadata import add_embedder_metadata

                add_embedder_metadata(path)
        # 200 timed runs: a batch-1 call of a small encoder takes ~0.1 ms, so 20 runs were too noisy.
        results = measure_variant(str(path), reference_fn, images, eval_data=eval_data, runs=200)
        report = check_targets(results, keras_top1, variant, allow_accuracy_drop,
                               float32_results=entries.get("float32"))
        entries[variant] = {"file": path.name, **results, "targets": report}
        logger.info("TFLite %s: %d bytes, cosine %.5f, max diff %.2g", variant, results["size_bytes"],
                    results["mean_cosine"], results["max_abs_diff"])
    return entries


def export_classifier(staging: Path, saved_model_dir: Path, reference_probabilities: np.ndarray,
                      images: np.ndarray, tolerance: float = 1e-4) -> dict:
    """The `classify` signature as a float32 TFLite model beside labels.txt; returns its parity entry."""
    from sslzoo.export.tflite import interpreter

    path = staging / CLASSIFIER_TFLITE
    path.write_bytes(convert_to_tflite(saved_model_dir, signature="classify"))
    runner = interpreter(path).get_signature_runner("classify")
    probabilities = runner(images=np.ascontiguousarray(images, np.float32))["probabilities"]
    diff = float(np.max(np.abs(probabilities - reference_probabilities)))
    if not diff <= tolerance:
        from sslzoo.errors import ExportParityError

        raise ExportParityError(f"classifier TFLite differs from Keras: max abs diff {diff} > {tolerance}")
    return {"file": path.name, "signature": "classify", "max_abs_diff": diff}
