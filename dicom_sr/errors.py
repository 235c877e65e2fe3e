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
turns it into that item's failure with :func:`describe` (``ExceptionType: message``), logs the
traceback at debug level, and goes on. Only bad options and an unusable ``--out`` end a run.
"""

from __future__ import annotations

import os

__all__ = [
    "DicomSrError",
    "InputError",
    "WriteError",
    "Cancelled",
    "MissingExtra",
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


class MissingExtra(RuntimeError):
    """A command needs an optional dependency that is not installed; the message says which
    extra to install. Not about any input: the command stops before doing work."""


class Cancelled(DicomSrError):
    """The caller asked the work in hand to stop; it is neither done nor failed."""


def describe(exc: BaseException) -> str:
    """One line for a failure: our own errors as their message, anything else as
    ``ExceptionType: message`` (the traceback belongs in the debug log, not the summary)."""
    if isinstance(exc, DicomSrError):
        return str(exc)
    text = " ".join(str(exc).split()) or "(no message)"
    return f"{type(exc).__name__}: {text}"
