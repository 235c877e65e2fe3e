"""Atomic writes, output layout, the manifest as the resume record, stale parts and locks."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import filelock
import pytest
from conftest import us_file
from pydicom import dcmread

from dicom_sr import fsio
from dicom_sr.dicom import store
from dicom_sr.dicom.store import (
    MANIFEST_NAME,
    Manifest,
    instance_path,
    output_path,
    read_complete,
    remove_stale_parts,
    series_lock,
    write_atomic,
)
from dicom_sr.errors import InputError, WriteError

ROOT = Path(__file__).resolve().parents[1]
UID_A = "1.2.826.0.1.3680043.8.498.1"


@pytest.fixture
def real_ds():
    """A real US instance with its pixels, renamed to a fresh SOP Instance UID."""
    ds = dcmread(us_file("US1_UNCR.dcm"))
    ds.SOPInstanceUID = UID_A
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.suffix != ".dcm")


def _written(manifest: Manifest, path: Path, size: int) -> None:
    manifest.record({"output": str(path), "status": "written", "bytes": size})


def _run_python(code: str, *args: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}"}
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args], env=env, cwd=ROOT, **kwargs
    )


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
def test_output_path_layout_and_uid_checks(tmp_path, real_ds):
    path = output_path(tmp_path, real_ds)
    assert path == tmp_path / real_ds.StudyInstanceUID / real_ds.SeriesInstanceUID / (
        real_ds.SOPInstanceUID + ".dcm"
    )
    real_ds.SOPInstanceUID = "../etc/passwd"
    with pytest.raises(InputError, match=r"SOPInstanceUID \(0008,0018\)") as err:
        output_path(tmp_path, real_ds)
    assert err.value.path == str(tmp_path) and err.value.tag == "SOPInstanceUID (0008,0018)"
    too_long = "1.2." + "3" * 70  # digits and dots, but over the 64-character limit
    with pytest.raises(InputError, match=r"StudyInstanceUID \(0020,000D\) .*74 characters"):
        instance_path(tmp_path, too_long, "1.2.3", "1.2.4")
    with pytest.raises(InputError, match=r"SeriesInstanceUID \(0020,000E\)"):
        instance_path(tmp_path, "1.2.3", "1.02.3", "1.2.4")  # leading zero
    with pytest.raises(InputError, match=r"missing SOPInstanceUID \(0008,0018\)"):
        instance_path(tmp_path, "1.2.3", "1.2.4", "")
    # padding is not part of the name: the path holds the UID as validated
    padded = instance_path(tmp_path, " 1.2.3 ", "1.2.4\0", "1.2.5")
    assert padded == tmp_path / "1.2.3" / "1.2.4" / "1.2.5.dcm"


def test_write_atomic_returns_size_and_leaves_no_temp(tmp_path, real_ds):
    path = output_path(tmp_path, real_ds)
    size = write_atomic(real_ds, path)
    assert size == path.stat().st_size > 128
    back = dcmread(path)
    assert back.SOPInstanceUID == real_ds.SOPInstanceUID
    assert back.PixelData == real_ds.PixelData
    assert open(path, "rb").read(132)[128:] == b"DICM"
    assert _leftovers(path.parent) == []
    assert write_atomic(real_ds, path) == size  # overwrite in place
    assert _leftovers(path.parent) == []


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_outputs_get_the_mode_the_umask_gives(tmp_path, real_ds, umask):
    old = os.umask(umask)
    try:
        path = output_path(tmp_path, real_ds)
        write_atomic(real_ds, path)
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_failed_write_raises_write_error_and_leaves_old_file(tmp_path, real_ds, monkeypatch):
    path = output_path(tmp_path, real_ds)
    write_atomic(real_ds, path)
    before = path.read_bytes()

    def crash(self, fh, **kwargs):
        fh.write(b"\0" * 1000)  # half a file, then the disk fills up
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(type(real_ds), "save_as", crash)
    with pytest.raises(WriteError) as info:
        write_atomic(real_ds, path)
    assert info.value.disk_full
    assert info.value.path == str(path)
    assert "No space left on device (errno 28)" in str(info.value)
    assert path.read_bytes() == before
    assert _leftovers(path.parent) == []

    fresh = path.with_name("1.2.826.0.1.3680043.8.498.2.dcm")
    with pytest.raises(WriteError):
        write_atomic(real_ds, fresh)
    assert not fresh.exists()
    assert _leftovers(path.parent) == []


def test_a_name_the_file_system_refuses_is_a_write_error(tmp_path, real_ds):
    path = tmp_path / ("1" * 300) / "1.2.3.dcm"  # a folder name over NAME_MAX (255)
    with pytest.raises(WriteError, match="errno 36") as info:
        write_atomic(real_ds, path)
    assert not info.value.disk_full


@pytest.fixture
def tiny_disk(tmp_path):
    """A 256 KiB tmpfs (needs root and mount rights; skipped where they are missing)."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a tmpfs needs root")
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], capture_output=True
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


def test_a_really_full_disk_is_a_write_error(tiny_disk, real_ds):
    """US1_UNCR is ~900 KB: it cannot fit on a 256 KiB file system."""
    manifest = Manifest(tiny_disk)
    manifest.record({"status": "started"})  # the manifest itself still fits
    path = output_path(tiny_disk, real_ds)
    with pytest.raises(WriteError) as info:
        write_atomic(real_ds, path)
    assert info.value.disk_full
    assert not path.exists()
    assert _leftovers(path.parent) == []


def test_done_is_read_from_the_manifest_with_a_size_check(tmp_path, real_ds, monkeypatch):
    manifest = Manifest(tmp_path)
    path = output_path(tmp_path, real_ds)
    assert not manifest.done(path)  # missing
    size = write_atomic(real_ds, path)
    assert not manifest.done(path)  # on disk but not recorded: written again
    _written(manifest, path, size)
    assert manifest.done(path)
    assert manifest.status(path) == "done"

    monkeypatch.setattr(store, "dcmread", lambda *a, **k: pytest.fail("done() read the DICOM"))
    assert manifest.done(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # truncated: the size no longer matches
    assert not manifest.done(path)
    path.unlink()
    assert not manifest.done(path)


def test_failures_are_recorded_and_the_latest_entry_wins(tmp_path, real_ds):
    manifest = Manifest(tmp_path)
    path = output_path(tmp_path, real_ds)
    manifest.record({"output": str(path), "status": "failed", "reason": "disk full"})
    assert manifest.failed(path) == "disk full"
    assert manifest.status(path) == "failed"
    assert not manifest.done(path)
    size = write_atomic(real_ds, path)
    # another Manifest object (another process) records; this one sees it: the file grew
    _written(Manifest(tmp_path), path.relative_to(tmp_path), size)  # relative output, too
    assert manifest.done(path)
    assert manifest.failed(path) is None
    assert manifest.latest(path)["bytes"] == size


def test_legacy_entries_without_a_size_are_checked_by_reading_back(tmp_path):
    ds = dcmread(us_file("examples_ybr_color.dcm"))  # 30-frame JPEG cine
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.8.498.3"
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    path = tmp_path / (ds.SOPInstanceUID + ".dcm")
    write_atomic(ds, path)
    Manifest(tmp_path).record({"output": path.name, "status": "written"})
    assert Manifest(tmp_path).done(path)
    assert read_complete(path) is not None
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 5000])
    assert read_complete(path) is None
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
        "bytes": 1234,
        "status": "written",
    }
    manifest.record(entry)
    manifest.record({**entry, "status": "failed", "reason": "bad frame\nsecond line"})
    lines = (tmp_path / MANIFEST_NAME).read_text().splitlines()
    assert len(lines) == 2
    assert json.loads(lines[0]) == entry
    assert json.loads(lines[1])["reason"] == "bad frame\nsecond line"
    assert [e["status"] for e in manifest.entries()] == ["written", "failed"]
    assert manifest.failed(tmp_path / "1/2/3.dcm") == "bad frame\nsecond line"


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
    manifest.record({"status": "written", "output": "a.dcm", "bytes": 1})
    assert manifest.latest(tmp_path / "a.dcm")["bytes"] == 1
    with open(tmp_path / MANIFEST_NAME, "a") as fh:
        fh.write('{"status": "failed", "output": "a.dcm", "rea')  # crash mid-line
    assert manifest.latest(tmp_path / "a.dcm")["status"] == "written"
    assert len(manifest.entries()) == 1
    manifest.record({"status": "failed", "output": "a.dcm", "reason": "x"})
    assert [e["status"] for e in manifest.entries()] == ["written", "failed"]
    assert manifest.failed(tmp_path / "a.dcm") == "x"


def test_a_write_killed_midway_leaves_a_part_that_the_next_run_removes(tmp_path):
    """SIGKILL between create and rename, for real, then remove_stale_parts at start."""
    child = _run_python(
        """
        import os, signal, sys
        from pydicom import dcmread
        from conftest import us_file
        from dicom_sr.dicom.store import write_atomic
        ds = dcmread(us_file("US1_UNCR.dcm"))
        def die(self, fh, **kw):
            fh.write(b"\\0" * 4096)
            fh.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        type(ds).save_as = die
        write_atomic(ds, sys.argv[1])
        """,
        str(tmp_path / "1.2.3" / "1.2.4" / "1.2.5.dcm"),
    )
    assert child.wait(timeout=60) == -signal.SIGKILL
    folder = tmp_path / "1.2.3" / "1.2.4"
    parts = _leftovers(folder)
    assert len(parts) == 1 and parts[0].startswith(".1.2.5.dcm.") and parts[0].endswith(".part")
    assert f"-{child.pid}-" in parts[0]
    # a part of a live writer (this process), and a recent one from another host, stay
    live = fsio.part_name(folder / "1.2.6.dcm")
    live.write_bytes(b"x")
    foreign = folder / ".1.2.7.dcm.otherhost-1-0123abcd.part"
    foreign.write_bytes(b"x")
    old_foreign = folder / ".1.2.8.dcm.otherhost-1-4567abcd.part"
    old_foreign.write_bytes(b"x")
    os.utime(old_foreign, (time.time() - 2 * 86400,) * 2)
    assert remove_stale_parts(tmp_path) == 2
    assert sorted(_leftovers(folder)) == sorted([live.name, foreign.name])
    assert remove_stale_parts(tmp_path / "missing") == 0


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
def test_series_lock_rejects_a_path_in_the_uid(tmp_path):
    with pytest.raises(InputError, match=r"SeriesInstanceUID \(0020,000E\)"):
        series_lock(tmp_path, "../../etc")
    assert not (tmp_path / ".locks").exists()


def test_series_lock_excludes_another_process(tmp_path):
    ready = tmp_path / "ready"
    child = _run_python(
        """
        import sys, time
        from pathlib import Path
        from dicom_sr.dicom.store import series_lock
        with series_lock(sys.argv[1], "1.2.3.4"):
            Path(sys.argv[2]).write_text("locked")
            time.sleep(3)
        """,
        str(tmp_path),
        str(ready),
    )
    try:
        deadline = time.monotonic() + 30
        while not ready.exists():
            assert child.poll() is None and time.monotonic() < deadline, "child never locked"
            time.sleep(0.05)
        with pytest.raises(filelock.Timeout):
            with series_lock(tmp_path, "1.2.3.4", timeout=0.2):
                pass
        with series_lock(tmp_path, "1.2.3.5", timeout=0.2):  # another series is free
            pass
    finally:
        assert child.wait(timeout=60) == 0
    with series_lock(tmp_path, "1.2.3.4", timeout=5):  # released when the child is done
        pass
    assert (tmp_path / store.LOCKS_DIR / "1.2.3.4.lock").exists()


def test_two_processes_compute_one_series_once(tmp_path):
    """Each writer locks the series, skips what the manifest says is done, writes, records."""
    code = """
        import sys, time
        from pathlib import Path
        from pydicom import dcmread
        from conftest import us_file
        from dicom_sr.dicom.store import Manifest, output_path, series_lock, write_atomic
        out = Path(sys.argv[1])
        ds = dcmread(us_file("US1_UNCR.dcm"))
        ds.SOPInstanceUID = "1.2.826.0.1.3680043.8.498.9"
        path = output_path(out, ds)
        with series_lock(out, ds.SeriesInstanceUID):
            manifest = Manifest(out)
            if not manifest.done(path):
                time.sleep(0.5)  # the "computation"
                size = write_atomic(ds, path)
                manifest.record({"output": str(path), "status": "written", "bytes": size})
                with open(out / "computed.log", "a") as fh:
                    fh.write(sys.argv[2] + "\\n")
        """
    children = [_run_python(code, str(tmp_path), str(k)) for k in range(2)]
    assert [c.wait(timeout=120) for c in children] == [0, 0]
    assert len((tmp_path / "computed.log").read_text().split()) == 1
    assert len([e for e in Manifest(tmp_path).entries() if e["status"] == "written"]) == 1


def test_shared_manifest_is_one_object_per_folder_and_sees_new_records(tmp_path):
    shared = Manifest.shared(tmp_path)
    assert Manifest.shared(tmp_path / ".") is shared
    assert Manifest.shared(tmp_path / "other") is not shared
    assert shared.latest(tmp_path / "a.dcm") is None
    Manifest(tmp_path).record({"output": "a.dcm", "status": "failed", "reason": "r"})
    assert shared.failed(tmp_path / "a.dcm") == "r"


def test_derived_uids_name_files_and_change_with_identity_and_revision(tmp_path):
    from dicom_sr.dicom.provenance import derived_series_uid, derived_sop_uid

    root = "1.2.826.0.1.3680043.8.498"
    src = "1.2.840.113619.2.1.1.322987881.621.736170080.681"
    base = derived_sop_uid(root, src, "aaaa")
    assert base == derived_sop_uid(root, src, "aaaa", revision=0)  # revisions came later
    assert base != derived_sop_uid(root, src, "bbbb")  # other pixels, other UID
    revs = {derived_sop_uid(root, src, "aaaa", revision=r) for r in range(4)}
    assert len(revs) == 4 and base in revs
    series = derived_series_uid(root, src, "aaaa", revision=2)
    assert series != derived_series_uid(root, src, "aaaa")
    path = instance_path(tmp_path, src, series, base)  # valid UIDs of at most 64 characters
    assert path.name == f"{base}.dcm" and len(base) <= 64
    with pytest.raises(ValueError, match="revision"):
        derived_sop_uid(root, src, "aaaa", revision=-1)
