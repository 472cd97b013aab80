"""ONNX export of the `serving_default` signature, with parity checked in onnxruntime.

tf2onnx and onnxruntime are the extra `sslzoo[onnx]`: without them `--format onnx` is refused before any
work with `pip install "sslzoo[onnx]"`.

Keras 3.15's own `model.export(format="onnx")` (tf2onnx underneath) produced a graph here whose
Normalization constants became required inputs (onnxruntime: "Required inputs
['.../normalization_1/Sub/y:0', ...] are missing"), so the export converts the exported SavedModel's
serving function instead, which has the weights frozen in: parity 1.2e-7 on the shipped RotNet encoder.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from sslzoo import extras
from sslzoo.export.saved_model import FEATURES_NAME, INPUT_NAME, SERVING_DEFAULT, check_saved_model

ONNX_FILE = "encoder.onnx"
ONNX_TOLERANCE = 1e-4
OPSET = 17


def convert_to_onnx(saved_model_dir: str | Path, path: str | Path) -> Path:
    """Writes the SavedModel's serving_default as ONNX (input "images" [N, S, S, 3], output "features").

    tf2onnx's command line freezes the SavedModel's variables into constants; its Python `from_function`
    left them as graph inputs here (the same failure as Keras' exporter), so the CLI is the public path.
    """
    extras.require("onnx", "ONNX export (--format onnx)")
    check_saved_model(saved_model_dir)  # tf2onnx loads the SavedModel: vet its graph like every load
    command = [sys.executable, "-m", "tf2onnx.convert", "--saved-model", str(saved_model_dir),
               "--signature_def", SERVING_DEFAULT, "--opset", str(OPSET), "--output", str(path)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0 or not Path(path).exists():
        raise RuntimeError(f"ONNX conversion failed (tf2onnx exit {result.returncode}): {result.stderr[-2000:]}")
    return Path(path)


def onnx_features(path: str | Path, images: np.ndarray) -> np.ndarray:
    """Runs the ONNX model in onnxruntime (CPU)."""
    extras.require("onnx", "running an ONNX model")
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run([FEATURES_NAME], {INPUT_NAME: np.ascontiguousarray(images, np.float32)})[0]
