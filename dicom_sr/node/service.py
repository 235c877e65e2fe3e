"""The node: receive (SCP) -> spool -> assemble series -> job store -> workers -> forward.

Three threads besides pynetdicom's: the *scheduler* (series that went quiet become queued jobs;
queued jobs go to free workers; finished ones are recorded; disk checks and the retention
sweep), the *forwarder* (:mod:`~dicom_sr.node.forwarder`: done jobs to every ``--forward``
destination, with back-off), and the optional health server. Every state lives on disk (the
spool and the SQLite job store), so a node killed at any moment resumes where it was.

Attempts follow :func:`~dicom_sr.errors.classify`: a stop the node caused (SIGTERM, SIGINT)
gives the job back to the queue and its attempt back; a permanent failure (an input error, a
bug) fails the job at once; a transient one (a lost worker, I/O, a full disk) re-queues it with
back-off until ``max_attempts``. A failed job comes back with ``dicom-sr jobs retry`` or when
its sender sends the series again.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pynetdicom import evt

from dicom_sr.config import PipelineConfig
from dicom_sr.errors import CANCELLED, PERMANENT, TRANSIENT, classify, describe
from dicom_sr.jobs import Job, JobStore, make_owner
from dicom_sr.node.assembly import Arrivals, Assembly
from dicom_sr.node.forward import Destination, retry_delay
from dicom_sr.node.forwarder import Forwarder
from dicom_sr.node.health import HealthServer, Metrics
from dicom_sr.node.intake import KIND, Intake
from dicom_sr.node.scp import AssociationGate, ScpOptions, StoreHandler, log_association, make_ae
from dicom_sr.node.spool import Received, Spool
from dicom_sr.node.upkeep import Upkeep
from dicom_sr.node.workers import WorkerPool, disk_full, merge_results
from dicom_sr.pipeline import identity_hash

__all__ = ["NodeOptions", "Node"]

logger = logging.getLogger(__name__)


@dataclass
class NodeOptions:
    """Everything ``dicom-sr listen`` takes besides the pipeline."""

    out_dir: Path
    port: int = 11112
    bind: str = "0.0.0.0"
    scp: ScpOptions = field(default_factory=ScpOptions)
    forward: tuple[Destination, ...] = ()
    series_timeout: float = 30.0
    workers: int = 1
    health_port: int | None = None
    health_bind: str = "127.0.0.1"
    ssl_context: ssl.SSLContext | None = None
    forward_ssl_context: ssl.SSLContext | None = None
    retry_base: float = 5.0
    retry_max: float = 60.0
    forward_alert: float = 300.0
    lease_seconds: float = 120.0
    max_attempts: int = 3
    job_retry_base: float = 10.0
    job_retry_max: float = 300.0
    min_free: int | None = None
    retention: float | None = None
    log_level: int = logging.INFO

    def __post_init__(self) -> None:
        if isinstance(self.forward, Destination):  # one destination, as before
            self.forward = (self.forward,)


class Node:
    """A running ``dicom-sr listen``: :meth:`start`, then :meth:`stop` (from a signal)."""

    def __init__(self, options: NodeOptions, config: PipelineConfig) -> None:
        self.options = options
        self.config = config
        self.identity = identity_hash(config)
        self.out_dir = Path(options.out_dir)
        self.derived_dir = self.out_dir / "derived"
        self.spool = Spool(self.out_dir, max_pixels=config.output.max_pixels)
        self.store = JobStore(self.out_dir)
        self.assembly = Assembly(options.series_timeout)
        self.metrics = Metrics()
        self.owner = make_owner()
        self.forwarder = Forwarder(
            self.store,
            tuple(options.forward),
            calling_ae=options.scp.ae_title,
            metrics=self.metrics,
            ssl_context=options.forward_ssl_context,
            retry_base=options.retry_base,
            retry_max=options.retry_max,
        )
        self.upkeep = Upkeep(
            self.out_dir,
            self.store,
            min_free=options.min_free,
            retention=options.retention,
            forwarding=bool(options.forward),
        )
        self.intake = Intake(self.store, self.spool, config, self.identity, self.upkeep)
        self._pool_broken = ""
        self._next_sweep = 0.0
        self._stopping = threading.Event()
        self._running: dict[str, tuple[Future, Job, float]] = {}
        self._lost: set[str] = set()  # jobs in hand whose lease another owner took
        self._jobs_lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self.pool: WorkerPool | None = None
        self.server = None
        self.health: HealthServer | None = None

    # -- life cycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Recover from the last run, then serve DICOM, health and the two loops."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._recover()
        self.upkeep.check()
        self.pool = WorkerPool(
            self.options.workers, self.options.log_level, device=self.config.engine.device
        )
        ae = make_ae(self.options.scp)
        handler = StoreHandler(
            self.spool,
            self._on_received,
            lambda status: self.metrics.instances_refused.labels(f"0x{status:04X}").inc(),
            guard=self.upkeep.low_reason,
            on_duplicate=self._on_duplicate,
        )
        gate = AssociationGate(
            self.options.scp,
            lambda: self.upkeep.low,
            lambda reason: self.metrics.associations_rejected.labels(reason).inc(),
        )
        handlers = [
            (evt.EVT_C_STORE, handler),
            (evt.EVT_REQUESTED, gate.requested),
            (evt.EVT_REJECTED, gate.rejected),
            (evt.EVT_ACCEPTED, log_association),
        ]
        self.server = ae.start_server(
            (self.options.bind, self.options.port),
            block=False,
            evt_handlers=handlers,
            ssl_context=self.options.ssl_context,
        )
        if self.options.health_port is not None:
            self.health = HealthServer(
                self.options.health_bind, self.options.health_port, self.metrics, self.status
            )
            self.health.start()
        loops = [("scheduler", self._schedule_loop, ())]
        if self.options.forward:
            loops.append(("forwarder", self.forwarder.run, (self._stopping,)))
        for name, target, args in loops:
            thread = threading.Thread(target=target, args=args, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        tls = " with TLS" if self.options.ssl_context else ""
        if self.options.forward:
            logger.info(
                "forwarding to %s%s",
                ", ".join(map(str, self.options.forward)),
                " with TLS" if self.options.forward_ssl_context else "",
            )
        logger.info(
            "listening as %s on %s:%d%s; pipeline %s (%s, x%d), %d worker(s), out %s",
            self.options.scp.ae_title,
            self.options.bind,
            self.port,
            tls,
            self.config.name,
            self.config.engine.method,
            self.config.engine.scale,
            self.options.workers,
            self.out_dir,
        )

    @property
    def port(self) -> int:
        """The DICOM port actually bound (useful with port 0)."""
        return self.server.server_address[1] if self.server else self.options.port

    def wait(self, timeout: float | None = None) -> bool:
        """Block until :meth:`request_stop`; True if it was requested."""
        return self._stopping.wait(timeout)

    def request_stop(self) -> None:
        """Ask the node to stop (safe from a signal handler)."""
        self._stopping.set()

    def request_flush(self) -> None:
        """Try every pending forward now (SIGHUP; safe from a signal handler)."""
        self.forwarder.request_flush()

    def stop(self, grace: float = 30.0) -> bool:
        """Stop accepting, close associations, cancel the jobs in hand and re-queue them.

        Returns False when a worker process had to be left behind (the caller should exit
        without waiting for it)."""
        self._stopping.set()
        logger.info("stopping: no new associations; the series in hand go back to the queue")
        if self.pool is not None:  # first: closing the server takes seconds, a series goes on
            self.pool.cancel()
        if self.server is not None:
            active = list(self.server.active_associations)
            self.server.shutdown()
            deadline = time.monotonic() + 5.0  # a store in progress may finish
            while any(_busy(a) for a in active) and time.monotonic() < deadline:
                time.sleep(0.1)
            for assoc in active:
                if assoc.is_alive():
                    assoc.abort()
        for thread in self._threads:
            thread.join(grace)
        self._collect(wait=grace)
        with self._jobs_lock:
            for key in list(self._running):
                self.store.release(key, self.owner, error="node stopped", refund=True)
                self._running.pop(key)
        clean = self.pool is None or self.pool.shutdown(timeout=grace)
        if not clean:
            logger.warning("a worker process did not exit within %.0f s", grace)
        if self.health is not None:
            self.health.stop()
        logger.info("stopped; %s", _counts_text(self.store.counts(KIND)))
        return clean

    # -- receiving -----------------------------------------------------------------------------

    def _on_received(self, got: Received) -> None:
        self.metrics.instances_received.inc()
        calling = getattr(got, "calling_ae", "")
        self.assembly.arrived(got.study_uid, got.series_uid, got.path, calling)

    def _on_duplicate(self, got: Received) -> None:
        if self.intake.failed_series(got.series_uid):  # a resend after a failure: again
            self.assembly.arrived(got.study_uid, got.series_uid, got.path, got.calling_ae)

    def _recover(self) -> None:
        """Re-queue unfinished jobs and assemble again what never became a queued job
        (:meth:`Intake.recover`); done jobs owe any destination added since; jobs that used up
        their attempts in crashes are failed."""
        n = self.store.requeue_unfinished(KIND)
        if n:
            logger.info("re-queued %d unfinished job(s) of the last run", n)
        for job in self.intake.recover(self.assembly):
            if job.state == "done" and self.options.forward:  # destinations may have changed
                self.forwarder.forwards.open_missing(job.key, self.forwarder.names)
                self.forwarder.forwards.settle(job.key, self.forwarder.names)
            if job.state == "queued" and job.attempts >= self.options.max_attempts:
                self._fail(job, f"gave up after {job.attempts} attempts: {job.error or '?'}")

    def _record(self, arrivals: Arrivals, state: Literal["received", "queued"]) -> None:
        self.intake.record(arrivals, state)

    # -- scheduling ----------------------------------------------------------------------------

    def _schedule_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                for arrivals in self.assembly.unnoted():
                    self._record(arrivals, "received")
                for arrivals in self.assembly.due():
                    self._record(arrivals, "queued")
                self._collect()
                if not self.upkeep.check() and not self._pool_broken:
                    self._dispatch()
                self._renew()
                self._upkeep()
            except Exception:  # noqa: BLE001 - the loop must survive one bad round
                logger.exception("scheduler round failed")
            self._stopping.wait(0.2)

    def _dispatch(self) -> None:
        while len(self._running) < self.options.workers and not self._stopping.is_set():
            job = self.store.claim(
                self.owner,
                lease_seconds=self.options.lease_seconds,
                kinds=[KIND],
                max_attempts=self.options.max_attempts,
            )
            if job is None:
                return
            if job.config_hash != self.identity:  # queued by a node run with another pipeline
                self.store.set_state(
                    job.key,
                    "failed",
                    error=f"queued under pipeline identity {job.config_hash}; the node now runs "
                    f"{self.identity} and queued the series again under it",
                )
                paths = {Path(p) for p in job.paths}
                self._record(Arrivals(job.study_uid, job.source_series_uid, paths), "queued")
                continue
            paths, late = job.paths, bool(job.result and "sources" in job.result)
            if late:  # a reopened job: only what has no output yet, with the saved model
                done = set(job.result.get("sources", []))
                paths = [p for p in job.paths if p not in done]
            logger.info(
                "series ..%s: processing %d instance(s) (derived ..%s, attempt %d)%s",
                job.source_series_uid[-8:],
                len(paths),
                job.key[-8:],
                job.attempts,
                " with its saved model" if late else "",
            )
            future = self.pool.submit(
                job.key,
                paths,
                self.config,
                self.derived_dir,
                job.revision,
                self.upkeep.model_path(job.key),
                late,
                job.calling_ae,
            )
            with self._jobs_lock:
                self._running[job.key] = (future, job, time.monotonic())

    def _renew(self) -> None:
        """Extend the leases of the series in hand; a lease lost (the node stalled past it and
        another owner took the job) means the result is no longer ours to record."""
        with self._jobs_lock:
            for key in list(self._running):
                if not self.store.renew(key, self.owner, self.options.lease_seconds):
                    if key not in self._lost:
                        logger.warning(
                            "derived ..%s: lease lost; its result will be dropped", key[-8:]
                        )
                    self._lost.add(key)

    def _collect(self, wait: float = 0.0) -> None:
        deadline = time.monotonic() + wait
        while True:
            with self._jobs_lock:
                done = [(k, v) for k, v in self._running.items() if v[0].done()]
                for key, _ in done:
                    self._running.pop(key)
            for _, (future, job, started) in done:
                self._finish(job, future, time.monotonic() - started)
            if not self._running or time.monotonic() >= deadline:
                return
            time.sleep(0.1)

    def _finish(self, job: Job, future: Future, seconds: float) -> None:
        tag = job.source_series_uid[-8:]
        if job.key in self._lost:  # cancelled for us: another owner has it, no attempt used
            self._lost.discard(job.key)
            logger.info("series ..%s: lease lost; left to its new owner", tag)
            return
        try:
            result = future.result()
        except BrokenProcessPool as exc:
            self._restart_pool()
            self._failed(job, TRANSIENT, f"worker died: {describe(exc)}")
            return
        except Exception as exc:  # noqa: BLE001
            self._failed(job, classify(exc), describe(exc))
            return
        status = result.get("status")
        if status == "cancelled":
            self.store.release(job.key, self.owner, error="cancelled: node stopping", refund=True)
            return
        self.metrics.processing_seconds.observe(seconds)
        if status in ("done", "partial") and disk_full(result):
            self._failed(job, TRANSIENT, "disk full while writing outputs")
            return
        if status not in ("done", "partial"):
            self._failed(job, result.get("kind", PERMANENT), result.get("reason") or "failed")
            return
        result = merge_results(job.result, result)
        failed = result.get("failed") or []
        error = "; ".join(f"{f['path']}: {f['reason']}" for f in failed)
        self.store.set_state(
            job.key, "done", result=result, error=error, frames=result.get("frames")
        )
        if self.options.forward:
            self.forwarder.open(job.key)
        self.metrics.series_processed.inc()
        logger.info(
            "series ..%s: %s, %d frame(s), %.1f s", tag, status, result.get("frames", 0), seconds
        )

    def _failed(self, job: Job, kind: str, reason: str) -> None:
        """One attempt failed: cancelled -> back, attempt refunded; transient -> back after a
        delay, until max_attempts; permanent -> failed now."""
        tag = job.source_series_uid[-8:]
        if kind == CANCELLED:
            self.store.release(job.key, self.owner, error=reason, refund=True)
        elif kind == TRANSIENT and job.attempts < self.options.max_attempts:
            delay = retry_delay(
                job.attempts, base=self.options.job_retry_base, cap=self.options.job_retry_max
            )
            logger.warning(
                "series ..%s: attempt %d failed (%s); retry in %.0f s",
                tag, job.attempts, reason, delay,
            )  # fmt: skip
            self.store.release(job.key, self.owner, error=reason, retry_at=time.time() + delay)
        elif kind == TRANSIENT:
            self._fail(job, f"gave up after {job.attempts} attempts: {reason}")
        else:
            self._fail(job, reason)

    def _fail(self, job: Job, reason: str) -> None:
        self.store.set_state(job.key, "failed", error=reason)
        self.metrics.series_failed.inc()
        logger.error(
            "series ..%s: failed: %s (dicom-sr jobs retry %s, or send it again)",
            job.source_series_uid[-8:], reason, job.key,
        )  # fmt: skip

    def _restart_pool(self) -> None:
        try:
            self.pool.restart()
            self._pool_broken = ""
        except Exception as exc:  # noqa: BLE001 - reported by /health; retried next failure
            self._pool_broken = describe(exc)
            logger.error("worker pool cannot be restarted: %s", self._pool_broken)

    def _upkeep(self) -> None:
        """Gauges every round; the retention sweep and spool size now and then."""
        counts = self.store.counts(KIND)
        self.metrics.queue_depth.set(counts["received"] + counts["queued"] + counts["processing"])
        self.metrics.disk_free_bytes.set(self.upkeep.free)
        self.metrics.disk_low.set(1 if self.upkeep.low else 0)
        if self.options.forward:
            self.forwarder.update_metrics()
        now = time.monotonic()
        if now >= self._next_sweep:
            retention = self.options.retention
            self._next_sweep = now + (60.0 if retention is None else min(60.0, retention / 4))
            self.upkeep.sweep()
            self.metrics.spool_bytes.set(self.upkeep.spool_bytes())
        self.metrics.healthy.set(1 if not self.problems() else 0)

    # -- health --------------------------------------------------------------------------------

    def problems(self) -> list[dict[str, Any]]:
        """What needs an operator now; empty when healthy."""
        out: list[dict[str, Any]] = []
        if self._stopping.is_set():
            out.append({"reason": "stopping"})
        for dest, (seconds, error) in self.forwarder.failing_for().items():
            if seconds >= self.options.forward_alert:
                out.append(
                    {"reason": "forward_failing", "destination": dest,
                     "seconds": round(seconds), "error": error}
                )  # fmt: skip
        if self.upkeep.low:
            out.append({"reason": "disk_low", "detail": self.upkeep.low})
        if self._pool_broken:
            out.append({"reason": "worker_pool_broken", "detail": self._pool_broken})
        return out

    def status(self) -> dict[str, Any]:
        """What ``/health`` answers: "ok" (200) or why not (503), job counts, forwarding."""
        problems = self.problems()
        stopping = self._stopping.is_set()
        backlog = self.forwarder.forwards.backlog(self.forwarder.names)
        return {
            "status": "stopping" if stopping else "unhealthy" if problems else "ok",
            "problems": problems,
            "ae_title": self.options.scp.ae_title,
            "port": self.port,
            "jobs": self.store.counts(KIND),
            "assembling": self.assembly.pending(),
            "running": len(self._running),
            "workers": self.options.workers,
            "forward_backlog": {d: n for d, (n, _) in backlog.items()},
            "disk_free": self.upkeep.free,
        }


def _busy(assoc) -> bool:
    """The association is still open (not one released or aborted whose thread lingers in
    its teardown: those are aborted at once)."""
    return assoc.is_alive() and assoc.is_established


def _counts_text(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {state}" for state, n in counts.items() if n) or "no jobs"
