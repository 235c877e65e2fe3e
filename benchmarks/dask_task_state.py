"""What a Dask client keeps per task: trivial tasks fed as ``dicom-sr batch`` feeds series.

A fresh process starts an embedded ``LocalCluster`` (two worker processes, one thread each),
with :data:`dicom_sr.batch.cluster.LOG_LIMITS`, and runs ``--tasks`` trivial tasks, each with
a key of its own (as ``batch`` names a series' task), four in flight with an
``as_completed`` refill. Once with ``trim``: :func:`dicom_sr.batch.cluster.trim_dask_state`
every 2,000 finished tasks, as ``batch`` does; once without. The process notes its resident
size (the client *and* the embedded scheduler) every 2,000 tasks; the slope is taken from
the 4,000th task on (after the caps have filled), in MiB per 1,000 tasks.

    python benchmarks/dask_task_state.py --tasks 16000 --out slope.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from record import provenance, results_path, write_json  # noqa: E402  (benchmarks/ on sys.path)

_CHILD = """
import json, sys, time
import dask, psutil
from distributed import Client, LocalCluster, as_completed
from dicom_sr.batch.cluster import LOG_LIMITS, TRIM_EVERY, trim_dask_state

def task(i):
    return i

n, trim = int(sys.argv[1]), sys.argv[2] == "trim"
me = psutil.Process()
curve = []
with dask.config.set(LOG_LIMITS), LocalCluster(
    n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
) as cluster, Client(cluster) as client:
    ready = as_completed([], with_results=False)
    submitted = done = 0
    def submit():
        global submitted
        key = f"dicom-sr-series-{submitted:08x}-1-{time.monotonic_ns()}"
        ready.add(client.submit(task, submitted, key=key))
        submitted += 1
    for _ in range(4):
        submit()
    t0 = time.perf_counter()
    for fut in ready:
        fut.result()
        del fut
        done += 1
        if submitted < n:
            submit()
        if trim and done % TRIM_EVERY == 0:
            trim_dask_state(client)
        if done % 2000 == 0:
            curve.append([done, round(me.memory_info().rss / 2**20, 1)])
    seconds = time.perf_counter() - t0
print(json.dumps({"curve": curve, "seconds": round(seconds, 1)}))
"""


def measure(tasks: int, trim: bool) -> dict:
    """One fresh process: its RSS curve and the slope from the 4,000th task on."""
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(tasks), "trim" if trim else "keep"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    if proc.returncode:
        raise SystemExit(proc.stderr[-3000:])
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    start = next(p for p in data["curve"] if p[0] >= 4000)
    end = data["curve"][-1]
    span = end[0] - start[0]
    data["slope_mib_per_1000"] = round(1000 * (end[1] - start[1]) / span, 3) if span else None
    return data


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=16000)
    ap.add_argument("--out", default=None, help="JSON file (a bare name goes to results/)")
    args = ap.parse_args(argv)
    prov = provenance(__file__, None, device="cpu", argv=argv)
    record = {"tasks": args.tasks, "runs": {}}
    for name, trim in (("keep", False), ("trim", True)):
        record["runs"][name] = measure(args.tasks, trim)
        print(json.dumps({name: record["runs"][name]}), flush=True)
    if args.out:
        print(f"wrote {write_json(results_path(__file__, args.out), record, prov)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
