"""How well does the guard's held-aside score predict the true gain over ibp?

Real tissue crops (one per pydicom-data ultrasound file, the ``dicom-sr evaluate`` protocol:
largest tissue region, margin, first frame) are degraded by the configured kernel; the method
is fitted on the LR crop with the guard on. For each crop this records the guard's predicted
gain (``model_db - ibp_db`` on its held-aside pairs), the true gain of the model's own output
(guard decision ignored) over ``ibp`` against the HR crop, the guard's decision, and what the
output with the guard is. Prints the Spearman rank correlation and the wrong decisions.

Usage::

    python benchmarks/guard_eval.py --scales 2,4 --iterations 300 --out guard.json
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

from record import provenance, results_path, write_json  # noqa: E402  (benchmarks/ on sys.path)

from dicom_sr.config import EngineConfig, PipelineConfig  # noqa: E402
from dicom_sr.engine import fit, upscale  # noqa: E402
from dicom_sr.engine.api import TrainedModel  # noqa: E402
from dicom_sr.evaluate.protocol import Degradation, load_images, score  # noqa: E402

#: one file per scanner/encoding, the distinct tissue images of pydicom-data
FILES = (
    "US1_UNCR.dcm",
    "JPGLosslessP14SV1_1s_1f_8b.dcm",
    "gdcm-US-ALOKA-16.dcm",
    "examples_ybr_color.dcm",
    "color3d_jpeg_baseline.dcm",
    "OBXXXX1A.dcm",
    "examples_palette.dcm",
    "examples_rgb_color.dcm",
)


def spearman(a: list[float], b: list[float]) -> float:
    """Spearman's rank correlation (no ties expected in PSNR gains)."""
    ra = np.argsort(np.argsort(a)).astype(float)
    rb = np.argsort(np.argsort(b)).astype(float)
    return float(np.corrcoef(ra, rb)[0, 1])


def run(args) -> dict:
    from pydicom.data import get_testdata_file

    paths = [Path(get_testdata_file(n)) for n in args.files.split(",")]
    scales = [int(s) for s in args.scales.split(",")]
    images, _ = load_images(paths, scales=scales, margin=8)
    rows = []
    for scale in scales:
        base = dict(scale=scale, iterations=args.iterations, device="cpu", threads=args.threads)
        cfg = EngineConfig(method=args.method, guard_margin_db=args.margin, **base)
        ibp_cfg = EngineConfig(method="ibp", **base)
        for img in images:
            hr = img.hr[: args.max_side, : args.max_side]
            lr = Degradation("bicubic").apply(hr, scale)
            hr = hr[: lr.shape[0] * scale, : lr.shape[1] * scale]
            t0 = time.perf_counter()
            model = fit([lr], cfg)
            seconds = time.perf_counter() - t0
            raw = TrainedModel(model.method, scale, model.generator_state, {})
            model_psnr = score(hr, upscale(lr, raw, cfg), scale)["psnr"]
            ibp_psnr = score(hr, upscale(lr, fit([], ibp_cfg), ibp_cfg), scale)["psnr"]
            g = model.info["guard"]
            out_psnr = ibp_psnr if g["decision"] == "ibp" else model_psnr
            row = {
                "image": img.id,
                "scale": scale,
                "hw": list(hr.shape),
                "ibp": round(ibp_psnr, 3),
                "model": round(model_psnr, 3),
                "true_gain": round(model_psnr - ibp_psnr, 3),
                "guard_gain": None
                if g["model_db"] is None
                else round(g["model_db"] - g["ibp_db"], 3),
                "pairs": g["pairs"],
                "decision": g["decision"],
                "output": round(out_psnr, 3),
                "fit_seconds": round(seconds, 1),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    judged = [r for r in rows if r["guard_gain"] is not None]
    summary = {}
    if len(judged) > 2:
        summary["spearman"] = spearman(
            [r["guard_gain"] for r in judged], [r["true_gain"] for r in judged]
        )
    wrong = [
        r["image"] + f" x{r['scale']}"
        for r in judged
        if (r["decision"] == "model") != (r["true_gain"] >= 0)
    ]
    summary["wrong_decisions"] = wrong
    summary["judged"] = len(judged)
    return {"settings": vars(args), "rows": rows, "summary": summary}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", default=",".join(FILES))
    ap.add_argument("--scales", default="2,4")
    ap.add_argument("--method", default="cyclegan")
    ap.add_argument("--iterations", type=int, default=300)
    ap.add_argument("--margin", type=float, default=0.0)
    ap.add_argument("--max-side", type=int, default=512, help="crop the HR image to this")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--out", default=None, help="JSON file (a bare name goes to results/)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    result = run(args)
    print(json.dumps(result["summary"], indent=1))
    if args.out:  # the configuration at the first scale; each row names its scale
        first = int(args.scales.split(",")[0])
        engine = EngineConfig(method=args.method, guard_margin_db=args.margin, scale=first,
                              iterations=args.iterations)  # fmt: skip
        prov = provenance(__file__, PipelineConfig(engine=engine), device="cpu", argv=argv)
        write_json(results_path(__file__, args.out), result, prov)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
