"""Display frames of an instance, the ruler's calibration, and burned-in text blanking.

Frames are decoded by :class:`~dicom_sr.dicom.frames.FrameReader` (the pipeline's own reader,
so source and derived go through the same conversion) and shown as 8-bit grey or RGB.
``--deidentify-text`` keeps only the pixels inside the Sequence of Ultrasound Regions (every
region: tissue, Doppler, ECG) and blanks the rest, where scanners burn in names, IDs and dates.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from pydicom import Dataset

from dicom_sr.dicom.frames import Frame, FrameReader, ycbcr_to_rgb
from dicom_sr.dicom.reasons import tag_name
from dicom_sr.dicom.regions import read_regions
from dicom_sr.engine import upscale_np
from dicom_sr.errors import InputError
from dicom_sr.viewer.images import as_uint8

__all__ = [
    "DisplayFrame",
    "read_display_frames",
    "region_mask",
    "calibration",
    "frame_rate",
    "to_rgb8",
]

#: RegionPhysicalUnitsX/Y value for centimetres (PS3.3 C.8.5.5.1.15).
_CM = 3


@dataclass
class DisplayFrame:
    """One frame as shown (8-bit), and the bicubic upscale of it when asked for."""

    index: int
    image: np.ndarray
    bicubic: np.ndarray | None = None


def to_rgb8(luma: np.ndarray, chroma: np.ndarray | None) -> np.ndarray:
    """Float luma (+ chroma) in [0, 1] -> (H, W) or (H, W, 3) uint8."""
    if chroma is None:
        return np.rint(np.clip(luma, 0.0, 1.0) * 255.0).astype(np.uint8)
    rgb = ycbcr_to_rgb(np.concatenate([luma[..., None], chroma], axis=-1))
    return np.rint(np.clip(rgb, 0.0, 1.0) * 255.0).astype(np.uint8)


def region_mask(ds: Dataset, rows: int, cols: int, path: str | os.PathLike[str]) -> np.ndarray:
    """True inside any ultrasound region (clipped to the frame), False elsewhere.

    Raises :class:`InputError` when the header has no Sequence of Ultrasound Regions: then
    nothing tells the image from the burned-in text, and the series is left out.
    """
    regions = read_regions(ds, path=path)
    if not regions:
        raise InputError(
            path,
            f"no {tag_name('SequenceOfUltrasoundRegions')}: cannot tell the image from "
            "burned-in text, so --deidentify-text leaves this series out",
            tag=tag_name("SequenceOfUltrasoundRegions"),
        )
    mask = np.zeros((rows, cols), dtype=bool)
    for r in regions:
        mask[max(r.y0, 0) : min(r.y1, rows - 1) + 1, max(r.x0, 0) : min(r.x1, cols - 1) + 1] = True
    return mask


def _blank(frame: Frame, mask: np.ndarray | None) -> Frame:
    if mask is None:
        return frame
    luma = np.where(mask, frame.luma, 0.0).astype(np.float32)
    chroma = None
    if frame.chroma is not None:
        chroma = np.where(mask[..., None], frame.chroma, 0.5).astype(np.float32)
    return Frame(frame.index, luma, chroma)


def read_display_frames(
    path: str | os.PathLike[str],
    *,
    deidentify: bool = False,
    bicubic_scale: int = 1,
) -> Iterator[DisplayFrame]:
    """Yield the frames of one instance as 8-bit images, one at a time.

    ``deidentify`` blanks what lies outside the ultrasound regions (see :func:`region_mask`);
    ``bicubic_scale`` > 1 adds each frame upscaled by the engine's bicubic (the ``bicubic``
    method's interpolation), for showing a smaller image at the display size.
    """
    with FrameReader(path) as reader:
        mask = region_mask(reader.header, reader.rows, reader.columns, path) if deidentify else None
        for frame in reader:
            frame = _blank(frame, mask)
            image = to_rgb8(frame.luma, frame.chroma)
            up = None
            if bicubic_scale > 1:  # one call on the 8-bit image (the colour transform is linear)
                up = as_uint8(upscale_np(image / np.float32(255.0), bicubic_scale, "bicubic"))
                if mask is not None:  # interpolation must not bleed text back in
                    big = np.repeat(np.repeat(mask, bicubic_scale, 0), bicubic_scale, 1)
                    up[~big] = 0
            yield DisplayFrame(frame.index, image, up)


def calibration(ds: Dataset, cols: int, display_width: int) -> tuple[float, float] | None:
    """Millimetres per display pixel (x, y) from the first 2-D region calibrated in cm.

    ``cols`` is the instance's width and ``display_width`` the width it is shown at, so a
    source and its derived copy give the same numbers when their calibrations agree.
    """
    try:
        regions = read_regions(ds)
    except InputError:
        return None
    for r in regions:
        if (
            r.physical_delta_x
            and r.physical_delta_y
            and r.units_x == _CM
            and r.units_y == _CM
            and r.spatial_format == 1
        ):
            factor = 10.0 * cols / display_width
            return abs(r.physical_delta_x) * factor, abs(r.physical_delta_y) * factor
    return None


def frame_rate(ds: Dataset, default: float = 20.0) -> float:
    """Frames per second for playback: Frame Time, Cine Rate or Recommended Display Frame Rate."""
    try:
        frame_time = float(ds.get("FrameTime") or 0)
        if frame_time > 0:
            return min(60.0, max(1.0, 1000.0 / frame_time))
        for keyword in ("CineRate", "RecommendedDisplayFrameRate"):
            rate = float(ds.get(keyword) or 0)
            if rate > 0:
                return min(60.0, max(1.0, rate))
    except (TypeError, ValueError):
        pass
    return default
