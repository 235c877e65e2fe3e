"""``dicom-sr batch``: reprocess an archive, resumable, on this machine or a Dask cluster."""

from __future__ import annotations

import json
import logging
import sqlite3
import sys
import time

import click

from dicom_sr.batch.cluster import NoGpuWorkers
from dicom_sr.cli.options import (
    engine_options,
    load_config,
    output_options,
    setup_logging,
    usable_out,
)
from dicom_sr.config import ConfigError
from dicom_sr.errors import MissingExtra

logger = logging.getLogger("dicom_sr.batch")


@click.command("batch")
@click.argument("archive", nargs=-1, required=True, type=click.Path(exists=True))
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Output folder: derived series, manifest.jsonl, jobs.sqlite3, batch-report.json."
    " Workers on other hosts must see it at the same path.",
)
@click.option(
    "--store",
    "store_path",
    default=None,
    type=click.Path(dir_okay=False),
    help="The job store (SQLite), opened by this process only: keep it on this host's local"
    " disk. Default: OUT/jobs.sqlite3.",
)
@engine_options
@output_options
@click.option(
    "--scheduler",
    default=None,
    metavar="ADDRESS",
    help="An existing Dask scheduler (tcp://host:8786). Default: an embedded local cluster.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="Worker processes of the embedded cluster (default: CPU cores / threads per worker).",
)
@click.option(
    "--threads-per-worker",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Torch threads in each worker (each worker runs one series at a time).",
)
@click.option(
    "--gpus-per-worker",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="GPUs of each embedded worker (Dask resource GPU); GPU tasks take one each.",
)
@click.option(
    "--retries",
    type=click.IntRange(min=0),
    default=2,
    show_default=True,
    help="Retries of a series that failed or whose worker died, then it is failed.",
)
@click.option("--limit", type=click.IntRange(min=1), default=None, help="At most N series.")
@click.option("--dry-run", is_flag=True, help="Plan and print what would be done; process nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("-q", "--quiet", is_flag=True, help="No progress; warnings only.")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
def batch(
    archive,
    out_dir,
    store_path,
    scheduler,
    workers,
    threads_per_worker,
    gpus_per_worker,
    retries,
    limit,
    dry_run,
    as_json,
    quiet,
    verbose,
    **opts,
):
    """Super-resolve every ultrasound series under ARCHIVE into --out, resumably.

    A re-run skips the series already done; a changed pipeline makes new derived series.
    Exit status: 0 when every usable series is done, 1 when one failed or none was usable.
    """
    setup_logging(verbose, quiet or as_json)
    if verbose < 2:  # Dask's own INFO lines (nannies, workers) drown the progress lines
        _quiet_dask()
    if scheduler and (workers or gpus_per_worker):
        raise click.UsageError("--workers and --gpus-per-worker size the embedded cluster only")
    config = load_config(opts, **{"engine.threads": threads_per_worker})
    out = usable_out(out_dir)
    if not scheduler:  # the embedded cluster's workers run here; a scheduler's may have GPUs
        _check_local_gpus(config.engine.device, 0 if dry_run else gpus_per_worker)

    from dicom_sr.batch.runner import BatchOptions, run_batch

    options = BatchOptions(
        scheduler=scheduler,
        workers=workers,
        threads_per_worker=threads_per_worker,
        gpus_per_worker=gpus_per_worker,
        retries=retries,
        limit=limit,
        dry_run=dry_run,
        store=store_path,
    )
    show = not (quiet or as_json) and sys.stderr.isatty()
    try:
        with _BarProgress() if show else _LogProgress(quiet or as_json) as progress:
            report = run_batch(archive, config, out, options, progress=progress)
    except ConnectionError as exc:
        raise click.BadParameter(str(exc), param_hint="--scheduler") from None
    except ConfigError as exc:  # a [[priors]] file that is not a usable prior
        raise click.BadParameter(str(exc), param_hint="--pipeline") from None
    except (MissingExtra, NoGpuWorkers) as exc:  # a set-up problem, not a crash: one line
        raise click.ClickException(str(exc)) from None
    except sqlite3.DatabaseError as exc:  # an unusable job store
        where = store_path or f"{out}/jobs.sqlite3"
        hint = "--store" if store_path else "--out"
        raise click.BadParameter(f"{where}: {exc}", param_hint=hint) from None
    except KeyboardInterrupt:
        click.echo("interrupted: run the same command again to resume", err=True)
        sys.exit(130)
    if as_json:
        click.echo(json.dumps(report, indent=2, default=str))
    else:
        _print_report(report)
    s = report["series"]
    ok = s["usable"] > 0 and s["failed"] == 0 and (dry_run or s["unfinished"] == 0)
    sys.exit(0 if ok else 1)


def _check_local_gpus(device: str, gpus_per_worker: int) -> None:
    """Asking the embedded cluster for CUDA on a machine without it ends at once, in one line.

    With ``--scheduler`` the workers are elsewhere and the client plans without a GPU: the
    series UIDs name the device *kind*, which needs no device (``engine.device_kind``)."""
    if device != "cuda" and not gpus_per_worker:
        return
    from dicom_sr.batch.cluster import gpu_count

    if gpu_count() == 0:
        what = "--device cuda" if device == "cuda" else f"--gpus-per-worker {gpus_per_worker}"
        raise click.UsageError(
            f"{what}: this machine has no CUDA device (use --device cpu, or run batch on a"
            " host that has one)"
        )


def _quiet_dask() -> None:
    """Dask's loggers at WARNING (set after its import, which configures them at INFO)."""
    try:
        import distributed  # noqa: F401
    except ImportError:  # the runner says how to install it
        return
    for name in ("distributed", "distributed.scheduler", "distributed.nanny", "distributed.core"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _print_report(r: dict) -> None:
    s, p = r["series"], r["plan"]
    click.echo(
        f"planned {p['series']} series from {p['files']} files ({p['skipped_files']} skipped) "
        f"in {p['seconds']:.1f} s"
    )
    if r["dry_run"]:
        for t in r["todo"]:
            click.echo(f"  would process {t['key']}: {t['files']} files, {t['frames']} frames")
        click.echo(f"{len(r['todo'])} series to do, {s['already_done']} already done")
        return
    click.echo(
        f"series: {s['done']} done, {s['failed']} failed, {s['unfinished']} unfinished, "
        f"{s['already_done']} already done before; {r['frames']} frames in "
        f"{r['processing_seconds']:.1f} s ({r['frames_per_second']:.2f} frames/s)"
    )
    for f in r["failures"]:
        click.echo(f"  FAILED {f['key']} after {f['attempts']} attempts: {f['error']}")
    for sk in r["skipped"][:20]:
        click.echo(f"  skipped {sk['path']}: {sk['reason']}")
    if len(r["skipped"]) > 20:
        click.echo(f"  ... and {len(r['skipped']) - 20} more skipped files (see the report)")
    if r["dashboard"]:
        click.echo(f"Dask dashboard was at {r['dashboard']}")
    click.echo(f"report: {r['out']}/batch-report.json")


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    h, rem = divmod(int(seconds), 3600)
    m, sec = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{sec:02d}s" if m else f"{sec}s")


class _BarProgress:
    """A rich bar on stderr: series done/total, frames per second, ETA, failures so far."""

    def __enter__(self):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        self._p = Progress(
            TextColumn("series"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            console=Console(stderr=True),
        )
        self._p.__enter__()
        self._task = None
        return self

    def __exit__(self, *exc):
        self._p.__exit__(*exc)

    def __call__(self, st) -> None:
        if self._task is None:
            self._task = self._p.add_task("series", total=st.total, info="")
        info = f"{st.fps:.2f} frames/s  ETA {_eta(st.eta_seconds)}  failed {st.failed}"
        self._p.update(self._task, completed=st.done + st.failed, info=info)


class _LogProgress:
    """The same as INFO log lines, at most one every ``every`` seconds (and at the end)."""

    def __init__(self, quiet: bool, every: float = 10.0) -> None:
        self.quiet, self.every, self._last = quiet, every, 0.0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None

    def __call__(self, st) -> None:
        now = time.monotonic()
        end = st.done + st.failed >= st.total
        if self.quiet or (now - self._last < self.every and not end):
            return
        self._last = now
        logger.info(
            "series %d/%d done, %d failed, %.2f frames/s, ETA %s",
            st.done,
            st.total,
            st.failed,
            st.fps,
            _eta(st.eta_seconds),
        )
