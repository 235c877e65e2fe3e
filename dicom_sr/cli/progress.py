"""Progress for the CLI: rich bars on a terminal, periodic log lines without one.

Both take the pipeline's :class:`~dicom_sr.pipeline.ProgressEvent` callbacks, so ``process``
and ``batch`` report the same way whether a person or a log file is watching.
"""

from __future__ import annotations

import logging
import time

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from dicom_sr.dicom.discover import Series
from dicom_sr.pipeline import ProgressEvent

__all__ = ["RunProgress", "LogProgress", "eta"]

logger = logging.getLogger("dicom_sr.progress")


def eta(done: int, total: int, seconds: float) -> str:
    """Remaining time at the current rate, as ``1h02m``, ``4m05s`` or ``12s``; ``?`` if unknown."""
    if done <= 0 or total <= done or seconds <= 0:
        return "?" if total > done else "0s"
    left = seconds / done * (total - done)
    h, rem = divmod(int(left), 3600)
    m, sec = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{sec:02d}s" if m else f"{sec}s")


class RunProgress:
    """Turns the pipeline's progress callbacks into rich progress bars on stderr."""

    def __init__(self, enabled: bool = True) -> None:
        self._progress = Progress(
            TextColumn("{task.description:<14}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            disable=not enabled,
            transient=False,
        )
        self._series = None
        self._train = None
        self._frames = None

    def __enter__(self) -> RunProgress:
        self._progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._progress.__exit__(*exc)

    def on_series(self, series: Series, index: int, total: int) -> None:
        """A new series starts: advance the series bar and reset the others."""
        p = self._progress
        if self._series is None:
            self._series = p.add_task("series", total=total)
        p.update(self._series, completed=index)
        for task in (self._train, self._frames):
            if task is not None:
                p.remove_task(task)
        self._train = self._frames = None

    def on_progress(self, event: ProgressEvent) -> None:
        """Training iterations and written frames of the current series."""
        p = self._progress
        if event.stage == "train":
            if self._train is None:
                self._train = p.add_task("training", total=event.total)
            p.update(self._train, completed=event.done, total=event.total)
        elif event.stage == "frame":
            if self._frames is None:
                self._frames = p.add_task("frames", total=event.total)
            p.update(self._frames, completed=event.done, total=event.total)
        elif event.stage in ("done", "failed") and self._series is not None:
            p.advance(self._series)


class LogProgress:
    """Progress as INFO log lines, at most one every ``every`` seconds per stage: for runs whose
    stderr is a file (cron, CI, a service). Series start and end are logged by the pipeline."""

    def __init__(self, every: float = 10.0) -> None:
        self.every = every
        self._last = 0.0
        self._stage_t0 = 0.0
        self._stage: tuple[str, str] | None = None
        self._series_label = ""

    def __enter__(self) -> LogProgress:
        return self

    def __exit__(self, *exc) -> None:
        return None

    def on_series(self, series: Series, index: int, total: int) -> None:
        """Remember which series of how many, for the log lines."""
        self._series_label = f"series {index + 1}/{total}"

    def on_progress(self, event: ProgressEvent) -> None:
        """Log training and frame progress every few seconds, and always at the end of a stage."""
        if event.stage not in ("train", "frame"):
            return
        now = time.monotonic()
        key = (event.series_uid, event.stage)
        if key != self._stage:
            self._stage, self._stage_t0, self._last = key, now, now
            return
        last = event.done >= event.total
        if not last and now - self._last < self.every:
            return
        self._last = now
        spent = now - self._stage_t0
        what = "training iteration" if event.stage == "train" else "frame"
        rate = f", {event.done / spent:.2f}/s" if spent > 0 else ""
        logger.info(
            "%s ...%s: %s %d/%d%s, ETA %s",
            self._series_label,
            event.series_uid[-12:],
            what,
            event.done,
            event.total,
            rate,
            eta(event.done, event.total, spent),
        )
