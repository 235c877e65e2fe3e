"""The node's forwarder thread: every done job goes to every ``--forward`` destination once.

Per destination and job, a row of the job store's ``forwards`` table keeps what the
destination acknowledged, so a retry sends only the rest and a destination that is down never
holds up another. Failed attempts back off (``--forward-retry`` doubling up to
``--forward-retry-max``); :meth:`Forwarder.flush` (SIGHUP, ``dicom-sr jobs retry --forward``)
tries everything at once.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from typing import Any

from dicom_sr.errors import describe
from dicom_sr.jobs import Forward, Forwards, Job, JobStore
from dicom_sr.node.forward import Destination, ForwardError, retry_delay, send_instances
from dicom_sr.node.health import Metrics

__all__ = ["Forwarder", "outputs_of"]

logger = logging.getLogger(__name__)


def outputs_of(result: dict[str, Any] | None) -> list[str]:
    """The derived files of a job's result (written now or by an earlier attempt)."""
    result = result or {}
    return sorted({*result.get("already_done", []), *result.get("written", [])})


class Forwarder:
    """Sends done jobs to ``destinations``; tracks since when each one fails."""

    def __init__(
        self,
        store: JobStore,
        destinations: tuple[Destination, ...],
        *,
        calling_ae: str,
        metrics: Metrics,
        ssl_context: ssl.SSLContext | None = None,
        retry_base: float = 5.0,
        retry_max: float = 60.0,
    ) -> None:
        self.forwards = Forwards(store)
        self.destinations = {str(d): d for d in destinations}
        self.calling_ae = calling_ae
        self.metrics = metrics
        self.ssl_context = ssl_context
        self.retry_base, self.retry_max = retry_base, retry_max
        #: destination -> (wall time of the first failure since its last success, last error)
        self.failing: dict[str, tuple[float, str]] = {}
        self._flush = threading.Event()

    @property
    def names(self) -> list[str]:
        return list(self.destinations)

    def open(self, key: str) -> None:
        """A job is done: it owes every destination its outputs."""
        self.forwards.open(key, self.names)

    def request_flush(self) -> None:
        """Try every pending forward at the next round (safe from a signal handler)."""
        self._flush.set()

    def run(self, stopping: threading.Event) -> None:
        """The thread's loop, until ``stopping`` is set."""
        while not stopping.is_set():
            try:
                if self._flush.is_set():
                    self._flush.clear()
                    n = self.forwards.flush()
                    logger.info("forwarding: trying %d pending forward(s) now", n)
                self.round(stopping)
            except Exception:  # noqa: BLE001 - the loop must survive one bad round
                logger.exception("forwarding round failed")
            stopping.wait(0.5)

    def round(self, stopping: threading.Event | None = None) -> None:
        """One pass over the due forwards; a destination that fails is left for this round."""
        down: set[str] = set()
        for job, row in self.forwards.due(self.names):
            if stopping is not None and stopping.is_set():
                return
            if row.destination not in down and not self._send(job, row):
                down.add(row.destination)

    def _send(self, job: Job, row: Forward) -> bool:
        dest = self.destinations[row.destination]
        tag = job.source_series_uid[-8:]
        sent = list(row.sent)
        try:
            sent += send_instances(
                outputs_of(job.result),
                dest,
                calling_ae=self.calling_ae,
                already_sent=sent,
                ssl_context=self.ssl_context,
                on_sent=lambda _: self.metrics.instances_forwarded.inc(),
            )
        except Exception as exc:  # noqa: BLE001 - a ForwardError, or an output file gone
            if isinstance(exc, ForwardError):
                sent += exc.sent
            why = str(exc) if isinstance(exc, ForwardError) else describe(exc)
            delay = retry_delay(row.attempts + 1, base=self.retry_base, cap=self.retry_max)
            self.forwards.failed(job.key, row.destination, why, time.time() + delay, sent)
            self.metrics.forward_failures.labels(row.destination).inc()
            since = self.failing.get(row.destination, (time.time(), ""))[0]
            self.failing[row.destination] = (since, why)
            logger.warning(
                "series ..%s: forward to %s failed (%s); attempt %d, retry in %.0f s",
                tag, dest, why, row.attempts + 1, delay,
            )  # fmt: skip
            return False
        forwarded = self.forwards.sent(job.key, row.destination, sent, self.names)
        if self.failing.pop(row.destination, None) is not None:
            logger.info("forwarding to %s works again", dest)
        new = len(sent) - len(row.sent)
        logger.info(
            "series ..%s: forwarded %d instance(s) to %s%s",
            tag, new, dest, "; sent everywhere" if forwarded and len(self.names) > 1 else "",
        )  # fmt: skip
        return True

    def failing_for(self, now: float | None = None) -> dict[str, tuple[float, str]]:
        """Destination -> (seconds failing, last error), for those failing now."""
        now = time.time() if now is None else now
        return {d: (now - since, err) for d, (since, err) in self.failing.items()}

    def update_metrics(self, now: float | None = None) -> None:
        """Backlog per destination and the age of the oldest series still owed."""
        now = time.time() if now is None else now
        oldest = None
        for dest, (count, since) in self.forwards.backlog(self.names).items():
            self.metrics.forward_backlog.labels(dest).set(count)
            if since is not None:
                oldest = since if oldest is None else min(oldest, since)
        self.metrics.forward_oldest_seconds.set(0 if oldest is None else max(0.0, now - oldest))
