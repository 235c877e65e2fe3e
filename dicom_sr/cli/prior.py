"""``dicom-sr prior build``: train one scanner prior on the series in files and folders."""

from __future__ import annotations

import json
import logging

import click

from dicom_sr.cli.options import METHOD_NAMES, load_config, setup_logging
from dicom_sr.config import DEFAULT_PIPELINE, ConfigError
from dicom_sr.errors import InputError

__all__ = ["prior"]

logger = logging.getLogger("dicom_sr")


@click.group("prior")
def prior() -> None:
    """Scanner priors: a generator trained on many series, to warm-start new ones."""


@prior.command("build")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True))
@click.option(
    "--out", required=True, type=click.Path(dir_okay=False), help="The prior file to write."
)
@click.option(
    "--pipeline", default=DEFAULT_PIPELINE, show_default=True, metavar="NAME|FILE",
    help="Pipeline whose method, scale and training settings the prior is trained with.",
)  # fmt: skip
@click.option("--method", type=click.Choice(METHOD_NAMES), default=None, help="SR method.")
@click.option("--scale", type=click.Choice(["2", "3", "4"]), default=None, help="Scale.")
@click.option(
    "--iterations", "train_iterations", type=click.IntRange(min=0), default=None,
    help="Training iterations of the prior (default: the pipeline's cine budget).",
)  # fmt: skip
@click.option(
    "--per-series", type=click.IntRange(min=1), default=None,
    help="Frames taken from each series, spread over it (default: engine.cine_train_frames).",
)  # fmt: skip
@click.option(
    "--device", type=click.Choice(["auto", "cpu", "cuda"]), default=None, help="Where to train."
)
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
def build(inputs, out, train_iterations, per_series, verbose, **opts):
    """Train a prior on the B-mode series in INPUTS (files, folders, DICOMDIR), write --out."""
    setup_logging(verbose, False)
    config = load_config(opts)
    from dicom_sr.pipeline.prior import build_prior

    last = [-1]

    def progress(done: int, total: int) -> None:
        step = max(1, total // 10)
        if done == total or done // step != last[0]:
            last[0] = done // step
            logger.info("prior: iteration %d/%d", done, total)

    try:
        meta = build_prior(
            inputs, config, out, iterations=train_iterations, per_series=per_series,
            progress=progress,
        )  # fmt: skip
    except (ConfigError, InputError) as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(f"{out}: cannot write: {exc.strerror or exc}") from None
    click.echo(json.dumps({"file": str(out), **meta}, indent=2))


@prior.command("show")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
def show(file):
    """Print the metadata of the prior FILE, after checking its weights against its digest."""
    from dicom_sr.engine.prior import prior_meta, read_prior

    try:
        meta = prior_meta(read_prior(file))
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(json.dumps({"file": str(file), **meta}, indent=2))
