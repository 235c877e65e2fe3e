"""Encode output frames one at a time into DICOM Pixel Data.

A cine of a few hundred super-resolved frames does not fit comfortably in memory as raw
pixels, so :class:`FrameEncoder` compresses each frame as it arrives and keeps only the encoded
bytes. The codecs are the libraries' own: highdicom's :func:`highdicom.frame.encode_frame`
(which dispatches to pydicom's encoders: gdcm / pylibjpeg-rle, pyjpegls, pylibjpeg-openjpeg)
for the lossless syntaxes, and Pillow's libjpeg for JPEG Baseline, called directly only so that
the configured quality and true 4:2:2 chroma subsampling (what ``YBR_FULL_422`` says) are used.
Frames are encapsulated with :func:`pydicom.encaps.encapsulate` (Basic Offset Table filled in).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from io import BytesIO
from typing import TYPE_CHECKING

import numpy as np
from highdicom.frame import encode_frame
from pydicom.encaps import encapsulate
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
    length) for ``none``, an encapsulated item sequence otherwise.
    """

    pixel_data: bytes
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


class FrameEncoder:
    """Encode frames of one output instance, one at a time.

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
    """

    def __init__(
        self, rows: int, columns: int, layout: PixelLayout, compress: str, quality: int = 95
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
        self._frames: list[bytes] = []

    def _photometric(self) -> str:
        if not self.colour:
            return "MONOCHROME2"
        return {"jpeg": "YBR_FULL_422", "j2k": "YBR_RCT"}.get(self.compress, "RGB")

    @property
    def number_of_frames(self) -> int:
        return len(self._frames)

    def add(self, pixels: np.ndarray) -> None:
        """Encode one frame: (rows, columns, 3) uint8 RGB or (rows, columns) unsigned grey."""
        shape = (self.rows, self.columns, 3) if self.colour else (self.rows, self.columns)
        arr = np.asarray(pixels)
        if arr.shape != shape:
            raise ValueError(
                f"frame {len(self._frames) + 1}: expected shape {shape}, got {arr.shape}"
            )
        if arr.dtype.kind not in "ub":
            raise ValueError(
                f"frame {len(self._frames) + 1}: expected unsigned integer pixels, got {arr.dtype}"
            )
        if arr.size and int(arr.max()) >= 1 << self.bits_stored:
            raise ValueError(
                f"frame {len(self._frames) + 1}: value {int(arr.max())} does not fit "
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
        self._frames.append(bytes(data))

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
        """Assemble the Pixel Data value of all frames added so far."""
        if not self._frames:
            raise ValueError("no frames were added to the encoder")
        n = len(self._frames)
        if self.transfer_syntax_uid.is_encapsulated:
            # The Basic Offset Table holds 32-bit offsets; past 4 GiB leave it empty (allowed).
            offsets_fit = sum(len(f) + 8 for f in self._frames[:-1]) <= 2**32 - 1
            if not offsets_fit:
                logger.info("pixel data over 4 GiB: writing an empty Basic Offset Table")
            pixel_data = encapsulate(self._frames, has_bot=offsets_fit)
        else:
            pixel_data = b"".join(self._frames)
            if len(pixel_data) % 2:
                pixel_data += b"\x00"
        lossy = self.transfer_syntax_uid in LOSSY_METHODS
        ratio = None
        if lossy:
            raw = n * self.rows * self.columns * self.samples_per_pixel * self.bits_allocated // 8
            ratio = raw / max(1, sum(len(f) for f in self._frames))
            if not math.isfinite(ratio):  # pragma: no cover - defensive
                ratio = None
        self._frames = []
        logger.debug(
            "encoded %d frame(s) %dx%d as %s: %d bytes",
            n,
            self.rows,
            self.columns,
            self.transfer_syntax_uid.name,
            len(pixel_data),
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
