"""`export_encoder`: one call that writes, checks and atomically publishes an export folder.

```
<output_dir>/
  <version>/        SavedModel, TF Serving layout; serving_default: images [N,S,S,3] f32 -> {"features"}
  encoder.tflite    float32 TFLite with the serving_default signature
  encoder.keras     the Keras encoder, for fine-tuning (loads with safe_mode=True)
  model_card.json   the caller's card + input spec, signatures, parity figures, sha256 of every file
```
Order of work inside the temporary folder: SavedModel -> graph check -> SavedModel parity -> TFLite ->
TFLite parity -> .keras -> safe-mode reload parity -> hashes -> card. Any failure (including a parity
miss) discards the temporary folder, so an export that exists has passed every check.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Dict, Iterable, Mapping, Optional

import keras
import numpy as np

from sslzoo.export.atomic import atomic_directory
from sslzoo.export.card import CARD_NAME, build_card, check_card_input, file_hashes, write_card
from sslzoo.export.saved_model import (
    SERVING_DEFAULT,
    check_graph_ops,
    describe_signatures,
    graph_ops,
    load_saved_model,
    save_saved_model,
    saved_model_features,
)
from sslzoo.export.tflite import convert_to_tflite, interpreter, signature_io, tflite_features

logger = logging.getLogger(__name__)

PARITY_BATCH_SIZES = (1, 7, 32)
SAVED_MODEL_TOLERANCE = 1e-5  # DESIGN.md reliability checklist item 6
TFLITE_TOLERANCE = 1e-4
KERAS_FILE = "encoder.keras"
TFLITE_FILE = "encoder.tflite"


class ExportParityError(AssertionError):
    """An exported format computes different features from the Keras encoder; nothing was written."""


def export_encoder(encoder: keras.Model, output_dir: str | Path, *, image_size: int, card: Mapping,
                   sample_images: Optional[np.ndarray] = None, force: bool = False, version: int = 1) -> Path:
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
    Returns:
        `output_dir` as a `Path`.
    """
    started = time.perf_counter()
    output_dir = Path(output_dir)
    check_card_input(card)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ValueError(f"version must be an integer >= 1, got {version!r}")
    feature_dim = _check_encoder(encoder, image_size)
    images = parity_images(sample_images, image_size, max(PARITY_BATCH_SIZES))
    reference = {n: keras_features(encoder, images[:n]) for n in PARITY_BATCH_SIZES}

    with atomic_directory(output_dir, force=force) as staging:
        saved_model_dir = staging / str(version)
        save_saved_model(encoder, saved_model_dir, image_size)
        check_graph_ops(graph_ops(saved_model_dir))
        loaded = load_saved_model(saved_model_dir)
        signatures = describe_signatures(loaded)
        saved_model_diffs = _saved_model_parity(loaded, images, reference)

        tflite_path = staging / TFLITE_FILE
        tflite_path.write_bytes(convert_to_tflite(saved_model_dir))
        tflite_diff = _tflite_parity(tflite_path, images, reference)

        encoder.save(staging / KERAS_FILE)
        keras_diff = _keras_reload_parity(staging / KERAS_FILE, images, reference)

        parity = {
            "batch_sizes": list(PARITY_BATCH_SIZES),
            "saved_model_max_abs_diff": {str(n): d for n, d in saved_model_diffs.items()},
            "tflite_max_abs_diff": tflite_diff,
            "keras_reload_max_abs_diff": keras_diff,
            "images": "sample_images" if sample_images is not None else "uniform random, seed 0",
        }
        full_card = build_card(card, image_size=image_size, feature_dim=feature_dim, signatures=signatures,
                               parity=parity, files=file_hashes(staging), sslzoo_version=_sslzoo_version())
        write_card(staging / CARD_NAME, full_card)

    logger.info("exported %s in %.1f s (SavedModel max diff %.2g, TFLite %.2g)", output_dir,
                time.perf_counter() - started, max(saved_model_diffs.values()), tflite_diff)
    return output_dir


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


def _raise_if_above(name: str, diffs: Mapping, tolerance: float) -> None:
    worst = max(diffs.values())
    if not worst <= tolerance:  # `not <=` so that NaN fails too
        raise ExportParityError(f"{name} differs from the Keras encoder: max abs diff by batch size {dict(diffs)} "
                                f"> {tolerance}; nothing was written")


def _saved_model_parity(loaded, images: np.ndarray, reference: Dict[int, np.ndarray]) -> Dict[int, float]:
    diffs = {n: _max_abs_diff(saved_model_features(loaded, images[:n]), ref) for n, ref in reference.items()}
    _raise_if_above("SavedModel serving_default", diffs, SAVED_MODEL_TOLERANCE)
    return diffs


def _tflite_parity(tflite_path: Path, images: np.ndarray, reference: Dict[int, np.ndarray]) -> float:
    io = signature_io(tflite_path).get(SERVING_DEFAULT)
    if io != {"inputs": ["images"], "outputs": ["features"]}:
        raise ExportParityError(f"TFLite serving_default signature is {io}, expected images -> features")
    # One runner for all batch sizes: it resizes its input to each batch (dynamic batch dimension kept).
    runner = interpreter(tflite_path).get_signature_runner(SERVING_DEFAULT)
    diffs = {n: _max_abs_diff(tflite_features(None, images[:n], runner=runner), ref) for n, ref in reference.items()}
    _raise_if_above("TFLite serving_default", diffs, TFLITE_TOLERANCE)
    return max(diffs.values())


def _keras_reload_parity(keras_path: Path, images: np.ndarray, reference: Dict[int, np.ndarray]) -> float:
    # Reloading with safe_mode=True proves the shipped .keras loads the way sslzoo.load will load it.
    reloaded = keras.saving.load_model(keras_path, safe_mode=True)
    diffs = {n: _max_abs_diff(keras_features(reloaded, images[:n]), ref) for n, ref in reference.items()}
    _raise_if_above("encoder.keras (reloaded)", diffs, SAVED_MODEL_TOLERANCE)
    return max(diffs.values())
