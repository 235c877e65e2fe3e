"""The streaming plan of ``dicom-sr batch``: archive files -> series -> jobs in the job store.

The archive is walked lazily, one folder listing at a time. Each file's header (no pixel data)
is read once (again only when its size or time stamp changed), *outside* any write
transaction, and its row is written to a staging table (``plan_files``) of the job store in
short transactions of a few hundred files, so other writers never wait for header reads and a
crash while planning resumes where it stopped.

The plan follows the archive as it is now:

* every row carries the id of the walk that last saw it; series are grouped, and duplicate SOP
  Instance UIDs found, among the files that *this* walk saw (the first path, in sorted order,
  is planned; the others are listed as copies);
* rows of files that are gone are deleted after a complete walk (:attr:`Plan.gone`);
* a moved or renamed file is a new path with the same UIDs: its series keeps its job key
  (derived series UID = source series UID + the hash of what decides the pixels), so a done
  series stays done and only the job's paths change.

The jobs of this walk are listed in ``plan_jobs`` (walk, order, key), which the client reads
back a chunk at a time: no list of every series is held in memory.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dicom_sr.config import PipelineConfig
from dicom_sr.dicom.discover import Instance, Skipped, inspect_file
from dicom_sr.jobs import JobStore
from dicom_sr.pipeline import derived_series_uid_for, identity_hash

__all__ = ["PlannedSeries", "Plan", "walk", "plan_archive", "COMMIT_EVERY"]

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
    duplicate_of TEXT,
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
CREATE TABLE IF NOT EXISTS plan_jobs (
    plan TEXT NOT NULL,
    walk TEXT NOT NULL,
    seq INTEGER NOT NULL,
    key TEXT NOT NULL,
    files INTEGER NOT NULL,
    frames INTEGER NOT NULL,
    PRIMARY KEY (walk, seq)
);
CREATE INDEX IF NOT EXISTS plan_jobs_plan ON plan_jobs (plan, walk);
"""

#: Files staged per write transaction (what a crash can cost; how long other writers wait).
COMMIT_EVERY = 500

#: Bumped when the staging rows change meaning: a new version stages the archive afresh.
_STAGING_VERSION = 2


@dataclass(frozen=True)
class PlannedSeries:
    """One series of the plan: one job."""

    key: str
    files: int
    frames: int
    state: str


@dataclass
class Plan:
    """What planning found (counts only; the rows stay in the store)."""

    plan_id: str
    config_hash: str
    walk_id: str = ""
    series: int = 0
    frames: int = 0
    files: int = 0
    inspected: int = 0
    skipped: int = 0
    gone: int = 0
    seconds: float = 0.0

    def planned(self, store: JobStore, chunk: int = COMMIT_EVERY) -> Iterator[PlannedSeries]:
        """The series of this walk in plan order (study, series), read a chunk at a time."""
        sql = (
            "SELECT pj.seq, pj.key, pj.files, pj.frames, j.state FROM plan_jobs pj"
            " JOIN jobs j ON j.key = pj.key WHERE pj.walk = ? AND pj.seq > ?"
            " ORDER BY pj.seq LIMIT ?"
        )
        last = -1
        while rows := store.connect().execute(sql, (self.walk_id, last, chunk)).fetchall():
            for seq, key, files, frames, state in rows:
                last = seq
                yield PlannedSeries(key, files, frames, state)

    def skipped_files(
        self, store: JobStore, limit: int | None = None, chunk: int = COMMIT_EVERY
    ) -> Iterator[dict[str, str]]:
        """The files of this walk that are not processed, each with its reason, by path
        (read a chunk at a time)."""
        sql = (
            "SELECT path, skipped, duplicate_of FROM plan_files WHERE plan = ? AND seen = ?"
            " AND (skipped IS NOT NULL OR duplicate_of IS NOT NULL) AND path > ?"
            " ORDER BY path LIMIT ?"
        )
        last, n = "", 0
        while True:
            args = (self.plan_id, self.walk_id, last, chunk)
            rows = store.connect().execute(sql, args).fetchall()
            if not rows:
                return
            for path, skipped, twin in rows:
                if limit is not None and n >= limit:
                    return
                last, n = path, n + 1
                reason = skipped or f"same SOP Instance UID as {twin}, already planned"
                yield {"path": path, "reason": reason}


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


def plan_id_for(inputs: Sequence[str | os.PathLike[str]], max_pixels: int | None = None) -> str:
    """The staging key of a set of archive roots (and of the size limit, which decides what
    is skipped): the same roots resume the same plan."""
    roots = sorted(str(Path(p).resolve()) for p in inputs)
    blob = json.dumps([_STAGING_VERSION, roots, max_pixels])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


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
    pid = plan_id_for(inputs, max_pixels)
    plan = Plan(pid, identity_hash(config), uuid.uuid4().hex)
    with store.transaction() as tx:
        tx.execute(
            "INSERT INTO plans (plan, inputs, updated) VALUES (?, ?, ?) ON CONFLICT(plan)"
            " DO UPDATE SET updated = excluded.updated",
            (pid, json.dumps([str(p) for p in inputs]), time.time()),
        )
    _stage_walk(plan, inputs, store, max_pixels, on_file)
    plan.gone = _forget_gone(store, plan)
    _mark_duplicates(store, plan)
    plan.skipped = db.execute(
        "SELECT COUNT(*) FROM plan_files WHERE plan = ? AND seen = ?"
        " AND (skipped IS NOT NULL OR duplicate_of IS NOT NULL)",
        (pid, plan.walk_id),
    ).fetchone()[0]
    _add_jobs(store, plan, config)
    plan.seconds = time.perf_counter() - t0
    logger.info(
        "planned %d series from %d files (%d read now, %d skipped, %d gone) in %.1f s",
        plan.series,
        plan.files,
        plan.inspected,
        plan.skipped,
        plan.gone,
        plan.seconds,
    )
    return plan


def _stage_walk(plan, inputs, store: JobStore, max_pixels, on_file) -> None:
    """Walk and stage: header reads happen here, between the short write transactions."""
    db = store.connect()
    pending: list[tuple[str, tuple[Any, ...]]] = []

    def flush() -> None:
        if pending:
            with store.transaction() as tx:
                for sql, args in pending:
                    tx.execute(sql, args)
            pending.clear()

    staged = 0
    try:
        for path in walk(inputs, exclude=[store.out_dir]):
            plan.files += 1
            if on_file is not None:
                on_file(plan.files)
            stamp = _stamp(path)
            known = db.execute(
                "SELECT size, mtime FROM plan_files WHERE plan = ? AND path = ?",
                (plan.plan_id, str(path)),
            ).fetchone()
            if known is not None and tuple(known) == stamp:  # planned before, unchanged
                pending.append(
                    (
                        "UPDATE plan_files SET seen = ? WHERE plan = ? AND path = ?",
                        (plan.walk_id, plan.plan_id, str(path)),
                    )
                )
            else:  # new, or changed since: read its header (no lock held)
                found = inspect_file(path, max_pixels=max_pixels)
                pending.append(_row(plan.plan_id, path, found, stamp, plan.walk_id))
                plan.inspected += 1
            staged += 1
            if staged >= COMMIT_EVERY:
                flush()
                staged = 0
        pending.append(("UPDATE plans SET complete = 1 WHERE plan = ?", (plan.plan_id,)))
    finally:
        flush()  # keep what was inspected: the next run resumes from there


def _stamp(path: Path) -> tuple[int, int]:
    """(size, mtime in ns): a file whose stamp changed is read again at the next plan."""
    try:
        st = path.stat()
    except OSError:
        return (-1, -1)
    return (st.st_size, st.st_mtime_ns)


def _row(
    pid: str, path: Path, found: Instance | Skipped, stamp: tuple[int, int], walk_id: str
) -> tuple[str, tuple[Any, ...]]:
    """The statement staging one file: its header's UIDs, or the reason it is skipped."""
    sql = (
        "INSERT OR REPLACE INTO plan_files (plan, path, study_uid, series_uid, sop_uid,"
        " instance_number, frames, skipped, size, mtime, seen) VALUES (?,?,?,?,?,?,?,?,?,?,?)"
    )
    if isinstance(found, Skipped):
        logger.info("skipping %s: %s", found.path, found.reason)
        return sql, (pid, str(path), None, None, None, None, 0, found.reason, *stamp, walk_id)
    return sql, (
        pid,
        str(path),
        found.study_uid,
        found.series_uid,
        found.sop_instance_uid,
        found.instance_number,
        found.number_of_frames,
        None,
        *stamp,
        walk_id,
    )


def _delete_in_chunks(store: JobStore, table: str, where: str, args: tuple[Any, ...]) -> int:
    """Delete the rows of ``table`` matching ``where``, a short transaction per chunk."""
    n = 0
    sql = (
        f"DELETE FROM {table} WHERE rowid IN"
        f" (SELECT rowid FROM {table} WHERE {where} LIMIT {COMMIT_EVERY})"
    )
    while True:
        with store.transaction() as tx:
            count = tx.execute(sql, args).rowcount
        n += count
        if count < COMMIT_EVERY:
            return n


def _forget_gone(store: JobStore, plan: Plan) -> int:
    """After a complete walk: delete the rows of files this walk did not see (gone, moved)."""
    where = "plan = ? AND (seen IS NULL OR seen != ?)"
    gone = _delete_in_chunks(store, "plan_files", where, (plan.plan_id, plan.walk_id))
    if gone:
        logger.info("%d file(s) of the previous plan are gone from the archive", gone)
    return gone


def _mark_duplicates(store: JobStore, plan: Plan) -> None:
    """Among this walk's usable files, a SOP Instance UID seen twice is planned from its first
    path (sorted); the others are copies. Recomputed at each walk, so a copy is planned once
    its original has gone."""
    db = store.connect()
    args = (plan.plan_id, plan.walk_id)
    with store.transaction() as tx:
        tx.execute(
            "UPDATE plan_files SET duplicate_of = NULL WHERE plan = ? AND duplicate_of IS NOT NULL",
            (plan.plan_id,),
        )
    twins = db.execute(
        "SELECT sop_uid, MIN(path) FROM plan_files WHERE plan = ? AND seen = ?"
        " AND skipped IS NULL GROUP BY sop_uid HAVING COUNT(*) > 1",
        args,
    ).fetchall()  # as many rows as duplicated instances: few
    for start in range(0, len(twins), COMMIT_EVERY):
        with store.transaction() as tx:
            for sop_uid, first in twins[start : start + COMMIT_EVERY]:
                tx.execute(
                    "UPDATE plan_files SET duplicate_of = ? WHERE plan = ? AND seen = ?"
                    " AND sop_uid = ? AND skipped IS NULL AND path != ?",
                    (first, *args, sop_uid, first),
                )


def _add_jobs(store: JobStore, plan: Plan, config: PipelineConfig) -> None:
    """Group this walk's usable rows by series (in SQL) and add their jobs and the plan's
    list of them, a chunk at a time; the lists of older walks of this plan are deleted."""
    cursor = store.connect().execute(
        "SELECT study_uid, series_uid, json_group_array(path), SUM(frames) FROM"
        " (SELECT * FROM plan_files WHERE plan = ? AND seen = ? AND skipped IS NULL"
        " AND duplicate_of IS NULL ORDER BY path)"
        " GROUP BY study_uid, series_uid ORDER BY study_uid, series_uid",
        (plan.plan_id, plan.walk_id),
    )
    while rows := cursor.fetchmany(COMMIT_EVERY):
        jobs = [
            {
                "key": derived_series_uid_for(series_uid, config),
                "study_uid": study_uid,
                "source_series_uid": series_uid,
                "config_hash": plan.config_hash,
                "paths": json.loads(paths),
                "frames": frames,
            }
            for study_uid, series_uid, paths, frames in rows
        ]
        store.add_many(jobs, kind="batch")
        with store.transaction() as tx:
            tx.executemany(
                "INSERT OR REPLACE INTO plan_jobs (plan, walk, seq, key, files, frames)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (plan.plan_id, plan.walk_id, plan.series + i, j["key"], len(j["paths"]),
                     j["frames"])
                    for i, j in enumerate(jobs)
                ],
            )  # fmt: skip
        plan.series += len(jobs)
        plan.frames += sum(j["frames"] for j in jobs)
    where = "plan = ? AND walk != ?"
    _delete_in_chunks(store, "plan_jobs", where, (plan.plan_id, plan.walk_id))
