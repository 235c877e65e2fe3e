"""Plan and run ``dicom-sr batch`` on a synthetic archive of tiny single-frame series.

The archive is ``--series`` US Image Storage files (32x32 pixels, one frame, one series each:
one task per file), 1,000 per folder, written once into ``--archive`` (default: a folder in
the temp dir) from one template with new UIDs. Each size runs in a fresh client process with
an embedded ``LocalCluster`` (``--workers``, one thread each) and ``--method bicubic``; that
process samples its own resident size (psutil, every 0.2 s: the client *and* the embedded
scheduler, which lives in it; the workers are other processes) and notes it against the
number of series finished. Reported per size: plan time, run throughput (series per second),
peak client RSS, and the RSS curve.

    nice -n 10 python benchmarks/batch_archive.py --series 20000 100000

Results: one JSON record per size, written through ``benchmarks/record.py`` (its provenance) to
``benchmarks/results/batch_archive/bicubic-<series>[-limit<N>]-w<workers>.json``, or ``--out
NAME`` (``{series}`` in it stands for the size; needed when several sizes run).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from record import provenance, results_path, write_json  # (benchmarks/ on sys.path)
from synthetic import tiny_us

#: the pipeline the client process runs (as _CHILD loads it)
OVERRIDES = {"engine.method": "bicubic", "engine.threads": 1}


def generate(folder: Path, series: int) -> None:
    """Write the synthetic archive (skipped when ``folder.complete`` says it is there and the
    folder is): one template written by pydicom, copied with its UIDs (fixed width) and pixels
    replaced."""
    import io

    import numpy as np

    done = folder.with_name(folder.name + ".complete")
    if done.exists() and done.read_text() == str(series) and folder.is_dir():
        return
    t0 = time.perf_counter()
    root = "1.2.826.0.1.3680043.8.498.78."
    sop, ser = f"{root}3.1{0:08d}", f"{root}2.1{0:08d}"  # fixed width, no leading zero
    ramp = np.add.outer(np.arange(32), np.arange(32)).astype(np.uint8) * 4
    ds = tiny_us(root + "1", ser, sop, 1, ramp)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    template = buf.getvalue()
    assert template.count(sop.encode()) == 2 and template.count(ser.encode()) == 1
    head = template[: -len(ds.PixelData)]
    for i in range(series):
        data = head.replace(sop.encode(), f"{root}3.1{i + 1:08d}".encode())
        data = data.replace(ser.encode(), f"{root}2.1{i + 1:08d}".encode())
        sub = folder / f"{i // 1000:04d}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"{i:07d}.dcm").write_bytes(data + (ramp + np.uint8(i % 64)).tobytes())
    done.write_text(str(series))
    print(f"generated {series} files in {time.perf_counter() - t0:.1f} s", file=sys.stderr)


_CHILD = """
import json, sys, threading, time
import psutil
me = psutil.Process()
samples = []
stop = threading.Event()
def sample():
    while not stop.is_set():
        samples.append(me.memory_info().rss)
        stop.wait(0.2)
threading.Thread(target=sample, daemon=True).start()
from dicom_sr.batch.runner import BatchOptions, run_batch
from dicom_sr.config import load_pipeline
archive, out, workers, total = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
limit = int(sys.argv[5]) or None
log = open(sys.argv[6], "a")
config = load_pipeline("bmode-default", json.loads(sys.argv[7]))
base = me.memory_info().rss
curve, step = [], max(1, (int(sys.argv[5]) or total) // 20)
def progress(st):
    n = st.done + st.failed
    if not curve or n >= curve[-1][0] + step:
        curve.append([n, round(me.memory_info().rss / 2**20, 1)])
        peak = round(max(samples) / 2**20, 1)
        print(json.dumps({"done": n, "rss_mib": curve[-1][1], "peak_mib": peak,
            "elapsed": round(st.elapsed, 1)}), file=log, flush=True)
options = BatchOptions(workers=workers, limit=limit)
report = run_batch([archive], config, out, options, progress=progress)
stop.set()
print(json.dumps({"report": {k: report[k] for k in ("plan", "series", "processing_seconds",
    "series_per_second", "seconds", "config_hash", "pipeline")},
    "rss_after_import_mib": round(base / 2**20, 1),
    "rss_peak_mib": round(max(samples) / 2**20, 1), "rss_curve_mib": curve,
    "version": config.version}))
"""


def measure(archive: Path, out: Path, workers: int, series: int, limit: int | None) -> dict:
    """Plan and run ``archive`` into ``out`` in a fresh client process; its numbers (and,
    as it goes, one line per twentieth of the run in ``out``.progress.jsonl)."""
    t0 = time.perf_counter()
    log = out.with_name(out.name + ".progress.jsonl")
    args = [str(archive), str(out), str(workers), str(series), str(limit or 0), str(log)]
    args.append(json.dumps(OVERRIDES))
    res = subprocess.run(
        [sys.executable, "-c", _CHILD, *args],
        capture_output=True,
        text=True,
    )
    if res.returncode:
        raise SystemExit(res.stderr[-3000:])
    data = json.loads(res.stdout.strip().splitlines()[-1])
    data["wall_seconds"] = round(time.perf_counter() - t0, 1)
    return data


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--series", type=int, nargs="+", default=[20_000, 100_000])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--archive", type=Path, default=None, help="Folder for the archives.")
    ap.add_argument(
        "--limit", type=int, default=None, help="Plan all, process the first N series only."
    )
    ap.add_argument("--out", default=None, help="results file; {series} stands for the size")
    args = ap.parse_args()
    if args.out and len(args.series) > 1 and "{series}" not in args.out:
        ap.error("--out needs {series} in it when several sizes run")
    from dicom_sr.config import load_pipeline

    config = load_pipeline("bmode-default", OVERRIDES)
    root = args.archive or Path(tempfile.gettempdir())
    for n in args.series:
        archive = root / f"dicom-sr-batch-{n}"
        generate(archive, n)
        prov = provenance(__file__, config, device="cpu")  # as the run starts
        with tempfile.TemporaryDirectory(dir=root) as tmp:
            data = measure(archive, Path(tmp) / "out", args.workers, n, args.limit)
        report = data.pop("report")
        data.pop("version")  # the pipeline's version: in the provenance
        if report["config_hash"] != prov["pipeline"]["hash"]:  # say so; keep the measurement
            prov["pipeline"]["hash_the_client_ran"] = report["config_hash"]
        if hasattr(os, "getloadavg"):
            prov["machine"]["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
        record = {
            "method": "bicubic",
            "workers": args.workers,
            "series": n,
            "limit": args.limit,
            "plan_seconds": report["plan"]["seconds"],
            "run_seconds": report["processing_seconds"],
            "series_per_second": report["series_per_second"],
            "done": report["series"]["done"],
            "failed": report["series"]["failed"],
            **data,
        }
        part = f"-limit{args.limit}" if args.limit else ""
        name = (args.out or "bicubic-{series}" + part + f"-w{args.workers}.json").format(series=n)
        path = write_json(results_path(__file__, name), record, prov)
        print(json.dumps(record, indent=2))
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
