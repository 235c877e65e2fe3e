"""Write derived instances safely and keep the manifest that says what is done.

Files go to ``OUT/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm``. Each is
written to a temporary ``.<name>.<host>-<pid>-<random>.part`` file in the same folder, flushed
to disk, then renamed over the final name (atomic on POSIX and Windows), and the folder is
flushed too: a crash leaves either the complete file or none under the final name. A part left
by a killed writer names its writer, so :func:`remove_stale_parts` can tell it from one being
written right now.

``OUT/manifest.jsonl`` is the resume record: every written instance is recorded with its size
and every failure with its reason. :meth:`Manifest.done` answers from the manifest and a
``stat`` of the output, never by reading the DICOM back. :func:`series_lock` keeps two runs on
one ``OUT`` from computing the same derived series at once.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from filelock import FileLock
from pydicom import Dataset, dcmread
from pydicom.encaps import generate_frames

from dicom_sr.dicom.inspection import valid_uid
from dicom_sr.errors import WriteError
from dicom_sr.fsio import PART_NAME, atomic_write, this_host

__all__ = [
    "LOCKS_DIR",
    "MANIFEST_NAME",
    "Manifest",
    "instance_path",
    "output_path",
    "read_complete",
    "remove_stale_parts",
    "series_lock",
    "write_atomic",
]

logger = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.jsonl"
#: Folder under ``OUT`` that holds the lock files (one per derived series, one for the manifest).
LOCKS_DIR = ".locks"


def instance_path(
    out_dir: str | os.PathLike[str], study_uid: str, series_uid: str, sop_uid: str
) -> Path:
    """``out_dir/<study_uid>/<series_uid>/<sop_uid>.dcm``.

    Each part must pass :func:`~dicom_sr.dicom.inspection.valid_uid`, else
    :class:`~dicom_sr.errors.InputError` naming ``out_dir`` and the attribute.
    """
    keywords = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
    study, series, sop = (
        valid_uid(uid, keyword, out_dir)
        for keyword, uid in zip(keywords, (study_uid, series_uid, sop_uid), strict=True)
    )
    return Path(out_dir, study, series, f"{sop}.dcm")


def output_path(out_dir: str | os.PathLike[str], ds: Dataset) -> Path:
    """``out_dir/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm`` of ``ds``."""
    return instance_path(
        out_dir,
        str(ds.get("StudyInstanceUID", "") or ""),
        str(ds.get("SeriesInstanceUID", "") or ""),
        str(ds.get("SOPInstanceUID", "") or ""),
    )


def _write_error(path: Path, exc: OSError) -> WriteError:
    """A WriteError with the OS's reason: pydicom re-raises a failed element write (ENOSPC
    included) as an OSError without errno whose message holds the element, so the original
    error is looked for in the chain first."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno:
            return WriteError.from_os_error(path, seen)
        seen = seen.__cause__ or seen.__context__
    first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return WriteError(path, first_line[:300])


def write_atomic(ds: Dataset, path: str | os.PathLike[str]) -> int:
    """Write ``ds`` as a DICOM file (preamble + File Meta) at ``path``, all or nothing.

    Returns the number of bytes written. The file gets the mode the umask gives. Any
    :class:`OSError` (disk full, permissions, a name too long) becomes a
    :class:`~dicom_sr.errors.WriteError` that names ``path``; the temporary file is removed.
    """
    path = Path(path)
    try:
        size = atomic_write(path, lambda fh: ds.save_as(fh, enforce_file_format=True))
    except OSError as exc:
        raise _write_error(path, exc) from None
    logger.debug("wrote %s (%d bytes)", path, size)
    return size


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    except OSError:  # pragma: no cover - e.g. Windows without that pid
        return False
    return True


def remove_stale_parts(out_dir: str | os.PathLike[str], *, max_age: float = 86400.0) -> int:
    """Remove the ``.part`` files under ``out_dir`` whose writer is gone; return how many.

    A part written on this host is stale when its process no longer exists. A part from
    another host (a shared ``OUT``), or without a writer in its name (older versions), is
    stale when it has not changed for ``max_age`` seconds.
    """
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return 0
    removed = 0
    now = time.time()
    for folder, dirs, files in os.walk(out_dir):
        dirs[:] = [d for d in dirs if d != LOCKS_DIR]
        for name in files:
            if not (name.startswith(".") and name.endswith(".part")):
                continue
            part = Path(folder, name)
            match = PART_NAME.match(name)
            try:
                if match and match["host"] == this_host():
                    stale = not _pid_alive(int(match["pid"]))
                else:
                    stale = now - part.stat().st_mtime > max_age
                if stale:
                    part.unlink()
                    removed += 1
                    logger.info("removed %s, left by a writer that was stopped", part)
            except FileNotFoundError:
                continue  # its writer finished or removed it meanwhile
            except OSError as exc:
                logger.warning("could not remove stale %s: %s", part, exc)
    return removed


def series_lock(
    out_dir: str | os.PathLike[str], derived_series_uid: str, *, timeout: float = -1
) -> FileLock:
    """A lock (use it as a context manager) held while one derived series is computed.

    Two runs on one ``out_dir`` (processes, threads, hosts sharing it where the file system
    supports locks) then never compute the same series at once: the second waits, then finds
    the series done in the manifest. ``timeout`` < 0 waits for ever; otherwise
    :class:`filelock.Timeout` is raised after that many seconds. A ``derived_series_uid`` that
    fails :func:`~dicom_sr.dicom.inspection.valid_uid` raises
    :class:`~dicom_sr.errors.InputError`.
    """
    series = valid_uid(derived_series_uid, "SeriesInstanceUID", out_dir)
    folder = Path(out_dir, LOCKS_DIR)
    folder.mkdir(parents=True, exist_ok=True)
    return FileLock(folder / f"{series}.lock", timeout=timeout)


def read_complete(path: str | os.PathLike[str]) -> Dataset | None:
    """The dataset at ``path`` if it parses to the end with all its frames, else None.

    A full read, for checks and tests; :meth:`Manifest.done` does not use it. pydicom reads
    a truncated file with only a warning, so the Pixel Data is checked too: every frame's
    fragments present (encapsulated) or every byte present (native).
    """
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ds = dcmread(path)
        if any("End of file" in str(w.message) for w in caught):
            return None
        if ds.get("SOPInstanceUID") != Path(path).stem or not ds.get("PixelData"):
            return None
        frames = int(ds.get("NumberOfFrames") or 1)
        if ds.file_meta.TransferSyntaxUID.is_encapsulated:
            found = sum(1 for _ in generate_frames(ds.PixelData, number_of_frames=frames))
            return ds if found == frames else None
        samples = ds.Rows * ds.Columns * ds.get("SamplesPerPixel", 1) * frames
        return ds if len(ds.PixelData) >= samples * ((ds.BitsAllocated + 7) // 8) else None
    except Exception as exc:  # any failure to parse means "not done"
        logger.debug("%s does not read back: %s", path, exc)
        return None


class Manifest:
    """``out_dir/manifest.jsonl``: one JSON object per written or failed instance.

    Entries carry ``output`` (the output path, absolute or relative to ``out_dir``) and
    ``status``: ``"written"`` with ``bytes`` (the file's size), or ``"failed"`` with
    ``reason``. The latest entry for an output decides its state. Lookups use an index built
    once per object and read on from where it stopped when the file grows.

    Each record is appended under a lock (:mod:`filelock`) with a single ``write`` on a file
    opened with ``O_APPEND``, then fsynced, so concurrent writers (threads, processes) do not
    interleave and a crash loses at most the last line (a torn line is ignored, and the next
    record starts on a fresh line).
    """

    _shared: dict[str, Manifest] = {}
    _shared_lock = threading.Lock()

    def __init__(self, out_dir: str | os.PathLike[str]) -> None:
        self.out_dir = Path(out_dir)
        self.path = self.out_dir / MANIFEST_NAME
        self._refresh_lock = threading.Lock()
        self._index: dict[str, dict[str, Any]] = {}
        self._offset = 0  # bytes of the manifest read into the index
        self._identity: tuple[int, int] | None = None  # (st_dev, st_ino) read from
        self._lines = 0  # lines read into the index

    @classmethod
    def shared(cls, out_dir: str | os.PathLike[str]) -> Manifest:
        """One Manifest per ``out_dir`` in this process, so its index is read once, not once
        per series (a long-running node or batch worker looks up thousands of series)."""
        key = os.path.abspath(out_dir)
        with cls._shared_lock:
            if key not in cls._shared:
                cls._shared[key] = cls(out_dir)
            return cls._shared[key]

    def _lock(self) -> FileLock:
        folder = self.out_dir / LOCKS_DIR
        folder.mkdir(parents=True, exist_ok=True)
        return FileLock(folder / f"{MANIFEST_NAME}.lock")

    def record(self, entry: Mapping[str, Any]) -> None:
        """Append one entry (source, UIDs, output, config hash, method, status, bytes/reason)."""
        line = json.dumps(dict(entry), sort_keys=True, default=str, ensure_ascii=True)
        if "\n" in line:  # pragma: no cover - json.dumps never emits raw newlines
            raise ValueError("manifest entry would span lines")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        with self._lock():
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o666)
            try:
                data = (line + "\n").encode("ascii")
                size = os.fstat(fd).st_size
                if size and os.pread(fd, 1, size - 1) != b"\n":
                    data = b"\n" + data  # a crash tore the last line: start a fresh one
                written = os.write(fd, data)
                if written != len(data):  # pragma: no cover - regular files write fully
                    raise OSError(f"{self.path}: short write ({written} of {len(data)} bytes)")
                os.fsync(fd)
            finally:
                os.close(fd)

    def entries(self) -> list[dict[str, Any]]:
        """Every complete line of the manifest, oldest first."""
        if not self.path.exists():
            return []
        with open(self.path, "rb") as fh:
            return list(self._parse(fh.read(), 0))

    def _parse(self, data: bytes, first_line: int):
        for number, raw in enumerate(data.split(b"\n"), first_line + 1):
            if not raw.strip():
                continue
            try:
                entry = json.loads(raw.decode("ascii", errors="replace"))
            except json.JSONDecodeError:
                logger.warning("%s line %d is not JSON; ignored", self.path, number)
                continue
            if isinstance(entry, dict):
                yield entry

    def _key(self, output: str | os.PathLike[str]) -> str:
        return os.path.normpath(os.path.abspath(Path(self.out_dir, output)))

    def _refresh(self) -> None:
        """Read what was appended since the last lookup (all of it if the file was replaced)."""
        with self._refresh_lock:
            self._refresh_unlocked()

    def _refresh_unlocked(self) -> None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._index, self._offset, self._lines, self._identity = {}, 0, 0, None
            return
        if (st.st_dev, st.st_ino) != self._identity or st.st_size < self._offset:
            self._index, self._offset, self._lines = {}, 0, 0
            self._identity = (st.st_dev, st.st_ino)
        if st.st_size == self._offset:
            return
        with open(self.path, "rb") as fh:
            fh.seek(self._offset)
            data = fh.read(st.st_size - self._offset)
        end = data.rfind(b"\n") + 1  # a line still being written (or torn) waits
        for entry in self._parse(data[:end], self._lines):
            output = entry.get("output")
            if output and entry.get("status") in ("written", "failed"):
                self._index[self._key(output)] = entry
        self._offset += end
        self._lines += data.count(b"\n", 0, end)

    def latest(self, path: str | os.PathLike[str]) -> dict[str, Any] | None:
        """The latest written/failed entry whose ``output`` is ``path``, or None."""
        self._refresh()
        return self._index.get(self._key(path))

    def status(self, path: str | os.PathLike[str]) -> str | None:
        """``"done"`` (see :meth:`done`), ``"failed"`` (the latest entry), or None (to do)."""
        if self.done(path):
            return "done"
        entry = self.latest(path)
        return "failed" if entry and entry.get("status") == "failed" else None

    def failed(self, path: str | os.PathLike[str]) -> str | None:
        """The reason recorded when ``path`` last failed, or None if its latest entry is not
        a failure."""
        entry = self.latest(path)
        if entry and entry.get("status") == "failed":
            return str(entry.get("reason") or "failed (no reason recorded)")
        return None

    def done(self, path: str | os.PathLike[str]) -> bool:
        """True when the manifest's latest entry for ``path`` says written, and the file is
        there with the size recorded (a file it does not list is written again)."""
        entry = self.latest(path)
        if not entry or entry.get("status") != "written":
            return False
        try:
            size = os.stat(path).st_size
        except OSError:
            return False
        want = entry.get("bytes")
        if want is None:  # an entry of an older version: no size recorded, read it back once
            return read_complete(path) is not None
        if size != int(want):
            logger.warning(
                "%s is %d bytes, the manifest says %s; it will be written again", path, size, want
            )
            return False
        return True
