"""``dicom-sr batch``: placeholder until the front end lands (replaced by its own module)."""

from __future__ import annotations

import click


@click.command("batch", context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def batch(args) -> None:
    """Not built yet."""
    raise click.UsageError("dicom-sr batch is not built yet")
