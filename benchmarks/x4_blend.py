"""The x4 blend of model and ibp, from the arrays ``x4_strategies.py --save`` wrote.

For each saved crop (HR, LR and the model's own x4 output), ``ibp`` is computed again and the
PSNR gain over it of ``w * model + (1 - w) * ibp`` is printed for several weights ``w``
(``engine.model_weight``), then the mean gain and the worst crop per weight.

Usage::

    python benchmarks/x4_blend.py /tmp/x4/arr --weights 1,0.75,0.5,0.25
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from record import provenance, results_path, write_json  # noqa: E402  (benchmarks/ on sys.path)

from dicom_sr.config import EngineConfig, PipelineConfig  # noqa: E402
from dicom_sr.engine import fit, upscale  # noqa: E402
from dicom_sr.evaluate.protocol import score  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--strategy", default="direct")
    ap.add_argument("--weights", default="1,0.75,0.5,0.25")
    ap.add_argument("--out", default=None, help="JSON summary (a bare name goes to results/)")
    args = ap.parse_args(argv)
    weights = [float(w) for w in args.weights.split(",")]
    cfg = EngineConfig(method="ibp", scale=4, device="cpu")
    gains: dict[float, list[float]] = {w: [] for w in weights}
    rows = []
    for path in sorted(args.folder.glob(f"*-{args.strategy}.npz")):
        d = np.load(path)
        hr, lr, sr = d["hr"], d["lr"], d["sr"]
        ibp = upscale(lr, fit([], cfg), cfg)
        base = score(hr, ibp, 4)["psnr"]
        row = {"crop": path.stem, "hw": list(hr.shape), "ibp": round(base, 3)}
        for w in weights:
            gain = score(hr, w * sr + (1 - w) * ibp, 4)["psnr"] - base
            gains[w].append(gain)
            row[f"w={w}"] = round(gain, 3)
        print(json.dumps(row))
        rows.append(row)
    summary = {
        f"w={w}": {"mean_gain": round(float(np.mean(g)), 3), "worst": round(min(g), 3)}
        for w, g in gains.items()
    }
    print(json.dumps(summary, indent=1))
    if args.out:
        prov = provenance(__file__, PipelineConfig(engine=cfg), device="cpu", argv=argv)
        write_json(results_path(__file__, args.out), {"rows": rows, "summary": summary}, prov)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
