"""`TFLiteModel`: a `.tflite` encoder run with the LiteRT interpreter, float32 in, float32 features out.

```python
model = TFLiteModel("exported/rotnet_convnet_small_cifar10/encoder_int8.tflite", num_threads=2)
features = model.predict(images)   # images float32 [N, S, S, 3] in [0, 1] -> float32 [N, D]
```
This is what `sslzoo.load(name, format="tflite", variant=...)` returns. It uses
`ai_edge_litert.interpreter.Interpreter` (`tf.lite.Interpreter` is deprecated) and the signature runner, so
the model's own input/output names are used and any batch size runs (the runner resizes its input).

Models with int8 (or uint8) input/output tensors (`convert_variant(..., "int8", int8_io=True)`) are
quantized on the way in with the input tensor's scale and zero point, `q = clip(round(x / s) + z)`, and
dequantized on the way out, `(q - z) * s`: callers never see integers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from sslzoo.export.saved_model import FEATURES_NAME, INPUT_NAME, SERVING_DEFAULT

_INTEGER_TYPES = (np.int8, np.uint8)


def quantize(values: np.ndarray, scale: float, zero_point: int, dtype) -> np.ndarray:
    """float -> int8/uint8 with the tensor's affine parameters, rounded to nearest and clipped to the range."""
    info = np.iinfo(dtype)
    quantized = np.round(np.asarray(values, np.float32) / np.float32(scale)) + zero_point
    return np.clip(quantized, info.min, info.max).astype(dtype)


def dequantize(values: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """int8/uint8 -> float32: `(q - zero_point) * scale`."""
    return ((np.asarray(values).astype(np.float32) - np.float32(zero_point)) * np.float32(scale)).astype(np.float32)


class TFLiteModel:
    """A `.tflite` encoder (path or flatbuffer bytes) behind a Keras-like `predict`.

    Args:
        model: path to a `.tflite` file, or its bytes.
        num_threads: interpreter threads (None: LiteRT's default).
        signature: the signature runner to call; "serving_default" for sslzoo exports.
    """

    def __init__(self, model: str | Path | bytes, num_threads: Optional[int] = None,
                 signature: str = SERVING_DEFAULT):
        from ai_edge_litert.interpreter import Interpreter

        if isinstance(model, (bytes, bytearray)):
            self.path = None
            self.interpreter = Interpreter(model_content=bytes(model), num_threads=num_threads)
        else:
            self.path = Path(model)
            if not self.path.is_file():
                raise FileNotFoundError(f"no TFLite model at {self.path}")
            self.interpreter = Interpreter(model_path=str(self.path), num_threads=num_threads)
        self.num_threads = num_threads
        available = self.interpreter.get_signature_list()
        if signature not in available:
            raise ValueError(f"TFLite model has no signature {signature!r}; it has {sorted(available)}")
        self.signature = signature
        self.runner = self.interpreter.get_signature_runner(signature)
        inputs = self.runner.get_input_details()
        outputs = self.runner.get_output_details()
        if len(inputs) != 1:
            raise ValueError(f"signature {signature!r} has inputs {sorted(inputs)}; TFLiteModel runs single-input "
                             "image encoders")
        self.input_name = INPUT_NAME if INPUT_NAME in inputs else next(iter(inputs))
        self.output_name = FEATURES_NAME if FEATURES_NAME in outputs else next(iter(outputs))
        self.input_details = inputs[self.input_name]
        self.output_details = outputs[self.output_name]

    @property
    def signatures(self) -> Dict[str, Dict[str, List[str]]]:
        """`{signature: {"inputs": [...], "outputs": [...]}}` as LiteRT reports it."""
        return self.interpreter.get_signature_list()

    @property
    def input_dtype(self):
        return np.dtype(self.input_details["dtype"])

    @property
    def output_dtype(self):
        return np.dtype(self.output_details["dtype"])

    @property
    def quantized_io(self) -> bool:
        """True when the model takes or returns int8/uint8 tensors (`int8_io=True` exports)."""
        return self.input_dtype in _INTEGER_TYPES or self.output_dtype in _INTEGER_TYPES

    @property
    def input_quantization(self):
        """(scale, zero_point) of the input tensor; (0.0, 0) for float inputs."""
        return tuple(self.input_details["quantization"])

    @property
    def output_quantization(self):
        """(scale, zero_point) of the output tensor; (0.0, 0) for float outputs."""
        return tuple(self.output_details["quantization"])

    @property
    def image_size(self) -> int:
        return int(self.input_details["shape_signature"][1])

    def prepare_input(self, images: np.ndarray) -> np.ndarray:
        """float32 images in [0, 1] -> the tensor the model takes (quantized for int8-io models)."""
        images = np.asarray(images)
        if not np.issubdtype(images.dtype, np.floating):
            raise ValueError(f"TFLiteModel.predict takes float32 images in [0, 1], got {images.dtype} "
                             "(divide uint8 images by 255)")
        if images.ndim != 4:
            raise ValueError(f"TFLiteModel.predict takes [N, S, S, 3] images, got shape {images.shape}")
        if self.input_dtype in _INTEGER_TYPES:
            scale, zero_point = self.input_quantization
            return quantize(images, scale, zero_point, self.input_dtype)
        return np.ascontiguousarray(images, dtype=self.input_dtype)

    def run_prepared(self, prepared: np.ndarray) -> np.ndarray:
        """One runner call on an already prepared input; returns the raw output tensor."""
        return self.runner(**{self.input_name: prepared})[self.output_name]

    def predict(self, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """float32 images `[N, S, S, 3]` in [0, 1] -> float32 features `[N, D]`, `batch_size` images per call."""
        prepared = self.prepare_input(images)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        chunks = [self.run_prepared(prepared[start : start + batch_size])
                  for start in range(0, len(prepared), batch_size)]
        if not chunks:
            dim = int(self.output_details["shape_signature"][-1])
            return np.zeros((0, dim), np.float32)
        outputs = np.concatenate(chunks)
        if self.output_dtype in _INTEGER_TYPES:
            scale, zero_point = self.output_quantization
            return dequantize(outputs, scale, zero_point)
        return outputs.astype(np.float32)

    __call__ = predict

    def __repr__(self) -> str:
        source = str(self.path) if self.path else "<bytes>"
        return (f"TFLiteModel({source}, signature={self.signature!r}, input={self.input_dtype.name}, "
                f"output={self.output_dtype.name}, num_threads={self.num_threads})")
