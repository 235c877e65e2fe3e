"""FrameEncoder spools encoded frames to a file: same bytes as in memory, memory flat in frames."""

from __future__ import annotations

import hashlib
import io
import tracemalloc

import numpy as np
import pytest
from conftest import us_file
from pydicom import dcmread
from pydicom.encaps import encapsulate, generate_frames
from pydicom.pixels import convert_color_space

from dicom_sr.dicom.encode import FrameEncoder
from dicom_sr.dicom.frames import PixelLayout
from dicom_sr.dicom.store import write_atomic

RGB = PixelLayout(True, 8, "RGB")
GREY8 = PixelLayout(False, 8, "MONOCHROME2")

#: sha256 of the Pixel Data value the in-memory encoder (before spooling) gave for
#: :func:`_cine_frames` (computed with that code at commit 78b5b6a; lossless codecs only).
DIGESTS = {
    ("rle", 6): "7dd8af573f93144bf25c72d9d9f3456ac7474b1aa8859bd0e2c9e7d16f847765",
    ("none", 5): "695f9b73fb9d254fca4148f515b48c1f3c0243d3207292a0d00c8a56f4c1c568",
}


def _cine_frames(n: int) -> np.ndarray:
    """The first n frames of a real SonoSite cine, RGB, cropped to an odd width (301)."""
    ds = dcmread(us_file("examples_ybr_color.dcm"))
    frames = convert_color_space(ds.pixel_array[:n], "YBR_FULL_422", "RGB")
    return np.ascontiguousarray(frames[:, :, :301])


def _encode(frames: np.ndarray, compress: str, **kwargs) -> tuple[FrameEncoder, object]:
    enc = FrameEncoder(frames.shape[1], frames.shape[2], RGB, compress, 95, **kwargs)
    for frame in frames:
        enc.add(frame)
    return enc, enc.finish()


@pytest.mark.parametrize("compress,n", sorted(DIGESTS))
def test_streamed_pixel_data_matches_the_in_memory_encoder(compress, n):
    frames = _cine_frames(n)
    with FrameEncoder(frames.shape[1], frames.shape[2], RGB, compress, 95) as enc:
        for frame in frames:
            enc.add(frame)
        encoded = enc.finish()
        assert isinstance(encoded.pixel_data, io.BufferedIOBase)  # a file, not bytes
        data = encoded.tobytes()
    assert hashlib.sha256(data).hexdigest() == DIGESTS[(compress, n)]
    assert encoded.number_of_frames == n


@pytest.mark.parametrize("compress", ["jpeg", "rle", "jpegls", "j2k", "none"])
def test_written_file_is_byte_identical_to_in_memory_pixel_data(tmp_path, compress):
    """Write one real multi-frame dataset twice: Pixel Data buffered from the spool, and as
    the bytes ``encapsulate`` gives for the same frames (the former in-memory path)."""
    frames = _cine_frames(4)
    ds = dcmread(us_file("examples_ybr_color.dcm"), stop_before_pixels=True)
    with FrameEncoder(frames.shape[1], frames.shape[2], RGB, compress, 95) as enc:
        for frame in frames:
            enc.add(frame)
        encoded = enc.finish()
        in_memory = encoded.tobytes()
        if encoded.encapsulated:
            parts = list(generate_frames(in_memory, number_of_frames=4))
            assert encapsulate(parts, has_bot=True) == in_memory
        ds.NumberOfFrames = 4
        ds.Rows, ds.Columns = encoded.rows, encoded.columns
        ds.PhotometricInterpretation = encoded.photometric
        ds.file_meta.TransferSyntaxUID = encoded.transfer_syntax_uid
        ds.PixelData = encoded.pixel_data
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = encoded.encapsulated
        size = write_atomic(ds, tmp_path / "streamed.dcm")
        twice = write_atomic(ds, tmp_path / "again.dcm")  # a buffer can be written again
    ds.PixelData = in_memory
    ds["PixelData"].is_undefined_length = encoded.encapsulated
    write_atomic(ds, tmp_path / "memory.dcm")
    streamed = (tmp_path / "streamed.dcm").read_bytes()
    assert streamed == (tmp_path / "memory.dcm").read_bytes()
    assert size == twice == len(streamed)
    back = dcmread(tmp_path / "streamed.dcm")
    assert back.PixelData == in_memory
    if not encoded.lossy:
        assert np.array_equal(back.pixel_array, frames) or compress == "j2k"


def test_spool_is_anonymous_and_closed_with_the_encoder(tmp_path):
    frames = _cine_frames(2)
    with FrameEncoder(frames.shape[1], frames.shape[2], RGB, "rle", spool_dir=tmp_path) as enc:
        for frame in frames:
            enc.add(frame)
        encoded = enc.finish()
        assert list(tmp_path.iterdir()) == []  # no name on disk: nothing to leave behind
        assert not encoded.pixel_data.closed
        with pytest.raises(ValueError, match="after finish"):
            enc.add(frames[0])
    assert encoded.pixel_data.closed


def test_native_odd_length_is_padded_and_errors_name_the_frame():
    with FrameEncoder(3, 5, GREY8, "none") as enc:
        with pytest.raises(ValueError, match="no frames"):
            enc.finish()
        enc.add(np.full((3, 5), 7, np.uint8))
        with pytest.raises(ValueError, match=r"frame 2: expected shape \(3, 5\)"):
            enc.add(np.zeros((5, 3), np.uint8))
        data = enc.finish().tobytes()
    assert data == bytes([7] * 15) + b"\x00"


def _peak_while_encoding(n: int) -> int:
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)  # noise: RLE cannot shrink it
    tracemalloc.start()
    try:
        with FrameEncoder(240, 320, RGB, "rle") as enc:
            for _ in range(n):
                enc.add(frame)
            encoded = enc.finish()
            assert encoded.number_of_frames == n
            sink = io.BytesIO()
            while chunk := encoded.pixel_data.read(1 << 16):  # what dcmwrite does
                sink.write(chunk[:0])
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_does_not_grow_with_the_number_of_frames():
    frame_bytes = 240 * 320 * 3
    five, fifty = _peak_while_encoding(5), _peak_while_encoding(50)
    # held in memory, 50 encoded noise frames alone would be ~11 MB more than 5
    assert fifty < five + 2 * frame_bytes, (five, fifty)
    assert fifty < 10 * frame_bytes
