"""PNG figures of an evaluation (matplotlib, Agg): zoomed comparisons and cine flicker.

:func:`comparison_figure` is the paper's Fig. 5-7 layout: the whole ground truth with the zoom
box, then the same zoomed crop of the ground truth and of every method (PSNR / SSIM of the whole
tissue region in the titles); below, the low-resolution input and the absolute difference to the
ground truth of every method on one shared colour scale, so a brighter map is a worse method.
:func:`cine_figure` plots the frame-to-frame change of a super-resolved cine against the source's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from scipy import ndimage  # noqa: E402

__all__ = ["zoom_box", "comparison_figure", "cine_figure"]

_PANEL_IN = 2.6
_DPI = 110


def zoom_box(reference: np.ndarray, size: int) -> tuple[int, int, int]:
    """(y0, x0, side) of the square window with the most edge energy (Sobel), for the zoom.

    Picking the busiest texture shows where methods differ; a flat patch would show nothing.
    Windows holding saturated pixels (burnt-in text and graphics are drawn at full white) or
    black background (outside the sector) are avoided when any other window is left.
    """
    h, w = reference.shape
    side = int(min(size, h, w))
    grad = np.hypot(ndimage.sobel(reference, 0), ndimage.sobel(reference, 1))
    half = side // 2
    inner = (slice(half, h - side + half + 1), slice(half, w - side + half + 1))

    def window_mean(a: np.ndarray) -> np.ndarray:
        return ndimage.uniform_filter(a.astype(np.float64), side, mode="constant")[inner]

    energy = window_mean(grad)
    no_text = window_mean(reference >= 0.97) == 0
    dark = window_mean(reference < 0.02)
    for ok in (no_text & (dark < 0.05), no_text & (dark < 0.5)):  # inside tissue, then less so
        if ok.any():
            energy = np.where(ok, energy, -1.0)
            break
    y0, x0 = np.unravel_index(int(np.argmax(energy)), energy.shape)
    return int(y0), int(x0), side


def _clean(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


def comparison_figure(
    path: Path,
    reference: np.ndarray,
    low_res: np.ndarray,
    results: Mapping[str, np.ndarray],
    scores: Mapping[str, Mapping[str, float]],
    *,
    title: str,
    scale: int,
    zoom: int = 96,
) -> Path:
    """Write the side-by-side zoom + difference-map figure for one image at one scale."""
    y0, x0, side = zoom_box(reference, zoom)
    sl = (slice(y0, y0 + side), slice(x0, x0 + side))
    names = list(results)
    diffs = {n: np.abs(results[n][sl].astype(np.float32) - reference[sl]) for n in names}
    vmax = max(float(np.percentile(d, 99.5)) for d in diffs.values()) if diffs else 1.0
    vmax = max(vmax, 1e-3)

    ncols = 2 + len(names)
    fig, axes = plt.subplots(
        2,
        ncols,
        figsize=(_PANEL_IN * ncols, _PANEL_IN * 2 + 0.5),
        dpi=_DPI,
        squeeze=False,
        layout="constrained",
    )
    grey = {"cmap": "gray", "vmin": 0.0, "vmax": 1.0, "interpolation": "nearest"}

    ax = axes[0, 0]
    ax.imshow(reference, **grey)
    ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), side, side, fill=False, ec="lime", lw=1.2))
    ax.set_title(f"ground truth {reference.shape[1]}x{reference.shape[0]}", fontsize=8)
    axes[0, 1].imshow(reference[sl], **grey)
    axes[0, 1].set_title("ground truth (zoom)", fontsize=8)
    for i, n in enumerate(names):
        s = scores.get(n, {})
        p, q = s.get("psnr", float("nan")), s.get("ssim", float("nan"))
        axes[0, 2 + i].imshow(np.clip(results[n][sl], 0, 1), **grey)
        axes[0, 2 + i].set_title(f"{n}\nPSNR {p:.2f} dB / SSIM {q:.3f}", fontsize=8)

    lr_sl = (slice(y0 // scale, (y0 + side) // scale), slice(x0 // scale, (x0 + side) // scale))
    axes[1, 0].imshow(low_res, **grey)
    lh, lw = low_res.shape
    axes[1, 0].set_title(f"input (x{scale} smaller) {lw}x{lh}", fontsize=8)
    axes[1, 1].imshow(np.kron(low_res[lr_sl], np.ones((scale, scale))), **grey)
    axes[1, 1].set_title("input (zoom, nearest)", fontsize=8)
    im = None
    for i, n in enumerate(names):
        im = axes[1, 2 + i].imshow(
            diffs[n], cmap="magma", vmin=0, vmax=vmax, interpolation="nearest"
        )
        axes[1, 2 + i].set_title(f"|{n} - truth|  mean {diffs[n].mean():.4f}", fontsize=8)
    for ax in axes.flat:
        _clean(ax)
    if im is not None:
        fig.colorbar(im, ax=list(axes[1, 2:]), shrink=0.9, label="abs. difference")
    fig.suptitle(title, fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def cine_figure(
    path: Path,
    source: Sequence[np.ndarray],
    results: Mapping[str, Sequence[np.ndarray]],
    *,
    title: str,
) -> Path:
    """Frame-to-frame mean absolute difference over a cine, source vs every method, plus maps.

    The maps show |frame t+1 - frame t| of the source and of each method at the pair where the
    last method's change departs most from the source's: added flicker shows up as texture the
    source does not have.
    """
    src = np.stack(source).astype(np.float32)
    src_d = np.abs(np.diff(src, axis=0))
    curves = {"source": src_d.mean(axis=(1, 2))}
    dmaps = {}
    for n, frames in results.items():
        arr = np.stack(frames).astype(np.float32)
        d = np.abs(np.diff(arr, axis=0))
        curves[n] = d.mean(axis=(1, 2))
        dmaps[n] = d
    names = list(results)
    pick = 0
    if names:
        excess = np.abs(dmaps[names[-1]] - src_d).mean(axis=(1, 2))
        pick = int(np.argmax(excess))

    ncols = max(3, 1 + len(names))
    size = (_PANEL_IN * ncols, _PANEL_IN * 2 + 0.6)
    fig = plt.figure(figsize=size, dpi=_DPI, layout="constrained")
    grid = fig.add_gridspec(2, ncols, height_ratios=[1, 1.2])
    ax = fig.add_subplot(grid[0, :])
    for n, c in curves.items():
        style = {"color": "black", "lw": 2} if n == "source" else {"lw": 1.2}
        ax.plot(np.arange(1, len(c) + 1), c, label=f"{n} (mean {c.mean():.4f})", **style)
    ax.axvline(pick + 1, color="grey", ls=":", lw=1)
    ax.set_xlabel("frame pair (t, t+1)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("mean |frame t+1 - frame t|")
    ax.legend(fontsize=7, loc="best")
    ax.grid(alpha=0.3)

    maps = [("source", src_d[pick])] + [(n, dmaps[n][pick]) for n in names]
    vmax = max(float(np.percentile(m, 99.5)) for _, m in maps)
    vmax = max(vmax, 1e-3)
    for i, (n, m) in enumerate(maps[:ncols]):
        a = fig.add_subplot(grid[1, i])
        a.imshow(m, cmap="magma", vmin=0, vmax=vmax, interpolation="nearest")
        a.set_title(f"{n}: |f{pick + 2} - f{pick + 1}|", fontsize=8)
        _clean(a)
    fig.suptitle(title, fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
