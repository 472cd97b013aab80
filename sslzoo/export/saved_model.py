"""SavedModel export in the TF Serving layout, its signatures, and the graph hygiene check.

Why the module tracks the encoder's *variables* and not the Keras model object: with Keras 3 on
TensorFlow, saving a `tf.Module` that holds the Keras model makes TF write a *copy* of every Keras
variable (`keras.Variable._export_to_saved_model_graph` creates a new `tf.Variable`), while the traced
signature functions capture the underlying `tf.Variable`s, which then are not in the checkpoint.
`tf.saved_model.load` copes, but `tf.lite.TFLiteConverter.from_saved_model` freezes the graph from the
checkpoint and produced NaN/1e27 features (measured on TF 2.21). Tracking `[v.value for v in
encoder.variables]` writes each weight once, under the name the signatures read (TFLite parity 1e-7) and
keeps the variables file at 1x instead of 2x. The Keras model itself ships separately as `encoder.keras`.
An attached classification head (a Keras model features -> probabilities) is tracked the same way.

Signatures (all built by `build_signatures`):

| name | input | outputs |
|---|---|---|
| `serving_default` | `images` float32 `[N, S, S, 3]` in [0, 1] | `features` float32 `[N, D]` |
| `embed_images` | `image_bytes` string `[N]` (encoded JPEG/PNG/BMP/GIF, any size) | `features` |
| `classify` (head only) | `images` | `probabilities` float32 `[N, C]`, `class_ids` int64 `[N]`, `class_names` string `[N]` |
| `classify_bytes` (head only) | `image_bytes` | as `classify` |

The bytes input is named `image_bytes` because TF Serving's REST API decodes `{"b64": "..."}` values for
string inputs, and the `_bytes` suffix is the convention that tells clients to send base64 there.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Set, Tuple

import numpy as np
import tensorflow as tf

from sslzoo.data.decode import decode_image
from sslzoo.errors import DisallowedOpsError, UnsafeModelError  # noqa: F401  (raised here)

logger = logging.getLogger(__name__)

INPUT_NAME = "images"
BYTES_INPUT_NAME = "image_bytes"
FEATURES_NAME = "features"
PROBABILITIES_NAME = "probabilities"
CLASS_IDS_NAME = "class_ids"
CLASS_NAMES_NAME = "class_names"
SERVING_DEFAULT = "serving_default"
EMBED_IMAGES = "embed_images"
CLASSIFY = "classify"
CLASSIFY_BYTES = "classify_bytes"


class _Untracked:
    """Holds an object without TensorFlow's attribute tracking noticing it."""

    def __init__(self, value):
        self.value = value


class ServingModule(tf.Module):
    """The object written as the SavedModel: the encoder's (and head's) weights plus the serving functions.

    Args:
        encoder: functional `keras.Model`, float32 images `[N, S, S, 3]` in [0, 1] -> features `[N, D]`.
        image_size: S.
        head: optional `keras.Model`, features `[N, D]` -> probabilities `[N, C]` (e.g. the run's
            `linear_head.keras`, standardisation inside).
        class_names: C label names, required with `head`; stored in the graph as a constant.
    """

    def __init__(self, encoder, image_size: int, head=None, class_names: Optional[Sequence[str]] = None):
        super().__init__(name="sslzoo_serving")
        self.image_size = int(image_size)
        # An attribute (or list) holding the Keras model would make tf.Module track it (see the module
        # docstring); a plain holder object is invisible to tracking. Its tf.Variables are tracked instead.
        self._untracked = _Untracked(encoder)
        self.encoder_variables = [v.value for v in encoder.variables]
        self._untracked_head = _Untracked(head)
        self._class_names = _Untracked(None)
        if head is not None:
            if class_names is None:
                raise ValueError("a head needs class_names (one label name per output class)")
            self.head_variables = [v.value for v in head.variables]
            self._class_names = _Untracked([str(name) for name in class_names])

    @property
    def encoder(self):
        return self._untracked.value

    @property
    def head(self):
        return self._untracked_head.value

    @property
    def class_names(self) -> Optional[List[str]]:
        return self._class_names.value

    def features(self, images: tf.Tensor) -> tf.Tensor:
        """Inference-mode features, always float32 (a mixed-precision encoder may compute in float16)."""
        return tf.cast(self.encoder(images, training=False), tf.float32)

    def decode(self, image_bytes: tf.Tensor) -> tf.Tensor:
        """Encoded images `[N]` (any format `decode_image` sniffs, any size) -> float32 `[N, S, S, 3]` in [0, 1]."""
        size = self.image_size
        decoded = tf.map_fn(lambda contents: decode_image(contents, size), image_bytes,
                            fn_output_signature=tf.TensorSpec([size, size, 3], tf.uint8))
        return uint8_to_float01(decoded)

    def classify(self, images: tf.Tensor) -> Dict[str, tf.Tensor]:
        """probabilities `[N, C]`, class_ids `[N]` (argmax) and their class_names `[N]`."""
        probabilities = tf.cast(self.head(self.features(images), training=False), tf.float32)
        class_ids = tf.argmax(probabilities, axis=-1, output_type=tf.int64)
        names = tf.constant(self.class_names, dtype=tf.string, name="class_name_table")
        return {
            PROBABILITIES_NAME: probabilities,
            CLASS_IDS_NAME: class_ids,
            CLASS_NAMES_NAME: tf.gather(names, class_ids),
        }


def uint8_to_float01(images: tf.Tensor) -> tf.Tensor:
    """uint8 0..255 -> float32 [0, 1], the encoders' input range (the same conversion as the exporter's)."""
    return tf.cast(images, tf.float32) / 255.0


def image_spec(image_size: int) -> tf.TensorSpec:
    return tf.TensorSpec([None, image_size, image_size, 3], tf.float32, name=INPUT_NAME)


def bytes_spec() -> tf.TensorSpec:
    return tf.TensorSpec([None], tf.string, name=BYTES_INPUT_NAME)


def build_signatures(module: ServingModule) -> Dict[str, tf.types.experimental.ConcreteFunction]:
    """Every serving signature of an export, name -> concrete function.

    The one place signatures are defined (table in the module docstring); the export, the model card,
    the warmup requests and the graph check pick them up from this dict. `classify` and
    `classify_bytes` exist only when the module has a head.
    """

    @tf.function(input_signature=[image_spec(module.image_size)], autograph=False)
    def serving_default(images):
        return {FEATURES_NAME: module.features(images)}

    @tf.function(input_signature=[bytes_spec()], autograph=False)
    def embed_images(image_bytes):
        return {FEATURES_NAME: module.features(module.decode(image_bytes))}

    signatures = {
        SERVING_DEFAULT: serving_default.get_concrete_function(),
        EMBED_IMAGES: embed_images.get_concrete_function(),
    }
    if module.head is not None:

        @tf.function(input_signature=[image_spec(module.image_size)], autograph=False)
        def classify(images):
            return module.classify(images)

        @tf.function(input_signature=[bytes_spec()], autograph=False)
        def classify_bytes(image_bytes):
            return module.classify(module.decode(image_bytes))

        signatures[CLASSIFY] = classify.get_concrete_function()
        signatures[CLASSIFY_BYTES] = classify_bytes.get_concrete_function()
    return signatures


def save_saved_model(encoder, directory: str | Path, image_size: int, head=None,
                     class_names: Optional[Sequence[str]] = None) -> List[str]:
    """Writes `encoder` (and an optional classification head) as a SavedModel at `directory`.

    Returns the signature names.
    """
    module = ServingModule(encoder, image_size, head=head, class_names=class_names)
    signatures = build_signatures(module)
    tf.saved_model.save(module, str(directory), signatures=signatures)
    return sorted(signatures)


def load_saved_model(saved_model_dir: str | Path):
    """`tf.saved_model.load` of a SavedModel folder (what TF Serving and plain-TF users get), after
    `check_saved_model` vetted its graph: the one way sslzoo loads a SavedModel."""
    check_saved_model(saved_model_dir)
    return tf.saved_model.load(str(saved_model_dir))


def describe_signatures(loaded) -> List[dict]:
    """Input/output names, dtypes and shapes of every signature of a loaded SavedModel."""
    described = []
    for name in sorted(loaded.signatures):
        function = loaded.signatures[name]
        _, input_specs = function.structured_input_signature
        described.append(
            {
                "name": name,
                "inputs": {key: _spec_dict(spec) for key, spec in sorted(input_specs.items())},
                "outputs": {key: _spec_dict(spec) for key, spec in sorted(function.structured_outputs.items())},
            }
        )
    return described


def _spec_dict(spec: tf.TensorSpec) -> dict:
    return {"dtype": spec.dtype.name, "shape": spec.shape.as_list()}


def saved_model_features(loaded, images: np.ndarray, signature: str = SERVING_DEFAULT) -> np.ndarray:
    """Features from a loaded SavedModel's signature, i.e. what TF Serving would compute."""
    outputs = loaded.signatures[signature](**{INPUT_NAME: tf.constant(images, tf.float32)})
    return outputs[FEATURES_NAME].numpy()


def saved_model_bytes_features(loaded, image_bytes: Sequence[bytes]) -> np.ndarray:
    """Features from the `embed_images` signature for a list of encoded images."""
    outputs = loaded.signatures[EMBED_IMAGES](**{BYTES_INPUT_NAME: tf.constant(list(image_bytes), tf.string)})
    return outputs[FEATURES_NAME].numpy()


def saved_model_classify(loaded, inputs, signature: str = CLASSIFY) -> Dict[str, np.ndarray]:
    """Outputs of `classify` (float images) or `classify_bytes` (a list of encoded images) as NumPy."""
    if signature == CLASSIFY_BYTES:
        feed = {BYTES_INPUT_NAME: tf.constant(list(inputs), tf.string)}
    else:
        feed = {INPUT_NAME: tf.constant(inputs, tf.float32)}
    return {key: value.numpy() for key, value in loaded.signatures[signature](**feed).items()}


# ---------------------------------------------------------------------------------------------------
# Graph hygiene: no file-reading, file-writing or printing op in anything shipped or loaded
#
# Which functions are inspected: every SavedModel also contains `__inference__traced_save_*` and
# `__inference__traced_restore_*` (SaveV2, RestoreV2, MergeV2Checkpoints, ShardedFilename...): the
# checkpoint machinery, reachable only from the `saver_filename` placeholder. Serving never runs them, so
# `graph_ops(scope="serving")` walks what a loader can execute instead: the main-graph nodes feeding every
# signature output (including `__saved_model_init_op`), every function those nodes call, transitively
# (`f`, `then_branch`, `body`, lists of functions...), plus every concrete function the object graph
# exposes to `tf.saved_model.load` callers. Reachability, rather than excluding saver functions by their
# name pattern, is what cannot be fooled by a function named like the saver.
#
# `check_saved_model`, run before every `tf.saved_model.load` in sslzoo (`load_saved_model`, the TFLite
# and ONNX converters, `sslzoo.load`), is stricter: it checks every part of the file, since a function
# no signature calls can still run (as a gradient, say), and accepts checkpoint ops only in the parts the
# saver alone reaches (`SAVER_OPS`).
# ---------------------------------------------------------------------------------------------------

DISALLOWED_OPS: Mapping[str, frozenset] = {
    "file_read": frozenset({
        "ReadFile", "MatchingFiles", "ImmutableConst", "LoadAndRemapMatrix", "WholeFileReader",
        "WholeFileReaderV2", "TextLineReader", "TextLineReaderV2", "FixedLengthRecordReader",
        "FixedLengthRecordReaderV2", "TFRecordReader", "TFRecordReaderV2", "LMDBReader", "IdentityReader",
        "IdentityReaderV2", "TFRecordDataset", "TFRecordDatasetV2", "TextLineDataset",
        "FixedLengthRecordDataset", "FixedLengthRecordDatasetV2", "LMDBDataset", "ExperimentalLMDBDataset",
        "CSVDataset", "CSVDatasetV2", "ExperimentalCSVDataset", "SqlDataset", "ExperimentalSqlDataset",
        "LoadDataset", "MatchingFilesDataset", "ExperimentalMatchingFilesDataset",
    }),
    "file_write": frozenset({
        "WriteFile", "SaveDataset", "SaveDatasetV2", "DatasetToTFRecord", "ExperimentalDatasetToTFRecord",
        "SnapshotDataset", "SnapshotDatasetV2",
    }),
    "print": frozenset({"Print", "PrintV2"}),
    "checkpoint_io": frozenset({
        "Save", "SaveV2", "SaveSlices", "Restore", "RestoreV2", "RestoreSlice", "MergeV2Checkpoints",
        "ShardedFilename", "ShardedFilespec",
    }),
    "summary": frozenset({
        "WriteSummary", "WriteScalarSummary", "WriteHistogramSummary", "WriteImageSummary",
        "WriteAudioSummary", "WriteGraphSummary", "WriteRawProtoSummary", "CreateSummaryFileWriter",
        "CreateSummaryDbWriter", "FlushSummaryWriter", "CloseSummaryWriter", "SummaryWriter", "ImportEvent",
    }),
    "python_code": frozenset({"PyFunc", "PyFuncStateless", "EagerPyFunc"}),
    "debug": frozenset({
        "DebugIdentity", "DebugIdentityV2", "DebugIdentityV3", "DebugNanCount", "DebugNumericSummary",
        "DebugNumericSummaryV2",
    }),
}

# Name patterns catch ops added to TensorFlow after this list was written (a new "...FileV3" reader).
DISALLOWED_PATTERNS: Mapping[str, re.Pattern] = {
    "file_io": re.compile(r"File|Reader|Checkpoint"),
    "print": re.compile(r"Print"),
    "summary": re.compile(r"Summary"),
    "checkpoint_io": re.compile(r"^(Save|Restore)"),
    "debug": re.compile(r"^Debug"),
}


# The checkpoint machinery TF writes into every SavedModel: whatever the saver_def's save tensor and
# restore op reach. `tf.saved_model.load` restores variables with its own reader and never runs them (TF
# Serving runs only the restore op), so these checkpoint ops are accepted there and nowhere else; a part
# that a signature or the object graph also reaches gets no allowance.
SAVER_OPS = {
    "save": frozenset({"Save", "SaveV2", "SaveSlices", "MergeV2Checkpoints", "ShardedFilename",
                       "ShardedFilespec"}),
    "restore": frozenset({"Restore", "RestoreV2", "RestoreSlice"}),
}
_SAVED_MODEL_FILE = "saved_model.pb"


def _meta_graphs(saved_model_dir: str | Path):
    # Imported here: the protobuf module path is TF-internal; keep its use in one function.
    from google.protobuf.message import DecodeError
    from tensorflow.core.protobuf import saved_model_pb2

    path = Path(saved_model_dir) / _SAVED_MODEL_FILE
    # TF reads saved_model.pb first whenever it exists, so checking it is checking what gets loaded; a
    # folder without it (e.g. only a text saved_model.pbtxt) is refused rather than checked differently.
    if not path.is_file():
        raise UnsafeModelError(f"'{saved_model_dir}' has no {_SAVED_MODEL_FILE}; sslzoo checks the graph of a "
                               f"binary SavedModel before loading it and loads nothing else")
    proto = saved_model_pb2.SavedModel()
    try:
        proto.ParseFromString(path.read_bytes())
    except DecodeError as error:
        raise UnsafeModelError(f"'{path}' is not a SavedModel protobuf ({error}), so its graph cannot be "
                               "checked; refusing to load it") from error
    return proto.meta_graphs


def _attr_functions(value) -> Iterable[str]:
    """Names of the functions one AttrValue refers to (a function, a list of them, or nested in either)."""
    functions = ([value.func] if value.HasField("func") else []) + list(value.list.func)
    for function in functions:
        if function.name:
            yield function.name
        for nested in function.attr.values():
            yield from _attr_functions(nested)


def _called_functions(node, library: Mapping) -> Iterable[str]:
    """Names of the functions a NodeDef calls: through function-valued attributes, or directly (a node
    whose op type is the name of a library function)."""
    if node.op in library:
        yield node.op
    for value in node.attr.values():
        yield from _attr_functions(value)


def _node_name(tensor_name: str) -> str:
    return tensor_name.lstrip("^").split(":")[0]


def _closure(start: Iterable[str], known: Mapping, successors) -> Set[str]:
    """The names in `known` reachable from `start` by repeatedly following `successors(name)`."""
    pending, seen = list(start), set()
    while pending:
        name = pending.pop()
        if name not in seen and name in known:
            seen.add(name)
            pending.extend(successors(name))
    return seen


# A part of a graph: ("node", name) for a main-graph node, ("function", name) for a library function.
_Part = Tuple[str, str]


class _Graph:
    """One meta graph's main-graph nodes and function library, and which parts a root can execute."""

    def __init__(self, meta_graph):
        self.meta_graph = meta_graph
        self.nodes = {node.name: node for node in meta_graph.graph_def.node}
        self.library = {f.signature.name: f for f in meta_graph.graph_def.library.function}

    def parts(self) -> Set[_Part]:
        return {("node", name) for name in self.nodes} | {("function", name) for name in self.library}

    def reach(self, tensor_names: Iterable[str], functions: Iterable[str] = ()) -> Set[_Part]:
        """The parts that computing `tensor_names` or calling `functions` can execute: main-graph inputs
        walked backwards, then every function called, transitively."""
        nodes = _closure((_node_name(name) for name in tensor_names), self.nodes,
                         lambda name: (_node_name(i) for i in self.nodes[name].input))
        calls = [f for name in nodes for f in _called_functions(self.nodes[name], self.library)]
        called = _closure(calls + list(functions), self.library,
                          lambda name: (f for node in self.library[name].node_def
                                        for f in _called_functions(node, self.library)))
        return {("node", name) for name in nodes} | {("function", name) for name in called}

    def serving(self) -> Set[_Part]:
        """What a loader can execute: every signature output (`__saved_model_init_op` included) and every
        concrete function the object graph exposes to `tf.saved_model.load` callers."""
        outputs = [t.name for sig in self.meta_graph.signature_def.values() for t in sig.outputs.values()]
        return self.reach(outputs, self.meta_graph.object_graph_def.concrete_functions.keys())

    def saver_allowances(self) -> Dict[_Part, frozenset]:
        """part -> the checkpoint ops accepted in it (see SAVER_OPS); parts not listed accept none."""
        serving = self.serving()
        saver = self.meta_graph.saver_def
        allowed: Dict[_Part, frozenset] = {}
        for root, ops in ((saver.save_tensor_name, SAVER_OPS["save"]),
                          (saver.restore_op_name, SAVER_OPS["restore"])):
            if root:
                for part in self.reach([root]) - serving:
                    allowed[part] = allowed.get(part, ops) & ops
        return allowed

    def ops(self, parts: Iterable[_Part]) -> Iterator[Tuple[_Part, str]]:
        """(part, op type) for every node in `parts`."""
        for kind, name in parts:
            if kind == "node":
                yield (kind, name), self.nodes[name].op
            else:
                for node in self.library[name].node_def:
                    yield (kind, name), node.op


def _describe(part: _Part) -> str:
    kind, name = part
    return f"function {name}" if kind == "function" else f"main-graph node {name}"


def graph_ops(saved_model_dir: str | Path, *, scope: str = "serving") -> Set[str]:
    """Every op type a SavedModel can execute, including inside its function library.

    Args:
        saved_model_dir: the SavedModel folder (the one holding `saved_model.pb`).
        scope: "serving" (default): ops reachable from the signatures and the object graph's functions,
            which excludes the checkpoint save/restore functions (see the comment above);
            "all": every node of the main graph and of every library function, saver included.
    """
    if scope not in ("serving", "all"):
        raise ValueError(f"scope must be 'serving' or 'all', got {scope!r}")
    ops: Set[str] = set()
    for meta_graph in _meta_graphs(saved_model_dir):
        graph = _Graph(meta_graph)
        ops.update(op for _, op in graph.ops(graph.serving() if scope == "serving" else graph.parts()))
    return ops


def disallowed_ops(ops: Iterable[str], allow: Iterable[str] = ()) -> Dict[str, str]:
    """Maps each disallowed op in `ops` to its category; `allow` names ops to accept anyway."""
    allowed = set(allow)
    found = {}
    for op in sorted(set(ops) - allowed):
        for category, names in DISALLOWED_OPS.items():
            if op in names:
                found[op] = category
                break
        else:
            for category, pattern in DISALLOWED_PATTERNS.items():
                if pattern.search(op):
                    found[op] = category
                    break
    return found


_MAX_HOLDERS = 3  # holders named per op in an error; one is enough to find the planted call


def check_graph_ops(ops: Iterable[str] | Mapping[str, Iterable[str]], allow: Iterable[str] = (), *,
                    source: str = "the exported graph") -> None:
    """Raises `DisallowedOpsError` if `ops` contains file-reading, file-writing, printing or Python ops.

    `ops` may map each op type to where it occurs (`check_saved_model` does), and the message names those.
    """
    found = disallowed_ops(ops, allow)
    if not found:
        return
    holders = ops if isinstance(ops, Mapping) else {}
    listing = []
    for op, category in found.items():
        where = sorted(holders.get(op, ()))
        shown = ", ".join(where[:_MAX_HOLDERS]) + (f" and {len(where) - _MAX_HOLDERS} more"
                                                   if len(where) > _MAX_HOLDERS else "")
        listing.append(f"{op} ({category}{', in ' + shown if shown else ''})")
    raise DisallowedOpsError(
        f"{source} contains disallowed ops: {', '.join(listing)}. sslzoo neither ships nor loads a graph that "
        "reads or writes files, prints or runs Python: remove tf.io / tf.print / tf.py_function calls from "
        "the model and export it again (run a SavedModel you did not make only in a sandbox)."
    )


def check_saved_model(saved_model_dir: str | Path) -> None:
    """Refuses a SavedModel whose graph holds a disallowed op anywhere, from `saved_model.pb` alone.

    Every main-graph node and every library function is checked (not only what the signatures reach: a
    gradient or an orphan function can still be run); the one exception is the checkpoint ops of the
    saver's own save/restore functions (`SAVER_OPS`). Nothing is loaded or executed to check.
    Raises `DisallowedOpsError` naming each op and the function (or main-graph node) holding it.
    """
    holders: Dict[str, Set[str]] = {}
    for meta_graph in _meta_graphs(saved_model_dir):
        graph = _Graph(meta_graph)
        allowances = graph.saver_allowances()
        located = list(graph.ops(graph.parts()))
        flagged = disallowed_ops({op for _, op in located})
        for part, op in located:
            if op in flagged and op not in allowances.get(part, ()):
                holders.setdefault(op, set()).add(_describe(part))
    check_graph_ops(holders, source=f"refusing to load the SavedModel at '{saved_model_dir}': its graph")
