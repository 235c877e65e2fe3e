"""Which way of training gains at x4? Real tissue crops, each strategy against ``ibp``.

Crops as in ``guard_eval.py`` (the ``dicom-sr evaluate`` protocol: largest tissue region, first
frame, at most ``--max-side`` px), degraded by antialiased bicubic x4. Strategies:

``default``
    one x4 model as shipped: its output blended with ``ibp`` (``engine.model_weight``), the
    guard judging the blend.
``direct``
    one x4 model alone (``model_weight`` 1, guard on).
``gradual``
    ZSSR's gradual SR: a x2 model on the LR crop, its output the input of a second x2 model
    warm-started from the first (fathers: that output and the LR crop), then back projection of
    the x4 result onto the LR crop.
``fathers``
    direct, with twice the downscaled fathers (``father_scales`` 8).
``batch``
    direct, with a batch of 4 crops per iteration instead of 2.
``raw``
    the model's own output whatever the guard says (margin -100 dB), to blend afterwards.
``noadv``
    raw, without the adversarial loss (L1 pixel and cycle losses only).
``zssr``
    raw, with ZSSR (one generator, L1 only) instead of the CycleGAN.

Prints one JSON line per crop and strategy (PSNR of ibp, of the strategy, the gain and the
guard's decision), then the mean gain and the worst crop per strategy.

Usage::

    python benchmarks/x4_strategies.py --strategies direct,gradual --out x4.jsonl  # -> results/
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from record import append_jsonl, provenance, results_path  # noqa: E402  (benchmarks/ on sys.path)

from dicom_sr.config import EngineConfig, PipelineConfig  # noqa: E402
from dicom_sr.engine import fit, upscale  # noqa: E402
from dicom_sr.evaluate.protocol import Degradation, load_images, score  # noqa: E402

FILES = (
    "gdcm-US-ALOKA-16.dcm",
    "JPGLosslessP14SV1_1s_1f_8b.dcm",
    "OBXXXX1A.dcm",
    "US1_UNCR.dcm",
    "examples_ybr_color.dcm",
    "color3d_jpeg_baseline.dcm",
)


#: each strategy's engine settings: the model alone (model_weight 1; its blend with ibp is
#: computed from the saved arrays), except "default", as shipped: the blend, judged by the guard
EXTRA = {
    "default": {},
    "direct": {"model_weight": 1.0},
    "fathers": {"model_weight": 1.0, "father_scales": 8},
    "batch": {"model_weight": 1.0, "batch_size": 4},
    "raw": {"model_weight": 1.0, "guard_margin_db": -100.0},
    "noadv": {"model_weight": 1.0, "guard_margin_db": -100.0, "losses": {"adversarial": 0.0}},
    "zssr": {"model_weight": 1.0, "guard_margin_db": -100.0, "method": "zssr"},
}


def strategy(name: str, lr: np.ndarray, base: dict) -> tuple[np.ndarray, str]:
    """The x4 output of ``name`` on ``lr``, and what its guard decided."""
    if name in EXTRA:
        cfg = EngineConfig(scale=4, **base, **EXTRA[name])
        model = fit([lr], cfg)
        return upscale(lr, model, cfg), model.info["guard"]["decision"]
    if name == "gradual":
        return gradual(lr, base)
    raise ValueError(name)


def gradual(lr: np.ndarray, base: dict) -> tuple[np.ndarray, str]:
    """x2 model, its output into a warm-started second x2 model, back projection at x4."""
    import torch

    from dicom_sr.engine.infer import back_project

    cfg2 = EngineConfig(scale=2, **base)
    first = fit([lr], cfg2)
    mid = upscale(lr, first, cfg2)
    second = fit([mid, lr], cfg2, init=first)
    out = upscale(mid, second, cfg2)
    cfg4 = EngineConfig(scale=4, **base)
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))[None, None]  # noqa: E731
    out = back_project(t(out), t(lr), 4, cfg4, cfg4.back_projection_iters)[0, 0].numpy()
    decisions = f"{first.info['guard']['decision']}/{second.info['guard']['decision']}"
    return out, decisions


def run(args) -> list[dict]:
    from pydicom.data import get_testdata_file

    paths = [Path(get_testdata_file(n)) for n in args.files.split(",")]
    images, _ = load_images(paths, scales=[4], margin=8)
    base = {"iterations": args.iterations, "device": "cpu", "threads": args.threads}
    rows = []
    for img in images:
        hr = img.hr[: args.max_side, : args.max_side]
        lr = Degradation("bicubic").apply(hr, 4)
        hr = hr[: lr.shape[0] * 4, : lr.shape[1] * 4]
        ibp_cfg = EngineConfig(method="ibp", scale=4, **base)
        ibp = score(hr, upscale(lr, fit([], ibp_cfg), ibp_cfg), 4)["psnr"]
        for name in args.strategies.split(","):
            t0 = time.perf_counter()
            sr, decision = strategy(name, lr, base)
            seconds = time.perf_counter() - t0
            psnr = score(hr, sr, 4)["psnr"]
            row = {
                "image": img.id,
                "hw": list(hr.shape),
                "strategy": name,
                "ibp": round(ibp, 3),
                "psnr": round(psnr, 3),
                "gain": round(psnr - ibp, 3),
                "decision": decision,
                "seconds": round(seconds, 1),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
            if args.save:
                args.save.mkdir(parents=True, exist_ok=True)
                stem = img.id.replace("#", "_")
                np.savez_compressed(args.save / f"{stem}-{name}.npz", hr=hr, lr=lr, sr=sr)
            if args.out:  # gradual: the x2 models' configuration
                engine = EngineConfig(scale=2 if name == "gradual" else 4, **base,
                                      **EXTRA.get(name, {}))  # fmt: skip
                prov = provenance(__file__, PipelineConfig(engine=engine), device="cpu")
                append_jsonl(results_path(__file__, args.out), row, prov)
    return rows


def summary(rows: list[dict]) -> dict:
    out = {}
    for name in dict.fromkeys(r["strategy"] for r in rows):
        gains = [r["gain"] for r in rows if r["strategy"] == name]
        out[name] = {"mean_gain": round(float(np.mean(gains)), 3), "worst": min(gains)}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", default=",".join(FILES))
    ap.add_argument("--strategies", default="direct,gradual")
    ap.add_argument("--iterations", type=int, default=300)
    ap.add_argument("--max-side", type=int, default=320, help="crop the HR image to this")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--out", default=None, help="JSONL file (a bare name goes to results/)")
    ap.add_argument("--save", type=Path, default=None, help="folder for the HR, LR and SR arrays")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    print(json.dumps(summary(run(args)), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
