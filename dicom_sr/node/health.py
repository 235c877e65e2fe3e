"""Health check and Prometheus metrics over HTTP (``--health-port``).

``GET /health`` answers 200 with a small JSON body while the node serves, and 503 with the
same body, its ``problems`` saying why, while it stops or something needs an operator (a
destination failing for too long, the disk below ``--min-free``, a broken worker pool);
``GET /metrics`` is the Prometheus text format of the node's own registry. It listens on
``--health-bind`` (127.0.0.1 unless an operator opens it up: it has no authentication).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

__all__ = ["Metrics", "HealthServer"]

logger = logging.getLogger(__name__)


class Metrics:
    """The node's counters, in a registry of its own (two nodes in one process do not clash)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.instances_received = Counter(
            "dicomsr_instances_received", "Instances received and spooled (Success)", registry=r
        )
        self.instances_refused = Counter(
            "dicomsr_instances_refused",
            "C-STORE requests answered with a failure status",
            ["status"],
            registry=r,
        )
        self.series_processed = Counter(
            "dicomsr_series_processed", "Series jobs that ended done", registry=r
        )
        self.series_failed = Counter(
            "dicomsr_series_failed", "Series jobs that ended failed", registry=r
        )
        self.instances_forwarded = Counter(
            "dicomsr_instances_forwarded", "Derived instances sent to --forward", registry=r
        )
        self.forward_failures = Counter(
            "dicomsr_forward_failures",
            "Forwarding attempts that failed (retried), per destination",
            ["destination"],
            registry=r,
        )
        self.forward_backlog = Gauge(
            "dicomsr_forward_backlog",
            "Derived series processed but not yet sent, per destination",
            ["destination"],
            registry=r,
        )
        self.forward_oldest_seconds = Gauge(
            "dicomsr_forward_oldest_seconds",
            "Age of the oldest derived series not yet sent to every destination (0: none)",
            registry=r,
        )
        self.associations_rejected = Counter(
            "dicomsr_associations_rejected",
            "Association requests rejected, by reason",
            ["reason"],
            registry=r,
        )
        self.queue_depth = Gauge(
            "dicomsr_queue_depth", "Series jobs waiting or being processed", registry=r
        )
        self.spool_bytes = Gauge(
            "dicomsr_spool_bytes", "Bytes of received instances in the spool", registry=r
        )
        self.disk_free_bytes = Gauge(
            "dicomsr_disk_free_bytes", "Free bytes on the disk of --out", registry=r
        )
        self.disk_low = Gauge(
            "dicomsr_disk_low", "1 while free disk is below --min-free (stores refused)", registry=r
        )
        self.healthy = Gauge(
            "dicomsr_healthy", "1 while /health answers 200, 0 while it answers 503", registry=r
        )
        self.processing_seconds = Histogram(
            "dicomsr_processing_seconds",
            "Seconds a worker spent on one series",
            buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, float("inf")),
            registry=r,
        )

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)


class HealthServer:
    """A threaded HTTP server for ``/health`` and ``/metrics`` on ``bind:port``."""

    def __init__(
        self,
        bind: str,
        port: int,
        metrics: Metrics,
        status: Callable[[], dict[str, Any]],
    ) -> None:
        self.metrics = metrics
        self.status = status
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                try:
                    if self.path.split("?")[0] == "/metrics":
                        body, ctype, code = outer.metrics.render(), CONTENT_TYPE_LATEST, 200
                    elif self.path.split("?")[0] in ("/", "/health", "/healthz"):
                        state = outer.status()
                        code = 200 if state.get("status") == "ok" else 503
                        body, ctype = json.dumps(state).encode(), "application/json"
                    else:
                        body, ctype, code = b"not found\n", "text/plain", 404
                except Exception as exc:  # noqa: BLE001 - a probe must get an answer
                    logger.debug("health handler failed", exc_info=True)
                    body, ctype, code = f"{exc}\n".encode(), "text/plain", 500
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, fmt: str, *args: Any) -> None:
                logger.debug("health: " + fmt, *args)

        self.server = ThreadingHTTPServer((bind, port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(
            target=self.server.serve_forever, name="health", daemon=True
        )

    def start(self) -> None:
        """Serve in a background thread."""
        self._thread.start()
        logger.info(
            "health and metrics on http://%s:%d/health, /metrics", *self.server.server_address[:2]
        )

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self.server.shutdown()
        self.server.server_close()
