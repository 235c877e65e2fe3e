"""Ultrasound regions (Sequence of Ultrasound Regions, PS3.3 C.8.5.5) and their scaling.

A region says where on the frame an image of one kind lies (tissue B-mode, colour flow,
Doppler spectrum, ECG trace, ...) and how its pixels map to physical units. Only 2-D
tissue regions are super-resolved as images; the geometry of every region must follow the
new pixel grid exactly, so measurements on the derived image equal those on the source.

Geometry of an integer upscale by ``s`` (pixel centres, as in the engine's resize):
source column ``x`` (a pixel *centre*) lies at new column ``x' = s*x + (s-1)/2``; the
source pixel ``x`` covers new pixels ``s*x .. s*x + s - 1``. So

* ``x0' = s*x0`` and ``x1' = s*x1 + s - 1`` (the same pixels, all of them),
* ``dX' = dX / s``,
* physical position of a new column: ``P'(x') = P(x)`` with ``x = (x' - (s-1)/2) / s``.

With the reference pixel ``X0`` (relative to ``x0``) and its value ``V``,
``P(x) = V + (x - x0 - X0) * dX``. Writing ``P'(x') = V' + (x' - x0' - X0') * dX'`` and
equating gives ``V' = V + (X0' - s*X0 - (s-1)/2) * dX'``. The reference pixel must stay an
integer, so ``X0' = s*X0 + (s-1)//2`` and ``V' = V + r * dX'`` with the residual
``r = (s-1)//2 - (s-1)/2``: 0 for odd ``s``, -1/2 for even ``s``. This is exact: every
physical coordinate, hence every distance, is unchanged. The same holds for y.
An absent Reference Pixel Physical Value is taken as 0 (and written when ``r`` != 0).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from pydicom.dataset import Dataset
from pydicom.valuerep import DSfloat

LOGGER = logging.getLogger(__name__)

__all__ = ["Region", "read_regions", "tissue_regions", "scale_regions", "TISSUE", "SPATIAL_2D"]

#: RegionDataType 1: tissue; RegionSpatialFormat 1: 2D.
TISSUE = 1
SPATIAL_2D = 1


@dataclass(frozen=True)
class Region:
    """One ultrasound region; pixel bounds are inclusive, reference pixel relative to x0/y0."""

    x0: int
    y0: int
    x1: int
    y1: int
    data_type: int
    spatial_format: int
    physical_delta_x: float | None
    physical_delta_y: float | None
    is_tissue: bool
    units_x: int | None = None
    units_y: int | None = None
    reference_x0: int | None = None
    reference_y0: int | None = None
    reference_value_x: float | None = None
    reference_value_y: float | None = None

    @property
    def width(self) -> int:
        return self.x1 - self.x0 + 1

    @property
    def height(self) -> int:
        return self.y1 - self.y0 + 1

    def physical(self, x: float, y: float) -> tuple[float, float]:
        """Physical coordinates of the frame position (`x`, `y`) (column, row).

        Uses the reference pixel (the region's origin when absent) and its physical value
        (0 when absent).
        """
        if self.physical_delta_x is None or self.physical_delta_y is None:
            raise ValueError("region has no Physical Delta X/Y")
        rx = self.x0 + (self.reference_x0 or 0)
        ry = self.y0 + (self.reference_y0 or 0)
        px = (self.reference_value_x or 0.0) + (x - rx) * self.physical_delta_x
        py = (self.reference_value_y or 0.0) + (y - ry) * self.physical_delta_y
        return px, py


def _opt(item: Dataset, keyword: str, kind: type):
    value = item.get(keyword)
    return None if value in (None, "") else kind(value)


def read_regions(ds: Dataset) -> list[Region]:
    """The regions of `ds` in sequence order (empty if it has none)."""
    regions = []
    for item in ds.get("SequenceOfUltrasoundRegions") or []:
        data_type = int(item.get("RegionDataType", 0))
        spatial = int(item.get("RegionSpatialFormat", 0))
        regions.append(
            Region(
                x0=int(item.RegionLocationMinX0),
                y0=int(item.RegionLocationMinY0),
                x1=int(item.RegionLocationMaxX1),
                y1=int(item.RegionLocationMaxY1),
                data_type=data_type,
                spatial_format=spatial,
                physical_delta_x=_opt(item, "PhysicalDeltaX", float),
                physical_delta_y=_opt(item, "PhysicalDeltaY", float),
                is_tissue=data_type == TISSUE and spatial == SPATIAL_2D,
                units_x=_opt(item, "PhysicalUnitsXDirection", int),
                units_y=_opt(item, "PhysicalUnitsYDirection", int),
                reference_x0=_opt(item, "ReferencePixelX0", int),
                reference_y0=_opt(item, "ReferencePixelY0", int),
                reference_value_x=_opt(item, "ReferencePixelPhysicalValueX", float),
                reference_value_y=_opt(item, "ReferencePixelPhysicalValueY", float),
            )
        )
    return regions


def tissue_regions(ds: Dataset, rows: int, cols: int) -> list[Region]:
    """2-D tissue regions clipped to the frame.

    Without a Sequence of Ultrasound Regions the whole frame is one tissue region. When
    regions exist but none is 2-D tissue (a Doppler spectrum alone, say), the result is
    empty: nothing on the frame is a B-mode image.
    """
    regions = read_regions(ds)
    if not regions:
        return [Region(0, 0, cols - 1, rows - 1, TISSUE, SPATIAL_2D, None, None, True)]
    out = []
    for r in regions:
        if not r.is_tissue:
            continue
        x0, y0 = max(r.x0, 0), max(r.y0, 0)
        x1, y1 = min(r.x1, cols - 1), min(r.y1, rows - 1)
        if x0 > x1 or y0 > y1:
            LOGGER.warning("tissue region %s lies outside the %dx%d frame", r, cols, rows)
            continue
        out.append(Region(**{**r.__dict__, "x0": x0, "y0": y0, "x1": x1, "y1": y1}))
    return out


def _scale_axis(item: Dataset, axis: str, scale: int) -> None:
    lo, hi = (
        ("RegionLocationMinX0", "RegionLocationMaxX1")
        if axis == "X"
        else (
            "RegionLocationMinY0",
            "RegionLocationMaxY1",
        )
    )
    if lo in item:
        item[lo].value = scale * int(item[lo].value)
    if hi in item:
        item[hi].value = scale * int(item[hi].value) + scale - 1
    delta_kw = f"PhysicalDelta{axis}"
    delta = float(item[delta_kw].value) if delta_kw in item else None
    if delta is not None:
        item[delta_kw].value = delta / scale  # FD: stored exactly as a double
    ref_kw = f"ReferencePixel{axis}0"
    if ref_kw in item and item[ref_kw].value is not None:
        item[ref_kw].value = scale * int(item[ref_kw].value) + (scale - 1) // 2
        residual = (scale - 1) // 2 - (scale - 1) / 2
        value_kw = f"ReferencePixelPhysicalValue{axis}"
        if delta is not None and (residual or value_kw in item):
            old = float(item[value_kw].value) if value_kw in item else 0.0
            new = old + residual * delta / scale
            if value_kw in item:
                item[value_kw].value = new
            else:
                setattr(item, value_kw, new)


def scale_regions(ds: Dataset, scale: int) -> None:
    """Rewrite the regions (and PixelSpacing) of a derived copy for an upscale by `scale`.

    See the module docstring for the derivation; every physical coordinate is preserved.
    """
    if int(scale) != scale or scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale!r}")
    for item in ds.get("SequenceOfUltrasoundRegions") or []:
        _scale_axis(item, "X", scale)
        _scale_axis(item, "Y", scale)
    if "PixelSpacing" in ds and ds.PixelSpacing:
        ds.PixelSpacing = [DSfloat(float(v) / scale, auto_format=True) for v in ds.PixelSpacing]
