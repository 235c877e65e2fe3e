"""The ``dicom-sr`` command line: a thin click layer that parses, calls the library and prints."""

from __future__ import annotations

import click

from dicom_sr import __version__
from dicom_sr.config import ConfigError, load_pipeline


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="dicom-sr")
def main() -> None:
    """Self-supervised super-resolution of ultrasound DICOM (CycleGAN, no training data)."""


@main.command("pipelines")
def list_pipelines() -> None:
    """List the named pipelines and their config hashes."""
    from dicom_sr.config import available_pipelines

    for name in available_pipelines():
        try:
            cfg = load_pipeline(name)
            click.echo(f"{name:32s} v{cfg.version:4s} {cfg.hash()}  {cfg.description}")
        except ConfigError as exc:
            click.echo(f"{name:32s} INVALID: {exc}")


def _register_front_ends() -> None:
    """Each command lives in a module of its own; the group only lists them."""
    from dicom_sr.cli.batch import batch
    from dicom_sr.cli.compare import compare
    from dicom_sr.cli.evaluate import evaluate
    from dicom_sr.cli.jobs import jobs
    from dicom_sr.cli.listen import listen
    from dicom_sr.cli.prior import prior
    from dicom_sr.cli.process import process

    for command in (process, evaluate, listen, batch, jobs, compare, prior):
        main.add_command(command)


_register_front_ends()

if __name__ == "__main__":  # pragma: no cover
    main()
