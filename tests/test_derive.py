"""Derived instances built from real ultrasound headers, written, read back and validated.

Pixels are the decoded source upscaled by plain pixel replication (np.repeat), so what went in
is known exactly; each file is checked by reading it back with pydicom, by dcmtk's dcmdump, and
by dicom3tools' dciodvfy against the errors the source itself already has.
"""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
import warnings
from functools import cache
from pathlib import Path

import numpy as np
import pytest
from conftest import us_file
from pydicom import dcmread
from pydicom.pixels import apply_color_lut
from pydicom.valuerep import format_number_as_ds

from dicom_sr import __version__
from dicom_sr.config import OutputConfig
from dicom_sr.dicom.derive import Provenance, derive_dataset, derived_uid
from dicom_sr.dicom.encode import COMPRESS_SYNTAX, FrameEncoder
from dicom_sr.dicom.frames import PixelLayout
from dicom_sr.dicom.store import output_path, write_atomic
from dicom_sr.errors import InputError

SOURCES = [
    "examples_ybr_color.dcm",  # 30-frame YBR_FULL_422 JPEG cine, lossy, regions
    "US1_UNCR.dcm",  # RGB
    "OBXXXX1A.dcm",  # PALETTE COLOR 8-bit, regions
    "JPGLosslessP14SV1_1s_1f_8b.dcm",  # MONOCHROME2, regions, private tags
    "gdcm-US-ALOKA-16.dcm",  # PALETTE COLOR 16-bit
]
MODES = sorted(COMPRESS_SYNTAX)
SCALE = 2
OUTPUT = OutputConfig()
PROVENANCE = Provenance(
    method="cyclegan",
    scale=SCALE,
    iterations=300,
    pipeline_name="bmode-default",
    pipeline_version="1",
    config_hash="0123456789abcdef",
    software_version=__version__,
    perceptual="vgg19",
)
TIMING = (
    "FrameTime",
    "FrameTimeVector",
    "FrameIncrementPointer",
    "CineRate",
    "RecommendedDisplayFrameRate",
    "ActualFrameDuration",
    "FrameDelay",
    "StartTrim",
    "StopTrim",
    "PreferredPlaybackSequencing",
    "HeartRate",
)
PATIENT_STUDY = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "AccessionNumber",
    "ReferringPhysicianName",
    "StudyDescription",
)


@cache
def source(name: str) -> tuple:
    """(header, upscaled frames (N, H, W[, 3]), layout) of one real file."""
    path = us_file(name)
    header = dcmread(path, stop_before_pixels=True)
    full = dcmread(path)
    pixels = full.pixel_array  # pydicom 3 returns RGB for YBR sources
    photometric = full.PhotometricInterpretation
    if photometric == "PALETTE COLOR":
        pixels = apply_color_lut(pixels, full)
        if pixels.dtype != np.uint8:  # 16-bit palette entries -> 8-bit RGB
            pixels = (pixels >> 8).astype(np.uint8)
    frames = int(full.get("NumberOfFrames") or 1)
    if frames == 1:
        pixels = pixels[None]
    colour = pixels.ndim == 4
    pixels = np.repeat(np.repeat(pixels, SCALE, axis=1), SCALE, axis=2)
    layout = PixelLayout(
        colour=colour,
        bits_stored=8 if colour else int(full.BitsStored),
        source_photometric=photometric,
    )
    return header, np.ascontiguousarray(pixels), layout


def _derive(name: str, compress: str, out_dir: Path) -> Path:
    header, pixels, layout = source(name)
    ds = _derive_frames(
        header,
        pixels,
        layout,
        compress,
        series_uid=derived_uid(OUTPUT.uid_root, header.SeriesInstanceUID, PROVENANCE.config_hash),
        sop_uid=derived_uid(OUTPUT.uid_root, header.SOPInstanceUID, PROVENANCE.config_hash),
    )
    path = output_path(out_dir, ds)
    write_atomic(ds, path)
    return path


def _derive_frames(
    header,
    frames,
    layout,
    compress="rle",
    provenance=PROVENANCE,
    series_uid="1.2.3",
    sop_uid="1.2.4",
):
    """Encode ``frames`` and derive one instance (fixed test UIDs unless given; not written)."""
    h, w = frames[0].shape[:2]
    encoder = FrameEncoder(h, w, layout, compress, OUTPUT.jpeg_quality)
    for frame in frames:
        encoder.add(frame)
    return derive_dataset(
        header,
        encoder.finish(),
        scale=SCALE,
        number_of_frames=len(frames),
        provenance=provenance,
        output=OUTPUT,
        series_uid=series_uid,
        sop_uid=sop_uid,
    )


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """Write each (source, mode) once per module and hand out its path."""
    out = tmp_path_factory.mktemp("derived")
    cache: dict[tuple[str, str], Path] = {}

    def get(name: str, compress: str) -> Path:
        if (name, compress) not in cache:
            cache[name, compress] = _derive(name, compress, out)
        return cache[name, compress]

    return get


CASES = [pytest.param(n, m, id=f"{n.removesuffix('.dcm')}-{m}") for n in SOURCES for m in MODES]


def _codes(seq) -> set[tuple[str, str]]:
    return {(item.CodeValue, item.CodingSchemeDesignator) for item in seq}


@pytest.mark.parametrize(("name", "compress"), CASES)
def test_read_back(written, name, compress):
    header, pixels, layout = source(name)
    path = written(name, compress)
    ds = dcmread(path)
    src_lossy_ts = header.file_meta.TransferSyntaxUID in (
        "1.2.840.10008.1.2.4.50",
        "1.2.840.10008.1.2.4.91",
    )
    out_lossy = compress == "jpeg"

    # identity: same study and patient, same SOP class, new deterministic series/instance
    assert ds.file_meta.TransferSyntaxUID == COMPRESS_SYNTAX[compress]
    assert ds.SOPClassUID == header.SOPClassUID == ds.file_meta.MediaStorageSOPClassUID
    assert ds.SOPInstanceUID == ds.file_meta.MediaStorageSOPInstanceUID == path.stem
    assert ds.SeriesInstanceUID != header.SeriesInstanceUID
    assert ds.SOPInstanceUID != header.SOPInstanceUID
    assert ds.SeriesInstanceUID == derived_uid(
        OUTPUT.uid_root, header.SeriesInstanceUID, PROVENANCE.config_hash
    )
    assert ds.SOPInstanceUID.startswith(OUTPUT.uid_root)
    for keyword in PATIENT_STUDY:
        assert ds.get(keyword) == header.get(keyword), keyword
    assert path.parent.name == ds.SeriesInstanceUID
    assert path.parent.parent.name == header.StudyInstanceUID

    # General Image / General Series: derivation
    assert list(ds.ImageType)[:2] == ["DERIVED", "SECONDARY"]
    kept = [v.replace("/", "_") for v in list(header.ImageType)[2:]]  # Aloka's ABDOM/RAD
    assert list(ds.ImageType)[2:] == kept
    (ref,) = ds.SourceImageSequence
    assert ref.ReferencedSOPClassUID == header.SOPClassUID
    assert ref.ReferencedSOPInstanceUID == header.SOPInstanceUID
    assert "ReferencedFrameNumber" not in ref  # every frame derived: the whole instance
    assert _codes(ref.PurposeOfReferenceCodeSequence) == {("121322", "DCM")}
    text = ds.DerivationDescription
    assert len(text) <= 1024
    for needle in ("x2", "cyclegan", "300", "vgg19", "bmode-default", "0123456789abcdef"):
        assert needle in text
    want = {("113085", "DCM")} | ({("113040", "DCM")} if out_lossy else set())
    assert _codes(ds.DerivationCodeSequence) == want
    equipment = ds.ContributingEquipmentSequence[-1]
    assert equipment.Manufacturer == "dicom-sr"
    assert _codes(equipment.PurposeOfReferenceCodeSequence) == {("109102", "DCM")}
    assert any(__version__ in v for v in equipment.SoftwareVersions)
    assert equipment.ContributionDateTime
    assert "x2" in equipment.ContributionDescription
    suffix = OUTPUT.series_description_suffix.format(scale=SCALE)
    assert ds.SeriesDescription == (str(header.get("SeriesDescription") or "") + suffix).strip()
    assert ds.SeriesNumber == int(header.get("SeriesNumber") or 0) + OUTPUT.series_number_offset

    # frames and timing
    n = len(pixels)
    assert int(ds.get("NumberOfFrames") or 1) == n
    for keyword in TIMING:
        assert ds.get(keyword) == header.get(keyword), keyword

    # lossy history: never reset, extended when this output is lossy
    if header.get("LossyImageCompression") == "01" or src_lossy_ts or out_lossy:
        assert ds.LossyImageCompression == "01"
    else:
        assert ds.get("LossyImageCompression") == header.get("LossyImageCompression")
    ratios = [float(v) for v in np.atleast_1d(ds.get("LossyImageCompressionRatio", []))]
    methods = list(np.atleast_1d(ds.get("LossyImageCompressionMethod", [])))
    src_ratios = [float(v) for v in np.atleast_1d(header.get("LossyImageCompressionRatio", []))]
    assert ratios[: len(src_ratios)] == pytest.approx(src_ratios)
    if out_lossy:
        assert len(ratios) == len(src_ratios) + 1 and ratios[-1] > 1
        assert methods[-1] == "ISO_10918_1"
        assert len(methods) == len(ratios)
    else:
        assert len(ratios) == len(src_ratios)

    # Image Pixel module consistent with the data
    assert (ds.Rows, ds.Columns) == (header.Rows * SCALE, header.Columns * SCALE)
    assert ds.PixelRepresentation == 0
    assert ds.HighBit == ds.BitsStored - 1
    if layout.colour:
        expected = {"jpeg": "YBR_FULL_422", "j2k": "YBR_RCT"}.get(compress, "RGB")
        assert ds.PhotometricInterpretation == expected
        assert (ds.SamplesPerPixel, ds.PlanarConfiguration) == (3, 0)
        assert (ds.BitsAllocated, ds.BitsStored) == (8, 8)
        assert "WindowCenter" not in ds
    else:
        assert ds.PhotometricInterpretation == "MONOCHROME2"
        assert ds.SamplesPerPixel == 1 and "PlanarConfiguration" not in ds
        assert ds.BitsStored == header.BitsStored
    for keyword in (
        "RedPaletteColorLookupTableData",
        "SegmentedRedPaletteColorLookupTableData",
        "RedPaletteColorLookupTableDescriptor",
        "SmallestImagePixelValue",
        "LargestImagePixelValue",
        "PixelPaddingValue",
        "IconImageSequence",
    ):
        assert keyword not in ds, keyword
    assert not any(elem.tag.is_private for elem in ds.iterall())
    assert not any(0x6000 <= elem.tag.group <= 0x601E for elem in ds)

    # US regions scaled (x' = s x0, x1' = s x1 + s - 1, delta / s)
    if "SequenceOfUltrasoundRegions" in header:
        pairs = zip(ds.SequenceOfUltrasoundRegions, header.SequenceOfUltrasoundRegions, strict=True)
        for new, old in pairs:
            assert new.RegionLocationMinX0 == SCALE * old.RegionLocationMinX0
            assert new.RegionLocationMaxX1 == SCALE * old.RegionLocationMaxX1 + SCALE - 1
            assert new.RegionLocationMaxY1 == SCALE * old.RegionLocationMaxY1 + SCALE - 1
            assert new.PhysicalDeltaX == pytest.approx(old.PhysicalDeltaX / SCALE)

    # pixels: exactly what went in when lossless, close for JPEG
    got = ds.pixel_array  # pydicom converts YBR_FULL_422/YBR_RCT back to RGB
    got = got.reshape(pixels.shape)
    if out_lossy:
        err = np.abs(got.astype(np.int16) - pixels.astype(np.int16))
        assert err.mean() < 2.5 and np.percentile(err, 99) < 25
    else:
        np.testing.assert_array_equal(got, pixels)


def _dciodvfy_errors(path: Path) -> set[str]:
    proc = subprocess.run(
        ["dciodvfy", str(path)], capture_output=True, text=True, errors="replace", timeout=120
    )
    lines = (proc.stdout + proc.stderr).splitlines()
    return {re.sub(r"\s+", " ", line).strip() for line in lines if line.startswith("Error")}


@pytest.mark.parametrize(("name", "compress"), CASES)
def test_dcmdump_parses(written, name, compress):
    if shutil.which("dcmdump") is None:
        pytest.skip("dcmtk's dcmdump is not installed")
    path = written(name, compress)
    proc = subprocess.run(
        ["dcmdump", "-q", str(path)], capture_output=True, text=True, errors="replace", timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    bad = [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("E:")]
    assert not bad, bad
    assert "(7fe0,0010)" in proc.stdout


@pytest.mark.parametrize(("name", "compress"), CASES)
def test_dciodvfy_adds_no_error(written, name, compress):
    if shutil.which("dciodvfy") is None:
        pytest.skip("dicom3tools' dciodvfy is not installed (apt install dicom3tools)")
    path = written(name, compress)
    new = _dciodvfy_errors(path) - _dciodvfy_errors(us_file(name))
    assert not new, f"{path.name}: dciodvfy errors the source {name} does not have: {new}"


def test_uids_are_deterministic():
    a = derived_uid(OUTPUT.uid_root, "1.2.3.4", "abc")
    assert a == derived_uid(OUTPUT.uid_root.rstrip("."), "1.2.3.4", "abc")
    assert a != derived_uid(OUTPUT.uid_root, "1.2.3.4", "abd")
    assert a != derived_uid(OUTPUT.uid_root, "1.2.3.5", "abc")
    assert a.startswith(OUTPUT.uid_root) and len(a) <= 64


def test_part_of_a_cine_references_its_frames(tmp_path):
    """Deriving only the first frames of a cine names them and trims per-frame timing."""
    header, pixels, layout = source("examples_ybr_color.dcm")
    ds = _derive_frames(header, pixels[:3], layout)
    assert ds.NumberOfFrames == 3
    assert list(ds.SourceImageSequence[0].ReferencedFrameNumber) == [1, 2, 3]
    assert ds.FrameTime == header.FrameTime


def test_derive_rejects_wrong_size():
    header, pixels, layout = source("US1_UNCR.dcm")
    wrong = np.zeros((1, pixels.shape[1] + 2, pixels.shape[2], 3), np.uint8)
    with pytest.raises(ValueError, match="Rows x Columns"):
        _derive_frames(header, wrong, layout, "none")


@pytest.mark.parametrize("compress", ["none", "rle", "jpegls", "j2k"])
def test_grey_keeps_12_bits_stored(tmp_path, compress):
    """Grey output keeps a source BitsStored above 8 (here 12), losslessly, in 16-bit words."""
    _, pixels, _ = source("JPGLosslessP14SV1_1s_1f_8b.dcm")
    frame = (pixels[0, :256, :320].astype(np.uint16) << 4) | 0xF  # real texture, 12 bits
    header = dcmread(us_file("JPGLosslessP14SV1_1s_1f_8b.dcm"), stop_before_pixels=True)
    header.Rows, header.Columns, header.BitsStored, header.HighBit = 128, 160, 12, 11
    del header.SequenceOfUltrasoundRegions
    layout = PixelLayout(colour=False, bits_stored=12, source_photometric="MONOCHROME2")
    ds = _derive_frames(header, [frame], layout, compress)
    write_atomic(ds, tmp_path / "grey.dcm")
    back = dcmread(tmp_path / "grey.dcm")
    assert (back.BitsAllocated, back.BitsStored, back.HighBit) == (16, 12, 11)
    assert back.PhotometricInterpretation == "MONOCHROME2"
    np.testing.assert_array_equal(back.pixel_array, frame)


def test_jpeg_refuses_more_than_8_bits():
    layout = PixelLayout(colour=False, bits_stored=12, source_photometric="MONOCHROME2")
    with pytest.raises(ValueError, match="8-bit"):
        FrameEncoder(64, 64, layout, "jpeg", 95)


def test_encoder_rejects_bad_frames():
    layout = PixelLayout(colour=True, bits_stored=8, source_photometric="RGB")
    encoder = FrameEncoder(8, 8, layout, "rle", 95)
    with pytest.raises(ValueError, match="shape"):
        encoder.add(np.zeros((8, 8), np.uint8))
    with pytest.raises(ValueError, match="unsigned"):
        encoder.add(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="unknown compression"):
        FrameEncoder(8, 8, layout, "zip", 95)


def test_text_attributes_respect_their_vr_limits():
    """Long provenance and descriptions are cut to ST 1024 / LO 64 characters, suffix kept."""
    _, pixels, layout = source("US1_UNCR.dcm")
    header = dcmread(us_file("US1_UNCR.dcm"), stop_before_pixels=True)  # not the cached one
    header.SeriesDescription = "D" * 64
    long = Provenance(**{**PROVENANCE.__dict__, "pipeline_name": "p" * 80, "extra": "e" * 5000})
    ds = _derive_frames(header, pixels[:1], layout, provenance=long)
    assert len(ds.DerivationDescription) <= 1024
    assert "0123456789abcdef" in ds.DerivationDescription  # the hash survives the cut
    assert all(len(v) <= 64 for v in ds.ContributingEquipmentSequence[-1].SoftwareVersions)
    assert len(ds.SeriesDescription) <= 64
    assert ds.SeriesDescription.endswith(OUTPUT.series_description_suffix.format(scale=SCALE))


def test_a_scanner_code_string_that_is_not_valid_cs_is_written_valid(caplog):
    """Aloka's ImageType holds 'ABDOM/RAD' (no '/' in a CS): written as 'ABDOM_RAD', logged with
    the file and tag, and pydicom has nothing to warn about."""
    header, pixels, layout = source("gdcm-US-ALOKA-16.dcm")
    assert list(header.ImageType)[2] == "ABDOM/RAD"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a pydicom validation warning would fail the test
        with caplog.at_level("INFO", logger="dicom_sr.dicom.derive"):
            ds = _derive_frames(header, pixels[:1], layout)
    assert list(ds.ImageType) == ["DERIVED", "SECONDARY", "ABDOM_RAD", "0001"]
    assert any(
        "gdcm-US-ALOKA-16.dcm" in r.getMessage() and "ImageType (0008,0008)" in r.getMessage()
        for r in caplog.records
    )


def test_unwritable_source_attribute_is_an_input_error_naming_it():
    """A copied value that cannot be encoded (a US of 70000) fails deriving, not writing."""
    header, pixels, layout = source("US1_UNCR.dcm")
    header = copy.deepcopy(header)
    header.add_new(0x00280034, "US", 70000)  # a US that overflows (any tag will do)
    with pytest.raises(InputError) as info:
        _derive_frames(header, pixels[:1], layout, "none")
    assert info.value.path == str(us_file("US1_UNCR.dcm"))
    assert info.value.tag and "cannot be written in the derived instance" in str(info.value)


def test_missing_required_attribute_and_region_overflow_are_input_errors():
    header, pixels, layout = source("OBXXXX1A.dcm")
    broken = copy.deepcopy(header)
    del broken.StudyInstanceUID
    with pytest.raises(InputError, match=r"missing StudyInstanceUID \(0020,000D\)"):
        _derive_frames(broken, pixels, layout, "none")
    broken = copy.deepcopy(header)
    broken.SequenceOfUltrasoundRegions[0].RegionLocationMaxX1 = 2**31
    with pytest.raises(InputError, match="overflows UL when scaled x2"):
        _derive_frames(broken, pixels, layout, "none")


def test_lossy_ratio_is_formatted_by_pydicom():
    header, pixels, layout = source("US1_UNCR.dcm")
    ds = _derive_frames(header, pixels, layout, "jpeg")
    ratio = ds.LossyImageCompressionRatio
    ratios = list(ratio) if ratio.__class__.__name__ == "MultiValue" else [ratio]
    for r in ratios:
        assert len(str(r)) <= 16 and str(r) == format_number_as_ds(float(r))
