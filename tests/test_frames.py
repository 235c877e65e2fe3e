"""Frame decoding against independent references, on every real ultrasound file."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from conftest import us_file
from pydicom.pixels import apply_color_lut, convert_color_space, pixel_array
from pydicom.uid import (
    MPEG2MPML,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    RLELossless,
)

from dicom_sr.dicom.discover import discover
from dicom_sr.dicom.frames import (
    FrameDecodeError,
    FrameReader,
    PixelLayout,
    open_frames,
    to_pixels,
)
from dicom_sr.errors import InputError


def _some(n: int) -> list[int]:
    """Frames checked pixel by pixel: first, middle, last."""
    return sorted({0, n // 2, n - 1})


def _sitk_reference(path) -> np.ndarray:
    """GDCM's decode through SimpleITK: (frames, H, W[, 3]); 16-bit palette RGB -> 8 bit."""
    arr = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    arr = arr.reshape(int(ds.get("NumberOfFrames") or 1), ds.Rows, ds.Columns, -1)
    if arr.shape[-1] == 1:
        return arr[..., 0]
    return arr >> 8 if arr.dtype == np.uint16 else arr


def test_every_file_decodes(us_path):
    ds = pydicom.dcmread(us_path, stop_before_pixels=True)
    with FrameReader(us_path) as reader:
        assert reader.number_of_frames == int(ds.get("NumberOfFrames") or 1)
        count = 0
        for frame in reader:
            assert frame.index == count
            assert frame.luma.dtype == np.float32 and frame.luma.shape == (ds.Rows, ds.Columns)
            assert 0.0 <= frame.luma.min() and frame.luma.max() <= 1.0
            if reader.layout.colour:
                assert frame.chroma.dtype == np.float32
                assert frame.chroma.shape == (ds.Rows, ds.Columns, 2)
                assert 0.0 <= frame.chroma.min() and frame.chroma.max() <= 1.0
            else:
                assert frame.chroma is None
            count += 1
        assert count == reader.number_of_frames
        assert reader.decoders_used, "no decoder recorded"


def test_pixels_match_gdcm(us_path):
    """Frame -> to_pixels equals SimpleITK/GDCM's RGB (an independent decoder) within 1."""
    ref = _sitk_reference(us_path)
    with FrameReader(us_path) as reader:
        wanted = set(_some(reader.number_of_frames))
        for frame in reader:
            if frame.index in wanted:
                got = to_pixels(frame.luma, frame.chroma, reader.layout)
                assert got.shape == ref[frame.index].shape
                diff = np.abs(got.astype(int) - ref[frame.index].astype(int)).max()
                assert diff <= 1, f"frame {frame.index}: max difference {diff}"


def _pydicom_reference(path, index: int) -> np.ndarray:
    """pydicom's own decode with exactly one colour conversion to RGB."""
    ds = pydicom.dcmread(path)
    pi = ds.PhotometricInterpretation
    arr = pixel_array(ds, index=index, as_rgb=False)
    if pi == "PALETTE COLOR":
        return apply_color_lut(arr, ds) >> 8  # little endian files only: see below
    if pi.startswith("YBR_FULL"):
        return convert_color_space(arr, "YBR_FULL", "RGB")
    return arr


@pytest.mark.parametrize(
    "name",
    [
        "US1_UNCR.dcm",  # RGB
        "color-pl.dcm",  # RGB planar configuration 1
        "color-px.dcm",  # RGB planar configuration 0
        "ExplVR_BigEnd.dcm",  # RGB big endian
        "US1_J2KR.dcm",  # YBR_RCT
        "US1_J2KI.dcm",  # YBR_ICT
        "examples_ybr_color.dcm",  # YBR_FULL_422 JPEG baseline
        "color3d_jpeg_baseline.dcm",
        "JPGLosslessP14SV1_1s_1f_8b.dcm",  # MONOCHROME2 JPEG lossless
        "OBXXXX1A.dcm",  # 8-bit palette
        "OBXXXX1A_rle_2frame.dcm",
        "gdcm-US-ALOKA-16.dcm",  # segmented 16-bit palette
    ],
)
def test_pixels_match_pydicom(name):
    path = us_file(name)
    with FrameReader(path) as reader:
        wanted = set(_some(reader.number_of_frames))
        for frame in reader:
            if frame.index not in wanted:
                continue
            ref = _pydicom_reference(path, frame.index)
            got = to_pixels(frame.luma, frame.chroma, reader.layout)
            tol = 1 if reader.photometric.startswith("YBR_FULL") else 0
            assert np.abs(got.astype(int) - ref.astype(int)).max() <= tol
            if reader.photometric.startswith("YBR_FULL"):
                # luminance is the stored Y, untouched: no second colour conversion
                ybr = pixel_array(pydicom.dcmread(path), index=frame.index, as_rgb=False)
                np.testing.assert_array_equal(frame.luma * 255, ybr[..., 0].astype(np.float32))


@pytest.mark.parametrize(
    "a, b",
    [
        ("OBXXXX1A.dcm", "OBXXXX1A_expb.dcm"),
        ("OBXXXX1A.dcm", "OBXXXX1A_rle.dcm"),
        ("OBXXXX1A_2frame.dcm", "OBXXXX1A_expb_2frame.dcm"),
        ("OBXXXX1A_2frame.dcm", "OBXXXX1A_rle_2frame.dcm"),
        ("gdcm-US-ALOKA-16.dcm", "gdcm-US-ALOKA-16_big.dcm"),
        ("US1_UNCR.dcm", "US1_J2KR.dcm"),
        ("US1_UNCR.dcm", "examples_jpeg2k.dcm"),
        ("color-px.dcm", "color-pl.dcm"),
    ],
)
def test_twins_decode_identically(a, b):
    """Big endian, RLE, planar and lossless J2K encodings equal their plain twin exactly."""
    with FrameReader(us_file(a)) as ra, FrameReader(us_file(b)) as rb:
        assert ra.layout.colour == rb.layout.colour
        frames = list(zip(ra, rb, strict=True))
        assert frames
        for fa, fb in frames:
            np.testing.assert_array_equal(fa.luma, fb.luma)
            np.testing.assert_array_equal(fa.chroma, fb.chroma)


def test_big_endian_palette_is_not_byte_swapped():
    """pydicom 3.0's apply_color_lut misreads big endian LUT data; we must not."""
    little = FrameReader(us_file("OBXXXX1A.dcm"))._palette[0]
    big = FrameReader(us_file("OBXXXX1A_expb.dcm"))._palette[0]
    np.testing.assert_array_equal(little, big)
    assert big.max() > 200  # 8-bit values, not the low byte of v << 8


def test_colour_files_stay_colour(us_path):
    with FrameReader(us_path) as reader:
        if reader.photometric.startswith("MONOCHROME"):
            assert not reader.layout.colour
            return
        rgb = _sitk_reference(us_path)
        spread = 0
        for f in rgb:  # frame by frame: int16 copies of a 120-frame cine are slow
            g = f[..., 1].astype(np.int16)
            spread = max(spread, np.abs(f[..., 0] - g).max(), np.abs(f[..., 2] - g).max())
            if spread > 1:
                break
        assert reader.layout.colour == (spread > 1)


def _write_rgb(path, src_name: str, noise: int):
    """A real grey frame stored as RGB (channels equal, or within `noise` levels)."""
    ds = pydicom.dcmread(us_file(src_name))
    grey = ds.pixel_array.astype(np.int16)
    rng = np.random.default_rng(0)
    rgb = np.stack([grey + rng.integers(-noise, noise + 1, grey.shape) for _ in range(3)], axis=-1)
    rgb[..., 1] = grey
    rgb = np.clip(rgb, 0, 255).astype(np.uint8)
    ds.set_pixel_data(rgb, "RGB", 8)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.save_as(path, enforce_file_format=True)
    return rgb


@pytest.mark.parametrize("noise, grey", [(0, True), (1, True), (3, False)])
def test_grey_stored_as_rgb(tmp_path, noise, grey):
    path = tmp_path / "grey_rgb.dcm"
    rgb = _write_rgb(path, "JPGLosslessP14SV1_1s_1f_8b.dcm", noise)
    with FrameReader(path) as reader:
        assert reader.layout == PixelLayout(not grey, 8, "RGB")
        frame = next(iter(reader))
        assert (frame.chroma is None) == grey
        out = to_pixels(frame.luma, frame.chroma, reader.layout)
        if grey:  # the grey output must be within 1 level of every source channel
            out = out[..., None]
        assert np.abs(out.astype(int) - rgb.astype(int)).max() <= 1


def test_grey_round_trip_is_exact():
    path = us_file("JPGLosslessP14SV1_1s_1f_8b.dcm")
    with FrameReader(path) as reader:
        frame = next(iter(reader))
        out = to_pixels(frame.luma, frame.chroma, reader.layout)
    np.testing.assert_array_equal(out, pydicom.dcmread(path).pixel_array)
    assert out.dtype == np.uint8


def test_open_frames_from_discovery():
    found = discover([us_file("examples_ybr_color.dcm")])
    inst = found.series[0].instances[0]
    with open_frames(inst) as reader:
        assert reader.number_of_frames == inst.number_of_frames == 30
        assert reader.header.get("PixelData") is None
        assert reader.layout.colour


def test_cine_streams_one_frame_at_a_time():
    """Iterating the 120-frame cine never holds more than a few float frames."""
    path = us_file("color3d_jpeg_baseline.dcm")
    with FrameReader(path) as reader:
        _ = reader.layout  # the grey scan is part of opening, not of streaming
        frame_bytes = reader.rows * reader.columns * 3 * 4  # luma + chroma, float32
        tracemalloc.start()
        try:
            n = 0
            for frame in reader:
                n += 1
                del frame
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert n == 120
    assert peak < 8 * frame_bytes, f"peak {peak} bytes is more than 8 frames"


def test_undecodable_syntax_raises(tmp_path):
    ds = pydicom.dcmread(us_file("examples_ybr_color.dcm"))
    ds.file_meta.TransferSyntaxUID = MPEG2MPML
    path = tmp_path / "video.dcm"
    ds.save_as(path)
    with pytest.raises(FrameDecodeError, match="MPEG2") as info:
        FrameReader(path)
    assert str(path) in str(info.value)


def test_corrupt_frame_names_file_and_frame(tmp_path):
    ds = pydicom.dcmread(us_file("examples_ybr_color.dcm"))
    frames = list(pydicom.encaps.generate_frames(ds.PixelData, number_of_frames=30))
    frames[3] = b"\xff\xd8" + b"\x00" * 64  # not a JPEG stream
    ds.PixelData = pydicom.encaps.encapsulate(frames)
    path = tmp_path / "corrupt.dcm"
    ds.save_as(path)
    with FrameReader(path) as reader:
        with pytest.raises(FrameDecodeError, match="frame 3") as info:
            for _ in reader:
                pass
    assert str(path) in str(info.value) and "JPEG Baseline" in str(info.value)


def test_to_pixels_needs_chroma_for_colour():
    with pytest.raises(ValueError, match="chroma"):
        to_pixels(np.zeros((4, 4), np.float32), None, PixelLayout(True, 8, "RGB"))
    grey16 = to_pixels(np.ones((2, 2), np.float32), None, PixelLayout(False, 12, "MONOCHROME2"))
    assert grey16.dtype == np.uint16 and grey16.max() == 4095


@pytest.mark.parametrize(
    "name",
    [
        "OBXXXX1A_expb.dcm",  # 8-bit palette, big endian
        "gdcm-US-ALOKA-16.dcm",  # 16-bit segmented palette
        "color-pl.dcm",  # planar RGB
        "JPGLosslessP14SV1_1s_1f_8b.dcm",  # grey
        "examples_ybr_color.dcm",  # GDCM returns RGB for YBR_FULL_422
    ],
)
def test_simpleitk_fallback_gives_the_same_pixels(name):
    path = us_file(name)
    with FrameReader(path) as primary, FrameReader(path) as fallback:
        fallback._names = ["simpleitk"]
        assert primary.layout == fallback.layout
        for a, b in zip(primary, fallback, strict=True):
            pa = to_pixels(a.luma, a.chroma, primary.layout).astype(int)
            pb = to_pixels(b.luma, b.chroma, fallback.layout).astype(int)
            assert np.abs(pa - pb).max() <= 1
        assert fallback.decoders_used == ["simpleitk"]
        assert primary.decoders_used[0].startswith("pydicom:")


def test_falls_back_when_pydicom_fails(monkeypatch):
    from dicom_sr.dicom import decoders

    def broken(self, indices):
        raise RuntimeError("plugin exploded")
        yield  # pragma: no cover

    path = us_file("OBXXXX1A_rle_2frame.dcm")
    expected = [f.luma for f in FrameReader(path)]
    monkeypatch.setattr(decoders.FrameSource, "_iter_pydicom", broken)
    with FrameReader(path) as reader:
        got = [f.luma for f in reader]
        assert reader.decoders_used == ["simpleitk"]
    for a, b in zip(expected, got, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", ["examples_ybr_color.dcm", "OBXXXX1A_expb_2frame.dcm"])
@pytest.mark.parametrize("decoder", ["primary", "simpleitk"])
def test_selected_frames_equal_streamed_frames(name, decoder):
    path = us_file(name)
    with FrameReader(path) as reader:
        if decoder == "simpleitk":
            reader._names = ["simpleitk"]
        streamed = {f.index: f for f in reader}
        picks = [reader.number_of_frames - 1, 0, reader.number_of_frames // 2]
        got = list(reader.frames(picks))
        assert [f.index for f in got] == picks
        for f in got:
            np.testing.assert_array_equal(f.luma, streamed[f.index].luma)
            np.testing.assert_array_equal(f.chroma, streamed[f.index].chroma)
        with pytest.raises(IndexError, match="out of range"):
            next(reader.frames([reader.number_of_frames]))


def test_deflated_equals_plain(tmp_path):
    src = us_file("OBXXXX1A_2frame.dcm")
    ds = pydicom.dcmread(src)
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    path = tmp_path / "deflated.dcm"
    ds.save_as(path)
    for a, b in zip(FrameReader(src), FrameReader(path), strict=True):
        np.testing.assert_array_equal(a.luma, b.luma)
        np.testing.assert_array_equal(a.chroma, b.chroma)


def test_decode_errors_are_input_errors():
    assert issubclass(FrameDecodeError, InputError)
    err = FrameDecodeError("a.dcm", 3, "1.2.840.10008.1.2.5", "bad segment")
    assert (
        str(err) == "a.dcm: cannot decode frame 3 (RLE Lossless, 1.2.840.10008.1.2.5): bad segment"
    )
    assert err.path == "a.dcm" and err.frame == 3 and err.tag == "PixelData (7FE0,0010)"


@pytest.mark.parametrize(
    ("change", "tag"),
    [
        (
            lambda ds: ds.__delitem__("GreenPaletteColorLookupTableData"),
            "GreenPaletteColorLookupTableData",
        ),
        (
            lambda ds: setattr(ds, "BluePaletteColorLookupTableDescriptor", [128, 0, 16]),
            "GreenPaletteColorLookupTableDescriptor",
        ),
        (
            lambda ds: setattr(ds, "RedPaletteColorLookupTableData", b"\0" * 10),
            "RedPaletteColorLookupTableData",
        ),
    ],
    ids=["no-table", "descriptors-disagree", "short-table"],
)
def test_broken_palette_is_an_input_error(tmp_path, change, tag):
    ds = pydicom.dcmread(us_file("OBXXXX1A.dcm"))
    change(ds)
    path = tmp_path / "palette.dcm"
    ds.save_as(path)
    with pytest.raises(InputError) as info:
        FrameReader(path)
    assert info.value.tag.startswith(tag) and str(path) in str(info.value)


def test_a_crash_in_gdcm_fails_the_file_not_the_process(tmp_path):
    """GDCM (SimpleITK) dies of SIGFPE on an RLE frame without segments; we report it."""
    ds = pydicom.dcmread("sample_data/us_phantom_cine.dcm")
    ds.compress(RLELossless, generate_instance_uid=False)
    frames = list(pydicom.encaps.generate_frames(ds.PixelData, number_of_frames=6))
    frames[3] = b"\x00" * 64  # an RLE header saying "no segments"
    ds.PixelData = pydicom.encaps.encapsulate(frames, has_bot=True)
    path = tmp_path / "rle.dcm"
    ds.save_as(path)
    with FrameReader(path) as reader, pytest.raises(FrameDecodeError, match="frame 3") as info:
        list(reader)
    assert "simpleitk" in str(info.value) and "\n" not in str(info.value)
