"""Every error sslzoo raises for a user to read derives from `SslzooError`.

The command-line entry points catch `SslzooError` and print its one-line message; anything else is a
bug and keeps its traceback. Each class also derives from the built-in exception a caller would
expect (`ValueError` for bad values, `LookupError` for unknown names, ...), so existing `except`
clauses keep working.
"""

from __future__ import annotations


class SslzooError(Exception):
    """Base of every error whose message tells the user the problem and the fix."""


class ConfigError(SslzooError, ValueError):
    """A config key is unknown, or its value has the wrong type or is out of range."""


class DataError(SslzooError, ValueError):
    """The training or evaluation data cannot be used as configured."""


class DatasetNotPreparedError(DataError):
    """A TFDS data set is not prepared in its data_dir, and the machine cannot download it."""


class RunFolderInUseError(SslzooError, RuntimeError):
    """Another live process holds the run folder's lock (two runs in one folder would mix their files)."""


class TrainingDivergedError(SslzooError, RuntimeError):
    """The loss became NaN or infinite; the run folder keeps the last good checkpoint."""


class ExportParityError(SslzooError, AssertionError):
    """An exported artifact's outputs differ from the Keras encoder's beyond the allowed tolerance."""


class DisallowedOpsError(SslzooError, ValueError):
    """A graph holds ops that read or write files or print (refused in anything we ship or load)."""


class ExportExistsError(SslzooError, FileExistsError):
    """The export folder exists already; exports are never overwritten silently."""


class AccuracyDropError(SslzooError, RuntimeError):
    """A quantised TFLite variant loses more accuracy than allowed."""


class TFLiteParityError(SslzooError, RuntimeError):
    """A TFLite file's outputs differ from the Keras encoder's beyond the allowed tolerance."""


class ArtifactIntegrityError(SslzooError, RuntimeError):
    """An artifact's files do not match the hashes its model card lists."""


class ModelNotFoundError(SslzooError, LookupError):
    """No shipped, cached or indexed export has this name or path."""


class UnsafeModelError(SslzooError, ValueError):
    """An artifact would run code on load (a Lambda layer, an unregistered class) and is refused."""


class ModelIndexError(SslzooError, ValueError):
    """The remote model index is malformed or names an unsafe path."""


class IndexUnreachableError(SslzooError, ConnectionError):
    """The remote model index cannot be fetched."""


class DownloadError(SslzooError, ConnectionError):
    """A download failed or its bytes did not match the expected hash."""


class ReportError(SslzooError, RuntimeError):
    """A run folder lacks what its report needs."""


class SettingsMismatchError(SslzooError, ValueError):
    """A resumed benchmark was started with different settings."""
