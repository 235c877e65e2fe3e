"""Running a trained generator on a whole frame: tiles, self-ensemble, back projection.

- :func:`apply_generator` runs ``G`` tile by tile (``config.tile`` LR pixels plus
  ``config.tile_overlap`` pixels of context on each side, context discarded), so memory is
  bounded whatever the frame size; with enough context the result equals one pass on the
  whole frame.
- :func:`back_project` is iterative back projection (Irani & Peleg, with heavy-ball momentum):
  the SR estimate is corrected until, degraded by the *same* kernel as the training sons
  (``config.kernel``), it reproduces the LR input.
- :func:`self_ensemble` is ZSSR's recipe: run ``G`` on dihedral transforms of the input, undo
  each transform, back-project each, take the median, back-project the median.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
from collections.abc import Callable

import torch
from torch import nn

from dicom_sr.config import EngineConfig
from dicom_sr.engine.device import cuda_bf16_native
from dicom_sr.engine.resize import downscale, upscale_bicubic

__all__ = [
    "ibp",
    "model_weight",
    "AUTO_MODEL_WEIGHT",
    "blend_with_ibp",
    "apply_generator",
    "back_project",
    "self_ensemble",
    "ensemble_transforms",
    "tile_bounds",
    "median",
    "precision",
    "native_bf16",
]

logger = logging.getLogger(__name__)

#: Tile origins are multiples of this many LR pixels, so a generator with strided layers sees
#: every tile on the same sub-grid as the whole frame (Generator downsamples HR by 4).
TILE_ALIGN = 4

Transform = tuple[int, bool]  # (quarter turns, then mirror left-right)


def tile_bounds(n: int, tile: int, overlap: int) -> list[tuple[int, int, int, int]]:
    """Split ``range(n)`` into cores of at most ``tile`` pixels (aligned to TILE_ALIGN).

    Returns ``(core0, core1, win0, win1)``: the core kept from each tile and the window
    actually processed (the core plus up to ``overlap`` pixels each side, the start rounded
    down to TILE_ALIGN). Cores have near-equal sizes, so there is no sliver of a last tile.
    """
    if n <= tile:
        return [(0, n, 0, n)]
    k = math.ceil(n / tile)
    cuts = [0]
    for i in range(1, k):
        c = round(i * n / k / TILE_ALIGN) * TILE_ALIGN
        if cuts[-1] < c < n:
            cuts.append(c)
    cuts.append(n)
    out = []
    for c0, c1 in zip(cuts[:-1], cuts[1:], strict=True):
        w0 = max(0, c0 - overlap) // TILE_ALIGN * TILE_ALIGN
        w1 = min(n, c1 + overlap)
        out.append((c0, c1, w0, w1))
    return out


def _autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


@functools.lru_cache(maxsize=1)
def _cpu_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def native_bf16(device: torch.device) -> bool:
    """Does ``device`` compute bf16 natively? CUDA of compute capability 8 or more (not
    ``torch.cuda.is_bf16_supported()``, which counts emulation: V100, T4); a CPU with
    AVX512-BF16 or AMX (``/proc/cpuinfo`` flags; torch's own capability string when that
    says AMX)."""
    if device.type == "cuda":
        return cuda_bf16_native(device)
    if device.type != "cpu":
        return False
    if "AMX" in torch.backends.cpu.get_cpu_capability().upper():
        return True
    return bool(_cpu_flags() & {"avx512_bf16", "amx_bf16", "amx_tile"})


def precision(config: EngineConfig, device: torch.device) -> str:
    """The arithmetic inference runs in on ``device``: ``"bf16"`` or ``"fp32"``.

    ``config.bf16`` forces bf16 (the older switch); ``config.precision`` ``"auto"`` takes bf16
    only where it is native (elsewhere bf16 is emulated and slower than fp32).
    """
    if config.bf16 or config.precision == "bf16":
        return "bf16"
    if config.precision == "fp32":
        return "fp32"
    return "bf16" if native_bf16(device) else "fp32"


def ibp(lr: torch.Tensor, config: EngineConfig) -> torch.Tensor:
    """Bicubic upscaling then back projection onto ``lr``: the free anchor, learning nothing."""
    sr = upscale_bicubic(lr, config.scale).clamp_(0.0, 1.0)
    return back_project(sr, lr, config.scale, config, config.back_projection_iters)


#: ``engine.model_weight = "auto"``: chosen on one set of tissue crops, checked on another.
AUTO_MODEL_WEIGHT = 0.75


def model_weight(config: EngineConfig, verdict: dict | None = None) -> float:
    """The model's share of the output, the rest being ``ibp`` (``config.model_weight``).

    ``"auto"``: 0.75 at every scale. On the tissue crops of sets A-C, with the model refitted
    on the whole frame (pipelines version 8), a fixed 0.75 beat 0.5, the model alone and the
    per-series weight of the held-aside pairs at x2 and x4; set D, held back, checked it
    (docs/history.rst, version 8). Version 6 had measured 0.5 for a model trained without
    the guard's strip.

    ``"pairs"``: the weight the guard chose on its held-aside pairs (``verdict["weight"]``),
    or the ``"auto"`` share where it made no choice (no pairs held aside).
    """
    if config.model_weight == "pairs":
        chosen = (verdict or {}).get("weight")
        return AUTO_MODEL_WEIGHT if chosen is None else float(chosen)
    if config.model_weight == "auto":
        return AUTO_MODEL_WEIGHT
    return float(config.model_weight)


def model_scale(config: EngineConfig) -> int:
    """The factor the model learns (``config.model_scale``); the rest of ``config.scale`` is
    bicubic upscaling and back projection onto the input (:func:`finish_scale`).

    ``"auto"``: 2 at x4, the scale itself at x2 and x3. On sixteen real tissue crops at x4 an
    x2 model fitted to the LR frame, its blend with ``ibp`` at x2, then ``ibp``'s last x2,
    gained +0.30 dB over ``ibp`` on average against +0.08 for an x4 model (docs/benchmarks.rst):
    the frame's own x2 pairs are four times larger than its x4 ones.
    """
    if config.model_scale == "auto":
        return 2 if config.scale == 4 else config.scale
    return int(config.model_scale)


def finish_scale(mid: torch.Tensor, lr: torch.Tensor, config: EngineConfig) -> torch.Tensor:
    """From the model's output at :func:`model_scale` to ``config.scale``: bicubic, then
    ``config.back_projection_iters`` back projections onto ``lr`` at the full scale."""
    s = config.scale
    lr = lr.to(mid.device)
    ms = mid.shape[-1] // lr.shape[-1]
    if mid.shape[-2:] != (ms * lr.shape[-2], ms * lr.shape[-1]) or s % ms:
        raise ValueError(
            f"cannot finish x{s} from a {tuple(mid.shape[-2:])} output of a "
            f"{tuple(lr.shape[-2:])} input"
        )
    up = upscale_bicubic(mid, s // ms).clamp_(0.0, 1.0) if ms < s else mid
    return back_project(up, lr, s, config, config.back_projection_iters)


def blend_with_ibp(sr: torch.Tensor, ibp: torch.Tensor, weight: float) -> torch.Tensor:
    """``weight * sr + (1 - weight) * ibp``: both agree with the LR input under the degradation
    (back projection), and so does their blend, the degradation being linear."""
    if weight >= 1.0:
        return sr
    return sr.mul(weight).add_(ibp, alpha=1.0 - weight).clamp_(0.0, 1.0)


@torch.inference_mode()
def apply_generator(
    G: nn.Module, lr: torch.Tensor, config: EngineConfig, device: torch.device
) -> torch.Tensor:
    """``G(lr)`` for an (N, C, h, w) input, computed in tiles; returns float32 on ``device``.

    ``config.tile`` / ``config.tile_overlap`` are in LR pixels. In bf16 (:func:`precision`)
    ``G`` runs under bf16 autocast, in channels-last memory format like with
    ``config.channels_last`` (``G`` is converted in place). ``G`` should be in eval mode.
    """
    s = config.scale
    bf16 = precision(config, device) == "bf16"
    memory_format = (
        torch.channels_last if (config.channels_last or bf16) else torch.contiguous_format
    )
    G.to(device=device, memory_format=memory_format)
    lr = lr.to(device=device, dtype=torch.float32)
    n, c, h, w = lr.shape
    out: torch.Tensor | None = None
    rows = tile_bounds(h, config.tile, config.tile_overlap)
    cols = tile_bounds(w, config.tile, config.tile_overlap)
    with _autocast(device, bf16):
        for y0, y1, wy0, wy1 in rows:
            for x0, x1, wx0, wx1 in cols:
                window = lr[..., wy0:wy1, wx0:wx1].contiguous(memory_format=memory_format)
                sr = G(window).float()
                if sr.shape[-2:] != (s * (wy1 - wy0), s * (wx1 - wx0)):
                    raise ValueError(
                        f"generator returned {tuple(sr.shape[-2:])} for a "
                        f"{wy1 - wy0}x{wx1 - wx0} tile at scale {s}"
                    )
                if out is None:
                    out = torch.empty(n, sr.shape[1], s * h, s * w, device=device)
                oy, ox = s * (y0 - wy0), s * (x0 - wx0)
                out[..., s * y0 : s * y1, s * x0 : s * x1] = sr[
                    ..., oy : oy + s * (y1 - y0), ox : ox + s * (x1 - x0)
                ]
    assert out is not None
    return out


def back_project(
    sr: torch.Tensor, lr: torch.Tensor, scale: int, config: EngineConfig, iters: int
) -> torch.Tensor:
    """Iterative back projection: ``sr += upscale_bicubic(lr - downscale(sr))``, ``iters`` times,
    plus ``config.back_projection_momentum`` times the previous step (heavy ball).

    ``downscale`` is the configured degradation (``config.kernel``), the one that made the
    training sons. Values are clipped to [0, 1] after each step, as in ZSSR. Plain steps
    converge slowly on the frequencies the antialiasing kernel damps: on real crops 10 plain
    steps left ibp 0.1-3 dB short of 20 with momentum 0.8 (docs/history.rst).
    """
    if sr.shape[-2:] != (lr.shape[-2] * scale, lr.shape[-1] * scale):
        raise ValueError(
            f"back projection: SR {tuple(sr.shape[-2:])} is not {scale}x LR {tuple(lr.shape[-2:])}"
        )
    beta = config.back_projection_momentum
    with torch.inference_mode():
        step = None
        for _ in range(iters):
            new = sr + upscale_bicubic(lr - downscale(sr, scale, config), scale)
            if beta and step is not None:
                new.add_(step, alpha=beta)
            new.clamp_(0.0, 1.0)
            if beta:  # plain steps keep no history: no extra full-size tensor per step
                step = new - sr
            sr = new
    return sr


def ensemble_transforms(size: int) -> list[Transform]:
    """The transforms of a self-ensemble of ``size`` 1 (identity), 2 (+ mirror) or 8 (dihedral)."""
    if size == 1:
        return [(0, False)]
    if size == 2:
        return [(0, False), (0, True)]
    if size == 8:
        return [(k, m) for m in (False, True) for k in range(4)]
    raise ValueError(f"self-ensemble size must be 1, 2 or 8, got {size}")


def _forward(x: torch.Tensor, t: Transform) -> torch.Tensor:
    k, mirror = t
    x = torch.rot90(x, k, dims=(-2, -1)) if k else x
    return torch.flip(x, dims=(-1,)) if mirror else x


def _inverse(x: torch.Tensor, t: Transform) -> torch.Tensor:
    k, mirror = t
    x = torch.flip(x, dims=(-1,)) if mirror else x
    return torch.rot90(x, -k, dims=(-2, -1)) if k else x


def median(stack: torch.Tensor) -> torch.Tensor:
    """Median over dim 0, the mean of the two middle values for an even count (``np.median``)."""
    n = stack.shape[0]
    if n == 1:
        return stack[0]
    srt = stack.sort(dim=0).values
    if n % 2:
        return srt[n // 2]
    return 0.5 * (srt[n // 2 - 1] + srt[n // 2])


def _run(
    G: nn.Module | Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    config: EngineConfig,
    device: torch.device,
) -> torch.Tensor:
    if isinstance(G, nn.Module):
        return apply_generator(G, x, config, device)
    return G(x).float()


@torch.inference_mode()
def self_ensemble(
    G: nn.Module | Callable[[torch.Tensor], torch.Tensor],
    lr: torch.Tensor,
    config: EngineConfig,
    device: torch.device,
    *,
    batch: bool | None = None,
) -> torch.Tensor:
    """ZSSR's geometric self-ensemble with back projection; (N, C, h, w) -> (N, C, s*h, s*w).

    For each transform of ``config.ensemble``: ``G`` (tiled, :func:`apply_generator`) on the
    transformed input, inverse transform, ``config.back_projection_pass_iters`` back
    projections (at most ``back_projection_iters``); then the median of the outputs,
    back-projected ``config.back_projection_iters`` times. ``G`` may also be any callable
    mapping an LR tensor to its SR tensor (then it is called whole, not tiled).

    ``batch``: run the transforms of one orientation (even or odd quarter turns) as one batch
    through ``G``. None: on CUDA only; on a 2-core AVX2 CPU a batch of four passes measured
    slower per pass than four single passes. The back projections of all passes always run
    as one batch.
    """
    s = config.scale
    lr = lr.to(device=device, dtype=torch.float32)
    n = lr.shape[0]
    transforms = ensemble_transforms(config.ensemble)
    if batch is None:
        batch = device.type == "cuda"
    ys: list[torch.Tensor] = []
    if batch:
        for parity in (0, 1):
            group = [t for t in transforms if t[0] % 2 == parity]
            if not group:
                continue
            y = _run(G, torch.cat([_forward(lr, t) for t in group]), config, device)
            ys += [_inverse(y[i * n : (i + 1) * n], t) for i, t in enumerate(group)]
    else:
        ys = [_inverse(_run(G, _forward(lr, t), config, device), t) for t in transforms]
    stack = torch.stack(ys).clamp_(0.0, 1.0)  # (T, N, C, H, W)
    del ys
    flat = stack.flatten(0, 1)
    lrs = lr.repeat(len(transforms), 1, 1, 1)
    per_pass = min(config.back_projection_pass_iters, config.back_projection_iters)
    flat = back_project(flat, lrs, s, config, per_pass)
    out = median(flat.unflatten(0, (len(transforms), n)))
    del flat, stack
    return back_project(out, lr, s, config, config.back_projection_iters)
