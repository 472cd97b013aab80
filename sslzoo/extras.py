"""Optional pieces and the extra that installs each: a missing one is an error naming the pip command.

`import sslzoo`, training, evaluation, the TFLite export and `sslzoo.load` need none of them:

| extra | packages | what needs it |
|---|---|---|
| `sslzoo[onnx]` | tf2onnx, onnxruntime | `export --format onnx` (conversion and its parity check) |
| `sslzoo[serving]` | tensorflow-serving-api | gRPC request helpers, TF Serving warmup requests in the SavedModel |
| `sslzoo[tune]` | keras-tuner | `sslzoo tune` / `tune.py`, `sslzoo select` |
| `sslzoo[mediapipe]` | mediapipe | MediaPipe Tasks metadata in the exported `.tflite` files (skipped, with one log line, without it) |
"""

from __future__ import annotations

import importlib.util
import sys
from typing import Dict, List, Tuple

from sslzoo.errors import SslzooError

# extra -> (import name, pip package) of each piece it installs.
EXTRAS: Dict[str, Tuple[Tuple[str, str], ...]] = {
    "onnx": (("tf2onnx", "tf2onnx"), ("onnxruntime", "onnxruntime")),
    "serving": (("tensorflow_serving.apis", "tensorflow-serving-api"),),
    "tune": (("keras_tuner", "keras-tuner"),),
    "mediapipe": (("mediapipe", "mediapipe"),),
}


class MissingExtraError(SslzooError, ImportError):
    """An optional dependency is not installed; the message names the extra that installs it."""


def install_command(extra: str) -> str:
    return f'pip install "sslzoo[{extra}]"'


def importable(module: str) -> bool:
    """Whether `module` can be imported, without importing it (its parent packages may be)."""
    if module in sys.modules:
        return sys.modules[module] is not None  # None: import blocked (how tests simulate a missing package)
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package is missing, or a module without a spec
        return False


def missing(extra: str) -> List[str]:
    """The pip packages of `extra` that cannot be imported."""
    return [package for module, package in EXTRAS[extra] if not importable(module)]


def available(extra: str) -> bool:
    return not missing(extra)


def require(extra: str, purpose: str) -> None:
    """Raises `MissingExtraError` for `purpose` (e.g. "--format onnx") unless every piece of `extra` is
    importable."""
    absent = missing(extra)
    if absent:
        raise MissingExtraError(f"{purpose} needs {' and '.join(absent)}, which {'is' if len(absent) == 1 else 'are'} "
                                f"not installed: {install_command(extra)}")
