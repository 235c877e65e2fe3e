"""What an operator (``dicom-sr jobs retry|forget``) and the node's upkeep do to jobs, and the
job-level forwarding summary: methods of :class:`~dicom_sr.jobs.JobStore`, kept apart from the
store's core (connections, adding, states, claims and leases).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable

from dicom_sr.jobs.model import _COLUMNS, Job

__all__ = ["OperatorVerbs"]


class OperatorVerbs:
    """Mixed into :class:`~dicom_sr.jobs.JobStore` (which provides ``transaction``, ``get``,
    ``_get``, ``connect`` and ``path``)."""

    def retry(self, keys: Iterable[str] | None = None, *, kind: str | None = None) -> list[str]:
        """Queue failed jobs again with fresh attempts (``keys``, or every failed one of
        ``kind``); returns the keys requeued. Other states are left alone."""
        now = time.time()
        done: list[str] = []
        with self.transaction() as db:
            if keys is None:
                sql, args = "SELECT key FROM jobs WHERE state = 'failed'", []
                if kind is not None:
                    sql, args = sql + " AND kind = ?", [kind]
                keys = [r[0] for r in db.execute(sql, args).fetchall()]
            for key in keys:
                cur = db.execute(
                    "UPDATE jobs SET state = 'queued', attempts = 0, not_before = NULL,"
                    " lease_owner = NULL, lease_expires = NULL, updated = ?"
                    " WHERE key = ? AND state = 'failed'",
                    (now, key),
                )
                if cur.rowcount:
                    done.append(key)
        return done

    def forget(self, keys: Iterable[str]) -> list[str]:
        """Delete the rows of these jobs (not while processing); returns the keys deleted.
        Files are not touched: the spool and the outputs stay where they are."""
        gone: list[str] = []
        with self.transaction() as db:
            for key in keys:
                cur = db.execute("DELETE FROM jobs WHERE key = ? AND state != 'processing'", (key,))
                if cur.rowcount:
                    db.execute("DELETE FROM forwards WHERE key = ?", (key,))
                    gone.append(key)
        return gone

    def mark_purged(self, key: str) -> None:
        """Retention deleted this job's files; its row stays (``jobs`` still lists it)."""
        with self.transaction() as db:
            db.execute("UPDATE jobs SET purged = ? WHERE key = ?", (time.time(), key))

    def reopen(self, key: str, paths: Iterable[str | os.PathLike[str]]) -> Job:
        """A done or forwarded job gets more source files (late instances): back to queued,
        its result kept (what was written and sent), fresh attempts."""
        with self.transaction() as db:
            job = self._get(db, key)
            if job.state not in ("done", "forwarded"):
                raise ValueError(f"{self.path}: job {key} is {job.state}, not done or forwarded")
            merged = sorted(set(job.paths) | {str(p) for p in paths})
            db.execute(
                "UPDATE jobs SET state = 'queued', paths = ?, attempts = 0, error = '',"
                " not_before = NULL, purged = NULL, updated = ? WHERE key = ?",
                (json.dumps(merged), time.time(), key),
            )
        return self.get(key)  # type: ignore[return-value]

    # -- forwarding, job-level (the node keeps per-destination rows in jobs.forwards) ------

    def due_forwards(self, now: float | None = None) -> list[Job]:
        """Done listen jobs whose next forward attempt is due."""
        now = time.time() if now is None else now
        rows = (
            self.connect()
            .execute(
                f"SELECT {_COLUMNS} FROM jobs WHERE state = 'done' AND kind = 'listen'"
                " AND (next_forward_at IS NULL OR next_forward_at <= ?) ORDER BY updated",
                (now,),
            )
            .fetchall()
        )
        return [Job._from_row(r) for r in rows]

    def forward_failed(self, key: str, error: str, retry_at: float) -> None:
        """Record a failed forward and when to try again."""
        with self.transaction() as db:
            db.execute(
                "UPDATE jobs SET forward_attempts = forward_attempts + 1, forward_error = ?,"
                " next_forward_at = ?, updated = ? WHERE key = ?",
                (error, retry_at, time.time(), key),
            )
