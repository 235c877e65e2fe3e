"""Atomic writes, output layout, re-run detection and the manifest, on real files."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest
from conftest import us_file
from pydicom import dcmread

from dicom_sr.dicom.store import MANIFEST_NAME, Manifest, output_path, write_atomic


@pytest.fixture
def real_ds():
    """A real US instance with its pixels, renamed to a fresh SOP Instance UID."""
    ds = dcmread(us_file("US1_UNCR.dcm"))
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.8.498.1"
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.suffix != ".dcm")


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
def test_output_path_layout(tmp_path, real_ds):
    path = output_path(tmp_path, real_ds)
    assert path == tmp_path / real_ds.StudyInstanceUID / real_ds.SeriesInstanceUID / (
        real_ds.SOPInstanceUID + ".dcm"
    )
    real_ds.SOPInstanceUID = "../etc/passwd"
    with pytest.raises(ValueError, match="SOPInstanceUID"):
        output_path(tmp_path, real_ds)


def test_write_atomic_writes_a_complete_file_and_no_temp(tmp_path, real_ds):
    path = output_path(tmp_path, real_ds)
    write_atomic(real_ds, path)
    back = dcmread(path)
    assert back.SOPInstanceUID == real_ds.SOPInstanceUID
    assert back.PixelData == real_ds.PixelData
    assert open(path, "rb").read(132)[128:] == b"DICM"
    assert _leftovers(path.parent) == []
    write_atomic(real_ds, path)  # overwrite in place
    assert _leftovers(path.parent) == []
    assert Manifest(tmp_path).done(path)


def test_failed_write_leaves_old_file_and_no_temp(tmp_path, real_ds, monkeypatch):
    path = output_path(tmp_path, real_ds)
    write_atomic(real_ds, path)
    before = path.read_bytes()

    def crash(fh, **kwargs):
        fh.write(b"\0" * 1000)  # half a file, then the process "dies"
        raise OSError("disk full")

    monkeypatch.setattr(type(real_ds), "save_as", lambda self, fh, **kw: crash(fh, **kw))
    with pytest.raises(OSError, match="disk full"):
        write_atomic(real_ds, path)
    assert path.read_bytes() == before
    assert _leftovers(path.parent) == []

    fresh = path.with_name("1.2.826.0.1.3680043.8.498.2.dcm")
    with pytest.raises(OSError, match="disk full"):
        write_atomic(real_ds, fresh)
    assert not fresh.exists()
    assert _leftovers(path.parent) == []


def test_done_trusts_only_files_that_read_back(tmp_path, real_ds):
    manifest = Manifest(tmp_path)
    path = output_path(tmp_path, real_ds)
    assert not manifest.done(path)  # missing
    write_atomic(real_ds, path)
    assert manifest.done(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # truncated inside Pixel Data
    assert not manifest.done(path)
    path.write_bytes(b"not dicom at all" * 10)
    assert not manifest.done(path)
    other = path.with_name("1.2.3.4.dcm")  # parses, but is not the instance the name says
    other.write_bytes(data)
    assert not manifest.done(other)


def test_done_detects_truncated_encapsulated_file(tmp_path):
    ds = dcmread(us_file("examples_ybr_color.dcm"))  # 30-frame JPEG cine
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.8.498.3"
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    path = tmp_path / (ds.SOPInstanceUID + ".dcm")
    write_atomic(ds, path)
    assert Manifest(tmp_path).done(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 5000])
    assert not Manifest(tmp_path).done(path)


def test_manifest_lines_parse(tmp_path):
    manifest = Manifest(tmp_path)
    assert manifest.entries() == []
    entry = {
        "source": ["/data/a.dcm"],
        "source_sop_uid": "1.2.3",
        "output": "1/2/3.dcm",
        "sop_uid": "1.2.4",
        "series_uid": "1.2.5",
        "config_hash": "0123456789abcdef",
        "method": "cyclegan",
        "scale": 2,
        "frames": 30,
        "seconds": 1.5,
        "status": "written",
    }
    manifest.record(entry)
    manifest.record({**entry, "status": "failed", "reason": "bad frame\nsecond line"})
    lines = (tmp_path / MANIFEST_NAME).read_text().splitlines()
    assert len(lines) == 2
    assert json.loads(lines[0]) == entry
    assert json.loads(lines[1])["reason"] == "bad frame\nsecond line"
    assert [e["status"] for e in manifest.entries()] == ["written", "failed"]


def test_manifest_concurrent_appends_do_not_interleave(tmp_path):
    manifest = Manifest(tmp_path)
    payload = "x" * 3000

    def work(k: int) -> None:
        for i in range(25):
            manifest.record({"worker": k, "i": i, "pad": payload})

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    entries = [json.loads(line) for line in (tmp_path / MANIFEST_NAME).read_text().splitlines()]
    assert sorted((e["worker"], e["i"]) for e in entries) == [
        (k, i) for k in range(4) for i in range(25)
    ]


def test_manifest_ignores_a_torn_last_line(tmp_path):
    manifest = Manifest(tmp_path)
    manifest.record({"status": "written"})
    with open(tmp_path / MANIFEST_NAME, "a") as fh:
        fh.write('{"status": "wri')  # crash mid-line
    assert manifest.entries() == [{"status": "written"}]
    assert os.path.getsize(tmp_path / MANIFEST_NAME) > 0
    manifest.record({"status": "failed"})
    assert manifest.entries() == [{"status": "written"}, {"status": "failed"}]
