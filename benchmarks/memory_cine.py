"""Peak memory of ``process_series`` on a whole cine: does it grow with the frame count?

Runs :func:`dicom_sr.pipeline.process_series` (method ``ibp`` by default: no training, so the
numbers are decoding, upscaling, encoding and writing) on pydicom-data's 120-frame SonoSite cine
``color3d_jpeg_baseline.dcm`` at each scale, each run in a fresh subprocess, and reports that
process's peak resident memory (``ru_maxrss``) with the output size::

    python benchmarks/memory_cine.py                      # x2 and x4, all frames
    python benchmarks/memory_cine.py --scales 2 --out memory-x2.json   # -> results/memory_cine/
    python benchmarks/memory_cine.py --src /path/to/an/older/checkout   # compare versions

``--src`` puts another source tree first on the child's ``PYTHONPATH``, so an older commit
(``git archive COMMIT | tar -x -C DIR``) is measured the same way.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from record import provenance, results_path, write_json  # noqa: E402  (benchmarks/ on sys.path)

_CHILD = textwrap.dedent(
    """
    import json, resource, sys, time
    from pathlib import Path
    from pydicom.data import get_testdata_file
    import dicom_sr
    from dicom_sr.config import load_pipeline
    from dicom_sr.dicom.discover import discover
    from dicom_sr.pipeline import process_series
    args = json.loads(sys.argv[1])
    config = load_pipeline(args["pipeline"], args["overrides"])
    series = discover([get_testdata_file(args["file"])]).series[0]
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    result = process_series(series, config, Path(args["out"]))
    seconds = time.perf_counter() - t0
    outputs = list(Path(args["out"]).rglob("*.dcm"))
    print(json.dumps({
        "source": str(Path(dicom_sr.__file__).parent.parent),
        "frames": sum(i.frames for i in result.instances),
        "statuses": sorted({i.status for i in result.instances}),
        "seconds": round(seconds, 1),
        "peak_rss_before_mib": round(rss0, 1),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "output_bytes": sum(p.stat().st_size for p in outputs),
    }))
    """
)


def measure(scale: int, args: argparse.Namespace) -> dict:
    """One run in a fresh process; its peak RSS and output size."""
    overrides = {"engine.method": args.method, "engine.scale": scale, "engine.device": "cpu"}
    env = dict(os.environ)
    if args.src:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(args.src), env.get("PYTHONPATH")]))
    with tempfile.TemporaryDirectory(dir=args.tmp) as out:
        payload = {
            "pipeline": args.pipeline,
            "overrides": overrides,
            "file": args.file,
            "out": out,
        }
        proc = subprocess.run(
            [sys.executable, "-c", _CHILD, json.dumps(payload)],
            cwd=args.src or ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
    if proc.returncode != 0:
        return {"scale": scale, "error": (proc.stderr.strip().splitlines() or ["failed"])[-1]}
    return {"scale": scale, "method": args.method, **json.loads(proc.stdout.splitlines()[-1])}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--file", default="color3d_jpeg_baseline.dcm", help="a pydicom-data file")
    parser.add_argument("--scales", default="2,4")
    parser.add_argument("--method", default="ibp")
    parser.add_argument("--pipeline", default="bmode-default")
    parser.add_argument("--src", type=Path, help="source tree to measure (default: this one)")
    parser.add_argument("--tmp", help="folder for the outputs (default: the system's)")
    parser.add_argument("--out", help="JSON file (a bare name goes to results/)")
    args = parser.parse_args(argv)
    from dicom_sr.config import load_pipeline

    config = load_pipeline(args.pipeline, {"engine.method": args.method})
    prov = provenance(__file__, config, device="cpu", argv=argv)  # the code as it starts
    results = []
    for scale in (int(s) for s in args.scales.split(",")):
        res = measure(scale, args)
        results.append(res)
        if "error" in res:
            print(f"x{scale}: failed: {res['error']}")
            continue
        print(
            f"x{scale} {res['method']}: {res['frames']} frames in {res['seconds']} s, "
            f"peak RSS {res['peak_rss_mib']} MiB (after imports {res['peak_rss_before_mib']}), "
            f"output {res['output_bytes'] / 2**20:.0f} MiB  [{res['source']}]"
        )
    if args.out:
        write_json(results_path(__file__, args.out), {"runs": results}, prov)
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
