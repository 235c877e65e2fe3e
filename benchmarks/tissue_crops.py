"""The engine against ``ibp`` on tissue-only crops of real frames, x2 and x4, default pipeline.

The crops of ``x4_strategies.py`` and ``guard_eval.py`` (the top-left corner of the largest
tissue region) turned out to hold mostly burned-in text, measurement boxes and scales on
several files (JPGLossless: "Asc Ao Diam 3.3 cm"; OBXXXX1A: "Dist Mag 1.06 cm"), so their
"gain over ibp" was largely measured on graphics. The crops here were chosen by eye on the
region images before any result was seen: B-mode tissue, no text, no caliper, no scale
(US1's lies inside its Doppler box, so it holds power-Doppler colour too). Coordinates are
rows and columns of the region crop that ``dicom-sr evaluate`` reads (``load_images``,
margin 0).

For each crop and scale: the crop is degraded by antialiased bicubic, one model is fitted with
the given pipeline (guard on) and scored three ways against ``ibp``: the output as shipped
(the guard's decision, the ``auto`` blend), the model's own output alone (``model_weight``
1, whatever the guard said) and, from the same two, the blend weights of ``--weights``.

Usage::

    python benchmarks/tissue_crops.py --set A --scales 4 --threads 1 --out x4-v7.jsonl
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from record import append_jsonl, provenance, results_path  # noqa: E402  (benchmarks/ on sys.path)

from dicom_sr.config import EngineConfig, load_pipeline  # noqa: E402
from dicom_sr.engine import TrainedModel, fit, upscale  # noqa: E402
from dicom_sr.evaluate.metrics import psnr  # noqa: E402
from dicom_sr.evaluate.protocol import Degradation, load_cine, load_images, shave  # noqa: E402

#: Set "A": (file, scanner, frame, rows, cols) in the region crop (``load_images``, margin 0).
CROPS_A = [
    ("gdcm-US-ALOKA-16.dcm", "Aloka", 0, slice(96, 384), slice(16, 296)),
    ("JPGLosslessP14SV1_1s_1f_8b.dcm", "Philips", 0, slice(320, 576), slice(320, 576)),
    ("OBXXXX1A.dcm", "Philips", 0, slice(0, 112), slice(216, 472)),
    ("US1_UNCR.dcm", "GE", 0, slice(152, 292), slice(322, 546)),
    ("color3d_jpeg_baseline.dcm", "SonoSite", 0, slice(144, 368), slice(128, 384)),
    ("examples_ybr_color.dcm", "SonoSite", 0, slice(8, 168), slice(8, 168)),
]
#: Set "B", to check what set A chose: other tissue of the same frames, other cine frames.
CROPS_B = [
    ("JPGLosslessP14SV1_1s_1f_8b.dcm", "Philips", 0, slice(160, 320), slice(420, 580)),
    ("US1_UNCR.dcm", "GE", 0, slice(152, 292), slice(92, 314)),
    ("color3d_jpeg_baseline.dcm", "SonoSite", 60, slice(144, 368), slice(128, 384)),
    ("color3d_jpeg_baseline.dcm", "SonoSite", 30, slice(40, 200), slice(176, 336)),
    ("examples_ybr_color.dcm", "SonoSite", 15, slice(8, 168), slice(8, 168)),
]
#: Set "C", chosen (by eye, before any result on them) to check version 7's x4 route, which
#: sets A and B had chosen: other tissue of the JPGLossless frame, other cine frames.
CROPS_C = [
    ("JPGLosslessP14SV1_1s_1f_8b.dcm", "Philips", 0, slice(448, 640), slice(584, 776)),
    ("JPGLosslessP14SV1_1s_1f_8b.dcm", "Philips", 0, slice(400, 560), slice(200, 320)),
    ("color3d_jpeg_baseline.dcm", "SonoSite", 90, slice(176, 336), slice(208, 400)),
    ("color3d_jpeg_baseline.dcm", "SonoSite", 110, slice(96, 256), slice(160, 352)),
    ("examples_ybr_color.dcm", "SonoSite", 25, slice(16, 176), slice(24, 184)),
]
#: Set "D", chosen by eye on the region images before any result on them and held back until
#: pipelines version 8's training and blend rule were fixed: tissue these files show nowhere
#: in sets A-C, small or thin on purpose (the hard case for the guard's held-aside strip).
CROPS_D = [
    ("JPGLosslessP14SV1_1s_1f_8b.dcm", "Philips", 0, slice(320, 400), slice(240, 320)),
    ("color3d_jpeg_baseline.dcm", "SonoSite", 45, slice(48, 176), slice(192, 320)),
    ("color3d_jpeg_baseline.dcm", "SonoSite", 45, slice(272, 352), slice(144, 368)),
    ("US1_UNCR.dcm", "GE", 0, slice(100, 148), slice(48, 592)),
    ("gdcm-US-ALOKA-16.dcm", "Aloka", 0, slice(40, 96), slice(80, 288)),
]
SETS = {"A": CROPS_A, "B": CROPS_B, "C": CROPS_C, "D": CROPS_D}


def crops(which: str = "A") -> list[tuple[str, str, np.ndarray, tuple[slice, slice]]]:
    """(label, scanner, whole region frame, (rows, cols) of the tissue) for set ``which``."""
    from pydicom.data import get_testdata_file

    out = []
    for name, scanner, index, rows, cols in SETS[which]:
        images, cines = load_images([Path(get_testdata_file(name))], scales=[4], margin=0)
        frame = images[0].hr
        if index:
            frame = load_cine(cines[0], scales=[4], margin=0, max_frames=index + 1)[index]
        label = f"{name}#{index} [{rows.start}:{rows.stop}, {cols.start}:{cols.stop}]"
        out.append((label, scanner, np.ascontiguousarray(frame), (rows, cols)))
    return out


def score(hr: np.ndarray, sr: np.ndarray, scale: int) -> dict[str, float]:
    """PSNR with the ``scale``-pixel border shaved, as ``evaluate``'s score (which adds SSIM
    and VIF-P, and refuses crops too thin for VIF-P's scales)."""
    return {"psnr": psnr(shave(hr, scale), shave(np.clip(sr, 0.0, 1.0), scale))}


def guard_overruled(model: TrainedModel) -> TrainedModel:
    """``model`` with the guard's decision set to "model": its own output, whatever the guard
    decided."""
    guard = model.info.get("guard") or {}
    return dataclasses.replace(model, info={**model.info, "guard": {**guard, "decision": "model"}})


def measure(
    hr: np.ndarray,
    scale: int,
    engine: EngineConfig,
    weights: list[float],
    seeds: int = 1,
    save: Path | None = None,
    window: tuple[slice, slice] | None = None,
) -> dict:
    """Gains over ``ibp`` of the shipped output, the model alone and the blends.

    ``seeds`` > 1: "alone" is the mean of the own outputs of that many models, fitted with
    seeds 0, 1, ... (the shipped output is the first one's); ``alone1`` is the first alone.
    ``save``: an ``.npz`` file for the arrays (hr, lr, ibp, alone, shipped), to study other
    combinations of the two without fitting again (``pixel_blend.py``).
    ``window``: ``hr`` is a whole frame, degraded, fitted and upscaled whole as ``process``
    does; only this window of it (the tissue) is scored and saved.
    """
    hr = hr[: hr.shape[0] // scale * scale, : hr.shape[1] // scale * scale]
    lr = Degradation("bicubic").apply(hr, scale)
    cut = (lambda x: x[window]) if window is not None else (lambda x: x)
    cfg = engine.model_copy(update={"scale": scale})
    ibp_cfg = cfg.model_copy(update={"method": "ibp"})
    ibp = upscale(lr, fit([], ibp_cfg), ibp_cfg)
    t0 = time.perf_counter()
    model = fit([lr], cfg)
    shipped = upscale(lr, model, cfg)
    seconds = time.perf_counter() - t0
    guard = model.info.get("guard") or {}
    kept = guard_overruled(model)
    alone = upscale(lr, kept, cfg.model_copy(update={"model_weight": 1.0}))
    first = alone
    for seed in range(1, seeds):
        other = fit([lr], cfg.model_copy(update={"seed": seed, "guard": False}))
        alone = alone + upscale(lr, other, cfg.model_copy(update={"model_weight": 1.0}))
    alone = alone / seeds
    hr, ibp, shipped, alone, first = (cut(x) for x in (hr, ibp, shipped, alone, first))
    base = score(hr, ibp, scale)["psnr"]
    if save is not None:
        np.savez_compressed(save, hr=hr, ibp=ibp, alone=alone, shipped=shipped)
    row = {
        "scale": scale,
        "hw": list(hr.shape),
        "ibp": round(base, 3),
        "shipped": round(score(hr, shipped, scale)["psnr"] - base, 3),
        "decision": guard.get("decision"),
        "guard_gain": (
            round(guard["model_db"] - guard["ibp_db"], 3) if guard.get("model_db") else None
        ),
        "guard_alone": (
            round(guard["alone_db"] - guard["ibp_db"], 3) if guard.get("alone_db") else None
        ),
        "best_weight": guard.get("best_weight"),
        "weight": guard.get("weight"),
        "iterations": model.info.get("iterations"),
        "refit": (model.info.get("refit") or {}).get("iterations"),
        "alone": round(score(hr, alone, scale)["psnr"] - base, 3),
        "alone1": round(score(hr, first, scale)["psnr"] - base, 3),
        "seconds": round(seconds, 1),
    }
    for w in weights:
        row[f"w={w}"] = round(score(hr, w * alone + (1 - w) * ibp, scale)["psnr"] - base, 3)
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--set", dest="which", choices=sorted(SETS), default="A")
    ap.add_argument("--scales", default="2,4")
    ap.add_argument("--crops", default=None, help="indices of the set's crops (default: all)")
    ap.add_argument("--pipeline", default=None, help="pipeline name or file (default: default)")
    ap.add_argument("--engine", action="append", default=[], help="engine override KEY=VALUE")
    ap.add_argument("--weights", default="0.75,0.5,0.25")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--seeds", type=int, default=1, help="models averaged for 'alone'")
    ap.add_argument("--out", default=None, help="JSONL file (a bare name goes to results/)")
    ap.add_argument("--save", type=Path, default=None, help="folder for each crop's arrays")
    ap.add_argument(
        "--fit-on",
        choices=("crop", "frame"),
        default="crop",
        help="degrade and fit the crop alone, or the whole frame (scored on the crop)",
    )
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    overrides = {"engine.device": "cpu", "engine.threads": args.threads}
    for item in args.engine:
        key, _, value = item.partition("=")
        literal = value[:1] in "0123456789-[{tf"
        overrides[f"engine.{key}"] = json.loads(value) if literal else value
    config = load_pipeline(args.pipeline, overrides)
    engine = config.engine
    weights = [float(w) for w in args.weights.split(",") if w]
    rows = []
    if args.save:
        args.save.mkdir(parents=True, exist_ok=True)
    picked = {int(i) for i in args.crops.split(",")} if args.crops else None
    for i, (name, scanner, frame, window) in enumerate(crops(args.which)):
        if picked is not None and i not in picked:
            continue
        hr, win = (frame, window) if args.fit_on == "frame" else (frame[window], None)
        for scale in (int(s) for s in args.scales.split(",")):
            row = {"crop": name, "set": args.which, "scanner": scanner, "fit_on": args.fit_on}
            save = args.save / f"{args.which}{i}-x{scale}.npz" if args.save else None
            row.update(measure(hr, scale, engine, weights, args.seeds, save, win))
            rows.append(row)
            print(json.dumps(row), flush=True)
            if args.out:  # each row's provenance: the configuration at its scale, its date
                cfg = config.with_overrides({"engine.scale": scale})
                prov = provenance(__file__, cfg, device="cpu", argv=argv)
                append_jsonl(results_path(__file__, args.out), row, prov)
    summary = {}
    for scale in sorted({r["scale"] for r in rows}):
        mine = [r for r in rows if r["scale"] == scale]
        summary[f"x{scale}"] = {
            k: {
                "mean": round(float(np.mean([r[k] for r in mine])), 3),
                "worst": min(r[k] for r in mine),
            }
            for k in ("shipped", "alone", *(f"w={w}" for w in weights))
        }
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
