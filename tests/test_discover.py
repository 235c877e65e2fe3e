"""Discovery of ultrasound series among files, folders and DICOMDIRs; skips with reasons."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pydicom
import pytest
from conftest import US_FILES, us_file
from pydicom.data import get_testdata_file
from pydicom.encaps import encapsulate, generate_frames
from pydicom.fileset import FileSet
from pydicom.uid import MPEG2MPML, DeflatedExplicitVRLittleEndian

from dicom_sr.dicom.discover import Discovery, discover, inspect
from dicom_sr.errors import InputError


def _reason(found: Discovery, path: Path) -> str:
    reasons = [s.reason for s in found.skipped if Path(s.path) == path]
    assert len(reasons) == 1, f"{path} skipped {len(reasons)} times: {found.skipped}"
    return reasons[0]


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_every_real_file_is_found_with_its_header():
    paths = [us_file(n) for n in sorted(US_FILES)]
    found = discover(paths)
    headers = {p: pydicom.dcmread(p, stop_before_pixels=True) for p in paths}
    # files sharing a SOP Instance UID (twins: other encodings of one image) are kept once
    first: dict[str, Path] = {}
    for p in paths:
        first.setdefault(headers[p].SOPInstanceUID, p)
    instances = [i for s in found.series for i in s.instances]
    assert {i.path for i in instances} == set(first.values())
    assert {Path(s.path) for s in found.skipped} == set(paths) - set(first.values())
    assert all("same SOP Instance UID" in s.reason for s in found.skipped)
    for inst in instances:
        ds = headers[inst.path]
        assert inst.sop_instance_uid == ds.SOPInstanceUID
        assert inst.series_uid == ds.SeriesInstanceUID and inst.study_uid == ds.StudyInstanceUID
        assert inst.number_of_frames == int(ds.get("NumberOfFrames") or 1)
        assert (inst.rows, inst.columns) == (ds.Rows, ds.Columns)
        assert inst.transfer_syntax_uid == ds.file_meta.TransferSyntaxUID
        assert inst.photometric == ds.PhotometricInterpretation
        assert inst.instance_number == ds.get("InstanceNumber")
    for series in found.series:
        assert all(i.series_uid == series.series_uid for i in series.instances)
        numbers = [i.instance_number for i in series.instances]
        assert numbers == sorted(numbers)
        assert series.n_frames == sum(i.number_of_frames for i in series.instances)
    assert len({(s.study_uid, s.series_uid) for s in found.series}) == len(found.series)
    every = discover(paths, unique_uids=False)
    assert every.skipped == []
    assert sorted(i.path for s in every.series for i in s.instances) == sorted(paths)


def test_folders_recursive_dedup_and_read_only(tmp_path):
    nested = tmp_path / "a" / "b"
    nested.mkdir(parents=True)
    names = ["US1_UNCR.dcm", "examples_ybr_color.dcm", "OBXXXX1A.dcm"]
    for n in names:
        shutil.copy(us_file(n), nested / n)
    before = _digest(tmp_path)
    found = discover([tmp_path, nested / names[0], str(nested)])
    assert sorted(i.path.name for s in found.series for i in s.instances) == sorted(names)
    assert found.skipped == []
    assert _digest(tmp_path) == before


def test_dicomdir(tmp_path):
    fs = FileSet()
    names = ["US1_UNCR.dcm", "examples_ybr_color.dcm", "gdcm-US-ALOKA-16.dcm"]
    for n in names:
        fs.add(pydicom.dcmread(us_file(n)))
    fs.write(tmp_path / "media")
    dicomdir = tmp_path / "media" / "DICOMDIR"
    uids = {pydicom.dcmread(us_file(n)).SOPInstanceUID for n in names}
    for inputs in ([dicomdir], [tmp_path / "media"], [dicomdir, tmp_path / "media"]):
        found = discover(inputs)
        assert {i.sop_instance_uid for s in found.series for i in s.instances} == uids
        assert found.skipped == [], "the DICOMDIR itself is not noise"


def test_dicomdir_of_other_modalities():
    dicomdir = get_testdata_file("DICOMDIR")
    found = discover([dicomdir])
    assert found.series == []
    assert len(found.skipped) == len(list(FileSet(pydicom.dcmread(dicomdir))))
    assert all("not an ultrasound image: Modality" in s.reason for s in found.skipped)


def test_skips_with_reasons(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not DICOM")
    ct = tmp_path / "ct.dcm"
    shutil.copy(get_testdata_file("CT_small.dcm"), ct)
    no_pixels = tmp_path / "no_pixels.dcm"
    pydicom.dcmread(us_file("US1_UNCR.dcm"), stop_before_pixels=True).save_as(no_pixels)
    video = tmp_path / "video.dcm"
    ds = pydicom.dcmread(us_file("examples_ybr_color.dcm"))
    ds.file_meta.TransferSyntaxUID = MPEG2MPML
    ds.save_as(video)
    good = tmp_path / "good.dcm"
    shutil.copy(us_file("US1_UNCR.dcm"), good)

    found = discover([tmp_path, tmp_path / "missing.dcm"])
    assert [i.path for s in found.series for i in s.instances] == [good]
    assert "not a DICOM file" in _reason(found, text)
    assert "force=True" not in _reason(found, text)  # pydicom's advice is for programmers
    assert "Modality CT" in _reason(found, ct)
    assert "no Pixel Data" in _reason(found, no_pixels)
    reason = _reason(found, video)
    assert "MPEG2" in reason and MPEG2MPML in reason
    assert "no such file" in _reason(found, tmp_path / "missing.dcm")


@pytest.mark.parametrize(
    "name",
    [
        "US1_UNCR.dcm",
        "OBXXXX1A_expb.dcm",
        "OBXXXX1A_rle.dcm",
        "US1_J2KR.dcm",
        "examples_ybr_color.dcm",
    ],
)
@pytest.mark.parametrize("keep", [0.5, 0.99])
def test_truncated_files_are_skipped(tmp_path, name, keep):
    data = us_file(name).read_bytes()
    path = tmp_path / name
    path.write_bytes(data[: int(len(data) * keep)])
    found = discover([path])
    assert found.series == []
    assert "truncated" in _reason(found, path)


def test_missing_frames_are_skipped(tmp_path):
    ds = pydicom.dcmread(us_file("examples_ybr_color.dcm"))
    frames = list(generate_frames(ds.PixelData, number_of_frames=ds.NumberOfFrames))
    with_bot, without_bot = tmp_path / "bot.dcm", tmp_path / "nobot.dcm"
    ds.PixelData = encapsulate(frames[:-1], has_bot=True)
    ds.save_as(with_bot)
    ds.PixelData = encapsulate(frames[:-1], has_bot=False)
    ds.save_as(without_bot)
    found = discover([with_bot, without_bot])
    assert "lists 29 frames" in _reason(found, with_bot)
    assert "29 fragments for 30 frames" in _reason(found, without_bot)


def test_max_pixels():
    path = us_file("US1_UNCR.dcm")
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    pixels = ds.Rows * ds.Columns
    assert discover([path], max_pixels=pixels).skipped == []
    found = discover([path], max_pixels=pixels - 1)
    assert found.series == []
    assert "max_pixels" in _reason(found, path)


def test_deflated(tmp_path):
    ds = pydicom.dcmread(us_file("OBXXXX1A_2frame.dcm"))
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    good, short = tmp_path / "deflated.dcm", tmp_path / "short.dcm"
    ds.save_as(good)
    ds.NumberOfFrames = 3  # the data holds two
    ds.save_as(short)
    found = discover([good, short])
    assert [i.path for s in found.series for i in s.instances] == [good]
    assert "truncated" in _reason(found, short)


def _media(tmp_path: Path, names: list[str]) -> tuple[Path, list[Path]]:
    """A DICOMDIR over copies of `names`; returns it and the referenced files, in record order."""
    fs = FileSet()
    for n in names:
        fs.add(pydicom.dcmread(us_file(n)))
    fs.write(tmp_path / "media")
    dicomdir = tmp_path / "media" / "DICOMDIR"
    ds = pydicom.dcmread(dicomdir)
    refs = [
        dicomdir.parent.joinpath(*r.ReferencedFileID)
        for r in ds.DirectoryRecordSequence
        if "ReferencedFileID" in r
    ]
    return dicomdir, refs


def test_dicomdir_missing_file_is_a_counted_skip(tmp_path):
    dicomdir, refs = _media(tmp_path, ["US1_UNCR.dcm", "examples_ybr_color.dcm"])
    refs[0].unlink()
    found = discover([dicomdir])
    assert [i.path for s in found.series for i in s.instances] == [refs[1]]
    assert "listed in DICOMDIR" in _reason(found, refs[0]) and "missing" in _reason(found, refs[0])


def test_dicomdir_record_outside_its_root(tmp_path):
    """pydicom's FileSet refuses the whole set; we skip the one record and read the others."""
    dicomdir, refs = _media(tmp_path, ["US1_UNCR.dcm", "examples_ybr_color.dcm"])
    ds = pydicom.dcmread(dicomdir)
    record = next(r for r in ds.DirectoryRecordSequence if "ReferencedFileID" in r)
    # same value length, so the record offsets of the DICOMDIR stay right
    name = "OUTSIDE".ljust(len("\\".join(record.ReferencedFileID)) - 3, "0")
    outside = tmp_path / name
    shutil.copy(us_file("OBXXXX1A.dcm"), outside)
    record.ReferencedFileID = ["..", name]
    ds.save_as(dicomdir)
    with pytest.raises(PermissionError, match="inside the DICOMDIR root"):
        FileSet(pydicom.dcmread(dicomdir))  # pydicom refuses the whole set
    found = discover([dicomdir])
    assert [i.path for s in found.series for i in s.instances] == [refs[1]]
    (bad,) = found.skipped
    assert "outside the DICOMDIR's folder" in bad.reason and bad.tag.startswith("ReferencedFileID")
    assert str(outside) not in bad.path


def test_iter_inspected_is_lazy_and_excludes(tmp_path, monkeypatch):
    from dicom_sr.dicom import discover as discover_module

    for sub in ("a", "b", "out"):
        (tmp_path / sub).mkdir()
        shutil.copy(us_file("US1_UNCR.dcm"), tmp_path / sub / "x.dcm")
    inspected: list[Path] = []
    real = discover_module.inspect_file
    monkeypatch.setattr(
        discover_module, "inspect_file", lambda p, **kw: inspected.append(p) or real(p, **kw)
    )
    it = discover_module.iter_inspected([tmp_path], exclude=[tmp_path / "out"])
    first = next(it)
    assert first.path == tmp_path / "a" / "x.dcm" and inspected == [first.path]  # one at a time
    assert [r.path for r in it] == [tmp_path / "b" / "x.dcm"]  # b: a duplicate UID is kept here
    found = discover([tmp_path, tmp_path / "out" / "x.dcm"], exclude=[tmp_path / "out"])
    assert "excluded folder" in _reason(found, tmp_path / "out" / "x.dcm")


def _variant(tmp_path: Path, name: str, change) -> Path:
    ds = pydicom.dcmread(us_file("examples_ybr_color.dcm"))
    change(ds)
    path = tmp_path / f"{name}.dcm"
    ds.save_as(path)
    return path


@pytest.mark.parametrize(
    ("change", "reason", "tag"),
    [
        (
            lambda ds: setattr(ds, "Modality", "CT"),
            "Modality CT (0008,0060) under Ultrasound",
            "Modality",
        ),
        (
            lambda ds: setattr(ds, "NumberOfFrames", 0),
            "is 0, expected 1 or more; the Pixel Data holds 30",
            "NumberOfFrames",
        ),
        (
            lambda ds: ds.__delitem__("NumberOfFrames"),
            "absent (one frame) but the PixelData (7FE0,0010) holds 30",
            "NumberOfFrames",
        ),
        (
            lambda ds: setattr(ds, "StudyInstanceUID", "1." + "2" * 70),
            "not a valid UID",
            "StudyInstanceUID",
        ),
        (
            lambda ds: setattr(ds, "DerivationDescription", "Super-resolution x2 by dicom-sr 1.0"),
            "derived by dicom-sr; not processed again",
            "ContributingEquipmentSequence",
        ),
        (
            lambda ds: ds.SequenceOfUltrasoundRegions[0].__delitem__("RegionLocationMaxY1"),
            "has no RegionLocationMaxY1 (0018,601E)",
            "RegionLocationMaxY1",
        ),
    ],
    ids=["modality", "frames-0", "frames-absent", "uid", "own-output", "region"],
)
def test_unusable_headers_are_named_skips(tmp_path, change, reason, tag):
    path = _variant(tmp_path, "bad", change)
    found = discover([path])
    assert found.series == []
    (skip,) = found.skipped
    assert reason in skip.reason and skip.tag.startswith(tag)
    with pytest.raises(InputError, match="bad.dcm"):
        inspect(path)
