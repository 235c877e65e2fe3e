"""The node: receive (SCP) -> spool -> assemble series -> job store -> workers -> forward.

Three threads besides pynetdicom's: the *scheduler* (series that went quiet become queued jobs;
queued jobs go to free workers; finished ones are recorded), the *forwarder* (sends done jobs
to ``--forward`` with back-off), and the optional health server. Every state lives on disk (the
spool and the SQLite job store), so a node killed at any moment resumes where it was.
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
from dicom_sr.errors import describe
from dicom_sr.jobs import Job, JobStore, make_owner
from dicom_sr.node.assembly import Arrivals, Assembly
from dicom_sr.node.forward import Destination, ForwardError, retry_delay, send_instances
from dicom_sr.node.health import HealthServer, Metrics
from dicom_sr.node.scp import ScpOptions, StoreHandler, log_association, make_ae
from dicom_sr.node.spool import Received, Spool
from dicom_sr.node.workers import WorkerPool
from dicom_sr.pipeline import derived_series_uid_for, identity_hash

__all__ = ["NodeOptions", "Node"]

logger = logging.getLogger(__name__)

KIND = "listen"


@dataclass
class NodeOptions:
    """Everything ``dicom-sr listen`` takes besides the pipeline."""

    out_dir: Path
    port: int = 11112
    bind: str = "0.0.0.0"
    scp: ScpOptions = field(default_factory=ScpOptions)
    forward: Destination | None = None
    series_timeout: float = 30.0
    workers: int = 1
    health_port: int | None = None
    ssl_context: ssl.SSLContext | None = None
    forward_ssl_context: ssl.SSLContext | None = None
    retry_base: float = 5.0
    retry_max: float = 600.0
    lease_seconds: float = 120.0
    max_attempts: int = 3
    log_level: int = logging.INFO


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
        self._stopping = threading.Event()
        self._running: dict[str, tuple[Future, Job, float]] = {}
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
        self.pool = WorkerPool(
            self.options.workers, self.options.log_level, device=self.config.engine.device
        )
        ae = make_ae(self.options.scp)
        handler = StoreHandler(
            self.spool,
            self._on_received,
            lambda status: self.metrics.instances_refused.labels(f"0x{status:04X}").inc(),
        )
        handlers = [(evt.EVT_C_STORE, handler)]
        handlers += [(e, log_association) for e in (evt.EVT_ACCEPTED, evt.EVT_REJECTED)]
        self.server = ae.start_server(
            (self.options.bind, self.options.port),
            block=False,
            evt_handlers=handlers,
            ssl_context=self.options.ssl_context,
        )
        if self.options.health_port is not None:
            self.health = HealthServer(
                self.options.bind, self.options.health_port, self.metrics, self.status
            )
            self.health.start()
        for name, target in (("scheduler", self._schedule_loop), ("forwarder", self._forward_loop)):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        tls = " with TLS" if self.options.ssl_context else ""
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

    def stop(self, grace: float = 30.0) -> bool:
        """Stop accepting, close associations, cancel the jobs in hand and re-queue them.

        Returns False when a worker process had to be left behind (the caller should exit
        without waiting for it)."""
        self._stopping.set()
        logger.info("stopping: no new associations; the series in hand go back to the queue")
        if self.server is not None:
            active = list(self.server.active_associations)
            self.server.shutdown()
            deadline = time.monotonic() + 5.0
            while any(a.is_alive() for a in active) and time.monotonic() < deadline:
                time.sleep(0.1)
            for assoc in active:
                if assoc.is_alive():
                    assoc.abort()
        if self.pool is not None:
            self.pool.cancel()
        for thread in self._threads:
            thread.join(grace)
        self._collect(wait=grace)
        with self._jobs_lock:
            for key in list(self._running):
                self.store.release(key, self.owner, error="node stopped")
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
        self.assembly.arrived(got.study_uid, got.series_uid, got.path)

    def _recover(self) -> None:
        """Re-queue unfinished jobs; series still being received and spooled instances that
        never became a job wait for their series timeout again."""
        n = self.store.requeue_unfinished(KIND)
        if n:
            logger.info("re-queued %d unfinished job(s) of the last run", n)
        known: dict[str, set[str]] = {}
        waiting = 0
        for job in self.store.jobs(kind=KIND):
            known.setdefault(job.source_series_uid, set()).update(job.paths)
            if job.state != "received":
                continue
            if job.config_hash != self.identity:
                self.store.set_state(
                    job.key, "failed", error="received under another pipeline; assembled again"
                )
            for path in map(Path, job.paths):  # its series timeout starts again
                if path.is_file():
                    self.assembly.arrived(job.study_uid, job.source_series_uid, path)
                    waiting += 1
        for study, series, paths in self.spool.series():
            for path in paths:
                if str(path) not in known.get(series, set()):
                    self.assembly.arrived(study, series, path)
                    waiting += 1
        if waiting:
            logger.info("%d spooled instance(s) not yet in a queued job: assembling again", waiting)

    def _record(self, arrivals: Arrivals, state: Literal["received", "queued"]) -> None:
        """Put a series' new instances in the job store: while it is still arriving as a
        *received* job, once quiet as a *queued* one. They join the series' latest job if that
        has not started; otherwise they make a new revision with every instance so far."""
        series = arrivals.series_uid
        mine = [
            j
            for j in self.store.jobs(kind=KIND)
            if j.source_series_uid == series and j.config_hash == self.identity
        ]
        latest = max(mine, key=lambda j: j.revision, default=None)
        tag = series[-8:]
        if latest is not None and latest.state in ("received", "queued"):
            self.store.add_paths(latest.key, arrivals.paths)
            if state == "queued" and latest.state == "received":
                job = self.store.set_state(latest.key, "queued")
                rev = f" revision {job.revision}" if job.revision else ""
                logger.info(
                    "series ..%s: complete, %d instance(s) queued%s", tag, len(job.paths), rev
                )
            return
        revision = 0 if latest is None else latest.revision + 1
        folder = self.spool.root / arrivals.study_uid / series
        paths = sorted({*map(str, folder.glob("*.dcm")), *map(str, arrivals.paths)})
        key = derived_series_uid_for(series, self.config, revision)
        self.store.add(
            key,
            kind=KIND,
            study_uid=arrivals.study_uid,
            source_series_uid=series,
            config_hash=self.identity,
            paths=paths,
            revision=revision,
            state=state,
        )
        rev = f" revision {revision}" if revision else ""
        if state == "received":
            logger.info("series ..%s: receiving%s", tag, rev)
        else:
            logger.info("series ..%s: complete, %d instance(s) queued%s", tag, len(paths), rev)

    # -- scheduling ----------------------------------------------------------------------------

    def _schedule_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                for arrivals in self.assembly.unnoted():
                    self._record(arrivals, "received")
                for arrivals in self.assembly.due():
                    self._record(arrivals, "queued")
                self._collect()
                self._dispatch()
                self._renew()
                self._update_gauges()
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
            logger.info(
                "series ..%s: processing %d instance(s) (derived ..%s, attempt %d)",
                job.source_series_uid[-8:],
                len(job.paths),
                job.key[-8:],
                job.attempts,
            )
            future = self.pool.submit(
                job.key, job.paths, self.config, self.derived_dir, job.revision
            )
            with self._jobs_lock:
                self._running[job.key] = (future, job, time.monotonic())

    def _renew(self) -> None:
        with self._jobs_lock:
            for key in list(self._running):
                self.store.renew(key, self.owner, self.options.lease_seconds)

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
        try:
            result = future.result()
        except BrokenProcessPool as exc:
            logger.error("series ..%s: worker died (%s); back to the queue", tag, describe(exc))
            self.store.release(job.key, self.owner, error=f"worker died: {describe(exc)}")
            self.pool.restart()
            return
        except Exception as exc:  # noqa: BLE001
            logger.error("series ..%s: worker failed (%s); back to the queue", tag, describe(exc))
            self.store.release(job.key, self.owner, error=describe(exc))
            return
        status = result.get("status")
        if status == "cancelled":
            self.store.release(job.key, self.owner, error="cancelled: node stopping")
            return
        self.metrics.processing_seconds.observe(seconds)
        if status in ("done", "partial"):
            failed = result.get("failed") or []
            error = "; ".join(f"{f['path']}: {f['reason']}" for f in failed)
            self.store.set_state(
                job.key, "done", result=result, error=error, frames=result.get("frames")
            )
            self.metrics.series_processed.inc()
            logger.info(
                "series ..%s: %s, %d frame(s), %.1f s",
                tag,
                status,
                result.get("frames", 0),
                seconds,
            )
        else:
            reason = result.get("reason") or "failed"
            self.store.set_state(job.key, "failed", error=reason, result=result)
            self.metrics.series_failed.inc()
            logger.warning("series ..%s: failed: %s", tag, reason)

    def _update_gauges(self) -> None:
        counts = self.store.counts(KIND)
        self.metrics.queue_depth.set(counts["received"] + counts["queued"] + counts["processing"])

    # -- forwarding ----------------------------------------------------------------------------

    def _forward_loop(self) -> None:
        dest = self.options.forward
        if dest is None:
            return
        while not self._stopping.is_set():
            try:
                for job in self.store.due_forwards():
                    if self._stopping.is_set():
                        break
                    self._forward(job, dest)
            except Exception:  # noqa: BLE001
                logger.exception("forwarding round failed")
            self._stopping.wait(0.5)

    def _forward(self, job: Job, dest: Destination) -> None:
        result = dict(job.result or {})
        outputs = [*result.get("already_done", []), *result.get("written", [])]
        sent = list(result.get("forwarded", []))
        tag = job.source_series_uid[-8:]
        try:
            sent += send_instances(
                outputs,
                dest,
                calling_ae=self.options.scp.ae_title,
                already_sent=sent,
                ssl_context=self.options.forward_ssl_context,
                on_sent=lambda _: self.metrics.instances_forwarded.inc(),
            )
        except ForwardError as exc:
            sent += exc.sent
            attempt = job.forward_attempts + 1
            delay = retry_delay(attempt, base=self.options.retry_base, cap=self.options.retry_max)
            self.metrics.forward_failures.inc()
            logger.warning(
                "series ..%s: forward to %s failed (%s); attempt %d, retry in %.0f s",
                tag, dest, exc, attempt, delay,
            )  # fmt: skip
            self.store.set_state(job.key, "done", result={**result, "forwarded": sent})
            self.store.forward_failed(job.key, str(exc), time.time() + delay)
            return
        except Exception as exc:  # noqa: BLE001 - e.g. an output file gone: retry later
            delay = retry_delay(
                job.forward_attempts + 1, base=self.options.retry_base, cap=self.options.retry_max
            )
            logger.warning("series ..%s: forward failed: %s", tag, describe(exc))
            self.store.forward_failed(job.key, describe(exc), time.time() + delay)
            return
        self.store.set_state(job.key, "forwarded", result={**result, "forwarded": sent})
        logger.info("series ..%s: forwarded %d instance(s) to %s", tag, len(sent), dest)

    # -- health --------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """What ``/health`` answers: ok while serving, job counts, series still receiving."""
        return {
            "status": "stopping" if self._stopping.is_set() else "ok",
            "ae_title": self.options.scp.ae_title,
            "port": self.port,
            "jobs": self.store.counts(KIND),
            "assembling": self.assembly.pending(),
            "running": len(self._running),
            "workers": self.options.workers,
        }


def _counts_text(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {state}" for state, n in counts.items() if n) or "no jobs"
