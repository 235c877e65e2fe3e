"""Does a scanner prior earn its warm start? Cold start against prior + k iterations.

Two settings, both at x2 with the pipeline's method and settings, frames degraded by the
pipeline's kernel (the inputs) and scored by PSNR against the real frames (the truth):

- ``cine``: the 120-frame SonoSite cine of pydicom-data. A prior is trained (as
  ``dicom-sr prior build`` does: frames spread over the series, the cine budget) on frames of
  the first half; frames of the second half are then fitted cold (the full single-image budget)
  and warm-started from the prior with k iterations.
- ``phantom``: phantom "patients" of ``sample_data/make_sample_data.py`` simulated with other
  seeds (other scatterers, so other speckle); a prior on several, then a new one.
- ``cross`` (only when asked): the wrong prior, the phantoms', for the cine's frames: what a
  rule that maps the wrong scanner costs, and whether the guard sees it.
- ``process`` (only when asked): ``build_prior`` on phantom patients' DICOM files, then
  ``process_series`` of a new patient cold and from the prior: the real path, timed.

Each frame is the tissue region of the image (the largest ultrasound region for the cine, the
sector's box for the phantoms), as ``process`` trains on. Records per frame: training seconds,
iterations run, PSNR of each start and of ibp. One torch thread; run it with ``nice -n 10``.

Usage::

    nice -n 10 python benchmarks/prior_eval.py --out prior_eval.json
    nice -n 10 python benchmarks/prior_eval.py --only cross --out prior_cross.json
    nice -n 10 python benchmarks/prior_eval.py --only process --out prior_process.json
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "sample_data"))

import make_sample_data as msd  # noqa: E402
from record import provenance, results_path, write_json  # noqa: E402
from run import CINE_120, _testfile, degrade  # noqa: E402

from dicom_sr.config import load_pipeline  # noqa: E402
from dicom_sr.dicom.discover import discover  # noqa: E402
from dicom_sr.dicom.frames import open_frames  # noqa: E402
from dicom_sr.dicom.regions import tissue_regions  # noqa: E402
from dicom_sr.engine import cine_frame_indices, fit, upscale  # noqa: E402
from dicom_sr.evaluate.metrics import psnr  # noqa: E402

logger = logging.getLogger("benchmarks.prior_eval")


def even(a: np.ndarray, s: int) -> np.ndarray:
    """``a`` cut to sides divisible by ``s`` (the truth of an x``s`` degradation)."""
    return np.ascontiguousarray(a[: a.shape[0] // s * s, : a.shape[1] // s * s])


def cine_tissue(indices: list[int]) -> list[np.ndarray]:
    """The largest tissue region of the wanted frames of the 120-frame cine (luminance)."""
    inst = discover([_testfile(CINE_120)]).series[0].instances[0]
    with open_frames(inst) as reader:
        boxes = tissue_regions(reader.header, inst.rows, inst.columns)
        r = max(boxes, key=lambda b: (b.y1 - b.y0) * (b.x1 - b.x0))
        return [f.luma[r.y0 : r.y1 + 1, r.x0 : r.x1 + 1].copy() for f in reader.frames(indices)]


def phantom_views(seed: int, views: int) -> list[np.ndarray]:
    """``views`` sector images of one phantom patient (its own scatterers), box-cropped."""
    rng = np.random.default_rng(seed)
    ph = msd.make_phantom(rng)
    g = msd.Geometry(rows=240, cols=320, depth=10.0, delta=0.05)
    x0, y0, x1, y1 = g.bbox()
    out = []
    for k in range(views):
        img, _ = msd.simulate_sector(ph, g, (0.3 * k, 0.1 * k), rng)
        out.append(img[y0 : y1 + 1, max(x0, 0) : x1 + 1].astype(np.float32) / 255.0)
    return out


def compare(truths, prior, cfg, ks, ibp_cfg) -> list[dict]:
    """Per truth frame: cold (full budget) against prior + k iterations, and ibp."""
    rows = []
    for j, hr in enumerate(truths):
        hr = even(hr, cfg.scale)
        lr = degrade(hr, cfg.scale)
        row = {"frame": j, "lr_hw": list(lr.shape)}
        row["ibp_psnr"] = psnr(hr, upscale(lr, fit([], ibp_cfg), ibp_cfg))
        t0 = time.perf_counter()
        cold = fit([lr], cfg)
        row["cold"] = {
            "iterations": cold.info["iterations"],
            "train_seconds": cold.info["seconds"],
            "fit_seconds": time.perf_counter() - t0,
            "psnr": psnr(hr, upscale(lr, cold, cfg)),
            "guard": cold.info["guard"].get("decision"),
        }
        for k in ks:
            t0 = time.perf_counter()
            warm = fit([lr], cfg, init=prior, iterations=k)
            row[f"prior+{k}"] = {
                "iterations": warm.info["iterations"],
                "train_seconds": warm.info["seconds"],
                "fit_seconds": time.perf_counter() - t0,
                "psnr": psnr(hr, upscale(lr, warm, cfg)),
                "guard": warm.info["guard"].get("decision"),
            }
        logger.info("frame %d: %s", j, row)
        rows.append(row)
    return rows


def summary(rows: list[dict], ks: list[int]) -> dict:
    """Mean PSNR gain over cold and over ibp, and the mean training seconds, per start."""
    out = {}
    for name in ["cold", *(f"prior+{k}" for k in ks)]:
        out[name] = {
            "psnr_minus_cold": float(np.mean([r[name]["psnr"] - r["cold"]["psnr"] for r in rows])),
            "psnr_minus_ibp": float(np.mean([r[name]["psnr"] - r["ibp_psnr"] for r in rows])),
            "train_seconds": float(np.mean([r[name]["train_seconds"] for r in rows])),
            "iterations": float(np.mean([r[name]["iterations"] for r in rows])),
        }
    return out


def build(frames: list[np.ndarray], cfg, iterations: int) -> tuple[object, float]:
    """A prior as ``prior build`` trains it, on the degraded frames (the inputs' domain)."""
    lrs = [degrade(even(f, cfg.scale), cfg.scale) for f in frames]
    t0 = time.perf_counter()
    return fit(lrs, cfg, iterations=iterations), time.perf_counter() - t0


def phantom_file(seed: int, folder: Path) -> Path:
    """A phantom patient as a US Image Storage file (its own UIDs), as the scanner writes it."""
    from pydicom.uid import generate_uid

    g = msd.Geometry(rows=240, cols=320, depth=10.0, delta=0.05)
    rng = np.random.default_rng(seed)
    img, _ = msd.simulate_sector(msd.make_phantom(rng), g, (0.0, 0.0), rng)
    msd.annotate(img, g, msd.HEADER)
    ds = msd.us_dataset(img, g, series=1, description=f"phantom {seed}")
    ids = {k: generate_uid(entropy_srcs=["prior_eval", str(seed), k]) for k in ("st", "se", "so")}
    ds.StudyInstanceUID, ds.SeriesInstanceUID = ids["st"], ids["se"]
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = ids["so"]
    path = folder / f"phantom-{seed}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


def bench_process(config, budget: int, patients: int) -> dict:
    """``prior build`` on phantom patients' files, then ``process_series`` of a new one, cold
    and from the prior (the real path: no truth here, so seconds, iterations and the guard)."""
    import tempfile

    from dicom_sr.config import PriorRule
    from dicom_sr.pipeline import process_series
    from dicom_sr.pipeline.prior import build_prior

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        sources = [phantom_file(1000 + p, folder) for p in range(patients)]
        new = discover([phantom_file(2000, folder)]).series[0]
        t0 = time.perf_counter()
        meta = build_prior(sources, config, folder / "prior.pt", iterations=budget)
        built = time.perf_counter() - t0
        rule = PriorRule(file=str(folder / "prior.pt"), manufacturer="dicom-sr sample*")
        warm_cfg = config.model_copy(update={"priors": (rule,)})
        out = {"prior_seconds": built, "built": {k: meta[k] for k in ("series", "frames")}}
        for name, cfg in (("cold", config), ("prior", warm_cfg)):
            res = process_series(new, cfg, folder / name)
            out[name] = {
                "status": res.status,
                "train_seconds": res.train_seconds,
                "seconds": res.seconds,
                "iterations": res.model.info.get("iterations"),
                "guard": res.guard.get("decision"),
                "prior": res.to_dict()["prior"],
                "derived_series_uid": res.derived_series_uid,
            }
        logger.info("process: %s", out)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pipeline", default="bmode-default")
    ap.add_argument("--ks", default="0,25,50,100", help="warm-start iterations to compare")
    ap.add_argument("--cine-prior-frames", type=int, default=8)
    ap.add_argument("--cine-test-frames", type=int, default=2)
    ap.add_argument("--patients", type=int, default=3, help="phantoms the prior learns from")
    ap.add_argument("--views", type=int, default=2, help="images per phantom patient")
    ap.add_argument("--phantom-test", type=int, default=2, help="images of the new phantom")
    ap.add_argument("--prior-iterations", type=int, default=None, help="default: cine budget")
    ap.add_argument("--iterations", type=int, default=None, help="cold budget (a quick check)")
    ap.add_argument("--only", default="cine,phantom")
    ap.add_argument("--out", default="prior_eval.json")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    torch.set_num_threads(1)
    over = {"engine.threads": 1, "engine.device": "cpu", "engine.iterations": args.iterations}
    config = load_pipeline(args.pipeline, over)
    cfg, ks = config.engine, [int(k) for k in args.ks.split(",")]
    ibp_cfg = cfg.model_copy(update={"method": "ibp"})
    budget = args.prior_iterations or round(cfg.cine_budget * cfg.iterations)
    record = {"ks": ks, "prior_iterations": budget, "cold_iterations": cfg.iterations}
    prov = provenance(__file__, config, device="cpu")
    path = results_path(__file__, args.out)
    if "cine" in args.only:
        first = cine_frame_indices(60, args.cine_prior_frames)
        test = [60 + i for i in cine_frame_indices(60, args.cine_test_frames)]
        prior, secs = build(cine_tissue(first), cfg, budget)
        rows = compare(cine_tissue(test), prior, cfg, ks, ibp_cfg)
        record["cine"] = {
            "file": CINE_120, "prior_frames": first, "test_frames": test,
            "prior_seconds": secs, "prior_iterations_run": prior.info["iterations"],
            "rows": rows, "summary": summary(rows, ks),
        }  # fmt: skip
        write_json(path, record, prov)
    if "phantom" in args.only:
        seeds = [1000 + p for p in range(args.patients)]
        frames = [f for s in seeds for f in phantom_views(s, args.views)]
        prior, secs = build(frames, cfg, budget)
        new_seed = 2000
        rows = compare(phantom_views(new_seed, args.phantom_test), prior, cfg, ks, ibp_cfg)
        record["phantom"] = {
            "prior_seeds": seeds, "views": args.views, "test_seed": new_seed,
            "prior_seconds": secs, "prior_iterations_run": prior.info["iterations"],
            "rows": rows, "summary": summary(rows, ks),
        }  # fmt: skip
        write_json(path, record, prov)
    if "cross" in args.only:  # the wrong prior: phantoms' for the SonoSite cine
        seeds = [1000 + p for p in range(args.patients)]
        prior, secs = build([f for s in seeds for f in phantom_views(s, args.views)], cfg, budget)
        test = [60 + i for i in cine_frame_indices(60, args.cine_test_frames)]
        rows = compare(cine_tissue(test), prior, cfg, ks, ibp_cfg)
        record["cross"] = {
            "prior_seeds": seeds, "views": args.views, "file": CINE_120, "test_frames": test,
            "prior_seconds": secs, "prior_iterations_run": prior.info["iterations"],
            "rows": rows, "summary": summary(rows, ks),
        }  # fmt: skip
        write_json(path, record, prov)
    if "process" in args.only:
        record["process"] = bench_process(config, budget, args.patients)
        write_json(path, record, prov)
    logger.info("wrote %s", path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
