"""ZSSR-style self-supervision: HR fathers from the input frame(s), LR sons by degradation.

The fathers are each frame and ``config.father_scales`` antialiased bicubic downscales of it
(factors evenly spaced from 1 down to 0.5), computed once as tensors on the training device.
A batch is ``config.batch_size`` random crops of side ``crop`` (``config.crop_size``, at most
half the smallest frame side, rounded down to a multiple of the scale so every son is exactly
``crop / s``), each from a father
drawn with probability proportional to its area, each with a random geometric augmentation:
``"mirror"`` flips left-right only (keeps the axial direction of ultrasound vertical),
``"dihedral"`` the eight rotations/reflections (as the paper). The sons are
``downscale(father crop, s, config)`` plus optional Gaussian noise (``config.noise_std``).

Where a crop lies in its father is uniform (``config.crop_sampling = "uniform"``, as ZSSR), or
weighted by the standard deviation of the crop (``"content"``) so that crops of the black
background around an ultrasound sector, which teach nothing, are drawn less often.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as nnf

from dicom_sr.config import EngineConfig
from dicom_sr.engine.resize import downscale, resize_bicubic

__all__ = ["Strip", "Fathers", "build_fathers", "sample_batch", "father_factors", "crop_weights"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Strip:
    """A band ``[start, stop)`` along ``axis`` (-1: columns, -2: rows) kept out of training."""

    axis: int
    start: int
    stop: int

    def scaled(self, fac: float) -> tuple[int, int]:
        """The band in a copy of the frame resized by ``fac`` (widened to whole pixels)."""
        return math.floor(self.start * fac), math.ceil(self.stop * fac)


@dataclass
class Fathers:
    """The precomputed pyramid: tensors (1, 1, H, W) and their sampling probabilities."""

    images: list[torch.Tensor]
    probs: torch.Tensor
    crop: int
    #: per father, the weight of every crop position (``"content"`` sampling), (rows, cols)
    positions: list[torch.Tensor] | None = None


def father_factors(n: int) -> list[float]:
    """Downscale factors of the fathers: 1 and ``n`` more evenly spaced down to 0.5."""
    return [1.0 - 0.5 * k / n for k in range(n + 1)] if n > 0 else [1.0]


def build_fathers(
    frames: Sequence[np.ndarray],
    config: EngineConfig,
    device: torch.device,
    strips: Sequence[Strip | None] | None = None,
) -> Fathers:
    """Pyramid of every frame; fathers smaller than the crop are left out.

    ``strips`` (one per frame, from :func:`dicom_sr.engine.guard.hold_aside`) are bands that no
    crop may touch, in the frame or in its downscaled copies: the guard's held-aside pairs.
    """
    if not frames:
        raise ValueError("training needs at least one frame")
    s = config.scale
    smallest = min(min(f.shape[-2:]) for f in frames)
    # at most half the smallest side, so that the half-size father still yields varied crops:
    # a 60 px LR input at x4 with 60 px crops trains on one father, the whole image, and
    # measured 0.4 dB worse than with 28 px crops from the full pyramid
    crop = min(config.crop_size, smallest // 2) // s * s
    if crop < 2 * s:
        raise ValueError(f"frame of {smallest} px is too small to train at x{s}")
    images: list[torch.Tensor] = []
    bands: list[tuple[Strip, float] | None] = []
    for i, frame in enumerate(frames):
        strip = strips[i] if strips is not None else None
        arr = np.asarray(frame, dtype=np.float32)
        if arr.ndim != 2:
            raise ValueError(f"expected a 2-D luminance frame, got shape {arr.shape}")
        t = torch.from_numpy(np.ascontiguousarray(arr))[None, None].to(device)
        h, w = arr.shape
        for fac in father_factors(config.father_scales):
            oh, ow = round(h * fac), round(w * fac)
            if min(oh, ow) < crop:
                continue
            images.append(t if fac == 1.0 else resize_bicubic(t, (oh, ow)).clamp_(0.0, 1.0))
            bands.append(None if strip is None else (strip, fac))
    logger.debug("%d fathers, crop %d px", len(images), crop)
    positions = None
    if config.crop_sampling == "content":
        positions = [crop_weights(img[0, 0], crop) for img in images]
    elif any(b is not None for b in bands):
        positions = [torch.ones(i.shape[-2] - crop + 1, i.shape[-1] - crop + 1) for i in images]
    if positions is not None:
        for pos, band in zip(positions, bands, strict=True):
            if band is not None:
                _exclude(pos, band[0], band[1], crop)
        keep = [i for i, pos in enumerate(positions) if float(pos.sum()) > 0]
        if not keep:
            raise ValueError("no training crop left beside the guard's held-aside strip")
        images = [images[i] for i in keep]
        positions = [positions[i] for i in keep]
    area = torch.tensor([float(i.shape[-2] * i.shape[-1]) for i in images])
    return Fathers(images=images, probs=area / area.sum(), crop=crop, positions=positions)


def _exclude(positions: torch.Tensor, strip: Strip, fac: float, crop: int) -> None:
    """Zero the weight of every crop position whose window touches ``strip`` (in place)."""
    lo, hi = strip.scaled(fac)
    first, last = max(0, lo - crop + 1), hi  # windows [p, p + crop) meeting [lo, hi)
    if strip.axis == -1:
        positions[:, first:last] = 0.0
    else:
        positions[first:last, :] = 0.0


def crop_weights(image: torch.Tensor, crop: int, floor: float = 0.1) -> torch.Tensor:
    """Weight of every ``crop`` x ``crop`` window of ``image`` (H, W): its standard deviation.

    Computed from integral images in O(H W). ``floor`` times the mean weight is added, so that
    flat windows stay possible, only rarer. Shape (H - crop + 1, W - crop + 1), on the CPU.

    Always computed on the CPU: a float64 ``cumsum`` on CUDA is not deterministic (and raises
    under ``torch.use_deterministic_algorithms``), and the weights are sampled on the CPU.
    """
    x = image.detach().to("cpu", torch.float64)
    n = float(crop * crop)

    def window_sums(t: torch.Tensor) -> torch.Tensor:
        ii = nnf.pad(t.cumsum(0).cumsum(1), (1, 0, 1, 0))
        return ii[crop:, crop:] - ii[:-crop, crop:] - ii[crop:, :-crop] + ii[:-crop, :-crop]

    mean = window_sums(x) / n
    std = (window_sums(x * x) / n - mean * mean).clamp_min(0.0).sqrt()
    return (std + floor * std.mean() + 1e-12).to(torch.float32)


def _augment(crop: torch.Tensor, mode: str, gen: torch.Generator) -> torch.Tensor:
    if mode == "none":
        return crop
    if torch.randint(2, (1,), generator=gen).item():
        crop = torch.flip(crop, dims=(-1,))
    if mode == "dihedral":
        k = int(torch.randint(4, (1,), generator=gen).item())
        if k:
            crop = torch.rot90(crop, k, dims=(-2, -1))
    return crop


def sample_batch(
    fathers: Fathers,
    config: EngineConfig,
    gen: torch.Generator,
    noise_gen: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One batch: LR sons ``x`` (B,1,c/s,c/s) and HR fathers' crops ``y`` (B,1,c,c).

    ``gen`` (a CPU generator) draws the crops; the sons' noise is drawn on their device with
    ``noise_gen`` when given (no host-to-device copy), else with ``gen`` on the CPU.
    """
    c = fathers.crop
    picks = torch.multinomial(fathers.probs, config.batch_size, replacement=True, generator=gen)
    crops = []
    for i in picks.tolist():
        img = fathers.images[i]
        h, w = img.shape[-2:]
        if fathers.positions is not None:  # the row by its total weight, then the column
            weights = fathers.positions[i]
            top = int(torch.multinomial(weights.sum(1), 1, generator=gen).item())
            left = int(torch.multinomial(weights[top], 1, generator=gen).item())
        else:
            top = int(torch.randint(h - c + 1, (1,), generator=gen).item())
            left = int(torch.randint(w - c + 1, (1,), generator=gen).item())
        crops.append(_augment(img[..., top : top + c, left : left + c], config.augment, gen))
    y = torch.cat(crops, dim=0)
    x = downscale(y, config.scale, config)
    if config.noise_std > 0:
        g = noise_gen if noise_gen is not None else gen
        noise = torch.randn(x.shape, generator=g, device=g.device).to(x.device)
        x = x + config.noise_std * noise
    return x, y
