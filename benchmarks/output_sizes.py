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

Writes ``benchmarks/results/output_sizes/<method>.json`` (or ``--out NAME``) through
``benchmarks/record.py``, with its provenance.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import pydicom
from pydicom.data import get_testdata_file
from pydicom.uid import JPEG2000Lossless, JPEGLSLossless, RLELossless

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from record import provenance, results_path, write_json  # noqa: E402  (benchmarks/ on sys.path)

from dicom_sr.config import load_pipeline  # noqa: E402
from dicom_sr.dicom.discover import discover  # noqa: E402
from dicom_sr.pipeline import process_series  # noqa: E402

FILES = (
    "color3d_jpeg_baseline.dcm",  # SonoSite, JPEG baseline, 120-frame cine
    "examples_ybr_color.dcm",  # SonoSite, JPEG baseline, 30-frame cine
    "US1_UNCR.dcm",  # GE, RGB, uncompressed
    "OBXXXX1A.dcm",  # Philips, palette colour
    "JPGLosslessP14SV1_1s_1f_8b.dcm",  # Philips, monochrome, JPEG lossless
)
CODECS = {"rle": RLELossless, "jpegls": JPEGLSLossless, "j2k": JPEG2000Lossless}


def _config(method: str):
    return load_pipeline("bmode-default", {"engine.method": method, "output.compress": "none"})


def measure(name: str, method: str, work: Path) -> dict:
    source = Path(get_testdata_file(name))
    config = _config(method)
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
    parser.add_argument("--out", default=None, help="results file (default: <method>.json)")
    args = parser.parse_args()
    prov = provenance(__file__, _config(args.method), device="cpu")
    with tempfile.TemporaryDirectory(dir=ROOT / "benchmarks") as tmp:
        rows = [measure(name, args.method, Path(tmp)) for name in args.files]
    out = results_path(__file__, args.out or f"{args.method}.json")
    result = {"method": args.method, "scale": 2, "pydicom": pydicom.__version__, "rows": rows}
    write_json(out, result, prov)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
