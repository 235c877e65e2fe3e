"""``dicom-sr jobs``: list the jobs of an output folder's job store and their states."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from dicom_sr.cli.options import console
from dicom_sr.jobs import BATCH_LABELS, STATES, STORE_NAME, JobStore

_ALIASES = {label: state for state, label in BATCH_LABELS.items()}


@click.command("jobs")
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(exists=True, file_okay=False),
    help="The output folder of listen or batch (holds jobs.sqlite3).",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of jobs.")
@click.option(
    "--state",
    type=click.Choice([*STATES, *_ALIASES]),
    default=None,
    help="Only jobs in this state (batch's planned = queued, running = processing).",
)
@click.option("--kind", type=click.Choice(["listen", "batch"]), default=None)
def jobs(out_dir: str, as_json: bool, state: str | None, kind: str | None) -> None:
    """List the jobs in OUT/jobs.sqlite3: one row per series, its state, attempts and error."""
    if not (Path(out_dir) / STORE_NAME).exists():
        raise click.UsageError(f"{out_dir}: no {STORE_NAME} (not an output of listen or batch)")
    store = JobStore(out_dir)
    rows = store.jobs(state=_ALIASES.get(state or "", state), kind=kind)
    if as_json:
        click.echo(json.dumps([j.to_dict() for j in rows], indent=2, default=str))
        return
    from rich.table import Table

    table = Table(title=f"{len(rows)} jobs in {store.path}")
    table.add_column("derived series", overflow="fold")
    for col in ("kind", "state", "files", "frames", "attempts", "updated"):
        table.add_column(col)
    table.add_column("error", overflow="fold")
    for j in rows:
        label = BATCH_LABELS.get(j.state, j.state) if j.kind == "batch" else j.state
        table.add_row(
            j.key,
            j.kind,
            label,
            str(len(j.paths)),
            str(j.frames),
            str(j.attempts),
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(j.updated)),
            j.error or j.forward_error,
        )
    console(stderr=False).print(table)
    counts = {k: v for k, v in store.counts(kind).items() if v}
    click.echo(", ".join(f"{k}: {v}" for k, v in counts.items()) or "no jobs")
