"""The report of a batch: counts and throughput, failures and skipped files with reasons.

The summary that :func:`~dicom_sr.batch.runner.run_batch` returns (and ``--json`` prints)
lists at most :data:`LISTED` failures and skipped files; ``batch-report.json`` lists them all,
written from the job store a chunk at a time, so the client never holds them all.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any, BinaryIO

from dicom_sr.batch.plan import COMMIT_EVERY, Plan
from dicom_sr.fsio import atomic_write
from dicom_sr.jobs import JobStore

__all__ = ["LISTED", "failures", "write_report"]

#: Failures and skipped files listed in the returned summary (the file lists all).
LISTED = 1000


def failures(store: JobStore, plan: Plan, limit: int | None = None) -> Iterator[dict[str, Any]]:
    """The failed jobs of this plan with their reasons, by key, read a chunk at a time."""
    sql = (
        "SELECT key, source_series_uid, paths, attempts, error FROM jobs WHERE state = 'failed'"
        " AND key IN (SELECT key FROM plan_jobs WHERE walk = ?) AND key > ? ORDER BY key LIMIT ?"
    )
    last, n = "", 0
    while True:
        rows = store.connect().execute(sql, (plan.walk_id, last, COMMIT_EVERY)).fetchall()
        if not rows:
            return
        for key, series_uid, paths, attempts, error in rows:
            if limit is not None and n >= limit:
                return
            last, n = key, n + 1
            yield {
                "key": key,
                "source_series_uid": series_uid,
                "files": len(json.loads(paths)),
                "attempts": attempts,
                "error": error,
            }


def write_report(
    path: str | os.PathLike[str], summary: dict[str, Any], store: JobStore, plan: Plan
) -> int:
    """Write ``summary`` to ``path`` with the complete lists of failures and skipped files
    (streamed from the store), atomically."""
    head = {k: v for k, v in summary.items() if k not in ("failures", "skipped")}

    def write(fh: BinaryIO) -> None:
        fh.write(json.dumps(head, indent=2, default=str)[:-2].encode())  # without "\n}"
        _write_list(fh, "failures", failures(store, plan))
        _write_list(fh, "skipped", plan.skipped_files(store))
        fh.write(b"\n}\n")

    return atomic_write(path, write)


def _write_list(fh: BinaryIO, name: str, items: Iterator[dict[str, Any]]) -> None:
    fh.write(f',\n  "{name}": ['.encode())
    sep = "\n    "
    for item in items:
        fh.write((sep + json.dumps(item, default=str)).encode())
        sep = ",\n    "
    fh.write(b"\n  ]")
