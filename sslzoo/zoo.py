"""The model zoo: find an export by name or path, verify it, load it.

```python
encoder = sslzoo.load("simclr_resnet18_cifar10")                 # keras.Model, trainable
served = sslzoo.load("simclr_resnet18_cifar10", format="saved_model")
served.signatures["serving_default"](images=x)["features"]
sslzoo.list_models()
```
Resolution order for a name (first hit wins, like PATH): each folder in `$SSLZOO_EXPORTED`
(os.pathsep-separated), the repository's `exported/`, then `./exported`. An existing path is used as is.

Loading never deserializes code (DESIGN.md checklist item 9): every file's sha256 is checked against the
model card first, `.keras` files load with `safe_mode=True`, and a `.keras` holding a `Lambda` layer is
refused before Keras reads it.
"""

from __future__ import annotations

import json
import logging
import os
import zipfile
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

from sslzoo.export.card import CARD_NAME, ArtifactIntegrityError, read_card, verify_files

logger = logging.getLogger(__name__)

EXPORT_ROOTS_ENV = "SSLZOO_EXPORTED"
FORMATS = ("keras", "saved_model", "tflite")
KERAS_FILE = "encoder.keras"
TFLITE_FILE = "encoder.tflite"
LIST_FIELDS = ("method", "encoder", "dataset", "knn_top1", "linear_top1")

__all__ = ["load", "list_models", "resolve", "export_roots", "ModelNotFoundError", "ArtifactIntegrityError",
           "UnsafeModelError"]


class ModelNotFoundError(LookupError):
    """No export with that name in any export root; the message lists what is available and where."""


class UnsafeModelError(ValueError):
    """A model file would need code execution to load (e.g. a Lambda layer); it is refused."""


# --------------------------------------------------------------------------------------- resolution


def export_roots() -> List[Path]:
    """The folders searched for exports by name, in order."""
    roots = [Path(p).expanduser() for p in os.environ.get(EXPORT_ROOTS_ENV, "").split(os.pathsep) if p]
    roots.append(Path(__file__).resolve().parents[1] / "exported")
    roots.append(Path.cwd() / "exported")
    unique = []
    for root in roots:
        if root.resolve() not in [r.resolve() for r in unique]:
            unique.append(root)
    return unique


def _local_exports() -> Dict[str, Path]:
    """name -> export folder over all roots; an earlier root shadows a later one with the same name."""
    found: Dict[str, Path] = {}
    for root in export_roots():
        if not root.is_dir():
            continue
        for folder in sorted(root.iterdir()):
            # Dot-names are atomic-write temporaries (.<name>.tmp-*, .<name>.old-*), never exports.
            if folder.name.startswith(".") or not (folder / CARD_NAME).is_file():
                continue
            found.setdefault(folder.name, folder)
    return found


def _from_local_roots(name: str) -> Optional[Path]:
    return _local_exports().get(name)


# Name resolvers, tried in order. The deployment issue adds a verified download cache and a remote index
# here (e.g. `_from_cache`, then `_from_index`, which downloads into the cache): each takes a name and
# returns a local export folder or None.
_RESOLVERS = [_from_local_roots]


def resolve(name_or_path: str | os.PathLike) -> Path:
    """An export folder (with `model_card.json`) or a `.keras` file for a name or an existing path."""
    path = Path(name_or_path).expanduser()
    if path.exists():
        if path.is_dir() and (path / CARD_NAME).is_file():
            return path
        if path.is_file() and path.suffix == ".keras":
            return path
        raise ModelNotFoundError(f"'{path}' exists but is neither an export folder with {CARD_NAME} nor a "
                                 ".keras file")
    name = str(name_or_path)
    for resolver in _RESOLVERS:
        found = resolver(name)
        if found is not None:
            return found
    available = sorted(_local_exports())
    roots = ", ".join(str(r) for r in export_roots())
    raise ModelNotFoundError(
        f"no model named '{name}'. Available: {', '.join(available) if available else '(none)'}. "
        f"Looked in: {roots} (set {EXPORT_ROOTS_ENV} to add folders)"
    )


# ------------------------------------------------------------------------------------------ loading


def load(name_or_path: str | os.PathLike, format: str = "keras"):
    """Loads a zoo model after verifying every file's sha256 against its model card.

    Args:
        name_or_path: a zoo name, an export folder, or a `.keras` file.
        format: "keras" -> trainable `keras.Model` (predict/fit), loaded with `safe_mode=True`;
            "saved_model" -> `tf.saved_model.load` of the highest integer version (callable signatures);
            "tflite" -> an `ai_edge_litert` interpreter.
    """
    if format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
    location = resolve(name_or_path)
    if location.is_file():  # a bare .keras file
        if format != "keras":
            raise ValueError(f"'{location}' is a .keras file; format='{format}' needs an export folder")
        _verify_enclosing_export(location)
        return _load_keras(location)
    verify_files(location)
    if format == "keras":
        return _load_keras(location / KERAS_FILE)
    if format == "saved_model":
        import tensorflow as tf

        return tf.saved_model.load(str(saved_model_version_dir(location)))
    from ai_edge_litert.interpreter import Interpreter

    return Interpreter(model_path=str(location / TFLITE_FILE))


def _verify_enclosing_export(keras_path: Path) -> None:
    """A .keras inside an export folder is verified with that export's card; a loose one cannot be."""
    parent = keras_path.parent
    if (parent / CARD_NAME).is_file() and keras_path.name in read_card(parent)["files"]:
        verify_files(parent)
    else:
        logger.warning("%s has no model card beside it; its sha256 cannot be verified", keras_path)


def saved_model_version_dir(export_dir: Path) -> Path:
    """The highest integer-named subfolder: the version TF Serving would serve."""
    versions = [p for p in Path(export_dir).iterdir() if p.is_dir() and p.name.isdigit()]
    if not versions:
        raise ArtifactIntegrityError(f"'{export_dir}' has no SavedModel version folder (e.g. 1/)")
    return max(versions, key=lambda p: int(p.name))


def _walk_json(node: Any) -> Iterator[dict]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk_json(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk_json(value)


def _layer_name(node: dict) -> str:
    config = node.get("config")
    return str(config.get("name", "?")) if isinstance(config, dict) else "?"


def check_keras_archive(path: Path) -> None:
    """Refuses a `.keras` whose config holds a Lambda layer, before Keras deserializes anything.

    safe_mode already refuses a Lambda wrapping a Python `lambda`, but a Lambda wrapping a named function
    fails with an unrelated-looking TypeError; reading the config ourselves gives one clear reason.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read("config.json"))
    except (zipfile.BadZipFile, KeyError, ValueError) as error:
        raise UnsafeModelError(f"'{path}' is not a valid .keras archive: {error}") from error
    lambdas = [_layer_name(node) for node in _walk_json(config) if node.get("class_name") == "Lambda"]
    if lambdas:
        raise UnsafeModelError(
            f"refusing to load '{path}': it contains Lambda layer(s) {lambdas}. A Lambda layer is "
            "serialized Python code, and sslzoo never deserializes code (Keras safe_mode). Rebuild the "
            "model from built-in or registered layers."
        )


def _load_keras(path: Path):
    import keras

    check_keras_archive(path)
    try:
        return keras.saving.load_model(path, safe_mode=True)
    except ValueError as error:
        if "safe_mode" not in str(error):
            raise
        raise UnsafeModelError(
            f"refusing to load '{path}': it needs code deserialization (e.g. a Lambda layer), and sslzoo "
            f"never deserializes code (Keras safe_mode=True). Keras said: {error}"
        ) from error


# ------------------------------------------------------------------------------------------ listing


def _card_field(card: dict, key: str) -> Any:
    """A card fact, top level first, then under "metrics"; a {"name": ...} mapping gives its name."""
    value = card.get(key)
    if value is None and isinstance(card.get("metrics"), dict):
        value = card["metrics"].get(key)
    if isinstance(value, dict):
        value = value.get("name")
    return value


def list_models() -> List[dict]:
    """One dict per local export, sorted by name: name, method, encoder, dataset, knn_top1, linear_top1, path."""
    models = []
    for name, folder in _local_exports().items():
        try:
            card = read_card(folder)
        except ArtifactIntegrityError as error:
            logger.warning("skipping %s: %s", folder, error)
            continue
        entry = {"name": name}
        entry.update({key: _card_field(card, key) for key in LIST_FIELDS})
        entry["path"] = str(folder)
        models.append(entry)
    return sorted(models, key=lambda m: m["name"])
