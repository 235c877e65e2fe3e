"""Bounded disk: the ``--min-free`` guard and the ``--retention`` sweep.

Below ``--min-free`` free bytes on the disk of ``--out``, the node refuses new associations and
answers C-STORE with 0xA700 (and an ErrorComment) *before* writing anything, and starts no new
series, so that nothing it acknowledged can be lost to a full disk. ``--retention`` deletes the
spooled inputs, derived files and saved model of jobs that are finished (forwarded to every
destination; done, when there is none) once they are older than that, and quarantined files
as old; the jobs' rows stay, so ``dicom-sr jobs`` still lists them.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import time
from pathlib import Path

from dicom_sr.jobs import Job, JobStore

__all__ = ["Upkeep", "parse_duration", "parse_size", "format_size"]

logger = logging.getLogger(__name__)

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_SIZES = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def parse_duration(text: str) -> float:
    """``30s``, ``12h``, ``7d``, ``2w`` (a bare number is seconds) -> seconds; ValueError."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text.lower())
    if not m:
        raise ValueError(f"{text!r} is not a duration like 30s, 12h, 7d or 2w")
    return float(m[1]) * _UNITS[m[2] or "s"]


def parse_size(text: str) -> int:
    """``500M``, ``2G``, ``1.5T``, ``4096`` (bytes; K/M/G/T are powers of 1024) -> bytes."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*", text.lower())
    if not m:
        raise ValueError(f"{text!r} is not a size like 500M, 2G or 4096")
    return int(float(m[1]) * _SIZES[m[2]])


def format_size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


class Upkeep:
    """Disk checks and the retention sweep of one node folder."""

    def __init__(
        self,
        out_dir: Path,
        store: JobStore,
        *,
        min_free: int | None = None,
        retention: float | None = None,
        forwarding: bool = True,
    ) -> None:
        self.out_dir = Path(out_dir)
        self.store = store
        self.min_free = min_free
        self.retention = retention
        self.forwarding = forwarding
        self.free = self.disk_free()
        self.low: str | None = None

    def disk_free(self) -> int:
        return shutil.disk_usage(self.out_dir).free

    def low_reason(self, need: int = 0) -> str | None:
        """Why a write of ``need`` bytes must not start now (below ``--min-free``), or None.

        Once refused, the disk counts as low until it has a tenth of ``--min-free`` (at least
        1 MiB) more than that: stores and /health do not flap around the threshold."""
        if not self.min_free:
            return None
        free = self.disk_free()
        margin = max(self.min_free // 10, 1 << 20) if self.low else 0
        if free - need >= self.min_free + margin:
            return None
        low = f"disk full: {format_size(free)} free, under --min-free {format_size(self.min_free)}"
        self._set_low(low)
        return low

    def check(self) -> str | None:
        """Update :attr:`free` and :attr:`low`, logging each change; returns :attr:`low`."""
        self.free = self.disk_free()
        if self.low_reason() is None:
            self._set_low(None)
        return self.low

    def _set_low(self, low: str | None) -> None:
        if low and not self.low:
            logger.error("%s: refusing associations and stores, starting no series", low)
        elif self.low and not low:
            logger.warning("disk free again (%s): accepting stores", format_size(self.free))
        self.low = low

    def spool_bytes(self) -> int:
        """Bytes under ``incoming/`` (what is received and not yet cleaned up)."""
        total = 0
        for root, _, files in os.walk(self.out_dir / "incoming"):
            for name in files:
                try:
                    total += os.stat(os.path.join(root, name)).st_size
                except OSError:
                    pass  # deleted meanwhile
        return total

    def sweep(self, now: float | None = None) -> int:
        """Delete the files of finished jobs older than the retention; returns how many jobs."""
        if self.retention is None:
            return 0
        now = time.time() if now is None else now
        finished = ["forwarded"] if self.forwarding else ["forwarded", "done"]
        n = 0
        for state in finished:
            for job in self.store.jobs(state=state, kind="listen"):
                if job.purged is None and job.updated < now - self.retention:
                    self._purge(job)
                    n += 1
        if n:
            logger.info("retention: deleted the files of %d finished job(s)", n)
        old = [
            p
            for p in (self.out_dir / "quarantine").glob("*")
            if p.is_file() and p.stat().st_mtime < now - self.retention
        ]
        for path in old:  # refused data sets and their notes: kept as long as the rest
            path.unlink(missing_ok=True)
        if old:
            logger.info("retention: deleted %d quarantined file(s)", len(old))
        return n

    def _purge(self, job: Job) -> None:
        result = job.result or {}
        files = [*job.paths, *result.get("written", []), *result.get("already_done", [])]
        files.append(str(self.model_path(job.key)))
        self.delete_files(files)
        self.store.mark_purged(job.key)

    def delete_files(self, files: list[str]) -> None:
        """Delete these files of the node's own folders, then their folders while empty."""
        folders = set()
        for name in files:
            path = Path(name)
            try:
                path.unlink(missing_ok=True)
                folders.add(path.parent)
            except OSError as exc:
                logger.warning("retention: cannot delete %s: %s", path, exc)
        for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
            _remove_empty(folder, stop=self.out_dir)

    def model_path(self, key: str) -> Path:
        """Where the model trained for a derived series is kept (for its late instances)."""
        return self.out_dir / "models" / f"{key}.pt"


def _remove_empty(folder: Path, stop: Path) -> None:
    """Remove ``folder`` and its parents while empty, up to (not including) a top folder."""
    tops = {stop / "incoming", stop / "derived", stop / "models", stop}
    while folder not in tops and stop in folder.parents:
        try:
            folder.rmdir()
        except OSError:
            return
        folder = folder.parent
