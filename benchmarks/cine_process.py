"""The 120-frame SonoSite cine through ``dicom-sr process`` at x2: old settings against new.

Every frame of ``color3d_jpeg_baseline.dcm`` (its luminance, 480x640) is degraded by
antialiased bicubic x2 and written as a 120-frame MONOCHROME2 cine (no ultrasound regions: the
whole frame is tissue). ``dicom-sr process`` then runs on it once per pipeline, in a subprocess,
timed end to end (start-up, decoding, training, inference, encoding, writing); the output is
read back with the project's reader and compared with the original frames (PSNR of the
luminance, 2 px border left out, mean over the frames).

Pipelines: ``old`` is the default of pipelines version 2 as far as settings go (ensemble 8 on
every frame, contiguous memory format, the model alone), run by today's code, so its time is
if anything an underestimate of the old code's; ``new`` is today's default. Extra runs: ``--extra
cine_ensemble=1`` and so on.

``--crop`` keeps one window of every frame (frame coordinates), for example tissue only;
``--tissue`` keeps the scanner's first ultrasound region (the tissue). The run ``ibp``
(``--method ibp``'s pipeline) gives the free anchor: every other run's time is also reported
as a multiple of its time, in the same run.

``--src DIR`` adds a run ``src``: another checkout's ``process`` with its own default pipeline
(its source tree first on the child's ``PYTHONPATH``), for the code and defaults of an earlier
commit rather than only its settings.

``--seeds N`` repeats every learned run with ``engine.seed`` 0 to N-1 (``new@s1`` and so on;
``src`` seeds edit the checkout's own default file) and reports, per run, the mean PSNR and
time over the seeds (and the spread of the PSNR): on the tissue cine, seeds 0-2 of one pipeline
span 0.04 dB, as much as the differences being judged.

``--regions`` keeps the scanner's Sequence of Ultrasound Regions in the LR cine (coordinates
halved, physical spacing doubled), as a real scanner file has it: ``process`` then runs the
model inside the tissue region only and pixel-replicates the menu bar and the text around it,
as it does on the real file. The PSNR is then reported for the region (where the pipeline
super-resolves) as well as for the whole frame.

Usage::

    python benchmarks/cine_process.py --regions --runs new --out regions-v7.json
    python benchmarks/cine_process.py --frames 24 --tissue --runs new,ibp --out tissue24.json
    python benchmarks/cine_process.py --frames 24 --tissue --runs ibp,new,src --src ../v7 \
        --seeds 3 --out tissue24-seeds.json
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pydicom
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))

from record import provenance, results_path, write_json  # noqa: E402
from run import CINE_120, _testfile, degrade, read_frames  # noqa: E402

from dicom_sr.config import load_pipeline  # noqa: E402
from dicom_sr.dicom.frames import FrameReader  # noqa: E402
from dicom_sr.evaluate.metrics import psnr  # noqa: E402

DEFAULT = ROOT / "pipelines" / "bmode-default.toml"
#: the CLI, as the console script calls it (older checkouts have no ``dicom_sr.cli.__main__``)
CLI = "import sys; from dicom_sr.cli import main; sys.exit(main())"
#: pipelines version 2's inference settings, on today's default
OLD = {"channels_last": "false", "cine_ensemble": '"same"', "ensemble": "8", "model_weight": "1.0"}


def lr_regions(src: pydicom.Dataset) -> pydicom.Sequence:
    """The source's ultrasound regions at half the size: the (inclusive) corners halved, the
    pixel spacing doubled."""
    items = []
    for region in src.SequenceOfUltrasoundRegions:
        item = copy.deepcopy(region)
        for kw in ("MinX0", "MinY0", "MaxX1", "MaxY1"):
            setattr(item, f"RegionLocation{kw}", getattr(region, f"RegionLocation{kw}") // 2)
        for kw in ("PhysicalDeltaX", "PhysicalDeltaY"):
            if kw in region:
                setattr(item, kw, 2 * getattr(region, kw))
        items.append(item)
    return pydicom.Sequence(items)


def region_box(scale: int = 2) -> tuple[slice, slice]:
    """Rows and columns, in HR frame coordinates, of the first region of the LR cine's
    (:func:`lr_regions`) output."""
    region = pydicom.dcmread(_testfile(CINE_120), stop_before_pixels=True)
    (item,) = lr_regions(region)[:1]
    return (
        slice(scale * item.RegionLocationMinY0, scale * (item.RegionLocationMaxY1 + 1)),
        slice(scale * item.RegionLocationMinX0, scale * (item.RegionLocationMaxX1 + 1)),
    )


def write_lr_cine(hr: list[np.ndarray], path: Path, regions: bool = False) -> None:
    """The degraded frames as one 8-bit MONOCHROME2 multi-frame instance."""
    src = pydicom.dcmread(_testfile(CINE_120), stop_before_pixels=True)
    lr = np.stack([np.rint(degrade(f, 2) * 255) for f in hr]).astype(np.uint8)
    ds = pydicom.Dataset()
    if regions:
        ds.SequenceOfUltrasoundRegions = lr_regions(src)
    for kw in ("PatientName", "PatientID", "StudyDate", "Manufacturer"):
        if kw in src:
            setattr(ds, kw, getattr(src, kw))
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.3.1"  # Ultrasound Multi-frame Image Storage
    ds.SOPInstanceUID, ds.StudyInstanceUID = generate_uid(), generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "US"
    ds.NumberOfFrames = lr.shape[0]
    ds.Rows, ds.Columns = lr.shape[1:]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit, ds.PixelRepresentation = 7, 0
    ds.FrameTime, ds.FrameIncrementPointer = 33.3, pydicom.tag.Tag("FrameTime")
    ds.PixelData = lr.tobytes()
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def pipeline_file(
    folder: Path, name: str, settings: dict[str, str], default: Path = DEFAULT
) -> Path:
    """``default`` (bmode-default.toml) with engine keys replaced or added."""
    text = default.read_text()
    for key, value in settings.items():
        line = f"{key} = {value}"
        text, n = re.subn(rf"(?m)^{key} = \S+", line, text)
        if not n:
            text = text.replace("[engine]\n", f"[engine]\n{line}\n", 1)
    path = folder / f"{name}.toml"
    path.write_text(text)
    return path


def mean_psnr(out: Path, hr: list[np.ndarray], box: tuple[slice, slice] | None = None) -> float:
    """Mean over the frames of the PSNR of the whole frame (2 px border left out) or of
    ``box``."""
    (path,) = out.rglob("*.dcm")  # (discovery skips outputs of dicom-sr: read it directly)
    window = box or (slice(2, -2), slice(2, -2))
    scores = []
    with FrameReader(path) as reader:
        for frame, ref in zip(reader, hr, strict=True):
            scores.append(psnr(ref[window], frame.luma[window]))
    return float(np.mean(scores))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=120)
    ap.add_argument("--runs", default="new,old", help="old, new, and names given by --extra")
    ap.add_argument("--extra", action="append", default=[], help="NAME:key=value,key=value")
    ap.add_argument("--crop", default=None, help="Y0:Y1,X0:X1 of every frame (default: whole)")
    ap.add_argument("--regions", action="store_true", help="keep the scanner's regions")
    ap.add_argument("--tissue", action="store_true", help="keep the first region only")
    ap.add_argument("--src", type=Path, default=None, help="another checkout: run 'src'")
    ap.add_argument("--seeds", type=int, default=1, help="seeds per learned run (0..N-1)")
    ap.add_argument("--out", default=None, help="JSON file (a bare name goes to results/)")
    args = ap.parse_args(argv)
    if sum(map(bool, (args.regions, args.crop, args.tissue))) > 1:
        ap.error("--regions, --crop and --tissue do not go together")
    if args.tissue:
        rows, cols = region_box()
        args.crop = f"{rows.start}:{rows.stop},{cols.start}:{cols.stop}"
    hr = read_frames(_testfile(CINE_120), args.frames)
    box = region_box() if args.regions else None
    if args.crop:
        (y0, y1), (x0, x1) = (map(int, part.split(":")) for part in args.crop.split(","))
        hr = [np.ascontiguousarray(f[y0:y1, x0:x1]) for f in hr]
    settings = {"old": OLD, "new": {}, "ibp": {"method": '"ibp"'}}
    for spec in args.extra:
        name, _, pairs = spec.partition(":")
        settings[name] = dict(p.split("=", 1) for p in pairs.split(","))
    runs_asked = args.runs.split(",")
    names = []
    for name in runs_asked:
        names.append(name)
        if name != "ibp":
            for seed in range(1, args.seeds):
                names.append(f"{name}@s{seed}")
                base = dict(settings.get(name, {}))
                settings[f"{name}@s{seed}"] = {**base, "seed": str(seed)}
    result = {"frames": len(hr), "crop": args.crop, "seeds": args.seeds, "runs": {}}
    if box:
        result["region"] = [box[0].start, box[0].stop, box[1].start, box[1].stop]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        write_lr_cine(hr, work / "lr" / "cine.dcm", regions=args.regions)
        for name in names:
            out = work / f"out-{name.replace('@', '-')}"
            cmd = [sys.executable, "-c", CLI, "process", str(work / "lr"), "--out", str(out),
                   "--json", "-q"]  # fmt: skip
            env, cwd = dict(os.environ), ROOT
            if name.split("@")[0] == "src":
                if args.src is None:
                    ap.error("run 'src' needs --src")
                cwd = args.src.resolve()
                env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(cwd), env.get("PYTHONPATH")]))
                if name == "src":
                    settings["src"] = {"checkout": str(cwd)}
                else:
                    own = cwd / "pipelines" / "bmode-default.toml"
                    cmd += ["--pipeline", str(pipeline_file(work, name, settings[name], own))]
                    settings[name] = {**settings[name], "checkout": str(cwd)}
            else:
                cmd += ["--pipeline", str(pipeline_file(work, name, settings[name]))]
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env=env)
            seconds = time.perf_counter() - t0
            if proc.returncode != 0:
                raise SystemExit(f"{name}: exit {proc.returncode}\n{proc.stderr[-2000:]}")
            summary = json.loads(proc.stdout)
            row = {"seconds": round(seconds, 1), "psnr": round(mean_psnr(out, hr), 4),
                   "settings": settings[name], "summary": summary.get("series")}  # fmt: skip
            if box:
                row["psnr_region"] = round(mean_psnr(out, hr, box), 4)
            result["runs"][name] = row
            keys = ("seconds", "psnr", "psnr_region")
            print(json.dumps({name: {k: row[k] for k in keys if k in row}}), flush=True)
    runs = result["runs"]
    if args.seeds > 1:  # every learned run becomes its mean over the seeds
        result["draws"] = runs
        runs = {}
        for name in runs_asked:
            group = [r for n, r in result["draws"].items() if n.split("@")[0] == name]
            runs[name] = {"seconds": round(float(np.mean([r["seconds"] for r in group])), 1),
                          "psnr": round(float(np.mean([r["psnr"] for r in group])), 4),
                          "psnr_sd": round(float(np.std([r["psnr"] for r in group], ddof=1)), 4)
                          if len(group) > 1 else 0.0}  # fmt: skip
            if box:
                runs[name]["psnr_region"] = round(
                    float(np.mean([r["psnr_region"] for r in group])), 4
                )
        result["runs"] = runs
        print(json.dumps({"means": runs}))
    if "ibp" in runs:
        anchor = runs["ibp"]["seconds"]
        result["times_ibp"] = {k: round(r["seconds"] / anchor, 2) for k, r in runs.items()}
        print(json.dumps({"times_ibp": result["times_ibp"]}))
    for ref in ("old", "src"):
        if ref in runs and "new" in runs:
            new, then = runs["new"], runs[ref]
            versus = {"speedup": round(then["seconds"] / new["seconds"], 2),
                      "psnr_change": round(new["psnr"] - then["psnr"], 4)}  # fmt: skip
            if box:
                versus["psnr_region_change"] = round(new["psnr_region"] - then["psnr_region"], 4)
            result[f"new_vs_{ref}"] = versus
            print(json.dumps({f"new_vs_{ref}": versus}))
    if args.out:  # the provenance names the default pipeline ("new"); each run has its settings
        prov = provenance(__file__, load_pipeline(DEFAULT), device="cpu", argv=argv)
        write_json(results_path(__file__, args.out), result, prov)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
