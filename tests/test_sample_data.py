"""The sample files are reproducible, valid ultrasound DICOM with sensible regions."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest

SAMPLE_DIR = Path(__file__).resolve().parent.parent / "sample_data"
SCRIPT = SAMPLE_DIR / "make_sample_data.py"
NAMES = ["us_phantom_single.dcm", "us_phantom_cine.dcm", "us_phantom_rgb.dcm"]


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory) -> Path:
    """The script run afresh into an empty folder."""
    out = tmp_path_factory.mktemp("sample_data")
    subprocess.run([sys.executable, str(SCRIPT), "--out", str(out)], check=True)
    return out


@pytest.mark.parametrize("name", NAMES)
def test_regenerates_byte_identical(regenerated: Path, name: str) -> None:
    assert (regenerated / name).read_bytes() == (SAMPLE_DIR / name).read_bytes()


def test_writes_only_the_three_files(regenerated: Path) -> None:
    assert sorted(p.name for p in regenerated.iterdir()) == sorted(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_parses_and_decodes(name: str) -> None:
    ds = pydicom.dcmread(SAMPLE_DIR / name)
    assert ds.Modality == "US"
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert ds.PatientName == "PHANTOM^SAMPLE"
    assert ds.Manufacturer == "dicom-sr sample generator"
    px = ds.pixel_array
    frames = int(ds.get("NumberOfFrames", 1))
    expected = (ds.Rows, ds.Columns) + ((3,) if ds.SamplesPerPixel == 3 else ())
    assert px.shape == ((frames,) if frames > 1 else ()) + expected
    assert px.dtype == np.uint8
    # black background, bright annotations, mid-grey speckle
    assert px.min() == 0 and px.max() >= 200
    assert 20 < px.mean() < 120


def test_one_study_three_series() -> None:
    datasets = [pydicom.dcmread(SAMPLE_DIR / n, stop_before_pixels=True) for n in NAMES]
    assert len({ds.StudyInstanceUID for ds in datasets}) == 1
    assert len({ds.SeriesInstanceUID for ds in datasets}) == 3
    assert len({ds.SOPInstanceUID for ds in datasets}) == 3
    sop = {ds.SOPClassUID for ds in datasets}
    assert sop == {pydicom.uid.UltrasoundImageStorage, pydicom.uid.UltrasoundMultiFrameImageStorage}


def test_cine_moves_and_has_cine_attributes() -> None:
    ds = pydicom.dcmread(SAMPLE_DIR / "us_phantom_cine.dcm")
    assert ds.NumberOfFrames >= 6
    assert ds.FrameIncrementPointer == pydicom.tag.Tag("FrameTime")
    assert float(ds.FrameTime) > 0
    frames = ds.pixel_array.astype(float)
    diffs = [np.abs(frames[k] - frames[0]).mean() for k in range(1, len(frames))]
    assert min(diffs) > 1.0  # every frame differs from the first ...
    assert max(diffs) < 40.0  # ... but only by a slow drift


def test_rgb_has_colour() -> None:
    px = pydicom.dcmread(SAMPLE_DIR / "us_phantom_rgb.dcm").pixel_array.astype(int)
    assert np.abs(px[..., 0] - px[..., 2]).max() > 100


@pytest.mark.parametrize("name", NAMES)
def test_tissue_region_inside_frame_and_covers_the_sector(name: str) -> None:
    ds = pydicom.dcmread(SAMPLE_DIR / name)
    (region,) = ds.SequenceOfUltrasoundRegions
    assert region.RegionSpatialFormat == 1 and region.RegionDataType == 1
    x0, y0 = region.RegionLocationMinX0, region.RegionLocationMinY0
    x1, y1 = region.RegionLocationMaxX1, region.RegionLocationMaxY1
    assert 0 <= x0 < x1 < ds.Columns and 0 <= y0 < y1 < ds.Rows
    assert region.PhysicalUnitsXDirection == 3 and region.PhysicalUnitsYDirection == 3
    assert region.PhysicalDeltaX > 0 and region.PhysicalDeltaY > 0
    px = ds.pixel_array
    frame = px[0] if ds.get("NumberOfFrames", 1) > 1 else px
    grey = frame[..., 0] if frame.ndim == 3 else frame
    inside = np.zeros(grey.shape, dtype=bool)
    inside[y0 : y1 + 1, x0 : x1 + 1] = True
    # every speckle pixel lies in the region; outside it only sparse annotations remain
    assert (grey[~inside] > 0).mean() < 0.05
    assert (grey[inside] > 0).mean() > 0.5


@pytest.mark.parametrize("name", NAMES)
def test_dciodvfy_reports_no_error(name: str) -> None:
    if shutil.which("dciodvfy") is None:
        pytest.skip("dciodvfy (dicom3tools) not installed")
    run = subprocess.run(
        ["dciodvfy", "-new", str(SAMPLE_DIR / name)], capture_output=True, text=True
    )
    report = run.stdout + run.stderr
    assert "Error" not in report, report
    assert run.returncode == 0, report
