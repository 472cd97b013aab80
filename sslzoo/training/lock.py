"""One process per run folder: an exclusive `flock` on `<run>/.lock`, held for the whole run.

The kernel drops a `flock` when its process dies however it dies (kill -9 included), so a lock that is
held belongs to a live process and a lock file nobody holds is stale and simply taken over. The file's
content (PID and command line of the holder) is only there to tell the refused process who has the run.

On release the holder deletes the lock file, and the run folder too when this process created it and
nothing else was written (a run refused after the lock, e.g. by a data error, leaves no trace). A
process that had the old file open may then lock a deleted file; it checks that the path still names
the file it locked and otherwise tries again on the new one.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Iterator, List

from sslzoo.errors import RunFolderInUseError

log = logging.getLogger(__name__)

LOCK_NAME = ".lock"
# The holder writes its PID just after it locks; a refused process waits this long for it to appear.
_HOLDER_WAIT_SECONDS = 1.0


@contextlib.contextmanager
def hold_run_folder(run_dir: str | Path, create: bool = True) -> Iterator[Path]:
    """Holds `run_dir` for this process: creates it (with `create`), locks it, yields the lock file.

    Raises:
        RunFolderInUseError: a live process holds the folder; the message names its PID and command.
    """
    run_dir = Path(run_dir)
    created = _missing_folders(run_dir) if create else []
    try:
        fd = _acquire(run_dir, create)
    except BaseException:
        _remove_empty(created)
        raise
    try:
        yield run_dir / LOCK_NAME
    finally:
        _release(fd, run_dir, created)


def _missing_folders(run_dir: Path) -> List[Path]:
    """`run_dir` and those of its parents that do not exist yet, deepest first."""
    missing = []
    for folder in (run_dir, *run_dir.parents):
        if folder.exists():
            break
        missing.append(folder)
    return missing


def _acquire(run_dir: Path, create: bool) -> int:
    path = run_dir / LOCK_NAME
    while True:
        if create:
            run_dir.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except FileNotFoundError:
            if not create:
                raise
            continue  # a holder leaving removed the empty folder between our mkdir and open
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise RunFolderInUseError(
                f"run folder '{run_dir}' is in use by {holder}; wait for that run to end "
                "(rerunning the same command then resumes it), or pass another --output"
            ) from None
        if _names_file(path, fd):
            break
        os.close(fd)  # we locked a lock file its holder had just deleted
    previous = _read(fd)
    if previous:
        log.info("taking over %s: the process that left it (%s) has ended", path, _describe(previous))
    os.ftruncate(fd, 0)
    command = shlex.join(getattr(sys, "orig_argv", sys.argv))
    os.pwrite(fd, f"{os.getpid()}\n{command}\n".encode("utf-8", "backslashreplace"), 0)
    return fd


def _names_file(path: Path, fd: int) -> bool:
    try:
        on_disk = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (on_disk.st_dev, on_disk.st_ino) == (held.st_dev, held.st_ino)


def _read(fd: int) -> str:
    return os.pread(fd, 64 * 1024, 0).decode("utf-8", "replace")


def _holder(fd: int) -> str:
    deadline = time.monotonic() + _HOLDER_WAIT_SECONDS
    content = _read(fd)
    while not content and time.monotonic() < deadline:
        time.sleep(0.05)
        content = _read(fd)
    return _describe(content) if content else "another process (it has not written its PID yet)"


def _describe(content: str) -> str:
    pid, _, command = content.partition("\n")
    # Kept to one line: a command line may hold newlines inside quoted arguments.
    command = command.strip().replace("\n", "\\n")
    return f"PID {pid.strip()} ({command})" if command else f"PID {pid.strip()}"


def _release(fd: int, run_dir: Path, created: List[Path]) -> None:
    # Deleted while still locked, so no process can lock this file and believe it holds the folder.
    with contextlib.suppress(FileNotFoundError):
        os.unlink(run_dir / LOCK_NAME)
    os.close(fd)
    _remove_empty(created)


def _remove_empty(folders: List[Path]) -> None:
    for folder in folders:
        try:
            folder.rmdir()  # only while empty: anything the run wrote keeps its folder
        except OSError:
            break
