"""What a job is: the :class:`Job` row, its states and kinds, and lease owners.

See :mod:`dicom_sr.jobs` for the states and the leases; :mod:`dicom_sr.jobs.store` keeps the
rows in SQLite.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "STATES",
    "BATCH_LABELS",
    "Job",
    "Kind",
    "State",
    "make_owner",
    "owner_is_dead",
]

State = Literal["received", "queued", "processing", "done", "failed", "forwarded"]
Kind = Literal["listen", "batch"]

STATES: tuple[str, ...] = ("received", "queued", "processing", "done", "failed", "forwarded")

#: What ``batch`` calls the states it uses.
BATCH_LABELS = {"queued": "planned", "processing": "running"}

#: Allowed transitions (same-state updates are always allowed: e.g. a new error message).
_NEXT: dict[str, frozenset[str]] = {
    "received": frozenset({"queued", "failed"}),
    "queued": frozenset({"processing", "done", "failed"}),
    "processing": frozenset({"queued", "done", "failed"}),
    "done": frozenset({"forwarded", "queued", "failed"}),
    "failed": frozenset({"queued"}),
    "forwarded": frozenset(),
}

#: The columns of the ``jobs`` table (``schema.SCHEMA``), in the order of the :class:`Job` fields:
#: every ``SELECT`` of the store reads these, and :meth:`Job._from_row` maps them back.
_COLUMNS = (
    "key, kind, state, study_uid, source_series_uid, config_hash, revision, paths, frames, "
    "attempts, error, lease_owner, lease_expires, created, updated, result, forward_attempts, "
    "forward_error, next_forward_at, calling_ae, not_before, purged"
)


@dataclass
class Job:
    """One row of the store: one source series with one pipeline (key: derived series UID)."""

    key: str
    kind: str
    state: str
    study_uid: str = ""
    source_series_uid: str = ""
    config_hash: str = ""
    revision: int = 0
    paths: list[str] = field(default_factory=list)
    frames: int = 0
    attempts: int = 0
    error: str = ""
    lease_owner: str | None = None
    lease_expires: float | None = None
    created: float = 0.0
    updated: float = 0.0
    result: dict[str, Any] | None = None
    forward_attempts: int = 0
    forward_error: str = ""
    next_forward_at: float | None = None
    calling_ae: str = ""
    not_before: float | None = None  # a transient failure's back-off: not claimed before this
    purged: float | None = None  # when retention deleted its files (the row stays)

    @classmethod
    def _from_row(cls, row: Sequence[Any]) -> Job:
        d = dict(zip(_COLUMNS.split(", "), row, strict=True))
        d["paths"] = json.loads(d["paths"] or "[]")
        d["result"] = json.loads(d["result"]) if d["result"] else None
        return cls(**d)

    def lease_gone(self, now: float | None = None) -> bool:
        """True when no live owner holds this job: no lease, an expired one, a dead owner."""
        now = time.time() if now is None else now
        return (
            self.lease_expires is None
            or self.lease_expires < now
            or owner_is_dead(self.lease_owner)
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict of every column."""
        return {k: getattr(self, k) for k in _COLUMNS.split(", ")}


def make_owner() -> str:
    """A lease owner name for this process: ``host:pid:token`` (the pid lets others see it died)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def owner_is_dead(owner: str | None) -> bool:
    """True when ``owner`` names a process on this host that no longer runs."""
    if not owner:
        return True
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _check_state(state: str) -> None:
    if state not in STATES:
        raise ValueError(f"unknown job state {state!r} (one of {', '.join(STATES)})")
