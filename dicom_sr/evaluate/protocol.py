"""The paper's evaluation protocol on real frames: crop to tissue, degrade, super-resolve, score.

A frame is cropped to its largest tissue region (less a margin, which drops the region's outline
and annotation ticks), trimmed to a multiple of every scale, degraded by the *protocol's* kernel
(:class:`Degradation`, independent of the engine's ``config.kernel``, so a method that assumes
bicubic can be tested on a PSF it does not know), super-resolved by each method and compared
with the crop it came from. Metrics ignore a border of ``scale`` pixels, as is usual for SR.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from dicom_sr.config import (
    ConfigError,
    EngineConfig,
    PipelineConfig,
    available_pipelines,
    load_pipeline,
)
from dicom_sr.dicom.discover import Instance, Skipped, discover
from dicom_sr.dicom.frames import open_frames
from dicom_sr.dicom.regions import tissue_regions
from dicom_sr.engine import METHODS, fit, fit_cine, get_method, upscale
from dicom_sr.engine.resize import downscale
from dicom_sr.errors import InputError
from dicom_sr.evaluate.measure import RssSampler, Timed
from dicom_sr.evaluate.metrics import mean_abs_diff, psnr, shave, ssim, vif_p

__all__ = [
    "BASE_METHODS",
    "Degradation",
    "MethodSpec",
    "EvalImage",
    "resolve_methods",
    "load_images",
    "load_cine",
    "run_method",
    "score",
    "cine_scores",
]

logger = logging.getLogger(__name__)

#: The engine's registered methods, in the report's column order (the registry says which learn).
BASE_METHODS = tuple(METHODS)
#: Smallest crop side (HR pixels) that still leaves VIF-P's four scales some pixels.
MIN_SIDE = 96


@dataclass(frozen=True)
class Degradation:
    """How the protocol makes the low-resolution input from a real frame.

    ``bicubic``: antialiased MATLAB-style bicubic (``imresize(x, 1/s)``). ``psf``: anisotropic
    Gaussian point-spread function then decimation, ``sigma_axial`` along rows (depth) and
    ``sigma_lateral`` along columns, in LR pixels (so ``sigma * scale`` HR pixels): ultrasound's
    lateral resolution is the worse one. ``noise_std`` adds Gaussian noise to the LR image.
    """

    kernel: Literal["bicubic", "psf"] = "bicubic"
    sigma_axial: float = 0.5
    sigma_lateral: float = 1.0
    noise_std: float = 0.0
    seed: int = 0

    def describe(self) -> str:
        if self.kernel == "bicubic":
            text = "antialiased bicubic (MATLAB imresize)"
        else:
            text = (
                f"anisotropic Gaussian PSF, sigma axial {self.sigma_axial:g} / lateral "
                f"{self.sigma_lateral:g} LR px, then decimation"
            )
        return text + (f", noise std {self.noise_std:g}" if self.noise_std else "")

    def apply(self, hr: np.ndarray, scale: int) -> np.ndarray:
        """Degrade one (H, W) float32 frame; returns (ceil(H/s), ceil(W/s)) float32 in [0, 1]."""
        if self.kernel == "bicubic":
            cfg = EngineConfig(kernel="bicubic")
        else:
            cfg = EngineConfig(
                kernel="gaussian",
                psf_sigma_axial=self.sigma_axial * scale,
                psf_sigma_lateral=self.sigma_lateral * scale,
            )
        x = torch.from_numpy(np.ascontiguousarray(hr, dtype=np.float32))[None, None]
        with torch.inference_mode():
            lr = downscale(x, scale, cfg)[0, 0].numpy()
        if self.noise_std:
            rng = np.random.default_rng(self.seed)
            lr = lr + rng.normal(0.0, self.noise_std, lr.shape).astype(np.float32)
        return np.clip(lr, 0.0, 1.0).astype(np.float32)


@dataclass(frozen=True)
class MethodSpec:
    """One column of the report: a name and the engine settings that produce it."""

    name: str
    engine: EngineConfig
    ablation: bool = False

    @property
    def learned(self) -> bool:
        return get_method(self.engine.method).learned


def resolve_methods(names: Iterable[str], config: PipelineConfig) -> list[MethodSpec]:
    """Turn ``bicubic,ibp,...,ablation-gan-alone`` into engine settings.

    A base method is ``config.engine`` with that method. An ablation is a pipeline file whose
    engine settings differ from the defaults (its loss weights); those differences are applied
    on top of ``config.engine`` with method ``cyclegan``, so every variant shares the run's
    budget, ensemble and seed ("trained under the same condition", Sec. IV-D).
    """
    specs = []
    base = config.engine.model_dump()
    defaults = EngineConfig().model_dump()
    for name in names:
        if name in BASE_METHODS:
            specs.append(MethodSpec(name, EngineConfig.model_validate({**base, "method": name})))
            continue
        try:
            abl = load_pipeline(name).engine.model_dump()
        except ConfigError as exc:
            ablations = [p for p in available_pipelines() if p.startswith("ablation-")]
            raise ConfigError(
                f"unknown method {name!r}: expected one of {list(BASE_METHODS)} or an ablation "
                f"pipeline {ablations} ({exc})"
            ) from None
        diff = {k: v for k, v in abl.items() if v != defaults[k]}
        eng = EngineConfig.model_validate({**base, **diff, "method": "cyclegan"})
        specs.append(MethodSpec(name, eng, ablation=True))
    return specs


@dataclass
class EvalImage:
    """A ground-truth crop of one real frame and where it came from."""

    id: str
    path: Path
    frame_index: int
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 (inclusive) of the crop in the frame
    hr: np.ndarray
    number_of_frames: int = 1


def _crop_box(header, inst: Instance, margin: int, multiple: int) -> tuple[int, int, int, int]:
    regions = [r for r in tissue_regions(header, inst.rows, inst.columns) if r.is_tissue]
    if not regions:
        regions = tissue_regions(header, inst.rows, inst.columns)
    r = max(regions, key=lambda g: (g.x1 - g.x0 + 1) * (g.y1 - g.y0 + 1))
    x0, y0, x1, y1 = r.x0 + margin, r.y0 + margin, r.x1 - margin, r.y1 - margin
    w = (x1 - x0 + 1) // multiple * multiple
    h = (y1 - y0 + 1) // multiple * multiple
    if min(w, h) < MIN_SIDE:
        raise ValueError(
            f"tissue region {r.x1 - r.x0 + 1}x{r.y1 - r.y0 + 1} px is too small "
            f"to evaluate (need {MIN_SIDE} px after a {margin} px margin)"
        )
    # centre the trimmed crop in the region
    x0 += (x1 - x0 + 1 - w) // 2
    y0 += (y1 - y0 + 1 - h) // 2
    return x0, y0, x0 + w - 1, y0 + h - 1


def _instances(inputs: Sequence[Path], skipped: list[Skipped]) -> list[Instance]:
    found = discover(inputs)
    skipped.extend(found.skipped)
    return [inst for series in found.series for inst in series.instances]


def load_images(
    inputs: Sequence[Path],
    *,
    scales: Sequence[int],
    margin: int = 8,
    max_images: int | None = None,
    skipped: list[Skipped] | None = None,
) -> tuple[list[EvalImage], list[Instance]]:
    """One ground-truth crop (first frame) per instance; also the multi-frame instances."""
    skipped = [] if skipped is None else skipped
    multiple = math.lcm(*scales)
    images, cines = [], []
    for inst in _instances(inputs, skipped):
        if max_images is not None and len(images) >= max_images:
            break
        try:
            with open_frames(inst) as reader:
                box = _crop_box(reader.header, inst, margin, multiple)
                frame = next(iter(reader))
        except (InputError, ValueError, StopIteration) as exc:  # ValueError: crop too small
            skipped.append(Skipped(str(inst.path), str(exc) or "no frames"))
            logger.warning("not evaluated: %s: %s", inst.path, exc)
            continue
        x0, y0, x1, y1 = box
        hr = np.ascontiguousarray(frame.luma[y0 : y1 + 1, x0 : x1 + 1], dtype=np.float32)
        image_id = f"{inst.path.stem}#{frame.index}"
        images.append(EvalImage(image_id, inst.path, frame.index, box, hr, inst.number_of_frames))
        if inst.number_of_frames > 1:
            cines.append(inst)
    return images, cines


def load_cine(
    inst: Instance, *, scales: Sequence[int], margin: int = 8, max_frames: int = 30
) -> list[np.ndarray]:
    """The first ``max_frames`` consecutive frames of a cine, cropped like :func:`load_images`."""
    frames = []
    with open_frames(inst) as reader:
        x0, y0, x1, y1 = _crop_box(reader.header, inst, margin, math.lcm(*scales))
        for frame in reader:
            frames.append(np.ascontiguousarray(frame.luma[y0 : y1 + 1, x0 : x1 + 1]))
            if len(frames) >= max_frames:
                break
    return frames


@dataclass
class MethodRun:
    """Output of one method on one input, with its cost."""

    sr: list[np.ndarray]
    train_seconds: float
    infer_seconds: float
    peak_rss_mb: float
    rss_increase_mb: float
    info: dict = field(default_factory=dict)


def run_method(spec: MethodSpec, lr_frames: Sequence[np.ndarray], scale: int) -> MethodRun:
    """Train (once for all frames: ``fit`` for one, ``fit_cine`` for several) and upscale each."""
    cfg = EngineConfig.model_validate({**spec.engine.model_dump(), "scale": scale})
    with RssSampler() as mem:
        with Timed() as t_fit:
            if not spec.learned:
                model = fit([], cfg)
            elif len(lr_frames) == 1:
                model = fit(list(lr_frames), cfg)
            else:
                model = fit_cine(list(lr_frames), cfg)
        with Timed() as t_inf:
            sr = [upscale(f, model, cfg) for f in lr_frames]
    info = {k: v for k, v in (model.info or {}).items() if isinstance(v, (int, float, str, bool))}
    return MethodRun(sr, t_fit.seconds, t_inf.seconds, mem.peak_mb, mem.delta_mb, info)


def score(hr: np.ndarray, sr: np.ndarray, scale: int) -> dict[str, float]:
    """PSNR, SSIM and VIF-P of one super-resolved crop, ignoring a ``scale``-pixel border."""
    a, b = shave(hr, scale), shave(np.clip(sr, 0.0, 1.0), scale)
    return {"psnr": psnr(a, b), "ssim": ssim(a, b), "vif_p": vif_p(a, b)}


def cine_scores(hr: Sequence[np.ndarray], sr: Sequence[np.ndarray], scale: int) -> dict:
    """Temporal consistency of a super-resolved cine against its source.

    ``source_mad``/``sr_mad``: mean over frame pairs of the mean absolute frame-to-frame
    difference; ``mad_ratio`` = sr / source (1 = as much change as the source; above 1 = added
    flicker); ``flicker``: mean |(sr[t+1] - sr[t]) - (hr[t+1] - hr[t])|, the temporal error.
    """
    h = [shave(f, scale).astype(np.float64) for f in hr]
    s = [shave(np.clip(f, 0, 1), scale).astype(np.float64) for f in sr]
    src = [mean_abs_diff(a, b) for a, b in zip(h, h[1:], strict=False)]
    out = [mean_abs_diff(a, b) for a, b in zip(s, s[1:], strict=False)]
    err = [float(np.mean(np.abs((s[t + 1] - s[t]) - (h[t + 1] - h[t])))) for t in range(len(h) - 1)]
    source_mad, sr_mad = float(np.mean(src)), float(np.mean(out))
    return {
        "frames": len(h),
        "source_mad": source_mad,
        "sr_mad": sr_mad,
        "mad_ratio": sr_mad / source_mad if source_mad > 0 else float("nan"),
        "flicker": float(np.mean(err)),
        "psnr_mean": float(np.mean([psnr(a, b) for a, b in zip(h, s, strict=True)])),
    }
