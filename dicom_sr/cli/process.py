"""``dicom-sr process``: super-resolve the series in files, folders and DICOMDIRs into --out."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import click

from dicom_sr.cli.options import (
    console,
    engine_options,
    load_config,
    output_options,
    setup_logging,
    usable_out,
)
from dicom_sr.config import ConfigError, PipelineConfig

__all__ = ["process", "exit_code"]

logger = logging.getLogger("dicom_sr")


@click.command("process")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True))
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Output folder: OUT/<StudyUID>/<SeriesUID>/<SOPUID>.dcm plus manifest.jsonl.",
)
@engine_options
@output_options
@click.option(
    "--weights",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Start from weights saved by --save-weights.",
)
@click.option(
    "--save-weights",
    type=click.Path(dir_okay=False),
    default=None,
    help="Save the trained weights (one file per series: FILE, FILE-2, ...).",
)
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable summary.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars; warnings only.")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
def process(inputs, out_dir, weights, save_weights, as_json, quiet, verbose, **opts):
    """Super-resolve the B-mode DICOM series in INPUTS (files, folders, DICOMDIR) into --out."""
    setup_logging(verbose, quiet or as_json)
    config = load_config(opts)

    from dicom_sr.cli.progress import LogProgress, RunProgress
    from dicom_sr.engine import load_weights
    from dicom_sr.engine import save_weights as save
    from dicom_sr.pipeline import identity_hash, process_inputs

    try:  # the pipeline's scanner priors are read and checked here, before any work
        identity_hash(config)
    except ConfigError as exc:
        raise click.BadParameter(str(exc), param_hint="--pipeline") from None
    init = None
    if weights:
        try:
            init = load_weights(weights, scale=config.engine.scale)
        except (ValueError, OSError) as exc:
            raise click.BadParameter(str(exc), param_hint="--weights") from None
    out = usable_out(out_dir)
    show = not (quiet or as_json) and sys.stderr.isatty()
    bars = RunProgress(enabled=True) if show else LogProgress()
    with bars:
        run = process_inputs(
            inputs, config, out, init=init, progress=bars.on_progress, on_series=bars.on_series
        )
    if save_weights:
        trained = [s.model for s in run.series if s.model and s.model.generator_state]
        for k, model in enumerate(trained):
            target = Path(save_weights)
            if k:
                target = target.with_name(f"{target.stem}-{k + 1}{target.suffix}")
            try:
                save(model, target)
            except OSError as exc:
                logger.error("--save-weights: cannot write %s: %s", target, exc)
    summary = _summary(run, config, out)
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        _print_summary(summary, quiet)
    sys.exit(summary["exit_code"])


def exit_code(run) -> int:
    """0: every usable input written or already done; 1: an instance failed, or nothing usable
    was found. (2, bad options, is click's own.)"""
    usable = any(s.instances for s in run.series)
    return 0 if usable and not run.failed else 1


def _summary(run, config: PipelineConfig, out: Path) -> dict[str, Any]:
    return {
        "pipeline": config.name,
        "config_hash": config.hash(),
        "method": config.engine.method,
        "scale": config.engine.scale,
        "out": str(out),
        "series": [s.to_dict() for s in run.series],
        "frames": run.frames,
        "instances_written": run.written,
        "skipped": [{"path": k.path, "reason": k.reason} for k in run.skipped],
        "failed": [
            {"path": str(r.source), "series": s.source_series_uid, "reason": r.reason}
            for s in run.series
            for r in s.failed
        ],
        "seconds": round(run.seconds, 2),
        "exit_code": exit_code(run),
    }


def _print_summary(summary: dict[str, Any], quiet: bool) -> None:
    from rich.table import Table

    out = console(stderr=False)
    if not quiet:
        table = Table(
            title=f"dicom-sr {summary['method']} x{summary['scale']} "
            f"({summary['pipeline']}, config {summary['config_hash']})"
        )
        cols = ("series (derived)", "status", "output", "frames", "written", "already done")
        for col in (*cols, "failed", "train s", "total s"):
            table.add_column(col)
        for s in summary["series"]:
            table.add_row(
                s["derived_series_uid"][-24:],
                s["status"],
                s["guard"].get("decision", "model") if s["guard"] else summary["method"],
                str(s["frames"]),
                str(len(s["written"])),
                str(len(s["already_done"])),
                str(len(s["failed"])),
                f"{s['train_seconds']:.1f}",
                f"{s['seconds']:.1f}",
            )
        out.print(table)
    for k in summary["skipped"]:
        out.print(f"[yellow]skipped[/] {k['path']}: {k['reason']}", highlight=False)
    for k in summary["failed"]:
        out.print(f"[red]failed[/] {k['path']}: {k['reason']}", highlight=False)
    out.print(
        f"{len(summary['series'])} series, {summary['frames']} frames, "
        f"{summary['instances_written']} instances written, {len(summary['skipped'])} skipped, "
        f"{len(summary['failed'])} failed, {summary['seconds']:.1f} s -> {summary['out']}",
        highlight=False,
    )
