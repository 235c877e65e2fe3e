"""The ``dicom-sr`` command line: a thin click layer that parses, calls the library and prints."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any, get_args

import click

from dicom_sr import __version__
from dicom_sr.config import (
    DEFAULT_PIPELINE,
    ConfigError,
    EngineConfig,
    PipelineConfig,
    load_pipeline,
)

logger = logging.getLogger("dicom_sr")

#: The method names the configuration accepts (the engine's registry, checked by a test).
METHOD_NAMES = list(get_args(EngineConfig.model_fields["method"].annotation))

_ENGINE_OPTIONS = [
    click.option(
        "--pipeline",
        "pipeline",
        default=DEFAULT_PIPELINE,
        show_default=True,
        metavar="NAME|FILE",
        help="Pipeline name (pipelines/NAME.toml) or a TOML file.",
    ),
    click.option(
        "--method",
        type=click.Choice(METHOD_NAMES),
        default=None,
        help="SR method (default: the pipeline's, cyclegan).",
    ),
    click.option(
        "--iterations",
        type=click.IntRange(min=0),
        default=None,
        help="Training iteration cap per training run.",
    ),
    click.option(
        "--ensemble",
        type=click.Choice(["1", "2", "8"]),
        default=None,
        help="Self-ensemble size at inference (8 = all flips and rotations).",
    ),
    click.option(
        "--device",
        type=click.Choice(["auto", "cpu", "cuda"]),
        default=None,
        help="Where the engine runs; auto takes CUDA when there is one.",
    ),
    click.option("--seed", type=int, default=None, help="Random seed (same seed, same output)."),
    click.option(
        "--vgg19",
        "vgg19",
        type=click.Path(exists=True, dir_okay=False),
        default=None,
        help="Local torchvision VGG19 state dict for the perceptual loss.",
    ),
]


def _engine_options(func):
    for opt in reversed(_ENGINE_OPTIONS):
        func = opt(func)
    return func


def _load_config(pipeline: str, overrides: dict[str, Any]) -> PipelineConfig:
    try:
        return load_pipeline(pipeline, overrides)
    except ConfigError as exc:
        raise click.BadParameter(str(exc), param_hint="--pipeline / options") from None


def _engine_overrides(scale, method, iterations, ensemble, device, seed, vgg19) -> dict[str, Any]:
    return {
        "engine.scale": int(scale) if scale else None,
        "engine.method": method,
        "engine.iterations": iterations,
        "engine.ensemble": int(ensemble) if ensemble else None,
        "engine.device": device,
        "engine.seed": seed,
        "engine.vgg19_weights": vgg19,
    }


def _setup_logging(verbose: int, quiet: bool) -> None:
    """Rich log lines on a terminal; plain, timestamped lines without one (cron, CI, a service),
    where progress is logged at INFO because there is no bar to show it."""
    tty = sys.stderr.isatty()
    level = logging.WARNING if quiet or (tty and verbose == 0) else logging.INFO
    if verbose >= 2:
        level = logging.DEBUG
    if tty:
        from rich.logging import RichHandler

        handler: logging.Handler = RichHandler(
            console=_console(stderr=True), show_path=False, markup=False
        )
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.WARNING, handlers=[handler], force=True)
    logging.getLogger("dicom_sr").setLevel(level)


def _console(stderr: bool = True):
    from rich.console import Console

    return Console(stderr=stderr)


def _usable_out(out_dir: str) -> Path:
    """``--out`` made if needed and checked writable; else a bad option (exit 2), not a crash."""
    import tempfile

    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as exc:
        raise click.BadParameter(
            f"{out}: not a writable folder ({exc.strerror or exc})", param_hint="--out"
        ) from None
    return out


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="dicom-sr")
def main() -> None:
    """Self-supervised super-resolution of ultrasound DICOM (CycleGAN, no training data)."""


@main.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True))
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Output folder: OUT/<StudyUID>/<SeriesUID>/<SOPUID>.dcm plus manifest.jsonl.",
)
@click.option(
    "--scale",
    type=click.Choice(["2", "3", "4"]),
    default=None,
    help="Upscaling factor (default: the pipeline's).",
)
@_engine_options
@click.option(
    "--compress",
    type=click.Choice(["none", "rle", "jpeg", "jpegls", "j2k"]),
    default=None,
    help="Output transfer syntax (default: the pipeline's, RLE lossless).",
)
@click.option(
    "--finetune",
    type=click.IntRange(min=0),
    default=None,
    metavar="N",
    help="Fine-tune the cine model N iterations on each frame (low rate).",
)
@click.option(
    "--cine-mode",
    type=click.Choice(["shared", "finetune", "cold"]),
    default=None,
    help="Cines: train once and reuse (shared), fine-tune per frame, or train each cold.",
)
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
def process(
    inputs,
    out_dir,
    pipeline,
    scale,
    method,
    iterations,
    ensemble,
    device,
    seed,
    vgg19,
    compress,
    finetune,
    cine_mode,
    weights,
    save_weights,
    as_json,
    quiet,
    verbose,
):
    """Super-resolve the B-mode DICOM series in INPUTS (files, folders, DICOMDIR) into --out."""
    _setup_logging(verbose, quiet or as_json)
    overrides = _engine_overrides(scale, method, iterations, ensemble, device, seed, vgg19)
    overrides.update(
        {
            "output.compress": compress,
            "engine.finetune_iterations": finetune,
            "engine.cine_mode": cine_mode or ("finetune" if finetune else None),
        }
    )
    config = _load_config(pipeline, overrides)

    from dicom_sr.cli.progress import LogProgress, RunProgress
    from dicom_sr.engine import load_weights
    from dicom_sr.engine import save_weights as save
    from dicom_sr.pipeline import process_inputs

    init = None
    if weights:
        try:
            init = load_weights(weights, scale=config.engine.scale)
        except (ValueError, OSError) as exc:
            raise click.BadParameter(str(exc), param_hint="--weights") from None
    out = _usable_out(out_dir)
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

    console = _console(stderr=False)
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
        console.print(table)
    for k in summary["skipped"]:
        console.print(f"[yellow]skipped[/] {k['path']}: {k['reason']}", highlight=False)
    for k in summary["failed"]:
        console.print(f"[red]failed[/] {k['path']}: {k['reason']}", highlight=False)
    console.print(
        f"{len(summary['series'])} series, {summary['frames']} frames, "
        f"{summary['instances_written']} instances written, {len(summary['skipped'])} skipped, "
        f"{len(summary['failed'])} failed, {summary['seconds']:.1f} s -> {summary['out']}",
        highlight=False,
    )


@main.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True))
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Report folder: report.json, report.md and PNG figures.",
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
@_engine_options
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
def evaluate(
    inputs,
    out_dir,
    methods,
    pipeline,
    scale,
    method,
    iterations,
    ensemble,
    device,
    seed,
    vgg19,
    degradation,
    max_images,
    quiet,
    verbose,
):
    """Degrade real frames, super-resolve them with each method and score them (PSNR, SSIM, VIF-P).

    The protocol of the paper: crop to tissue, degrade by each scale, super-resolve, compare.
    """
    _setup_logging(verbose, quiet)
    from dicom_sr.evaluate import run_evaluation
    from dicom_sr.evaluate.protocol import Degradation

    config = _load_config(
        pipeline, _engine_overrides(None, method, iterations, ensemble, device, seed, vgg19)
    )
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
    """The unattended front ends live in modules of their own; the group only lists them."""
    from dicom_sr.cli.batch import batch
    from dicom_sr.cli.jobs import jobs
    from dicom_sr.cli.listen import listen

    for command in (listen, batch, jobs):
        main.add_command(command)


_register_front_ends()

if __name__ == "__main__":  # pragma: no cover
    main()
