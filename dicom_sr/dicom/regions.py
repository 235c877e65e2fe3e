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

What is refused, and why: the regions carry the calibration a user measures with, so a
region that cannot be read exactly is an :class:`~dicom_sr.errors.InputError` (the instance
is skipped with the tag named) rather than guessed at: a sequence without items, an item
without one of its four bounds, a bound or reference pixel that is not an integer, a minimum
above its maximum, and values that would overflow their VR (UL bounds, SL reference pixel)
once scaled by up to :data:`MAX_SCALE`. Bounds past the frame edge are accepted: real
scanners write them (a SonoSite cine's region is larger than its 320x240 frame); tissue
regions are clipped to the frame and the derived copy keeps them scaled, as the source had.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from pydicom.dataset import Dataset
from pydicom.valuerep import DSfloat

from dicom_sr.dicom.reasons import shown, tag_name
from dicom_sr.errors import InputError

LOGGER = logging.getLogger(__name__)

__all__ = [
    "Region",
    "read_regions",
    "tissue_regions",
    "scale_regions",
    "check_scalable",
    "TISSUE",
    "SPATIAL_2D",
    "MAX_SCALE",
]

#: RegionDataType 1: tissue; RegionSpatialFormat 1: 2D.
TISSUE = 1
SPATIAL_2D = 1
#: The largest upscaling factor a pipeline allows (config: 2, 3 or 4): inspection checks that
#: region values survive it, so an instance never fails this late at any configured scale.
MAX_SCALE = 4

_SEQUENCE = "SequenceOfUltrasoundRegions"
_BOUNDS = (
    "RegionLocationMinX0",
    "RegionLocationMinY0",
    "RegionLocationMaxX1",
    "RegionLocationMaxY1",
)
_UL_MAX = 2**32 - 1
_SL_MIN, _SL_MAX = -(2**31), 2**31 - 1


def _where(ds: Dataset, path: str | os.PathLike[str] | None) -> str:
    """The file a dataset came from (pydicom records it), else its SOP Instance UID."""
    if path is not None:
        return str(path)
    name = getattr(ds, "filename", None)
    if isinstance(name, str | os.PathLike) and str(name):
        return str(name)
    return f"SOP Instance {ds.get('SOPInstanceUID', '?')}"


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


def _value(item: Dataset, keyword: str, kind: type, where: str, k: int, *, required: bool):
    """One value of region item `k`, as `kind`; an InputError naming the tag if unusable."""
    try:
        value = item.get(keyword)
    except Exception as exc:  # noqa: BLE001 - pydicom fails lazily on a malformed value
        raise InputError(
            where, f"{tag_name(keyword)} in region {k} cannot be read: {exc}", tag=tag_name(keyword)
        ) from None
    if value is None or value == "":
        if required:
            raise InputError(
                where,
                f"{_SEQUENCE} item {k} has no {tag_name(keyword)}: "
                "every region needs its four bounds",
                tag=tag_name(keyword),
            )
        return None
    try:
        number = kind(value)
        if kind is int and number != float(value):
            raise ValueError("not an integer")
    except (TypeError, ValueError, OverflowError):
        raise InputError(
            where,
            f"{tag_name(keyword)} in region {k} is {shown(value)}, expected one {kind.__name__}",
            tag=tag_name(keyword),
        ) from None
    return number


def read_regions(ds: Dataset, *, path: str | os.PathLike[str] | None = None) -> list[Region]:
    """The regions of `ds` in sequence order (empty if it has none).

    Raises :class:`~dicom_sr.errors.InputError` (naming `path`, else the dataset's file, and
    the tag) for a sequence without items, an item without its bounds, values that are not
    integers where integers are due, and a minimum above its maximum.
    """
    where = _where(ds, path)
    if _SEQUENCE not in ds:
        return []
    try:
        items = list(ds[_SEQUENCE].value or [])
    except Exception as exc:  # noqa: BLE001 - a sequence that does not parse
        raise InputError(
            where, f"{tag_name(_SEQUENCE)} cannot be read: {exc}", tag=tag_name(_SEQUENCE)
        ) from None
    if not items:
        raise InputError(
            where, f"{tag_name(_SEQUENCE)} is present but has no items", tag=tag_name(_SEQUENCE)
        )
    regions = []
    for k, item in enumerate(items):
        if not isinstance(item, Dataset):
            raise InputError(where, f"{tag_name(_SEQUENCE)} item {k} is not a dataset")
        x0, y0, x1, y1 = (_value(item, kw, int, where, k, required=True) for kw in _BOUNDS)
        for lo, hi, kw in ((x0, x1, _BOUNDS[2]), (y0, y1, _BOUNDS[3])):
            if lo < 0 or hi < lo:
                raise InputError(
                    where,
                    f"region {k} spans {lo}..{hi} ({tag_name(kw)}): expected 0 <= min <= max",
                    tag=tag_name(kw),
                )

        def opt(keyword: str, kind: type, item=item, k=k):
            return _value(item, keyword, kind, where, k, required=False)

        data_type = opt("RegionDataType", int) or 0
        spatial = opt("RegionSpatialFormat", int) or 0
        regions.append(
            Region(
                x0=x0,
                y0=y0,
                x1=x1,
                y1=y1,
                data_type=data_type,
                spatial_format=spatial,
                physical_delta_x=opt("PhysicalDeltaX", float),
                physical_delta_y=opt("PhysicalDeltaY", float),
                is_tissue=data_type == TISSUE and spatial == SPATIAL_2D,
                units_x=opt("PhysicalUnitsXDirection", int),
                units_y=opt("PhysicalUnitsYDirection", int),
                reference_x0=opt("ReferencePixelX0", int),
                reference_y0=opt("ReferencePixelY0", int),
                reference_value_x=opt("ReferencePixelPhysicalValueX", float),
                reference_value_y=opt("ReferencePixelPhysicalValueY", float),
            )
        )
    return regions


def check_scalable(
    ds: Dataset, scale: int = MAX_SCALE, *, path: str | os.PathLike[str] | None = None
) -> list[Region]:
    """Read the regions and check that an upscale by `scale` keeps every value in its VR.

    Bounds are UL (at most 2**32 - 1 after ``s*x + s - 1``), reference pixels SL. Returns the
    regions; raises :class:`~dicom_sr.errors.InputError` naming the tag otherwise.
    """
    where = _where(ds, path)
    regions = read_regions(ds, path=where)
    for k, r in enumerate(regions):
        for keyword, value in zip(_BOUNDS, (r.x0, r.y0, r.x1, r.y1), strict=True):
            if scale * value + scale - 1 > _UL_MAX:
                raise InputError(
                    where,
                    f"{tag_name(keyword)} {value} in region {k} overflows UL when scaled x{scale}",
                    tag=tag_name(keyword),
                )
        for keyword, value in (
            ("ReferencePixelX0", r.reference_x0),
            ("ReferencePixelY0", r.reference_y0),
        ):
            if value is not None and not _SL_MIN <= scale * value + (scale - 1) // 2 <= _SL_MAX:
                raise InputError(
                    where,
                    f"{tag_name(keyword)} {value} in region {k} overflows SL when scaled x{scale}",
                    tag=tag_name(keyword),
                )
    return regions


def tissue_regions(
    ds: Dataset, rows: int, cols: int, *, path: str | os.PathLike[str] | None = None
) -> list[Region]:
    """2-D tissue regions clipped to the frame.

    Without a Sequence of Ultrasound Regions the whole frame is one tissue region. When
    regions exist but none is 2-D tissue (a Doppler spectrum alone, say), the result is
    empty: nothing on the frame is a B-mode image. A tissue region wholly outside the frame
    is left out with a warning (it is pixel-replicated there, like any non-tissue area).
    Unreadable regions raise :class:`~dicom_sr.errors.InputError` (see :func:`read_regions`).
    """
    regions = read_regions(ds, path=path)
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
    lo, hi = (_BOUNDS[0], _BOUNDS[2]) if axis == "X" else (_BOUNDS[1], _BOUNDS[3])
    item[lo].value = scale * int(item[lo].value)
    item[hi].value = scale * int(item[hi].value) + scale - 1
    delta_kw = f"PhysicalDelta{axis}"
    delta = float(item[delta_kw].value) if item.get(delta_kw) not in (None, "") else None
    if delta is not None:
        item[delta_kw].value = delta / scale  # FD: stored exactly as a double
    ref_kw = f"ReferencePixel{axis}0"
    if item.get(ref_kw) not in (None, ""):
        item[ref_kw].value = scale * int(item[ref_kw].value) + (scale - 1) // 2
        residual = (scale - 1) // 2 - (scale - 1) / 2
        value_kw = f"ReferencePixelPhysicalValue{axis}"
        has_value = item.get(value_kw) not in (None, "")
        if delta is not None and (residual or has_value):
            old = float(item[value_kw].value) if has_value else 0.0
            setattr(item, value_kw, old + residual * delta / scale)


def scale_regions(ds: Dataset, scale: int, *, path: str | os.PathLike[str] | None = None) -> None:
    """Rewrite the regions (and PixelSpacing) of a derived copy for an upscale by `scale`.

    See the module docstring for the derivation; every physical coordinate is preserved.
    Every item is checked (:func:`check_scalable`) before any is changed, so an
    :class:`~dicom_sr.errors.InputError` leaves `ds` as it was.
    """
    if int(scale) != scale or scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale!r}")
    where = _where(ds, path)
    check_scalable(ds, scale, path=where)
    for item in ds.get(_SEQUENCE) or []:
        _scale_axis(item, "X", scale)
        _scale_axis(item, "Y", scale)
    spacing = ds.get("PixelSpacing")
    if spacing:
        try:
            values = [float(v) / scale for v in spacing]
        except (TypeError, ValueError):
            raise InputError(
                where, f"{tag_name('PixelSpacing')} is {spacing!r}, expected two numbers"
            ) from None
        ds.PixelSpacing = [DSfloat(v, auto_format=True) for v in values]
