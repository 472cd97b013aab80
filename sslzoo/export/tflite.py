"""float32 TFLite conversion from the exported SavedModel, and running it with LiteRT.

Batch handling: the converter keeps the SavedModel's dynamic batch (`shape_signature` [-1, S, S, 3]).
The LiteRT signature runner resizes its input tensors and reallocates when called with a batch of a
different size, so one interpreter runs batches of 1, 7 and 32 directly (checked in tests/test_export.py).
Quantized variants (int8) belong here too, added by the deployment issue.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf

from sslzoo.export.saved_model import FEATURES_NAME, INPUT_NAME, SERVING_DEFAULT


def convert_to_tflite(saved_model_dir: str | Path, signature: str = SERVING_DEFAULT) -> bytes:
    """Converts one SavedModel signature to a float32 TFLite flatbuffer that keeps the signature."""
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model_dir), signature_keys=[signature])
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
