"""The guard: is the trained model better than ``ibp`` on pairs that training never saw?

Before training, :func:`hold_aside` reserves one strip of every training frame: a band of up
to ``config.crop_size`` pixels across the frame, at the edge with more texture, at the same
place in every frame of one shape so that the frames of a cine do not leak it to each other.
The training fathers never draw a crop that touches the strip, in the frame or in any of its
downscaled copies (:func:`dicom_sr.engine.fathers.build_fathers`). The strip and its
half-size copy are cut into square HR crops; their sons are the crops degraded by the
configured kernel, exactly like the training pairs. After training, :func:`judge` runs the
model's own inference path (self-ensemble and back projection, :func:`.infer.self_ensemble`)
and ``ibp`` on the ``config.guard_pairs`` most textured pairs and compares their PSNR (squared
error pooled over the pairs). When the
model does not beat ``ibp`` by ``config.guard_margin_db``, the decision is ``"ibp"`` and
:func:`dicom_sr.engine.api.upscale` returns the ``ibp`` output for that model.

The learning-rate policy's fixed evaluation crops (:mod:`.train`) may overlap the strip: they
steer only when the rate decays, never a gradient.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from dicom_sr.config import EngineConfig
from dicom_sr.engine.fathers import Strip, crop_weights
from dicom_sr.engine.infer import ibp, model_weight, self_ensemble
from dicom_sr.engine.resize import downscale, resize_bicubic

__all__ = ["Strip", "HeldAside", "hold_aside", "judge", "skipped", "GUARD_FACTORS"]

logger = logging.getLogger(__name__)

#: Sizes of the held-aside strip the pairs are cut from: the frame's own, and half of it
#: (the smallest training father), so the pairs span the scales training learns from.
GUARD_FACTORS = (1.0, 0.5)
#: Smallest side of a held-aside son, LR pixels (a 72 px LR crop at x4 still holds a band).
MIN_SON = 6


@dataclass
class HeldAside:
    """The strips (one per training frame, None where none) and the pairs cut from them."""

    strips: list[Strip | None]
    lr: list[torch.Tensor] = field(default_factory=list)  # (1, 1, h, w) each
    hr: list[torch.Tensor] = field(default_factory=list)  # (1, 1, s*h, s*w) each


def _place(frame: np.ndarray, width: int, axis: int) -> int:
    """Start of the ``width``-pixel band along ``axis``: at the end of the frame with the
    more texture (window std).

    At an edge, the band costs training only the crops that reach into it from one side; in
    the middle it would split the smaller fathers into pieces too narrow for a crop.
    """
    img = torch.from_numpy(np.ascontiguousarray(frame, dtype=np.float32))
    side = min(width, *img.shape)
    weights = crop_weights(img, side)  # (H - side + 1, W - side + 1)
    profile = weights.sum(dim=0 if axis == -1 else 1)
    last = frame.shape[axis] - width
    return 0 if float(profile[0]) >= float(profile[last]) else last


def _strip_for(shape: tuple[int, int], frame: np.ndarray, config: EngineConfig) -> Strip | None:
    """Where to put the band in frames of ``shape``, or None when the frame is too small.

    The band is at most ``config.crop_size`` and a third of the frame wide, and at least
    ``MIN_SON`` LR pixels; beside it, the frame must still hold a training crop. Of the two
    orientations the one whose band holds the most pair pixels wins.
    """
    s = config.scale
    crop = min(config.crop_size, min(shape) // 2) // s * s
    best: tuple[int, int, int] | None = None  # (pixels, axis, width)
    for axis in (-1, -2):
        across = shape[axis]  # the band's width is taken along this axis
        length = shape[-1 if axis == -2 else -2]
        width = min(config.crop_size, across // 3) // s * s
        if width < MIN_SON * s or across - width < crop or length < width:
            continue
        pixels = (length // width) * width * width
        if best is None or pixels > best[0]:
            best = (pixels, axis, width)
    if best is None:
        return None
    _, axis, width = best
    start = _place(frame, width, axis)
    return Strip(axis, start, start + width)


def _band(frame: torch.Tensor, strip: Strip, fac: float) -> torch.Tensor:
    """The band of ``frame`` (1, 1, H, W), resized by ``fac`` on its own (no outside pixels)."""
    band = frame.narrow(strip.axis, strip.start, strip.stop - strip.start)
    if fac == 1.0:
        return band
    h, w = band.shape[-2:]
    return resize_bicubic(band, (max(1, round(h * fac)), max(1, round(w * fac)))).clamp_(0, 1)


def _tiles(band: torch.Tensor, axis: int, scale: int) -> list[torch.Tensor]:
    """Square tiles along the band (side: the band's width, a multiple of the scale)."""
    side = band.shape[axis] // scale * scale
    if side < MIN_SON * scale:
        return []
    length = band.shape[-2 if axis == -1 else -1]
    out = []
    for i in range(length // side):
        if axis == -1:
            out.append(band[..., i * side : (i + 1) * side, :side])
        else:
            out.append(band[..., :side, i * side : (i + 1) * side])
    return out


def hold_aside(frames: Sequence[np.ndarray], config: EngineConfig) -> HeldAside:
    """Choose the strips of ``frames`` and cut the guard's father/son pairs from them.

    The ``config.guard_pairs`` pairs with the most texture (std of the HR crop) are kept.
    Frames too small for a strip keep none (their pixels all go to training).
    """
    strips: list[Strip | None] = []
    by_shape: dict[tuple[int, int], Strip | None] = {}
    candidates: list[tuple[float, torch.Tensor]] = []
    for frame in frames:
        shape = (int(frame.shape[0]), int(frame.shape[1]))
        if shape not in by_shape:
            by_shape[shape] = _strip_for(shape, frame, config)
        strip = by_shape[shape]
        strips.append(strip)
        if strip is None:
            continue
        t = torch.from_numpy(np.ascontiguousarray(frame, dtype=np.float32))[None, None]
        for fac in GUARD_FACTORS:
            for tile in _tiles(_band(t, strip, fac), strip.axis, config.scale):
                candidates.append((float(tile.std()), tile.contiguous()))
    held = HeldAside(strips)
    if not candidates:
        return held
    candidates.sort(key=lambda c: -c[0])
    hr = [c[1] for c in candidates[: config.guard_pairs]]
    with torch.inference_mode():
        held.hr = hr
        held.lr = [downscale(y, config.scale, config) for y in hr]
    return held


def _db(mse: float) -> float:
    return 10.0 * math.log10(1.0 / max(mse, 1e-12))


def skipped(reason: str) -> dict[str, Any]:
    """``info["guard"]`` when no judgement was made (guard off, nothing held aside)."""
    return {
        "decision": "model",
        "model_db": None,
        "ibp_db": None,
        "alone_db": None,
        "best_weight": None,
        "weight": None,
        "pairs": 0,
        "margin_db": None,
        "reason": reason,
    }


@torch.inference_mode()
def judge(
    G: nn.Module, held: HeldAside, config: EngineConfig, device: torch.device
) -> dict[str, Any]:
    """Score ``G`` (eval mode) and ``ibp`` on the held-aside pairs; the decision and scores.

    Returns ``{"decision": "model" | "ibp", "model_db", "ibp_db", "pairs", "margin_db",
    "reason"}``; the dB values are PSNR of the squared error pooled over all pairs (``scale``
    px border shaved).
    """
    if not held.hr:
        return skipped("frames too small to hold pairs aside; not checked")
    s = config.scale
    # squared errors and pixels pooled over all pairs: one near-flat pair with a tiny MSE must
    # not dominate (it did, as a mean of dB); the cross terms give the best blend weight
    sums = {"alone": 0.0, "ibp": 0.0, "cross": 0.0, "gap": 0.0}
    count = 0
    # same-sized pairs run as one batch through the inference path
    groups: dict[tuple[int, int], list[int]] = {}
    for i, x in enumerate(held.lr):
        groups.setdefault(tuple(x.shape[-2:]), []).append(i)
    for idx in groups.values():
        lr = torch.cat([held.lr[i] for i in idx]).to(device)
        hr = torch.cat([held.hr[i] for i in idx]).to(device)[..., s:-s, s:-s].double()
        anchor = ibp(lr, config)[..., s:-s, s:-s].double()
        alone = self_ensemble(G, lr, config, device)[..., s:-s, s:-s].double()
        err_m, err_b = alone - hr, anchor - hr
        sums["alone"] += float((err_m * err_m).sum())
        sums["ibp"] += float((err_b * err_b).sum())
        sums["cross"] += float((err_b * (anchor - alone)).sum())
        sums["gap"] += float(((alone - anchor) ** 2).sum())
        count += hr.numel()
    best = min(1.0, max(0.0, sums["cross"] / sums["gap"])) if sums["gap"] > 0 else 0.5
    weight = round(best, 2) if config.model_weight == "pairs" else model_weight(config)
    # the blend's squared error, from the pooled sums: |w m + (1 - w) b - y|^2
    blend = (
        weight**2 * sums["alone"]
        + (1 - weight) ** 2 * sums["ibp"]
        + 2 * weight * (1 - weight) * _dot(sums)
    )
    m, b, a = (_db(v / count) for v in (blend, sums["ibp"], sums["alone"]))
    gain = m - b
    margin = config.guard_margin_db
    decision = "model" if gain >= margin else "ibp"
    verdict = "kept" if decision == "model" else "output is ibp"
    reason = (
        f"model {gain:+.2f} dB against ibp on {len(held.hr)} held-aside pairs "
        f"(weight {weight:g}, margin {margin:+.2f} dB): {verdict}"
    )
    logger.info("guard: %s", reason)
    return {
        "decision": decision,
        "model_db": round(m, 4),
        "ibp_db": round(b, 4),
        "alone_db": round(a, 4),
        "best_weight": round(best, 3),
        "weight": weight,
        "pairs": len(held.hr),
        "margin_db": margin,
        "reason": reason,
    }


def _dot(sums: dict[str, float]) -> float:
    """<m - y, b - y> from the pooled sums: (|m-y|^2 + |b-y|^2 - |m-b|^2) / 2."""
    return (sums["alone"] + sums["ibp"] - sums["gap"]) / 2
