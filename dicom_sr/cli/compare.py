"""``dicom-sr compare``: a static before-and-after page of source and derived series."""

from __future__ import annotations

import logging
import sys

import click

from dicom_sr.cli.options import METHOD_NAMES, load_config, setup_logging, usable_out

__all__ = ["compare"]

logger = logging.getLogger("dicom_sr")


@click.command("compare")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True))
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Page folder: index.html, one page per series, frames and the viewer's assets.",
)
@click.option(
    "--derived",
    "derived",
    multiple=True,
    type=click.Path(exists=True),
    help="Output folder of process, listen or batch (its manifest.jsonl links each derived "
    "series to its source). Repeat for several.",
)
@click.option(
    "--method",
    type=click.Choice(METHOD_NAMES),
    default=None,
    help="Also derive each series with this method now (ibp, bicubic, ...) to compare against.",
)
@click.option(
    "--pipeline",
    default=None,
    metavar="NAME|FILE",
    help="Pipeline for --method (default: the default pipeline).",
)
@click.option(
    "--scale", type=click.Choice(["2", "3", "4"]), default=None, help="Scale for --method."
)
@click.option(
    "--deidentify-text",
    "deidentify",
    is_flag=True,
    help="Blank everything outside the Sequence of Ultrasound Regions (burned-in names, IDs, "
    "dates); series without regions are left out.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["webp", "png"]),
    default="webp",
    show_default=True,
    help="Image format of the frames (lossless unless --quality).",
)
@click.option(
    "--quality",
    type=click.IntRange(1, 100),
    default=None,
    help="Lossy WebP at this quality (smaller pages; adds codec artefacts of its own).",
)
@click.option(
    "--source-bicubic/--no-source-bicubic",
    default=True,
    show_default=True,
    help="Also write the source frames upscaled by bicubic, the viewer's alternative to pixel "
    "replication (--no-source-bicubic makes a large cine's page about half as large).",
)
@click.option("-q", "--quiet", is_flag=True, help="Warnings only.")
@click.option("-v", "--verbose", count=True)
def compare(
    inputs,
    out_dir,
    derived,
    method,
    pipeline,
    scale,
    deidentify,
    fmt,
    quality,
    source_bicubic,
    quiet,
    verbose,
):
    """Write a before-and-after page of the source series in INPUTS (files, folders) to --out.

    Each source series is shown against its derived series found through --derived, and
    against --method computed now. Open OUT/index.html in a browser: no server, no network.
    """
    setup_logging(verbose, quiet)
    if not derived and not method:
        raise click.UsageError("nothing to compare against: give --derived OUT and/or --method M")
    if quality is not None and fmt != "webp":
        raise click.BadParameter("lossy frames are WebP only", param_hint="--quality")
    from dicom_sr.compare import build_compare
    from dicom_sr.errors import InputError

    config = None
    if method:
        config = load_config({"pipeline": pipeline, "method": method, "scale": scale})
    out = usable_out(out_dir)
    try:
        result = build_compare(
            inputs,
            out,
            derived=derived,
            config=config,
            deidentify=deidentify,
            fmt=fmt,
            quality=quality,
            source_bicubic=source_bicubic,
            on_series=None if quiet else _series_progress,
        )
    except InputError as exc:
        raise click.BadParameter(str(exc), param_hint="--derived") from None
    for uid, reason in result.left_out:
        click.echo(f"left out: series ...{uid[-12:]}: {reason}", err=True)
    mb = result.total_bytes / 1e6
    click.echo(
        f"{len(result.pages)} series page(s), {result.images} images, {mb:.1f} MB -> {result.index}"
    )
    sys.exit(0 if result.pages else 1)


def _series_progress(done: int, total: int) -> None:
    logger.info("compare: series %d/%d", done, total)
