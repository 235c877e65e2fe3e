"""The streaming plan of ``dicom-sr batch``: archive files -> series -> jobs in the job store.

The archive is walked lazily, one folder listing at a time; each file's header (no pixel data)
is read once (again only when its size or time stamp changed) and its row written to a staging
table (``plan_files``) of ``OUT/jobs.sqlite3``, committed every few hundred files. Series are
then grouped in SQL, so no list of every header is ever held in memory, and a crash while
planning resumes where it stopped: files already in the table are not read again. Only the
files seen by the latest walk are grouped (a file removed from the archive leaves the plan).

Each series becomes one job keyed by its derived series UID (source series + the hash of what
decides the pixels), so a re-run finds its done jobs and a changed pipeline makes new ones.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from dicom_sr.config import PipelineConfig
from dicom_sr.dicom.discover import Instance, Skipped, inspect_file
from dicom_sr.jobs import JobStore
from dicom_sr.pipeline import derived_series_uid_for, identity_hash

__all__ = ["PlannedSeries", "Plan", "walk", "plan_archive"]

logger = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS plan_files (
    plan TEXT NOT NULL,
    path TEXT NOT NULL,
    study_uid TEXT,
    series_uid TEXT,
    sop_uid TEXT,
    instance_number INTEGER,
    frames INTEGER NOT NULL DEFAULT 0,
    skipped TEXT,
    size INTEGER,
    mtime INTEGER,
    seen TEXT,
    PRIMARY KEY (plan, path)
);
CREATE INDEX IF NOT EXISTS plan_files_sop ON plan_files (plan, sop_uid);
CREATE INDEX IF NOT EXISTS plan_files_series ON plan_files (plan, study_uid, series_uid);
CREATE TABLE IF NOT EXISTS plans (
    plan TEXT PRIMARY KEY,
    inputs TEXT NOT NULL,
    complete INTEGER NOT NULL DEFAULT 0,
    updated REAL NOT NULL
);
"""

#: Rows inspected between two commits of the staging table (what a crash can cost).
COMMIT_EVERY = 500


@dataclass(frozen=True)
class PlannedSeries:
    """One series of the plan: one job."""

    key: str
    study_uid: str
    series_uid: str
    files: int
    frames: int
    state: str


@dataclass
class Plan:
    """What planning found: the series (jobs) and the number of files read and skipped."""

    plan_id: str
    config_hash: str
    walk_id: str = ""
    series: list[PlannedSeries] = field(default_factory=list)
    files: int = 0
    inspected: int = 0
    skipped: int = 0
    seconds: float = 0.0

    def skipped_files(self, store: JobStore, limit: int | None = None) -> list[dict[str, str]]:
        """The files that are not processed, each with its reason (read back from the store)."""
        sql = "SELECT path, skipped FROM plan_files WHERE plan = ? AND seen = ?"
        sql += " AND skipped IS NOT NULL ORDER BY path" + (f" LIMIT {int(limit)}" if limit else "")
        rows = store.connect().execute(sql, (self.plan_id, self.walk_id)).fetchall()
        return [{"path": p, "reason": r} for p, r in rows]


def walk(
    inputs: Iterable[str | os.PathLike[str]], exclude: Iterable[str | os.PathLike[str]] = ()
) -> Iterator[Path]:
    """Every file under ``inputs`` once, lazily, in a stable order (a DICOMDIR: its folder);
    folders in ``exclude`` (the output folder inside the archive) are not entered."""
    skip = {os.path.realpath(p) for p in exclude}
    seen: set[str] = set()
    for item in inputs:
        path = Path(item)
        if path.is_file() and path.name.upper() == "DICOMDIR":
            path = path.parent  # the records it lists are files of that folder
        if path.is_file():
            if str(path) not in seen:
                seen.add(str(path))
                yield path
            continue
        for root, dirs, files in os.walk(path):
            if os.path.realpath(root) in skip:
                dirs[:] = []
                continue
            dirs.sort()
            for name in sorted(files):
                if name.upper() != "DICOMDIR":
                    yield Path(root) / name


def plan_id_for(inputs: Sequence[str | os.PathLike[str]]) -> str:
    """The staging key of a set of archive roots: the same roots resume the same plan."""
    roots = sorted(str(Path(p).resolve()) for p in inputs)
    return hashlib.sha256(json.dumps(roots).encode()).hexdigest()[:16]


def plan_archive(
    inputs: Sequence[str | os.PathLike[str]],
    config: PipelineConfig,
    store: JobStore,
    *,
    max_pixels: int | None = None,
    on_file: Callable[[int], None] | None = None,
) -> Plan:
    """Walk ``inputs``, stage each file's header row, group series in SQL, add one batch job
    per series (done jobs stay done). Resumes a plan a crash interrupted; the output folder
    is never planned, even inside the archive."""
    t0 = time.perf_counter()
    db = store.connect()
    db.executescript(_SCHEMA)
    have = {row[1] for row in db.execute("PRAGMA table_info(plan_files)")}
    for column in ("size INTEGER", "mtime INTEGER", "seen TEXT"):  # stores of older versions
        if column.split()[0] not in have:
            db.execute(f"ALTER TABLE plan_files ADD COLUMN {column}")
    pid = plan_id_for(inputs)
    plan = Plan(pid, identity_hash(config), uuid.uuid4().hex)
    db.execute(
        "INSERT INTO plans (plan, inputs, updated) VALUES (?, ?, ?) ON CONFLICT(plan) DO UPDATE"
        " SET updated = excluded.updated",
        (pid, json.dumps([str(p) for p in inputs]), time.time()),
    )
    pending = 0
    db.execute("BEGIN IMMEDIATE")
    try:
        for path in walk(inputs, exclude=[store.out_dir]):
            plan.files += 1
            if on_file is not None:
                on_file(plan.files)
            stamp = _stamp(path)
            key = (pid, str(path))
            known = db.execute(
                "SELECT size, mtime FROM plan_files WHERE plan = ? AND path = ?", key
            ).fetchone()
            pending += 1
            if known is not None and tuple(known) == stamp:  # planned before, unchanged
                db.execute(
                    "UPDATE plan_files SET seen = ? WHERE plan = ? AND path = ?",
                    (plan.walk_id, *key),
                )
            else:
                if known is not None:  # the file changed since: read it again
                    db.execute("DELETE FROM plan_files WHERE plan = ? AND path = ?", key)
                found = inspect_file(path, max_pixels=max_pixels)
                _stage(db, pid, path, found, stamp, plan.walk_id)
                plan.inspected += 1
            if pending >= COMMIT_EVERY:
                db.execute("COMMIT")
                db.execute("BEGIN IMMEDIATE")
                pending = 0
        db.execute("UPDATE plans SET complete = 1 WHERE plan = ?", (pid,))
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("COMMIT")  # keep what was inspected: the next run resumes from there
        raise
    plan.skipped = db.execute(
        "SELECT COUNT(*) FROM plan_files WHERE plan = ? AND seen = ? AND skipped IS NOT NULL",
        (pid, plan.walk_id),
    ).fetchone()[0]
    plan.series = _add_jobs(store, pid, plan.walk_id, config, plan.config_hash)
    plan.seconds = time.perf_counter() - t0
    logger.info(
        "planned %d series from %d files (%d read now, %d skipped) in %.1f s",
        len(plan.series),
        plan.files,
        plan.inspected,
        plan.skipped,
        plan.seconds,
    )
    return plan


def _stamp(path: Path) -> tuple[int, int]:
    """(size, mtime in ns): a file whose stamp changed is read again at the next plan."""
    try:
        st = path.stat()
    except OSError:
        return (-1, -1)
    return (st.st_size, st.st_mtime_ns)


def _stage(
    db: sqlite3.Connection,
    pid: str,
    path: Path,
    found: Instance | Skipped,
    stamp: tuple[int, int],
    walk_id: str,
) -> None:
    """One staging row: the header's UIDs, or the reason the file is skipped."""
    if isinstance(found, Skipped):
        logger.info("skipping %s: %s", found.path, found.reason)
        db.execute(
            "INSERT INTO plan_files (plan, path, skipped, size, mtime, seen)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (pid, str(path), found.reason, *stamp, walk_id),
        )
        return
    twin = db.execute(
        "SELECT path FROM plan_files WHERE plan = ? AND sop_uid = ? AND skipped IS NULL",
        (pid, found.sop_instance_uid),
    ).fetchone()
    reason = f"same SOP Instance UID as {twin[0]}, already planned" if twin else None
    db.execute(
        "INSERT INTO plan_files (plan, path, study_uid, series_uid, sop_uid, instance_number,"
        " frames, skipped, size, mtime, seen) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            pid,
            str(path),
            found.study_uid,
            found.series_uid,
            found.sop_instance_uid,
            found.instance_number,
            found.number_of_frames,
            reason,
            *stamp,
            walk_id,
        ),
    )


def _add_jobs(
    store: JobStore, pid: str, walk_id: str, config: PipelineConfig, config_hash: str
) -> list[PlannedSeries]:
    """Group the staged rows by series (in SQL) and add their jobs, a chunk at a time."""
    cursor = store.connect().execute(
        "SELECT study_uid, series_uid, json_group_array(path), SUM(frames) FROM"
        " (SELECT * FROM plan_files WHERE plan = ? AND seen = ? AND skipped IS NULL"
        " ORDER BY path) GROUP BY study_uid, series_uid ORDER BY study_uid, series_uid",
        (pid, walk_id),
    )
    out: list[PlannedSeries] = []
    while rows := cursor.fetchmany(COMMIT_EVERY):
        jobs = [
            {
                "key": derived_series_uid_for(series_uid, config),
                "study_uid": study_uid,
                "source_series_uid": series_uid,
                "config_hash": config_hash,
                "paths": json.loads(paths),
                "frames": frames,
            }
            for study_uid, series_uid, paths, frames in rows
        ]
        states = store.add_many(jobs, kind="batch")
        out += [
            PlannedSeries(
                j["key"], j["study_uid"], j["source_series_uid"], len(j["paths"]), j["frames"],
                states[j["key"]],
            )
            for j in jobs
        ]  # fmt: skip
    return out
