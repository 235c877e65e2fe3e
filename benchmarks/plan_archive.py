"""Planning time and peak memory of ``dicom-sr batch`` on a synthetic archive.

The archive is ``--files`` small US Image Storage files (8x8 pixels: header-sized) in series of
``--per-series`` instances, spread over folders of 1,000 files. It is generated once into
``--archive`` (default: a folder in the temp dir) and reused. Planning runs in a fresh process
per measurement so the peak resident memory (ru_maxrss, before and after planning) is the
plan's own; ``--heap`` also traces the Python heap peak during planning (tracemalloc), since
the process' baseline (torch is imported with the pipeline) dominates the resident size.

    python benchmarks/plan_archive.py --files 100000

Writes one JSON record (both plans) through ``benchmarks/record.py``, with its provenance, to
``benchmarks/results/plan_archive/plan-<files>.json`` or ``--out NAME``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from record import provenance, results_path, write_json  # (benchmarks/ on sys.path)
from synthetic import tiny_us

#: the pipeline the planning process plans for (as _CHILD loads it)
OVERRIDES = {"engine.method": "bicubic"}


def generate(folder: Path, files: int, per_series: int) -> None:
    """Write the synthetic archive (skipped when ``folder/.complete`` says it is there)."""
    import numpy as np

    done = folder.with_name(folder.name + ".complete")
    if done.exists() and done.read_text() == f"{files} {per_series}":
        return
    t0 = time.perf_counter()
    root = "1.2.826.0.1.3680043.8.498.77."
    study = root + "1"
    for i in range(files):
        s, k = divmod(i, per_series)
        pixels = np.full((8, 8), i % 256, np.uint8)
        ds = tiny_us(study, f"{root}2.{s + 1}", f"{root}3.{i + 1}", k + 1, pixels)
        sub = folder / f"{i // 1000:04d}"
        sub.mkdir(parents=True, exist_ok=True)
        ds.save_as(sub / f"{i:07d}.dcm", enforce_file_format=True)
    done.write_text(f"{files} {per_series}")
    print(f"generated {files} files in {time.perf_counter() - t0:.1f} s", file=sys.stderr)


_CHILD = """
import json, resource, sys, time, tracemalloc
from dicom_sr.batch.plan import plan_archive
from dicom_sr.config import load_pipeline
from dicom_sr.jobs import JobStore
config = load_pipeline("bmode-default", json.loads(sys.argv[4]))
store = JobStore(sys.argv[2])
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
if sys.argv[3] == "1":
    tracemalloc.start()
t0 = time.perf_counter()
plan = plan_archive([sys.argv[1]], config, store)
seconds = time.perf_counter() - t0
heap = tracemalloc.get_traced_memory()[1] if tracemalloc.is_tracing() else 0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"files": plan.files, "read": plan.inspected, "series": plan.series,
    "skipped": plan.skipped, "seconds": round(seconds, 2),
    "rss_before_mib": round(base / 1024, 1), "rss_peak_mib": round(peak / 1024, 1),
    "heap_peak_mib": round(heap / 2**20, 1)}))
"""


def measure(archive: Path, out: Path, heap: bool = False) -> dict:
    """Plan ``archive`` into ``out`` in a fresh process; its numbers."""
    res = subprocess.run(
        [
            sys.executable,
            "-c",
            _CHILD,
            str(archive),
            str(out),
            "1" if heap else "0",
            json.dumps(OVERRIDES),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--per-series", type=int, default=10)
    ap.add_argument("--archive", type=Path, default=None)
    ap.add_argument("--heap", action="store_true", help="Also trace the Python heap (2-3x slower).")
    ap.add_argument("--out", default=None, help="results file (default: plan-<files>.json)")
    args = ap.parse_args()
    from dicom_sr.config import load_pipeline

    prov = provenance(__file__, load_pipeline("bmode-default", OVERRIDES), device="cpu")
    archive = args.archive or Path(tempfile.gettempdir()) / f"dicom-sr-plan-{args.files}"
    generate(archive, args.files, args.per_series)
    with tempfile.TemporaryDirectory() as tmp:
        cold = measure(archive, Path(tmp) / "out", args.heap)  # every header read
        warm = measure(archive, Path(tmp) / "out", args.heap)  # a re-run: staged plan reused
    result = {"files": args.files, "per_series": args.per_series, "heap": args.heap,
              "cold": cold, "rerun": warm}  # fmt: skip
    print(json.dumps(result, indent=2))
    path = write_json(results_path(__file__, args.out or f"plan-{args.files}.json"), result, prov)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
