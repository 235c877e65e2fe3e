"""End to end: ``dicom-sr process`` on the real ultrasound files, results read back."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from click.testing import CliRunner
from pydicom.pixels import apply_color_lut, convert_color_space

from dicom_sr.cli import main
from dicom_sr.config import load_pipeline
from tests.conftest import US_FILES, us_file


def _run(*args: str) -> tuple[int, dict | None, str]:
    result = CliRunner().invoke(main, ["process", *args, "--json"], catch_exceptions=False)
    try:
        summary = json.loads(result.stdout)
    except json.JSONDecodeError:
        summary = None
    return result.exit_code, summary, result.output


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


#: pydicom 3.0.2's apply_color_lut reads non-segmented LUTs of big-endian files in the machine's
#: byte order; the little-endian twin of those files is the reference instead.
_LE_TWIN = {"OBXXXX1A_expb.dcm": "OBXXXX1A.dcm", "OBXXXX1A_expb_2frame.dcm": "OBXXXX1A_2frame.dcm"}


def _source_rgb_or_grey(ds: pydicom.Dataset, name: str) -> np.ndarray:
    """The source pixels as the viewer shows them: RGB uint8 for colour, stored values for grey."""
    if name in _LE_TWIN:
        ds = pydicom.dcmread(us_file(_LE_TWIN[name]))
    arr = ds.pixel_array
    pi = ds.PhotometricInterpretation
    if pi == "PALETTE COLOR":
        arr = apply_color_lut(arr, ds)
        if arr.dtype != np.uint8:
            arr = np.round(arr / 257.0).astype(np.uint8)
    elif (
        pi.startswith("YBR")
        and ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    ):
        arr = convert_color_space(arr, pi, "RGB")
    return arr


@pytest.mark.parametrize("name", sorted(US_FILES), ids=lambda n: n.removesuffix(".dcm"))
def test_process_bicubic_every_real_file(name: str, tmp_path: Path) -> None:
    src = us_file(name)
    if name == "color3d_jpeg_baseline.dcm":
        pytest.skip("120-frame cine: covered by test_process_cine_streams (slow)")
    inputs = tmp_path / "in"
    inputs.mkdir()
    shutil.copy(src, inputs / name)
    before = _digest(inputs)
    code, summary, out = _run(
        str(inputs),
        "--out",
        str(tmp_path / "out"),
        "--method",
        "bicubic",
        "--scale",
        "2",
        "--compress",
        "rle",
    )
    assert code == 0, out
    assert _digest(inputs) == before, "input modified"
    assert summary["skipped"] == [], summary["skipped"]
    [series] = summary["series"]
    [written] = series["written"]
    out_ds = pydicom.dcmread(written)
    src_ds = pydicom.dcmread(src)

    # identity and provenance
    assert out_ds.SOPClassUID == src_ds.SOPClassUID
    assert out_ds.StudyInstanceUID == src_ds.StudyInstanceUID
    assert out_ds.SeriesInstanceUID != src_ds.SeriesInstanceUID
    assert out_ds.SOPInstanceUID != src_ds.SOPInstanceUID
    assert list(out_ds.ImageType)[:2] == ["DERIVED", "SECONDARY"]
    ref = out_ds.SourceImageSequence[0]
    assert ref.ReferencedSOPInstanceUID == src_ds.SOPInstanceUID
    assert ref.PurposeOfReferenceCodeSequence[0].CodeValue == "121322"
    assert out_ds.DerivationCodeSequence[0].CodeValue == "113085"
    assert summary["config_hash"] in out_ds.DerivationDescription
    assert "bicubic" in out_ds.DerivationDescription
    equip = out_ds.ContributingEquipmentSequence[-1]
    assert equip.Manufacturer == "dicom-sr"
    assert equip.PurposeOfReferenceCodeSequence[0].CodeValue == "109102"
    if src_ds.get("LossyImageCompression") == "01":
        assert out_ds.LossyImageCompression == "01"

    # geometry and pixels
    frames = int(src_ds.get("NumberOfFrames", 1) or 1)
    assert int(out_ds.get("NumberOfFrames", 1) or 1) == frames
    assert (out_ds.Rows, out_ds.Columns) == (2 * src_ds.Rows, 2 * src_ds.Columns)
    colour = src_ds.SamplesPerPixel == 3 or src_ds.PhotometricInterpretation == "PALETTE COLOR"
    out_px = out_ds.pixel_array
    src_px = _source_rgb_or_grey(src_ds, name)
    if frames == 1:
        out_px, src_px = out_px[None], src_px[None]
    if out_ds.PhotometricInterpretation == "MONOCHROME2" and colour:
        # grey stored as colour: must really be grey
        assert np.abs(src_px.astype(int) - src_px[..., :1].astype(int)).max() <= 1
        src_px = src_px[..., 0]
    elif colour:
        assert out_ds.PhotometricInterpretation == "RGB"
    # downscaling the output by 2x2 block means gives the source back within a few levels
    # (bicubic and pixel replication both preserve local means up to interpolation overshoot)
    o = out_px.astype(np.float64)
    blocks = o.reshape(o.shape[0], src_ds.Rows, 2, src_ds.Columns, 2, *o.shape[3:]).mean(
        axis=(2, 4)
    )
    err = np.abs(blocks - src_px.astype(np.float64))
    scale = 255.0 if out_ds.BitsStored == 8 else float(2**out_ds.BitsStored - 1)
    assert np.median(err) / scale < 0.01
    assert err.mean() / scale < 0.02


def test_process_regions_pixel_replication_outside_tissue(tmp_path: Path) -> None:
    """Outside the tissue region the output is the source replicated, exactly (nothing invented)."""
    src = us_file("JPGLosslessP14SV1_1s_1f_8b.dcm")
    code, summary, out = _run(str(src), "--out", str(tmp_path), "--method", "ibp", "--scale", "2")
    assert code == 0, out
    out_ds = pydicom.dcmread(summary["series"][0]["written"][0])
    src_ds = pydicom.dcmread(src)
    src_px = src_ds.pixel_array
    rep = np.repeat(np.repeat(src_px, 2, axis=0), 2, axis=1)
    outside = np.ones(src_px.shape, bool)
    for r in src_ds.SequenceOfUltrasoundRegions:
        if r.RegionSpatialFormat == 1 and r.RegionDataType == 1:
            outside[
                r.RegionLocationMinY0 : r.RegionLocationMaxY1 + 1,
                r.RegionLocationMinX0 : r.RegionLocationMaxX1 + 1,
            ] = False
    mask = np.repeat(np.repeat(outside, 2, axis=0), 2, axis=1)
    assert mask.any() and not mask.all()
    np.testing.assert_array_equal(out_ds.pixel_array[mask], rep[mask])
    # inside, ibp changed something (it is not a replication)
    assert np.any(out_ds.pixel_array[~mask] != rep[~mask])


def test_rerun_skips_done_and_keeps_files(tmp_path: Path) -> None:
    src = us_file("US1_UNCR.dcm")
    out = tmp_path / "out"
    code, first, _ = _run(str(src), "--out", str(out), "--method", "bicubic")
    assert code == 0
    path = Path(first["series"][0]["written"][0])
    mtime = path.stat().st_mtime_ns
    code, second, _ = _run(str(src), "--out", str(out), "--method", "bicubic")
    assert code == 0
    assert second["series"][0]["written"] == []
    assert second["series"][0]["already_done"] == [str(path)]
    assert path.stat().st_mtime_ns == mtime
    assert not list(out.rglob("*.tmp*"))
    lines = (out / "manifest.jsonl").read_text().splitlines()
    assert (
        len(lines) == 1 and json.loads(lines[0])["sop_uid"] == pydicom.dcmread(path).SOPInstanceUID
    )
    # another configuration is another derived series, not a clash
    code, third, _ = _run(str(src), "--out", str(out), "--method", "ibp")
    assert code == 0 and len(third["series"][0]["written"]) == 1
    assert third["series"][0]["derived_series_uid"] != first["series"][0]["derived_series_uid"]


def test_summary_table_is_whole_in_a_log(tmp_path: Path) -> None:
    """Sent to a file, the table keeps its headers (rich would assume 80 columns)."""
    args = [str(us_file("US1_UNCR.dcm")), "--out", str(tmp_path / "out"), "--method", "bicubic"]
    result = CliRunner().invoke(main, ["process", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    header = next(line for line in result.stdout.splitlines() if "series (derived)" in line)
    for col in ("status", "output", "already done", "train s", "total s"):
        assert col in header, header


def test_bad_inputs_are_reported_and_skipped(tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    good = us_file("US1_UNCR.dcm")
    shutil.copy(good, inputs / "good.dcm")
    (inputs / "notes.txt").write_text("not dicom")
    raw = good.read_bytes()
    (inputs / "truncated.dcm").write_bytes(raw[: len(raw) // 2])
    shutil.copy(pydicom.data.get_testdata_file("CT_small.dcm"), inputs / "ct.dcm")
    nopix = pydicom.dcmread(us_file("US1_UNCI.dcm"))
    del nopix.PixelData
    nopix.SOPInstanceUID = pydicom.uid.generate_uid()
    nopix.save_as(inputs / "nopixels.dcm")
    before = _digest(inputs)

    code, summary, out = _run(str(inputs), "--out", str(tmp_path / "out"), "--method", "bicubic")
    assert code == 0, out
    assert _digest(inputs) == before
    skipped = {Path(k["path"]).name: k["reason"] for k in summary["skipped"]}
    assert set(skipped) == {"notes.txt", "truncated.dcm", "ct.dcm", "nopixels.dcm"}, skipped
    assert "CT" in skipped["ct.dcm"]
    assert all(reason for reason in skipped.values())
    assert summary["instances_written"] == 1


def test_nothing_usable_exits_nonzero(tmp_path: Path) -> None:
    (tmp_path / "junk.bin").write_bytes(b"\0" * 300)
    code, summary, _ = _run(str(tmp_path), "--out", str(tmp_path / "out"))
    assert code != 0
    assert summary["skipped"] and summary["instances_written"] == 0


def test_bad_option_names_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "bad"\n[engine]\nscale = 2\ncolour = 1\n')
    result = CliRunner().invoke(
        main,
        [
            "process",
            str(us_file("US1_UNCR.dcm")),
            "--out",
            str(tmp_path / "o"),
            "--pipeline",
            str(bad),
        ],
    )
    assert result.exit_code == 2
    assert "engine.colour" in result.output


def test_pixel_limit_skips_large_frames(tmp_path: Path) -> None:
    pipe = tmp_path / "small.toml"
    pipe.write_text('name = "small"\n[engine]\nmethod = "bicubic"\n[output]\nmax_pixels = 10000\n')
    code, summary, _ = _run(
        str(us_file("US1_UNCR.dcm")),
        str(us_file("color-px.dcm")),
        "--out",
        str(tmp_path / "o"),
        "--pipeline",
        str(pipe),
    )
    assert code != 0
    reasons = " ".join(k["reason"] for k in summary["skipped"])
    assert "pixel" in reasons.lower()


@pytest.mark.parametrize("name", ["examples_ybr_color.dcm", "OBXXXX1A.dcm"])
def test_process_cyclegan_on_real_files(name: str, tmp_path: Path) -> None:
    """The paper's CycleGAN, with a tiny budget, writes a valid derived object."""
    code, summary, out = _run(
        str(us_file(name)),
        "--out",
        str(tmp_path),
        "--method",
        "cyclegan",
        "--iterations",
        "8",
        "--ensemble",
        "1",
        "--seed",
        "1",
    )
    assert code == 0, out
    ds = pydicom.dcmread(summary["series"][0]["written"][0])
    assert "cyclegan" in ds.DerivationDescription
    src = pydicom.dcmread(us_file(name), stop_before_pixels=True)
    assert (ds.Rows, ds.Columns) == (2 * src.Rows, 2 * src.Columns)
    assert np.isfinite(ds.pixel_array.astype(float)).all() and ds.pixel_array.std() > 0


@pytest.mark.slow
def test_process_cine_streams(tmp_path: Path) -> None:
    src = us_file("color3d_jpeg_baseline.dcm")
    code, summary, out = _run(str(src), "--out", str(tmp_path), "--method", "ibp")
    assert code == 0, out
    ds = pydicom.dcmread(summary["series"][0]["written"][0])
    assert ds.NumberOfFrames == 120
    assert ds.Rows == 960


def test_cold_cine_mode_trains_per_frame_only(tmp_path: Path) -> None:
    """--cine-mode cold fits each frame itself; no shared model is trained first."""
    cine = Path(__file__).resolve().parents[1] / "sample_data" / "us_phantom_cine.dcm"
    code, summary, out = _run(
        str(cine), "--out", str(tmp_path), "--cine-mode", "cold", "--iterations", "3"
    )
    assert code == 0, out
    [series] = summary["series"]
    assert series["frames"] == 6 and series["train_seconds"] == 0.0
    ds = pydicom.dcmread(series["written"][0])
    method = load_pipeline(None).engine.method  # the default's
    assert ds.NumberOfFrames == 6 and f"method {method};" in ds.DerivationDescription


def test_x4_through_an_x2_model_is_recorded_in_the_header(tmp_path: Path) -> None:
    """At x4 the default learns x2 (engine.model_scale auto); the header says so."""
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(us_file("color-pl.dcm"), src / "a.dcm")
    args = ["--method", "zssr", "--iterations", "2", "--ensemble", "1", "--scale", "4"]
    code, summary, out = _run(str(src), "--out", str(tmp_path / "out"), *args)
    assert code == 0, out
    [series] = summary["series"]
    out_ds = pydicom.dcmread(series["written"][0])
    src_ds = pydicom.dcmread(src / "a.dcm")
    assert (out_ds.Rows, out_ds.Columns) == (4 * src_ds.Rows, 4 * src_ds.Columns)
    text = out_ds.DerivationDescription
    assert "zssr (x2 model, then bicubic and back projection to x4)" in text
    assert "Super-resolution x4" in text
