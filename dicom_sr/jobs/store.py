"""The SQLite side of the job store: :class:`JobStore` on ``OUT/jobs.sqlite3``.

WAL, ``synchronous=FULL``, one connection per thread (a new one after a fork), one short
``BEGIN IMMEDIATE`` transaction per change; :mod:`dicom_sr.jobs` says why. The columns are
those of :class:`~dicom_sr.jobs.model.Job`, in the order of ``model._COLUMNS``.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from dicom_sr.jobs.model import _COLUMNS, _NEXT, STATES, Job, Kind, State, _check_state
from dicom_sr.jobs.schema import ADDED, SCHEMA, Transaction, use_wal
from dicom_sr.jobs.verbs import OperatorVerbs

__all__ = ["STORE_NAME", "JobStore"]

logger = logging.getLogger(__name__)

STORE_NAME = "jobs.sqlite3"


class JobStore(OperatorVerbs):
    """The job store of one output folder: ``JobStore(out_dir)`` opens or creates it
    (``OUT/jobs.sqlite3``, or ``path``).

    Safe to share between threads (one connection per thread) and to open from several
    processes at once. Every method is one short transaction.
    """

    def __init__(
        self,
        out_dir: str | os.PathLike[str],
        *,
        timeout: float = 60.0,
        path: str | os.PathLike[str] | None = None,
    ) -> None:
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        # ``path``: the store elsewhere than OUT/jobs.sqlite3 (a batch client's local disk)
        self.path = self.out_dir / STORE_NAME if path is None else Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.timeout = timeout
        self._local = threading.local()
        self.connect().executescript(SCHEMA)  # idempotent; its own transaction
        self._migrate()

    def _migrate(self) -> None:
        """Add the columns of :data:`~dicom_sr.jobs.schema.ADDED` that an older store lacks
        (one transaction)."""
        with self.transaction() as db:
            have = {row[1] for row in db.execute("PRAGMA table_info(jobs)")}
            for name, decl in ADDED:
                if name not in have:
                    db.execute(f"ALTER TABLE jobs ADD COLUMN {name} {decl}")

    # -- connections -------------------------------------------------------------------------

    def connect(self) -> sqlite3.Connection:
        """This thread's connection (a new one after a fork): autocommit, WAL, busy timeout."""
        db = getattr(self._local, "db", None)
        if db is not None and self._local.pid == os.getpid():
            return db
        db = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
        db.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
        use_wal(db, self.timeout)
        db.execute("PRAGMA synchronous = FULL")
        self._local.db, self._local.pid = db, os.getpid()
        return db

    def close(self) -> None:
        """Close this thread's connection (others close when their thread ends)."""
        db = getattr(self._local, "db", None)
        if db is not None and self._local.pid == os.getpid():
            db.close()
        self._local.db = None

    def transaction(self) -> Transaction:
        """``with store.transaction() as db:`` one ``BEGIN IMMEDIATE`` ... ``COMMIT``."""
        return Transaction(self.connect())

    # -- reading -----------------------------------------------------------------------------

    def get(self, key: str) -> Job | None:
        """The job with this key, or None."""
        row = (
            self.connect().execute(f"SELECT {_COLUMNS} FROM jobs WHERE key = ?", (key,)).fetchone()
        )
        return None if row is None else Job._from_row(row)

    @staticmethod
    def _get(db: sqlite3.Connection, key: str) -> Job:
        return Job._from_row(
            db.execute(f"SELECT {_COLUMNS} FROM jobs WHERE key = ?", (key,)).fetchone()
        )

    def jobs(
        self,
        state: str | None = None,
        kind: str | None = None,
        *,
        source_series_uid: str | None = None,
    ) -> list[Job]:
        """Jobs, oldest first, optionally of one state, kind and source series."""
        sql, args = f"SELECT {_COLUMNS} FROM jobs WHERE 1", []
        if source_series_uid is not None:
            sql, args = sql + " AND source_series_uid = ?", [source_series_uid]
        if state is not None:
            sql, args = sql + " AND state = ?", [*args, state]
        if kind is not None:
            sql, args = sql + " AND kind = ?", [*args, kind]
        rows = self.connect().execute(sql + " ORDER BY created, key", args).fetchall()
        return [Job._from_row(r) for r in rows]

    def counts(self, kind: str | None = None) -> dict[str, int]:
        """Number of jobs per state (every state present, zeros included)."""
        sql = "SELECT state, COUNT(*) FROM jobs" + (" WHERE kind = ?" if kind else "")
        rows = self.connect().execute(sql + " GROUP BY state", (kind,) if kind else ()).fetchall()
        out = dict.fromkeys(STATES, 0)
        out.update(dict(rows))
        return out

    # -- writing -----------------------------------------------------------------------------

    def add(
        self,
        key: str,
        *,
        kind: Kind,
        study_uid: str,
        source_series_uid: str,
        config_hash: str,
        paths: Iterable[str | os.PathLike[str]] = (),
        revision: int = 0,
        state: State = "queued",
        frames: int = 0,
        calling_ae: str = "",
    ) -> Job:
        """Add a job, or merge ``paths`` into an existing one (its state kept: done stays done).

        ``calling_ae``: who sent the series (a node's job), shown by ``dicom-sr jobs``."""
        _check_state(state)
        paths = [str(p) for p in paths]
        now = time.time()
        with self.transaction() as db:
            row = db.execute("SELECT paths FROM jobs WHERE key = ?", (key,)).fetchone()
            if row is None:
                db.execute(
                    "INSERT INTO jobs (key, kind, state, study_uid, source_series_uid, config_hash,"
                    " revision, paths, frames, created, updated, calling_ae)"
                    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                    (key, kind, state, study_uid, source_series_uid, config_hash, revision,
                     json.dumps(sorted(set(paths))), frames, now, now, calling_ae),
                )  # fmt: skip
            elif paths:
                merged = sorted(set(json.loads(row[0])) | set(paths))
                db.execute(
                    "UPDATE jobs SET paths = ?, frames = MAX(frames, ?), updated = ? WHERE key = ?",
                    (json.dumps(merged), frames, now, key),
                )
        return self.get(key)  # type: ignore[return-value]

    def add_many(self, jobs: Iterable[dict[str, Any]], *, kind: Kind) -> dict[str, str]:
        """:meth:`add` for many jobs in one transaction (a batch plan); returns key -> state.

        Each dict holds ``key``, ``study_uid``, ``source_series_uid``, ``config_hash``, and
        optionally ``paths``, ``frames``, ``revision``, ``state``.
        """
        now = time.time()
        states: dict[str, str] = {}
        with self.transaction() as db:
            for j in jobs:
                state = j.get("state", "queued")
                _check_state(state)
                db.execute(
                    "INSERT INTO jobs (key, kind, state, study_uid, source_series_uid, config_hash,"
                    " revision, paths, frames, created, updated) VALUES (?,?,?,?,?,?,?,?,?,?,?)"
                    " ON CONFLICT(key) DO UPDATE SET paths = excluded.paths,"
                    " frames = excluded.frames, updated = excluded.updated",
                    (j["key"], kind, state, j["study_uid"], j["source_series_uid"],
                     j["config_hash"], j.get("revision", 0),
                     json.dumps(sorted({str(p) for p in j.get("paths", ())})),
                     j.get("frames", 0), now, now),
                )  # fmt: skip
                row = db.execute("SELECT state FROM jobs WHERE key = ?", (j["key"],)).fetchone()
                states[j["key"]] = row[0]
        return states

    def add_paths(self, key: str, paths: Iterable[str | os.PathLike[str]]) -> None:
        """Add source files to a job (a node receiving more instances of a series)."""
        with self.transaction() as db:
            row = db.execute("SELECT paths FROM jobs WHERE key = ?", (key,)).fetchone()
            if row is None:
                raise KeyError(f"{self.path}: no job {key}")
            merged = sorted(set(json.loads(row[0])) | {str(p) for p in paths})
            db.execute(
                "UPDATE jobs SET paths = ?, updated = ? WHERE key = ?",
                (json.dumps(merged), time.time(), key),
            )

    def set_state(
        self,
        key: str,
        state: State,
        *,
        error: str | None = None,
        result: dict[str, Any] | None = None,
        frames: int | None = None,
    ) -> Job:
        """Move a job to ``state`` (checked against the allowed transitions); done, failed and
        queued clear the lease. Raises KeyError for an unknown key, ValueError for a bad move."""
        _check_state(state)
        with self.transaction() as db:
            row = db.execute("SELECT state FROM jobs WHERE key = ?", (key,)).fetchone()
            if row is None:
                raise KeyError(f"{self.path}: no job {key}")
            if state != row[0] and state not in _NEXT[row[0]]:
                raise ValueError(f"{self.path}: job {key} cannot go from {row[0]} to {state}")
            sets, args = ["state = ?", "updated = ?"], [state, time.time()]
            if error is not None:
                sets, args = [*sets, "error = ?"], [*args, error]
            if result is not None:
                sets, args = [*sets, "result = ?"], [*args, json.dumps(result, default=str)]
            if frames is not None:
                sets, args = [*sets, "frames = ?"], [*args, frames]
            if state in ("queued", "done", "failed"):
                sets.append("lease_owner = NULL, lease_expires = NULL")
            if state == "done":
                sets.append("next_forward_at = NULL")
            db.execute(f"UPDATE jobs SET {', '.join(sets)} WHERE key = ?", (*args, key))
        return self.get(key)  # type: ignore[return-value]

    def claim(
        self,
        owner: str,
        *,
        lease_seconds: float,
        kinds: Iterable[str] | None = None,
        key: str | None = None,
        max_attempts: int | None = None,
    ) -> Job | None:
        """Atomically take one queued job, or one processing job whose lease expired or whose
        owner died, oldest first (only ``key`` if given); count an attempt; None if none.

        With ``max_attempts``, a job that already had that many attempts is marked failed
        (its last error kept) instead of being claimed again.
        """
        now = time.time()
        sql = f"SELECT {_COLUMNS} FROM jobs WHERE state IN ('queued', 'processing')"
        args: list[Any] = []
        if key is not None:
            sql, args = sql + " AND key = ?", [key]
        if kinds is not None:
            kinds = list(kinds)
            sql += f" AND kind IN ({', '.join('?' * len(kinds))})"
            args += kinds
        with self.transaction() as db:
            for row in db.execute(sql + " ORDER BY created, key", args).fetchall():
                job = Job._from_row(row)
                if job.state == "processing" and not job.lease_gone(now):
                    continue
                if job.state == "queued" and job.not_before is not None and job.not_before > now:
                    continue  # backing off after a transient failure
                if job.state == "processing":
                    why = f"worker {job.lease_owner} died or stalled (attempt {job.attempts})"
                    job.error = job.error or why
                    logger.info("job %s: %s; taking it over", job.key, why)
                if max_attempts is not None and job.attempts >= max_attempts:
                    error = f"gave up after {job.attempts} attempts: {job.error or 'no reason'}"
                    db.execute(
                        "UPDATE jobs SET state = 'failed', error = ?, lease_owner = NULL,"
                        " lease_expires = NULL, updated = ? WHERE key = ?",
                        (error, now, job.key),
                    )
                    continue
                db.execute(
                    "UPDATE jobs SET state = 'processing', lease_owner = ?, lease_expires = ?,"
                    " attempts = attempts + 1, error = ?, updated = ?, not_before = NULL"
                    " WHERE key = ?",
                    (owner, now + lease_seconds, job.error, now, job.key),
                )
                job.state, job.lease_owner, job.lease_expires = (
                    "processing",
                    owner,
                    now + lease_seconds,
                )
                job.attempts += 1
                return job
        return None

    def renew(self, key: str, owner: str, lease_seconds: float) -> bool:
        """Extend ``owner``'s lease on a processing job; False when the lease was lost."""
        now = time.time()
        with self.transaction() as db:
            cur = db.execute(
                "UPDATE jobs SET lease_expires = ?, updated = ? WHERE key = ? AND lease_owner = ?"
                " AND state = 'processing'",
                (now + lease_seconds, now, key, owner),
            )
            return cur.rowcount == 1

    def release(
        self,
        key: str,
        owner: str,
        *,
        error: str | None = None,
        refund: bool = False,
        retry_at: float | None = None,
    ) -> bool:
        """Give a processing job back to the queue without finishing it.

        ``refund``: the stop was ours (the node stopping, a lost lease), so the attempt that
        the claim counted is given back. ``retry_at``: not claimed again before this time (the
        back-off after a transient failure)."""
        with self.transaction() as db:
            cur = db.execute(
                "UPDATE jobs SET state = 'queued', lease_owner = NULL, lease_expires = NULL,"
                " error = COALESCE(?, error), updated = ?, not_before = ?,"
                " attempts = MAX(0, attempts - ?) WHERE key = ? AND lease_owner = ?"
                " AND state = 'processing'",
                (error, time.time(), retry_at, int(refund), key, owner),
            )
            return cur.rowcount == 1

    def requeue_unfinished(
        self,
        kind: str,
        *,
        failed: bool = False,
        force: bool = False,
        keys: Iterable[str] | None = None,
    ) -> int:
        """On start: processing jobs of ``kind`` whose lease expired or whose owner died go back
        to queued (``force``: all of them); ``failed``: failed ones too, attempts reset.
        ``keys`` limits the failed ones requeued to these (a batch's own plan)."""
        now = time.time()
        n = 0
        with self.transaction() as db:
            rows = db.execute(
                f"SELECT {_COLUMNS} FROM jobs WHERE kind = ? AND state = 'processing'", (kind,)
            ).fetchall()
            for job in map(Job._from_row, rows):
                if force or job.lease_gone(now):
                    db.execute(
                        "UPDATE jobs SET state = 'queued', lease_owner = NULL,"
                        " lease_expires = NULL, updated = ? WHERE key = ?",
                        (now, job.key),
                    )
                    n += 1
            if failed:
                sql = (
                    "UPDATE jobs SET state = 'queued', attempts = 0, updated = ?"
                    " WHERE kind = ? AND state = 'failed'"
                )
                if keys is None:
                    n += db.execute(sql, (now, kind)).rowcount
                else:
                    for key in keys:
                        n += db.execute(sql + " AND key = ?", (now, kind, key)).rowcount
        return n
