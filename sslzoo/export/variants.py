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


def probabilities_only_tflite(saved_model_dir: Path, signature: str = "classify") -> bytes:
    """The SavedModel's `classify` signature converted with its `probabilities` output only (float32).

    The SavedModel keeps `class_ids` (int64) and `class_names` (string) for TF Serving; the TFLite file
    does not: MediaPipe's ImageClassifier reads float32 / uint8 score tensors only, and the names are in
    labels.txt (and packed in the file with mediapipe installed)."""
    import tempfile

    import tensorflow as tf

    from sslzoo.export.saved_model import load_saved_model

    loaded = load_saved_model(saved_model_dir)
    classify = loaded.signatures[signature]
    spec = classify.structured_input_signature[1]["images"]

    module = tf.Module()
    module.loaded = loaded  # tracks the variables

    @tf.function(input_signature=[tf.TensorSpec(spec.shape, tf.float32, name="images")])
    def probabilities(images):
        return {"probabilities": classify(images=images)["probabilities"]}

    with tempfile.TemporaryDirectory() as folder:
        tf.saved_model.save(module, folder, signatures={signature: probabilities.get_concrete_function()})
        return convert_to_tflite(folder, signature=signature)


def export_classifier(staging: Path, saved_model_dir: Path, reference_probabilities: np.ndarray,
                      images: np.ndarray, class_names: Optional[Sequence[str]] = None, *,
                      mediapipe: bool = False, tolerance: float = 1e-4) -> dict:
    """Writes `classifier.tflite` beside labels.txt and returns its card entry.

    Signature `classify`: `images` float32 `[N, S, S, 3]` -> `probabilities` float32 `[N, C]` only (argmax
    + labels.txt give the class). With `mediapipe`, ImageClassifier metadata with `class_names` packed in
    as labels.txt is written before the parity check, so the file checked is the file shipped. Raises
    `ExportParityError` when its probabilities differ from Keras by more than `tolerance`."""
    from sslzoo.export.tflite import interpreter

    blob = probabilities_only_tflite(saved_model_dir)
    if mediapipe:
        from sslzoo.export.mediapipe_metadata import classifier_model

        if class_names is None:
            raise ValueError("ImageClassifier metadata needs the class names")
        blob = classifier_model(blob, class_names)
    runner = interpreter(blob).get_signature_runner("classify")
    probabilities = runner(images=np.ascontiguousarray(images, np.float32))["probabilities"]
    diff = float(np.max(np.abs(probabilities - reference_probabilities)))
    if not diff <= tolerance:
        from sslzoo.errors import ExportParityError

        raise ExportParityError(f"classifier TFLite differs from Keras: max abs diff {diff} > {tolerance}")
    path = Path(staging) / CLASSIFIER_TFLITE
    path.write_bytes(blob)
    return {"file": path.name, "signature": "classify", "outputs": ["probabilities"], "max_abs_diff": diff}
