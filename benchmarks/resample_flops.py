"""FLOPs of one frame's inference with the dense resampling matrices and with the short filters.

Counts (``torch.utils.flop_counter.FlopCounterMode``, on the ``meta`` device: no data, no
time) the default pipeline's inference of one 1280x960 LR frame at x2 (self-ensemble 8, back
projection, the blend with ibp), once with the CPU's dense (out, in) matrices and once with
the separable 4-to-10-tap filters used off the CPU. Prints them and writes JSON through
``benchmarks/record.py`` (``benchmarks/results/resample_flops/resample-flops.json`` by default).

Usage::

    python benchmarks/resample_flops.py [--size 1280x960] [--out NAME]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from record import provenance, results_path, write_json  # noqa: E402  (benchmarks/ on sys.path)

from dicom_sr.config import load_pipeline  # noqa: E402
from dicom_sr.engine import api, resize  # noqa: E402
from dicom_sr.engine.nets import Generator  # noqa: E402


def count(separable: bool, w: int, h: int, engine) -> dict[str, float]:
    """TFLOP per aten operation of one frame's inference."""
    dense_or_short = resize._resample_axis

    def forced(*a, separable_=separable, **k):
        k.pop("separable", None)
        return dense_or_short(*a, separable=separable_, **k)

    model = api.TrainedModel(engine.method, engine.scale, Generator(2).state_dict(), {})
    lr = torch.empty(1, 1, h, w)
    resize._resample_axis = forced
    try:
        with FlopCounterMode(display=False) as fc:
            api.get_method(engine.method).apply(lr, model, engine, torch.device("meta"))
    finally:
        resize._resample_axis = dense_or_short
    return {str(k): v / 1e12 for k, v in fc.get_flop_counts()["Global"].items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="1280x960", help="LR frame WxH")
    ap.add_argument("--out", default="resample-flops.json", help="results file")
    args = ap.parse_args(argv)
    w, h = (int(v) for v in args.size.split("x"))
    pipeline = load_pipeline()
    engine = pipeline.engine.model_copy(update={"precision": "fp32", "scale": 2})
    counted = load_pipeline(None, {"engine.precision": "fp32", "engine.scale": 2})
    prov = provenance(__file__, counted, device="meta", argv=argv)
    rows = {}
    for name, sep in (("dense", False), ("separable", True)):
        ops = count(sep, w, h, engine)
        rows[name] = {"tflop_by_op": {k: round(v, 4) for k, v in ops.items()}}
        rows[name]["tflop"] = round(sum(ops.values()), 4)
        print(f"{name:<10} {rows[name]['tflop']:7.2f} TFLOP  {rows[name]['tflop_by_op']}")
    record = {
        "lr": f"{w}x{h}",
        "scale": 2,
        "ensemble": engine.ensemble,
        "back_projection_iters": engine.back_projection_iters,
        "torch": torch.__version__,
        "results": rows,
    }
    out = write_json(results_path(__file__, args.out), record, prov)
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
