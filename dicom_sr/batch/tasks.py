"""The one task of ``dicom-sr batch``: a plain function of (file paths, config dict, out dir).

It runs in a worker process (embedded LocalCluster, a remote Dask worker, or in-process), claims
its series in the job store with a lease renewed from a thread, builds the Series from the files
on disk, runs :func:`~dicom_sr.pipeline.process_series` and returns a small JSON-able dict. No
model or callback travels back. A worker that dies leaves its lease to expire (or its pid dead),
so the next attempt takes the series over; the store counts the attempts.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from dicom_sr.config import PipelineConfig
from dicom_sr.errors import Cancelled, describe
from dicom_sr.jobs import JobStore, make_owner
from dicom_sr.pipeline import process_series

__all__ = ["run_series_task", "LEASE_SECONDS"]

logger = logging.getLogger(__name__)

#: Lease on a running series; renewed every third of it, so a dead worker frees it this fast.
LEASE_SECONDS = 60.0

#: One series at a time per worker process, whatever its thread count (torch threads are the
#: parallelism inside a series; two series in one process would fight over them and memory).
_ONE_SERIES = threading.Lock()


def run_series_task(
    paths: list[str],
    config: dict[str, Any],
    out_dir: str,
    key: str,
    owner: str | None = None,
    *,
    max_attempts: int | None = None,
    lease_seconds: float = LEASE_SECONDS,
) -> dict[str, Any]:
    """Process the series in ``paths`` into ``out_dir`` as job ``key``; return a small result.

    ``status`` is "done", "failed" (``reason``), "retry" (failed; the job is queued again for
    another attempt), or "busy" (another live owner holds the series, or it is already
    finished: ``state`` says which). Never raises for a bad series; a bug is a failed result.
    """
    with _ONE_SERIES:
        return _run(paths, config, out_dir, key, owner or make_owner(), max_attempts, lease_seconds)


def _run(paths, config, out_dir, key, owner, max_attempts, lease_seconds) -> dict[str, Any]:
    out = Path(out_dir)
    store = JobStore(out)
    job = store.claim(owner, lease_seconds=lease_seconds, key=key, max_attempts=max_attempts)
    if job is None:
        now = store.get(key)
        state = now.state if now else "missing"
        return {"key": key, "status": "busy", "state": state, "reason": now.error if now else ""}
    t0 = time.perf_counter()
    lost = threading.Event()
    stop = threading.Event()
    renewer = threading.Thread(
        target=_renew, args=(store, key, owner, lease_seconds, stop, lost), daemon=True
    )
    renewer.start()
    base = {"key": key, "attempt": job.attempts, "owner": owner, "pid": os.getpid()}
    try:
        # torch threads follow engine.threads (the engine sets them in this worker process)
        result = _process(paths, PipelineConfig.model_validate(config), out, key, lost.is_set)
    except Cancelled as exc:
        store.release(key, owner, error=f"cancelled: {exc}")
        return {**base, "status": "busy", "state": "queued", "reason": str(exc)}
    except Exception as exc:  # noqa: BLE001 - a bug on one series is that series' failure
        logger.debug("series job %s failed", key, exc_info=True)
        result = {"status": "failed", "reason": describe(exc), "frames": 0}
    finally:
        stop.set()
        renewer.join()
    result = {**result, **base, "seconds": round(time.perf_counter() - t0, 3)}
    if result["status"] == "done":
        store.set_state(key, "done", result=result, frames=result.get("frames", 0))
        return result
    reason = result.get("reason") or _failed_reason(result)
    result["reason"] = reason
    if max_attempts is not None and job.attempts < max_attempts:
        store.release(key, owner, error=reason)
        return {**result, "status": "retry"}
    store.set_state(key, "failed", error=reason, result=result)
    return {**result, "status": "failed"}


def _process(
    paths: list[str], config: PipelineConfig, out: Path, key: str, cancel
) -> dict[str, Any]:
    """Build the series from its files (headers only) and run the pipeline on it."""
    from dicom_sr.dicom.discover import discover

    found = discover(paths)
    if not found.series:
        why = "; ".join(f"{s.path}: {s.reason}" for s in found.skipped[:3]) or "no files"
        return {"status": "failed", "reason": f"no usable instance left ({why})", "frames": 0}
    if len(found.series) > 1:  # files changed since the plan: keep the largest series
        found.series.sort(key=lambda s: -len(s.instances))
    series = found.series[0]
    result = process_series(series, config, out, cancel=cancel).to_dict()
    if result["derived_series_uid"] != key:  # e.g. --device auto: a GPU worker, a CPU client
        logger.warning(
            "series job %s was written as derived series %s: this worker's engine differs"
            " from the planner's (set --device explicitly)",
            key,
            result["derived_series_uid"],
        )
    if result["status"] == "partial":
        result["status"] = "failed"
    result["skipped"] = [{"path": s.path, "reason": s.reason} for s in found.skipped]
    return result


def _failed_reason(result: dict[str, Any]) -> str:
    failed = result.get("failed") or []
    if failed:
        first = failed[0]
        more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
        return f"{first['path']}: {first['reason']}{more}"
    return "failed without a reason"


def _renew(store, key, owner, lease_seconds, stop: threading.Event, lost: threading.Event):
    """Renew the lease every third of it until stopped; a lost lease cancels the series."""
    while not stop.wait(lease_seconds / 3):
        try:
            if not store.renew(key, owner, lease_seconds):
                logger.warning("series job %s: lease lost to another worker; cancelling", key)
                lost.set()
                return
        except Exception as exc:  # noqa: BLE001 - a busy store is retried at the next tick
            logger.warning("series job %s: lease not renewed (%s)", key, describe(exc))
    store.close()
