"""The batch client's side of the job store: the only code of ``batch`` that writes job states.

The process running ``dicom-sr batch`` owns the store (a SQLite file on its own disk); tasks
never open it. The client *claims* a job when it submits its task (state processing, one
attempt counted, the client as lease owner), and records what came back. Every change is a
short transaction; several finished tasks are recorded in one. A client that is killed leaves
its jobs processing under a dead owner: the next client on this host requeues them
(:meth:`~dicom_sr.jobs.JobStore.requeue_unfinished`). A client that stops on purpose gives its
jobs back without using an attempt.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from dicom_sr.jobs import JobStore, make_owner

__all__ = ["Ledger", "Todo", "Outcome"]

#: The client's lease on the jobs it has in flight; renewed while it runs (it is the owner's
#: pid that frees them at once when the client dies on this host).
LEASE_SECONDS = 600.0


@dataclass(frozen=True)
class Todo:
    """A job to submit: its key, its files and its planned frames."""

    seq: int
    key: str
    paths: list[str]
    frames: int


@dataclass(frozen=True)
class Outcome:
    """What to record for one finished task."""

    key: str
    state: str  # "done", "failed", "queued" (given back, no attempt used)
    error: str = ""
    result: dict[str, Any] | None = None


class Ledger:
    """The jobs of one plan walk, as the client sees and changes them."""

    def __init__(self, store: JobStore, walk_id: str, lease_seconds: float = LEASE_SECONDS):
        self.store = store
        self.walk_id = walk_id
        self.owner = make_owner()
        self.lease_seconds = lease_seconds

    def _in_plan(self) -> str:
        return "key IN (SELECT key FROM plan_jobs WHERE walk = ?)"

    def prepare(self) -> None:
        """On start: jobs left processing by a dead client go back to the queue, and this
        plan's failed jobs get a fresh set of attempts."""
        self.store.requeue_unfinished("batch")
        with self.store.transaction() as db:
            db.execute(
                "UPDATE jobs SET state = 'queued', attempts = 0, updated = ? WHERE kind = 'batch'"
                f" AND state = 'failed' AND {self._in_plan()}",
                (time.time(), self.walk_id),
            )

    def counts(self) -> dict[str, int]:
        """This plan's jobs per state."""
        rows = self.store.connect().execute(
            f"SELECT state, COUNT(*) FROM jobs WHERE {self._in_plan()} GROUP BY state",
            (self.walk_id,),
        )
        return dict(rows.fetchall())

    def todo_frames(self, limit: int | None) -> tuple[int, int]:
        """(series, frames) queued in this plan, the first ``limit`` in plan order."""
        sql = (
            "SELECT COUNT(*), COALESCE(SUM(pj.frames), 0) FROM (SELECT pj.frames FROM plan_jobs"
            " pj JOIN jobs j ON j.key = pj.key WHERE pj.walk = ? AND j.state = 'queued'"
            " ORDER BY pj.seq LIMIT ?) AS pj"
        )
        row = self.store.connect().execute(sql, (self.walk_id, -1 if limit is None else limit))
        n, frames = row.fetchone()
        return int(n), int(frames)

    def todo(self, chunk: int = 256) -> Iterator[Todo]:
        """The queued jobs of this plan in plan order, read a chunk at a time."""
        sql = (
            "SELECT pj.seq, pj.key, j.paths, pj.frames FROM plan_jobs pj JOIN jobs j"
            " ON j.key = pj.key WHERE pj.walk = ? AND pj.seq > ? AND j.state = 'queued'"
            " ORDER BY pj.seq LIMIT ?"
        )
        last = -1
        while True:
            rows = self.store.connect().execute(sql, (self.walk_id, last, chunk)).fetchall()
            if not rows:
                return
            for seq, key, paths, frames in rows:
                last = seq
                yield Todo(seq, key, json.loads(paths), frames)

    def claim(self, keys: list[str]) -> dict[str, int]:
        """Take queued jobs for submission (or processing ones of ours, for a retry), in one
        transaction; count an attempt each; return key -> attempt number for those taken
        (a job another live client holds, or that is finished, is left out)."""
        now = time.time()
        taken: dict[str, int] = {}
        with self.store.transaction() as db:
            for key in keys:
                cur = db.execute(
                    "UPDATE jobs SET state = 'processing', lease_owner = ?, lease_expires = ?,"
                    " attempts = attempts + 1, updated = ? WHERE key = ? AND (state = 'queued'"
                    " OR (state = 'processing' AND lease_owner = ?))",
                    (self.owner, now + self.lease_seconds, now, key, self.owner),
                )
                if cur.rowcount == 1:
                    row = db.execute("SELECT attempts FROM jobs WHERE key = ?", (key,)).fetchone()
                    taken[key] = row[0]
        return taken

    def note_error(self, key: str, error: str) -> None:
        """Keep the error of an attempt that is retried."""
        with self.store.transaction() as db:
            db.execute(
                "UPDATE jobs SET error = ?, updated = ? WHERE key = ? AND lease_owner = ?",
                (error, time.time(), key, self.owner),
            )

    def record(self, outcomes: list[Outcome]) -> None:
        """Record finished tasks, all in one transaction; "queued" gives a job back with its
        attempt returned (a stop the client caused is free)."""
        if not outcomes:
            return
        now = time.time()
        with self.store.transaction() as db:
            for o in outcomes:
                refund = ", attempts = MAX(attempts - 1, 0)" if o.state == "queued" else ""
                frames = (o.result or {}).get("frames", 0) if o.state == "done" else None
                db.execute(
                    "UPDATE jobs SET state = ?, error = ?, result = COALESCE(?, result),"
                    " frames = COALESCE(?, frames), lease_owner = NULL, lease_expires = NULL,"
                    f" updated = ?{refund} WHERE key = ? AND lease_owner = ?",
                    (
                        o.state,
                        o.error,
                        None if o.result is None else json.dumps(o.result, default=str),
                        frames,
                        now,
                        o.key,
                        self.owner,
                    ),
                )

    def renew(self) -> None:
        """Extend the lease on every job this client has in flight (one statement)."""
        now = time.time()
        with self.store.transaction() as db:
            db.execute(
                "UPDATE jobs SET lease_expires = ? WHERE lease_owner = ? AND state = 'processing'",
                (now + self.lease_seconds, self.owner),
            )

    def give_back(self) -> int:
        """Return every job this client still has in flight to the queue, attempt refunded."""
        with self.store.transaction() as db:
            return db.execute(
                "UPDATE jobs SET state = 'queued', lease_owner = NULL, lease_expires = NULL,"
                " attempts = MAX(attempts - 1, 0), updated = ? WHERE lease_owner = ?"
                " AND state = 'processing'",
                (time.time(), self.owner),
            ).rowcount

    def get(self, key: str):
        """The job row (for a log line or the report)."""
        return self.store.get(key)
