"""Running unattended: exit codes, the --json summary, log lines without a terminal, failures that
never end a run, cancellation, versioned re-derivations and the ibp fallback, on real files."""

from __future__ import annotations

import errno
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from click.testing import CliRunner

from dicom_sr.cli import main
from dicom_sr.config import load_pipeline
from dicom_sr.dicom.discover import discover
from dicom_sr.errors import Cancelled
from dicom_sr.pipeline import process_series
from tests.conftest import us_file

SAMPLE = Path(__file__).resolve().parent.parent / "sample_data"
BICUBIC = load_pipeline(None, {"engine.method": "bicubic"})


def _process(*args: str) -> tuple[int, dict]:
    res = CliRunner().invoke(main, ["process", *args, "--json", "--method", "bicubic"])
    return res.exit_code, json.loads(res.stdout) if res.stdout.strip() else {}


def _digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def study(tmp_path: Path) -> Path:
    """Two real sample files and two unusable ones (not DICOM, truncated) in one folder."""
    folder = tmp_path / "study"
    folder.mkdir()
    shutil.copy(SAMPLE / "us_phantom_single.dcm", folder / "a.dcm")
    shutil.copy(us_file("US1_UNCR.dcm"), folder / "b.dcm")
    (folder / "notes.txt").write_text("not an image")
    data = (SAMPLE / "us_phantom_rgb.dcm").read_bytes()
    (folder / "cut.dcm").write_bytes(data[: len(data) // 2])
    return folder


def test_skipped_inputs_are_listed_and_the_run_exits_0(study: Path, tmp_path: Path) -> None:
    before = _digests(study)
    code, summary = _process(str(study), "--out", str(tmp_path / "out"))
    assert code == 0 and summary["exit_code"] == 0
    assert summary["instances_written"] == 2 and summary["failed"] == []
    reasons = {Path(k["path"]).name: k["reason"] for k in summary["skipped"]}
    assert set(reasons) == {"notes.txt", "cut.dcm"}
    assert "truncated" in reasons["cut.dcm"] and "(7FE0,0010)" in reasons["cut.dcm"]
    assert all(s["status"] == "done" for s in summary["series"])
    assert _digests(study) == before  # inputs untouched


def test_nothing_usable_exits_1(tmp_path: Path) -> None:
    (tmp_path / "x.txt").write_text("hello")
    code, summary = _process(str(tmp_path / "x.txt"), "--out", str(tmp_path / "out"))
    assert code == 1 and summary["series"] == [] and len(summary["skipped"]) == 1


def test_an_unusable_out_is_a_bad_option(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    res = CliRunner().invoke(
        main, ["process", str(SAMPLE / "us_phantom_single.dcm"), "--out", str(blocker / "o")]
    )
    assert res.exit_code == 2 and "--out" in res.output


def test_a_full_disk_fails_instances_with_a_reason_and_exits_1(
    study: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ENOSPC on the second write: that instance is failed with a plain reason, the first is
    written, the run goes on, the exit status is 1 and --json lists the failure."""
    import dicom_sr.pipeline.series as series_mod

    real = series_mod.write_atomic
    calls = []

    def full_after_one(ds, path):
        calls.append(path)
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(ds, path)

    monkeypatch.setattr(series_mod, "write_atomic", full_after_one)
    code, summary = _process(str(study), "--out", str(tmp_path / "out"))
    assert code == 1 and summary["exit_code"] == 1
    assert summary["instances_written"] == 1
    [failed] = summary["failed"]
    assert "No space left on device" in failed["reason"] and "Traceback" not in failed["reason"]
    assert {s["status"] for s in summary["series"]} == {"done", "failed"}
    manifest = (tmp_path / "out" / "manifest.jsonl").read_text()
    records = [json.loads(x) for x in manifest.splitlines()]
    assert [r["status"] for r in records].count("failed") == 1


def test_an_unexpected_engine_error_costs_one_instance(
    study: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dicom_sr.pipeline.frames as frames_mod

    real = frames_mod.upscale
    seen = []

    def flaky(crop, model, config):
        seen.append(crop.shape)
        if len(seen) == 1:
            raise RuntimeError("CUDA out of memory (simulated)")
        return real(crop, model, config)

    monkeypatch.setattr(frames_mod, "upscale", flaky)
    code, summary = _process(str(study), "--out", str(tmp_path / "out"))
    assert code == 1
    assert [f["reason"] for f in summary["failed"]] == [
        "RuntimeError: CUDA out of memory (simulated)"
    ]
    assert summary["instances_written"] == 1


def test_without_a_terminal_the_log_says_what_happens(study: Path, tmp_path: Path) -> None:
    """stderr to a file: timestamped lines that name the series, start to end; no patient name."""
    log = tmp_path / "run.log"
    with open(log, "w") as err:
        proc = subprocess.run(
            [sys.executable, "-m", "dicom_sr.cli", "process", str(study)]
            + ["--out", str(tmp_path / "out"), "--method", "bicubic"],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            timeout=300,
        )
    assert proc.returncode == 0
    text = log.read_text()
    lines = text.splitlines()
    assert any("INFO" in x and "instance(s)" in x and "frame(s)" in x for x in lines)
    assert sum(1 for x in lines if "series" in x and ": done, " in x) == 2
    assert any("skipping" in x and "cut.dcm" in x for x in lines)
    assert all(x[:4].isdigit() for x in lines)  # every line timestamped, no bars
    for name in (
        "PHANTOM^SAMPLE",
        "PHANTOM-0001",
        str(pydicom.dcmread(us_file("US1_UNCR.dcm")).PatientName),
    ):
        assert name not in text
    assert "2 instances written" in proc.stdout


def _series(path: Path):
    [series] = discover([path]).series
    return series


def test_cancel_leaves_no_output_and_no_temporary_file(tmp_path: Path) -> None:
    series = _series(SAMPLE / "us_phantom_cine.dcm")
    polls = []

    def cancel() -> bool:
        polls.append(1)
        return len(polls) > 3  # a few frames in

    with pytest.raises(Cancelled):
        process_series(series, BICUBIC, tmp_path, cancel=cancel)
    assert not list(tmp_path.rglob("*.dcm")) and not list(tmp_path.rglob("*.part"))
    result = process_series(series, BICUBIC, tmp_path)  # picked up again, from the start
    assert result.status == "done" and result.frames == 6


def test_a_revision_is_a_new_series_that_says_so(tmp_path: Path) -> None:
    series = _series(SAMPLE / "us_phantom_single.dcm")
    first = process_series(series, BICUBIC, tmp_path)
    second = process_series(series, BICUBIC, tmp_path, revision=2)
    assert first.derived_series_uid != second.derived_series_uid
    a = pydicom.dcmread(first.instances[0].output)
    b = pydicom.dcmread(second.instances[0].output)
    assert a.SOPInstanceUID != b.SOPInstanceUID
    assert b.SeriesDescription.endswith("rev 2") and not a.SeriesDescription.endswith("rev 2")
    assert np.array_equal(a.pixel_array, b.pixel_array)
    # the provenance names the configuration that ran, not one with the suffix rewritten
    assert f"config {BICUBIC.hash()}" in b.DerivationDescription
    assert a.DerivationDescription == b.DerivationDescription


def test_too_little_tissue_gets_ibp_with_the_reason(tmp_path: Path) -> None:
    """A 20-row strip cannot train a model: the series still comes back, as ibp, and says so."""
    ds = pydicom.dcmread(SAMPLE / "us_phantom_single.dcm")
    strip = np.ascontiguousarray(ds.pixel_array[100:120, :300])
    del ds.SequenceOfUltrasoundRegions
    ds.Rows, ds.Columns = strip.shape
    ds.PixelData = strip.tobytes()
    src = tmp_path / "strip.dcm"
    ds.save_as(src)
    config = load_pipeline(None, {"engine.method": "zssr", "engine.iterations": 5})
    result = process_series(_series(src), config, tmp_path / "out")
    assert result.status == "done"
    assert result.guard["decision"] == "ibp" and "tissue" in result.guard["reason"]
    out = pydicom.dcmread(result.instances[0].output)
    assert "guard: output ibp" in out.DerivationDescription
    ibp = process_series(
        _series(src), load_pipeline(None, {"engine.method": "ibp"}), tmp_path / "ibp"
    )
    assert np.array_equal(out.pixel_array, pydicom.dcmread(ibp.instances[0].output).pixel_array)


def test_the_guard_off_writes_the_model_and_says_so(tmp_path: Path) -> None:
    """With ``engine.guard = false`` the guard has no scores: the provenance says why, the
    series is written (its unscored verdict once crashed the provenance text)."""
    config = load_pipeline(
        None,
        {"engine.method": "zssr", "engine.iterations": 2, "engine.guard": False,
         "engine.ensemble": 1, "engine.back_projection_iters": 0},
    )  # fmt: skip
    result = process_series(_series(SAMPLE / "us_phantom_single.dcm"), config, tmp_path)
    assert result.status == "done" and result.guard["decision"] == "model"
    out = pydicom.dcmread(result.instances[0].output)
    assert "guard: output model: guard off" in out.DerivationDescription


def test_a_failure_outside_any_instance_fails_the_series_not_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The spool of decoded frames cannot be created (say the disk is full): the series fails
    with the reason, every instance has an outcome, and ``process_series`` returns."""
    import dicom_sr.pipeline.series as series_mod

    def no_spool(**_kw):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(series_mod, "FrameCache", no_spool)
    series = _series(SAMPLE / "us_phantom_cine.dcm")
    result = process_series(series, BICUBIC, tmp_path)
    assert result.status == "failed"
    assert "No space left on device" in result.reason
    assert [r.status for r in result.instances] == ["failed"] * len(series.instances)
    assert not list(tmp_path.rglob("*.dcm"))
