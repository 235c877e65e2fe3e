"""What the commands share: the pipeline and engine options, the config they make, logging,
and the ``--out`` check. One definition each, so ``process``, ``listen`` and ``batch`` agree."""

from __future__ import annotations

import logging
import sys
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, get_args

import click

from dicom_sr.config import DEFAULT_PIPELINE, ConfigError, EngineConfig, PipelineConfig
from dicom_sr.config import load_pipeline as _load_pipeline
from dicom_sr.logs import route_warnings

__all__ = [
    "METHOD_NAMES",
    "engine_options",
    "output_options",
    "load_config",
    "setup_logging",
    "usable_out",
]

#: The method names the configuration accepts (the engine's registry, checked by a test).
METHOD_NAMES = list(get_args(EngineConfig.model_fields["method"].annotation))

_ENGINE = [
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
        help="Self-ensemble size at inference (8 = all flips and rotations), for every frame, "
        "cines included (the pipeline's cine_ensemble is then ignored).",
    ),
    click.option(
        "--device",
        type=click.Choice(["auto", "cpu", "cuda"]),
        default=None,
        help="Where the engine runs; auto takes CUDA when there is one.",
    ),
    click.option("--seed", type=int, default=None, help="Random seed (same seed, same output)."),
    click.option(
        "--model-weight",
        "model_weight",
        type=click.FloatRange(0.0, 1.0),
        default=None,
        metavar="W",
        help="The model's share of the output, the rest ibp (default: the pipeline's, auto = "
        "0.5; 1 = the model alone).",
    ),
    click.option(
        "--model-scale",
        "model_scale",
        type=click.Choice(["auto", "2", "3", "4"]),
        default=None,
        help="The factor the model learns, the rest of the scale being bicubic and back "
        "projection (default: the pipeline's, auto = 2 at x4; 4 = a direct x4 model).",
    ),
    click.option(
        "--vgg19",
        "vgg19",
        type=click.Path(exists=True, dir_okay=False),
        default=None,
        help="Local torchvision VGG19 state dict for the perceptual loss.",
    ),
]

_OUTPUT = [
    click.option(
        "--scale",
        type=click.Choice(["2", "3", "4"]),
        default=None,
        help="Upscaling factor (default: the pipeline's).",
    ),
    click.option(
        "--compress",
        type=click.Choice(["none", "rle", "jpeg", "jpegls", "j2k"]),
        default=None,
        help="Output transfer syntax (default: the pipeline's, RLE lossless).",
    ),
    click.option(
        "--finetune",
        type=click.IntRange(min=0),
        default=None,
        metavar="N",
        help="Fine-tune the cine model N iterations on each frame (low rate).",
    ),
    click.option(
        "--cine-mode",
        type=click.Choice(["shared", "finetune", "cold"]),
        default=None,
        help="Cines: train once and reuse (shared), fine-tune per frame, or train each cold.",
    ),
]

#: The keyword arguments the two decorators add to a command.
OPTION_KEYS = (
    "pipeline",
    "method",
    "iterations",
    "ensemble",
    "device",
    "seed",
    "model_weight",
    "model_scale",
    "vgg19",
    "scale",
    "compress",
    "finetune",
    "cine_mode",
)


def _apply(options: list) -> Callable:
    def decorate(func):
        for opt in reversed(options):
            func = opt(func)
        return func

    return decorate


#: ``--pipeline`` and the engine's options (every command that runs the engine).
engine_options = _apply(_ENGINE)
#: ``--scale``, ``--compress``, ``--finetune`` and ``--cine-mode`` (the commands that write).
output_options = _apply(_OUTPUT)


def _model_scale(value: str | None) -> str | int | None:
    return int(value) if value and value.isdigit() else value


def load_config(opts: Mapping[str, Any], **overrides: Any) -> PipelineConfig:
    """The pipeline named in ``opts`` with the given options applied; a bad key is exit 2.

    ``opts`` holds the keyword arguments of :data:`engine_options` (and of
    :data:`output_options`, where the command has them); ``overrides`` adds dotted keys.
    """
    finetune = opts.get("finetune")
    values = {
        "engine.scale": int(opts["scale"]) if opts.get("scale") else None,
        "engine.method": opts.get("method"),
        "engine.iterations": opts.get("iterations"),
        "engine.ensemble": int(opts["ensemble"]) if opts.get("ensemble") else None,
        "engine.cine_ensemble": "same" if opts.get("ensemble") else None,
        "engine.device": opts.get("device"),
        "engine.seed": opts.get("seed"),
        "engine.model_weight": opts.get("model_weight"),
        "engine.model_scale": _model_scale(opts.get("model_scale")),
        "engine.vgg19_weights": opts.get("vgg19"),
        "output.compress": opts.get("compress"),
        "engine.finetune_iterations": finetune,
        "engine.cine_mode": opts.get("cine_mode") or ("finetune" if finetune else None),
        **overrides,
    }
    try:
        return _load_pipeline(opts.get("pipeline") or DEFAULT_PIPELINE, values)
    except ConfigError as exc:
        raise click.BadParameter(str(exc), param_hint="--pipeline / options") from None


def setup_logging(verbose: int, quiet: bool) -> None:
    """Rich log lines on a terminal; plain, timestamped lines without one (cron, CI, a service),
    where progress is logged at INFO because there is no bar to show it."""
    tty = sys.stderr.isatty()
    level = logging.WARNING if quiet or (tty and verbose == 0) else logging.INFO
    if verbose >= 2:
        level = logging.DEBUG
    if tty:
        from rich.logging import RichHandler

        handler: logging.Handler = RichHandler(
            console=console(stderr=True), show_path=False, markup=False
        )
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.WARNING, handlers=[handler], force=True)
    logging.getLogger("dicom_sr").setLevel(level)
    route_warnings()


#: Width of rich output sent to a file or pipe: rich assumes 80 columns there, which cuts a
#: summary table's headers ("alrea..."); a log has no terminal to fit.
LOG_WIDTH = 160


def console(stderr: bool = True):
    """A rich console on stderr or stdout: the terminal's width, or :data:`LOG_WIDTH` if none."""
    from rich.console import Console

    out = Console(stderr=stderr)
    if not out.is_terminal:  # rich's own test (isatty, FORCE_TERMINAL, Jupyter...)
        out.width = LOG_WIDTH
    return out


def usable_out(out_dir: str) -> Path:
    """``--out`` made if needed and checked writable; else a bad option (exit 2), not a crash."""
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
