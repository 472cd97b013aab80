"""`export_encoder`: one call that writes, checks and atomically publishes an export folder.

```
<output_dir>/
  <version>/        SavedModel, TF Serving layout: serving_default (images [N,S,S,3] f32 -> {"features"}),
                    embed_images (image_bytes string [N] -> {"features"}) and, with a head, classify /
                    classify_bytes (-> {"probabilities", "class_ids", "class_names"})
    assets.extra/tf_serving_warmup_requests   PredictionLog records TF Serving replays at load
  classifier.tflite  with a head: signature classify, images -> probabilities [N, C] only (+ MediaPipe
                    ImageClassifier metadata with labels.txt packed in when mediapipe is installed)
  encoder.tflite    float32 TFLite with the serving_default signature (+ MediaPipe ImageEmbedder metadata
                    when mediapipe is installed: sslzoo.export.mediapipe_metadata)
  encoder.keras     the Keras encoder, for fine-tuning (loads with safe_mode=True)
  labels.txt        with a head: the class names, one per line, in class-id order
  model_card.json   the caller's card + input spec, signatures, parity figures, sha256 of every file
```
Order of work inside the temporary folder: SavedModel -> graph check -> SavedModel parity (every
signature) -> warmup requests -> TFLite -> TFLite parity -> .keras -> safe-mode reload parity -> labels
-> hashes -> card. Any failure (including a parity
miss) discards the temporary folder, so an export that exists has passed every check.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Sequence

import keras
import numpy as np

from sslzoo.files import atomic_directory
from sslzoo.export.card import CARD_NAME, build_card, check_card_input, file_hashes, write_card
from sslzoo.export.saved_model import (
    CLASS_IDS_NAME,
    CLASS_NAMES_NAME,
    CLASSIFY,
    CLASSIFY_BYTES,
    PROBABILITIES_NAME,
    SERVING_DEFAULT,
    describe_signatures,
    load_saved_model,
    save_saved_model,
    saved_model_bytes_features,
    saved_model_classify,
    saved_model_features,
)
from sslzoo.export import mediapipe_metadata, serving_requests
from sslzoo.export.tflite import convert_to_tflite, interpreter, signature_io, tflite_features
from sslzoo.export.variants import check_variants, export_classifier, export_variants
from sslzoo.layers.builtin import with_builtin_layers
from sslzoo.errors import ExportParityError  # noqa: F401  (raised here)

logger = logging.getLogger(__name__)

PARITY_BATCH_SIZES = (1, 7, 32)
SAVED_MODEL_TOLERANCE = 1e-5  # SavedModel vs Keras at batch 1, 7, 32 (docs/ARCHITECTURE.md, export folder)
TFLITE_TOLERANCE = 1e-4
KERAS_FILE = "encoder.keras"
TFLITE_FILE = "encoder.tflite"
LABELS_FILE = "labels.txt"
HEAD_FILE = "head.keras"


def export_encoder(encoder: keras.Model, output_dir: str | Path, *, image_size: int, card: Mapping,
                   sample_images: Optional[np.ndarray] = None, force: bool = False, version: int = 1,
                   head: Optional[keras.Model] = None, class_names: Optional[Sequence[str]] = None,
                   head_kind: str = "linear_probe", warmup: bool = True,
                   tflite_variants: Sequence[str] = ("float32",),
                   representative_images: Optional[np.ndarray] = None, int8_io: bool = False,
                   eval_data=None, allow_accuracy_drop: bool = False, onnx: bool = False) -> Path:
    """Exports `encoder` to `output_dir` (SavedModel, TFLite, .keras, model card), atomically.

    Args:
        encoder: functional `keras.Model`, float32 images `[N, S, S, 3]` in [0, 1] -> features `[N, D]`,
            built-in layers only, normalisation inside.
        output_dir: the export folder, e.g. `exported/<name>`.
        image_size: S.
        card: JSON-serializable facts about the model (method, encoder, config, metrics, ...).
        sample_images: images for the parity checks, float `[N, S, S, 3]` in [0, 1] (or uint8 0..255);
            fewer than 32 are cycled. None: deterministic uniform random images.
        force: replace an existing export (atomically). Without it an existing one raises
            `ExportExistsError` and is left untouched.
        version: the SavedModel version folder (TF Serving serves the highest integer).
        head: optional classification head, a `keras.Model` features `[N, D]` -> probabilities `[N, C]`
            (the run's `linear_head.keras`); adds the `classify` and `classify_bytes` signatures,
            `labels.txt` and the card's "head" entry.
        class_names: the C label names in class-id order; required with `head`, refused without it.
        head_kind: what the head is, recorded in the card ("linear_probe" for the run's linear head).
        warmup: write `<version>/assets.extra/tf_serving_warmup_requests` (needs tensorflow-serving-api;
            skipped with a warning when it is not installed).
        tflite_variants: any of float32, float16, dynamic, int8; float32 (`encoder.tflite`) is always
            written, the others as `encoder_<variant>.tflite`, each measured into the card's "tflite".
        representative_images: 200-500 training images (float [0, 1] or uint8) for int8 calibration.
        int8_io: int8 input and output tensors for the int8 variant (else float32 in and out).
        eval_data: `sslzoo.export.tflite_quality.EvalData` for kNN / linear top-1 of every variant on the
            validation split next to the Keras figures.
        allow_accuracy_drop: export even when a variant loses more than 2 points of top-1.
        onnx: also write `encoder.onnx` (tf2onnx from the SavedModel), parity checked in onnxruntime.
    Returns:
        `output_dir` as a `Path`.
    """
    started = time.perf_counter()
    output_dir = Path(output_dir)
    check_card_input(card)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ValueError(f"version must be an integer >= 1, got {version!r}")
    # Built-in layers only in every artifact (the fused batch norm and the small-map conv are training-speed
    # details).
    encoder = with_builtin_layers(encoder)
    feature_dim = _check_encoder(encoder, image_size)
    head_info = _check_head(head, class_names, feature_dim, head_kind, card)
    if "serving" in card:
        raise ValueError("card sets 'serving' itself; the exporter writes it")
    variants = check_variants(tflite_variants, representative_images)
    images = parity_images(sample_images, image_size, max(PARITY_BATCH_SIZES))
    # The bytes signatures are checked on PNG encodings of the parity images (lossless: the decoded uint8
    # pixels are exactly the quantised parity images, so the reference is the encoder on those).
    quantised = np.round(np.clip(images, 0.0, 1.0) * 255.0).astype(np.uint8)
    encoded = serving_requests.encode_png(quantised)
    quantised = quantised.astype(np.float32) / 255.0
    reference = {n: keras_features(encoder, images[:n]) for n in PARITY_BATCH_SIZES}
    bytes_reference = {n: keras_features(encoder, quantised[:n]) for n in PARITY_BATCH_SIZES}

    with atomic_directory(output_dir, force=force) as staging:
        saved_model_dir = staging / str(version)
        save_saved_model(encoder, saved_model_dir, image_size, head=head,
                         class_names=head_info["class_names"] if head_info else None)
        loaded = load_saved_model(saved_model_dir)  # refuses a graph with file, print or Python ops
        signatures = describe_signatures(loaded)
        saved_model_diffs = _saved_model_parity(loaded, images, reference)
        embed_diffs = _embed_images_parity(loaded, encoded, bytes_reference)
        classify_diffs = {}
        if head is not None:
            classify_diffs = _classify_parity(loaded, head, images, encoded, reference, bytes_reference,
                                              head_info["class_names"])
        warmup_written = False
        if warmup:
            warmup_written = serving_requests.write_warmup_requests(
                saved_model_dir, images[:1], encoded[:1], classify=head is not None)

        use_mediapipe = mediapipe_metadata.available()
        if not use_mediapipe:
            logger.warning(mediapipe_metadata.SKIPPED_MESSAGE)
        tflite_path = staging / TFLITE_FILE
        tflite_path.write_bytes(convert_to_tflite(saved_model_dir))
        if use_mediapipe:  # before the parity check, so the file checked is the file shipped
            mediapipe_metadata.add_embedder_metadata(tflite_path)
        tflite_diff = _tflite_parity(tflite_path, images, reference)

        tflite_card = export_variants(
            staging, saved_model_dir, variants, reference_fn=lambda x: keras_features(encoder, x),
            images=images, representative_images=representative_images, int8_io=int8_io,
            eval_data=eval_data, allow_accuracy_drop=allow_accuracy_drop, mediapipe=use_mediapipe,
        )

        onnx_card = _export_onnx(staging, saved_model_dir, images, reference) if onnx else None

        encoder.save(staging / KERAS_FILE)
        keras_diff = _keras_reload_parity(staging / KERAS_FILE, images, reference)

        if head_info:
            (staging / LABELS_FILE).write_text("".join(name + "\n" for name in head_info["class_names"]),
                                               encoding="utf-8")
            head.save(staging / HEAD_FILE)
            probabilities = keras_probabilities(encoder, head, images)
            tflite_card["classifier"] = export_classifier(staging, saved_model_dir, probabilities, images,
                                                          head_info["class_names"], mediapipe=use_mediapipe)
        if use_mediapipe:
            tflite_card["mediapipe"] = mediapipe_metadata.card_entry(
                [p.name for p in staging.glob("encoder*.tflite")
                 if mediapipe_metadata.has_metadata(p.read_bytes())],
                tflite_card["classifier"]["file"] if head_info else None)

        parity = {
            "batch_sizes": list(PARITY_BATCH_SIZES),
            "saved_model_max_abs_diff": {str(n): d for n, d in saved_model_diffs.items()},
            "embed_images_max_abs_diff": {str(n): d for n, d in embed_diffs.items()},
            "tflite_max_abs_diff": tflite_diff,
            "keras_reload_max_abs_diff": keras_diff,
            "images": "sample_images" if sample_images is not None else "uniform random, seed 0",
        }
        if classify_diffs:
            parity.update(classify_diffs)
        full_card = dict(card)
        full_card["tflite"] = tflite_card
        if onnx_card:
            full_card["onnx"] = onnx_card
        if head_info:
            full_card["head"] = head_info
        full_card["serving"] = {"warmup_requests": warmup_written,
                                "bytes_input": "image_bytes (REST: {\"b64\": ...})"}
        full_card = build_card(full_card, image_size=image_size, feature_dim=feature_dim,
                               signatures=signatures, parity=parity, files=file_hashes(staging),
                               sslzoo_version=_sslzoo_version())
        write_card(staging / CARD_NAME, full_card)

    logger.info("exported %s in %.1f s (SavedModel max diff %.2g, TFLite %.2g)", output_dir,
                time.perf_counter() - started, max(saved_model_diffs.values()), tflite_diff)
    return output_dir


def _export_onnx(staging: Path, saved_model_dir: Path, images: np.ndarray, reference: Dict[int, np.ndarray]) -> dict:
    from sslzoo.export.onnx import ONNX_FILE, ONNX_TOLERANCE, OPSET, convert_to_onnx, onnx_features

    path = convert_to_onnx(saved_model_dir, staging / ONNX_FILE)
    batch = max(PARITY_BATCH_SIZES)
    diff = _max_abs_diff(onnx_features(path, images[:batch]), reference[batch])
    _raise_if_above("ONNX", {batch: diff}, ONNX_TOLERANCE, reference)
    return {"file": ONNX_FILE, "opset": OPSET, "max_abs_diff": diff, "runtime": "onnxruntime"}


def _sslzoo_version() -> str:
    import sslzoo

    return sslzoo.__version__


def iter_layers(model: keras.Model) -> Iterable[keras.layers.Layer]:
    """Every layer of a model, descending into nested models."""
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from iter_layers(layer)


def _check_encoder(encoder: keras.Model, image_size: int) -> int:
    """Validates the encoder contract before any work; returns the feature dimension D."""
    if not isinstance(encoder, keras.Model) or len(encoder.inputs or []) != 1:
        raise TypeError("encoder must be a functional keras.Model with one image input")
    lambdas = [layer.name for layer in iter_layers(encoder) if isinstance(layer, keras.layers.Lambda)]
    if lambdas:
        # Lambda layers are Python code: the .keras would need safe_mode=False to load (checklist item 9).
        raise ValueError(f"encoder contains Lambda layers {lambdas}; exported models may use built-in "
                         "or registered layers only")
    expected = (None, image_size, image_size, 3)
    if tuple(encoder.inputs[0].shape) != expected:
        raise ValueError(f"encoder input shape {tuple(encoder.inputs[0].shape)} != {expected}")
    output_shape = tuple(encoder.outputs[0].shape)
    if len(encoder.outputs) != 1 or len(output_shape) != 2 or output_shape[-1] is None:
        raise ValueError(f"encoder must output pooled features [N, D], got {output_shape}")
    return int(output_shape[-1])


def _check_head(head, class_names, feature_dim: int, head_kind: str, card: Mapping) -> Optional[dict]:
    """Validates an optional head and its class names; returns the card's "head" entry (None: no head)."""
    if head is None:
        if class_names is not None:
            raise ValueError("class_names were given without a head; pass head=<features -> probabilities model>")
        return None
    if "head" in card:
        raise ValueError("card sets 'head' itself; the exporter writes it from head/class_names")
    if not isinstance(head, keras.Model) or len(head.inputs or []) != 1 or len(head.outputs or []) != 1:
        raise TypeError("head must be a functional keras.Model with one input (features) and one output "
                        "(probabilities)")
    lambdas = [layer.name for layer in iter_layers(head) if isinstance(layer, keras.layers.Lambda)]
    if lambdas:
        raise ValueError(f"head contains Lambda layers {lambdas}; exported models may use built-in "
                         "or registered layers only")
    input_shape = tuple(head.inputs[0].shape)
    if len(input_shape) != 2 or input_shape[-1] != feature_dim:
        raise ValueError(f"head input shape {input_shape} does not take the encoder's features (None, {feature_dim})")
    output_shape = tuple(head.outputs[0].shape)
    if len(output_shape) != 2 or output_shape[-1] is None:
        raise ValueError(f"head must output probabilities [N, C], got {output_shape}")
    num_classes = int(output_shape[-1])
    if class_names is None:
        raise ValueError(f"a head needs class_names: {num_classes} label names in class-id order "
                         "(e.g. metrics.json data.class_names)")
    if isinstance(class_names, (str, bytes)):
        raise TypeError("class_names must be a list of strings, not one string")
    names: List[str] = list(class_names)
    if not all(isinstance(name, str) for name in names):
        raise TypeError(f"class_names must all be strings, got {[type(n).__name__ for n in names]}")
    if len(names) != num_classes:
        raise ValueError(f"class_names has {len(names)} names but the head outputs {num_classes} classes")
    bad = [name for name in names if not name or "\n" in name or "\r" in name]
    if bad:
        raise ValueError(f"class names must be non-empty single-line strings (labels.txt has one per line): {bad!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"class_names has duplicates: {sorted({n for n in names if names.count(n) > 1})}")
    return {"kind": str(head_kind), "class_names": names, "num_classes": num_classes}


def parity_images(sample_images: Optional[np.ndarray], image_size: int, count: int) -> np.ndarray:
    """`count` float32 images in [0, 1] for the parity checks (given images cycled, or seeded noise)."""
    if sample_images is None:
        return np.random.default_rng(0).random((count, image_size, image_size, 3), dtype=np.float32)
    images = np.asarray(sample_images)
    if images.ndim != 4 or images.shape[1:] != (image_size, image_size, 3) or len(images) == 0:
        raise ValueError(f"sample_images must be [N, {image_size}, {image_size}, 3], got {images.shape}")
    if images.dtype == np.uint8:
        images = images.astype(np.float32) / 255.0  # the data splits are uint8; the encoder wants [0, 1]
    images = images.astype(np.float32)
    return np.take(images, np.arange(count) % len(images), axis=0)


def keras_features(encoder: keras.Model, images: np.ndarray) -> np.ndarray:
    """The reference: the Keras encoder in inference mode."""
    return keras.ops.convert_to_numpy(encoder(images, training=False)).astype(np.float32)


def _max_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    if a.shape != b.shape:
        return float("inf")
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))))


def _raise_if_above(name: str, diffs: Mapping, tolerance: float, reference: Mapping | None = None) -> None:
    """Raises unless every diff is within `tolerance`, taken relative to the reference features' largest
    magnitude when that exceeds 1: float32 keeps ~7 significant digits, so features in the hundreds (a
    Barlow Twins encoder's) differ by one ulp, ~1.5e-5, between two correct graphs."""
    scale = 1.0 if reference is None else max([1.0] + [float(np.max(np.abs(r))) for r in reference.values()])
    limit = tolerance * scale
    worst = max(diffs.values())
    if not worst <= limit:  # `not <=` so that NaN fails too
        relative = f" ({tolerance} x the features' largest magnitude {scale:.4g})" if scale > 1.0 else ""
        raise ExportParityError(f"{name} differs from the Keras encoder: max abs diff by batch size {dict(diffs)} "
                                f"> {limit:.4g}{relative}; nothing was written")


def _saved_model_parity(loaded, images: np.ndarray, reference: Dict[int, np.ndarray]) -> Dict[int, float]:
    diffs = {n: _max_abs_diff(saved_model_features(loaded, images[:n]), ref) for n, ref in reference.items()}
    _raise_if_above("SavedModel serving_default", diffs, SAVED_MODEL_TOLERANCE, reference)
    return diffs


def _embed_images_parity(loaded, encoded: List[bytes], reference: Dict[int, np.ndarray]) -> Dict[int, float]:
    diffs = {n: _max_abs_diff(saved_model_bytes_features(loaded, encoded[:n]), ref) for n, ref in reference.items()}
    _raise_if_above("SavedModel embed_images", diffs, SAVED_MODEL_TOLERANCE, reference)
    return diffs


def keras_probabilities(encoder: keras.Model, head: keras.Model, images: np.ndarray) -> np.ndarray:
    """The classify reference: encoder then head, both in inference mode."""
    features = encoder(images, training=False)
    return keras.ops.convert_to_numpy(head(features, training=False)).astype(np.float32)


def _classify_parity(loaded, head, images, encoded, reference, bytes_reference, class_names) -> dict:
    """classify and classify_bytes vs the Keras head on the Keras features; ids and names consistent."""
    result = {}
    for signature, inputs, features in ((CLASSIFY, images, reference), (CLASSIFY_BYTES, encoded, bytes_reference)):
        diffs = {}
        for n, feats in features.items():
            expected = keras.ops.convert_to_numpy(head(feats, training=False)).astype(np.float32)
            outputs = saved_model_classify(loaded, inputs[:n], signature)
            diffs[n] = _max_abs_diff(outputs[PROBABILITIES_NAME], expected)
            ids = outputs[CLASS_IDS_NAME]
            names = [name.decode("utf-8") for name in outputs[CLASS_NAMES_NAME]]
            if not np.array_equal(ids, np.argmax(outputs[PROBABILITIES_NAME], axis=-1)) or \
                    names != [class_names[i] for i in ids]:
                raise ExportParityError(f"SavedModel {signature}: class_ids/class_names do not match the "
                                        "argmax of its probabilities; nothing was written")
        _raise_if_above(f"SavedModel {signature}", diffs, SAVED_MODEL_TOLERANCE)
        result[f"{signature}_max_abs_diff"] = {str(n): d for n, d in diffs.items()}
    return result


def _tflite_parity(tflite_path: Path, images: np.ndarray, reference: Dict[int, np.ndarray]) -> float:
    io = signature_io(tflite_path).get(SERVING_DEFAULT)
    if io != {"inputs": ["images"], "outputs": ["features"]}:
        raise ExportParityError(f"TFLite serving_default signature is {io}, expected images -> features")
    # One runner for all batch sizes: it resizes its input to each batch (dynamic batch dimension kept).
    runner = interpreter(tflite_path).get_signature_runner(SERVING_DEFAULT)
    diffs = {n: _max_abs_diff(tflite_features(None, images[:n], runner=runner), ref) for n, ref in reference.items()}
    _raise_if_above("TFLite serving_default", diffs, TFLITE_TOLERANCE, reference)
    return max(diffs.values())


def _keras_reload_parity(keras_path: Path, images: np.ndarray, reference: Dict[int, np.ndarray]) -> float:
    # Reloading with safe_mode=True proves the shipped .keras loads the way sslzoo.load will load it.
    reloaded = keras.saving.load_model(keras_path, safe_mode=True)
    diffs = {n: _max_abs_diff(keras_features(reloaded, images[:n]), ref) for n, ref in reference.items()}
    _raise_if_above("encoder.keras (reloaded)", diffs, SAVED_MODEL_TOLERANCE, reference)
    return max(diffs.values())
