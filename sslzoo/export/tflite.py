"""float32 TFLite conversion from the exported SavedModel, and running it with LiteRT.

Batch handling: the converter keeps the SavedModel's dynamic batch (`shape_signature` [-1, S, S, 3]).
The LiteRT signature runner resizes its input tensors and reallocates when called with a batch of a
different size, so one interpreter runs batches of 1, 7 and 32 directly (checked in tests/test_export.py).
Quantized variants (`convert_variant`):

| variant   | converter settings                                                          | weights | activations |
|-----------|-----------------------------------------------------------------------------|---------|-------------|
| float32   | builtin ops                                                                 | float32 | float32     |
| float16   | `optimizations=[DEFAULT]`, `supported_types=[tf.float16]`                    | float16 | float32 (dequantized at load) |
| dynamic   | `optimizations=[DEFAULT]`, no representative data (dynamic-range)           | int8    | float32, int8 kernels quantize on the fly |
| int8      | `optimizations=[DEFAULT]`, representative dataset, `TFLITE_BUILTINS_INT8`   | int8    | int8 (full integer) |

Full-int8 and the dynamic batch: calibration feeds the representative images one at a time (batch 1) and
the converter keeps `shape_signature` [-1, S, S, 3]; the int8 model runs any batch size through the
signature runner exactly like the float one (measured on TF 2.21 / ai-edge-litert; no fixed batch shape
is needed). With `int8_io=True` the model's input and output tensors are int8 too (not uint8): the input's
quantization comes from the calibration range of `[0, 1]` images, i.e. scale ~ 1/255 and zero point -128,
so `q = round(x / scale) + zero_point` clipped to [-128, 127]; the output is dequantized as
`(q - zero_point) * scale`. `sslzoo.export.litert_model.TFLiteModel` does both from the tensors' own
parameters, so callers always pass float32 images in [0, 1] and get float32 features back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import tensorflow as tf

from sslzoo.export.saved_model import (
    FEATURES_NAME,
    INPUT_NAME,
    SERVING_DEFAULT,
    check_saved_model,
    load_saved_model,
)


def _converter(saved_model_dir: str | Path, signature: str):
    # from_saved_model runs tf.saved_model.load, so the graph is checked first like every load in sslzoo.
    check_saved_model(saved_model_dir)
    return tf.lite.TFLiteConverter.from_saved_model(str(saved_model_dir), signature_keys=[signature])


def convert_to_tflite(saved_model_dir: str | Path, signature: str = SERVING_DEFAULT) -> bytes:
    """Converts one SavedModel signature to a float32 TFLite flatbuffer that keeps the signature."""
    converter = _converter(saved_model_dir, signature)
    # Builtin ops only: a model that needs Flex (TF) ops would not run on a plain LiteRT runtime, and
    # failing at export is better than failing on the device.
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    return converter.convert()


def interpreter(model: str | Path | bytes):
    """A LiteRT interpreter for a `.tflite` path or flatbuffer bytes (not the deprecated tf.lite one)."""
    from ai_edge_litert.interpreter import Interpreter

    if isinstance(model, (bytes, bytearray)):
        return Interpreter(model_content=bytes(model))
    return Interpreter(model_path=str(model))


def signature_io(model: str | Path | bytes) -> dict:
    """`{signature: {"inputs": [...], "outputs": [...]}}` as LiteRT sees the model."""
    return interpreter(model).get_signature_list()


def tflite_features(model: str | Path | bytes, images: np.ndarray, signature: str = SERVING_DEFAULT,
                    runner=None) -> np.ndarray:
    """Runs the signature on a whole batch; the runner resizes to the batch size itself."""
    if runner is None:
        runner = interpreter(model).get_signature_runner(signature)
    outputs = runner(**{INPUT_NAME: np.ascontiguousarray(images, dtype=np.float32)})
    return outputs[FEATURES_NAME]


VARIANTS = ("float32", "float16", "dynamic", "int8")
# Representative set for full-integer calibration: enough images to see the activation ranges, few enough
# to keep conversion quick (each image is one calibration step on the float model).
MIN_REPRESENTATIVE = 200
MAX_REPRESENTATIVE = 500


def check_representative_images(images, min_count: int = MIN_REPRESENTATIVE,
                                max_count: int = MAX_REPRESENTATIVE) -> np.ndarray:
    """Validates a calibration set and returns it as float32 `[N, S, S, 3]` in [0, 1].

    uint8 images are scaled by 1/255; float images must already lie in [0, 1] (the encoders' input spec).
    `min_count` exists so that tests can calibrate on a handful of images; real exports keep the default.
    """
    if images is None:
        raise ValueError("the int8 variant needs representative_images: float32 [N, S, S, 3] in [0, 1]")
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"representative_images must be [N, S, S, 3], got shape {images.shape}")
    if images.dtype == np.uint8:
        images = images.astype(np.float32) / 255.0
    elif not np.issubdtype(images.dtype, np.floating):
        raise ValueError(f"representative_images must be float32 in [0, 1] or uint8, got {images.dtype}")
    images = images.astype(np.float32)
    if not (min_count <= len(images) <= max_count):
        raise ValueError(f"representative_images: {len(images)} images, expected {min_count}..{max_count}")
    if not np.all(np.isfinite(images)) or images.min() < 0.0 or images.max() > 1.0:
        raise ValueError("representative_images must be finite and in [0, 1] (RGB scaled by 1/255)")
    return images


def representative_dataset(images: np.ndarray, input_name: str = INPUT_NAME):
    """The converter's `representative_dataset`: a callable yielding `{input_name: float32 [1, S, S, 3]}`."""

    def generate() -> Iterator[dict]:
        for index in range(len(images)):
            yield {input_name: images[index : index + 1]}

    return generate


def convert_variant(saved_model_dir: str | Path, variant: str, representative_images: Optional[np.ndarray] = None,
                    signature: str = SERVING_DEFAULT, int8_io: bool = False, *,
                    min_representative: int = MIN_REPRESENTATIVE) -> bytes:
    """Converts one SavedModel signature to a TFLite flatbuffer of the given variant (builtin ops only).

    Args:
        saved_model_dir: the SavedModel folder (e.g. `exported/<name>/1`).
        variant: one of `VARIANTS`: "float32", "float16", "dynamic" (dynamic-range int8 weights),
            "int8" (full integer, calibrated on `representative_images`).
        representative_images: int8 only: 200-500 float32 images `[N, S, S, 3]` in [0, 1] (uint8 accepted
            and scaled by 1/255) from the training distribution; ignored by the other variants, so one
            call site can loop over `VARIANTS` with the same arguments.
        signature: the signature to convert; it keeps its name in the flatbuffer.
        int8_io: int8 only: int8 input/output tensors instead of float32 ones (see the module docstring).
        min_representative: the lower bound on the calibration set size (lower it only in tests).

    Returns:
        the `.tflite` flatbuffer bytes.
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown TFLite variant {variant!r}; allowed: {', '.join(VARIANTS)}")
    if int8_io and variant != "int8":
        raise ValueError(f"int8_io=True needs variant='int8' (got {variant!r}): only full-integer models have "
                         "quantized input/output tensors")
    if variant == "float32":
        return convert_to_tflite(saved_model_dir, signature)
    if variant == "int8":
        # Validate before the converter's slow load of the SavedModel.
        calibration = check_representative_images(representative_images, min_representative)

    converter = _converter(saved_model_dir, signature)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if variant == "float16":
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        converter.target_spec.supported_types = [tf.float16]
    elif variant == "dynamic":
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    else:  # int8
        converter.representative_dataset = representative_dataset(calibration, _input_name(saved_model_dir, signature))
        # INT8 builtins only: an op without an int8 kernel fails the conversion instead of silently
        # staying float (which would make "int8" a mixed model with float fallbacks).
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if int8_io:
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
    return converter.convert()


def _input_name(saved_model_dir: str | Path, signature: str) -> str:
    """The signature's single input name (the representative dataset is keyed by it)."""
    loaded = load_saved_model(saved_model_dir)
    if signature not in loaded.signatures:
        raise ValueError(f"SavedModel at {saved_model_dir} has no signature {signature!r}; "
                         f"it has {sorted(loaded.signatures)}")
    _, inputs = loaded.signatures[signature].structured_input_signature
    if len(inputs) != 1:
        raise ValueError(f"signature {signature!r} has inputs {sorted(inputs)}; the int8 calibration "
                         "feeds exactly one image input")
    return next(iter(inputs))
