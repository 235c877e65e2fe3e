"""Series assembly: a series is complete after ``--series-timeout`` seconds without a new instance.

The same rule as dcmtk's ``--eostudy-timeout`` and Orthanc's ``StableAge``, per series.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Arrivals", "Assembly"]


@dataclass
class Arrivals:
    """New instances of one series since its last job, and when the last one came."""

    study_uid: str
    series_uid: str
    paths: set[Path] = field(default_factory=set)
    last: float = 0.0
    noted: int = 0  # how many of ``paths`` the job store already lists
    calling_ae: str = ""


class Assembly:
    """Thread-safe: association threads call :meth:`arrived`, the node's loop :meth:`due`."""

    def __init__(self, timeout: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.timeout = timeout
        self.clock = clock
        self._lock = threading.Lock()
        self._open: dict[str, Arrivals] = {}

    def arrived(self, study_uid: str, series_uid: str, path: Path, calling_ae: str = "") -> None:
        """Record a new instance of a series; its quiet time starts again."""
        with self._lock:
            entry = self._open.setdefault(series_uid, Arrivals(study_uid, series_uid))
            entry.paths.add(Path(path))
            entry.last = self.clock()
            entry.calling_ae = calling_ae or entry.calling_ae

    def due(self, *, flush: bool = False) -> list[Arrivals]:
        """Remove and return the series quiet for ``timeout`` seconds (all with ``flush``)."""
        now = self.clock()
        with self._lock:
            ready = [k for k, a in self._open.items() if flush or now - a.last >= self.timeout]
            return [self._open.pop(k) for k in ready]

    def unnoted(self) -> list[Arrivals]:
        """Copies of the series with instances not yet reported here; marks them reported."""
        out = []
        with self._lock:
            for a in self._open.values():
                if len(a.paths) > a.noted:
                    a.noted = len(a.paths)
                    out.append(
                        Arrivals(
                            a.study_uid, a.series_uid, set(a.paths), a.last, calling_ae=a.calling_ae
                        )
                    )
        return out

    def pending(self) -> int:
        """Series still receiving (not yet quiet)."""
        with self._lock:
            return len(self._open)
