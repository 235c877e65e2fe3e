"""Frames as image files: lossless WebP or PNG by default (a comparison must not add codec
artefacts of its own), lossy WebP on request (smaller pages), small lossy thumbnails."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from dicom_sr.fsio import write_bytes

__all__ = ["FORMATS", "ImageStore", "encode_image", "thumbnail", "as_uint8"]

#: Formats a page's frames may use (browsers decode both).
FORMATS = ("webp", "png")
#: Width of the index's thumbnails, CSS pixels.
THUMB_WIDTH = 160


def as_uint8(frame: np.ndarray) -> np.ndarray:
    """(H, W) grey or (H, W, 3) RGB as uint8; floats are taken as [0, 1]."""
    arr = np.asarray(frame)
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] != 3):
        raise ValueError(f"expected an (H, W) or (H, W, 3) frame, got shape {arr.shape}")
    if arr.dtype == np.uint8:
        return arr
    if np.issubdtype(arr.dtype, np.floating):
        return np.rint(np.clip(arr, 0.0, 1.0) * 255.0).astype(np.uint8)
    raise ValueError(f"expected uint8 or float frames, got {arr.dtype}")


def encode_image(frame: np.ndarray, fmt: str = "webp", quality: int | None = None) -> bytes:
    """Encode one frame; ``quality`` None is lossless, 1-100 is lossy WebP."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown image format {fmt!r} (expected one of {', '.join(FORMATS)})")
    img = Image.fromarray(as_uint8(frame))
    buf = io.BytesIO()
    if fmt == "png":
        img.save(buf, format="PNG", optimize=False, compress_level=6)
    elif quality is None:
        img.save(
            buf, format="WEBP", lossless=True, quality=50, method=4
        )  # ~1 % larger than 80, faster
    else:
        img.save(buf, format="WEBP", quality=int(quality), method=4)
    return buf.getvalue()


def thumbnail(frame: np.ndarray, width: int = THUMB_WIDTH) -> bytes:
    """A small lossy WebP of ``frame`` for the index (twice ``width`` for sharp HiDPI screens)."""
    img = Image.fromarray(as_uint8(frame))
    w = min(img.width, 2 * width)
    h = max(1, round(img.height * w / img.width))
    buf = io.BytesIO()
    img.resize((w, h), Image.Resampling.LANCZOS).save(buf, format="WEBP", quality=75)
    return buf.getvalue()


class ImageStore:
    """Writes image files under ``root`` and returns their URLs relative to ``root``."""

    def __init__(self, root: Path, fmt: str = "webp", quality: int | None = None) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"unknown image format {fmt!r} (expected one of {', '.join(FORMATS)})")
        self.root = Path(root)
        self.fmt = fmt
        self.quality = quality
        self.bytes = 0
        self.files = 0

    def _write(self, rel: str, blob: bytes) -> str:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes(path, blob)
        self.bytes += len(blob)
        self.files += 1
        return rel

    def frame(self, stem: str, frame: np.ndarray) -> str:
        """Write one frame as ``stem.<fmt>``; return its relative URL."""
        return self._write(f"{stem}.{self.fmt}", encode_image(frame, self.fmt, self.quality))

    def thumb(self, stem: str, frame: np.ndarray) -> str:
        """Write a thumbnail as ``stem.webp``; return its relative URL."""
        return self._write(f"{stem}.webp", thumbnail(frame))
