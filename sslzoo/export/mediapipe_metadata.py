"""TFLite metadata that makes an export's models run in MediaPipe Tasks (optional: `sslzoo[mediapipe]`).

MediaPipe's `ImageEmbedder` and `ImageClassifier` refuse a float32-input model without metadata: they need
the input's `NormalizationOptions` to turn uint8 pixels into the model's input. Every sslzoo encoder takes
float32 RGB in [0, 1] and normalises inside, so the options are mean 0 / std 255 (`(pixel - 0) / 255`).

| file | MediaPipe task | metadata |
|---|---|---|
| `encoder.tflite`, `encoder_<variant>.tflite` (float32 input) | `ImageEmbedder` | image input (RGB, mean 0 / std 255), feature output |
| `classifier.tflite` | `ImageClassifier` | image input as above, score output with `labels.txt` packed in |

`classifier.tflite` is the SavedModel's `classify` signature converted with its `probabilities` output
alone (`sslzoo.export.variants.probabilities_only_tflite`): MediaPipe's classifier reads float32 / uint8
score tensors only, not the SavedModel's `class_ids` (int64) and `class_names` (string) outputs, which TF
Serving keeps. The class names travel in the file (packed labels.txt) and beside it. An `int8_io` variant
(int8 input *and* int8 output) gets no metadata: MediaPipe's embedder reads float32 or uint8 embeddings, not
int8. Variants with float32 input and output
(float16, dynamic, int8 without `int8_io`) get the same metadata as `encoder.tflite`.

The metadata writers are mediapipe's own (`mediapipe.tasks.python.metadata.metadata_writers`). Writing
metadata re-serialises the flatbuffer with the metadata buffer added; `same_graph` checks that the
operators, tensors, signatures and weight buffers are unchanged.
"""

from __future__ import annotations

import logging
import sys
import types
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np

logger = logging.getLogger(__name__)

NORM_MEAN = [0.0]
NORM_STD = [255.0]  # uint8 pixel / 255 -> the [0, 1] RGB the encoders take
LABELS_NAME = "labels.txt"
SKIPPED_MESSAGE = 'MediaPipe metadata skipped: mediapipe is not installed (pip install "sslzoo[mediapipe]")'
_PYWRAP = "mediapipe.tasks.cc.metadata.python._pywrap_metadata_version"


def available() -> bool:
    from sslzoo.extras import available as extra_available

    return extra_available("mediapipe")


def _writers():
    """mediapipe's metadata_writer module.

    The mediapipe 1.x wheels ship the metadata writers but not the pybind module `metadata.py` imports for
    one value, the minimum metadata parser version. When it is missing a stand-in is registered that
    returns "1.0.0", which is right for what this module writes (image input normalisation and colour
    space, feature output, a TENSOR_AXIS_LABELS file: all in metadata schema 1.0.0); it refuses metadata
    that uses later fields (process units, tensor groups, custom metadata, score thresholding)."""
    try:
        __import__(_PYWRAP)
    except ModuleNotFoundError:
        stub = types.ModuleType(_PYWRAP)
        stub.GetMinimumMetadataParserVersion = _minimum_parser_version
        parts = _PYWRAP.split(".")
        for depth in range(3, len(parts)):
            sys.modules.setdefault(".".join(parts[:depth]), types.ModuleType(".".join(parts[:depth])))
        sys.modules[_PYWRAP] = stub
    from mediapipe.tasks.python.metadata.metadata_writers import metadata_writer

    return metadata_writer


def _minimum_parser_version(metadata_buffer: bytes) -> str:
    from mediapipe.tasks.metadata import metadata_schema_py_generated as fb

    model = fb.ModelMetadataT.InitFromObj(fb.ModelMetadata.GetRootAsModelMetadata(bytearray(metadata_buffer), 0))
    for subgraph in model.subgraphMetadata or []:
        later = [name for name in ("inputProcessUnits", "inputTensorGroups", "outputTensorGroups", "customMetadata")
                 if getattr(subgraph, name, None)]
        later += ["scoreThresholding" for tensor in (subgraph.outputTensorMetadata or [])
                  for unit in (tensor.processUnits or []) if unit.optionsType == fb.ProcessUnitOptions.ScoreThresholdingOptions]
        if later:
            raise ValueError(f"metadata uses fields newer than schema 1.0.0 ({', '.join(sorted(set(later)))}); "
                             "this mediapipe build cannot compute their parser version")
    return "1.0.0"


def _tensor_types(model: bytes):
    from mediapipe.tasks.python.metadata.metadata_writers import writer_utils

    return writer_utils.get_input_tensor_types(model), writer_utils.get_output_tensor_types(model)


def embedder_model(model: bytes, *, name: str = "sslzoo encoder",
                   description: str = "Self-supervised image encoder: pooled embedding of an RGB image.") -> Optional[bytes]:
    """`model` with ImageEmbedder metadata, or None for a model MediaPipe cannot run (int8 input/output)."""
    from mediapipe.tasks.metadata import schema_py_generated as schema

    inputs, outputs = _tensor_types(model)
    if len(inputs) != 1 or len(outputs) != 1:
        raise ValueError(f"an embedder has one image input and one feature output, got {len(inputs)} / {len(outputs)}")
    if inputs[0] != schema.TensorType.FLOAT32 or outputs[0] != schema.TensorType.FLOAT32:
        return None
    writer = _writers().MetadataWriter.create(bytearray(model))
    writer.add_general_info(name, description)
    writer.add_image_input(NORM_MEAN, NORM_STD)
    writer.add_feature_output(name="features", description="Pooled embedding (not L2-normalised).")
    blob = bytes(writer.populate()[0])
    del writer  # now, not at interpreter exit (where its __del__ fails on the torn-down os module)
    return _checked(model, blob)


def classifier_model(model: bytes, class_names: Sequence[str], *, name: str = "sslzoo classifier",
                     description: str = "Encoder + linear head: class probabilities of an RGB image.") -> bytes:
    """A probabilities-only classifier with ImageClassifier metadata and the labels packed in."""
    metadata_writer = _writers()
    inputs, outputs = _tensor_types(model)
    if len(inputs) != 1 or len(outputs) != 1:
        raise ValueError(f"MediaPipe's ImageClassifier needs one image input and one score output, got "
                         f"{len(inputs)} inputs / {len(outputs)} outputs")
    writer = metadata_writer.MetadataWriter.create(bytearray(model))
    writer.add_general_info(name, description)
    writer.add_image_input(NORM_MEAN, NORM_STD)
    writer.add_classification_output(metadata_writer.Labels().add(list(class_names), exported_filename=LABELS_NAME),
                                     name="probabilities", description="Softmax probability of each class.")
    blob = bytes(writer.populate()[0])
    del writer  # now, not at interpreter exit (where its __del__ fails on the torn-down os module)
    return _checked(model, blob)


def _checked(before: bytes, after) -> bytes:
    after = bytes(after)
    if not same_graph(before, after):
        raise RuntimeError("writing MediaPipe metadata changed the model graph; nothing was written")
    return after


def _graph(model: bytes) -> dict:
    from mediapipe.tasks.metadata import schema_py_generated as schema

    parsed = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(bytearray(model), 0))

    def plain(value):
        if isinstance(value, np.ndarray):
            return value.tolist()
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if hasattr(value, "__dict__"):
            return {k: plain(v) for k, v in sorted(vars(value).items())}
        return value.decode() if isinstance(value, bytes) else value

    used = {t.buffer for sub in parsed.subgraphs for t in sub.tensors}
    return {"version": parsed.version, "operator_codes": plain(parsed.operatorCodes),
            "subgraphs": plain(parsed.subgraphs), "signatures": plain(parsed.signatureDefs),
            "buffers": {i: plain(parsed.buffers[i].data) for i in sorted(used)}}


def same_graph(a: bytes, b: bytes) -> bool:
    """True when two TFLite flatbuffers have the same operators, tensors, signatures and weights (their
    metadata entries and metadata buffers may differ)."""
    return _graph(a) == _graph(b)


def has_metadata(model: bytes) -> bool:
    """True when the flatbuffer carries MediaPipe / TFLite Support metadata ("TFLITE_METADATA")."""
    from mediapipe.tasks.metadata import schema_py_generated as schema

    parsed = schema.Model.GetRootAsModel(bytearray(model), 0)
    return any(parsed.Metadata(i).Name() == b"TFLITE_METADATA" for i in range(parsed.MetadataLength()))


def add_embedder_metadata(path: Path) -> bool:
    """Rewrites `path` with ImageEmbedder metadata; False (file untouched) for an int8-io model."""
    blob = embedder_model(Path(path).read_bytes())
    if blob is None:
        logger.info("%s: no MediaPipe metadata (int8 input/output; MediaPipe's embedder reads float32)", Path(path).name)
        return False
    Path(path).write_bytes(blob)
    return True


def card_entry(embedder_files: List[str], classifier_file: Optional[str]) -> dict:
    """The card's `tflite.mediapipe`: which files carry which task's metadata (the classifier's parity is
    in `tflite.classifier`)."""
    import importlib.metadata

    entry = {"mediapipe_version": importlib.metadata.version("mediapipe"),
             "image_embedder": sorted(embedder_files),
             "normalization": {"mean": NORM_MEAN, "std": NORM_STD, "color_space": "RGB"}}
    if classifier_file is not None:
        entry["image_classifier"] = classifier_file
    return entry
