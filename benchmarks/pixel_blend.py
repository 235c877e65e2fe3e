"""Per-pixel blends of the model and ``ibp``, studied offline on saved arrays.

The shipped output is ``w * model + (1 - w) * ibp`` with one ``w`` (0.5) for the whole frame.
On tissue the even blend beats the model alone; on burned-in text, menus and sector edges the
model alone is better (the 120-frame cine lost 0.21 dB on whole frames to the blend). This
script scores weights that vary per pixel, on arrays saved by ``tissue_crops.py --save`` and
by ``gen-cine`` here (whole frames of the SonoSite cine, as ``process`` sees them), without
fitting anything again.

Usage::

    python benchmarks/tissue_crops.py --set A --scales 2,4 --threads 1 --save /tmp/pb
    python benchmarks/pixel_blend.py gen-cine --out /tmp/pb --frames 12
    python benchmarks/pixel_blend.py eval /tmp/pb --out pixel-blend.json
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))

from record import provenance, results_path, write_json  # noqa: E402

from dicom_sr.config import load_pipeline  # noqa: E402
from dicom_sr.engine import fit, upscale  # noqa: E402
from dicom_sr.evaluate.metrics import psnr  # noqa: E402
from dicom_sr.evaluate.protocol import shave  # noqa: E402


def gen_cine(out: Path, frames: int, threads: int) -> None:
    """Whole luminance frames of the SonoSite cine, degraded x2 and rounded to 8 bits as
    ``cine_process.py`` writes them; one model for the cine as ``process`` fits it."""
    from run import CINE_120, _testfile, degrade, read_frames
    from tissue_crops import guard_overruled

    from dicom_sr.engine.api import fit_cine

    hr = read_frames(_testfile(CINE_120), 120)
    lrs = [np.rint(degrade(f, 2) * 255).astype(np.float32) / 255 for f in hr]
    engine = load_pipeline(None, {"engine.device": "cpu", "engine.threads": threads}).engine
    cfg = engine.model_copy(update={"scale": 2, "ensemble": 2})
    kept = guard_overruled(fit_cine(lrs, cfg))
    ibp_cfg = cfg.model_copy(update={"method": "ibp"})
    ibp_model = fit([], ibp_cfg)
    out.mkdir(parents=True, exist_ok=True)
    for i in range(0, 120, 120 // frames):
        alone = upscale(lrs[i], kept, cfg.model_copy(update={"model_weight": 1.0}))
        ibp = upscale(lrs[i], ibp_model, ibp_cfg)
        np.savez_compressed(out / f"cine{i:03d}-x2.npz", hr=hr[i], lr=lrs[i], ibp=ibp, alone=alone)
        print(f"frame {i}", flush=True)


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of an (N, C, H, W) tensor, reflect-padded, radius 3 sigma."""
    radius = max(1, int(3.0 * sigma + 0.5))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    n, c, h, w = x.shape
    y = x.reshape(n * c, 1, h, w)
    pad_h, pad_w = min(radius, h - 1), min(radius, w - 1)
    y = F.pad(y, (pad_w, pad_w, pad_h, pad_h), mode="reflect")
    y = F.conv2d(y, k[radius - pad_h : radius + pad_h + 1].view(1, 1, -1, 1))
    y = F.conv2d(y, k[radius - pad_w : radius + pad_w + 1].view(1, 1, 1, -1))
    return y.reshape(n, c, h, w)


def detail_weight(
    sr: torch.Tensor, ibp: torch.Tensor, tau: float, sigma: float, floor: float
) -> torch.Tensor:
    """A per-pixel model weight in [floor, 1] from the local energy of ``sr - ibp``.

    ``e`` is the Gaussian-weighted mean (``sigma`` px) of the squared difference over the
    pixel's neighbourhood and channels; the weight is ``floor + (1 - floor) * e / (e + tau**2)``:
    where the model departs from ``ibp`` by much more than ``tau`` (the step edges of text,
    calipers, sector borders) it is kept, where it departs by little (speckle) it is shrunk
    towards ``ibp``, as a Wiener filter shrinks a weak signal. Returns (N, 1, H, W).
    """
    d = (sr - ibp).float()
    e = gaussian_blur(d.mul(d).mean(dim=1, keepdim=True), sigma)
    return e.div(e + tau * tau).mul(1.0 - floor).add(floor)


Rule = Callable[[dict], np.ndarray]


def const(w: float) -> Rule:
    return lambda a: w * a["alone"] + (1 - w) * a["ibp"]


def detail(tau: float, sigma: float, floor: float) -> Rule:
    def rule(a: dict) -> np.ndarray:
        model = torch.from_numpy(a["alone"]).float()
        ibp = torch.from_numpy(a["ibp"]).float()
        w = detail_weight(model[None, None], ibp[None, None], tau, sigma, floor)[0, 0].numpy()
        return w * a["alone"] + (1 - w) * a["ibp"]

    return rule


def _psnr(hr: np.ndarray, sr: np.ndarray, scale: int) -> float:
    """PSNR as ``tissue_crops.py`` scores it: a ``scale``-pixel border left out."""
    return psnr(shave(hr, scale), shave(np.clip(sr, 0.0, 1.0), scale))


def evaluate(folders: list[Path], out: str | None = None, argv: list[str] | None = None) -> dict:
    rules: dict[str, Rule] = {"w=1": const(1.0), "w=0.5": const(0.5)}
    for tau in (0.02, 0.04, 0.08):
        for sigma in (1.0, 2.0):
            rules[f"detail tau={tau} s={sigma}"] = detail(tau, sigma, 0.5)
    groups: dict[str, dict[str, list[float]]] = {}
    for path in sorted(p for f in folders for p in f.glob("*.npz")):
        a = dict(np.load(path))
        scale = int(path.stem.rsplit("-x", 1)[1])
        group = ("cine" if path.stem.startswith("cine") else "crops") + f" x{scale}"
        base = _psnr(a["hr"], a["ibp"], scale)
        row = {}
        for name, rule in rules.items():
            gain = _psnr(a["hr"], rule(a), scale) - base
            groups.setdefault(group, {}).setdefault(name, []).append(gain)
            row[name] = round(gain, 3)
        print(path.stem, json.dumps(row), flush=True)
    summary = {
        g: {n: (round(float(np.mean(v)), 3), round(float(np.min(v)), 3)) for n, v in r.items()}
        for g, r in groups.items()
    }
    for g, r in summary.items():
        print(f"-- {g} ({len(next(iter(groups[g].values())))} items): mean / worst")
        for n, (mean, worst) in r.items():
            print(f"   {n:28s} {mean:+.3f} / {worst:+.3f}")
    if out:  # scored offline on saved arrays: no pipeline runs here
        record = {"folders": [str(f) for f in folders], "mean_worst_db": summary}
        write_json(results_path(__file__, out), record, provenance(__file__, None, argv=argv))
    return summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("gen-cine")
    g.add_argument("--out", type=Path, required=True)
    g.add_argument("--frames", type=int, default=12)
    g.add_argument("--threads", type=int, default=1)
    e = sub.add_parser("eval")
    e.add_argument("folders", type=Path, nargs="+")
    e.add_argument("--out", default=None, help="JSON summary (a bare name goes to results/)")
    args = ap.parse_args(argv)
    if args.cmd == "gen-cine":
        gen_cine(args.out, args.frames, args.threads)
    else:
        evaluate(args.folders, args.out, argv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
