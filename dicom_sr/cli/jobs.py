"""``dicom-sr jobs``: placeholder until the front end lands (replaced by its own module)."""

from __future__ import annotations

import click


@click.command("jobs", context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def jobs(args) -> None:
    """Not built yet."""
    raise click.UsageError("dicom-sr jobs is not built yet")
