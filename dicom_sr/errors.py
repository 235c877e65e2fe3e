"""The error model: what can go wrong with one item, and how a front end reports it.

Two families, and only these, leave the layers below the front ends:

* :class:`InputError`: *this input is unusable* (not DICOM, truncated, a tag out of range, no
  decoder...). The message names the file and, where there is one, the tag, and says what was
  expected, so a user can act on it. The item is skipped; the run goes on.
* :class:`WriteError`: *this derived instance could not be written* (disk full, permissions,
  a path the file system refuses). The instance is failed; the run goes on.

:class:`Cancelled` says that the caller asked the work to stop (a node shutting down, a batch
lease lost); the series is neither done nor failed and can be picked up again.

Anything else raised while one item is handled is a bug or an environment fault: the front end
turns it into that item's failure with :func:`describe` (``ExceptionType: message``) and goes on.
Only bad options and an unusable ``--out`` end a run.

Every exception that dicom-sr raises on purpose derives from :class:`DicomSrError` (some also
from a builtin, e.g. :class:`~dicom_sr.config.ConfigError` is a :class:`ValueError`), so a
library user can catch "anything dicom-sr raised".

:func:`classify` tells the front ends that keep attempt counts (the node, batch) what a failure
means for a retry: :data:`CANCELLED` (we stopped it: requeue, no attempt used),
:data:`PERMANENT` (an input error or a bug: a retry gives the same result, fail at once and log
the traceback at ERROR) or :data:`TRANSIENT` (a lost worker, I/O, a destination that is down:
retry with back-off).
"""

from __future__ import annotations

import os

__all__ = [
    "DicomSrError",
    "InputError",
    "WriteError",
    "Cancelled",
    "MissingExtra",
    "Transient",
    "CANCELLED",
    "PERMANENT",
    "TRANSIENT",
    "classify",
    "describe",
]


class DicomSrError(Exception):
    """Base of the errors that dicom-sr raises on purpose for one item."""


class InputError(DicomSrError):
    """An input (file, series, DICOMDIR record) is unusable: skip it, say why.

    Parameters
    ----------
    path : path-like
        The input file (or folder, DICOMDIR) the problem is in.
    reason : str
        What is wrong and what was expected, e.g. "NumberOfFrames (0028,0008) is 0 but the
        Pixel Data holds 6 frames".
    tag : str, optional
        The attribute concerned, as ``Keyword (gggg,eeee)``.
    """

    def __init__(self, path: str | os.PathLike[str], reason: str, *, tag: str | None = None):
        self.path = str(path)
        self.reason = reason
        self.tag = tag
        super().__init__(f"{self.path}: {reason}")


class WriteError(DicomSrError):
    """A derived instance could not be written (disk full, permissions, name too long...).

    Parameters
    ----------
    path : path-like
        The output path that could not be written.
    reason : str
        What failed, e.g. "No space left on device (errno 28)".
    source : path-like, optional
        The source instance it was derived from.
    disk_full : bool
        True when the cause is a full disk or quota (a node answers 0xA700 for that).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        reason: str,
        *,
        source: str | os.PathLike[str] | None = None,
        disk_full: bool = False,
    ):
        self.path = str(path)
        self.reason = reason
        self.source = None if source is None else str(source)
        self.disk_full = disk_full
        super().__init__(f"{self.path}: {reason}")

    @classmethod
    def from_os_error(
        cls,
        path: str | os.PathLike[str],
        exc: OSError,
        *,
        source: str | os.PathLike[str] | None = None,
    ) -> WriteError:
        """Wrap an :class:`OSError` raised while writing ``path``: a plain reason, no traceback."""
        import errno

        full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
        reason = f"{exc.strerror or exc} (errno {exc.errno})" if exc.errno else str(exc)
        return cls(path, reason, source=source, disk_full=full)


class MissingExtra(DicomSrError, RuntimeError):
    """A command needs an optional dependency that is not installed; the message says which
    extra to install. Not about any input: the command stops before doing work."""


class Cancelled(DicomSrError):
    """The caller asked the work in hand to stop; it is neither done nor failed."""


class Transient(DicomSrError):
    """A failure that a later attempt may cure (a destination down, a worker lost); raise it,
    or a subclass, to ask for a retry with back-off."""


#: Failure kinds returned by :func:`classify`.
CANCELLED = "cancelled"
PERMANENT = "permanent"
TRANSIENT = "transient"

# Exception type names, from libraries we do not import here, that mean "the worker went away".
_LOST_WORKER = {"BrokenProcessPool", "KilledWorker", "CommClosedError"}


def classify(exc: BaseException) -> str:
    """What a failure means for a retry: :data:`CANCELLED`, :data:`PERMANENT` or :data:`TRANSIENT`.

    Input errors and bugs (``TypeError``, ``KeyError``... anything not listed below) are
    permanent: the same code on the same input fails the same way. Cancellation, write errors,
    other :class:`OSError`, :class:`MemoryError`, :class:`TimeoutError`, a lost worker
    process and :class:`Transient` are worth another attempt.
    """
    if isinstance(exc, Cancelled):
        return CANCELLED
    if isinstance(exc, InputError):
        return PERMANENT
    if isinstance(exc, (Transient, WriteError, OSError, MemoryError, TimeoutError)):
        return TRANSIENT
    if any(cls.__name__ in _LOST_WORKER for cls in type(exc).__mro__):
        return TRANSIENT
    return PERMANENT


def describe(exc: BaseException) -> str:
    """One line for a failure: our own errors as their message, anything else as
    ``ExceptionType: message`` (the traceback belongs in the debug log, not the summary)."""
    if isinstance(exc, DicomSrError):
        return str(exc)
    text = " ".join(str(exc).split()) or "(no message)"
    return f"{type(exc).__name__}: {text}"
