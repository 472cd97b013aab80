"""How the command-line entry points report a failure: one line on stderr, a traceback only for a bug.

A user error (an `SslzooError`, broken YAML, a refused or full disk) is printed as one line naming the
problem and its fix, exit code 2 unless the command maps its class to another; `--debug` prints the
traceback above that line. Anything else is a bug and is raised with its traceback.
"""

from __future__ import annotations

import argparse
import errno
import sys
import traceback
from typing import Mapping, Optional, Tuple, Type

import yaml

from sslzoo.config import yaml_problem
from sslzoo.errors import SslzooError

USER_ERROR = 2

# Both commands that write (train.py, export.py) name where they write with --output.
_OS_FIXES = {
    errno.ENOSPC: "free space on that disk, or pass an --output on another one",
    errno.EDQUOT: "free space within your disk quota, or pass an --output on another disk",
    errno.EACCES: "fix its permissions, or use another path",
    errno.EPERM: "fix its permissions, or use another path",
    errno.EROFS: "pass an --output on a file system that is not read-only",
}
# TensorFlow's own file writers (checkpoints, TensorBoard logs, SavedModels) report an operating-system
# failure as an OpError whose message holds the C library's text.
_TF_OS_TEXTS = {errno.ENOSPC: "No space left on device", errno.EDQUOT: "Disk quota exceeded",
                errno.EACCES: "Permission denied", errno.EROFS: "Read-only file system"}


class OneLineParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line too (the full usage is one --help away)."""

    def error(self, message: str):
        self.exit(USER_ERROR, f"{self.prog}: error: {one_line(message)} (see --help)\n")


def one_line(text: str) -> str:
    # splitlines, not "\n": a form feed or a U+2028 inside a quoted value would break the line too.
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


def user_message(error: BaseException, also: Tuple[Type[BaseException], ...] = ()) -> Optional[str]:
    """The line a user reads for `error`, or None when it is a bug. `also`: further classes a command
    counts as user errors."""
    if isinstance(error, (SslzooError, *also)):
        text = str(error)
    elif isinstance(error, yaml.YAMLError):
        text = f"invalid YAML ({yaml_problem(error)}); fix the file or --set value it came from"
    elif isinstance(error, OSError):
        text = _os_message(error)
    else:
        code = _tf_os_errno(error)
        if code is None:
            return None
        text = f"{_TF_OS_TEXTS[code]} ({one_line(error.message)}); {_OS_FIXES[code]}"
    return one_line(text)


def _os_message(error: OSError) -> str:
    if error.errno is None:  # raised with a message of its own (e.g. FileNotFoundError("run folder lacks ..."))
        return str(error)
    path = f" '{error.filename}'" if error.filename else ""
    fix = _OS_FIXES.get(error.errno, "check that path")
    return f"{error.strerror or errno.errorcode.get(error.errno, error.errno)}{path}; {fix}"


def _tf_os_errno(error: BaseException) -> Optional[int]:
    tf = sys.modules.get("tensorflow")
    if tf is None or not isinstance(error, tf.errors.OpError):
        return None
    return next((code for code, text in _TF_OS_TEXTS.items() if text in error.message), None)


def report(error: BaseException, debug: bool = False, prefix: str = "error",
           codes: Optional[Mapping[Type[BaseException], int]] = None,
           also: Tuple[Type[BaseException], ...] = (),
           hints: Optional[Mapping[Type[BaseException], str]] = None) -> int:
    """Prints `error` as one line on stderr and returns the exit code: the first of `codes` whose class
    it is, else 2; `hints` adds a command's own advice for a class. A bug (see `user_message`) is raised
    again, with its traceback."""
    message = user_message(error, also)
    if message is None:
        raise error
    if debug:
        traceback.print_exception(error)
    hint = _first(hints, error, "")
    print(f"{prefix}: {message}" + (f" ({hint})" if hint else ""), file=sys.stderr)
    return _first(codes, error, USER_ERROR)


def _first(by_class: Optional[Mapping[Type[BaseException], object]], error: BaseException, default):
    return next((value for cls, value in (by_class or {}).items() if isinstance(error, cls)), default)
