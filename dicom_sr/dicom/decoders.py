"""Pixel decoders for one DICOM file, tried in order, one frame at a time.

Shaped like :mod:`pydicom.pixels.decoders.base`: a list of candidate decoders, each
either available or not for a transfer syntax, each yielding integer frames together with
the photometric interpretation *of what it returned*. The caller (:mod:`.frames`) does
the colour and range handling, so every decoder only has to say what it produced.

1. ``pydicom:<plugin>``: :meth:`pydicom.pixels.decoders.base.Decoder.iter_array` reading
   straight from the open file (frames are read and decoded one at a time; the whole
   Pixel Data is never loaded), ``as_rgb=False`` so YBR_FULL(_422) comes back as YCbCr
   and the colour conversion is done exactly once, by us. JPEG 2000 YBR_RCT/YBR_ICT come
   back as RGB (the codec undoes the component transform) and pydicom says so.
   Native (uncompressed) syntaxes have no plugin: ``pydicom:native``.
2. ``simpleitk``: SimpleITK's GDCM ImageIO, for files the pydicom plugins cannot open.
   It reads the whole file (as integers, not floats) and then hands out frames;
   GDCM returns RGB for YBR and PALETTE COLOR data. It runs in a child process: on
   hostile data GDCM can kill its process (an RLE frame with no segments raises SIGFPE),
   and a file must never end the run; a crash there is this file's decoding failure.
"""

from __future__ import annotations

import logging
import os
import signal
import struct
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.encaps import parse_basic_offsets, parse_fragments
from pydicom.pixels import get_decoder
from pydicom.pixels.utils import as_pixel_options, get_expected_length
from pydicom.uid import UID

from dicom_sr.dicom.reasons import shown
from dicom_sr.errors import InputError

LOGGER = logging.getLogger(__name__)

__all__ = [
    "GDCM_SYNTAXES",
    "DecodedFrame",
    "FrameSource",
    "decoder_names",
    "undecodable_reason",
    "open_source",
    "seek_pixel_data",
    "PixelElement",
    "check_frames",
    "read_simpleitk",
]

#: Transfer syntaxes GDCM (through SimpleITK) decodes: native, deflated, RLE, JPEG
#: (baseline, extended, lossless), JPEG-LS and JPEG 2000. Not video, not HTJ2K.
GDCM_SYNTAXES: frozenset[str] = frozenset(
    {
        "1.2.840.10008.1.2",
        "1.2.840.10008.1.2.1",
        "1.2.840.10008.1.2.1.99",
        "1.2.840.10008.1.2.2",
        "1.2.840.10008.1.2.5",
        "1.2.840.10008.1.2.4.50",
        "1.2.840.10008.1.2.4.51",
        "1.2.840.10008.1.2.4.57",
        "1.2.840.10008.1.2.4.70",
        "1.2.840.10008.1.2.4.80",
        "1.2.840.10008.1.2.4.81",
        "1.2.840.10008.1.2.4.90",
        "1.2.840.10008.1.2.4.91",
    }
)

_UNDEFINED = 0xFFFFFFFF
#: Seconds the SimpleITK child may take to read one file.
SIMPLEITK_TIMEOUT = 600
_SITK_SCRIPT = """
import sys
import numpy as np
import SimpleITK as sitk
reader = sitk.ImageFileReader()
reader.SetImageIO("GDCMImageIO")
reader.SetFileName(sys.argv[1])
image = reader.Execute()
np.save(sys.argv[2], sitk.GetArrayFromImage(image))
print(image.GetNumberOfComponentsPerPixel())
"""
_NOF = "NumberOfFrames (0028,0008)"
_PIXELS = "PixelData (7FE0,0010)"

_PIXEL_TAGS = {
    0x7FE00010: "PixelData",
    0x7FE00008: "FloatPixelData",
    0x7FE00009: "DoubleFloatPixelData",
}


@dataclass
class DecodedFrame:
    """One decoded frame: integer samples and what they are."""

    array: np.ndarray  # (H, W) or (H, W, 3), integer
    photometric: str  # of `array`: MONOCHROME1/2, PALETTE COLOR, RGB, YBR_FULL(_422)


def _pydicom_decoder(uid: str):
    try:
        return get_decoder(UID(uid))
    except NotImplementedError:
        return None


def _have_simpleitk() -> bool:
    import importlib.util

    return importlib.util.find_spec("SimpleITK") is not None


def decoder_names(transfer_syntax_uid: str) -> list[str]:
    """Decoders to try for a transfer syntax, in order (empty: none can)."""
    names: list[str] = []
    dec = _pydicom_decoder(transfer_syntax_uid)
    if dec is not None and dec.is_available:
        if dec.is_native:
            names.append("pydicom:native")
        else:
            names.extend(f"pydicom:{p}" for p in dec.available_plugins)
    if transfer_syntax_uid in GDCM_SYNTAXES and _have_simpleitk():
        names.append("simpleitk")
    return names


def undecodable_reason(transfer_syntax_uid: str) -> str | None:
    """None if some decoder can read the syntax, else a sentence naming the syntax and why."""
    if decoder_names(transfer_syntax_uid):
        return None
    uid = UID(transfer_syntax_uid)
    dec = _pydicom_decoder(uid)
    if dec is None:
        why = "pydicom has no decoder for it"
    else:
        missing = "; ".join(dec.missing_dependencies) or "no plugin installed"
        why = f"pydicom's decoder needs: {missing}"
    return (
        f"no decoder for transfer syntax {uid.name} ({uid}): {why}, "
        "and GDCM/SimpleITK does not support it"
    )


@dataclass
class PixelElement:
    """Where the pixel data element of a file is: its keyword, VR and value length/offset."""

    header: Dataset
    keyword: str
    vr: str | None  # None for implicit VR
    length: int  # 0xFFFFFFFF when undefined (encapsulated)
    value_offset: int


def seek_pixel_data(f: BinaryIO, transfer_syntax_uid: str) -> PixelElement | None:
    """Read the header from `f` and leave `f` at the start of the pixel data *value*.

    Returns None if the dataset has no pixel data element. `f` must be positioned at the
    start of the file. The same walk as pydicom's own ``iter_pixels`` does.
    """
    header = pydicom.dcmread(f, stop_before_pixels=True)
    uid = UID(transfer_syntax_uid)
    raw = f.read(8)
    if len(raw) < 8:
        return None
    endian = "<" if uid.is_little_endian else ">"
    vr = None
    if uid.is_implicit_VR:
        group, elem, length = struct.unpack(f"{endian}HHL", raw)
    else:
        group, elem, vr, length = struct.unpack(f"{endian}HH2sH", raw)
        ext = f.read(4)
        if len(ext) < 4:
            return None
        length = struct.unpack(f"{endian}L", ext)[0]
    keyword = _PIXEL_TAGS.get(group << 16 | elem)
    if keyword is None:
        return None
    return PixelElement(header, keyword, vr.decode("ascii") if vr else None, length, f.tell())


def check_frames(
    path: str | os.PathLike[str],
    ds: Dataset,
    *,
    element: PixelElement | None = None,
    file: BinaryIO | None = None,
    stored: int | None = None,
) -> int:
    """The number of frames of an instance, checked against the Pixel Data it describes.

    NumberOfFrames must be 1 or more, and, when absent (one frame), the data must not hold
    more: native data by its length (``stored`` bytes, or `element`'s length as far as the
    file goes), encapsulated data by its offset table or fragment count (`file` positioned at
    the value of `element`). A truncated Pixel Data fails too. Raises
    :class:`~dicom_sr.errors.InputError` naming the tag, never answers 1 for a cine.
    """
    try:
        raw = ds.get("NumberOfFrames")
        declared = None if raw in (None, "") else int(raw)
    except (TypeError, ValueError, OverflowError):
        raise InputError(
            path, f"{_NOF} is {shown(ds['NumberOfFrames'].value)}, expected an integer", tag=_NOF
        ) from None
    meta = getattr(ds, "file_meta", None)
    tsyntax = UID(str(meta.get("TransferSyntaxUID", ""))) if meta is not None else UID("")
    encapsulated = tsyntax.is_transfer_syntax and tsyntax.is_encapsulated
    if element is not None and encapsulated != (element.length == _UNDEFINED):
        if encapsulated:
            problem = f"has a defined length under {tsyntax.name}, which needs encapsulated data"
        else:
            problem = f"has an undefined length (encapsulated) under {tsyntax.name}"
        raise InputError(path, f"{_PIXELS} {problem}", tag=_PIXELS)
    encapsulated = element is not None and encapsulated
    if element is not None and not encapsulated:
        size = os.fstat(file.fileno()).st_size if file is not None else element.length
        stored = max(0, min(element.length, size - element.value_offset))
    if encapsulated:
        if file is None:
            raise ValueError("check_frames needs the open file for encapsulated Pixel Data")
        holds, problem = _encapsulated_frames(file, element, ds, declared)
    else:
        if stored is None:
            raise ValueError("check_frames needs `element` or `stored`")
        holds, problem = _native_frames(stored, ds, declared)
    if declared is not None and declared < 1:
        found = f"; the Pixel Data holds {holds} frames" if holds else ""
        raise InputError(path, f"{_NOF} is {declared}, expected 1 or more{found}", tag=_NOF)
    if problem:
        raise InputError(path, problem, tag=_PIXELS)
    frames = 1 if declared is None else declared
    if holds is not None and holds > frames:
        said = "absent (one frame)" if declared is None else str(declared)
        raise InputError(path, f"{_NOF} is {said} but the {_PIXELS} holds {holds} frames", tag=_NOF)
    return frames


def _native_frames(stored: int, ds: Dataset, declared: int | None) -> tuple[int, str | None]:
    """(frames the bytes hold, truncation problem or None) for native Pixel Data."""
    probe = Dataset()
    for keyword in ("Rows", "Columns", "SamplesPerPixel", "BitsAllocated"):
        setattr(probe, keyword, int(ds[keyword].value))
    probe.PhotometricInterpretation = str(ds.PhotometricInterpretation).strip()
    probe.NumberOfFrames = 1
    frame_bytes = get_expected_length(probe, "bytes")  # pydicom's rule (YBR_FULL_422: 2/3)
    holds = stored // frame_bytes
    frames = declared if declared is not None and declared > 0 else 1
    if stored < frames * frame_bytes:
        return holds, (
            f"truncated: {_PIXELS} holds {stored} bytes, {frames * frame_bytes} expected for "
            f"{frames} frame(s) of {probe.Columns}x{probe.Rows}x{probe.SamplesPerPixel} "
            f"at {probe.BitsAllocated} bits"
        )
    return holds, None


def _encapsulated_frames(
    f: BinaryIO, element: PixelElement, ds: Dataset, declared: int | None
) -> tuple[int | None, str | None]:
    """(frames the offset tables list, or None; problem or None) for encapsulated data."""
    meta = getattr(ds, "file_meta", None)
    tsyntax = UID(str(meta.get("TransferSyntaxUID", ""))) if meta is not None else UID("")
    big = tsyntax.is_transfer_syntax and not tsyntax.is_little_endian
    endian = ">" if big else "<"
    size = os.fstat(f.fileno()).st_size
    f.seek(element.value_offset)
    try:
        offsets = parse_basic_offsets(f, endianness=endian)
        first = f.tell()
        count, positions = parse_fragments(f, endianness=endian)
    except (ValueError, struct.error, OSError) as exc:
        return None, f"truncated or malformed encapsulated {_PIXELS}: {exc}"
    if count == 0:
        return None, f"truncated: encapsulated {_PIXELS} has no fragments"
    f.seek(positions[-1] + 4)
    last_len = struct.unpack(f"{endian}L", f.read(4))[0]
    end = positions[-1] + 8 + last_len
    f.seek(end)
    delimiter = f.read(4)
    if end > size or delimiter != struct.pack(f"{endian}HH", 0xFFFE, 0xE0DD):
        return None, f"truncated: encapsulated {_PIXELS} ends at byte {size}, before its last item"
    frames = declared if declared is not None and declared > 0 else 1
    starts = {p - first for p in positions}
    if "ExtendedOffsetTable" in ds:
        listed = len(ds.ExtendedOffsetTable) // 8
        if listed < frames:
            return listed, f"Extended Offset Table lists {listed} frames, {_NOF} is {frames}"
        return listed, None
    if offsets:
        listed = len(offsets)
        if listed < frames:
            return listed, f"Basic Offset Table lists {listed} frames, {_NOF} is {frames}"
        missing = [i for i, o in enumerate(offsets) if o not in starts]
        if missing:
            return (
                listed,
                f"truncated: frame {missing[0]} of {listed} is not in the encapsulated data",
            )
        return listed, None
    if count < frames:
        return count, f"truncated: {count} fragments for {frames} frames"
    # without an offset table a frame may span fragments: more fragments prove nothing
    return (count if declared is not None and declared < 1 else None), None


class FrameSource:
    """Decoded frames of one file from one decoder; use as a context manager."""

    def __init__(
        self, path: Path, name: str, transfer_syntax_uid: str, grey_photometric: str = "MONOCHROME2"
    ) -> None:
        self.path = path
        self.name = name
        self.transfer_syntax_uid = transfer_syntax_uid
        self.grey_photometric = grey_photometric
        self._file: BinaryIO | None = None
        self._sitk: np.ndarray | None = None

    def close(self) -> None:
        """Release the file and any decoded array."""
        if self._file is not None:
            self._file.close()
            self._file = None
        self._sitk = None

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def iter_frames(self, indices: Sequence[int] | None = None) -> Iterator[DecodedFrame]:
        """Yield decoded frames (all of them, or those in `indices`) one at a time."""
        if self.name == "simpleitk":
            yield from self._iter_simpleitk(indices)
        else:
            yield from self._iter_pydicom(indices)

    # pydicom --------------------------------------------------------------------------
    def _iter_pydicom(self, indices: Sequence[int] | None) -> Iterator[DecodedFrame]:
        uid = UID(self.transfer_syntax_uid)
        decoder = get_decoder(uid)
        plugin = self.name.split(":", 1)[1]
        plugin = "" if plugin == "native" else plugin
        if uid.is_deflated:
            # the dataset is zlib-compressed after the file meta: file offsets mean nothing
            src: Dataset | BinaryIO = pydicom.dcmread(self.path)
            opts = as_pixel_options(src)
        else:
            if self._file is not None:
                self._file.close()
            self._file = open(self.path, "rb")  # noqa: SIM115 - closed in close()
            found = seek_pixel_data(self._file, uid)
            if found is None:
                raise ValueError("no Pixel Data element")
            opts = as_pixel_options(found.header, pixel_keyword=found.keyword)
            if found.vr:
                opts["pixel_vr"] = found.vr
            src = self._file
        for arr, props in decoder.iter_array(
            src,
            indices=list(indices) if indices is not None else None,
            decoding_plugin=plugin,
            as_rgb=False,
            transfer_syntax_uid=uid,
            **opts,
        ):
            yield DecodedFrame(arr, str(props["photometric_interpretation"]))

    # SimpleITK ------------------------------------------------------------------------
    def _iter_simpleitk(self, indices: Sequence[int] | None) -> Iterator[DecodedFrame]:
        if self._sitk is None:
            arr, ncomp = read_simpleitk(self.path)
            if arr.ndim == (2 if ncomp == 1 else 3):
                arr = arr[None]
            self._sitk = arr
            self._sitk_rgb = ncomp == 3
        arr = self._sitk
        for i in indices if indices is not None else range(arr.shape[0]):
            frame = arr[i]
            # GDCM applies palettes and YBR conversion; grey keeps the stored polarity
            photometric = "RGB" if self._sitk_rgb else self.grey_photometric
            yield DecodedFrame(frame, photometric)


def read_simpleitk(path: Path, timeout: float = SIMPLEITK_TIMEOUT) -> tuple[np.ndarray, int]:
    """The whole image as GDCM (SimpleITK) reads it, and its components per pixel.

    Read in a child process, so that GDCM crashing on a hostile file (it can raise SIGFPE)
    fails this file with a ``RuntimeError`` instead of ending the caller.
    """
    with tempfile.TemporaryDirectory(prefix="dicom-sr-sitk-") as tmp:
        out = Path(tmp) / "pixels.npy"
        try:
            proc = subprocess.run(
                [sys.executable, "-c", _SITK_SCRIPT, str(path), str(out)],
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"SimpleITK took more than {timeout:.0f} s") from None
        if proc.returncode < 0:
            name = signal.Signals(-proc.returncode).name
            raise RuntimeError(f"GDCM (SimpleITK) crashed on this file ({name})")
        if proc.returncode != 0:
            lines = [ln.strip() for ln in proc.stderr.splitlines() if ln.strip()]
            detail = next((ln for ln in reversed(lines) if "Error" in ln or "rror:" in ln), "")
            raise RuntimeError(f"SimpleITK could not read it: {detail or 'no message'}"[:300])
        return np.load(out), int(proc.stdout.split()[-1])


def open_source(
    path: Path, name: str, transfer_syntax_uid: str, grey_photometric: str = "MONOCHROME2"
) -> FrameSource:
    """A :class:`FrameSource` for decoder `name` (one of :func:`decoder_names`)."""
    return FrameSource(Path(path), name, transfer_syntax_uid, grey_photometric)
