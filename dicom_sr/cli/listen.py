"""``dicom-sr listen``: run the DICOM node (receive, super-resolve, forward) until a signal."""

from __future__ import annotations

import logging
import os
import signal
import sys
from pathlib import Path

import click

from dicom_sr.cli.options import engine_options, load_config, output_options
from dicom_sr.logs import route_warnings


def _setup_node_logging(verbose: int, quiet: bool) -> int:
    """Plain line-based logs on stderr (a service has no terminal); returns the level."""
    from dicom_sr.node.workers import LOG_FORMAT

    level = logging.WARNING if quiet else logging.DEBUG if verbose >= 1 else logging.INFO
    logging.basicConfig(level=level, format=LOG_FORMAT, stream=sys.stderr, force=True)
    route_warnings()
    logging.getLogger("pynetdicom").setLevel(logging.DEBUG if verbose >= 2 else logging.WARNING)
    return level


@click.command("listen")
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Node folder: incoming/ (spool), quarantine/, derived/, jobs.sqlite3.",
)
@click.option("--port", type=click.IntRange(0, 65535), default=11112, show_default=True)
@click.option("--bind", default="0.0.0.0", show_default=True, help="Address to listen on.")
@click.option("--ae-title", default="DICOMSR", show_default=True, help="This node's AE title.")
@click.option(
    "--allow-ae",
    multiple=True,
    metavar="AE",
    help="Accept associations only from this calling AE title (repeatable).",
)
@click.option(
    "--forward",
    metavar="AE@HOST:PORT",
    default=None,
    help="C-STORE every derived series to this node (retried with back-off).",
)
@click.option(
    "--series-timeout",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    help="A series is complete after this many seconds without a new instance.",
)
@engine_options
@output_options
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False), default=None)
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False), default=None)
@click.option(
    "--tls-ca",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Require client certificates signed by this CA (needs --tls-cert/--tls-key).",
)
@click.option("--max-pdu", type=click.IntRange(min=0), default=16382, show_default=True)
@click.option("--max-associations", type=click.IntRange(min=1), default=10, show_default=True)
@click.option(
    "--health-port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Serve /health and Prometheus /metrics over HTTP on this port.",
)
@click.option(
    "--forward-retry",
    type=click.FloatRange(min=0.1),
    default=5.0,
    show_default=True,
    metavar="SECONDS",
    help="First forwarding retry delay; doubles each failure.",
)
@click.option(
    "--forward-retry-max",
    type=click.FloatRange(min=0.1),
    default=600.0,
    show_default=True,
    metavar="SECONDS",
    help="Longest delay between forwarding retries.",
)
@click.option("-q", "--quiet", is_flag=True, help="Warnings only.")
@click.option("-v", "--verbose", count=True, help="Debug log (-vv: pynetdicom's too).")
def listen(
    out_dir,
    port,
    bind,
    ae_title,
    allow_ae,
    forward,
    series_timeout,
    workers,
    tls_cert,
    tls_key,
    tls_ca,
    max_pdu,
    max_associations,
    health_port,
    forward_retry,
    forward_retry_max,
    quiet,
    verbose,
    **opts,
):
    """Run a DICOM node: receive ultrasound series, super-resolve each, forward the results.

    Answers C-ECHO and C-STORE (US Image Storage, US Multi-frame Image Storage). Every
    instance is on disk before Success is answered; a series is processed after
    --series-timeout seconds without a new instance. SIGINT/SIGTERM stop it gracefully.
    """
    level = _setup_node_logging(verbose, quiet)
    config = load_config(opts)
    from dicom_sr.node.forward import parse_destination
    from dicom_sr.node.scp import ScpOptions, server_ssl_context
    from dicom_sr.node.service import Node, NodeOptions

    dest = None
    if forward:
        try:
            dest = parse_destination(forward)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--forward") from None
    if bool(tls_cert) != bool(tls_key) or (tls_ca and not tls_cert):
        raise click.BadParameter("give --tls-cert and --tls-key together", param_hint="--tls-*")
    ssl_context = server_ssl_context(tls_cert, tls_key, tls_ca) if tls_cert else None
    for title in (ae_title, *allow_ae):
        if not 0 < len(title.strip()) <= 16:
            raise click.BadParameter(f"AE title {title!r} must be 1-16 characters")
    options = NodeOptions(
        out_dir=Path(out_dir).resolve(),
        port=port,
        bind=bind,
        scp=ScpOptions(
            ae_title=ae_title,
            allow_ae=tuple(allow_ae),
            max_pdu=max_pdu,
            max_associations=max_associations,
        ),
        forward=dest,
        series_timeout=series_timeout,
        workers=workers,
        health_port=health_port,
        ssl_context=ssl_context,
        retry_base=forward_retry,
        retry_max=forward_retry_max,
        log_level=level,
    )
    node = Node(options, config)
    try:
        node.start()
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {bind}:{port}: {exc}") from None

    def on_signal(signum, _frame) -> None:
        logging.getLogger("dicom_sr.node").info("%s received", signal.Signals(signum).name)
        node.request_stop()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    while not node.wait(1.0):
        pass
    if not node.stop():
        logging.shutdown()
        os._exit(0)  # a stuck worker: do not wait for it at interpreter exit
    sys.exit(0)
