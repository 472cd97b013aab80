"""Remote zoo: a JSON model index, verified downloads, and the local download cache.

Nothing here contacts the network unless an index URL is configured: `SSLZOO_INDEX_URL` or
`sslzoo.load(name, index_url=...)`. There is no default remote URL. Supported schemes: `https://`,
`file://`, and `http://` for localhost only (the index carries the hashes, so it must not travel in the
clear). Redirects are followed to `https://` only. A plain local path (`/srv/zoo/index.json`,
`mirror/`) is read as the `file://` URL of that path.

Index (`<base>/index.json`, written by `scripts/make_index.py`): a JSON file mapping each model name to
where its files are and their hashes:
```
{"format_version": 1,
 "models": {"<name>": {"files": {"<relative path>": {"sha256": "<hex>", "size": <bytes>}, ...},
                       "model_card": "model_card.json",
                       "url": "<where the model folder is>",   # optional, default <base>/<name>
                       "method": ..., "knn_top1": ..., ...}}}
```
File URLs are `<model url>/<relative path>`. A model's `url` is an absolute URL (`https://host/models/x`,
`file:///srv/x`), an absolute local path, or a path relative to the index's folder (`models/x`,
`../other/x`); without it the folder is `<base>/<name>`. `SSLZOO_INDEX_URL` may be the base URL or the URL
of the index file itself (anything ending in `.json`), or either as a local path.

Cache: `$SSLZOO_HOME/<name>` (default `~/.cache/sslzoo/<name>`). A model is downloaded into a hidden
temporary folder inside the cache root (`.<name>.tmp-*`); each file is streamed to a hidden `.part` file,
hashed while it streams, and renamed to its final name only when its size and sha256 match the index.
The model folder is renamed into the cache only after every file matched the index and the whole folder
verified against its model card. A flipped byte, a short read, a network error or a Ctrl-C removes the
temporary folder, so the cache never holds a partial or unverified model. Only a download killed outright
(SIGKILL, power loss) leaves its temporary behind; the next download or cache lookup removes temporaries
untouched for a day (`remove_stale_temporaries`), never recent ones, which may be downloads in progress.
Cache hits are re-verified against the model card on every load (`sslzoo.zoo.load`); a cache entry that
fails is reported, never silently re-downloaded over (delete `<cache>/<name>` to fetch it again).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import re
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path, PurePosixPath
from typing import Dict, List, Mapping, Optional

from sslzoo.files import ExportExistsError, atomic_directory, sha256_file
from sslzoo.export.card import CARD_NAME, SHA256_HEX, ArtifactIntegrityError, card_field, verify_files
from sslzoo.errors import DownloadError, IndexUnreachableError, ModelIndexError  # noqa: F401  (raised here)

logger = logging.getLogger(__name__)

CACHE_HOME_ENV = "SSLZOO_HOME"
INDEX_URL_ENV = "SSLZOO_INDEX_URL"
INDEX_FILE = "index.json"
INDEX_FORMAT_VERSION = 1
TIMEOUT_SECONDS = 60.0  # per blocking network operation (connect, each read), not per file
MAX_INDEX_BYTES = 16 << 20
STALE_TEMPORARY_SECONDS = 24 * 3600  # a download temporary untouched this long belongs to a killed process
_CHUNK = 1 << 20
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")

__all__ = ["cache_root", "index_url", "fetch_index", "download_model", "build_index",
           "remove_stale_temporaries", "ModelIndexError",
           "IndexUnreachableError", "DownloadError", "CACHE_HOME_ENV", "INDEX_URL_ENV"]


# ----------------------------------------------------------------------------------- configuration


def cache_root() -> Path:
    """`$SSLZOO_HOME`, else `~/.cache/sslzoo`: cached models live in `<cache_root>/<name>`."""
    configured = os.environ.get(CACHE_HOME_ENV)
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "sslzoo"


def index_url(explicit: Optional[str] = None) -> Optional[str]:
    """The configured index URL (the argument, else `$SSLZOO_INDEX_URL`), or None: no remote lookup. A
    local path becomes its `file://` URL."""
    url = explicit or os.environ.get(INDEX_URL_ENV) or None
    return None if url is None else _url_of(url.strip())


def _url_of(location: str) -> str:
    """A URL as given; a local path (no scheme) as its absolute `file://` URL."""
    if urllib.parse.urlsplit(location).scheme:
        return location
    return Path(location).expanduser().resolve().as_uri()


def model_url(name: str, entry: Mapping, base: str) -> str:
    """Where index entry `name`'s files are: its `url` (absolute URL, absolute path, or a path relative to
    the index's folder `base`), else `<base>/<name>`."""
    url = entry.get("url") if isinstance(entry, Mapping) else None
    if url is None:
        return f"{base}/{urllib.parse.quote(name)}"
    if not isinstance(url, str) or not url.strip():
        raise ModelIndexError(f"index entry '{name}' has a 'url' that is not a non-empty string: {url!r}")
    url = url.strip()
    if urllib.parse.urlsplit(url).scheme or os.path.isabs(url):
        resolved = _url_of(url).rstrip("/")
    else:
        resolved = urllib.parse.urljoin(base.rstrip("/") + "/", urllib.parse.quote(url)).rstrip("/")
    if urllib.parse.urlsplit(resolved).scheme == "file" and urllib.parse.urlsplit(base).scheme != "file":
        # A served index must not make the client read its own disk.
        raise ModelIndexError(f"index entry '{name}' points at the local files {resolved}, but the index is not "
                              "local; a served index may only point at URLs")
    return resolved


def split_index_url(url: str) -> tuple:
    """(index file URL, base URL for model files) for a base URL or a URL ending in `.json`."""
    url = url.strip()
    if urllib.parse.urlsplit(url).path.endswith(".json"):
        return url, url.rsplit("/", 1)[0]
    base = url.rstrip("/")
    return f"{base}/{INDEX_FILE}", base


def _check_scheme(url: str) -> None:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme in ("https", "file"):
        return
    if parts.scheme == "http" and parts.hostname in _LOCAL_HOSTS:
        return
    raise ValueError(f"unsupported URL {url!r}: sslzoo downloads from https:// or file:// "
                     "(http:// only from localhost)")


class _HttpsRedirectsOnly(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only to https://: urllib would also follow one to http://, where anyone on the
    path could swap the index (and with it every hash) or the files."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if urllib.parse.urlsplit(newurl).scheme != "https":
            fp.close()
            raise DownloadError(f"refusing the redirect from {req.full_url} to {newurl}: sslzoo follows "
                                f"redirects to https:// only; set {INDEX_URL_ENV} (or index_url=) to an index "
                                "served, files included, over https:// with no such redirect")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _open(url: str, timeout: float):
    """The one place that opens a URL (tests monkeypatch it to simulate network failures)."""
    _check_scheme(url)
    return urllib.request.build_opener(_HttpsRedirectsOnly).open(url, timeout=timeout)


# ---------------------------------------------------------------------------------------- the index


def _unreachable(url: str, error: BaseException) -> IndexUnreachableError:
    return IndexUnreachableError(
        f"could not reach the model index at {url}: {error}; set {INDEX_URL_ENV} (or pass index_url=) to a "
        "reachable index, or use a local export (exported/<name> or a path)"
    )


def fetch_index(url: str, timeout: float = TIMEOUT_SECONDS) -> dict:
    """Reads and validates the index at `url` (base URL or `.../index.json`); returns the parsed JSON."""
    index_file, _ = split_index_url(url)
    try:
        with _open(index_file, timeout) as response:
            raw = response.read(MAX_INDEX_BYTES + 1)
    except (ValueError, DownloadError):  # a refused URL or redirect says so itself
        raise
    except (OSError, http.client.HTTPException) as error:  # URLError, HTTPError, timeouts, refused, DNS
        raise _unreachable(index_file, error) from error
    if len(raw) > MAX_INDEX_BYTES:
        raise ModelIndexError(f"model index at {index_file} is larger than {MAX_INDEX_BYTES} bytes")
    try:
        index = json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise ModelIndexError(f"model index at {index_file} is not valid JSON: {error}") from error
    if not isinstance(index, dict) or index.get("format_version") != INDEX_FORMAT_VERSION:
        raise ModelIndexError(f"model index at {index_file} is not an sslzoo index with format_version "
                              f"{INDEX_FORMAT_VERSION}")
    if not isinstance(index.get("models"), dict):
        raise ModelIndexError(f"model index at {index_file} has no 'models' table")
    return index


def check_name(name: str) -> str:
    """A model name must be a plain folder name (it becomes `<cache>/<name>` and a URL segment)."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ModelIndexError(f"invalid model name {name!r}: use letters, digits, '.', '_' and '-' "
                              "(not starting with '.')")
    return name


def _safe_parts(relative: str, name: str) -> tuple:
    parts = PurePosixPath(relative)
    if (not isinstance(relative, str) or "\\" in relative or parts.is_absolute() or not parts.parts
            or any(part in ("..", ".") for part in parts.parts)):
        raise ModelIndexError(f"index entry '{name}' lists an unsafe path {relative!r}")
    return parts.parts


def _checked_files(name: str, entry: Mapping) -> Dict[str, dict]:
    """The entry's file table, validated: safe paths, 64-hex sha256, integer size, includes the card."""
    files = entry.get("files") if isinstance(entry, Mapping) else None
    if not isinstance(files, dict) or not files:
        raise ModelIndexError(f"index entry '{name}' has no 'files' table")
    card = entry.get("model_card", CARD_NAME)
    if card != CARD_NAME or CARD_NAME not in files:
        raise ModelIndexError(f"index entry '{name}' must list its model card as '{CARD_NAME}'")
    for relative, spec in files.items():
        _safe_parts(relative, name)
        if (not isinstance(spec, dict) or not isinstance(spec.get("sha256"), str)
                or not SHA256_HEX.match(spec["sha256"]) or not isinstance(spec.get("size"), int)
                or isinstance(spec.get("size"), bool) or spec["size"] < 0):
            raise ModelIndexError(f"index entry '{name}' file {relative!r} needs a sha256 (64 hex digits) "
                                  "and an integer size")
    return files


# ------------------------------------------------------------------------------------------ download


def _file_url(model_base: str, relative: str) -> str:
    return f"{model_base}/{urllib.parse.quote(relative)}"


def _download_file(url: str, target: Path, relative: str, expected_sha: str, expected_size: int,
                   timeout: float) -> None:
    """Streams `url` to a `.part` beside `target`, renamed to `target` only if size and sha256 match."""
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.parent / f".{target.name}.part"
    digest = hashlib.sha256()
    size = 0
    try:
        try:
            with _open(url, timeout) as response, open(part, "wb") as stream:
                while True:
                    # Never read past the announced size + 1: a server cannot fill the disk.
                    chunk = response.read(min(_CHUNK, expected_size + 1 - size))
                    if not chunk:
                        break
                    digest.update(chunk)
                    stream.write(chunk)
                    size += len(chunk)
                    if size > expected_size:
                        break
        except (ValueError, DownloadError):  # a refused URL or redirect: not worth a retry
            raise
        except (OSError, http.client.HTTPException) as error:
            raise DownloadError(f"download of '{relative}' from {url} failed after {size} of {expected_size} "
                                f"bytes: {error}. Nothing was cached; try again.") from error
        actual = digest.hexdigest()
        if actual != expected_sha or size != expected_size:
            raise ArtifactIntegrityError(
                f"sha256 mismatch for '{relative}' downloaded from {url}: index says {expected_sha} "
                f"({expected_size} bytes), got {actual} ({size}{'+' if size > expected_size else ''} bytes). "
                "Nothing was cached."
            )
        os.rename(part, target)
    finally:
        if part.exists():
            part.unlink()


def _newest_mtime(path: Path) -> float:
    """The latest modification time in a tree: a live download keeps writing its `.part` file."""
    newest = path.lstat().st_mtime
    for directory, folders, files in os.walk(path):
        for entry in folders + files:
            try:
                newest = max(newest, os.lstat(os.path.join(directory, entry)).st_mtime)
            except FileNotFoundError:  # renamed or removed while we looked
                pass
    return newest


def remove_stale_temporaries(cache: Optional[Path] = None,
                             max_age: float = STALE_TEMPORARY_SECONDS) -> List[Path]:
    """Removes the cache's `.<name>.tmp-*` leftovers untouched for `max_age` seconds; returns them.

    A download cleans up after itself, except when it is killed outright (SIGKILL, power loss). A recent
    temporary may be another process's download in progress, so only old ones go.
    """
    cache = cache_root() if cache is None else Path(cache)
    if not cache.is_dir():
        return []
    removed = []
    now = time.time()
    for entry in sorted(cache.iterdir()):
        if not (entry.name.startswith(".") and ".tmp-" in entry.name):
            continue
        try:
            if now - _newest_mtime(entry) < max_age:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        except FileNotFoundError:  # another process removed or published it meanwhile
            continue
        except OSError as error:
            logger.warning("could not remove the stale download temporary %s: %s", entry, error)
            continue
        logger.info("removed %s, left by a download that was killed", entry)
        removed.append(entry)
    return removed


def download_model(name: str, entry: Mapping, base_url: str, *, cache: Optional[Path] = None,
                   timeout: float = TIMEOUT_SECONDS) -> Path:
    """Downloads one index entry into `<cache>/<name>` atomically and verified; returns that folder.

    Every file is checked against the index (size + sha256) as it arrives, then the whole folder against
    the model card it carries; only then is the folder renamed into the cache. If another process
    published the same model meanwhile, that copy is kept (and verified by the caller on load).
    """
    check_name(name)
    files = _checked_files(name, entry)
    source = model_url(name, entry, base_url)
    cache = cache_root() if cache is None else Path(cache)
    remove_stale_temporaries(cache)
    final = cache / name
    total = sum(spec["size"] for spec in files.values())
    logger.info("downloading %s (%d files, %.1f MB) from %s into %s", name, len(files), total / 1e6,
                source, final)
    started = time.perf_counter()
    try:
        with atomic_directory(final) as staging:
            for relative, spec in sorted(files.items()):
                target = staging.joinpath(*_safe_parts(relative, name))
                _download_file(_file_url(source, relative), target, relative, spec["sha256"],
                               spec["size"], timeout)
            # The card (itself hash-checked above) must agree with the index: same files, same hashes.
            verify_files(staging)
    except ExportExistsError:
        logger.info("%s appeared in the cache during the download; using that copy", final)
        return final
    logger.info("downloaded %s in %.1f s", name, time.perf_counter() - started)
    return final


# ------------------------------------------------------------------------------------- index writing

HEADLINE_FIELDS = ("method", "encoder", "dataset", "knn_top1", "linear_top1")


def index_entry(export_dir: Path) -> dict:
    """The index entry for one export folder, after verifying it against its own card."""
    export_dir = Path(export_dir)
    card = verify_files(export_dir)
    files = {relative: {"sha256": digest, "size": (export_dir / relative).stat().st_size}
             for relative, digest in sorted(card["files"].items())}
    files[CARD_NAME] = {"sha256": sha256_file(export_dir / CARD_NAME),
                        "size": (export_dir / CARD_NAME).stat().st_size}
    entry = {"files": files, "model_card": CARD_NAME}
    entry.update({key: card_field(card, key) for key in HEADLINE_FIELDS})
    shape = (card.get("input") or {}).get("shape")
    if isinstance(shape, list) and len(shape) == 4:
        entry["image_size"] = shape[1]
    features = (card.get("output") or {}).get("features")
    if isinstance(features, list) and features:
        entry["feature_dim"] = features[-1]
    return entry


def build_index(exports_dir: str | Path) -> dict:
    """An index for every export folder (with a model card) directly under `exports_dir`."""
    exports_dir = Path(exports_dir)
    if not exports_dir.is_dir():
        raise FileNotFoundError(f"'{exports_dir}' is not a folder of exports")
    models = {}
    for folder in sorted(exports_dir.iterdir()):
        if folder.name.startswith(".") or not (folder / CARD_NAME).is_file():
            continue
        check_name(folder.name)
        models[folder.name] = index_entry(folder)
    return {"format_version": INDEX_FORMAT_VERSION, "models": models}


def write_index(exports_dir: str | Path, output: str | Path) -> dict:
    """Builds the index for `exports_dir` and writes it to `output` atomically (temp file + rename)."""
    index = build_index(exports_dir)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    temp = output.parent / f".{output.name}.tmp-{os.getpid()}"
    try:
        temp.write_text(json.dumps(index, indent=2, sort_keys=True, allow_nan=False) + "\n")
        os.replace(temp, output)
    finally:
        if temp.exists():
            temp.unlink()
    return index


def cached_models(cache: Optional[Path] = None) -> Dict[str, Path]:
    """name -> folder for each (complete, published) model in the cache; temporaries are skipped."""
    cache = cache_root() if cache is None else Path(cache)
    if not cache.is_dir():
        return {}
    return {folder.name: folder for folder in sorted(cache.iterdir())
            if not folder.name.startswith(".") and (folder / CARD_NAME).is_file()}


def index_names(index: Mapping) -> List[str]:
    return sorted(index.get("models", {}))

