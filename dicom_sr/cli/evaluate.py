"""``dicom-sr evaluate``: degrade real frames, super-resolve them with each method, score them."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from dicom_sr.cli.options import engine_options, load_config, setup_logging

__all__ = ["evaluate"]

logger = logging.getLogger("dicom_sr")


@click.command("evaluate")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True))
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Report folder: report.json, report.md, report.html (with a viewer page per image) "
    "and PNG figures.",
)
@click.option(
    "--methods",
    default="bicubic,ibp,zssr,cyclegan",
    show_default=True,
    help="Comma-separated methods and ablation pipelines (ablation-gan-alone, ...).",
)
@click.option(
    "--scale", default="2,4", show_default=True, help="Comma-separated scales to evaluate."
)
@engine_options
@click.option(
    "--degradation",
    type=click.Choice(["bicubic", "psf"]),
    default="bicubic",
    show_default=True,
    help="How the protocol degrades the frames: antialiased bicubic, or an anisotropic "
    "Gaussian PSF (wider laterally) that the methods do not know.",
)
@click.option(
    "--max-images",
    type=click.IntRange(min=1),
    default=None,
    help="Evaluate at most this many frames.",
)
@click.option("-q", "--quiet", is_flag=True, help="Warnings only.")
@click.option("-v", "--verbose", count=True)
def evaluate(inputs, out_dir, methods, scale, degradation, max_images, quiet, verbose, **opts):
    """Degrade real frames, super-resolve them with each method and score them (PSNR, SSIM, VIF-P).

    The protocol of the paper: crop to tissue, degrade by each scale, super-resolve, compare.
    """
    setup_logging(verbose, quiet)
    from dicom_sr.evaluate import run_evaluation
    from dicom_sr.evaluate.protocol import Degradation

    config = load_config(opts)
    try:
        scales = [int(s) for s in scale.split(",") if s.strip()]
    except ValueError:
        raise click.BadParameter(
            f"not a list of integers: {scale!r}", param_hint="--scale"
        ) from None
    if not scales or any(s not in (2, 3, 4) for s in scales):
        raise click.BadParameter("scales must be 2, 3 or 4", param_hint="--scale")
    report = run_evaluation(
        [Path(p) for p in inputs],
        Path(out_dir),
        methods=[m.strip() for m in methods.split(",") if m.strip()],
        scales=scales,
        config=config,
        max_images=max_images,
        degradation=Degradation(kernel=degradation),
        progress=None if quiet else _count_progress("evaluate"),
    )
    click.echo(f"report written to {out_dir} ({len(report.get('images', []))} images)")


def _count_progress(label: str):
    """A (done, total) callback that logs each step (evaluation has no frame stream to draw)."""

    def report(done: int, total: int) -> None:
        logger.info("%s: %d/%d", label, done, total)

    return report
