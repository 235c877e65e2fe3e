"""Encode output frames one at a time into DICOM Pixel Data.

A cine of a few hundred super-resolved frames does not fit comfortably in memory, raw or
encoded, so :class:`FrameEncoder` compresses each frame as it arrives and appends it to an
anonymous spool file; memory then does not grow with the number of frames. The Pixel Data
value it returns is a file object over that spool, which pydicom writes as a *buffered*
element value (read in chunks at ``dcmwrite`` time).

The codecs are the libraries' own: highdicom's :func:`highdicom.frame.encode_frame` (which
dispatches to pydicom's encoders: gdcm / pylibjpeg-rle, pyjpegls, pylibjpeg-openjpeg) for the
lossless syntaxes, and Pillow's libjpeg for JPEG Baseline, called directly only so that the
configured quality and true 4:2:2 chroma subsampling (what ``YBR_FULL_422`` says) are used.
Frames are encapsulated with :class:`pydicom.encaps.EncapsulatedBuffer` (Basic Offset Table
filled in), byte for byte what :func:`pydicom.encaps.encapsulate` gives for the same frames.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import tempfile
from dataclasses import dataclass
from functools import cached_property
from io import BufferedIOBase, BytesIO
from typing import TYPE_CHECKING, BinaryIO

import numpy as np
from highdicom.frame import encode_frame
from pydicom.encaps import EncapsulatedBuffer
from pydicom.uid import (
    JPEG2000,
    JPEG2000MC,
    UID,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

if TYPE_CHECKING:
    from dicom_sr.dicom.frames import PixelLayout

__all__ = [
    "COMPRESS_SYNTAX",
    "LOSSY_METHODS",
    "EncodedPixels",
    "FrameEncoder",
]

logger = logging.getLogger(__name__)

#: OutputConfig.compress -> transfer syntax of the written file.
COMPRESS_SYNTAX: dict[str, UID] = {
    "none": ExplicitVRLittleEndian,
    "rle": RLELossless,
    "jpeg": JPEGBaseline8Bit,
    "jpegls": JPEGLSLossless,
    "j2k": JPEG2000Lossless,
}

#: Lossy transfer syntaxes -> Lossy Image Compression Method (0028,2114) defined term.
LOSSY_METHODS: dict[str, str] = {
    JPEGBaseline8Bit: "ISO_10918_1",
    JPEGExtended12Bit: "ISO_10918_1",
    JPEG2000: "ISO_15444_1",
    JPEG2000MC: "ISO_15444_2",
    JPEGLSNearLossless: "ISO_14495_1",
}


@dataclass(frozen=True)
class EncodedPixels:
    """Encoded Pixel Data and the Image Pixel module values that describe it.

    ``pixel_data`` is the value of (7FE0,0010): native little-endian bytes (padded to even
    length) for ``none``, an encapsulated item sequence otherwise; either ``bytes`` or a
    readable, seekable binary file object (what :class:`FrameEncoder` gives), which pydicom
    writes as a buffered value. A file object stays valid until its encoder is closed.
    """

    pixel_data: bytes | BufferedIOBase
    transfer_syntax_uid: UID
    photometric: str
    lossy: bool
    rows: int
    columns: int
    number_of_frames: int
    samples_per_pixel: int
    bits_allocated: int
    bits_stored: int
    planar_configuration: int | None
    lossy_method: str | None = None
    lossy_ratio: float | None = None

    @property
    def high_bit(self) -> int:
        return self.bits_stored - 1

    @property
    def encapsulated(self) -> bool:
        return self.transfer_syntax_uid.is_encapsulated

    def tobytes(self) -> bytes:
        """The whole Pixel Data value in memory (for tests and small images only)."""
        if isinstance(self.pixel_data, bytes | bytearray):
            return bytes(self.pixel_data)
        self.pixel_data.seek(0)
        try:
            return self.pixel_data.read(None)
        finally:
            self.pixel_data.seek(0)


class _Span(BufferedIOBase):
    """A read-only, seekable view of ``length`` bytes at ``start`` of a shared spool file.

    One per frame, so :class:`pydicom.encaps.EncapsulatedBuffer` (one buffer per frame) can
    read every frame from a single file and a single descriptor.
    """

    def __init__(self, spool: BinaryIO, start: int, length: int) -> None:
        super().__init__()
        self._spool = spool
        self._start = start
        self._length = length
        self._pos = 0

    @property
    def closed(self) -> bool:
        return self._spool.closed

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = os.SEEK_SET, /) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._pos, os.SEEK_END: self._length}[whence]
        if base + offset < 0:
            raise ValueError(f"negative seek position {base + offset}")
        self._pos = base + offset
        return self._pos

    def read(self, size: int | None = -1, /) -> bytes:
        left = max(0, self._length - self._pos)
        n = left if size is None or size < 0 else min(size, left)
        if n == 0:
            return b""
        self._spool.seek(self._start + self._pos)
        data = self._spool.read(n)
        self._pos += len(data)
        return data

    def read1(self, size: int = -1, /) -> bytes:
        return self.read(size)


class _Encapsulated(EncapsulatedBuffer):
    """pydicom's :class:`~pydicom.encaps.EncapsulatedBuffer` with the item lengths, offsets and
    Basic Offset Table computed once, not on every read.

    pydicom 3.0 recomputes them (quadratic in the frame count) for each 8 KiB that ``dcmwrite``
    reads: writing a 120-frame cine of 111 MB took 300 s instead of under one.
    """

    @cached_property
    def lengths(self) -> list[int]:
        return [item.length for item in self._items]

    @cached_property
    def offsets(self) -> list[int]:
        return list(itertools.accumulate(self.lengths[:-1], initial=0))

    @cached_property
    def basic_offset_table(self) -> bytes:
        return super().basic_offset_table

    @cached_property
    def encapsulated_length(self) -> int:
        return len(self.basic_offset_table) + sum(self.lengths)


class FrameEncoder:
    """Encode frames of one output instance, one at a time, spooled to a temporary file.

    Use it as a context manager (or call :meth:`close`): the spool, and with it the Pixel Data
    returned by :meth:`finish`, lives until then, so write the dataset inside the ``with``.
    The spool is an anonymous temporary file (unlinked at once), so nothing is left behind
    even if the process is killed.

    Parameters
    ----------
    rows, columns : int
        Size of every output frame.
    layout : frames.PixelLayout
        Colour frames are 8-bit RGB (H, W, 3); grey frames are (H, W) with the source's
        BitsStored (8..16), stored as MONOCHROME2.
    compress : str
        ``none`` (Explicit VR Little Endian), ``rle`` (RLE Lossless), ``jpeg`` (JPEG Baseline,
        colour stored as YBR_FULL_422), ``jpegls`` (JPEG-LS Lossless) or ``j2k``
        (JPEG 2000 Lossless, colour stored as YBR_RCT).
    quality : int
        JPEG quality (1..100); ignored by the lossless syntaxes.
    spool_dir : path-like, optional
        Folder of the spool file (default: the system's temporary folder). Pass a folder on
        the output's disk when the temporary folder is small or held in memory (tmpfs).
    """

    def __init__(
        self,
        rows: int,
        columns: int,
        layout: PixelLayout,
        compress: str,
        quality: int = 95,
        *,
        spool_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        if compress not in COMPRESS_SYNTAX:
            raise ValueError(
                f"unknown compression {compress!r}: expected one of {sorted(COMPRESS_SYNTAX)}"
            )
        if not 1 <= quality <= 100:
            raise ValueError(f"JPEG quality must be 1..100, got {quality}")
        self.rows = int(rows)
        self.columns = int(columns)
        self.compress = compress
        self.quality = int(quality)
        self.transfer_syntax_uid = COMPRESS_SYNTAX[compress]
        self.colour = bool(layout.colour)
        if self.colour:
            self.bits_stored = 8
        else:
            self.bits_stored = int(layout.bits_stored)
            if not 1 <= self.bits_stored <= 16:
                raise ValueError(f"grey output needs BitsStored 1..16, got {self.bits_stored}")
        self.bits_allocated = 8 if self.bits_stored <= 8 else 16
        self.samples_per_pixel = 3 if self.colour else 1
        self.planar_configuration = 0 if self.colour else None
        self.dtype = np.dtype(np.uint8 if self.bits_allocated == 8 else np.uint16)
        self.photometric = self._photometric()
        if compress == "jpeg" and self.bits_allocated != 8:
            raise ValueError(
                f"JPEG Baseline holds 8-bit samples only; this grey output has BitsStored "
                f"{self.bits_stored}: use compress 'rle', 'jpegls' or 'j2k'"
            )
        if compress == "j2k" and min(self.rows, self.columns) < 32:
            raise ValueError(f"JPEG 2000 needs frames of at least 32x32, got {rows}x{columns}")
        self._spool_dir = spool_dir
        self._spool: BinaryIO | None = None
        self._lengths: list[int] = []  # encoded length of each frame, in spool order
        self._finished = False

    def __enter__(self) -> FrameEncoder:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Delete the spool file; Pixel Data from :meth:`finish` is unreadable afterwards."""
        if self._spool is not None:
            self._spool.close()

    def _photometric(self) -> str:
        if not self.colour:
            return "MONOCHROME2"
        return {"jpeg": "YBR_FULL_422", "j2k": "YBR_RCT"}.get(self.compress, "RGB")

    @property
    def number_of_frames(self) -> int:
        return len(self._lengths)

    def add(self, pixels: np.ndarray) -> None:
        """Encode one frame: (rows, columns, 3) uint8 RGB or (rows, columns) unsigned grey."""
        if self._finished:
            raise ValueError("frames cannot be added after finish()")
        shape = (self.rows, self.columns, 3) if self.colour else (self.rows, self.columns)
        arr = np.asarray(pixels)
        if arr.shape != shape:
            raise ValueError(
                f"frame {len(self._lengths) + 1}: expected shape {shape}, got {arr.shape}"
            )
        if arr.dtype.kind not in "ub":
            raise ValueError(
                f"frame {len(self._lengths) + 1}: expected unsigned integer pixels, got {arr.dtype}"
            )
        if arr.size and int(arr.max()) >= 1 << self.bits_stored:
            raise ValueError(
                f"frame {len(self._lengths) + 1}: value {int(arr.max())} does not fit "
                f"BitsStored {self.bits_stored}"
            )
        arr = np.ascontiguousarray(arr, dtype=self.dtype)
        if self.compress == "jpeg":
            data = self._jpeg(arr)
        else:
            data = encode_frame(
                arr,
                transfer_syntax_uid=self.transfer_syntax_uid,
                bits_allocated=self.bits_allocated,
                bits_stored=self.bits_stored,
                photometric_interpretation=self.photometric,
                pixel_representation=0,
                planar_configuration=self.planar_configuration,
            )
        if self._spool is None:
            self._spool = tempfile.TemporaryFile(dir=self._spool_dir, prefix=".dicom-sr-spool-")
        self._spool.seek(0, os.SEEK_END)
        self._spool.write(data)
        self._lengths.append(len(data))

    def _jpeg(self, arr: np.ndarray) -> bytes:
        # Pillow converts RGB to YCbCr (JFIF, i.e. YBR_FULL) and subsamples 4:2:2 when
        # asked: exactly what Photometric Interpretation YBR_FULL_422 declares.
        from PIL import Image

        image = Image.fromarray(arr)  # uint8 (H, W) -> "L", (H, W, 3) -> "RGB"
        with BytesIO() as buf:
            image.save(
                buf, format="JPEG", quality=self.quality, subsampling=1 if self.colour else 0
            )
            return buf.getvalue()

    def finish(self) -> EncodedPixels:
        """The Pixel Data value of all frames added, as a file object over the spool."""
        if not self._lengths or self._spool is None:
            raise ValueError("no frames were added to the encoder")
        self._finished = True
        n = len(self._lengths)
        total = sum(self._lengths)
        pixel_data: BufferedIOBase
        self._spool.flush()
        if self.transfer_syntax_uid.is_encapsulated:
            starts = [0]
            for length in self._lengths[:-1]:
                starts.append(starts[-1] + length)
            spans = [_Span(self._spool, a, b) for a, b in zip(starts, self._lengths, strict=True)]
            # The Basic Offset Table holds 32-bit offsets; past 4 GiB leave it empty (allowed).
            last_offset = sum(8 + b + b % 2 for b in self._lengths[:-1])
            offsets_fit = last_offset <= 2**32 - 1
            if not offsets_fit:
                logger.info("pixel data over 4 GiB: writing an empty Basic Offset Table")
            pixel_data = _Encapsulated(spans, use_bot=offsets_fit)
            size = pixel_data.encapsulated_length
        else:
            if total % 2:
                self._spool.seek(0, os.SEEK_END)
                self._spool.write(b"\x00")
                self._spool.flush()
            size = total + total % 2
            pixel_data = _Span(self._spool, 0, size)
        lossy = self.transfer_syntax_uid in LOSSY_METHODS
        ratio = None
        if lossy:
            raw = n * self.rows * self.columns * self.samples_per_pixel * self.bits_allocated // 8
            ratio = raw / max(1, total)
            if not math.isfinite(ratio):  # pragma: no cover - defensive
                ratio = None
        logger.debug(
            "encoded %d frame(s) %dx%d as %s: %d bytes",
            n,
            self.rows,
            self.columns,
            self.transfer_syntax_uid.name,
            size,
        )
        return EncodedPixels(
            pixel_data=pixel_data,
            transfer_syntax_uid=self.transfer_syntax_uid,
            photometric=self.photometric,
            lossy=lossy,
            rows=self.rows,
            columns=self.columns,
            number_of_frames=n,
            samples_per_pixel=self.samples_per_pixel,
            bits_allocated=self.bits_allocated,
            bits_stored=self.bits_stored,
            planar_configuration=self.planar_configuration,
            lossy_method=LOSSY_METHODS.get(self.transfer_syntax_uid),
            lossy_ratio=ratio,
        )
