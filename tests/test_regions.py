"""Ultrasound regions: reading, tissue selection, and exact geometry after upscaling."""

from __future__ import annotations

import copy
import math
from io import BytesIO

import pydicom
import pytest
from conftest import US_FILES, us_file
from pydicom.dataset import Dataset

from dicom_sr.dicom.regions import check_scalable, read_regions, scale_regions, tissue_regions
from dicom_sr.errors import InputError

WITH_REFERENCE = ["OBXXXX1A.dcm", "gdcm-US-ALOKA-16.dcm", "examples_palette.dcm"]
WITH_REGIONS = [*WITH_REFERENCE, "JPGLosslessP14SV1_1s_1f_8b.dcm", "examples_ybr_color.dcm"]


def _header(name: str) -> Dataset:
    return pydicom.dcmread(us_file(name), stop_before_pixels=True)


def _roundtrip(ds: Dataset) -> Dataset:
    """Write and read back, so the test sees what a file would hold."""
    buf = BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    buf.seek(0)
    return pydicom.dcmread(buf)


@pytest.mark.parametrize("name", sorted(US_FILES))
def test_read_regions_matches_sequence(name):
    ds = _header(name)
    items = list(ds.get("SequenceOfUltrasoundRegions") or [])
    regions = read_regions(ds)
    assert len(regions) == len(items)
    for r, item in zip(regions, items, strict=True):
        assert (r.x0, r.y0, r.x1, r.y1) == (
            item.RegionLocationMinX0,
            item.RegionLocationMinY0,
            item.RegionLocationMaxX1,
            item.RegionLocationMaxY1,
        )
        assert r.is_tissue == (item.RegionDataType == 1 and item.RegionSpatialFormat == 1)
        assert r.physical_delta_x == item.PhysicalDeltaX


@pytest.mark.parametrize("name", sorted(US_FILES))
def test_tissue_regions(name):
    ds = _header(name)
    rows, cols = ds.Rows, ds.Columns
    tissue = tissue_regions(ds, rows, cols)
    items = list(ds.get("SequenceOfUltrasoundRegions") or [])
    if not items:
        assert [(r.x0, r.y0, r.x1, r.y1) for r in tissue] == [(0, 0, cols - 1, rows - 1)]
    else:
        expected = [i for i in items if i.RegionDataType == 1 and i.RegionSpatialFormat == 1]
        assert len(tissue) == len(expected)
    for r in tissue:
        assert r.is_tissue and 0 <= r.x0 <= r.x1 < cols and 0 <= r.y0 <= r.y1 < rows


def test_non_tissue_regions_are_excluded_and_clipped():
    ds = _header("gdcm-US-ALOKA-16.dcm")
    kinds = {(r.data_type, r.spatial_format) for r in read_regions(ds)}
    assert (13, 0) in kinds  # a non-image region on this Aloka frame
    assert all(r.data_type == 1 for r in tissue_regions(ds, ds.Rows, ds.Columns))
    # clip a tissue region hanging over the frame edge
    ds.SequenceOfUltrasoundRegions[0].RegionLocationMaxX1 = ds.Columns + 50
    clipped = tissue_regions(ds, ds.Rows, ds.Columns)[0]
    assert clipped.x1 == ds.Columns - 1


def _points(region):
    return [
        (region.x0 + 10, region.y0 + 20),
        (region.x1 - 5, region.y1 - 7),
        (region.x0 + region.width // 3, region.y1 - 1),
    ]


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("name", WITH_REGIONS)
def test_scaled_regions_preserve_distances(name, scale):
    src = _header(name)
    derived = _roundtrip(_scaled(src, scale))
    before = read_regions(src)
    after = read_regions(derived)
    assert len(before) == len(after)
    for r, q in zip(before, after, strict=True):
        assert (q.x0, q.y0) == (scale * r.x0, scale * r.y0)
        assert (q.x1, q.y1) == (scale * r.x1 + scale - 1, scale * r.y1 + scale - 1)
        if not r.is_tissue:
            continue
        pts = _points(r)
        new = [(scale * x + (scale - 1) / 2, scale * y + (scale - 1) / 2) for x, y in pts]
        for a, b, a2, b2 in zip(pts, pts[1:], new, new[1:], strict=False):
            d = math.dist(r.physical(*a), r.physical(*b))
            d2 = math.dist(q.physical(*a2), q.physical(*b2))
            assert d > 0
            assert d2 == pytest.approx(d, rel=1e-9)


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("name", WITH_REFERENCE)
def test_scaled_regions_preserve_physical_coordinates(name, scale):
    src = _header(name)
    derived = _roundtrip(_scaled(src, scale))
    for r, q in zip(read_regions(src), read_regions(derived), strict=True):
        if not r.is_tissue:
            continue
        assert r.reference_x0 is not None
        assert isinstance(q.reference_x0, int) and isinstance(q.reference_y0, int)
        for x, y in _points(r):
            x2, y2 = scale * x + (scale - 1) / 2, scale * y + (scale - 1) / 2
            px, py = r.physical(x, y)
            qx, qy = q.physical(x2, y2)
            assert qx == pytest.approx(px, rel=1e-9, abs=1e-12)
            assert qy == pytest.approx(py, rel=1e-9, abs=1e-12)


def _scaled(src: Dataset, scale: int) -> Dataset:
    ds = copy.deepcopy(src)
    scale_regions(ds, scale)
    return ds


def test_pixel_spacing_and_source_untouched():
    src = _header("US1_UNCR.dcm")
    src.PixelSpacing = [0.3, 0.25]
    before = copy.deepcopy(src)
    ds = _scaled(src, 2)
    assert [float(v) for v in ds.PixelSpacing] == pytest.approx([0.15, 0.125])
    assert src == before
    with pytest.raises(ValueError):
        scale_regions(ds, 0)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda ds: setattr(ds, "SequenceOfUltrasoundRegions", []), "has no items"),
        (lambda ds: setattr(ds, "SequenceOfUltrasoundRegions", [Dataset()]), "has no Region"),
        (
            lambda ds: ds.SequenceOfUltrasoundRegions[0].__delitem__("RegionLocationMinY0"),
            r"has no RegionLocationMinY0 \(0018,601A\)",
        ),
        (
            lambda ds: setattr(ds.SequenceOfUltrasoundRegions[0], "RegionLocationMinX0", 900),
            "expected 0 <= min <= max",
        ),
    ],
    ids=["empty-sequence", "empty-item", "no-bound", "inverted"],
)
def test_unusable_regions_raise_input_error_naming_the_tag(change, message):
    ds = _header("OBXXXX1A.dcm")
    change(ds)
    with pytest.raises(InputError, match=message) as info:
        tissue_regions(ds, ds.Rows, ds.Columns)
    assert info.value.path == ds.filename and "(0018," in str(info.value)


@pytest.mark.parametrize(
    ("keyword", "value", "vr"),
    [
        ("RegionLocationMaxX1", 2**31, "UL"),
        ("ReferencePixelX0", 2**30, "SL"),
        ("ReferencePixelY0", -(2**30) - 1, "SL"),
    ],
)
def test_values_that_overflow_their_vr_when_scaled(keyword, value, vr):
    ds = _header("OBXXXX1A.dcm")
    setattr(ds.SequenceOfUltrasoundRegions[0], keyword, value)
    assert check_scalable(ds, 1)  # fits as it is
    before = copy.deepcopy(ds)
    with pytest.raises(InputError, match=f"{keyword} .* overflows {vr} when scaled x2"):
        scale_regions(ds, 2)
    assert ds == before, "nothing changed when refused"
    with pytest.raises(InputError, match=f"overflows {vr} when scaled x4"):
        check_scalable(ds)  # inspection checks the largest scale
