"""Health check and Prometheus metrics over HTTP (``--health-port``).

``GET /health`` answers 200 with a small JSON body while the node serves (503 while it stops);
``GET /metrics`` is the Prometheus text format of the node's own registry.
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
            "dicomsr_forward_failures", "Forwarding attempts that failed (retried)", registry=r
        )
        self.queue_depth = Gauge(
            "dicomsr_queue_depth", "Series jobs waiting or being processed", registry=r
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
