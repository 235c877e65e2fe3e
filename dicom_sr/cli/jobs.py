"""``dicom-sr jobs``: list the jobs of an output folder's job store; ``retry`` and ``forget``.

Every verb opens the SQLite store (WAL) for one short transaction, so it works while a node or
a batch runs on that folder: the node polls the store and picks up what was changed.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click

from dicom_sr.cli.options import console
from dicom_sr.jobs import BATCH_LABELS, STATES, STORE_NAME, Forwards, Job, JobStore

_ALIASES = {label: state for state, label in BATCH_LABELS.items()}

_OUT = click.option(
    "--out",
    "out_dir",
    type=click.Path(exists=True, file_okay=False),
    help="The output folder of listen or batch (holds jobs.sqlite3).",
)
_JSON = click.option("--json", "as_json", is_flag=True, help="Print JSON.")
_STORE = click.option(
    "--store",
    "store_path",
    type=click.Path(exists=True, dir_okay=False),
    help="The job store file, where batch --store put it outside --out.",
)


def _open(out_dir: str | None, store_path: str | None = None) -> JobStore:
    """The job store of ``out_dir`` (or the file ``store_path``), refused when there is none."""
    if store_path:
        return JobStore(out_dir or Path(store_path).parent, path=store_path)
    if not out_dir:
        raise click.UsageError("give --out (the folder of listen or batch) or --store")
    if not (Path(out_dir) / STORE_NAME).exists():
        raise click.UsageError(f"{out_dir}: no {STORE_NAME} (not an output of listen or batch)")
    return JobStore(out_dir)


def _when(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else ""


def job_record(job: Job, forwards: Forwards) -> dict[str, Any]:
    """One job as ``jobs --json`` prints it: every column (``identity``: the pipeline identity
    hash behind the derived UIDs) and its destinations."""
    out = job.to_dict()
    out["identity"] = out.pop("config_hash")
    out["destinations"] = [
        {k: v for k, v in f.to_dict().items() if k != "key"} for f in forwards.of(job.key)
    ]
    return out


def _destinations(forwards: Forwards, job: Job) -> str:
    parts = []
    for f in forwards.of(job.key):
        if f.state == "sent":
            parts.append(f"{f.destination}: sent")
        else:
            failures = f" ({f.attempts} failed)" if f.attempts else ""
            parts.append(f"{f.destination}: pending{failures}")
    return "\n".join(parts)


def _resolve(store: JobStore, keys: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """KEYs as job keys: a derived series UID, a source series UID, or the end of either
    (as ``jobs`` shows them), when it names one job; returns (keys, not found)."""
    rows = store.jobs()
    found, missing = [], []
    for text in keys:
        exact = {j.key for j in rows if text in (j.key, j.source_series_uid)}
        tail = {j.key for j in rows if j.key.endswith(text) or j.source_series_uid.endswith(text)}
        if exact or len(tail) == 1:
            found += sorted(exact or tail)  # a source series: each of its revisions
        else:
            missing.append(text)
    return found, missing


@click.group("jobs", invoke_without_command=True)
@_OUT
@_STORE
@_JSON
@click.option(
    "--state",
    type=click.Choice([*STATES, *_ALIASES]),
    default=None,
    help="Only jobs in this state (batch's planned = queued, running = processing).",
)
@click.option("--kind", type=click.Choice(["listen", "batch"]), default=None)
@click.pass_context
def jobs(
    ctx: click.Context,
    out_dir: str | None,
    store_path: str | None,
    as_json: bool,
    state: str | None,
    kind: str | None,
) -> None:
    """List the jobs in OUT/jobs.sqlite3: one row per series with its source, sender, state,
    attempts, last error and destinations. The commands retry and forget change them."""
    ctx.ensure_object(dict)
    ctx.obj.update(out_dir=out_dir, store_path=store_path)
    if ctx.invoked_subcommand is not None:
        return
    store = _open(out_dir, store_path)
    forwards = Forwards(store)
    rows = store.jobs(state=_ALIASES.get(state or "", state), kind=kind)
    if as_json:
        click.echo(json.dumps([job_record(j, forwards) for j in rows], indent=2, default=str))
        return
    from rich.table import Table

    table = Table(title=f"{len(rows)} jobs in {store.path}")
    table.add_column("source study / series", overflow="fold")
    table.add_column("derived series", overflow="fold")
    for col in ("from", "received", "kind", "state", "frames", "attempts"):
        table.add_column(col)
    table.add_column("last error", overflow="fold")
    table.add_column("destinations", overflow="fold")
    for j in rows:
        label = BATCH_LABELS.get(j.state, j.state) if j.kind == "batch" else j.state
        if j.purged:
            label += " (files deleted)"
        table.add_row(
            f"{j.study_uid}\n{j.source_series_uid}",
            j.key,
            j.calling_ae,
            _when(j.created),
            j.kind,
            label,
            str(j.frames),
            str(j.attempts),
            j.error or j.forward_error,
            _destinations(forwards, j),
        )
    console(stderr=False).print(table)
    counts = {k: v for k, v in store.counts(kind).items() if v}
    click.echo(", ".join(f"{k}: {v}" for k, v in counts.items()) or "no jobs")


def _report(as_json: bool, verb: str, done: list[str], missing: list[str], **extra: Any) -> None:
    if as_json:
        click.echo(json.dumps({verb: done, "not_found": missing, **extra}, indent=2))
    else:
        for key in done:
            click.echo(f"{verb}: {key}")
        for name, value in extra.items():
            if value == []:
                continue
            click.echo(f"{name.replace('_', ' ')}: {value}")
        for text in missing:
            click.echo(f"not found (or not unique): {text}", err=True)
    if missing:
        raise SystemExit(1)


@jobs.command("retry")
@click.argument("keys", nargs=-1)
@_OUT
@_STORE
@_JSON
@click.option("--failed", "all_failed", is_flag=True, help="Every failed job.")
@click.option(
    "--forward",
    "flush",
    is_flag=True,
    help="Try pending forwards now (of KEYs, or all) instead of waiting for their back-off.",
)
@click.pass_context
def retry(
    ctx: click.Context,
    keys: tuple[str, ...],
    out_dir: str | None,
    store_path: str | None,
    as_json: bool,
    all_failed: bool,
    flush: bool,
) -> None:
    """Queue failed jobs again with fresh attempts (KEY: derived or source series UID, or its
    end as shown), and/or (--forward) retry their pending forwards now."""
    store = _open(out_dir or ctx.obj.get("out_dir"), store_path or ctx.obj.get("store_path"))
    if not (keys or all_failed or flush):
        raise click.UsageError("give KEY..., --failed or --forward")
    found, missing = _resolve(store, keys) if keys else ([], [])
    retried: list[str] = []
    if keys or all_failed:
        retried = store.retry(None if all_failed else found)
    extra: dict[str, Any] = {}
    if flush:
        extra["forwards_now"] = Forwards(store).flush(found if keys else None)
    if keys and not all_failed:
        extra["not_failed"] = [k for k in found if k not in retried]
    _report(as_json, "retried", retried, missing, **extra)


@jobs.command("forget")
@click.argument("keys", nargs=-1, required=True)
@_OUT
@_STORE
@_JSON
@click.pass_context
def forget(
    ctx: click.Context,
    keys: tuple[str, ...],
    out_dir: str | None,
    store_path: str | None,
    as_json: bool,
) -> None:
    """Delete the rows of these jobs (not while processing). Their files stay; a sender that
    sends the series again makes a new job of it."""
    store = _open(out_dir or ctx.obj.get("out_dir"), store_path or ctx.obj.get("store_path"))
    found, missing = _resolve(store, keys)
    gone = store.forget(found)
    _report(as_json, "forgotten", gone, missing + [k for k in found if k not in gone])
