"""Run a batch: plan the archive, feed the series to Dask a few at a time, record, report.

The client (the process running ``dicom-sr batch``) is the only one that opens the job store.
It claims a job when it submits its task and counts the attempt; Dask's own handling of lost
workers reruns a task whose worker died, and a task that Dask gives up on (``KilledWorker``)
or that failed for a reason a retry may cure comes back to the client, which resubmits it
while ``--retries`` allows. An input error or a bug fails the series at once, its traceback
at ERROR. At most :data:`IN_FLIGHT_PER_WORKER` tasks per worker are submitted at any time
(``as_completed`` with a refill), so neither the client nor the scheduler grows with the
archive.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dicom_sr.batch.cluster import (
    TRIM_EVERY,
    ClusterSpec,
    dashboard,
    open_client,
    trim_dask_state,
    worker_slots,
)
from dicom_sr.batch.ledger import LEASE_SECONDS, Ledger, Outcome, Todo
from dicom_sr.batch.plan import Plan, plan_archive
from dicom_sr.batch.report import LISTED, failures, write_report
from dicom_sr.batch.tasks import run_series_task
from dicom_sr.config import PipelineConfig
from dicom_sr.errors import CANCELLED, TRANSIENT, classify, describe
from dicom_sr.jobs import JobStore

__all__ = ["BatchOptions", "BatchStats", "run_batch", "REPORT_NAME", "IN_FLIGHT_PER_WORKER"]

logger = logging.getLogger(__name__)

REPORT_NAME = "batch-report.json"

#: Tasks submitted per worker at any time: enough to keep each busy while the client records.
IN_FLIGHT_PER_WORKER = 4

#: How long the client waits for a finished task before it looks again (and renews leases).
POLL_SECONDS = 0.01


@dataclass(frozen=True)
class BatchOptions:
    """How to run: where (``scheduler`` or an embedded cluster of ``workers``), how much, and
    where the job store is (``store``: default ``OUT/jobs.sqlite3``)."""

    scheduler: str | None = None
    workers: int | None = None
    threads_per_worker: int = 1
    gpus_per_worker: int = 0
    retries: int = 2
    limit: int | None = None
    dry_run: bool = False
    lease_seconds: float = LEASE_SECONDS
    connect_timeout: float = 30.0
    store: str | os.PathLike[str] | None = None


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
    def series_per_second(self) -> float:
        n = self.done + self.failed
        return n / self.elapsed if self.elapsed > 0 else 0.0

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
    store = JobStore(out, path=options.store)
    plan = plan_archive(inputs, config, store, max_pixels=config.output.max_pixels)
    ledger = Ledger(store, plan.walk_id, options.lease_seconds)
    if not options.dry_run:
        ledger.prepare()  # dead clients' series, and this plan's failed ones: queued again
    already = ledger.counts().get("done", 0)
    total, frames = ledger.todo_frames(options.limit)
    stats = BatchStats(total=total, planned_frames=frames, frames_left=frames)
    info: dict[str, Any] = {"scheduler": None, "dashboard": None}
    if total and not options.dry_run:
        _execute(ledger, config, out, options, stats, info, progress)
    report = _summary(inputs, config, out, options, store, plan, ledger, already, stats, info)
    report["seconds"] = round(time.perf_counter() - t0, 2)
    if not options.dry_run:
        write_report(out / REPORT_NAME, report, store, plan)
    return report


def _task_config(config: PipelineConfig, options: BatchOptions) -> str:
    """The pipeline as the tasks get it (JSON), with the torch threads of a worker."""
    threads = max(1, options.threads_per_worker)
    if not config.engine.threads:
        config = config.with_overrides({"engine.threads": threads})
    return config.model_dump_json()


def _needs_gpu(config: PipelineConfig, options: BatchOptions) -> bool:
    device = config.engine.device
    return device == "cuda" or (device == "auto" and options.gpus_per_worker > 0)


def _execute(ledger, config, out, options, stats, info, progress) -> None:
    """Run the queued series of the plan on the cluster, recording each outcome."""
    gpu = _needs_gpu(config, options)
    spec = ClusterSpec(
        options.scheduler,
        options.workers,
        options.threads_per_worker,
        options.gpus_per_worker,
        gpu,
        options.connect_timeout,
    )
    with open_client(spec) as client:
        stats.started = time.monotonic()  # throughput and ETA from here, not the cluster start
        info["scheduler"] = client.scheduler.address
        info["dashboard"] = dashboard(client)
        if info["dashboard"]:
            logger.info("Dask dashboard: %s", info["dashboard"])
        feed = _Feed(client, ledger, _task_config(config, options), str(out.resolve()), gpu)
        try:
            feed.run(_limited(ledger.todo(), options.limit), options.retries + 1, stats, progress)
        finally:
            returned = ledger.give_back()  # stopped early: the jobs in flight, attempt refunded
            if returned:
                logger.info("%d series in flight given back to the queue", returned)


def _limited(todo: Iterator[Todo], limit: int | None) -> Iterator[Todo]:
    for n, item in enumerate(todo):
        if limit is not None and n >= limit:
            return
        yield item


class _Feed:
    """Submission with a bound: refill as tasks finish, record outcomes in batches."""

    def __init__(self, client, ledger: Ledger, config_json: str, out: str, gpu: bool) -> None:
        from distributed import as_completed

        self.client, self.ledger = client, ledger
        self.config_json, self.out = config_json, out
        self.resources = {"GPU": 1} if gpu else None
        self.in_flight: dict[Any, Todo] = {}
        self.ready = as_completed([], with_results=False)

    def submit(self, items: list[Todo]) -> int:
        """Claim the jobs (one attempt each, one transaction) and submit their tasks; return
        how many were not ours to run (another live client holds them)."""
        taken = self.ledger.claim([t.key for t in items]) if items else {}
        for todo in items:
            if todo.key not in taken:
                continue
            fut = self.client.submit(
                run_series_task,
                todo.paths,
                self.config_json,
                self.out,
                todo.key,
                resources=self.resources,
                priority=-todo.seq,  # plan order (study, series) among the tasks in flight
                pure=False,
                key=f"dicom-sr-series-{todo.key}-{taken[todo.key]}-{time.monotonic_ns()}",
            )
            self.in_flight[fut] = todo
            self.ready.add(fut)
        return len(items) - len(taken)

    def run(self, todo: Iterator[Todo], max_attempts: int, stats, progress) -> None:
        """Keep at most a few tasks per worker in flight until ``todo`` is exhausted."""
        last_tick = last_renew = time.monotonic()
        slots = IN_FLIGHT_PER_WORKER * worker_slots(self.client)
        since_trim = 0
        while True:
            self._refill(todo, slots, stats)
            if not self.in_flight:
                return
            finished = self.ready.next_batch(block=False) if self.ready.has_ready() else []
            if not finished:
                time.sleep(POLL_SECONDS)
            outcomes = [self._outcome(f, max_attempts, stats) for f in finished]
            self.ledger.record([o for o in outcomes if o is not None])
            since_trim += len(finished)
            if since_trim >= TRIM_EVERY:
                trim_dask_state(self.client)
                since_trim = 0
            now = time.monotonic()
            if now - last_renew > self.ledger.lease_seconds / 10:
                self.ledger.renew()
                slots = IN_FLIGHT_PER_WORKER * worker_slots(self.client)  # workers may join
                last_renew = now
            if progress is not None and (finished or now - last_tick > 1):
                progress(stats)
                last_tick = now

    def _refill(self, todo: Iterator[Todo], slots: int, stats: BatchStats) -> None:
        """Submit from ``todo`` until ``slots`` tasks are in flight or it is exhausted."""
        while len(self.in_flight) < slots:
            items = list(itertools.islice(todo, slots - len(self.in_flight)))
            if not items:
                return
            stats.total -= self.submit(items)  # those another live client holds

    def _outcome(self, fut, max_attempts: int, stats: BatchStats) -> Outcome | None:
        """What to record for a finished task; None when it was resubmitted."""
        todo = self.in_flight.pop(fut)
        try:
            result = fut.result()
        except Exception as exc:  # noqa: BLE001 - the task never returned: a lost worker...
            result = _lost(todo.key, exc)
        finally:
            fut.release()
        status, reason = result["status"], result.get("reason", "")
        if status == "done":
            stats.done += 1
            stats.frames += result.get("frames", 0)
            stats.frames_left = max(0, stats.frames_left - todo.frames)
            return Outcome(todo.key, "done", result=result)
        if status == "cancelled":
            logger.info("series job %s: cancelled (%s); queued again", todo.key, reason)
            stats.total -= 1
            return Outcome(todo.key, "queued", error=reason)
        job = self.ledger.get(todo.key)
        if status == "retry" and job.attempts < max_attempts:
            logger.warning(
                "series job %s: attempt %d failed (%s); retrying", todo.key, job.attempts, reason
            )
            self.ledger.note_error(todo.key, reason)
            self.submit([todo])
            return None
        if status == "retry":
            reason = f"gave up after {job.attempts} attempts: {reason}"
        if result.get("traceback"):  # a bug: no retry would help
            logger.error(
                "series job %s failed, not retried: %s\n%s",
                todo.key,
                reason,
                result["traceback"].rstrip(),
            )
        else:
            logger.warning("series job %s failed: %s", todo.key, reason)
        stats.failed += 1
        stats.frames_left = max(0, stats.frames_left - todo.frames)
        small = {k: v for k, v in result.items() if k != "traceback"}
        return Outcome(todo.key, "failed", error=reason, result=small)


def _lost(key: str, exc: Exception) -> dict[str, Any]:
    """The result of a task that never came back (its worker died, Dask gave up on it)."""
    import traceback

    kind = classify(exc)
    reason = f"task lost: {describe(exc)}"
    if kind == TRANSIENT:
        return {"status": "retry", "reason": reason}
    if kind == CANCELLED:
        return {"status": "cancelled", "reason": reason}
    return {
        "status": "failed",
        "reason": reason,
        "traceback": "".join(traceback.format_exception(exc)),
    }


def _summary(inputs, config, out, options, store, plan: Plan, ledger, already, stats, info):
    """Counts, throughput, and the first failures and skipped files: what stdout shows."""
    counts = ledger.counts()
    return {
        "out": str(out),
        "store": str(store.path),
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
            "gone_files": plan.gone,
            "series": plan.series,
            "seconds": round(plan.seconds, 2),
        },
        "series": {
            "usable": plan.series,
            "already_done": already,
            "this_run": stats.total,
            "done": stats.done,
            "failed": counts.get("failed", 0),
            "unfinished": max(0, stats.total - stats.done - stats.failed),
        },
        "frames": stats.frames,
        "processing_seconds": round(stats.elapsed, 2),
        "frames_per_second": round(stats.fps, 3),
        "series_per_second": round(stats.series_per_second, 3),
        "failures": list(failures(store, plan, limit=LISTED)),
        "skipped": list(plan.skipped_files(store, limit=LISTED)),
        "todo": _todo(ledger, options) if options.dry_run else [],
        "scheduler": info["scheduler"],
        "dashboard": info["dashboard"],
    }


def _todo(ledger: Ledger, options: BatchOptions) -> list[dict[str, Any]]:
    """What a dry run would process (the first :data:`LISTED`)."""
    limit = LISTED if options.limit is None else min(LISTED, options.limit)
    return [
        {"key": t.key, "files": len(t.paths), "frames": t.frames}
        for t in _limited(ledger.todo(), limit)
    ]
