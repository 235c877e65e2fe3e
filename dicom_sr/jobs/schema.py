"""The job store's SQLite schema, its additions for older stores, and the two helpers every
connection uses: switching to WAL and one ``BEGIN IMMEDIATE`` transaction."""

from __future__ import annotations

import sqlite3
import time

__all__ = ["SCHEMA", "ADDED", "use_wal", "Transaction"]

#: The tables and indexes of a job store (idempotent).
SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    key TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    state TEXT NOT NULL,
    study_uid TEXT NOT NULL DEFAULT '',
    source_series_uid TEXT NOT NULL DEFAULT '',
    config_hash TEXT NOT NULL DEFAULT '',
    revision INTEGER NOT NULL DEFAULT 0,
    paths TEXT NOT NULL DEFAULT '[]',
    frames INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    error TEXT NOT NULL DEFAULT '',
    lease_owner TEXT,
    lease_expires REAL,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    result TEXT,
    forward_attempts INTEGER NOT NULL DEFAULT 0,
    forward_error TEXT NOT NULL DEFAULT '',
    next_forward_at REAL
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, kind);
CREATE TABLE IF NOT EXISTS forwards (
    key TEXT NOT NULL,
    destination TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    sent TEXT NOT NULL DEFAULT '[]',
    attempts INTEGER NOT NULL DEFAULT 0,
    error TEXT NOT NULL DEFAULT '',
    next_at REAL,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    PRIMARY KEY (key, destination)
);
"""

#: Columns added after the first release: (name, declaration), added to older stores on open.
ADDED = (
    ("calling_ae", "TEXT NOT NULL DEFAULT ''"),
    ("not_before", "REAL"),
    ("purged", "REAL"),
)


def use_wal(db: sqlite3.Connection, timeout: float) -> None:
    """Switch ``db`` to WAL, retrying: SQLite runs no busy handler for this one pragma.

    WAL is a property of the file, so only the first open of a fresh store converts it; two
    processes opening a fresh store at once would otherwise see "database is locked" at once.
    """
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        try:
            if db.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal":
                return
            db.execute("PRAGMA journal_mode = WAL")
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            if time.monotonic() > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


class Transaction:
    """``BEGIN IMMEDIATE`` on enter, ``COMMIT`` (or ``ROLLBACK`` on an exception) on exit."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, exc_type, exc, tb) -> None:
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")
