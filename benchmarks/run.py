"""Speed, memory and scale of the dicom-sr engine on real ultrasound frames.

Usage::

    python benchmarks/run.py --reduced               # CPU, ~20 min: fewer frames and iterations
    python benchmarks/run.py --device cuda           # full protocol on a GPU
    python benchmarks/run.py --reduced --only table_iv,precision   # a subset of sections

Sections (each a key of the JSON written to ``--out``):

- ``cine_vs_cold``: per-frame training + inference time for 640x480 output frames at x2 and x4,
  training on every frame ("cold") versus the cine default (``fit_cine`` once, reuse), with the
  PSNR of both against the real frames (the inputs are those frames downscaled by the scale).
- ``precision``: fp32 versus bf16 autocast and channels-last inference, with the PSNR change.
- ``throughput``: output megapixels per second of ``upscale``, the FLOPs of ``G`` per output
  pixel (torch's FlopCounterMode) and its achieved GFLOP/s against a plain matrix product.
- ``memory``: peak resident memory of ``process_series`` on the 120-frame cine at x2, measured
  in a subprocess (its own ``ru_maxrss`` and the parent's ``RUSAGE_CHILDREN`` view).
- ``table_iv``: the paper's Table IV columns for our model: inference time for a 600x448 input,
  parameters and model size.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from record import provenance, results_path, write_json  # noqa: E402  (benchmarks/ on sys.path)
from tables import print_tables  # noqa: E402

from dicom_sr.config import EngineConfig, load_pipeline  # noqa: E402
from dicom_sr.dicom.discover import discover  # noqa: E402
from dicom_sr.dicom.frames import open_frames  # noqa: E402
from dicom_sr.engine import fit, fit_cine, select_device, upscale  # noqa: E402
from dicom_sr.engine.nets import Generator  # noqa: E402
from dicom_sr.engine.resize import downscale  # noqa: E402
from dicom_sr.evaluate.metrics import psnr  # noqa: E402

logger = logging.getLogger("benchmarks")

CINE_120 = "color3d_jpeg_baseline.dcm"  # SonoSite, 120 frames of 480x640
SECTIONS = ("cine_vs_cold", "table_iv", "throughput", "precision", "memory")


def _testfile(name: str) -> Path:
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name)
    if path is None:
        raise SystemExit(f"{name} not found: pip install pydicom-data")
    return Path(path)


def read_frames(path: Path, n: int) -> list[np.ndarray]:
    """The first ``n`` luminance frames of a DICOM file, through the project's reader."""
    inst = discover([path]).series[0].instances[0]
    out = []
    with open_frames(inst) as reader:
        for frame in reader:
            out.append(frame.luma)
            if len(out) >= n:
                break
    return out


def degrade(hr: np.ndarray, scale: int) -> np.ndarray:
    x = torch.from_numpy(np.ascontiguousarray(hr))[None, None]
    with torch.inference_mode():
        return downscale(x, scale, EngineConfig(kernel="bicubic"))[0, 0].clamp(0, 1).numpy()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(device: torch.device, repeat: int, fn, *args) -> tuple[float, object]:
    """Best-of-``repeat`` wall time of ``fn(*args)`` (synchronised on CUDA) and its result."""
    best, out = float("inf"), None
    for _ in range(repeat):
        _sync(device)
        t0 = time.perf_counter()
        out = fn(*args)
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return best, out


def engine_config(args, scale: int, **extra) -> EngineConfig:
    base = load_pipeline(args.pipeline).engine.model_dump()
    base.update(method=args.method, scale=scale, device=args.device)
    if args.iterations is not None:
        base["iterations"] = args.iterations
    if args.ensemble is not None:
        base["ensemble"] = args.ensemble
    base.update(extra)
    return EngineConfig.model_validate(base)


def upscale_all(lrs, model, config) -> list[np.ndarray]:
    return [upscale(x, model, config) for x in lrs]


# ---------------------------------------------------------------- sections
def bench_cine_vs_cold(args, frames: list[np.ndarray], device) -> dict:
    out = {}
    for s in args.scales:
        cfg = engine_config(args, s)
        lrs = [degrade(f, s) for f in frames]
        # cine default: one fit_cine, then upscale every frame
        t_fit, model = timed(device, 1, fit_cine, lrs, cfg)
        t_inf, srs = timed(device, 1, upscale_all, lrs, model, cfg)
        cine_psnr = [psnr(h, r) for h, r in zip(frames, srs, strict=True)]
        # the free anchor: bicubic + back projection on the same frames
        ibp_cfg = engine_config(args, s, method="ibp")
        ibp_model = fit([], ibp_cfg)
        ibp_psnr = [
            psnr(h, upscale(x, ibp_model, ibp_cfg)) for h, x in zip(frames, lrs, strict=True)
        ]
        # cold: a fresh fit on each of the first cold_frames frames
        cold = {"train": [], "infer": [], "psnr": []}
        for h, lr in zip(frames[: args.cold_frames], lrs[: args.cold_frames], strict=True):
            tf, m = timed(device, 1, fit, [lr], cfg)
            ti, sr = timed(device, 1, upscale, lr, m, cfg)
            cold["train"].append(tf)
            cold["infer"].append(ti)
            cold["psnr"].append(psnr(h, sr))
        n, k = len(frames), len(cold["psnr"])
        cine_row = {
            "frames": n,
            "train_seconds_total": t_fit,
            "train_seconds_per_frame": t_fit / n,
            "infer_seconds_per_frame": t_inf / n,
            "seconds_per_frame": (t_fit + t_inf) / n,
            "psnr_mean": float(np.mean(cine_psnr)),
            "psnr_mean_on_cold_frames": float(np.mean(cine_psnr[:k])),
            "ibp_psnr_mean": float(np.mean(ibp_psnr)),
            "gain_over_ibp": float(np.mean(cine_psnr) - np.mean(ibp_psnr)),
            "iterations": model.info.get("iterations"),
        }
        cold_row = {
            "frames": k,
            "train_seconds_per_frame": float(np.mean(cold["train"])),
            "infer_seconds_per_frame": float(np.mean(cold["infer"])),
            "seconds_per_frame": float(np.mean(cold["train"]) + np.mean(cold["infer"])),
            "psnr_mean": float(np.mean(cold["psnr"])),
            "gain_over_ibp": float(np.mean(cold["psnr"]) - np.mean(ibp_psnr[:k])),
            "iterations": cfg.iterations,
        }
        out[str(s)] = {
            "output_hw": list(frames[0].shape),
            "input_hw": list(lrs[0].shape),
            "cine": cine_row,
            "cold": cold_row,
            "cost_ratio_cold_over_cine": cold_row["seconds_per_frame"]
            / cine_row["seconds_per_frame"],
            "psnr_cine_minus_cold": cine_row["psnr_mean_on_cold_frames"] - cold_row["psnr_mean"],
        }
        logger.info("cine vs cold x%d: %s", s, out[str(s)])
    return out


def bench_precision(args, frames, device) -> dict:
    out = {}
    for s in args.scales[:1] if args.reduced else args.scales:
        cfg = engine_config(args, s)
        lrs = [degrade(f, s) for f in frames[: args.precision_frames]]
        model = fit(lrs[:1], cfg)  # one short fit: the weights matter little for timing
        variants = {
            "fp32": {},
            "bf16": {"bf16": True},
            "channels_last": {"channels_last": True},
            "bf16+channels_last": {"bf16": True, "channels_last": True},
        }
        rows, ref = {}, None
        for name, extra in variants.items():
            vcfg = engine_config(args, s, **extra)
            upscale(lrs[0], model, vcfg)  # warm-up
            t, srs = timed(device, args.repeat, upscale_all, lrs, model, vcfg)
            p = float(np.mean([psnr(h, r) for h, r in zip(frames, srs, strict=False)]))
            if ref is None:
                ref = srs
            rows[name] = {
                "infer_seconds_per_frame": t / len(lrs),
                "psnr": p,
                "max_abs_diff_vs_fp32": float(
                    max(np.abs(a - b).max() for a, b in zip(srs, ref, strict=True))
                ),
            }
        for r in rows.values():
            r["psnr_diff_vs_fp32"] = r["psnr"] - rows["fp32"]["psnr"]
            r["speedup_vs_fp32"] = (
                rows["fp32"]["infer_seconds_per_frame"] / r["infer_seconds_per_frame"]
            )
        out[str(s)] = {"frames": len(lrs), "ensemble": cfg.ensemble, "variants": rows}
        logger.info("precision x%d: %s", s, rows)
    return out


def g_flops_per_output_pixel(scale: int, lr_hw=(64, 64)) -> float:
    """FLOPs of one ``G`` forward per output pixel (FlopCounterMode; a multiply-add = 2)."""
    from torch.utils.flop_counter import FlopCounterMode

    G = Generator(scale).eval()
    x = torch.rand(1, 1, *lr_hw)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        G(x)
    return counter.get_total_flops() / (lr_hw[0] * lr_hw[1] * scale * scale)


def matmul_gflops(device, n: int = 2048, repeat: int = 5) -> float:
    a = torch.rand(n, n, device=device)
    b = torch.rand(n, n, device=device)
    a @ b
    t, _ = timed(device, repeat, torch.mm, a, b)
    return 2 * n**3 / t / 1e9


def bench_throughput(args, frames, device) -> dict:
    out = {"matmul_gflops_fp32": matmul_gflops(device)}
    for s in args.scales:
        cfg = engine_config(args, s)
        lr = degrade(frames[0], s)
        model = fit([lr], engine_config(args, s, iterations=0, method="zssr"))  # untrained G
        upscale(lr, model, cfg)
        t_full, _ = timed(device, args.repeat, upscale, lr, model, cfg)
        c1 = engine_config(args, s, ensemble=1, back_projection_iters=0)
        t_one, _ = timed(device, args.repeat, upscale, lr, model, c1)
        G = Generator(s).to(device).eval()
        x = torch.from_numpy(lr)[None, None].to(device)
        with torch.inference_mode():
            G(x)
            t_g, _ = timed(device, args.repeat, G, x)
        fpp = g_flops_per_output_pixel(s)
        mpix = frames[0].size / 1e6
        out[str(s)] = {
            "input_hw": list(lr.shape),
            "output_megapixels": mpix,
            "upscale_seconds": t_full,
            "upscale_mpix_per_s": mpix / t_full,
            "upscale_ensemble1_no_bp_seconds": t_one,
            "G_forward_seconds": t_g,
            "G_flops_per_output_pixel": fpp,
            "G_gflops_per_s": fpp * frames[0].size / t_g / 1e9,
            "ensemble": cfg.ensemble,
            "back_projection_iters": cfg.back_projection_iters,
        }
        out[str(s)]["G_fraction_of_matmul"] = (
            out[str(s)]["G_gflops_per_s"] / out["matmul_gflops_fp32"]
        )
        logger.info("throughput x%d: %s", s, out[str(s)])
    return out


_MEMORY_CHILD = textwrap.dedent(
    """
    import json, resource, sys, time
    from pathlib import Path
    import psutil
    from dicom_sr.config import load_pipeline
    from dicom_sr.dicom.discover import discover
    from dicom_sr.pipeline import process_series
    args = json.loads(sys.argv[1])
    config = load_pipeline(args["pipeline"], args["overrides"])
    series = discover([args["path"]]).series[0]
    rss0 = psutil.Process().memory_info().rss / 2**20
    t0 = time.perf_counter()
    result = process_series(series, config, Path(args["out"]))
    seconds = time.perf_counter() - t0
    print(json.dumps({
        "frames": result.frames, "seconds": seconds, "train_seconds": result.train_seconds,
        "rss_after_imports_mb": rss0,
        "ru_maxrss_self_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "output_bytes": sum(p.stat().st_size for p in Path(args["out"]).rglob("*.dcm")),
    }))
    """
)


def bench_memory(args, device) -> dict:
    path = _testfile(CINE_120)
    overrides = {
        "engine.method": args.memory_method,
        "engine.scale": 2,
        "engine.device": args.device,
        "engine.iterations": args.iterations,
        "engine.ensemble": args.ensemble,
    }
    with tempfile.TemporaryDirectory() as tmp:
        payload = json.dumps(
            {"pipeline": args.pipeline, "overrides": overrides, "path": str(path), "out": tmp}
        )
        proc = subprocess.run(
            [sys.executable, "-c", _MEMORY_CHILD, payload],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1:] or ["failed"]}
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    res["ru_maxrss_children_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    res["file"] = CINE_120
    res["method"] = args.memory_method
    res["iterations"] = args.iterations
    logger.info("memory: %s", res)
    return res


def bench_table_iv(args, device) -> dict:
    """Inference time for a 600x448 input, and for a 600x448 *output* (the other methods of
    Table IV were timed on 150x112 inputs, i.e. 600x448 outputs at x4); parameters and size."""
    out = {}
    frame = read_frames(_testfile(CINE_120), 1)[0]  # 480 x 640
    big = np.ascontiguousarray(frame[:448, :600])  # the paper's 600 x 448 test image
    for s in args.scales:
        G = Generator(s)
        params = sum(p.numel() for p in G.parameters())
        small = degrade(big, s)  # 600x448 output
        model = fit([small], engine_config(args, s, iterations=0, method="zssr"))
        row = {"parameters": params, "model_mb": params * 4 / 2**20}
        for label, lr in (("input600x448", big), ("output600x448", small)):
            for ens in args.table_iv_ensembles:
                if args.reduced and (
                    (ens > 1 and (label != "output600x448" or s != 4))
                    or (label == "input600x448" and s != 2)
                ):
                    continue  # on a CPU: the 600x448 input at x2, the 8-pass ensemble at x4
                cfg = engine_config(args, s, ensemble=ens)
                upscale(lr, model, cfg)
                t, _ = timed(device, args.repeat, upscale, lr, model, cfg)
                key = f"{label}_ensemble{ens}"
                row[f"seconds_{key}"] = t
                row[f"kpix_in_per_ms_{key}"] = lr.size / 1000 / (t * 1000)
                row[f"kpix_out_per_ms_{key}"] = lr.size * s * s / 1000 / (t * 1000)
        with tempfile.TemporaryDirectory() as tmp:
            from dicom_sr.engine import save_weights

            save_weights(model, Path(tmp) / "g.pt")
            row["weights_file_bytes"] = (Path(tmp) / "g.pt").stat().st_size
        out[str(s)] = row
        logger.info("table IV x%d: %s", s, row)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reduced", action="store_true", help="CPU-sized: fewer frames, iterations")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--method", default="cyclegan", choices=("cyclegan", "zssr"))
    p.add_argument("--pipeline", default="bmode-default")
    p.add_argument("--iterations", type=int, default=None, help="training iterations per fit")
    p.add_argument("--ensemble", type=int, choices=(1, 2, 8), default=None)
    p.add_argument("--scales", default="2,4")
    p.add_argument("--cine-frames", type=int, default=None, help="cine frames to read")
    p.add_argument("--cold-frames", type=int, default=None, help="frames trained cold")
    p.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections")
    p.add_argument(
        "--out",
        default=None,
        help="JSON file (default results/run/<mode>-<device>.json; a bare name goes there too)",
    )
    p.add_argument(
        "--render",
        type=Path,
        default=None,
        help="only print the tables of an existing results JSON",
    )
    p.add_argument("--rst", action="store_true", help="print the tables as reST list-tables")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.render:
        print_tables(json.loads(args.render.read_text(encoding="utf-8")), rst=args.rst)
        return 0

    args.scales = [int(s) for s in args.scales.split(",")]
    sections = [s for s in args.only.split(",") if s]
    user_cine, user_cold = args.cine_frames, args.cold_frames
    if args.reduced:
        args.cine_frames, args.cold_frames, args.precision_frames, args.repeat = 6, 2, 2, 1
        args.iterations = 20 if args.iterations is None else args.iterations
        args.ensemble = 1 if args.ensemble is None else args.ensemble
        args.table_iv_ensembles = (1, 8)
        args.memory_method = "ibp"
        note = (
            f"REDUCED: cine of the first {args.cine_frames} frames, cold fits on "
            f"{args.cold_frames} of them, {args.iterations} iterations per fit (the cine fit "
            f"gets cine_budget x that), self-ensemble {args.ensemble} (Table IV: 600x448 input at "
            f"x2 only, ensemble 8 only for the x4 150x112 -> 600x448 case), precision at the "
            f"first scale only, memory with method ibp (no G: decode and encode "
            f"streaming only), "
            f"single timing runs"
        )
    else:
        args.cine_frames, args.cold_frames, args.precision_frames, args.repeat = 30, 30, 8, 3
        args.table_iv_ensembles = (1, 8)
        args.memory_method = args.method
        note = "full: pipeline iterations and ensemble"
    if user_cine is not None:
        args.cine_frames = max(1, user_cine)
    if user_cold is not None:
        args.cold_frames = min(max(1, user_cold), args.cine_frames)
    if not args.reduced or user_cine is not None or user_cold is not None:
        note += f"; cine of {args.cine_frames} frames, cold fits on {args.cold_frames} of them"
    if args.iterations is None:
        args.iterations = load_pipeline(args.pipeline).engine.iterations
    device = select_device(args.device)
    args.device = device.type
    overrides = {"engine.method": args.method, "engine.iterations": args.iterations}
    config = load_pipeline(args.pipeline, {**overrides, "engine.ensemble": args.ensemble})
    prov = provenance(__file__, config, device=device.type, argv=argv)
    res: dict = {
        "settings": {
            "mode": "reduced" if args.reduced else "full",
            "note": note,
            "device": str(device),
            "method": args.method,
            "pipeline": args.pipeline,
            "iterations": args.iterations,
            "ensemble": args.ensemble,
            "memory_method": args.memory_method,
            "scales": args.scales,
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
    }
    out = results_path(__file__, args.out or f"{res['settings']['mode']}-{device.type}.json")
    t0 = time.perf_counter()
    frames = read_frames(_testfile(CINE_120), args.cine_frames)
    for name in SECTIONS:
        if name not in sections:
            continue
        t = time.perf_counter()
        if name == "table_iv":
            res[name] = bench_table_iv(args, device)
        elif name == "throughput":
            res[name] = bench_throughput(args, frames, device)
        elif name == "precision":
            res[name] = bench_precision(args, frames, device)
        elif name == "cine_vs_cold":
            res[name] = bench_cine_vs_cold(args, frames, device)
        elif name == "memory":
            res[name] = bench_memory(args, device)
        logger.info("%s done in %.0f s", name, time.perf_counter() - t)
        res["settings"]["seconds"] = time.perf_counter() - t0
        write_json(out, res, prov)  # after every section
    print_tables(res, rst=args.rst)
    print(f"\nwritten: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
