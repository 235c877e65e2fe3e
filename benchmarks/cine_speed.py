"""The 120-frame SonoSite cine at x2: the old inference settings against the new defaults.

What changes between the two is inference only (training is the same code and budget), so
this times ``upscale`` of whole 320x240 -> 640x480 frames of ``color3d_jpeg_baseline.dcm``
(a fresh generator: the cost does not depend on the weights), old and new alternated in one
process and repeated, and reports the median ratio and the largest pixel difference. With
``--train`` it also times one shared-model training at the cine budget (``fit`` on 8 frames,
as the pipeline does) and extrapolates the end-to-end time of all 120 frames.

Usage::

    python benchmarks/cine_speed.py --frames 3 --repeat 3 [--train] [--out speed.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))

from record import provenance, results_path, write_json  # noqa: E402
from run import CINE_120, _testfile, degrade, read_frames  # noqa: E402

from dicom_sr.config import EngineConfig, PipelineConfig  # noqa: E402
from dicom_sr.engine import cine_frame_indices, fit, upscale  # noqa: E402
from dicom_sr.engine.api import TrainedModel  # noqa: E402
from dicom_sr.engine.infer import precision  # noqa: E402
from dicom_sr.engine.nets import Generator  # noqa: E402

#: the inference settings of the previous default (pipelines version 2)
OLD = {"precision": "fp32", "channels_last": False}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--ensemble", type=int, default=8)
    ap.add_argument("--train", action="store_true", help="also time the shared-model training")
    ap.add_argument("--out", default=None, help="JSON file (a bare name goes to results/)")
    args = ap.parse_args(argv)
    frames = read_frames(_testfile(CINE_120), 120 if args.train else args.frames)
    lrs = [degrade(f, 2) for f in frames[: args.frames]]
    new = EngineConfig(scale=2, device="cpu", ensemble=args.ensemble)
    old = new.model_copy(update=OLD)
    model = TrainedModel("cyclegan", 2, Generator(2).state_dict(), {})
    times: dict[str, list[float]] = {"old": [], "new": []}
    max_diff = 0.0
    for _ in range(args.repeat):
        for lr in lrs:
            outs = {}
            for name, cfg in (("old", old), ("new", new)):
                t0 = time.perf_counter()
                outs[name] = upscale(lr, model, cfg)
                times[name].append(time.perf_counter() - t0)
            max_diff = max(max_diff, float(np.abs(outs["old"] - outs["new"]).max()))
    med = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "load_average": list(__import__("os").getloadavg()),
        "new_precision": precision(new, torch.device("cpu")),
        "frames_timed": len(lrs) * args.repeat,
        "seconds_per_frame": {k: round(v, 3) for k, v in med.items()},
        "all_seconds": {k: [round(x, 3) for x in v] for k, v in times.items()},
        "speedup": round(med["old"] / med["new"], 3),
        "max_pixel_difference": max_diff,
    }
    if args.train:
        picks = [degrade(frames[i], 2) for i in cine_frame_indices(len(frames), 8)]
        t0 = time.perf_counter()
        fit(picks, new, iterations=round(new.cine_budget * new.iterations))
        train = time.perf_counter() - t0
        result["train_seconds"] = round(train, 1)
        result["extrapolated_120_frames_seconds"] = {
            k: round(train + 120 * v, 1) for k, v in med.items()
        }
    print(json.dumps(result, indent=1))
    if args.out:
        prov = provenance(__file__, PipelineConfig(engine=new), device="cpu", argv=argv)
        write_json(results_path(__file__, args.out), result, prov)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
