"""A quiet TensorFlow start-up for the commands: their first output is sslzoo's, not TensorFlow's chatter.

Importing the TensorFlow 2.21 pip wheel on a machine without an NVIDIA driver writes, before a single line
of ours:
- `WARNING: All log messages before absl::InitializeLog() is called are written to STDERR`, then INFO
  lines (`port.cc` oneDNN notice, `cudart_stub.cc` "Could not find cuda drivers", `cpu_feature_guard.cc`
  and its "To enable the following instructions" line), twice: two of TensorFlow's shared libraries log
  through their own copy of absl, and absl writes everything to stderr until `absl::InitializeLog()` is
  called, which nothing in the wheel calls. `TF_CPP_MIN_LOG_LEVEL` does not reach these lines (it filters
  TensorFlow's logging after start-up only): absl itself prints the first line above to say so.
- `E... cuda_platform.cc] failed call to cuInit: ... (303)` when the devices are first listed: the CUDA
  build of TensorFlow probing for a driver that is not there. `TF_CPP_MIN_LOG_LEVEL=3` hides it, but also
  every other C++ error; `CUDA_VISIBLE_DEVICES` does not (tried: "" and -1 still print it).

`quiet_tensorflow()` imports TensorFlow and lists the devices with file descriptor 2 sent to a temporary
file, then writes back every captured line except exactly those: INFO lines and absl's notice when
`TF_CPP_MIN_LOG_LEVEL` is 1 or more (sslzoo's default; the level TensorFlow applies to its later lines),
WARNING lines at 2 or more, ERROR lines at 3, and the cuInit line only when the machine has no NVIDIA driver
at all (no `/proc/driver/nvidia`, `/dev/nvidiactl` or WSL's `/dev/dxg`), where it is the answer to "is
there a GPU?" and not a fault. With a driver present a failing cuInit is a real problem and is shown, and
no device is ever hidden from TensorFlow. Anything else (a Python warning, an import error, TensorFlow's
own messages) is shown as it came, in order, after the import. `TF_CPP_MIN_LOG_LEVEL=0` shows everything
as it comes (nothing is captured). The CPU-only wheel `tensorflow-cpu` never probes for CUDA, so the
cudart/cuInit lines are not printed at all there.

The Python side: absl's Python logger (`INFO absl: ...` through the commands' INFO logging) is set to
WARNING.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
from typing import Iterator, List

LOG_LEVEL_ENV = "TF_CPP_MIN_LOG_LEVEL"
DEFAULT_LOG_LEVEL = "1"  # TensorFlow's INFO lines hidden, its warnings and errors kept
_ABSL_NOTICE = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
# An absl log line: severity letter, MMDD, time (before absl is initialised, seconds since the epoch: the
# "00:00:1796032206.82" of "I0000 00:00:1796032206.822019   25191 port.cc:153] ..."), thread id, file:line].
_LOG_LINE = re.compile(r"^([IWEF])\d{4} [\d:.]+\s+\d+ [^\]\s]+:\d+\] ")
# The continuation line of cpu_feature_guard's two-line INFO message.
_CONTINUATION = "To enable the following instructions:"
_NO_DRIVER_CUINIT = re.compile(r"cuda_platform\.cc:\d+\] failed call to cuInit")
_SEVERITY = {"I": 1, "W": 2, "E": 3}
_NVIDIA_DRIVER_PATHS = ("/proc/driver/nvidia/version", "/dev/nvidiactl", "/dev/dxg")


def log_level() -> int:
    """TensorFlow's C++ log level in effect (TF_CPP_MIN_LOG_LEVEL; 0 when unset or not a number)."""
    try:
        return int(os.environ.get(LOG_LEVEL_ENV, "0"))
    except ValueError:
        return 0


def nvidia_driver_present() -> bool:
    """Whether the machine has an NVIDIA driver TensorFlow could use (then GPU messages are never hidden)."""
    return any(os.path.exists(path) for path in _NVIDIA_DRIVER_PATHS)


def start_up_noise(lines: List[str], level: int, driver: bool) -> List[bool]:
    """For each captured line, whether it is known start-up noise at this log level (see the module doc)."""
    noise = []
    previous = False
    for line in lines:
        text = line.rstrip("\r\n")
        match = _LOG_LINE.match(text)
        if text == _ABSL_NOTICE:
            dropped = level >= 1
        elif match and _NO_DRIVER_CUINIT.search(text):
            dropped = level >= 3 or (level >= 1 and not driver)
        elif match:
            dropped = level >= _SEVERITY.get(match.group(1), 99)
        else:
            dropped = previous and text.startswith(_CONTINUATION)
        noise.append(dropped)
        previous = dropped
    return noise


@contextlib.contextmanager
def _filtered_stderr(level: int) -> Iterator[None]:
    """Captures file descriptor 2 (C++ and Python alike) and writes back all but the start-up noise."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, AttributeError, ValueError):  # no real stderr (embedded interpreter): leave it be
        yield
        return
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            try:
                sys.stderr.flush()
            except (OSError, ValueError):
                pass
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            lines = capture.read().decode("utf-8", errors="replace").splitlines(keepends=True)
            noise = start_up_noise(lines, level, nvidia_driver_present())
            kept = "".join(line for line, dropped in zip(lines, noise) if not dropped)
            if kept:
                sys.stderr.write(kept)
                sys.stderr.flush()


def quiet_tensorflow() -> None:
    """Imports TensorFlow and lists its devices without the start-up noise; a no-op once TF is imported.

    Sets `TF_CPP_MIN_LOG_LEVEL=1` unless the environment sets it (then the environment's level applies to
    the filtering too) and absl's Python logger to WARNING.
    """
    logging.getLogger("absl").setLevel(logging.WARNING)
    if "tensorflow" in sys.modules:
        return
    os.environ.setdefault(LOG_LEVEL_ENV, DEFAULT_LOG_LEVEL)
    level = log_level()
    context = _filtered_stderr(level) if level > 0 else contextlib.nullcontext()
    with context:
        import tensorflow as tf

        tf.config.list_physical_devices()  # CUDA is probed here (cuInit), not at import
