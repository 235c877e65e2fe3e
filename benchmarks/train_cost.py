"""What one training step costs, per part of the CycleGAN, and where its time goes.

One real tissue crop (set A's JPGLossless crop, x2, the default crop and batch) trains under
several variants of the loss; each variant's step is timed in rounds that alternate the
variants (so load on a shared machine falls on all of them alike), and ``torch.profiler``
gives each variant's top operators by self CPU time. Variants:

- ``paper``: the CycleGAN of pipelines/paper-x4 at x2 (G, F, two discriminators with their
  history pools, pixel, adversarial and both cycle terms);
- ``no-d``: the same without the adversarial term (no discriminators, no pools);
- ``zssr``: G alone with the pixel L1 (the default from pipelines version 8).

``--compile`` also times the ``zssr`` step with ``torch.compile`` (after its compile time).

Usage::

    python benchmarks/train_cost.py --rounds 3 --steps 30 --threads 1 --out steps.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))

from record import provenance, results_path, write_json  # noqa: E402
from tissue_crops import crops  # noqa: E402

from dicom_sr.config import load_pipeline  # noqa: E402
from dicom_sr.engine import train as T  # noqa: E402
from dicom_sr.evaluate.protocol import Degradation  # noqa: E402

CPU = torch.device("cpu")


def variants(scale: int) -> dict[str, tuple[str, object]]:
    """Name -> (method, engine config) of the variants timed."""
    paper = load_pipeline("paper-x4", {"engine.scale": scale, "engine.model_scale": scale})
    engine = paper.engine
    no_d = engine.losses.model_copy(update={"adversarial": 0.0})
    return {
        "paper": ("cyclegan", engine),
        "no-d": ("cyclegan", engine.model_copy(update={"losses": no_d})),
        "zssr": ("zssr", engine),
    }


def timed(loop, steps: int) -> float:
    """Median seconds of one step over ``steps`` steps."""
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        T._step(loop)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def profile(loop, steps: int, top: int = 8) -> list[dict]:
    """The ``top`` operators by self CPU time over ``steps`` steps, with their share."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            T._step(loop)
    events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in events) or 1
    return [
        {
            "op": e.key,
            "share": round(e.self_cpu_time_total / total, 3),
            "ms_per_step": round(e.self_cpu_time_total / 1000 / steps, 2),
        }
        for e in events[:top]
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--scale", type=int, default=2)
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--out", default=None, help="JSON file (a bare name goes to results/)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    label, _, frame, window = crops("A")[1]
    hr = frame[window]
    lr = Degradation("bicubic").apply(hr, args.scale)
    loops = {}
    for name, (method, engine) in variants(args.scale).items():
        loops[name] = T._setup([lr], engine, method, None, engine.lr, CPU, None)
        timed(loops[name], 3)  # warm-up
    seconds: dict[str, list[float]] = {name: [] for name in loops}
    for _ in range(args.rounds):
        for name, loop in loops.items():
            seconds[name].append(timed(loop, args.steps))
    result = {
        "crop": label,
        "scale": args.scale,
        "threads": args.threads,
        "ms_per_step": {k: round(1000 * statistics.median(v), 1) for k, v in seconds.items()},
    }
    base = result["ms_per_step"]["zssr"]
    result["relative_to_zssr"] = {k: round(v / base, 2) for k, v in result["ms_per_step"].items()}
    result["profile"] = {name: profile(loop, 10) for name, loop in loops.items()}
    if args.compile:
        result["compile"] = compiled(loops["zssr"], args.steps, args.rounds)
    print(result["ms_per_step"], result["relative_to_zssr"], result.get("compile"))
    if args.out:
        prov = provenance(__file__, load_pipeline(None), device="cpu", argv=argv)
        write_json(results_path(__file__, args.out), result, prov)
    return 0


def compiled(loop, steps: int, rounds: int) -> dict:
    """The ``zssr`` step with ``G`` compiled: the first step (the compile) and then a step."""
    eager = loop.nets.g
    loop.nets.g = torch.compile(eager)
    t0 = time.perf_counter()
    T._step(loop)
    first = time.perf_counter() - t0
    step = statistics.median(timed(loop, steps) for _ in range(rounds))
    loop.nets.g = eager
    plain = statistics.median(timed(loop, steps) for _ in range(rounds))
    return {
        "first_step_s": round(first, 1),
        "ms_per_step": round(1000 * step, 1),
        "eager_ms_per_step": round(1000 * plain, 1),
    }


if __name__ == "__main__":
    raise SystemExit(main())
