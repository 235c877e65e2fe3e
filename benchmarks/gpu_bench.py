"""Speed and memory of the engine on one CUDA device: what ``scripts/gpu_check.sh`` reports.

Measures, on the device given (``cuda`` by default):

- the time to super-resolve one frame x2 at 640x480 and at 1280x960 (LR input; a generator
  fitted for a few iterations: the cost does not depend on the weights) with the default
  pipeline's inference (self-ensemble 8, back projection, the blend with ibp) and with a
  cine's (``engine.cine_ensemble``, 2), in ``engine.precision`` "auto" (bf16 on compute
  capability 8 or more) and "fp32"; median of ``--repeat`` runs after one warm-up;
- training iterations per second of the default CycleGAN on a 480x640 frame;
- the peak GPU memory of each (``torch.cuda.max_memory_allocated``).

Prints a table the docs can quote and writes everything as JSON through ``benchmarks/record.py``
(its provenance: commit, date, pipeline, machine) to ``--out NAME``, by default
``benchmarks/results/gpu_bench/<UTC time>-<GPU name>.json``. Without CUDA it says so and exits 0.

Usage::

    python benchmarks/gpu_bench.py [--device cuda] [--repeat 5] [--iterations 200] [--out NAME]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pydicom
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from record import provenance, results_path, write_json  # noqa: E402  (benchmarks/ on sys.path)

from dicom_sr import __version__  # noqa: E402
from dicom_sr.config import load_pipeline  # noqa: E402
from dicom_sr.engine import fit, upscale  # noqa: E402
from dicom_sr.engine.device import repeatable, select_device  # noqa: E402
from dicom_sr.engine.infer import precision  # noqa: E402
from dicom_sr.engine.resize import resize_bicubic  # noqa: E402

SAMPLE = ROOT / "sample_data" / "us_phantom_single.dcm"


def _frame(h: int, w: int) -> np.ndarray:
    """The sample phantom resized to (h, w): speckle-like content at the wanted size."""
    src = pydicom.dcmread(SAMPLE).pixel_array.astype(np.float32) / 255.0
    t = torch.from_numpy(np.ascontiguousarray(src))[None, None]
    with torch.inference_mode():
        return resize_bicubic(t, (h, w)).clamp_(0, 1)[0, 0].numpy()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_mib(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)


def time_frames(
    engine, device: torch.device, repeat: int, sizes: list[tuple[int, int]]
) -> list[dict]:
    """Per-frame inference time and peak memory, per size, ensemble and precision."""
    crop = _frame(120, 160)
    model = fit([crop], engine.model_copy(update={"iterations": 20, "guard": False}))
    rows = []
    for h, w in sizes:
        frame = _frame(h, w)
        cine = engine.ensemble if engine.cine_ensemble == "same" else engine.cine_ensemble
        for ensemble in sorted({engine.ensemble, cine}, reverse=True):
            for prec in ("auto", "fp32"):
                cfg = engine.model_copy(update={"ensemble": ensemble, "precision": prec})
                _reset_peak(device)
                upscale(frame, model, cfg)  # warm-up: kernels, caches, filters
                times = []
                for _ in range(repeat):
                    _sync(device)
                    t0 = time.perf_counter()
                    upscale(frame, model, cfg)  # returns numpy: synchronised
                    times.append(time.perf_counter() - t0)
                rows.append(
                    {
                        "what": "frame",
                        "lr": f"{w}x{h}",
                        "sr": f"{2 * w}x{2 * h}",
                        "ensemble": ensemble,
                        "precision": precision(cfg, device),
                        "median_s": round(statistics.median(times), 4),
                        "min_s": round(min(times), 4),
                        "runs": repeat,
                        "peak_mib": _peak_mib(device),
                    }
                )
                print(_row(rows[-1]), flush=True)
    return rows


def time_training(engine, device: torch.device, iterations: int) -> dict:
    """Iterations per second of the default training on one 480x640 frame."""
    frame = _frame(480, 640)
    cfg = engine.model_copy(update={"iterations": iterations, "guard": False, "lr_min": 0.0})
    _reset_peak(device)
    fit([frame], cfg.model_copy(update={"iterations": 5}))  # warm-up
    _reset_peak(device)
    model = fit([frame], cfg)
    done = int(model.info["iterations"])
    row = {
        "what": "train",
        "lr": "640x480",
        "method": cfg.method,
        "iterations": done,
        "seconds": round(float(model.info["seconds"]), 3),
        "iterations_per_s": round(done / float(model.info["seconds"]), 2),
        "perceptual": model.info.get("perceptual"),
        "peak_mib": _peak_mib(device),
    }
    print(_row(row), flush=True)
    return row


def _row(r: dict) -> str:
    if r["what"] == "frame":
        head = f"frame {r['lr']:>9} -> {r['sr']:<9} ensemble {r['ensemble']} {r['precision']:<4}"
        return f"{head} {1000 * r['median_s']:9.1f} ms  peak {r['peak_mib']} MiB"
    head = f"train {r['lr']:>9} {r['method']:<8} {r['iterations']} it"
    return f"{head} {r['iterations_per_s']:9.2f} it/s  peak {r['peak_mib']} MiB"


def table(rows: list[dict]) -> str:
    """An RST table of the results, for the docs."""
    lines = [
        "=============  ========  =========  ===========  =============",
        "What           Ensemble  Precision  Time         Peak GPU MiB",
        "=============  ========  =========  ===========  =============",
    ]
    for r in rows:
        if r["what"] == "frame":
            what, ens, prec = f"frame {r['lr']}", str(r["ensemble"]), r["precision"]
            time_ = f"{1000 * r['median_s']:.0f} ms"
        else:
            what, ens, prec = f"train {r['lr']}", "", "fp32"
            time_ = f"{r['iterations_per_s']:.1f} it/s"
        lines.append(f"{what:<13}  {ens:<8}  {prec:<9}  {time_:<11}  {r['peak_mib']}")
    lines.append(lines[0])
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu (a dry run)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--iterations", type=int, default=200, help="training iterations timed")
    ap.add_argument(
        "--sizes", default="640x480,1280x960", help="LR frame sizes WxH, comma-separated"
    )
    ap.add_argument("--out", default=None, help="results file (default: <UTC time>-<GPU>.json)")
    args = ap.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"gpu_bench: no CUDA device visible to torch {torch.__version__}; nothing measured")
        return 0
    pipeline = load_pipeline()
    engine = pipeline.engine.model_copy(update={"device": args.device})
    device = select_device(args.device)
    prov = provenance(__file__, pipeline, device=str(device), argv=argv)
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        prov["machine"]["cuda"]["capability"] = f"{major}.{minor}"
    with repeatable(device):
        sizes = [tuple(int(v) for v in s.split("x"))[::-1] for s in args.sizes.split(",")]
        rows = time_frames(engine, device, args.repeat, sizes)
        rows.append(time_training(engine, device, args.iterations))
    record = {"dicom_sr": __version__, "device": str(device), "results": rows}
    print()
    print(table(rows))
    name = prov["machine"]["cuda"]["device"] if device.type == "cuda" else "cpu"
    stamp = prov["date"].replace("-", "").replace(":", "")
    out = results_path(__file__, args.out or f"{stamp}-{name.replace(' ', '_')}.json")
    write_json(out, record, prov)
    print(f"\nwritten: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
