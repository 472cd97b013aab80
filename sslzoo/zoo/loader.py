"""The model zoo: find an export by name or path, verify it, load it.

```python
encoder = sslzoo.load("simclr_resnet18_cifar10")                 # keras.Model, trainable
served = sslzoo.load("simclr_resnet18_cifar10", format="saved_model")
served.signatures["serving_default"](images=x)["features"]
lite = sslzoo.load("simclr_resnet18_cifar10", format="tflite", variant="int8")  # encoder_int8.tflite
classifier = sslzoo.load("simclr_resnet18_cifar10", head=True)  # images -> class probabilities
sslzoo.list_models()
```
Resolution order for a name (first hit wins, like PATH):
1. local exports: each folder in `$SSLZOO_EXPORTED` (os.pathsep-separated), the checkout's `exported/` when
   the package runs from a checkout, then `./exported`;
2. the download cache `$SSLZOO_HOME/<name>` (default `~/.cache/sslzoo/<name>`);
3. an index, only if one is configured (`load(..., index_url=...)` or `$SSLZOO_INDEX_URL`: a URL or a local
   path of `index.json`, which maps each name to its files' location and hashes, see `sslzoo.zoo.remote`):
   the model is copied into the cache, verified file by file against the index and then against its model
   card. **No remote URL is contacted unless you configure one**; there is no default.
An existing path is used as is. The wheel does not carry `exported/` (46 MB): an installed package finds the
shipped encoders through `$SSLZOO_EXPORTED`, the cache or an index (`scripts/make_index.py` writes one).

Loading never deserializes code: every file's sha256 is checked against the
model card first, `.keras` files load with `safe_mode=True`, a `.keras` holding a `Lambda` layer (or a
config.json over `MAX_KERAS_CONFIG_BYTES`) is refused before Keras reads it, and a SavedModel whose graph
holds a file, print or Python op is refused before `tf.saved_model.load` sees it. Cache hits are
re-verified on every load; a cache entry that no longer matches its card raises `ArtifactIntegrityError`
telling you to delete `<cache>/<name>` (it is never silently re-downloaded over: a changed cache file is
worth a look). The card hashes catch corruption, not a party who can write the folder (they can rewrite
the card too): `load(..., sha256=<card hash>)` pins the card and so every file. See docs/security.md.
"""

from __future__ import annotations

import json
import logging
import os
import zipfile
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional

from sslzoo import settings
from sslzoo.zoo import remote as zoo_remote
from sslzoo.export.card import (CARD_NAME, ArtifactIntegrityError, card_field, check_sha256_pin, read_card,
                               verify_files)
from sslzoo.errors import DownloadError, IndexUnreachableError, ModelIndexError
from sslzoo.errors import ModelNotFoundError, UnsafeModelError  # noqa: F401  (raised here)

logger = logging.getLogger(__name__)

EXPORT_ROOTS_ENV = settings.EXPORT_ROOTS_ENV
FORMATS = ("keras", "saved_model", "tflite")
KERAS_FILE = "encoder.keras"
TFLITE_FILE = "encoder.tflite"
HEAD_FILE = "head.keras"
LABELS_FILE = "labels.txt"
DEFAULT_VARIANT = "float32"
LIST_FIELDS = ("method", "encoder", "dataset", "knn_top1", "linear_top1", "finetune_top1")
KERAS_CONFIG = "config.json"  # the member of a .keras zip that holds the model's layer config
# A config is JSON layer descriptions: kilobytes for the zoo's encoders, a few MB for very deep models.
MAX_KERAS_CONFIG_BYTES = 64 << 20

__all__ = ["load", "list_models", "resolve", "export_roots", "load_labels", "tflite_variants",
           "ModelNotFoundError", "ArtifactIntegrityError", "UnsafeModelError", "IndexUnreachableError",
           "ModelIndexError", "DownloadError"]


# --------------------------------------------------------------------------------------- resolution


def export_roots() -> List[Path]:
    """The folders searched for exports by name, in order (`sslzoo.settings.export_roots`)."""
    return settings.export_roots()


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


@dataclass
class _Lookup:
    """One name lookup: the name, the index URL in effect, and the index (fetched at most once)."""

    name: str
    index_url: Optional[str] = None
    _index: Optional[dict] = field(default=None, repr=False)

    def index(self) -> Optional[dict]:
        if self.index_url is None:
            return None
        if self._index is None:
            self._index = zoo_remote.fetch_index(self.index_url)
        return self._index


def _from_local_roots(lookup: _Lookup) -> Optional[Path]:
    return _local_exports().get(lookup.name)


def _from_cache(lookup: _Lookup) -> Optional[Path]:
    zoo_remote.remove_stale_temporaries()
    return zoo_remote.cached_models().get(lookup.name)


def _from_index(lookup: _Lookup) -> Optional[Path]:
    index = lookup.index()
    if index is None or lookup.name not in index["models"]:
        return None
    _, base = zoo_remote.split_index_url(lookup.index_url)
    return zoo_remote.download_model(lookup.name, index["models"][lookup.name], base)


# Name resolvers, tried in order: each takes a `_Lookup` and returns a local export folder or None.
_RESOLVERS = [_from_local_roots, _from_cache, _from_index]


def _is_cache_entry(folder: Path) -> bool:
    try:
        return folder.resolve().parent == zoo_remote.cache_root().resolve()
    except OSError:
        return False


def resolve(name_or_path: str | os.PathLike, index_url: Optional[str] = None) -> Path:
    """An export folder (with `model_card.json`) or a `.keras` file for a name or an existing path.

    A name not found locally or in the cache is looked up in the remote index (argument, else
    `$SSLZOO_INDEX_URL`; none configured -> no network) and downloaded into the cache.
    """
    path = Path(name_or_path).expanduser()
    if path.exists():
        if path.is_dir() and (path / CARD_NAME).is_file():
            return path
        if path.is_file() and path.suffix == ".keras":
            return path
        raise ModelNotFoundError(f"'{path}' exists but is neither an export folder with {CARD_NAME} nor a "
                                 ".keras file")
    lookup = _Lookup(str(name_or_path), zoo_remote.index_url(index_url))
    for resolver in _RESOLVERS:
        found = resolver(lookup)
        if found is not None:
            return found
    local = sorted(_local_exports())
    cached = sorted(set(zoo_remote.cached_models()) - set(local))
    remote = sorted(set(zoo_remote.index_names(lookup.index() or {})) - set(local) - set(cached))
    available = local + cached + remote
    roots = ", ".join(str(r) for r in export_roots())
    where = (f"the index at {lookup.index_url}" if lookup.index_url
             else f"no remote index (set {zoo_remote.INDEX_URL_ENV} to its URL or path, or pass index_url=, "
                  "to add one)")
    raise ModelNotFoundError(
        f"no model named '{lookup.name}'. Available: {', '.join(available) if available else '(none)'}"
        + (f" (local: {', '.join(local) or '-'}; cached: {', '.join(cached) or '-'}; "
           f"in the index: {', '.join(remote) or '-'})" if lookup.index_url or cached else "")
        + f". Looked in: {roots} (set {EXPORT_ROOTS_ENV} to add folders, e.g. a checkout's exported/); the "
        f"cache {zoo_remote.cache_root()} (set {zoo_remote.CACHE_HOME_ENV} to move it); {where}"
        + ("" if available else ". An installed sslzoo carries no encoders: point "
           f"{EXPORT_ROOTS_ENV} at a checkout's exported/, or {zoo_remote.INDEX_URL_ENV} at an index")
    )


# ------------------------------------------------------------------------------------------ loading


def load(name_or_path: str | os.PathLike, format: str = "keras", variant: str = DEFAULT_VARIANT,
         head: bool = False, index_url: Optional[str] = None, sha256: Optional[str] = None):
    """Loads a zoo model after verifying every file's sha256 against its model card.

    Args:
        name_or_path: a zoo name, an export folder, or a `.keras` file.
        format: "keras" -> trainable `keras.Model` (predict/fit), loaded with `safe_mode=True`;
            "saved_model" -> `tf.saved_model.load` of the highest integer version (callable signatures),
            after its graph passed `sslzoo.export.saved_model.check_saved_model`;
            "tflite" -> `sslzoo.export.litert_model.TFLiteModel` (`predict(images)`) when that module is
            installed, else an `ai_edge_litert` Interpreter.
        variant: TFLite variant: "float32" -> `encoder.tflite`, any other -> `encoder_<variant>.tflite`.
            Only "float32" is valid for the other formats.
        head: with format="keras", return encoder + classifier head (`head.keras`) as one Keras model,
            images -> class probabilities (`load_labels` gives the class names).
        index_url: remote index to use for a name not found locally or in the cache (default:
            `$SSLZOO_INDEX_URL`; unset -> no network access).
        sha256: the expected sha256 (hex) of the export's `model_card.json`. The card lists every file's
            hash, so pinning it pins the whole export: checked before any other file is read. Without
            it, the hashes only catch accidental corruption (whoever can write the folder can rewrite
            the card too); see docs/security.md.
    Raises:
        ModelNotFoundError: unknown name (the message lists local, cached and indexed names).
        ArtifactIntegrityError: a file does not match its card or the index (nothing is cached), or the
            card does not match `sha256`.
        UnsafeModelError / DisallowedOpsError: a Lambda layer, or a graph with file, print or Python ops.
        IndexUnreachableError / DownloadError: the configured index or a file could not be fetched.
    """
    if format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
    if head and format != "keras":
        raise ValueError(f"head=True needs format='keras' (got {format!r}); the classifier head ships as "
                         f"{HEAD_FILE}")
    if variant != DEFAULT_VARIANT and format != "tflite":
        raise ValueError(f"variant={variant!r} applies to format='tflite' only; {format} is float32")
    sha256 = check_sha256_pin(sha256)
    location = resolve(name_or_path, index_url=index_url)
    if location.is_file():  # a bare .keras file
        if format != "keras" or head:
            raise ValueError(f"'{location}' is a .keras file; format='{format}'"
                             f"{' with head=True' if head else ''} needs an export folder")
        _verify_enclosing_export(location, sha256)
        return _load_keras(location)
    card = _verify_export(location, sha256)
    if format == "keras":
        if head:
            return _load_with_head(location, card)
        return _load_keras(location / KERAS_FILE)
    if format == "saved_model":
        from sslzoo.export.saved_model import load_saved_model

        return load_saved_model(saved_model_version_dir(location))
    return _load_tflite(location, card, variant)


def _verify_export(location: Path, sha256: Optional[str] = None) -> dict:
    """verify_files (against a card matching `sha256` when pinned), with a how-to-fix hint when the broken
    export is a download-cache entry."""
    try:
        return verify_files(location, read_card(location, sha256=sha256))
    except ArtifactIntegrityError as error:
        if not _is_cache_entry(location):
            raise
        raise ArtifactIntegrityError(
            f"the cached model at '{location}' failed verification: {error}. A cache entry never changes "
            f"after a verified download, so it was modified or corrupted on disk; it is not re-downloaded "
            f"automatically. Delete the folder '{location}' (e.g. rm -rf '{location}') and load again to "
            "download a fresh copy."
        ) from error


def tflite_variants(card_or_dir: dict | str | os.PathLike) -> List[str]:
    """TFLite variants an export holds: "float32" for encoder.tflite, "<v>" for encoder_<v>.tflite."""
    card = card_or_dir if isinstance(card_or_dir, dict) else read_card(card_or_dir)
    variants = []
    for relative in card["files"]:
        if relative == TFLITE_FILE:
            variants.append(DEFAULT_VARIANT)
        elif relative.startswith("encoder_") and relative.endswith(".tflite") and "/" not in relative:
            variants.append(relative[len("encoder_"):-len(".tflite")])
    return sorted(variants)


def _tflite_file(variant: str) -> str:
    return TFLITE_FILE if variant == DEFAULT_VARIANT else f"encoder_{variant}.tflite"


def _load_tflite(location: Path, card: dict, variant: str):
    present = tflite_variants(card)
    if not isinstance(variant, str) or variant not in present:
        raise ValueError(f"no TFLite variant {variant!r} in '{location}'; variants present: "
                         f"{', '.join(present) if present else '(none)'}")
    path = location / _tflite_file(variant)
    try:
        from sslzoo.export.litert_model import TFLiteModel
    except ModuleNotFoundError as error:
        if error.name != "sslzoo.export.litert_model":
            raise
    else:
        return TFLiteModel(path)
    from ai_edge_litert.interpreter import Interpreter

    return Interpreter(model_path=str(path))


def load_labels(name_or_path: str | os.PathLike, index_url: Optional[str] = None) -> Optional[List[str]]:
    """Class names of an export's classifier head (`labels.txt`, one per line, verified), or None."""
    location = resolve(name_or_path, index_url=index_url)
    if location.is_file():
        location = location.parent
    card = _verify_export(location)
    if LABELS_FILE not in card["files"]:
        return None
    return [line for line in (location / LABELS_FILE).read_text(encoding="utf-8").splitlines() if line]


def _load_with_head(location: Path, card: dict):
    """encoder.keras + head.keras chained into one Keras model: images -> class probabilities."""
    if HEAD_FILE not in card["files"]:
        raise FileNotFoundError(
            f"'{location}' has no classifier head ({HEAD_FILE}); head=True needs an export made with a head "
            "(export with --head). Load the encoder alone with head=False."
        )
    import keras

    encoder = _load_keras(location / KERAS_FILE)
    classifier = _load_keras(location / HEAD_FILE)
    images = keras.Input(shape=tuple(encoder.input_shape[1:]), name="images")
    probabilities = classifier(encoder(images))
    return keras.Model(images, probabilities, name=f"{location.name}_classifier")


def _verify_enclosing_export(keras_path: Path, sha256: Optional[str] = None) -> None:
    """A .keras inside an export folder is verified with that export's card; a loose one cannot be."""
    parent = keras_path.parent
    if (parent / CARD_NAME).is_file():
        card = read_card(parent, sha256=sha256)
        if keras_path.name in card["files"]:
            verify_files(parent, card)
            return
    if sha256 is not None:
        raise ArtifactIntegrityError(
            f"sha256= pins an export's {CARD_NAME}, and '{keras_path}' is not listed in one; load the "
            "export folder instead, or compare the file's own sha256 yourself"
        )
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


def _read_config(archive: zipfile.ZipFile, path: Path) -> bytes:
    """The archive's config.json, refused past `MAX_KERAS_CONFIG_BYTES`: a zip bomb is never inflated."""
    limit = MAX_KERAS_CONFIG_BYTES
    fix = (f"a real model config is far smaller; if this one is genuine, raise "
           f"sslzoo.zoo.loader.MAX_KERAS_CONFIG_BYTES ({limit} bytes)")
    declared = archive.getinfo(KERAS_CONFIG).file_size
    if declared > limit:
        raise UnsafeModelError(f"refusing to load '{path}': its {KERAS_CONFIG} declares {declared} bytes "
                               f"uncompressed; {fix}")
    with archive.open(KERAS_CONFIG) as stream:
        # At most limit + 1 bytes whatever the header declares, so a size field that lies cannot get past.
        data = stream.read(limit + 1)
    if len(data) > limit:
        raise UnsafeModelError(f"refusing to load '{path}': its {KERAS_CONFIG} inflates past {limit} bytes "
                               f"(more than its header declares); {fix}")
    return data


def check_keras_archive(path: Path) -> None:
    """Refuses a `.keras` whose config holds a Lambda layer (or is oversized), before Keras reads it.

    safe_mode already refuses a Lambda wrapping a Python `lambda`, but a Lambda wrapping a named function
    fails with an unrelated-looking TypeError; reading the config ourselves gives one clear reason.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(_read_config(archive, path))
    except UnsafeModelError:
        raise
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


def list_models(remote: bool = False, index_url: Optional[str] = None) -> List[dict]:
    """One dict per model, sorted by name: name, method, encoder, dataset, knn_top1, linear_top1,
    finetune_top1 (10% of the labels, when measured), budget (for benchmark exports), path.

    Local exports first, then models in the download cache (a local export shadows a cached one of the
    same name). With `remote=True` and an index configured (argument or `$SSLZOO_INDEX_URL`), models
    only in the index are added with `path=None` and the index's headline numbers.
    """
    models = []
    folders = dict(zoo_remote.cached_models())
    folders.update(_local_exports())
    for name, folder in folders.items():
        try:
            card = read_card(folder)
        except ArtifactIntegrityError as error:
            logger.warning("skipping %s: %s", folder, error)
            continue
        entry = {"name": name}
        entry.update({key: card_field(card, key) for key in LIST_FIELDS})
        # The training budget the numbers belong to, when the export came from the zoo benchmark.
        entry["budget"] = (card.get("benchmark") or {}).get("budget")
        entry["path"] = str(folder)
        models.append(entry)
    url = zoo_remote.index_url(index_url)
    if remote and url:
        for name, indexed in zoo_remote.fetch_index(url)["models"].items():
            if name not in folders and isinstance(indexed, dict):
                entry = {"name": name}
                entry.update({key: indexed.get(key) for key in LIST_FIELDS})
                entry["path"] = None
                models.append(entry)
    return sorted(models, key=lambda m: m["name"])
