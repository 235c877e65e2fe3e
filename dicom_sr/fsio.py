"""All-or-nothing file writes: the one helper every layer uses.

A file is written to a temporary ``.<name>.<host>-<pid>-<random>.part`` name in its own folder,
flushed and fsynced, renamed over the final name (atomic on POSIX and Windows), and the folder
is fsynced so the rename itself survives a power cut. A crash leaves the whole file or none of
it under the final name; a part left by a killed writer names its writer, so a cleaner can tell
it from one being written right now (:data:`PART_NAME`).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

__all__ = [
    "PART_NAME",
    "atomic_write",
    "fsync_dir",
    "part_name",
    "this_host",
    "write_bytes",
    "write_json",
]

_HOST = re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:32] or "host"

#: A temporary name made by :func:`atomic_write`; ``host`` and ``pid`` name its writer.
PART_NAME = re.compile(r"^\..+\.(?P<host>[A-Za-z0-9]+)-(?P<pid>\d+)-[0-9a-f]{8}\.part$")


def this_host() -> str:
    """The host part that :func:`atomic_write` puts in its temporary names."""
    return _HOST


def fsync_dir(folder: str | os.PathLike[str]) -> None:
    """Flush a folder's entries (a rename in it) to disk."""
    if os.name != "posix":  # pragma: no cover - directories cannot be opened on Windows
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def part_name(path: Path) -> Path:
    """The temporary name of ``path`` while it is written: it names this host and process."""
    return path.with_name(f".{path.name}.{_HOST}-{os.getpid()}-{secrets.token_hex(4)}.part")


def atomic_write(
    path: str | os.PathLike[str],
    write: Callable[[BinaryIO], None],
    *,
    check: Callable[[Path], None] | None = None,
) -> int:
    """Create or replace ``path`` all or nothing; return the number of bytes written.

    ``write(fh)`` fills the open temporary file. ``check(temp_path)`` runs on the complete
    temporary file before the rename: whatever it raises leaves nothing under ``path`` (and no
    temporary file). Exceptions, :class:`OSError` included, propagate unchanged: callers turn
    them into their own errors (a :class:`~dicom_sr.errors.WriteError`, an input refusal).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = part_name(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            size = fh.tell()
            os.fsync(fh.fileno())
        if check is not None:
            check(tmp)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    fsync_dir(path.parent)
    return size


def write_bytes(
    path: str | os.PathLike[str], data: bytes, *, check: Callable[[Path], None] | None = None
) -> int:
    """:func:`atomic_write` of ``data``."""
    return atomic_write(path, lambda fh: fh.write(data), check=check)


def write_json(path: str | os.PathLike[str], data: Any) -> int:
    """:func:`atomic_write` of ``data`` as indented JSON (non-JSON values as ``str``)."""
    text = json.dumps(data, indent=2, default=str).encode()
    return write_bytes(path, text)
