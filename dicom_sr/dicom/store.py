"""Write derived instances safely and keep a manifest of what was written.

Files go to ``OUT/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm``. Each is
written to a temporary file in the same folder, flushed to disk, then renamed over the final
name (an atomic operation on POSIX and Windows), and the folder is flushed too: a crash leaves
either the complete file or none under the final name, never half of one. Because derived UIDs
are deterministic, a re-run looks a file up by name and skips it if it reads back complete.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydicom import Dataset, dcmread
from pydicom.encaps import generate_frames

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: O_APPEND alone
    fcntl = None

__all__ = [
    "MANIFEST_NAME",
    "Manifest",
    "instance_path",
    "output_path",
    "write_atomic",
    "read_complete",
]

logger = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.jsonl"


def instance_path(
    out_dir: str | os.PathLike[str], study_uid: str, series_uid: str, sop_uid: str
) -> Path:
    """``out_dir/<study_uid>/<series_uid>/<sop_uid>.dcm``; each part must be a UID."""
    keywords = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
    for keyword, uid in zip(keywords, (study_uid, series_uid, sop_uid), strict=True):
        if not uid or not all(p.isdigit() for p in str(uid).split(".")):
            raise ValueError(f"cannot name the output file: {keyword} is {uid!r}, not a UID")
    return Path(out_dir, str(study_uid), str(series_uid), f"{sop_uid}.dcm")


def output_path(out_dir: str | os.PathLike[str], ds: Dataset) -> Path:
    """``out_dir/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm`` of ``ds``."""
    return instance_path(
        out_dir,
        str(ds.get("StudyInstanceUID", "") or ""),
        str(ds.get("SeriesInstanceUID", "") or ""),
        str(ds.get("SOPInstanceUID", "") or ""),
    )


def _fsync_dir(folder: Path) -> None:
    if os.name != "posix":  # pragma: no cover - directories cannot be opened on Windows
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(ds: Dataset, path: str | os.PathLike[str]) -> None:
    """Write ``ds`` as a DICOM file (preamble + File Meta) at ``path``, all or nothing."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as fh:
            ds.save_as(fh, enforce_file_format=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)
    logger.debug("wrote %s", path)


def read_complete(path: str | os.PathLike[str]) -> Dataset | None:
    """The dataset at ``path`` if it parses to the end with all its frames, else None.

    pydicom reads a truncated file with only a warning, so the Pixel Data is checked too:
    every frame's fragments present (encapsulated) or every byte present (native).
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
    """``out_dir/manifest.jsonl``: one JSON object per written (or failed) instance.

    Each record is appended, under an exclusive ``flock``, with a single ``write`` on a file
    opened with ``O_APPEND`` and then fsynced, so concurrent writers (threads, processes) do not
    interleave and a crash loses at most the last line (a torn last line is ignored by
    :meth:`entries`, and the next record starts on a fresh line).
    """

    def __init__(self, out_dir: str | os.PathLike[str]) -> None:
        self.out_dir = Path(out_dir)
        self.path = self.out_dir / MANIFEST_NAME

    def record(self, entry: Mapping[str, Any]) -> None:
        """Append one entry (source path(s), UIDs, output, config hash, method, status...)."""
        line = json.dumps(dict(entry), sort_keys=True, default=str, ensure_ascii=True)
        if "\n" in line:  # pragma: no cover - json.dumps never emits raw newlines
            raise ValueError("manifest entry would span lines")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            if fcntl is not None:  # one writer at a time, across threads and processes
                fcntl.flock(fd, fcntl.LOCK_EX)
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
        out = []
        with open(self.path, encoding="ascii", errors="replace") as fh:
            for number, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    logger.warning("%s line %d is not JSON; ignored", self.path, number)
        return out

    def done(self, path: str | os.PathLike[str]) -> bool:
        """True when ``path`` exists and reads back as a complete DICOM instance."""
        path = Path(path)
        if not path.is_file():
            return False
        if read_complete(path) is None:
            logger.warning("%s exists but does not read back; it will be written again", path)
            return False
        return True
