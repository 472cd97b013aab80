"""The model card (`model_card.json`): what an export is, how to feed it, and the sha256 of its files.

The card is the export's table of contents: `sslzoo.load` refuses an export whose files do not match the
hashes listed here (and one with files the card does not list), so a flipped byte or a swapped file is
caught before anything is deserialized.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import re
from pathlib import Path, PurePosixPath
from typing import Dict, Iterable, List, Mapping, Optional

from sslzoo.files import sha256_file
from sslzoo.portable import portable
from sslzoo.errors import ArtifactIntegrityError  # noqa: F401  (raised here)

CARD_NAME = "model_card.json"
SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
FORMAT_VERSION = 1
# Keys the exporter writes; a caller's card may not set them (a silent override would hide a mistake).
RESERVED_KEYS = ("input", "output", "signatures", "parity", "files", "format_version", "created_utc",
                 "sslzoo_version", "tflite", "onnx")


def check_card_input(card: Mapping) -> None:
    """Rejects a caller's card that is not a JSON object of plain data or that sets reserved keys."""
    if not isinstance(card, Mapping):
        raise TypeError(f"card must be a dict, got {type(card).__name__}")
    clashes = sorted(set(card) & set(RESERVED_KEYS))
    if clashes:
        raise ValueError(f"card sets keys the exporter writes itself: {', '.join(clashes)}")
    try:
        json.dumps(card, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise ValueError(f"card must be JSON-serializable plain data (no NaN): {error}") from error


def input_spec(image_size: int) -> dict:
    return {"name": "images", "shape": [None, image_size, image_size, 3], "dtype": "float32",
            "range": [0, 1], "color": "RGB"}


def file_hashes(root: str | Path, exclude: Iterable[str] = (CARD_NAME,)) -> Dict[str, str]:
    """`{posix relative path: sha256}` for every file under `root` except `exclude` (relative paths)."""
    root = Path(root)
    excluded = set(exclude)
    hashes = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        relative = path.relative_to(root).as_posix()
        if relative not in excluded:
            hashes[relative] = sha256_file(path)
    return hashes


def build_card(card: Mapping, *, image_size: int, feature_dim: int, signatures: List[dict],
               parity: dict, files: Dict[str, str], sslzoo_version: str) -> dict:
    """The caller's card plus the fields every export carries.

    Every absolute path in the caller's card (the run's config, its data path, the reproduce command) is
    recorded relative to the project root (`sslzoo.portable`): no card names the folders of the machine
    that wrote it.
    """
    full = portable(dict(card))
    full.update(
        {
            "input": input_spec(image_size),
            "output": {"features": [None, int(feature_dim)]},
            "signatures": signatures,
            "parity": parity,
            "files": files,
            "format_version": FORMAT_VERSION,
            "created_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "sslzoo_version": sslzoo_version,
        }
    )
    return full


def write_card(path: str | Path, card: Mapping) -> None:
    Path(path).write_text(json.dumps(card, indent=2, sort_keys=True, allow_nan=False) + "\n")


def check_sha256_pin(sha256: Optional[str]) -> Optional[str]:
    """A pinned card hash as lower-case hex; None (nothing pinned) stays None."""
    if sha256 is None:
        return None
    if not isinstance(sha256, str) or not SHA256_HEX.match(sha256.strip().lower()):
        raise ValueError(f"sha256 must be the 64 hex digits of an export's {CARD_NAME}, got {sha256!r}")
    return sha256.strip().lower()


def read_card(export_dir: str | Path, sha256: Optional[str] = None) -> dict:
    """Reads `<export_dir>/model_card.json` (json only; nothing in a card is executed).

    With `sha256` (lower-case hex, see `check_sha256_pin`) the card's bytes must hash to it; the card
    that is parsed is those same bytes, so a file swapped after the check is never the one used.
    """
    path = Path(export_dir) / CARD_NAME
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ArtifactIntegrityError(f"'{export_dir}' has no {CARD_NAME}; it is not an sslzoo export") from None
    if sha256 is not None:
        actual = hashlib.sha256(data).hexdigest()
        if actual != sha256:
            raise ArtifactIntegrityError(
                f"{path} has sha256 {actual}, but sha256= pins {sha256}: this is not the export you pinned. "
                "Get it again from its source; pin the new hash only if you trust whoever changed it."
            )
    try:
        card = json.loads(data)
    except (ValueError, UnicodeDecodeError) as error:
        raise ArtifactIntegrityError(f"{path} is not valid JSON: {error}") from error
    if not isinstance(card, dict) or not isinstance(card.get("files"), dict):
        raise ArtifactIntegrityError(f"{path} has no 'files' table of sha256 hashes")
    return card


def _safe_relative(relative: str, export_dir: Path) -> Path:
    """Resolves a card's relative path, refusing absolute paths and `..` (a card must not point outside)."""
    parts = PurePosixPath(relative)
    if parts.is_absolute() or ".." in parts.parts or not parts.parts:
        raise ArtifactIntegrityError(f"model card lists an unsafe path {relative!r} in '{export_dir}'")
    return export_dir.joinpath(*parts.parts)


def verify_files(export_dir: str | Path, card: Mapping | None = None) -> dict:
    """Checks every file listed in the card against its sha256; returns the card.

    Raises `ArtifactIntegrityError` naming the file for a mismatch, a missing file, or a file present in
    the export but not listed (hidden dot-files excepted), which could otherwise change what gets loaded.
    """
    export_dir = Path(export_dir)
    card = read_card(export_dir) if card is None else card
    listed = card["files"]
    for relative, expected in sorted(listed.items()):
        path = _safe_relative(relative, export_dir)
        if not path.is_file():
            raise ArtifactIntegrityError(f"'{relative}' listed in the model card is missing from '{export_dir}'")
        actual = sha256_file(path)
        if actual != expected:
            raise ArtifactIntegrityError(
                f"sha256 mismatch for '{relative}' in '{export_dir}': card says {expected}, file is {actual}"
            )
    for path in export_dir.rglob("*"):
        relative = path.relative_to(export_dir).as_posix()
        hidden = any(part.startswith(".") for part in path.relative_to(export_dir).parts)
        if path.is_file() and not hidden and relative != CARD_NAME and relative not in listed:
            raise ArtifactIntegrityError(f"'{relative}' in '{export_dir}' is not listed in the model card")
    return card


def card_field(card: Mapping, key: str):
    """A card fact, top level first, then under "metrics"; a {"name": ...} mapping gives its name."""
    value = card.get(key)
    if value is None and isinstance(card.get("metrics"), dict):
        value = card["metrics"].get(key)
    if isinstance(value, dict):
        value = value.get("name")
    return value
