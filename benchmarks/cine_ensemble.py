"""How much of the self-ensemble does a cine with a shared model need?

The 120-frame SonoSite cine ``color3d_jpeg_baseline.dcm``, every frame degraded by antialiased
bicubic at x2; one CycleGAN trained as the pipeline trains a cine (``fit_cine``: 8 frames
spread over the loop, the cine budget). Every ``--step``-th frame is then upscaled with each
ensemble size and with ``ibp``; this reports PSNR against the original frames, the temporal
scores of :func:`dicom_sr.evaluate.protocol.cine_scores` and the inference time per frame.

Usage::

    python benchmarks/cine_ensemble.py --step 5 --ensembles 8,2,1 --out ensembles.json
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
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))

from record import provenance, results_path, write_json  # noqa: E402
from run import CINE_120, _testfile, degrade, read_frames  # noqa: E402

from dicom_sr.config import EngineConfig, PipelineConfig  # noqa: E402
from dicom_sr.engine import fit, fit_cine, upscale  # noqa: E402
from dicom_sr.evaluate.protocol import cine_scores, score  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--step", type=int, default=5, help="upscale every step-th frame")
    ap.add_argument("--ensembles", default="8,2,1")
    ap.add_argument("--out", default=None, help="JSON file (a bare name goes to results/)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    hrs = read_frames(_testfile(CINE_120), 120)
    lrs = [degrade(f, 2) for f in hrs]
    cfg = EngineConfig(scale=2, device="cpu")
    t0 = time.perf_counter()
    model = fit_cine(lrs, cfg)
    train_s = time.perf_counter() - t0
    picks = list(range(0, len(lrs), args.step))
    hr_sub = [hrs[i] for i in picks]
    result = {"train_seconds": round(train_s, 1), "frames": picks}
    ibp_cfg = cfg.model_copy(update={"method": "ibp"})
    ibp = [upscale(lrs[i], fit([], ibp_cfg), ibp_cfg) for i in picks]
    rows = {
        "ibp": {
            "psnr": float(
                np.mean([score(h, s, 2)["psnr"] for h, s in zip(hr_sub, ibp, strict=True)])
            )
        }
    }
    for size in [int(e) for e in args.ensembles.split(",")]:
        c = cfg.model_copy(update={"ensemble": size})
        t0 = time.perf_counter()
        srs = [upscale(lrs[i], model, c) for i in picks]
        per_frame = (time.perf_counter() - t0) / len(picks)
        rows[f"ensemble {size}"] = {
            "psnr": float(
                np.mean([score(h, s, 2)["psnr"] for h, s in zip(hr_sub, srs, strict=True)])
            ),
            "seconds_per_frame": round(per_frame, 2),
            **{k: v for k, v in cine_scores(hr_sub, srs, 2).items() if k != "psnr_mean"},
        }
        print(json.dumps({size: rows[f"ensemble {size}"]}), flush=True)
    result["rows"] = rows
    print(json.dumps(result, indent=1, default=str))
    if args.out:
        prov = provenance(__file__, PipelineConfig(engine=cfg), device="cpu", argv=argv)
        write_json(results_path(__file__, args.out), result, prov)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
