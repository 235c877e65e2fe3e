"""Progress bars for the CLI: one bar for the series, one for training, one for frames, with ETA."""

from __future__ import annotations

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
        else:
            if self._frames is None:
                self._frames = p.add_task("frames", total=event.total)
            p.update(self._frames, completed=event.done, total=event.total)
            if self._series is not None and event.done == event.total:
                p.advance(self._series)
