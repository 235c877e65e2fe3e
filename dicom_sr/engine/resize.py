"""Resampling with one pixel-grid convention for the whole engine.

Every kernel here follows MATLAB's ``imresize``: output pixel ``i`` (0-based) along an axis
samples the input at ``u = (i + 0.5) / s - 0.5`` where ``s = out / in`` is the scale, i.e. pixel
*centres* are aligned (an LR pixel covers exactly ``s`` HR pixels). Borders are handled by
MATLAB's symmetric (edge-repeating) mirror. Upscaling uses Keys' cubic (a = -0.5); downscaling
stretches the kernel by ``1/s`` (antialiasing) exactly as ``imresize`` does.

Each axis is resampled by a short list of taps (index, weight) per output pixel, computed once
per shape and cached. On the CPU they are applied as one dense (out, in) matrix product per
axis (BLAS; faster than gathers up to the largest frames we accept, 2560 px). Elsewhere (CUDA)
an integer factor makes the taps periodic, and they are applied as a 4-to-10-tap strided
convolution per axis after a mirrored gather (:func:`_polyphase`): the same sums for a tiny
fraction of the dense product's work (``in_len`` multiply-adds per output pixel).

:func:`downscale` with ``kernel="gaussian"`` blurs with a Gaussian PSF and samples the blurred
image at the *same* LR centres as the bicubic grid; for an even factor those centres fall between
HR pixels, so the Gaussian is evaluated at the half-pixel offsets rather than rounded.

Sizes: :func:`downscale` returns ``ceil(H / s) x ceil(W / s)`` with the scale kept at exactly
``1 / s`` (MATLAB's ``imresize(x, 1/s)``); when ``H`` is not a multiple of ``s`` the last LR
centre lies past the last HR pixel and is filled from the symmetric border. Hence
``downscale(upscale_bicubic(lr, s), s)`` has the size of ``lr`` for any ``lr``, which back
projection relies on.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as nnf

from dicom_sr.config import EngineConfig
from dicom_sr.engine.device import repeatable

__all__ = ["downscale", "upscale_bicubic", "resize_bicubic", "upscale_np", "cubic", "taps"]

Kernel = Literal["bicubic", "gaussian"]


def cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = -0.5 (MATLAB's ``cubic``)."""
    ax = np.abs(x)
    ax2 = ax * ax
    ax3 = ax2 * ax
    near = (1.5 * ax3 - 2.5 * ax2 + 1.0) * (ax <= 1)
    far = (-0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0) * ((ax > 1) & (ax <= 2))
    return near + far


def _raw_taps(
    in_len: int, out_len: int, scale: float, kernel: Kernel, sigma: float
) -> tuple[np.ndarray, np.ndarray]:
    """Unmirrored indices ``(out_len, P)`` and weights ``(out_len, P)`` resampling one axis.

    A port of MATLAB's ``contributions``: ``scale`` is out/in; bicubic is antialiased when
    ``scale < 1``; ``kernel="gaussian"`` uses a Gaussian of ``sigma`` input pixels (no extra
    stretching, the PSF is the antialiasing filter) truncated at 4 sigma. Weights of each
    output pixel sum to one; indices may lie outside ``[0, in_len)`` (see :func:`_mirror`).
    """
    if in_len < 1 or out_len < 1:
        raise ValueError(f"cannot resample an axis of {in_len} pixels to {out_len}")
    if kernel == "bicubic":
        width = 4.0
        if scale < 1:
            width = width / scale

            def h(t: np.ndarray) -> np.ndarray:
                return scale * cubic(scale * t)
        else:
            h = cubic
    elif kernel == "gaussian":
        if sigma <= 0:
            raise ValueError(f"Gaussian PSF sigma must be > 0, got {sigma}")
        width = 8.0 * sigma

        def h(t: np.ndarray) -> np.ndarray:
            return np.exp(-0.5 * (t / sigma) ** 2)
    else:
        raise ValueError(f"unknown resampling kernel {kernel!r} (expected 'bicubic' or 'gaussian')")

    u = (np.arange(out_len, dtype=np.float64) + 0.5) / scale - 0.5
    left = np.floor(u - width / 2.0)
    n_taps = int(math.ceil(width)) + 2
    idx = left[:, None] + np.arange(n_taps)[None, :]
    w = h(u[:, None] - idx)
    w = w / w.sum(axis=1, keepdims=True)
    return idx.astype(np.int64), w


def _mirror(idx: np.ndarray, in_len: int) -> np.ndarray:
    """MATLAB's symmetric padding: [0, 1, ..., n-1, n-1, ..., 0] repeated."""
    mirror = np.concatenate([np.arange(in_len), np.arange(in_len - 1, -1, -1)])
    return mirror[np.mod(idx, 2 * in_len)]


@lru_cache(maxsize=256)
def taps(
    in_len: int, out_len: int, scale: float, kernel: Kernel = "bicubic", sigma: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(out_len, P)`` and weights ``(out_len, P)`` resampling one axis.

    A port of MATLAB's ``contributions`` (see :func:`_raw_taps`); out-of-range indices are
    mirrored symmetrically.
    """
    idx, w = _raw_taps(in_len, out_len, scale, kernel, sigma)
    idx = _mirror(idx, in_len)
    keep = np.any(w != 0, axis=0)
    return np.ascontiguousarray(idx[:, keep]), np.ascontiguousarray(w[:, keep])


# Process-wide on purpose: a pure function of its arguments (sizes, kernel, device, dtype),
# bounded (a 2560 x 1280 matrix is 13 MB: keep few), and each front end runs one series per
# worker process, so what it holds is that worker's.
@lru_cache(maxsize=32)
def _matrix_on(
    in_len: int,
    out_len: int,
    scale: float,
    kernel: Kernel,
    sigma: float,
    device: str,
    dtype: torch.dtype,
) -> torch.Tensor:
    """The taps as a dense (out_len, in_len) matrix: one BLAS product per axis beats gathers.

    Built outside inference mode even when first asked for inside it: the cached matrix is
    shared with training, where autograd must be able to save it for the backward pass.
    """
    idx, w = taps(in_len, out_len, scale, kernel, sigma)
    with torch.inference_mode(False):
        mat = torch.zeros(out_len, in_len, dtype=torch.float64)
        mat.scatter_add_(1, torch.from_numpy(idx), torch.from_numpy(w))
        return mat.to(device=device, dtype=dtype)


@lru_cache(maxsize=64)
def _polyphase(
    in_len: int, out_len: int, scale: float, kernel: Kernel, sigma: float
) -> tuple[np.ndarray, np.ndarray, int] | None:
    """The taps as a short filter, where an integer factor makes them periodic; else None.

    Upscaling by ``s``: output ``j * s + r`` is phase ``r`` of a window starting at input
    ``j``; downscaling by ``s``: output ``j`` is the one phase of a window starting at
    ``j * s``. Returns the padded input's indices (mirrored, length ``L``), the weights
    ``(phases, K)`` and the window step: the same taps as :func:`taps`, so the same result
    up to float rounding, for ``K`` (4 to 10) multiply-adds per output instead of ``in_len``.
    """
    if scale >= 1:
        phases, step = round(scale), 1
        if abs(scale - phases) > 1e-9 or out_len != in_len * phases:
            return None
    else:
        phases, step = 1, round(1.0 / scale)
        if abs(1.0 / scale - step) > 1e-9 or out_len != math.ceil(in_len / step):
            return None
    idx, w = _raw_taps(in_len, out_len, scale, kernel, sigma)
    n_j, p = out_len // phases, idx.shape[1]
    offset = idx[:, 0].reshape(n_j, phases) - (np.arange(n_j) * step)[:, None]
    weights = w.reshape(n_j, phases, p)
    if (offset != offset[0]).any() or not np.allclose(weights, weights[0], rtol=0, atol=1e-12):
        return None
    c = offset[0] - offset[0].min()
    full = np.zeros((phases, p + int(c.max())))
    for r in range(phases):
        full[r, c[r] : c[r] + p] = weights[0, r]
    nz = np.flatnonzero(np.any(full != 0, axis=0))
    first, last = int(nz[0]), int(nz[-1]) + 1
    full = full[:, first:last]
    start = int(offset[0].min()) + first
    positions = start + np.arange(step * (n_j - 1) + full.shape[1])
    return _mirror(positions, in_len), full, step


@lru_cache(maxsize=64)
def _filter_on(
    in_len: int,
    out_len: int,
    scale: float,
    kernel: Kernel,
    sigma: float,
    device: str,
    dtype: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor, int] | None:
    """:func:`_polyphase` as tensors on ``device`` (built outside inference mode, as
    :func:`_matrix_on`)."""
    pp = _polyphase(in_len, out_len, scale, kernel, sigma)
    if pp is None:
        return None
    pad, weights, step = pp
    with torch.inference_mode(False):
        return (
            torch.from_numpy(pad).to(device),
            torch.from_numpy(weights).to(device=device, dtype=dtype),
            step,
        )


def _filter_axis(
    x: torch.Tensor, dim: int, filt: tuple[torch.Tensor, torch.Tensor, int]
) -> torch.Tensor:
    """Apply a :func:`_filter_on` filter along ``dim``: mirror-pad by a gather, then one
    strided convolution with a ``K``-tap kernel per phase, the phases interleaved."""
    pad, weights, step = filt
    phases, k = weights.shape
    xp = x.index_select(dim, pad)
    lead, (h, w) = xp.shape[:-2], xp.shape[-2:]
    xp = xp.reshape(-1, 1, h, w)
    if dim == -1:
        y = nnf.conv2d(xp, weights.view(phases, 1, 1, k), stride=(1, step))
        if phases > 1:  # (B, r, H, j) -> (B, H, j, r) -> output column j * s + r
            y = y.permute(0, 2, 3, 1)
        y = y.reshape(*lead, y.shape[-3] if phases > 1 else y.shape[-2], -1)
    else:
        y = nnf.conv2d(xp, weights.view(phases, 1, k, 1), stride=(step, 1))
        if phases > 1:  # (B, r, j, W) -> (B, j, r, W) -> output row j * s + r
            y = y.permute(0, 2, 1, 3)
        y = y.reshape(*lead, -1, y.shape[-1])
    return y


def _resample_axis(
    x: torch.Tensor,
    dim: int,
    out_len: int,
    scale: float,
    kernel: Kernel,
    sigma: float = 0.0,
    *,
    separable: bool | None = None,
) -> torch.Tensor:
    """Resample ``x`` along ``dim`` (-1 or -2) to ``out_len`` pixels.

    ``separable``: short filters (:func:`_polyphase`) where the factor is an integer, instead
    of the dense matrix. None: everywhere but on the CPU, where the dense BLAS product is
    fast enough and keeps the CPU's pixels what they were.
    """
    in_len = x.shape[dim]
    dtype = x.dtype if x.dtype.is_floating_point else torch.float32
    if separable is None:
        separable = x.device.type != "cpu"
    if separable:
        filt = _filter_on(in_len, out_len, float(scale), kernel, float(sigma), str(x.device), dtype)
        if filt is not None:
            return _filter_axis(x.to(dtype), dim, filt)
    mat = _matrix_on(in_len, out_len, float(scale), kernel, float(sigma), str(x.device), dtype)
    if dim == -1:
        return torch.matmul(x.to(dtype), mat.T)
    return torch.matmul(mat, x.to(dtype))


def _check(x: torch.Tensor) -> None:
    if x.dim() != 4:
        raise ValueError(f"expected an (N, C, H, W) tensor, got shape {tuple(x.shape)}")


def upscale_bicubic(x: torch.Tensor, scale: int) -> torch.Tensor:
    """MATLAB bicubic upscaling by an integer factor: (N, C, h, w) -> (N, C, h*s, w*s)."""
    _check(x)
    if scale == 1:
        return x.clone()
    h, w = x.shape[-2:]
    y = _resample_axis(x, -2, h * scale, float(scale), "bicubic")
    return _resample_axis(y, -1, w * scale, float(scale), "bicubic")


def resize_bicubic(x: torch.Tensor, out_hw: tuple[int, int]) -> torch.Tensor:
    """Antialiased MATLAB bicubic resize to any size (scale per axis = out / in)."""
    _check(x)
    h, w = x.shape[-2:]
    oh, ow = int(out_hw[0]), int(out_hw[1])
    # shrink first: the second pass then runs on fewer pixels
    order = sorted([(oh / h, -2, oh), (ow / w, -1, ow)])
    for sc, dim, n in order:
        if x.shape[dim] != n:
            x = _resample_axis(x, dim, n, sc, "bicubic")
    return x


def downscale(x: torch.Tensor, scale: int, config: EngineConfig) -> torch.Tensor:
    """The degradation model: (N, C, H, W) -> (N, C, ceil(H/s), ceil(W/s)).

    ``config.kernel == "bicubic"``: antialiased ``imresize(x, 1/s)``. ``"gaussian"``: Gaussian
    PSF (``psf_sigma_axial`` along rows/H, ``psf_sigma_lateral`` along columns/W, in HR pixels)
    sampled at the LR pixel centres ``(i + 0.5) * s - 0.5``, the grid of :func:`upscale_bicubic`.
    """
    _check(x)
    h, w = x.shape[-2:]
    oh, ow = math.ceil(h / scale), math.ceil(w / scale)
    inv = 1.0 / scale
    if config.kernel == "bicubic":
        y = _resample_axis(x, -2, oh, inv, "bicubic")
        return _resample_axis(y, -1, ow, inv, "bicubic")
    if config.kernel == "gaussian":
        y = _resample_axis(x, -2, oh, inv, "gaussian", config.psf_sigma_axial)
        return _resample_axis(y, -1, ow, inv, "gaussian", config.psf_sigma_lateral)
    raise ValueError(f"unknown degradation kernel {config.kernel!r}")


def upscale_np(
    img: np.ndarray,
    scale: int,
    mode: Literal["bicubic", "nearest"] = "bicubic",
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """Upscale a numpy image (H, W) or (H, W, C) by an integer factor.

    ``"nearest"`` replicates each pixel ``s x s`` times; ``"bicubic"`` is :func:`upscale_bicubic`
    clipped to each channel's input range (bicubic overshoots at edges), computed on
    ``device`` (a colour frame's chroma on the GPU rather than a slow CPU pass per frame).
    Returns float32.
    """
    arr = np.asarray(img, dtype=np.float32)
    if arr.ndim not in (2, 3):
        raise ValueError(f"expected an (H, W) or (H, W, C) image, got shape {arr.shape}")
    if mode == "nearest":
        return np.repeat(np.repeat(arr, scale, axis=0), scale, axis=1)
    if mode != "bicubic":
        raise ValueError(f"unknown upscaling mode {mode!r} (expected 'bicubic' or 'nearest')")
    planes = arr[None] if arr.ndim == 2 else np.moveaxis(arr, -1, 0)
    device = torch.device(device)
    t = torch.from_numpy(np.ascontiguousarray(planes))[None].to(device)
    with repeatable(device), torch.inference_mode():
        up = upscale_bicubic(t, scale)[0]
        lo = t.amin(dim=(-2, -1), keepdim=True)[0]
        hi = t.amax(dim=(-2, -1), keepdim=True)[0]
        out = torch.maximum(torch.minimum(up, hi), lo).cpu().numpy()
    return out[0] if arr.ndim == 2 else np.ascontiguousarray(np.moveaxis(out, 0, -1))
