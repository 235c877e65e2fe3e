"""Forwarding per destination: one row per (job, destination) in the ``forwards`` table.

A done ``listen`` job owes each configured destination its derived instances. Each row keeps
what that destination acknowledged (SOP Instance UIDs), its failed attempts, its last error and
when to try again, so each destination gets every instance exactly once, whatever the others
do. A job becomes *forwarded* when every destination it was opened for has been sent all of it.
Late instances reopen a job; its rows go back to *pending* and keep what was acknowledged.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from dicom_sr.jobs.model import _COLUMNS, Job
from dicom_sr.jobs.store import JobStore

__all__ = ["Forward", "Forwards"]

_FCOLS = "key, destination, state, sent, attempts, error, next_at, created, updated"


@dataclass
class Forward:
    """One destination's side of one job."""

    key: str
    destination: str
    state: str  # "pending" or "sent"
    sent: list[str] = field(default_factory=list)
    attempts: int = 0
    error: str = ""
    next_at: float | None = None
    created: float = 0.0
    updated: float = 0.0

    @classmethod
    def _from_row(cls, row: Sequence[Any]) -> Forward:
        d = dict(zip(_FCOLS.split(", "), row, strict=True))
        d["sent"] = json.loads(d["sent"] or "[]")
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in _FCOLS.split(", ")}


def _marks(values: Sequence[str]) -> str:
    return ", ".join("?" * len(values))


class Forwards:
    """The ``forwards`` table of a :class:`~dicom_sr.jobs.JobStore`."""

    def __init__(self, store: JobStore) -> None:
        self.store = store

    def open(self, key: str, destinations: Iterable[str]) -> None:
        """This job owes these destinations its outputs: pending rows (kept acknowledgements)."""
        now = time.time()
        with self.store.transaction() as db:
            for dest in destinations:
                db.execute(
                    "INSERT INTO forwards (key, destination, created, updated) VALUES (?,?,?,?)"
                    " ON CONFLICT(key, destination) DO UPDATE SET state = 'pending',"
                    " next_at = NULL, attempts = 0, created = excluded.created,"
                    " updated = excluded.updated",
                    (key, dest, now, now),
                )

    def open_missing(self, key: str, destinations: Iterable[str]) -> None:
        """Pending rows for the destinations this job has no row for (one added since)."""
        now = time.time()
        with self.store.transaction() as db:
            for dest in destinations:
                db.execute(
                    "INSERT OR IGNORE INTO forwards (key, destination, created, updated)"
                    " VALUES (?,?,?,?)",
                    (key, dest, now, now),
                )

    def of(self, key: str) -> list[Forward]:
        """The rows of one job, by destination."""
        rows = (
            self.store.connect()
            .execute(f"SELECT {_FCOLS} FROM forwards WHERE key = ? ORDER BY destination", (key,))
            .fetchall()
        )
        return [Forward._from_row(r) for r in rows]

    def due(
        self, destinations: Sequence[str], now: float | None = None
    ) -> list[tuple[Job, Forward]]:
        """Pending rows of done jobs for these destinations whose next try is due, oldest first."""
        if not destinations:
            return []
        now = time.time() if now is None else now
        cols = ", ".join(f"j.{c}" for c in _COLUMNS.split(", "))
        fcols = ", ".join(f"f.{c}" for c in _FCOLS.split(", "))
        rows = (
            self.store.connect()
            .execute(
                f"SELECT {cols}, {fcols} FROM forwards f JOIN jobs j ON j.key = f.key"
                f" WHERE j.state = 'done' AND f.state = 'pending'"
                f" AND f.destination IN ({_marks(destinations)})"
                " AND (f.next_at IS NULL OR f.next_at <= ?) ORDER BY f.created, f.key",
                (*destinations, now),
            )
            .fetchall()
        )
        n = len(_COLUMNS.split(", "))
        return [(Job._from_row(r[:n]), Forward._from_row(r[n:])) for r in rows]

    def sent(
        self,
        key: str,
        destination: str,
        uids: Iterable[str],
        destinations: Sequence[str] | None = None,
    ) -> bool:
        """Everything was acknowledged by ``destination``; True when the job is now forwarded,
        which this also records (see :meth:`settle`)."""
        with self.store.transaction() as db:
            db.execute(
                "UPDATE forwards SET state = 'sent', sent = ?, error = '', next_at = NULL,"
                " updated = ? WHERE key = ? AND destination = ?",
                (json.dumps(sorted(set(uids))), time.time(), key, destination),
            )
            return self._settle(db, key, destinations)

    def settle(self, key: str, destinations: Sequence[str] | None = None) -> bool:
        """Mark a done job forwarded when no row of ``destinations`` (default: any) is pending,
        e.g. after a destination was taken out of the configuration; True if it was."""
        with self.store.transaction() as db:
            return self._settle(db, key, destinations)

    @staticmethod
    def _settle(db, key: str, destinations: Sequence[str] | None) -> bool:
        sql, args = "SELECT COUNT(*) FROM forwards WHERE key = ? AND state = 'pending'", [key]
        if destinations is not None:
            sql += f" AND destination IN ({_marks(destinations)})"
            args += list(destinations)
        if destinations is not None and not destinations:
            return False  # no destination: done is final, never "forwarded"
        if db.execute(sql, args).fetchone()[0]:
            return False
        cur = db.execute(
            "UPDATE jobs SET state = 'forwarded', forward_error = '', next_forward_at = NULL,"
            " updated = ? WHERE key = ? AND state = 'done'",
            (time.time(), key),
        )
        return cur.rowcount == 1

    def failed(
        self, key: str, destination: str, error: str, retry_at: float, uids: Iterable[str]
    ) -> None:
        """An attempt failed: keep what was acknowledged, the error, and when to try again
        (the job's own ``forward_attempts``/``forward_error`` summarise every destination)."""
        now = time.time()
        with self.store.transaction() as db:
            db.execute(
                "UPDATE forwards SET sent = ?, attempts = attempts + 1, error = ?, next_at = ?,"
                " updated = ? WHERE key = ? AND destination = ?",
                (json.dumps(sorted(set(uids))), error, retry_at, now, key, destination),
            )
            db.execute(
                "UPDATE jobs SET forward_attempts = forward_attempts + 1, forward_error = ?,"
                " updated = ? WHERE key = ?",
                (f"{destination}: {error}", now, key),
            )

    def flush(self, keys: Iterable[str] | None = None) -> int:
        """Try every pending forward (of ``keys``, or all) now: what ``jobs retry --forward``
        and SIGHUP do after a destination came back. Returns the rows touched."""
        with self.store.transaction() as db:
            if keys is None:
                return db.execute(
                    "UPDATE forwards SET next_at = NULL WHERE state = 'pending'"
                ).rowcount
            n = 0
            for key in keys:
                n += db.execute(
                    "UPDATE forwards SET next_at = NULL WHERE state = 'pending' AND key = ?",
                    (key,),
                ).rowcount
            return n

    def backlog(self, destinations: Sequence[str]) -> dict[str, tuple[int, float | None]]:
        """Per destination: series still owed (of done jobs) and since when the oldest is owed."""
        out: dict[str, tuple[int, float | None]] = dict.fromkeys(destinations, (0, None))
        if not destinations:
            return out
        rows = (
            self.store.connect()
            .execute(
                "SELECT f.destination, COUNT(*), MIN(f.created) FROM forwards f"
                " JOIN jobs j ON j.key = f.key WHERE f.state = 'pending' AND j.state = 'done'"
                f" AND f.destination IN ({_marks(destinations)}) GROUP BY f.destination",
                tuple(destinations),
            )
            .fetchall()
        )
        for dest, count, oldest in rows:
            out[dest] = (count, oldest)
        return out
