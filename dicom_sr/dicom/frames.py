"""Stream the frames of one ultrasound instance as float luminance (+ chroma).

The SR engine works on luminance only, so every frame becomes ``luma`` (H, W) float32 in
[0, 1] plus, for colour images, ``chroma`` (H, W, 2) float32 (Cb, Cr) in [0, 1] with 0.5
neutral, using the BT.601 full-range (JFIF) transform, the one DICOM's YBR_FULL uses.
:func:`to_pixels` is its exact inverse, back to the integer pixels of the output layout.

Choices, and why:

* Stored values are used as they are: Modality LUT (Rescale) and VOI LUT are *not* applied.
  For US they are absent or identity, VOI is a display transform that the derived object
  keeps (applying it here too would apply it twice), and the output keeps the source's
  BitsStored, so stored values are the faithful signal.
* PixelPaddingValue is not applied: US images rarely carry it, and padding pixels are
  upscaled like any other pixel (nearest-valued areas stay flat).
* MONOCHROME1 is inverted, since the output is MONOCHROME2.
* PALETTE COLOR indices are expanded through the LUT to RGB before anything else (indices
  cannot be interpolated). 16-bit LUT entries are reduced to 8 bits by their high byte:
  US palettes are 8-bit values stored as ``v << 8`` or ``v * 257``, and ``>> 8`` gives ``v``
  for both. Non-segmented LUT data are read with the file's byte order (pydicom 3.0's
  :func:`~pydicom.pixels.apply_color_lut` reads them in the machine's byte order, which is
  wrong for big endian files); segmented LUTs are expanded by pydicom.
* Colour images whose three channels agree within one level on every frame (grey stored as
  RGB) are kept grey: ``chroma`` is None and the layout is MONOCHROME2, 8 bit.
* A PALETTE COLOR image whose lookup tables are missing or disagree with their descriptors
  is refused (:class:`~dicom_sr.errors.InputError` naming the tag); no table is guessed.

Everything unusable about an input raises :class:`~dicom_sr.errors.InputError` (a decoding
failure as its subclass :class:`FrameDecodeError`), never a raw pydicom exception.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_color_lut
from pydicom.uid import UID

from dicom_sr.dicom.decoders import DecodedFrame, decoder_names, open_source, undecodable_reason
from dicom_sr.dicom.reasons import brief, not_dicom, shown, tag_name
from dicom_sr.errors import InputError

if TYPE_CHECKING:
    from dicom_sr.dicom.cache import FrameCache
    from dicom_sr.dicom.inspection import Instance

LOGGER = logging.getLogger(__name__)

__all__ = [
    "Frame",
    "PixelLayout",
    "FrameReader",
    "FrameDecodeError",
    "open_frames",
    "to_pixels",
    "rgb_to_ycbcr",
    "ycbcr_to_rgb",
    "palette_table",
    "read_header",
]

# BT.601 full range (JFIF), on [0, 1] values with chroma offset 0.5
_KR, _KB = 0.299, 0.114
_RGB_TO_YCC = np.array(
    [
        [_KR, 1 - _KR - _KB, _KB],
        [-_KR / (2 - 2 * _KB), -(1 - _KR - _KB) / (2 - 2 * _KB), 0.5],
        [0.5, -(1 - _KR - _KB) / (2 - 2 * _KR), -_KB / (2 - 2 * _KR)],
    ]
)
_YCC_TO_RGB = np.linalg.inv(_RGB_TO_YCC)
_YCC_OFFSET = np.array([0.0, 0.5, 0.5])
#: pydicom's preamble before its plugins' messages: noise in a one-line reason.
_ALL_FAILED = "Unable to decode as exceptions were raised by all available plugins: "


class FrameDecodeError(InputError):
    """No decoder could produce a frame; the message names file, frame and transfer syntax."""

    def __init__(self, path: str | Path, frame: int, transfer_syntax_uid: str, reason: str):
        self.frame = frame
        self.transfer_syntax_uid = str(transfer_syntax_uid)
        name = UID(transfer_syntax_uid).name
        super().__init__(
            path,
            f"cannot decode frame {frame} ({name}, {transfer_syntax_uid}): {reason}",
            tag=tag_name("PixelData"),
        )


@dataclass(frozen=True)
class PixelLayout:
    """Layout of the OUTPUT pixels: colour -> RGB 8-bit; grey -> MONOCHROME2 `bits_stored`."""

    colour: bool
    bits_stored: int
    source_photometric: str


@dataclass
class Frame:
    """One frame: luminance (H, W) and, for colour, chroma (H, W, 2) Cb, Cr; float32 [0, 1]."""

    index: int
    luma: np.ndarray
    chroma: np.ndarray | None


def rgb_to_ycbcr(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) RGB in [0, 1] -> (..., 3) float32 Y, Cb, Cr in [0, 1] (BT.601 full range)."""
    ycc = rgb.astype(np.float32) @ _RGB_TO_YCC.T.astype(np.float32)
    ycc += _YCC_OFFSET.astype(np.float32)
    return ycc


def ycbcr_to_rgb(ycc: np.ndarray) -> np.ndarray:
    """(..., 3) Y, Cb, Cr in [0, 1] -> (..., 3) float32 RGB, not clipped."""
    centred = ycc.astype(np.float32) - _YCC_OFFSET.astype(np.float32)
    return centred @ _YCC_TO_RGB.T.astype(np.float32)


def to_pixels(luma: np.ndarray, chroma: np.ndarray | None, layout: PixelLayout) -> np.ndarray:
    """Float luma/chroma -> output pixels: (H, W) uint8/uint16 grey or (H, W, 3) uint8 RGB."""
    if not layout.colour:
        top = (1 << layout.bits_stored) - 1
        dtype = np.uint8 if layout.bits_stored <= 8 else np.uint16
        return np.rint(np.clip(luma, 0.0, 1.0) * top).astype(dtype)
    if chroma is None or chroma.shape != (*luma.shape, 2):
        got = None if chroma is None else chroma.shape
        raise ValueError(f"colour layout needs chroma of shape {(*luma.shape, 2)}, got {got}")
    ycc = np.concatenate([luma[..., None], chroma], axis=-1)
    rgb = ycbcr_to_rgb(ycc)
    return np.rint(np.clip(rgb, 0.0, 1.0) * 255.0).astype(np.uint8)


def _descriptor(ds: Dataset, colour: str, where: str) -> tuple[int, int, int]:
    """(entries, first mapped value, bits) of one palette descriptor, checked."""
    keyword = f"{colour}PaletteColorLookupTableDescriptor"
    try:
        value = ds.get(keyword)
        desc = [int(v) for v in value] if value is not None else []
    except (TypeError, ValueError):
        desc = []
    if len(desc) != 3:
        raise InputError(
            where,
            f"PALETTE COLOR needs {tag_name(keyword)} with 3 values (entries, first, bits), "
            f"found {shown(value)}",
            tag=tag_name(keyword),
        )
    entries, first, bits = (desc[0] or 65536), desc[1], desc[2]
    if bits not in (8, 16) or not 0 <= first < 65536 or entries < 1:
        raise InputError(
            where,
            f"{tag_name(keyword)} is {desc}: expected entries 0..65535, first 0..65535, "
            "8 or 16 bits",
            tag=tag_name(keyword),
        )
    return entries, first, bits


def palette_table(ds: Dataset, *, path: str | Path | None = None) -> tuple[np.ndarray, int]:
    """The palette as an (N, 3) uint8 RGB table, and the first stored value it maps.

    Raises :class:`~dicom_sr.errors.InputError` naming the tag when a descriptor or a table
    is missing, the three disagree, or a table's length does not match its descriptor.
    """
    where = str(path if path is not None else getattr(ds, "filename", None) or "dataset")
    descs = {c: _descriptor(ds, c, where) for c in ("Red", "Green", "Blue")}
    if len(set(descs.values())) != 1:
        raise InputError(
            where,
            f"PALETTE COLOR descriptors disagree: {descs} (PS3.3 C.7.6.3.1.5: identical expected)",
            tag=tag_name("GreenPaletteColorLookupTableDescriptor"),
        )
    entries, first, bits = descs["Red"]
    plain = [f"{c}PaletteColorLookupTableData" for c in ("Red", "Green", "Blue")]
    segmented = [f"Segmented{kw}" for kw in plain]
    if all(kw in ds for kw in plain):
        meta = getattr(ds, "file_meta", None)
        tsyntax = getattr(meta, "TransferSyntaxUID", None) if meta is not None else None
        big = tsyntax is not None and not UID(tsyntax).is_little_endian
        chans = []
        for keyword in plain:
            data = ds[keyword].value
            size = len(data or b"") // entries
            if size not in (1, 2):
                raise InputError(
                    where,
                    f"{tag_name(keyword)} holds {len(data or b'')} bytes, expected {entries} "
                    "entries of 1 or 2 bytes as "
                    f"{tag_name('RedPaletteColorLookupTableDescriptor')} "
                    "says",
                    tag=tag_name(keyword),
                )
            dtype = np.dtype(f"{'>' if big else '<'}u{size}")
            chans.append(np.frombuffer(data, dtype=dtype, count=entries).astype(np.uint16))
        table = np.stack(chans, axis=-1)
    elif all(kw in ds for kw in segmented):
        dtype = np.uint8 if first + entries <= 256 else np.uint16
        try:
            table = apply_color_lut(np.arange(first, first + entries, dtype=dtype), ds)
        except Exception as exc:  # noqa: BLE001 - pydicom's segment parser, on hostile data
            raise InputError(
                where,
                f"{tag_name(segmented[0])} cannot be expanded: {brief(exc)}",
                tag=tag_name(segmented[0]),
            ) from None
        table = table.astype(np.uint16)
    else:
        absent = [kw for kw in plain if kw not in ds]
        raise InputError(
            where,
            f"PALETTE COLOR without its lookup table: no {tag_name(absent[0])} (nor the segmented "
            "tables); the three tables are needed to show the image",
            tag=tag_name(absent[0]),
        )
    if bits > 8:
        if table.max() <= 255:
            LOGGER.warning("palette says %d bits but holds 8-bit values; using them as such", bits)
        else:
            table = table >> (bits - 8)
    return np.clip(table, 0, 255).astype(np.uint8), first


def read_header(path: str | Path) -> Dataset:
    """The header of `path` (no pixel data), or :class:`~dicom_sr.errors.InputError` saying why."""
    try:
        return pydicom.dcmread(path, stop_before_pixels=True)
    except InvalidDicomError as exc:
        raise InputError(path, not_dicom(exc)) from None
    except OSError as exc:
        raise InputError(path, f"cannot read: {exc.strerror or exc}") from None
    except Exception as exc:  # noqa: BLE001 - pydicom's many ways to fail on a bad header
        raise InputError(path, f"unreadable DICOM header: {brief(exc)}") from None


def _header_int(h: Dataset, keyword: str, path: Path, default: int | None = None) -> int:
    """An integer attribute of the header; InputError naming the tag when absent or not one."""
    try:
        value = h.get(keyword)
        if value in (None, ""):
            if default is not None:
                return default
            raise ValueError("absent")
        return int(value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise InputError(
            path,
            f"{tag_name(keyword)} is unusable ({exc}), expected an integer",
            tag=tag_name(keyword),
        ) from None


def _rgb8(arr: np.ndarray, bits: int) -> np.ndarray:
    """Integer RGB of `bits` bits per sample -> uint8 by the high byte."""
    if bits > 8:
        return (arr.astype(np.uint32) >> (bits - 8)).astype(np.uint8)
    return arr.astype(np.uint8)


def _is_grey(rgb8: np.ndarray) -> bool:
    """True when the three channels agree within one level everywhere."""
    g = rgb8[..., 1].astype(np.int16)
    return bool(
        np.abs(rgb8[..., 0].astype(np.int16) - g).max() <= 1
        and np.abs(rgb8[..., 2].astype(np.int16) - g).max() <= 1
    )


class FrameReader:
    """Frames of one instance, decoded and converted one at a time.

    Iterating yields :class:`Frame` objects; only the current frame exists as floats.
    ``decoders_used`` records which decoder produced frames (see :mod:`.decoders`).
    With a :class:`~dicom_sr.dicom.cache.FrameCache`, the layout and frames it holds are
    not decoded again, and what this reader decodes is kept there (see the cache).
    """

    def __init__(
        self,
        path: str | Path,
        number_of_frames: int | None = None,
        cache: FrameCache | None = None,
    ) -> None:
        self.path = Path(path)
        self._cache = cache
        self.header: Dataset = read_header(self.path)
        h = self.header
        meta = getattr(h, "file_meta", None)
        self.transfer_syntax_uid = str(getattr(meta, "TransferSyntaxUID", "") or "")
        if not self.transfer_syntax_uid:
            raise InputError(self.path, "no TransferSyntaxUID (0002,0010) in the file meta")
        frames = number_of_frames or _header_int(h, "NumberOfFrames", self.path, default=1)
        if frames < 1:
            raise InputError(
                self.path,
                f"{tag_name('NumberOfFrames')} is {frames}, expected 1 or more",
                tag=tag_name("NumberOfFrames"),
            )
        self.number_of_frames = int(frames)
        self.rows = _header_int(h, "Rows", self.path)
        self.columns = _header_int(h, "Columns", self.path)
        self.photometric = str(h.get("PhotometricInterpretation") or "").strip()
        allocated = _header_int(h, "BitsAllocated", self.path)
        self.bits_stored = _header_int(h, "BitsStored", self.path, default=allocated)
        if not 1 <= self.bits_stored <= allocated <= 16:
            raise InputError(
                self.path,
                f"{tag_name('BitsStored')} {self.bits_stored} with {tag_name('BitsAllocated')} "
                f"{allocated}: expected 1 <= BitsStored <= BitsAllocated <= 16",
                tag=tag_name("BitsStored"),
            )
        self.signed = _header_int(h, "PixelRepresentation", self.path, default=0) == 1
        self.decoders_used: list[str] = []
        self._names = decoder_names(self.transfer_syntax_uid)
        if not self._names:
            reason = undecodable_reason(self.transfer_syntax_uid) or "no decoder"
            raise FrameDecodeError(self.path, 0, self.transfer_syntax_uid, reason)
        palette = self.photometric == "PALETTE COLOR"
        self._palette = palette_table(h, path=self.path) if palette else None
        self._layout: PixelLayout | None = None

    # public ---------------------------------------------------------------------------
    @property
    def layout(self) -> PixelLayout:
        """Output layout; for colour sources this scans the frames once for grey-as-RGB."""
        if self._layout is None and self._cache is not None:
            self._layout = self._cache.layout(self.path)
        if self._layout is None:
            if self.photometric.startswith("MONOCHROME"):
                self._layout = PixelLayout(False, self.bits_stored, self.photometric)
            else:  # the scanned frames are kept: this reader goes on to use them
                grey = all(_is_grey(self._as_rgb8(d)) for _, d in self._decoded(store=True))
                self._layout = PixelLayout(not grey, 8, self.photometric)
            if self._cache is not None:
                self._cache.set_layout(self.path, self._layout)
        return self._layout

    def __iter__(self) -> Iterator[Frame]:
        return self.frames()

    def frames(self, indices: Sequence[int] | None = None) -> Iterator[Frame]:
        """Yield the frames at `indices` (default: all, in order), one at a time."""
        layout = self.layout
        for index, decoded in self._decoded(indices):
            yield self._to_frame(index, decoded, layout)

    def __len__(self) -> int:
        return self.number_of_frames

    def close(self) -> None:
        """Nothing is held open between iterations; kept for the context-manager protocol."""

    def __enter__(self) -> FrameReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # decoding -------------------------------------------------------------------------
    def _decoded(
        self, indices: Sequence[int] | None = None, store: bool | None = None
    ) -> Iterator[tuple[int, DecodedFrame]]:
        """(index, decoded frame) for `indices` (default all): from the cache when it holds
        them, else decoded, and kept in the cache when `store` (default: ``cache.storing``)."""
        n = self.number_of_frames
        todo = list(range(n)) if indices is None else [int(i) for i in indices]
        bad = [i for i in todo if not 0 <= i < n]
        if bad:
            raise IndexError(f"{self.path}: frame {bad[0]} out of range, it has {n} frames")
        cache = self._cache
        cached = set() if cache is None else {i for i in todo if cache.has(self.path, i)}
        keep = cache is not None and (cache.storing if store is None else store)
        fresh = self._decode([i for i in todo if i not in cached], indices is None and not cached)
        try:
            for index in todo:
                if cache is not None and index in cached:
                    decoded, name = cache.get(self.path, index)
                    if name not in self.decoders_used:
                        self.decoders_used.append(name)
                else:
                    _, decoded, name = next(fresh)
                    if keep:
                        cache.put(self.path, index, decoded, name)
                yield index, decoded
        finally:
            fresh.close()

    def _decode(self, todo: list[int], stream: bool) -> Iterator[tuple[int, DecodedFrame, str]]:
        """(index, decoded frame, decoder) for `todo`, falling back decoder by decoder;
        `stream`: `todo` is every frame in order, which the decoder may stream."""
        names = list(self._names)
        if self.decoders_used:  # the decoder that worked before goes first
            names.remove(self.decoders_used[0])
            names.insert(0, self.decoders_used[0])
        pos, errors = 0, []
        for name in names:
            if pos >= len(todo):
                break
            source = open_source(self.path, name, self.transfer_syntax_uid, self.photometric)
            try:
                # all frames in order: let the decoder stream; otherwise ask for the rest
                wanted = None if (pos == 0 and stream) else todo[pos:]
                for decoded in source.iter_frames(wanted):
                    self._check_shape(decoded)
                    if name not in self.decoders_used:
                        self.decoders_used.append(name)
                    yield todo[pos], decoded, name
                    pos += 1
                if pos < len(todo):
                    errors.append(f"{name}: gave {pos} of {len(todo)} frames")
            except Exception as exc:  # noqa: BLE001 - try the next decoder, report all
                frame = todo[pos] if pos < len(todo) else "?"
                LOGGER.debug("%s: decoder %s failed at frame %s: %s", self.path, name, frame, exc)
                text = " ".join(str(exc).split())
                errors.append(f"{name}: {text.replace(_ALL_FAILED, '') or type(exc).__name__}")
            finally:
                source.close()
        if pos < len(todo):
            raise FrameDecodeError(
                self.path, todo[pos], self.transfer_syntax_uid, "; ".join(errors)
            )

    def _check_shape(self, decoded: DecodedFrame) -> None:
        shape = decoded.array.shape
        if shape[:2] != (self.rows, self.columns) or len(shape) not in (2, 3):
            raise ValueError(
                f"decoded frame has shape {shape}, expected {self.rows}x{self.columns}"
            )

    def _as_rgb8(self, d: DecodedFrame) -> np.ndarray:
        """A colour decoded frame as (H, W, 3) uint8 RGB (for the grey test)."""
        pi = d.photometric
        if pi == "PALETTE COLOR":
            return self._expand_palette(d.array)
        if pi.startswith("YBR_FULL"):
            rgb = ycbcr_to_rgb(self._ybr_float(d.array))
            return np.rint(np.clip(rgb, 0, 1) * 255).astype(np.uint8)
        if pi == "RGB" and d.array.ndim == 3:
            return _rgb8(d.array, 16 if self._sitk_palette(d) else self.bits_stored)
        raise FrameDecodeError(
            self.path, 0, self.transfer_syntax_uid, f"unsupported decoded photometric {pi!r}"
        )

    def _sitk_palette(self, d: DecodedFrame) -> bool:
        # GDCM gives palette images as RGB with the LUT's depth
        return self.photometric == "PALETTE COLOR" and d.array.dtype.itemsize > 1

    def _expand_palette(self, idx: np.ndarray) -> np.ndarray:
        table, first = self._palette
        pos = np.clip(idx.astype(np.int64) - first, 0, len(table) - 1)
        return table[pos]

    def _ybr_float(self, arr: np.ndarray) -> np.ndarray:
        return arr.astype(np.float32) / np.float32((1 << self.bits_stored) - 1)

    def _to_frame(self, index: int, d: DecodedFrame, layout: PixelLayout) -> Frame:
        pi = d.photometric
        if pi.startswith("MONOCHROME") and d.array.ndim == 2:
            luma = d.array.astype(np.float32)
            if self.signed:
                luma += np.float32(1 << (self.bits_stored - 1))
            luma /= np.float32((1 << self.bits_stored) - 1)
            if pi == "MONOCHROME1":
                luma = 1.0 - luma
            return Frame(index, np.clip(luma, 0.0, 1.0, out=luma), None)
        if pi.startswith("YBR_FULL"):
            ycc = self._ybr_float(d.array)
        else:
            ycc = rgb_to_ycbcr(self._as_rgb8(d).astype(np.float32) / np.float32(255.0))
        np.clip(ycc, 0.0, 1.0, out=ycc)
        luma = np.ascontiguousarray(ycc[..., 0])
        chroma = np.ascontiguousarray(ycc[..., 1:]) if layout.colour else None
        return Frame(index, luma, chroma)


def open_frames(instance: Instance, cache: FrameCache | None = None) -> FrameReader:
    """A :class:`FrameReader` over the frames of a discovered instance (see its `cache`)."""
    return FrameReader(instance.path, instance.number_of_frames, cache)
