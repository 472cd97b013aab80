"""Client-side helpers for TF Serving: REST JSON bodies, gRPC `PredictRequest`s, and the warmup file.

```python
from sslzoo.export import serving_requests as sr
body = sr.rest_predict_body(images)                  # POST .../v1/models/<name>:predict (serving_default)
body = sr.rest_b64_body([open("cat.jpg", "rb").read()])   # embed_images, {"b64": ...} per image
request = sr.grpc_predict_request("<name>", {"images": images})   # needs tensorflow-serving-api
```
REST conventions (TF Serving's "row" format): `{"signature_name": ..., "instances": [...]}` with one entry
per example; each entry is an object keyed by input name. String inputs whose values are sent as
`{"b64": "<standard base64>"}` are base64-decoded by the server; sslzoo's bytes input is called
`image_bytes` (the `_bytes` suffix is the convention marking such inputs). See docs/serving.md.

tensorflow-serving-api (`tensorflow_serving.apis`, the extra `sslzoo[serving]`) is imported lazily: the REST
helpers work without it; the gRPC helpers need it (`MissingExtraError` naming `pip install "sslzoo[serving]"`
otherwise) and the warmup writer skips the file with a warning (`serving_api_available()` tells).
"""

from __future__ import annotations

import base64
import logging
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from sslzoo import extras
from sslzoo.export.saved_model import (
    BYTES_INPUT_NAME,
    CLASSIFY,
    CLASSIFY_BYTES,
    EMBED_IMAGES,
    INPUT_NAME,
    SERVING_DEFAULT,
)

logger = logging.getLogger(__name__)

WARMUP_DIR = "assets.extra"
WARMUP_FILE = "tf_serving_warmup_requests"


# ----------------------------------------------------------------------------------------------- REST

def rest_predict_body(images, signature: str = SERVING_DEFAULT, input_name: str = INPUT_NAME) -> dict:
    """REST body for a float-image signature (`serving_default`, `classify`).

    Args:
        images: float `[N, S, S, 3]` in [0, 1] (uint8 0..255 is converted).
    Returns:
        `{"signature_name": signature, "instances": [{"images": [[[r, g, b], ...], ...]}, ...]}`.
    """
    array = np.asarray(images)
    if array.dtype == np.uint8:
        array = array.astype(np.float32) / 255.0
    array = array.astype(np.float32)
    if array.ndim != 4 or array.shape[-1] != 3:
        raise ValueError(f"images must be [N, S, S, 3], got shape {array.shape}")
    # float32 -> Python float is exact, and json writes the shortest repr that round-trips it.
    return {"signature_name": signature, "instances": [{input_name: image.tolist()} for image in array]}


def rest_classify_body(images) -> dict:
    """REST body for `classify` (float images -> probabilities, class_ids, class_names)."""
    return rest_predict_body(images, signature=CLASSIFY)


def rest_b64_body(images: Sequence[bytes], signature: str = EMBED_IMAGES,
                  input_name: str = BYTES_INPUT_NAME) -> dict:
    """REST body for a bytes signature (`embed_images`, `classify_bytes`): each image as `{"b64": ...}`.

    Args:
        images: encoded image files (JPEG, PNG, BMP, GIF), any size, as `bytes`.
    """
    if isinstance(images, (bytes, bytearray)):
        raise TypeError("images must be a list of encoded images, not one bytes object")
    instances = []
    for contents in images:
        if not isinstance(contents, (bytes, bytearray)):
            raise TypeError(f"each image must be bytes (an encoded file), got {type(contents).__name__}")
        instances.append({input_name: {"b64": base64.b64encode(bytes(contents)).decode("ascii")}})
    return {"signature_name": signature, "instances": instances}


def parse_rest_body(body: Mapping) -> Tuple[str, Dict[str, object]]:
    """What TF Serving makes of a row-format REST body: `(signature_name, {input: batch})`.

    Float inputs become float32 arrays, `{"b64": ...}` values become a list of `bytes`. For tests and
    for checking a hand-written request against an export without running a server.
    """
    signature = body.get("signature_name", SERVING_DEFAULT)
    instances = body["instances"]
    if not instances:
        raise ValueError("instances is empty")
    names = sorted(instances[0]) if isinstance(instances[0], dict) else [None]
    batch: Dict[str, object] = {}
    for name in names:
        values = [instance[name] if name is not None else instance for instance in instances]
        if isinstance(values[0], dict) and "b64" in values[0]:
            batch[name] = [base64.b64decode(value["b64"]) for value in values]
        else:
            batch[name] = np.asarray(values, dtype=np.float32)
    return signature, batch


# ----------------------------------------------------------------------------------------------- gRPC

def serving_api_available() -> bool:
    """Whether tensorflow-serving-api (the `tensorflow_serving.apis` protos, `sslzoo[serving]`) is importable."""
    return extras.available("serving")


def _tensor_proto(value):
    import tensorflow as tf

    if isinstance(value, (list, tuple)) and value and isinstance(value[0], (bytes, bytearray)):
        return tf.make_tensor_proto([bytes(v) for v in value], dtype=tf.string)
    array = np.asarray(value)
    if array.dtype == np.float64:
        array = array.astype(np.float32)  # every sslzoo float input is float32
    return tf.make_tensor_proto(array)


def grpc_predict_request(model_name: str, inputs: Mapping[str, object], signature_name: str = SERVING_DEFAULT,
                         version: Optional[int] = None):
    """A `tensorflow_serving.apis.predict_pb2.PredictRequest` for `PredictionServiceStub.Predict`.

    Args:
        model_name: the served model's name (`MODEL_NAME` of the server).
        inputs: input name -> batch: a float32 array for `images`, a list of encoded-image `bytes` for
            `image_bytes`.
        signature_name: e.g. "serving_default", "embed_images", "classify", "classify_bytes".
        version: pin a model version (default: the server's latest).
    """
    extras.require("serving", "a gRPC PredictRequest")
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature_name
    if version is not None:
        request.model_spec.version.value = int(version)
    for name, value in inputs.items():
        request.inputs[name].CopyFrom(_tensor_proto(value))
    return request


def grpc_images_request(model_name: str, images, signature_name: str = SERVING_DEFAULT, **kwargs):
    """`grpc_predict_request` for float images `[N, S, S, 3]` in [0, 1]."""
    return grpc_predict_request(model_name, {INPUT_NAME: np.asarray(images, np.float32)}, signature_name, **kwargs)


def grpc_bytes_request(model_name: str, images: Sequence[bytes], signature_name: str = EMBED_IMAGES, **kwargs):
    """`grpc_predict_request` for encoded images (`embed_images`, `classify_bytes`)."""
    return grpc_predict_request(model_name, {BYTES_INPUT_NAME: list(images)}, signature_name, **kwargs)


def request_inputs(request) -> Dict[str, object]:
    """A PredictRequest's inputs back as NumPy arrays (string tensors as lists of bytes)."""
    import tensorflow as tf

    decoded = {}
    for name, proto in request.inputs.items():
        array = tf.make_ndarray(proto)
        decoded[name] = list(array) if array.dtype == object else array
    return decoded


# --------------------------------------------------------------------------------------------- warmup

def encode_png(images: np.ndarray) -> List[bytes]:
    """uint8 `[N, H, W, 3]` -> a list of PNG files (lossless, so decoding returns the same pixels)."""
    import tensorflow as tf

    return [tf.io.encode_png(tf.constant(image, tf.uint8)).numpy() for image in np.asarray(images, np.uint8)]


def warmup_requests(images, encoded: Sequence[bytes], classify: bool = False) -> list:
    """`PredictRequest`s for TF Serving's warmup: one per signature (`classify*` only with a head)."""
    requests = [
        grpc_images_request("", images, SERVING_DEFAULT),
        grpc_bytes_request("", encoded, EMBED_IMAGES),
    ]
    if classify:
        requests.append(grpc_images_request("", images, CLASSIFY))
        requests.append(grpc_bytes_request("", encoded, CLASSIFY_BYTES))
    return requests


def write_warmup_requests(saved_model_dir: str | Path, images, encoded: Sequence[bytes],
                          classify: bool = False) -> bool:
    """Writes `<saved_model_dir>/assets.extra/tf_serving_warmup_requests` (TFRecord of PredictionLog).

    TF Serving replays these requests when it loads the version, so the first real request does not pay
    for graph initialisation. Returns False (and writes nothing) if tensorflow-serving-api is missing.
    """
    if not serving_api_available():
        logger.warning("tensorflow-serving-api is not installed: no TF Serving warmup file written (%s adds it)",
                       extras.install_command("serving"))
        return False
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    path = Path(saved_model_dir) / WARMUP_DIR / WARMUP_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for request in warmup_requests(images, encoded, classify=classify):
            log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())
    return True


def read_warmup_requests(saved_model_dir: str | Path) -> list:
    """The PredictionLog records of an export's warmup file (raises if it is missing or unparsable)."""
    extras.require("serving", "reading TF Serving warmup requests")
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    path = Path(saved_model_dir) / WARMUP_DIR / WARMUP_FILE
    logs = []
    for record in tf.data.TFRecordDataset(str(path)).as_numpy_iterator():
        log = prediction_log_pb2.PredictionLog()
        log.ParseFromString(record)
        logs.append(log)
    return logs
