"""Files written whole or not at all, and their hashes: the TensorFlow-free base every layer writes through.

`atomic_write(path, write)` writes one file through a temporary sibling and a rename; `atomic_directory`
does the same for a folder. A crash, an exception or a Ctrl-C at any point leaves either the previous
file or folder at the destination or the new one, never a half-written one. The temporary is a hidden
sibling (`.<name>.tmp-<random>`) so it is on the same file system as the destination (rename is atomic
only within one file system) and so zoo listings, which skip dot-names, never see it.

Replacing an existing folder (`force=True`) takes two renames: old -> `.<name>.old-<random>`, new -> name.
POSIX has no portable "swap two directories" call, so a crash exactly between those two renames leaves
no folder at the destination but the complete old one beside it under `.<name>.old-*` (recoverable by
hand); it still never leaves a partial one.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterator

from sslzoo.errors import ExportExistsError

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in chunks so large exports do not need to fit in memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fsync_tree(root: str | Path) -> None:
    """Flushes every file and folder under `root` to disk, so the rename publishes durable data."""
    root = Path(root)
    for directory, _, files in os.walk(root):
        for name in files:
            with open(os.path.join(directory, name), "rb") as stream:
                os.fsync(stream.fileno())
        _fsync_dir(Path(directory))


def _fsync_dir(directory: Path) -> None:
    # Directory fsync makes a rename durable; some file systems refuse it, which only costs durability.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _refuse_existing(final: Path) -> None:
    raise ExportExistsError(
        f"'{final}' already exists; refusing to overwrite an existing export. "
        "Pass --force (force=True) to replace it atomically."
    )


def _remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
    if path.exists():  # rmtree swallowed an error; say so rather than hide a leftover
        logger.warning("could not remove temporary folder %s", path)


def _publish(temp: Path, final: Path, force: bool) -> None:
    """Renames `temp` to `final`; with `force`, moves an existing `final` aside first and deletes it last."""
    if not final.exists():
        # os.rename onto an existing non-empty folder fails (ENOTEMPTY/EEXIST), so an export that
        # appeared since the first check is still never overwritten silently.
        try:
            os.rename(temp, final)
        except OSError as error:
            if final.exists():
                _refuse_existing(final)
            raise error
        return
    if not force:
        _refuse_existing(final)
    aside = final.parent / f".{final.name}.old-{secrets.token_hex(4)}"
    os.rename(final, aside)
    try:
        os.rename(temp, final)
    except BaseException:
        os.rename(aside, final)  # put the previous good export back
        raise
    _fsync_dir(final.parent)
    _remove(aside)


@contextlib.contextmanager
def atomic_directory(final: str | Path, *, force: bool = False) -> Iterator[Path]:
    """Yields an empty temporary folder; on success it becomes `final`, on any error it is removed.

    Args:
        final: the destination folder. Its parent is created if missing.
        force: replace an existing `final` (still atomically). Without it an existing `final` raises
            `ExportExistsError` before any work is done.
    """
    final = Path(final).absolute()
    if final.exists() and not force:
        _refuse_existing(final)  # fail fast, before the caller spends minutes exporting
    final.parent.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    # mkdtemp makes the folder 0700; an export must be readable like any other folder (e.g. by a TF
    # Serving process running as another user), so apply the normal umask-derived mode.
    os.chmod(temp, 0o777 & ~_current_umask())
    try:
        yield temp
        fsync_tree(temp)
        _publish(temp, final, force)
        _fsync_dir(final.parent)
    except BaseException:
        # BaseException: a KeyboardInterrupt mid-export must not leave a temp folder behind either.
        _remove(temp)
        raise


def atomic_write(path: str | Path, write: Callable[[Path], None], suffix: str = "") -> Path:
    """Calls `write(temp_path)` on a temporary file beside `path`, then renames it into place.

    A crash leaves either the old file or the new one at `path`, never a partial file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or path.suffix, dir=path.parent)
    os.close(fd)
    os.unlink(tmp)  # some writers (Keras) refuse to write over an existing file
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text))
