"""Routes to x4 through an x2 model, on the tissue crops of ``tissue_crops.py``.

For each crop: the crop is degraded x4 (antialiased bicubic) and one x2 model is fitted to the
LR crop with the pipeline (guard on). Then, against ``ibp`` at x4 (gains in dB):

* ``blend+bic``: the model's x2 output blended with ``ibp`` at x2 (the ``auto`` weight), then
  bicubic x2 and back projection onto the LR crop at x4 (what ``engine.model_scale = "auto"``
  ships since pipelines version 7);
* ``alone+bic``: the same from the model's x2 output alone;
* ``blend+G`` / ``alone+G``: the x2 model applied a second time to that x2 output (ZSSR's
  gradual route without a second training), then back projection at x4; ``,w.5``: that,
  blended evenly with ``ibp`` at x4.

Usage::

    python benchmarks/x4_routes.py --set A --out routes.jsonl   # -> results/x4_routes/
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))

from record import append_jsonl, provenance, results_path  # noqa: E402
from tissue_crops import SETS, crops  # noqa: E402

from dicom_sr.config import load_pipeline  # noqa: E402
from dicom_sr.engine import fit, upscale  # noqa: E402
from dicom_sr.engine.infer import back_project, finish_scale  # noqa: E402
from dicom_sr.evaluate.protocol import Degradation, score  # noqa: E402


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))[None, None]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--set", dest="which", choices=sorted(SETS), default="A")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None, help="JSONL file (a bare name goes to results/)")
    args = ap.parse_args(argv)
    config = load_pipeline(None, {"engine.device": "cpu", "engine.threads": args.threads})
    eng = config.engine
    c4, c2 = (eng.model_copy(update={"scale": s}) for s in (4, 2))
    i4 = c4.model_copy(update={"method": "ibp"})
    for name, _scanner, frame, window in crops(args.which):
        hr = frame[window]
        hr = hr[: hr.shape[0] // 4 * 4, : hr.shape[1] // 4 * 4]
        lr = Degradation("bicubic").apply(hr, 4)
        ibp = upscale(lr, fit([], i4), i4)
        base = score(hr, ibp, 4)["psnr"]
        m2 = fit([lr], c2)
        row = {"crop": name, "set": args.which}
        alone_cfg = c2.model_copy(update={"model_weight": 1.0})
        for tag, mid in (("blend", upscale(lr, m2, c2)), ("alone", upscale(lr, m2, alone_cfg))):
            a = finish_scale(_t(mid), _t(lr), c4)[0, 0].numpy()
            row[f"{tag}+bic"] = round(score(hr, a, 4)["psnr"] - base, 3)
            twice = upscale(mid, m2, alone_cfg)
            b = back_project(_t(twice), _t(lr), 4, c4, c4.back_projection_iters)[0, 0].numpy()
            row[f"{tag}+G"] = round(score(hr, b, 4)["psnr"] - base, 3)
            row[f"{tag}+G,w.5"] = round(score(hr, 0.5 * b + 0.5 * ibp, 4)["psnr"] - base, 3)
        print(json.dumps(row), flush=True)
        if args.out:  # the default pipeline at x4 (the x2 model is its model_scale)
            cfg = config.with_overrides({"engine.scale": 4})
            prov = provenance(__file__, cfg, device="cpu", argv=argv)
            append_jsonl(results_path(__file__, args.out), row, prov)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
