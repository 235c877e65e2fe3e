"""``dicom-sr listen``: run the DICOM node (receive, super-resolve, forward) until a signal."""

from __future__ import annotations

import logging
import os
import signal
import sys
from pathlib import Path

import click

from dicom_sr.cli.options import engine_options, load_config, output_options
from dicom_sr.config import ConfigError
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
    multiple=True,
    help="C-STORE every derived series to this node (repeatable: each destination gets "
    "every series once; retried with back-off).",
)
@click.option(
    "--forward-tls-ca",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Forward over TLS, verifying the destinations against this CA.",
)
@click.option(
    "--forward-tls-cert",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Forward over TLS with this client certificate (with --forward-tls-key).",
)
@click.option("--forward-tls-key", type=click.Path(exists=True, dir_okay=False), default=None)
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
    "--health-bind",
    default="127.0.0.1",
    show_default=True,
    help="Address of /health and /metrics (no authentication: keep it local or firewalled).",
)
@click.option(
    "--forward-alert",
    type=click.FloatRange(min=0),
    default=300.0,
    show_default=True,
    metavar="SECONDS",
    help="/health answers 503 once a destination has failed for this long.",
)
@click.option(
    "--min-free",
    default=None,
    metavar="SIZE",
    help="Below this much free disk (e.g. 2G), refuse associations and stores (0xA700) "
    "before any write can fail, and start no series.",
)
@click.option(
    "--retention",
    default=None,
    metavar="DURATION",
    help="Delete the spooled inputs and derived files of finished jobs older than this "
    "(e.g. 7d, 12h, 30s); the jobs keep their rows.",
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
    default=60.0,
    show_default=True,
    metavar="SECONDS",
    help="Longest delay between forwarding retries (SIGHUP: retry now).",
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
    forward_tls_ca,
    forward_tls_cert,
    forward_tls_key,
    series_timeout,
    workers,
    tls_cert,
    tls_key,
    tls_ca,
    max_pdu,
    max_associations,
    health_port,
    health_bind,
    forward_alert,
    min_free,
    retention,
    forward_retry,
    forward_retry_max,
    quiet,
    verbose,
    **opts,
):
    """Run a DICOM node: receive ultrasound series, super-resolve each, forward the results.

    Answers C-ECHO and C-STORE (US Image Storage, US Multi-frame Image Storage). Every
    instance is on disk before Success is answered; a series is processed after
    --series-timeout seconds without a new instance. SIGINT/SIGTERM stop it gracefully;
    SIGHUP retries every pending forward now.
    """
    level = _setup_node_logging(verbose, quiet)
    config = load_config(opts)
    from dicom_sr.node.forward import client_ssl_context, parse_destination
    from dicom_sr.node.scp import ScpOptions, server_ssl_context
    from dicom_sr.node.service import Node, NodeOptions
    from dicom_sr.node.upkeep import parse_duration, parse_size

    dests = []
    for text in forward:
        try:
            dests.append(parse_destination(text))
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--forward") from None
    if len(set(map(str, dests))) != len(dests):
        raise click.BadParameter("a destination is given twice", param_hint="--forward")
    if bool(tls_cert) != bool(tls_key) or (tls_ca and not tls_cert):
        raise click.BadParameter("give --tls-cert and --tls-key together", param_hint="--tls-*")
    if bool(forward_tls_cert) != bool(forward_tls_key):
        raise click.BadParameter(
            "give --forward-tls-cert and --forward-tls-key together", param_hint="--forward-tls-*"
        )
    ssl_context = server_ssl_context(tls_cert, tls_key, tls_ca) if tls_cert else None
    forward_tls = None
    if forward_tls_ca or forward_tls_cert:
        forward_tls = client_ssl_context(forward_tls_ca, forward_tls_cert, forward_tls_key)
    try:
        min_free_bytes = parse_size(min_free) if min_free else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--min-free") from None
    try:
        retention_s = parse_duration(retention) if retention else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--retention") from None
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
        forward=tuple(dests),
        series_timeout=series_timeout,
        workers=workers,
        health_port=health_port,
        health_bind=health_bind,
        ssl_context=ssl_context,
        forward_ssl_context=forward_tls,
        retry_base=forward_retry,
        retry_max=forward_retry_max,
        forward_alert=forward_alert,
        min_free=min_free_bytes,
        retention=retention_s,
        log_level=level,
    )
    try:
        node = Node(options, config)
    except ConfigError as exc:  # a [[priors]] file that is not a usable prior
        raise click.BadParameter(str(exc), param_hint="--pipeline") from None
    try:
        node.start()
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {bind}:{port}: {exc}") from None

    def on_signal(signum, _frame) -> None:
        logging.getLogger("dicom_sr.node").info("%s received", signal.Signals(signum).name)
        node.request_stop()

    def on_hangup(_signum, _frame) -> None:
        logging.getLogger("dicom_sr.node").info("SIGHUP received: retrying forwards now")
        node.request_flush()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_hangup)
    while not node.wait(1.0):
        pass
    if not node.stop():
        logging.shutdown()
        os._exit(0)  # a stuck worker: do not wait for it at interpreter exit
    sys.exit(0)
