"""The one task of ``dicom-sr batch``: a plain function of (file paths, config, out dir).

It runs in a worker process (embedded LocalCluster, a remote Dask worker, or in-process),
builds the Series from the files on disk, runs :func:`~dicom_sr.pipeline.process_series` and
returns a small JSON-able dict. It never opens the job store: the client that submitted it
owns the store, counts the attempts and decides the retries, so a worker needs the input
paths and the output folder, and nothing else. No model or callback travels back.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from dicom_sr.config import PipelineConfig
from dicom_sr.errors import CANCELLED, PERMANENT, TRANSIENT, DicomSrError, classify, describe
from dicom_sr.pipeline import process_series

__all__ = ["run_series_task"]

logger = logging.getLogger(__name__)

#: One series at a time per worker process, whatever its thread count (torch threads are the
#: parallelism inside a series; two series in one process would fight over them and memory).
_ONE_SERIES = threading.Lock()


@functools.lru_cache(maxsize=4)
def _config(text: str) -> PipelineConfig:
    """The validated configuration of its JSON text (validated once per worker)."""
    return PipelineConfig.model_validate_json(text)


def run_series_task(paths: list[str], config: str, out_dir: str, key: str) -> dict[str, Any]:
    """Process the series in ``paths`` (``config``: the pipeline as JSON) into ``out_dir``.

    Returns a small dict: ``status`` is "done", "failed" (a retry would fail the same way:
    an input error or a bug, whose ``traceback`` comes back too), "retry" (I/O or memory: a
    later attempt may succeed) or "cancelled" (stopped: requeue, no attempt used); ``reason``
    says why. Never raises for a bad series.
    """
    t0 = time.perf_counter()
    base = {"key": key, "pid": os.getpid(), "host": socket.gethostname()}
    with _ONE_SERIES:
        try:
            result = _process(paths, _config(config), Path(out_dir), key)
        except Exception as exc:  # noqa: BLE001 - one series' failure is its result
            result = _exception_result(key, exc)
    return {**result, **base, "seconds": round(time.perf_counter() - t0, 3)}


def _process(paths: list[str], config: PipelineConfig, out: Path, key: str) -> dict[str, Any]:
    """Build the series from its files (headers only) and run the pipeline on it."""
    from dicom_sr.dicom.discover import discover

    found = discover(paths)
    if not found.series:
        why = "; ".join(f"{s.path}: {s.reason}" for s in found.skipped[:3]) or "no files"
        return {"status": "failed", "reason": f"no usable instance left ({why})", "frames": 0}
    if len(found.series) > 1:  # files changed since the plan: keep the largest series
        found.series.sort(key=lambda s: -len(s.instances))
    series = found.series[0]
    done = process_series(series, config, out)
    if done.derived_series_uid != key:  # e.g. --device auto: a GPU worker, a CPU client
        logger.warning(
            "series job %s was written as derived series %s: this worker's engine differs"
            " from the planner's (set --device explicitly)",
            key,
            done.derived_series_uid,
        )
    result: dict[str, Any] = {
        "status": "done",
        "frames": done.frames,
        "written": sum(1 for r in done.instances if r.status == "written"),
        "derived_series_uid": done.derived_series_uid,
        "skipped": [{"path": s.path, "reason": s.reason} for s in found.skipped],
    }
    if done.status != "done":
        result["status"] = "retry" if done.failure_kind == TRANSIENT else "failed"
        result["reason"] = done.reason or _failed_reason(done.failed)
        if done.traceback:
            result["traceback"] = done.traceback
    return result


def _exception_result(key: str, exc: Exception) -> dict[str, Any]:
    """The result of a task whose own code raised: classified for the client."""
    kind = classify(exc)
    result: dict[str, Any] = {"reason": describe(exc), "frames": 0}
    if kind == CANCELLED:
        return {**result, "status": "cancelled"}
    if kind == PERMANENT:
        if not isinstance(exc, DicomSrError):  # a bug of ours: its traceback goes back
            logger.error("series job %s: %s", key, describe(exc), exc_info=exc)
            result["traceback"] = "".join(traceback.format_exception(exc))
        return {**result, "status": "failed"}
    return {**result, "status": "retry"}


def _failed_reason(failed: list) -> str:
    if failed:
        first = failed[0]
        more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
        return f"{first.source}: {first.reason}{more}"
    return "failed without a reason"
