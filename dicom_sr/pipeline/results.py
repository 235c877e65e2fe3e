"""What the pipeline reports: progress events and per-instance, per-series and run results."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from dicom_sr.dicom.discover import Skipped

if TYPE_CHECKING:
    from dicom_sr.engine import TrainedModel

__all__ = [
    "Stage",
    "ProgressEvent",
    "ProgressCallback",
    "CancelCheck",
    "InstanceResult",
    "SeriesResult",
    "RunResult",
]

Stage = Literal["start", "train", "frame", "done", "failed"]


@dataclass(frozen=True)
class ProgressEvent:
    """One step of work on one series.

    ``stage`` is "start", "train" (``done``/``total`` count iterations), "frame" (they count
    frames; ``instance_uid`` is the source SOP Instance UID), "done" or "failed" (``message``
    says why).
    """

    series_uid: str
    stage: Stage
    done: int
    total: int
    instance_uid: str | None = None
    message: str = ""


ProgressCallback = Callable[[ProgressEvent], None]
CancelCheck = Callable[[], bool]


@dataclass
class InstanceResult:
    """What happened to one source instance."""

    source: Path
    status: Literal["written", "done", "failed"]
    output: Path | None = None
    frames: int = 0
    reason: str = ""


@dataclass
class SeriesResult:
    """What happened to one series: its derived series and each instance."""

    study_uid: str
    source_series_uid: str
    derived_series_uid: str
    instances: list[InstanceResult] = field(default_factory=list)
    train_seconds: float = 0.0
    seconds: float = 0.0
    model: TrainedModel | None = None
    reason: str = ""
    guard: dict[str, Any] = field(default_factory=dict)
    #: What the failures mean for a retry (:func:`dicom_sr.errors.classify`): "permanent" when
    #: one of them is, "transient" when all are, "" when nothing failed.
    failure_kind: str = ""
    #: The traceback of the first failure that was a bug (not an input or write error).
    traceback: str = ""

    @property
    def frames(self) -> int:
        return sum(r.frames for r in self.instances if r.status == "written")

    @property
    def failed(self) -> list[InstanceResult]:
        return [r for r in self.instances if r.status == "failed"]

    @property
    def status(self) -> Literal["done", "partial", "failed"]:
        """ "done": every instance written or already done; "failed": none; else "partial"."""
        ok = sum(1 for r in self.instances if r.status != "failed")
        if self.instances and ok == len(self.instances):
            return "done"
        return "partial" if ok else "failed"

    def to_dict(self) -> dict[str, Any]:
        """A small JSON-able summary (no model): what a batch task or a job record keeps."""
        return {
            "study_uid": self.study_uid,
            "source_series_uid": self.source_series_uid,
            "derived_series_uid": self.derived_series_uid,
            "status": self.status,
            "reason": self.reason,
            "frames": self.frames,
            "written": [str(r.output) for r in self.instances if r.status == "written"],
            "already_done": [str(r.output) for r in self.instances if r.status == "done"],
            "failed": [{"path": str(r.source), "reason": r.reason} for r in self.failed],
            "guard": dict(self.guard),
            "prior": dict((self.model.info or {}).get("warm_start_prior") or {})
            if self.model is not None
            else {},
            "train_seconds": round(self.train_seconds, 2),
            "seconds": round(self.seconds, 2),
        }


@dataclass
class RunResult:
    """Everything a ``process`` run did: per-series results and the files it skipped."""

    series: list[SeriesResult] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def written(self) -> int:
        return sum(1 for s in self.series for r in s.instances if r.status == "written")

    @property
    def frames(self) -> int:
        return sum(s.frames for s in self.series)

    @property
    def failed(self) -> list[InstanceResult]:
        """Instances that could not be derived or written, each with its reason."""
        return [r for s in self.series for r in s.failed]
