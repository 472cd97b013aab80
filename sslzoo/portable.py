"""Paths as artifacts record them: never the absolute path of the machine that wrote them.

A model card travels (exported/, the cache, an index); the absolute path of the run folder or the data on
the training machine tells its reader nothing useful and names that machine's folders (and user). Cards
record each path relative to the project root instead: the checkout when the package runs from one
(where `train.py`, `zoo_configs/` and the reproduce commands live), else the working folder. A path outside
the root that shares a folder with it below `/` becomes `../...` from the root (`../shared/data/cifar10/train`);
one that shares nothing but `/` becomes `<external>/<its last part>`, since a relative path climbing to `/`
would be the absolute path in disguise.
"""

from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath
from typing import Any, Optional

EXTERNAL = "<external>"
# An absolute POSIX path inside a string: at its start or after a space, quote, '=', ':', ',' or '(' (so
# `data.path=/x`, `folder:/x`, "--output /x"), not after a word character, '.', '/' or '~' (relative paths,
# URLs' '//', 'images/s'); it ends at whitespace, a quote or ),;
_ABSOLUTE = re.compile(r"(?<![\w./~-])/(?!/)[^\s'\"(),;]*")


def project_root() -> Path:
    """The folder recorded paths are relative to: the checkout the package runs from, else `./`."""
    from sslzoo.settings import checkout_root

    return checkout_root() or Path.cwd()


def portable_path(path: str | os.PathLike, root: Optional[str | os.PathLike] = None) -> str:
    """`path` as an artifact may record it: unchanged when relative, else relative to `root` (see the module
    doc). POSIX separators."""
    text = os.fspath(path)
    if not os.path.isabs(text):
        return text
    root = os.path.abspath(os.fspath(root if root is not None else project_root()))
    absolute = os.path.normpath(text)
    if os.path.commonpath([absolute, root]) == os.path.dirname(os.sep):  # shares only "/" (or a drive)
        return f"{EXTERNAL}/{os.path.basename(absolute) or ''}".rstrip("/")
    return PurePosixPath(*Path(os.path.relpath(absolute, root)).parts).as_posix()


def portable_text(text: str, root: Optional[str | os.PathLike] = None) -> str:
    """Every absolute path inside `text` (a command line, `folder:/data/x`) made portable."""
    return _ABSOLUTE.sub(lambda match: portable_path(match.group(0), root) if match.group(0) != "/" else "/", text)


def portable(value: Any, root: Optional[str | os.PathLike] = None) -> Any:
    """A copy of plain JSON-like data (dicts, lists, strings) with every absolute path made portable."""
    root = os.path.abspath(os.fspath(root if root is not None else project_root()))
    if isinstance(value, str):
        return portable_text(value, root)
    if isinstance(value, dict):
        return {key: portable(item, root) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(portable(item, root) for item in value)
    return value
