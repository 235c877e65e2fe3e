"""Size of a derived series in each lossless output encoding, on the real ultrasound files.

Each file is processed once by the pipeline at x2 (``--method``, bicubic by default: the
encoding, not the method, is measured here; a learned method adds fine texture, which makes
every lossless encoding somewhat larger) with ``output.compress = "none"``. The uncompressed
derived instance is then encoded with pydicom's encoders (the backends ``FrameEncoder`` uses)
as RLE Lossless, JPEG-LS Lossless and JPEG 2000 Lossless, and each size is recorded with the
source's size and the uncompressed size, with the encoding time.

Usage::

    python benchmarks/output_sizes.py                      # every file below
    python benchmarks/output_sizes.py --files US1_UNCR.dcm --method ibp

Writes ``benchmarks/results/output_sizes/<method>.json`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pydicom
from pydicom.data import get_testdata_file
from pydicom.uid import JPEG2000Lossless, JPEGLSLossless, RLELossless

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dicom_sr.config import load_pipeline  # noqa: E402
from dicom_sr.dicom.discover import discover  # noqa: E402
from dicom_sr.evaluate.measure import machine_info  # noqa: E402
from dicom_sr.pipeline import process_series  # noqa: E402

FILES = (
    "color3d_jpeg_baseline.dcm",  # SonoSite, JPEG baseline, 120-frame cine
    "examples_ybr_color.dcm",  # SonoSite, JPEG baseline, 30-frame cine
    "US1_UNCR.dcm",  # GE, RGB, uncompressed
    "OBXXXX1A.dcm",  # Philips, palette colour
    "JPGLosslessP14SV1_1s_1f_8b.dcm",  # Philips, monochrome, JPEG lossless
)
CODECS = {"rle": RLELossless, "jpegls": JPEGLSLossless, "j2k": JPEG2000Lossless}


def _commit() -> tuple[str, bool]:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, check=False
        ).stdout.strip()

    return git("rev-parse", "HEAD"), bool(git("status", "--porcelain"))


def measure(name: str, method: str, work: Path) -> dict:
    source = Path(get_testdata_file(name))
    config = load_pipeline("bmode-default", {"engine.method": method, "output.compress": "none"})
    (series,) = discover([source]).series
    t0 = time.perf_counter()
    result = process_series(series, config, work / name)
    (written,) = [r.output for r in result.instances if r.status == "written"]
    row = {
        "file": name,
        "frames": result.frames,
        "source_bytes": source.stat().st_size,
        "source_syntax": pydicom.dcmread(
            source, stop_before_pixels=True
        ).file_meta.TransferSyntaxUID.name,
        "process_seconds": round(time.perf_counter() - t0, 1),
        "none_bytes": written.stat().st_size,
    }
    for codec, syntax in CODECS.items():
        ds = pydicom.dcmread(written)
        t0 = time.perf_counter()
        ds.compress(syntax)
        row[f"{codec}_encode_seconds"] = round(time.perf_counter() - t0, 1)
        out = work / f"{name}.{codec}.dcm"
        ds.save_as(out, enforce_file_format=True)
        row[f"{codec}_bytes"] = out.stat().st_size
        out.unlink()
        del ds
    written.unlink()
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", nargs="*", default=list(FILES))
    parser.add_argument("--method", default="bicubic")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    config = load_pipeline("bmode-default")
    commit, dirty = _commit()
    with tempfile.TemporaryDirectory(dir=ROOT / "benchmarks") as tmp:
        rows = [measure(name, args.method, Path(tmp)) for name in args.files]
    out = args.out or ROOT / "benchmarks" / "results" / "output_sizes" / f"{args.method}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "provenance": {
            "script": "benchmarks/output_sizes.py",
            "command": " ".join(["python", "benchmarks/output_sizes.py", *sys.argv[1:]]),
            "commit": commit,
            "dirty": dirty,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "pipeline": {"name": config.name, "version": config.version, "scale": 2},
            "method": args.method,
            "pydicom": pydicom.__version__,
            "machine": machine_info(),
        },
        "rows": rows,
    }
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
