"""Decoded frames kept for the rest of one series, so that each frame is decoded once.

Processing a series reads a frame up to three times: the grey-as-RGB scan of a colour
instance (:attr:`~dicom_sr.dicom.frames.FrameReader.layout`), the training picks, and the
write. A :class:`FrameCache` shared by those readers keeps each instance's resolved
:class:`~dicom_sr.dicom.frames.PixelLayout` and the decoders' raw
:class:`~dicom_sr.dicom.decoders.DecodedFrame` arrays, so later readers take them from
there instead of decoding again (for JPEG cines, decoding is most of the reading time).

The arrays go to one anonymous temporary file (unlinked at once, as
:class:`~dicom_sr.dicom.encode.FrameEncoder` does with encoded frames) and are read back one
at a time: resident memory holds only a small index, whatever the number of frames.
Closing the cache deletes that file; nothing of it is left in ``spool_dir``.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import numpy as np

from dicom_sr.dicom.decoders import DecodedFrame

if TYPE_CHECKING:
    from dicom_sr.dicom.frames import PixelLayout

__all__ = ["FrameCache"]


@dataclass(frozen=True)
class _Slot:
    """Where one decoded frame lies in the spool, and what it is."""

    offset: int
    dtype: str  # numpy dtype string, byte order included
    shape: tuple[int, ...]
    photometric: str  # DecodedFrame.photometric
    decoder: str  # the decoder that produced it (FrameReader.decoders_used)


class FrameCache:
    """Layouts and decoded frames of the instances of one series, keyed by source path.

    ``storing`` says whether readers keep the frames they decode for their callers (the
    training picks); frames decoded for the layout scan are always kept, since the same
    reader goes on to use them. Turn it off for the last use (the write). Use it as a
    context manager, or call :meth:`close`.
    """

    def __init__(self, spool_dir: str | os.PathLike[str] | None = None, *, storing: bool = True):
        self.storing = storing
        self._spool_dir = spool_dir
        self._spool: BinaryIO | None = None
        self._layouts: dict[Path, PixelLayout] = {}
        self._slots: dict[tuple[Path, int], _Slot] = {}

    def layout(self, path: str | Path) -> PixelLayout | None:
        """The layout resolved for `path`, or None when not known yet."""
        return self._layouts.get(Path(path))

    def set_layout(self, path: str | Path, layout: PixelLayout) -> None:
        self._layouts[Path(path)] = layout

    def has(self, path: str | Path, index: int) -> bool:
        return (Path(path), int(index)) in self._slots

    def put(self, path: str | Path, index: int, frame: DecodedFrame, decoder: str) -> None:
        """Keep one decoded frame (appended to the spool); a frame already kept is ignored."""
        key = (Path(path), int(index))
        if key in self._slots:
            return
        if self._spool is None:
            self._spool = tempfile.TemporaryFile(dir=self._spool_dir, prefix=".dicom-sr-frames-")
        arr = np.ascontiguousarray(frame.array)
        offset = self._spool.seek(0, os.SEEK_END)
        self._spool.write(arr.reshape(-1).view(np.uint8))
        self._slots[key] = _Slot(offset, arr.dtype.str, arr.shape, frame.photometric, decoder)

    def get(self, path: str | Path, index: int) -> tuple[DecodedFrame, str]:
        """One kept frame, read back into a new writeable array, and its decoder's name."""
        slot = self._slots[(Path(path), int(index))]
        assert self._spool is not None  # slots exist only while the spool does
        arr = np.empty(slot.shape, dtype=np.dtype(slot.dtype))
        self._spool.seek(slot.offset)
        if self._spool.readinto(arr.reshape(-1).view(np.uint8)) != arr.nbytes:
            raise OSError(f"frame cache spool ended early at frame {index} of {path}")
        return DecodedFrame(arr, slot.photometric), slot.decoder

    def close(self) -> None:
        """Delete the spool and forget everything."""
        if self._spool is not None:
            self._spool.close()
            self._spool = None
        self._slots.clear()
        self._layouts.clear()

    def __enter__(self) -> FrameCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
