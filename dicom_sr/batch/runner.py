"""Run a batch: plan the archive, submit one task per series to Dask, follow and report.

The client is the only place that decides retries of a task that never came back (a worker
that died, a task killed by Dask); the task itself decides retries of a series that failed
(see :mod:`dicom_sr.batch.tasks`). Both count attempts in the job store, so ``--retries`` holds
across restarts. The cluster is the embedded :class:`distributed.LocalCluster` of worker
processes, or an existing scheduler (``--scheduler``).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dicom_sr.batch.plan import Plan, plan_archive
from dicom_sr.batch.tasks import LEASE_SECONDS, run_series_task
from dicom_sr.config import PipelineConfig
from dicom_sr.errors import MissingExtra, describe
from dicom_sr.fsio import write_json
from dicom_sr.jobs import JobStore

__all__ = ["BatchOptions", "BatchStats", "run_batch", "REPORT_NAME"]

logger = logging.getLogger(__name__)

REPORT_NAME = "batch-report.json"

#: How often the client looks for finished tasks and calls the progress hook.
POLL_SECONDS = 0.2


@dataclass(frozen=True)
class BatchOptions:
    """How to run: where (``scheduler`` or an embedded cluster of ``workers``) and how much."""

    scheduler: str | None = None
    workers: int | None = None
    threads_per_worker: int = 1
    gpus_per_worker: int = 0
    retries: int = 2
    limit: int | None = None
    dry_run: bool = False
    lease_seconds: float = LEASE_SECONDS
    connect_timeout: float = 30.0


@dataclass
class BatchStats:
    """Where the run stands: what a progress display shows."""

    total: int = 0
    done: int = 0
    failed: int = 0
    frames: int = 0
    planned_frames: int = 0
    frames_left: int = 0
    started: float = field(default_factory=time.monotonic)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    @property
    def fps(self) -> float:
        """Frames written per second since the run started."""
        return self.frames / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def eta_seconds(self) -> float | None:
        """Seconds left at the current frame rate (None before the first series is done)."""
        return self.frames_left / self.fps if self.fps > 0 else None


ProgressHook = Callable[[BatchStats], None]


def run_batch(
    inputs: Sequence[str | os.PathLike[str]],
    config: PipelineConfig,
    out_dir: str | os.PathLike[str],
    options: BatchOptions = BatchOptions(),
    *,
    progress: ProgressHook | None = None,
) -> dict[str, Any]:
    """Plan ``inputs``, process every series not done yet, write and return the report."""
    t0 = time.perf_counter()
    out = Path(out_dir)
    store = JobStore(out)
    plan = plan_archive(inputs, config, store)
    keys = {s.key for s in plan.series}
    if not options.dry_run:  # dead workers' series, and this plan's failed ones: retried
        store.requeue_unfinished("batch", failed=True, keys=keys)
    already = {j.key for j in store.jobs(state="done", kind="batch") if j.key in keys}
    todo = [s for s in plan.series if s.key not in already]
    if options.limit is not None:
        todo = todo[: options.limit]
    stats = BatchStats(total=len(todo), planned_frames=sum(s.frames for s in todo))
    stats.frames_left = stats.planned_frames
    info: dict[str, Any] = {"scheduler": None, "dashboard": None}
    if todo and not options.dry_run:
        _execute(todo, config, out, options, store, stats, info, progress)
    report = _report(inputs, config, out, options, store, plan, todo, already, stats, info)
    report["seconds"] = round(time.perf_counter() - t0, 2)
    if not options.dry_run:
        write_json(out / REPORT_NAME, report)
    return report


def _execute(todo, config, out, options, store, stats, info, progress) -> None:
    """Submit the series to the cluster and follow them until each is done or failed."""
    try:
        from distributed import Client, LocalCluster, as_completed
    except ImportError as exc:  # pragma: no cover - an extra
        raise MissingExtra(
            "dicom-sr batch needs distributed: pip install 'dicom-sr[batch]'"
        ) from exc

    threads = max(1, options.threads_per_worker)
    cfg = (
        config.with_overrides({"engine.threads": threads}) if not config.engine.threads else config
    )
    cfg_dict = cfg.model_dump(mode="json")
    gpu = cfg.engine.device == "cuda" or (cfg.engine.device == "auto" and options.gpus_per_worker)
    resources = {"GPU": 1} if gpu else None
    max_attempts = options.retries + 1
    cluster = None
    if options.scheduler:
        try:
            client = Client(options.scheduler, timeout=options.connect_timeout)
        except OSError as exc:
            raise ConnectionError(f"no Dask scheduler at {options.scheduler}: {exc}") from exc
    else:
        n = options.workers or max(1, (os.cpu_count() or 1) // threads)
        kw = {"resources": {"GPU": options.gpus_per_worker}} if options.gpus_per_worker else {}
        cluster = LocalCluster(
            n_workers=n,
            threads_per_worker=1,  # one series per worker process; torch threads inside it
            processes=True,
            dashboard_address=":0",
            **kw,
        )
        client = Client(cluster)
    stats.started = time.monotonic()  # throughput and ETA from here, not the cluster start
    if resources:
        _check_gpu_workers(client)
    info["scheduler"] = client.scheduler.address
    info["dashboard"] = _dashboard(client)
    if info["dashboard"]:
        logger.info("Dask dashboard: %s", info["dashboard"])
    try:
        by_key = {s.key: s for s in todo}
        jobs = {s.key: store.get(s.key) for s in todo}

        order = {k: len(todo) - i for i, k in enumerate(by_key)}  # plan order: study, series

        pending: dict[Any, str] = {}
        ready = as_completed([], with_results=False)

        def submit(key: str) -> None:
            fut = client.submit(
                run_series_task,
                jobs[key].paths,
                cfg_dict,
                str(out.resolve()),
                key,
                max_attempts=max_attempts,
                lease_seconds=options.lease_seconds,
                resources=resources,
                priority=order[key],
                pure=False,
                key=f"dicom-sr-series-{key}-{time.monotonic_ns()}",
            )
            pending[fut] = key
            ready.add(fut)

        for key in by_key:
            submit(key)
        later: list[tuple[float, str]] = []
        last_tick = 0.0
        while pending or later:
            now = time.monotonic()
            for due, key in [x for x in later if x[0] <= now]:
                later.remove((due, key))
                job = store.get(key)  # held by another live owner: look again, not resubmit
                if job.state in ("done", "failed"):
                    _count(stats, job.state, by_key[key], job)
                elif job.state == "processing" and not job.lease_gone():
                    later.append((now + options.lease_seconds / 3, key))
                else:
                    submit(key)
            finished = ready.next_batch(block=False) if ready.has_ready() else []
            if not finished:
                time.sleep(POLL_SECONDS)  # O(1) per look, however many series are in flight
            for fut in finished:
                key = pending.pop(fut)
                outcome = _outcome(fut, key, store, max_attempts)
                if outcome == "again":
                    submit(key)
                elif outcome == "later":
                    later.append((time.monotonic() + options.lease_seconds / 3, key))
                else:
                    _count(stats, outcome, by_key[key], store.get(key))
            if progress is not None and (finished or time.monotonic() - last_tick > 1):
                progress(stats)
                last_tick = time.monotonic()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _outcome(fut, key: str, store: JobStore, max_attempts: int) -> str:
    """ "done", "failed", "again" (resubmit now) or "later" (another owner holds it)."""
    try:
        result = fut.result()
    except Exception as exc:  # noqa: BLE001 - a task that never returned: the worker died
        reason = describe(exc)
        logger.warning("series job %s: task lost (%s)", key, reason)
        job = store.get(key)
        if job.state == "processing":
            store.set_state(key, "queued", error=reason)  # its task is gone: free the lease
        if job.state in ("done", "failed"):
            return job.state
        if job.attempts >= max_attempts:
            store.set_state(key, "failed", error=f"gave up after {job.attempts} attempts: {reason}")
            return "failed"
        return "again"
    status = result["status"]
    if status in ("done", "failed"):
        if status == "failed":
            logger.warning("series job %s failed: %s", key, result.get("reason", ""))
        return status
    if status == "retry":
        logger.info("series job %s: attempt %s failed, retrying", key, result.get("attempt"))
        return "again"
    state = result.get("state")  # busy: another owner holds it, or it was finished
    if state in ("done", "failed"):
        return state
    if state == "processing":
        return "later"
    if state == "queued":
        return "again"
    logger.warning("series job %s: unexpected state %s in the job store", key, state)
    return "failed"


def _count(stats: BatchStats, outcome: str, series, job) -> None:
    if outcome == "done":
        stats.done += 1
        stats.frames += (job.result or {}).get("frames", 0) if job else 0
    else:
        stats.failed += 1
    stats.frames_left = max(0, stats.frames_left - series.frames)


def _check_gpu_workers(client) -> None:
    """Warn when GPU tasks will wait for ever: no worker declares the GPU resource."""
    workers = client.scheduler_info().get("workers", {})
    if not any(w.get("resources", {}).get("GPU") for w in workers.values()):
        logger.warning(
            "GPU tasks need workers started with the resource GPU=1 (dask worker --resources"
            " GPU=1, dask-cuda-worker --resources GPU=1, or --gpus-per-worker); %d workers"
            " have none",
            len(workers),
        )


def _dashboard(client) -> str | None:
    try:
        return client.dashboard_link
    except Exception:  # noqa: BLE001 - no dashboard (bokeh missing) is fine
        return None


def _report(inputs, config, out, options, store, plan: Plan, todo, already, stats, info):
    """Counts, failures with reasons, throughput: what stdout and batch-report.json show."""
    jobs = {s.key: store.get(s.key) for s in plan.series}
    failures = [
        {
            "key": k,
            "source_series_uid": j.source_series_uid,
            "files": len(j.paths),
            "attempts": j.attempts,
            "error": j.error,
        }
        for k, j in jobs.items()
        if j.state == "failed"
    ]
    states = [jobs[s.key].state for s in todo]
    return {
        "out": str(out),
        "inputs": [str(p) for p in inputs],
        "pipeline": config.name,
        "config_hash": config.hash(),  # as in DerivationDescription and process --json
        "identity": plan.config_hash,  # the pipeline identity behind the derived UIDs (jobs)
        "method": config.engine.method,
        "scale": config.engine.scale,
        "dry_run": options.dry_run,
        "plan": {
            "files": plan.files,
            "read_now": plan.inspected,
            "skipped_files": plan.skipped,
            "series": len(plan.series),
            "seconds": round(plan.seconds, 2),
        },
        "series": {
            "usable": len(plan.series),
            "already_done": len(already),
            "this_run": len(todo),
            "done": sum(1 for s in states if s == "done"),
            "failed": len(failures),
            "unfinished": sum(1 for s in states if s not in ("done", "failed")),
        },
        "frames": stats.frames,
        "processing_seconds": round(stats.elapsed, 2),
        "frames_per_second": round(stats.fps, 3),
        "failures": failures,
        "skipped": plan.skipped_files(store),
        "todo": [asdict(s) for s in todo] if options.dry_run else [],
        "scheduler": info["scheduler"],
        "dashboard": info["dashboard"],
    }
