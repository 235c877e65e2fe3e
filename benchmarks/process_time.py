"""``dicom-sr process`` timed end to end on real inputs, once per method.

Each run is a fresh subprocess (start-up, decoding, training, inference, encoding, writing),
as a user runs it; the record gives its wall time, the peak resident memory of that process
(``ru_maxrss``, read by a small wrapper in the child) and the size of what it wrote. Inputs are
paths (the bundled ``sample_data/``) or pydicom-data file names (``--testfile``).

Usage::

    python benchmarks/process_time.py sample_data/ --out demo.json
    python benchmarks/process_time.py --testfile color3d_jpeg_baseline.dcm \\
        --methods cyclegan,ibp --out cine-real.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from record import provenance, results_path, write_json  # noqa: E402  (benchmarks/ on sys.path)

from dicom_sr.config import load_pipeline  # noqa: E402

#: the CLI, then the child's own peak RSS on stderr's last line
_CHILD = (
    "import resource, sys\n"
    "from dicom_sr.cli import main\n"
    "try:\n"
    "    code = main()\n"
    "finally:\n"
    "    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024\n"
    "    print(f'PEAK_RSS_MIB {rss:.1f}', file=sys.stderr)\n"
    "sys.exit(code)\n"
)


def run_once(inputs: list[str], method: str, scale: int, pipeline: str) -> dict:
    """One ``process`` run in a fresh interpreter: seconds, peak RSS, output and its summary."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        cmd = [sys.executable, "-c", _CHILD, "process", *inputs, "--out", str(out), "--json",
               "-q", "--method", method, "--scale", str(scale), "--pipeline", pipeline]  # fmt: skip
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        seconds = time.perf_counter() - t0
        if proc.returncode != 0:
            raise SystemExit(f"{method}: exit {proc.returncode}\n{proc.stderr[-2000:]}")
        peak = [ln for ln in proc.stderr.splitlines() if ln.startswith("PEAK_RSS_MIB ")]
        summary = json.loads(proc.stdout)
        return {
            "method": method,
            "scale": scale,
            "seconds": round(seconds, 1),
            "peak_rss_mib": float(peak[-1].split()[1]) if peak else None,
            "output_bytes": sum(p.stat().st_size for p in out.rglob("*.dcm")),
            "summary": summary.get("series"),
        }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("inputs", nargs="*", help="files or folders to process")
    ap.add_argument("--testfile", action="append", default=[], help="a pydicom-data file")
    ap.add_argument("--methods", default="cyclegan")
    ap.add_argument("--scale", type=int, default=2)
    ap.add_argument("--pipeline", default="bmode-default")
    ap.add_argument("--out", default=None, help="JSON file (a bare name goes to results/)")
    args = ap.parse_args(argv)
    inputs = [str(Path(p).resolve()) for p in args.inputs]
    if args.testfile:
        from pydicom.data import get_testdata_file

        inputs += [str(get_testdata_file(name)) for name in args.testfile]
    if not inputs:
        ap.error("give inputs or --testfile")
    config = load_pipeline(args.pipeline, {"engine.scale": args.scale})
    prov = provenance(__file__, config, device="cpu", argv=argv)  # the code as it starts
    runs = []
    for method in args.methods.split(","):
        row = run_once(inputs, method, args.scale, args.pipeline)
        runs.append(row)
        keys = ("method", "seconds", "peak_rss_mib", "output_bytes")
        print(json.dumps({k: row[k] for k in keys}), flush=True)
    if args.out:
        record = {"inputs": args.inputs + args.testfile, "runs": runs}
        write_json(results_path(__file__, args.out), record, prov)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
