"""SIGKILL at any point, then a re-run: the outputs equal an uninterrupted run's (attributes and
pixels, timestamps aside) and no stray file is left; two runs at once compute each series once."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pydicom
import pytest

from tests.conftest import us_file

SAMPLE = Path(__file__).resolve().parent.parent / "sample_data"
#: Attributes that hold the time of writing, not the content.
TIMESTAMPS = {"InstanceCreationDate", "InstanceCreationTime", "ContributionDateTime"}


def _cmd(inputs: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "dicom_sr.cli", "process", str(inputs), "--out", str(out)] + [
        "--method",
        "ibp",
        "--json",
    ]


def _content(ds: pydicom.Dataset) -> dict:
    """Every element but the timestamps, sequences included, as comparable values."""
    out = {}
    for elem in ds:
        if elem.keyword in TIMESTAMPS:
            continue
        if elem.VR == "SQ":
            out[elem.tag] = [_content(item) for item in elem.value]
        else:
            out[elem.tag] = elem.value
    return out


def _outputs(out: Path) -> dict[str, dict]:
    return {
        str(p.relative_to(out)): _content(pydicom.dcmread(p)) for p in sorted(out.rglob("*.dcm"))
    }


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("in")
    for p in SAMPLE.glob("*.dcm"):
        shutil.copy(p, folder / p.name)
    for name in ("OBXXXX1A_rle_2frame.dcm", "US1_J2KR.dcm"):
        shutil.copy(us_file(name), folder / name)
    return folder


@pytest.fixture(scope="module")
def reference(inputs: Path, tmp_path_factory) -> tuple[Path, float]:
    out = tmp_path_factory.mktemp("ref")
    t0 = time.monotonic()
    subprocess.run(_cmd(inputs, out), check=True, capture_output=True, timeout=600)
    return out, time.monotonic() - t0


@pytest.mark.parametrize(
    "fraction",
    [0.3, 0.7] + [pytest.param(f, marks=pytest.mark.slow) for f in (0.1, 0.5, 0.85, 0.95)],
)
def test_a_rerun_after_sigkill_equals_an_uninterrupted_run(
    inputs: Path, reference: tuple[Path, float], tmp_path: Path, fraction: float
) -> None:
    ref, seconds = reference
    out = tmp_path / "out"
    proc = subprocess.Popen(_cmd(inputs, out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(seconds * fraction)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    rerun = subprocess.run(_cmd(inputs, out), capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert _outputs(out) == _outputs(ref)
    leftovers = [p for p in out.rglob("*") if p.is_file() and p.suffix not in (".dcm", ".jsonl")]
    assert [p for p in leftovers if ".locks" not in p.parts] == []
    summary = json.loads(rerun.stdout)
    assert summary["failed"] == []


def test_two_runs_at_once_compute_each_instance_once(inputs: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    procs = [
        subprocess.Popen(_cmd(inputs, out), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        for _ in range(2)
    ]
    summaries = [json.loads(p.communicate(timeout=600)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    written = [e for e in map(json.loads, (out / "manifest.jsonl").read_text().splitlines())]
    outputs = [e["output"] for e in written if e["status"] == "written"]
    assert len(outputs) == len(set(outputs)) == len(list(out.rglob("*.dcm")))
    assert sum(s["instances_written"] for s in summaries) == len(outputs)
