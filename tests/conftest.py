"""Shared fixtures: the real ultrasound DICOM files of pydicom and pydicom-data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file

#: Every ultrasound file shipped by pydicom's test files and PyPI's ``pydicom-data``,
#: with what it exercises. Resolved through pydicom's own lookup (pydicom-data's data_store).
US_FILES: dict[str, str] = {
    "ExplVR_BigEnd.dcm": "GE, RGB, explicit VR big endian",
    "examples_jpeg2k.dcm": "GE, YBR_RCT, JPEG 2000 lossless",
    "examples_palette.dcm": "Philips, PALETTE COLOR 8-bit, US regions",
    "examples_rgb_color.dcm": "GE, RGB",
    "examples_ybr_color.dcm": "SonoSite, YBR_FULL_422 JPEG baseline, 30-frame cine, regions",
    "JPGLosslessP14SV1_1s_1f_8b.dcm": "Philips, MONOCHROME2 JPEG lossless SV1, regions",
    "OBXXXX1A.dcm": "Philips, PALETTE COLOR, regions",
    "OBXXXX1A_2frame.dcm": "Philips, PALETTE COLOR, 2 frames",
    "OBXXXX1A_expb.dcm": "Philips, PALETTE COLOR, big endian",
    "OBXXXX1A_expb_2frame.dcm": "Philips, PALETTE COLOR, big endian, 2 frames",
    "OBXXXX1A_rle.dcm": "Philips, PALETTE COLOR, RLE",
    "OBXXXX1A_rle_2frame.dcm": "Philips, PALETTE COLOR, RLE, 2 frames",
    "US1_J2KI.dcm": "GE, YBR_ICT, JPEG 2000 lossy",
    "US1_J2KR.dcm": "GE, YBR_RCT, JPEG 2000 lossless",
    "US1_UNCI.dcm": "GE, RGB, explicit VR",
    "US1_UNCR.dcm": "GE, RGB, explicit VR",
    "color-pl.dcm": "RGB planar configuration 1",
    "color-px.dcm": "RGB planar configuration 0",
    "color3d_jpeg_baseline.dcm": "SonoSite, YBR_FULL_422 JPEG baseline, 120-frame cine, regions",
    "gdcm-US-ALOKA-16.dcm": "Aloka, PALETTE COLOR 16-bit segmented LUT, implicit VR",
    "gdcm-US-ALOKA-16_big.dcm": "Aloka, PALETTE COLOR 16-bit segmented LUT, big endian",
}


#: Set to 1 to skip (not fail) the tests whose real test files are missing: for packagers
#: who build without ``pydicom-data``. Without it a missing file fails the test, so a broken
#: test environment never runs green.
ALLOW_MISSING_ENV = "DICOM_SR_ALLOW_MISSING_TEST_DATA"


def us_file(name: str) -> Path:
    """Path of one real ultrasound test file; fails (or skips, if allowed) when it is missing."""
    path = get_testdata_file(name)
    if path is None:
        message = (
            f"test file {name} not found: install the test extra (pip install pydicom-data), "
            f"or set {ALLOW_MISSING_ENV}=1 to skip the tests that need it"
        )
        if os.environ.get(ALLOW_MISSING_ENV) == "1":
            pytest.skip(message)
        pytest.fail(message, pytrace=False)
    return Path(path)


@pytest.fixture(params=sorted(US_FILES), ids=lambda n: n.removesuffix(".dcm"))
def us_path(request) -> Path:
    """Each real ultrasound file in turn."""
    return us_file(request.param)


def dcmtk(tool: str) -> str | None:
    """Path of a dcmtk (Debian) tool, never pynetdicom's same-named script in the venv.

    pynetdicom installs ``echoscu``, ``storescu`` and ``storescp`` apps of its own into the
    venv's ``bin``, which comes first on PATH once the venv is activated (as CI does).
    """
    import os
    import shutil
    import sys

    venv_bin = Path(sys.executable).parent.resolve()
    dirs = [
        d
        for d in os.environ.get("PATH", "").split(os.pathsep)
        if d and Path(d).resolve() != venv_bin
    ]
    return shutil.which(tool, path=os.pathsep.join(dirs))
