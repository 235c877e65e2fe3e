"""One validated configuration object for the whole pipeline.

Named, versioned TOML files in ``pipelines/`` load into :class:`PipelineConfig`; command-line
options override single keys. The object is frozen and its :meth:`PipelineConfig.hash` goes into
the provenance of every output, so two outputs with the same hash were made the same way.
Unknown keys and bad values raise :class:`ConfigError` naming the key.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import string
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from dicom_sr.errors import DicomSrError

__all__ = [
    "ConfigError",
    "LossWeights",
    "EngineConfig",
    "OutputConfig",
    "PriorRule",
    "PipelineConfig",
    "DEFAULT_PIPELINE",
    "pipelines_dir",
    "available_pipelines",
    "load_pipeline",
]

DEFAULT_PIPELINE = "bmode-default"


class ConfigError(DicomSrError, ValueError):
    """A pipeline file or override is invalid; the message names the key and the source."""


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class LossWeights(_Frozen):
    """Weights of Eq. 2-7. A zero weight removes the term (and its computation)."""

    pixel: float = Field(5.0, ge=0, description="alpha: L1 pixel loss on G and F (Eq. 2)")
    perceptual: float = Field(0.1, ge=0, description="beta: feature loss (Eq. 3)")
    adversarial: float = Field(5.0, ge=0, description="gamma: generator GAN loss (Eq. 4-5)")
    cycle_forward: float = Field(0.3, ge=0, description="eta: LR->SR->LR cycle L1 (Eq. 6)")
    cycle_backward: float = Field(0.3, ge=0, description="eta: HR->LR->SR cycle L1 (Eq. 6)")


class EngineConfig(_Frozen):
    """Everything the SR engine needs; no DICOM in sight."""

    method: Literal["cyclegan", "zssr", "ibp", "bicubic"] = Field(
        "zssr", description="zssr (the paper's G alone, L1), cyclegan (the paper), ibp, bicubic"
    )
    scale: int = Field(2, description="integer upscaling factor: 2, 3 or 4")
    # training budget and ZSSR's learning-rate policy
    iterations: int = Field(400, ge=0, description="iteration cap for one training run")
    lr: float = Field(1e-3, gt=0, description="Adam learning rate at the start")
    lr_min: float = Field(1e-6, gt=0, description="stop when the rate falls below this")
    lr_check_every: int = Field(60, ge=1, description="iterations between slope checks")
    lr_min_iterations: int = Field(256, ge=0, description="no rate decay before this")
    lr_factor: float = Field(10.0, gt=1, description="divide the rate by this on a plateau")
    stop_patience: int = Field(
        60,
        ge=0,
        description="end training when the error on the guard's held-aside pairs has not "
        "improved for this many iterations (back to the best weights); 0 runs to the cap",
    )
    refit_iterations: int = Field(
        60,
        ge=0,
        description="after the guard's verdict, iterations on the whole frame (its strip "
        "included), from the verdict's weights; 0 ships the model trained without the strip",
    )
    crop_size: int = Field(64, ge=16, description="side of the HR training crops")
    batch_size: int = Field(2, ge=1, description="crops per training iteration")
    augment: Literal["none", "mirror", "dihedral"] = Field(
        "dihedral", description="fathers' geometric augmentation: none, mirror, 8 dihedral"
    )
    father_scales: int = Field(
        4, ge=1, description="number of downscaled fathers besides the frame itself"
    )
    noise_std: float = Field(0.0, ge=0, description="Gaussian noise added to the LR sons")
    crop_sampling: Literal["uniform", "content"] = Field(
        "content", description="crop positions: uniform, or weighted by the crop's std"
    )
    # degradation kernel shared by the sons and back projection
    kernel: Literal["bicubic", "gaussian"] = Field(
        "bicubic", description="degradation kernel of the sons and of back projection"
    )
    psf_sigma_axial: float = Field(1.0, gt=0, description="Gaussian PSF sigma (rows), HR px")
    psf_sigma_lateral: float = Field(1.5, gt=0, description="Gaussian PSF sigma (cols), HR px")
    # CycleGAN specifics
    losses: LossWeights = Field(LossWeights(), description="weights of Eq. 2-7")
    gan_mode: Literal["log", "lsgan"] = Field(
        "log", description="adversarial form: -log D (the paper) or least squares"
    )
    pool_size: int = Field(50, ge=0, description="history pool of generated images for D")
    vgg19_weights: str | None = Field(
        None, description="local torchvision VGG19 state dict for the perceptual loss"
    )
    perceptual_fallback: Literal["none", "d_hr"] = Field(
        "none",
        description="without VGG19 weights: leave the perceptual term out, or use D_hr features",
    )
    # inference
    ensemble: Literal[1, 2, 8] = Field(8, description="self-ensemble size: 1, 2 (mirror) or 8")
    back_projection_iters: int = Field(
        20, ge=0, description="back-projection steps of every output (ibp's and the model's)"
    )
    back_projection_pass_iters: int = Field(
        10, ge=0, description="back-projection steps of each self-ensemble pass (at most the above)"
    )
    back_projection_momentum: float = Field(
        0.8,
        ge=0.0,
        lt=1.0,
        description="heavy-ball momentum of back projection: 0 is plain Irani-Peleg; 0.8 "
        "measured up to +2.2 dB for ibp on real crops at equal steps",
    )
    tile: int = Field(256, ge=32, description="LR tile side for inference")
    tile_overlap: int = Field(16, ge=0, description="overlap of inference tiles, LR px")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto",
        description="inference arithmetic: auto is bf16 autocast with channels-last where the "
        "hardware has native bf16 (CUDA, AVX512-BF16, AMX), else fp32",
    )
    bf16: bool = Field(False, description="force bf16 autocast at inference (precision bf16)")
    channels_last: bool = Field(
        True, description="channels-last memory format at inference (always with bf16)"
    )
    model_weight: Literal["auto", "pairs"] | Annotated[float, Field(ge=0.0, le=1.0)] = Field(
        "auto",
        description="share of the model in the output, the rest ibp: auto is 0.75 (measured on "
        "real tissue crops, sets A-C, chosen before set D); pairs is the share that fits the "
        "guard's held-aside pairs best, per series (measured worse than a fixed share)",
    )
    model_scale: Literal["auto", 2, 3, 4] = Field(
        "auto",
        description="the factor the model learns, the rest of the scale being bicubic and back "
        "projection: auto is 2 at x4 (x2 pairs of the frame itself beat x4 ones on real tissue "
        "crops), the scale itself otherwise",
    )
    # the guard: held-aside pairs decide between the model and ibp
    guard: bool = Field(True, description="check the model against ibp on held-aside pairs")
    guard_margin_db: float = Field(
        -1.0,
        description="the model is kept unless it trails ibp on the held-aside pairs by more "
        "than this (measured: the pairs' score does not rank small gains; -1 dB catches failures)",
    )
    guard_pairs: int = Field(8, ge=1, description="held-aside father/son pairs the guard scores")
    # cines
    cine_mode: Literal["shared", "finetune", "cold"] = Field(
        "shared", description="cines: train once and reuse, fine-tune per frame, or train each"
    )
    cine_train_frames: int = Field(8, ge=1, description="cine frames the fathers come from")
    cine_ensemble: Literal["same", 1, 2, 8] = Field(
        2,
        description="self-ensemble of the frames of a multi-frame instance: same as ensemble, "
        "or 1, 2 or 8 (2: a quarter of the inference of 8 on a cine's many frames)",
    )
    cine_budget: float = Field(2.0, gt=0, description="cine iterations = budget x iterations")
    finetune_iterations: int = Field(0, ge=0, description="per-frame fine-tuning iterations")
    finetune_lr: float = Field(1e-4, gt=0, description="learning rate of fine-tuning")
    prior_iterations: int = Field(
        0,
        ge=0,
        description="training iterations of a series warm-started from a [[priors]] file: 0 "
        "uses the prior as it is (measured: as good as a cold start; docs: Scanner priors)",
    )
    # execution
    seed: int = Field(0, description="random seed: same seed, input and device, same output")
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="auto takes CUDA when there is one"
    )
    threads: int = Field(0, ge=0, description="torch CPU threads; 0 keeps torch's default")

    @field_validator("scale")
    @classmethod
    def _scale(cls, v: int) -> int:
        if v not in (2, 3, 4):
            raise ValueError("must be 2, 3 or 4")
        return v

    @model_validator(mode="after")
    def _model_scale_divides(self) -> EngineConfig:
        if self.model_scale != "auto" and (
            self.model_scale > self.scale or self.scale % self.model_scale
        ):
            raise ValueError(
                f"model_scale {self.model_scale} does not divide scale {self.scale}: "
                f"use 'auto' or a factor of {self.scale}"
            )
        return self

    @model_validator(mode="after")
    def _crop_fits_scale(self) -> EngineConfig:
        # the LR discriminator needs an LR crop of at least 8 px to leave a score map
        if self.crop_size // self.scale < 8:
            raise ValueError(
                f"crop_size {self.crop_size} leaves LR crops under 8 px at scale {self.scale}; "
                f"use crop_size >= {8 * self.scale}"
            )
        return self


class OutputConfig(_Frozen):
    """How derived DICOM is written."""

    uid_root: str = Field("1.2.826.0.1.3680043.8.498.", description="root of new UIDs")
    compress: Literal["none", "rle", "jpeg", "jpegls", "j2k"] = Field(
        "rle", description="output transfer syntax (RLE lossless: see docs/output.rst)"
    )
    jpeg_quality: int = Field(95, ge=1, le=100, description="quality of --compress jpeg")
    max_pixels: int = Field(2560 * 1920, ge=1, description="largest input frame, in pixels")
    series_description_suffix: str = Field(
        " [SR x{scale}]", description="appended to SeriesDescription ({scale} is filled in)"
    )
    series_number_offset: int = Field(1000, ge=0, description="added to the SeriesNumber")

    @field_validator("series_description_suffix")
    @classmethod
    def _suffix(cls, v: str) -> str:
        # checked here, at load, so that a bad field fails the run before any work, not at write
        fields = {name for _, name, _, _ in string.Formatter().parse(v) if name is not None}
        if fields - {"scale"}:
            raise ValueError(f"unknown field(s) {sorted(fields - {'scale'})}: only {{scale}}")
        try:
            v.format(scale=2)
        except (ValueError, IndexError, KeyError) as exc:
            raise ValueError(f"not a valid format string: {exc}") from None
        return v

    @field_validator("uid_root")
    @classmethod
    def _uid_root(cls, v: str) -> str:
        body = v.rstrip(".")
        if not body or not all(
            p.isdigit() and (p == "0" or not p.startswith("0")) for p in body.split(".")
        ):
            raise ValueError(f"not a valid UID root: {v!r}")
        if len(body) > 40:
            raise ValueError("UID root longer than 40 characters leaves too little room")
        return body + "."


class PriorRule(_Frozen):
    """One ``[[priors]]`` entry: a prior file (``dicom-sr prior build``) and the acquisitions
    it warm-starts. Match keys are case-insensitive shell patterns; an absent key matches all."""

    file: str = Field(description="the prior file; relative to the pipeline file's folder")
    manufacturer: str | None = Field(None, description="pattern for Manufacturer (0008,0070)")
    model: str | None = Field(None, description="pattern for ManufacturerModelName (0008,1090)")
    calling_ae: str | None = Field(None, description="pattern for the sender's AE title (listen)")

    @field_validator("file")
    @classmethod
    def _exists(cls, v: str) -> str:
        if not Path(v).is_file():
            raise ValueError(f"prior file {v} does not exist")
        return v

    def matches(self, manufacturer: str = "", model: str = "", calling_ae: str = "") -> bool:
        """True when every key this rule sets matches the given value."""
        pairs = ((self.manufacturer, manufacturer), (self.model, model))
        pairs += ((self.calling_ae, calling_ae),)
        return all(
            pat is None or fnmatch.fnmatchcase(value.strip().casefold(), pat.strip().casefold())
            for pat, value in pairs
        )


class PipelineConfig(_Frozen):
    """A named, versioned processing configuration."""

    name: str = DEFAULT_PIPELINE
    version: str = "8"
    description: str = ""
    engine: EngineConfig = EngineConfig()
    output: OutputConfig = OutputConfig()
    priors: tuple[PriorRule, ...] = Field(
        (),
        description="[[priors]] tables (file, manufacturer, model, calling_ae): the first "
        "rule matching a series warm-starts it (docs: Scanner priors)",
    )

    def prior_for(
        self, manufacturer: str = "", model: str = "", calling_ae: str = ""
    ) -> PriorRule | None:
        """The first :class:`PriorRule` matching these values, or None."""
        return next((r for r in self.priors if r.matches(manufacturer, model, calling_ae)), None)

    def hash(self) -> str:
        """Short stable hash of every setting that changes the output (not name/description).

        Without priors the prior keys are left out (hashes as before they existed); with them,
        the rules count by file name (the file's digest goes into the pipeline's identity)."""
        payload = self.model_dump(mode="json", exclude={"name", "description"})
        payload["engine"].pop("device", None)
        payload["engine"].pop("threads", None)
        if not self.priors:
            payload.pop("priors")
            payload["engine"].pop("prior_iterations")
        else:
            for rule in payload["priors"]:
                rule["file"] = Path(rule["file"]).name
        blob = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def with_overrides(self, overrides: Mapping[str, Any]) -> PipelineConfig:
        """Return a copy with dotted keys (``engine.scale``) replaced; None values are ignored."""
        data = self.model_dump()
        for key, value in overrides.items():
            if value is None:
                continue
            node = data
            parts = key.split(".")
            for p in parts[:-1]:
                if not isinstance(node.get(p), dict):
                    raise ConfigError(f"unknown configuration key {key!r}")
                node = node[p]
            if parts[-1] not in node:
                raise ConfigError(f"unknown configuration key {key!r}")
            node[parts[-1]] = value
        return _validate(data, source="command-line options")


def _validate(data: Mapping[str, Any], source: str) -> PipelineConfig:
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as exc:
        msgs = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"])
            if err["type"] == "extra_forbidden":
                msgs.append(f"unknown key {key!r}")
            elif isinstance(err.get("input"), Mapping):
                msgs.append(f"{key!r}: {err['msg']}")
            else:
                msgs.append(f"{key!r}: {err['msg']} (got {err.get('input')!r})")
        raise ConfigError(f"{source}: " + "; ".join(msgs)) from None


def _resolve_prior_files(data: dict[str, Any], folder: Path) -> None:
    """Make ``[[priors]]`` file names relative to the pipeline file's folder absolute."""
    rules = data.get("priors")
    for rule in rules if isinstance(rules, list) else ():
        if isinstance(rule, dict) and isinstance(rule.get("file"), str):
            rule["file"] = str(folder / Path(rule["file"]).expanduser())


def pipelines_dir() -> Path:
    """The named pipelines' folder: $DICOM_SR_PIPELINES, else the package's own
    ``dicom_sr/pipelines`` (a wheel install), else ``pipelines/`` of the source checkout.

    The package's folder comes first so that an unrelated top-level ``pipelines`` folder
    beside an installed package (in site-packages) is never taken for ours.
    """
    env = os.environ.get("DICOM_SR_PIPELINES")
    if env:
        return Path(env)
    here = Path(__file__).resolve().parent
    for cand in (here / "pipelines", here.parent / "pipelines"):
        if any(cand.glob("*.toml")):
            return cand
    return here.parent / "pipelines"


def available_pipelines() -> list[str]:
    """Names of the pipelines shipped in :func:`pipelines_dir`."""
    return sorted(p.stem for p in pipelines_dir().glob("*.toml"))


def load_pipeline(
    name_or_path: str | os.PathLike[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> PipelineConfig:
    """Load a pipeline by name (a file in ``pipelines/``) or path, then apply overrides."""
    ref = str(name_or_path) if name_or_path is not None else DEFAULT_PIPELINE
    path = Path(ref)
    if not (path.suffix == ".toml" and path.exists()):
        path = pipelines_dir() / f"{ref}.toml"
    if not path.is_file():
        raise ConfigError(
            f"no pipeline {ref!r}: not a file, and not one of {available_pipelines()}"
        )
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 (byte {exc.start}); TOML files are UTF-8") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    data.setdefault("name", path.stem)
    _resolve_prior_files(data, path.parent)
    config = _validate(data, source=str(path))
    return config.with_overrides(overrides) if overrides else config
