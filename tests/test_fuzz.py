"""Hostile inputs: every mutation of a real file ends as a skip or a failure with a reason.

Two suites, both run through discovery, inspection and :func:`process_series` (bicubic):

* a catalogue of named mutations, by family (tags deleted, values replaced, wrong VRs, absurd
  lengths, truncation, NumberOfFrames lies, regions mangled, palettes broken, bad UIDs, other
  modalities, garbage pixels, transfer syntax lies, our own outputs), written into one folder
  beside the untouched originals, which must still be written;
* :mod:`hypothesis` mutations (truncation at any offset, bytes overwritten, a tag deleted or
  its value replaced), derandomized; a long profile is marked ``slow``.

The contract checked: no exception escapes; an unusable variant is skipped or failed with a
one-line reason (no traceback); a variant that is still a valid image is written; inputs are
byte-identical afterwards and nothing outside ``out`` changes. ``pytest -s`` prints the count
of outcomes per family.
"""

from __future__ import annotations

import copy
import hashlib
import struct
import tempfile
import traceback
from collections import Counter, defaultdict
from collections.abc import Callable
from functools import cache
from pathlib import Path

import pydicom
import pytest
from conftest import us_file
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.tag import Tag
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    JPEGBaseline8Bit,
    RLELossless,
    generate_uid,
)

from dicom_sr.config import load_pipeline
from dicom_sr.dicom.discover import discover
from dicom_sr.dicom.provenance import MANUFACTURER
from dicom_sr.pipeline import process_series

hypothesis = pytest.importorskip("hypothesis")
st = hypothesis.strategies

SAMPLE = Path(__file__).resolve().parent.parent / "sample_data"
REJECT, WRITE, ANY = "reject", "write", "any"
SC_IMAGE = "1.2.840.10008.5.1.4.1.1.7"


# bases --------------------------------------------------------------------------------------
@cache
def _base(name: str) -> Dataset:
    """A base dataset, read whole: sample files, a RLE copy of the cine, real pydicom files."""
    if name == "cine_rle":
        ds = _base("cine")
        ds = copy.deepcopy(ds)
        ds.compress(RLELossless, generate_instance_uid=False)
        return ds
    paths = {
        "single": SAMPLE / "us_phantom_single.dcm",
        "cine": SAMPLE / "us_phantom_cine.dcm",
        "rgb": SAMPLE / "us_phantom_rgb.dcm",
        "palette": us_file("OBXXXX1A.dcm"),
        "aloka": us_file("gdcm-US-ALOKA-16.dcm"),
        "j2k": us_file("US1_J2KR.dcm"),
    }
    return pydicom.dcmread(paths[name])


def _fresh(base: str, name: str) -> Dataset:
    """A copy of `base` with its own SOP Instance UID, so outputs never collide."""
    ds = copy.deepcopy(_base(base))
    uid = generate_uid(entropy_srcs=["fuzz", base, name])
    ds.SOPInstanceUID = uid
    ds.file_meta.MediaStorageSOPInstanceUID = uid
    return ds


def _raw(ds: Dataset, keyword_or_tag, vr: str, value: bytes) -> None:
    """Put raw bytes under a tag with any VR, as a hostile writer would."""
    tag = Tag(keyword_or_tag)
    meta = getattr(ds, "file_meta", None)  # None: a sequence item, written in its file's order
    little = meta is None or meta.get("TransferSyntaxUID") != ExplicitVRBigEndian
    ds._dict[tag] = RawDataElement(tag, vr, len(value), value, 0, False, little)  # as read


def _save(ds: Dataset, path: Path) -> None:
    ts = UID(ds.file_meta.get("TransferSyntaxUID", "1.2.840.10008.1.2.1"))
    try:
        implicit, little = ts.is_implicit_VR, ts.is_little_endian
    except ValueError:  # not a transfer syntax: write as explicit little endian anyway
        implicit, little = False, True
    ds.save_as(path, implicit_vr=implicit, little_endian=little, enforce_file_format=False)


def _patch_length(data: bytes, tag: int, length: int) -> bytes:
    """Overwrite the length field of the first explicit VR little endian element `tag`."""
    key = struct.pack("<HH", tag >> 16, tag & 0xFFFF)
    at = data.index(key, 132)
    vr = data[at + 4 : at + 6]
    if vr in (b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN", b"OD", b"OL", b"UC", b"UR"):
        return data[: at + 8] + struct.pack("<L", length) + data[at + 12 :]
    return data[: at + 6] + struct.pack("<H", length & 0xFFFF) + data[at + 8 :]


# the catalogue -------------------------------------------------------------------------------
Mutation = Callable[[Dataset], Dataset | bytes | None]
CATALOGUE: list[tuple[str, str, str, str, Mutation]] = []  # family, name, base, expect, fn


def variant(family: str, name: str, base: str, expect: str):
    def register(fn: Mutation) -> Mutation:
        CATALOGUE.append((family, name, base, expect, fn))
        return fn

    return register


def _setter(keyword: str, value):
    def fn(ds: Dataset) -> None:
        setattr(ds, keyword, value)

    return fn


def _deleter(*keywords: str):
    def fn(ds: Dataset) -> None:
        for keyword in keywords:
            del ds[keyword]

    return fn


def _raw_setter(keyword: str, vr: str, value: bytes):
    return lambda ds: _raw(ds, keyword, vr, value)


def _region(index: int, **values):
    def fn(ds: Dataset) -> None:
        item = ds.SequenceOfUltrasoundRegions[index]
        for keyword, value in values.items():
            if value is None:
                del item[keyword]
            else:
                setattr(item, keyword, value)

    return fn


def _truncate(fraction: float):
    return lambda ds: _bytes(ds)[: max(1, int(len(_bytes(ds)) * fraction))]


def _bytes(ds: Dataset) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.dcm"
        _save(ds, path)
        return path.read_bytes()


def _register_catalogue() -> None:
    for kw in (
        "SOPInstanceUID",
        "StudyInstanceUID",
        "SeriesInstanceUID",
        "SOPClassUID",
        "Rows",
        "Columns",
        "BitsAllocated",
        "SamplesPerPixel",
        "PhotometricInterpretation",
        "PixelData",
        "Modality",
    ):
        variant("tag deleted", kw, "single", REJECT)(_deleter(kw))
    variant("tag deleted", "NumberOfFrames of a cine", "cine", REJECT)(_deleter("NumberOfFrames"))
    variant("tag deleted", "NumberOfFrames of RLE", "cine_rle", REJECT)(_deleter("NumberOfFrames"))
    for kw in ("BitsStored", "InstanceNumber", "SeriesNumber", "PatientName", "HighBit"):
        variant("tag deleted", kw, "single", WRITE)(_deleter(kw))
    variant("tag deleted", "TransferSyntaxUID", "single", REJECT)(
        lambda ds: ds.file_meta.__delitem__("TransferSyntaxUID")
    )

    for kw, value, expect in (
        ("Rows", 0, REJECT),
        ("Columns", 0, REJECT),
        ("Rows", 1, REJECT),  # the data then holds 240 "frames"
        ("Rows", 65535, REJECT),  # truncated
        ("BitsAllocated", 12, REJECT),
        ("BitsAllocated", 32, REJECT),
        ("BitsStored", 0, REJECT),
        ("BitsStored", 17, REJECT),
        ("SamplesPerPixel", 3, REJECT),
        ("PhotometricInterpretation", "FOO", REJECT),
        ("PhotometricInterpretation", "RGB", REJECT),
        ("PhotometricInterpretation", "PALETTE COLOR", REJECT),  # no tables
        ("PhotometricInterpretation", "MONOCHROME1", WRITE),
        ("PixelRepresentation", 1, ANY),
        ("HighBit", 99, ANY),
        ("SpecificCharacterSet", "ISO_IR 999", ANY),
        ("SeriesDescription", "x" * 500, ANY),
        ("ImageType", ["ORIGINAL"] * 40, ANY),
    ):
        variant("value replaced", f"{kw}={str(value)[:20]}", "single", expect)(_setter(kw, value))
    variant("value replaced", "PlanarConfiguration=1", "rgb", ANY)(
        _setter("PlanarConfiguration", 1)
    )

    for kw, vr, value, expect in (
        ("Rows", "LO", b"abc ", REJECT),
        ("Columns", "FD", struct.pack("<d", 320.5), REJECT),
        ("BitsAllocated", "SS", struct.pack("<h", -8), REJECT),
        ("StudyInstanceUID", "US", b"\x01\x00", ANY),  # reads as "1", a valid UID
        ("StudyInstanceUID", "FD", struct.pack("<d", -1.5e-300), REJECT),
        ("SOPClassUID", "OB", b"\x00\x01\x02\x03", REJECT),
        ("Modality", "UN", b"US", ANY),
        ("NumberOfFrames", "IS", b"abc ", REJECT),
        ("InstanceNumber", "IS", b"1.5e", ANY),
        ("SeriesNumber", "IS", b"x ", ANY),
        ("PixelSpacing", "DS", b"a\\b ", ANY),
        ("LossyImageCompressionRatio", "DS", b"zz", ANY),
        ("SequenceOfUltrasoundRegions", "SQ", b"\x01\x02\x03\x04garbage!", ANY),
        ("SequenceOfUltrasoundRegions", "UL", b"\x01\x02\x03\x04", ANY),
        ("PatientName", "PN", b"\xff\xfe\x00bad", ANY),
        ("PixelData", "SQ", b"\x00" * 16, ANY),
    ):
        variant("wrong VR", f"{kw} as {vr}", "single", expect)(_raw_setter(kw, vr, value))

    for tag, length in (
        (0x00280010, 0xFFFF),  # Rows
        (0x00280010, 0),
        (0x7FE00010, 0x7FFFFFF0),  # Pixel Data
        (0x7FE00010, 3),
        (0x00186011, 0x7FFFFFF0),  # Sequence of Ultrasound Regions
        (0x00080060, 0x2000),  # Modality
        (0x0020000D, 0xFFFF),  # Study Instance UID
    ):
        variant("absurd length", f"({tag >> 16:04X},{tag & 0xFFFF:04X})={length}", "single", ANY)(
            lambda ds, tag=tag, length=length: _patch_length(_bytes(ds), tag, length)
        )

    for base in ("single", "cine", "cine_rle", "palette"):
        for fraction in (0.001, 0.02, 0.1, 0.5, 0.9, 0.999):
            variant("truncated", f"{base} at {fraction:.1%}", base, REJECT)(_truncate(fraction))
        variant("truncated", f"{base} short of its last item", base, REJECT)(
            lambda ds: (
                _bytes(ds)[:-12]
                if ds.file_meta.TransferSyntaxUID.is_encapsulated
                else _bytes(ds)[:-2]
            )
        )

    for base in ("cine", "cine_rle"):
        for n in (0, 1, 5, 7, 100, -1):
            variant("NumberOfFrames lie", f"{base} says {n}", base, REJECT)(
                _setter("NumberOfFrames", n)
            )
    variant("NumberOfFrames lie", "single says 2", "single", REJECT)(_setter("NumberOfFrames", 2))
    variant("NumberOfFrames lie", "single says 1", "single", WRITE)(_setter("NumberOfFrames", 1))

    variant("regions mangled", "empty sequence", "single", REJECT)(
        _setter("SequenceOfUltrasoundRegions", [])
    )
    variant("regions mangled", "empty item", "single", REJECT)(
        _setter("SequenceOfUltrasoundRegions", [Dataset()])
    )
    for base in ("single", "palette"):
        for kw in ("RegionLocationMinX0", "RegionLocationMinY0", "RegionLocationMaxX1"):
            variant("regions mangled", f"{base} no {kw}", base, REJECT)(_region(0, **{kw: None}))
    bad_regions = {
        "inverted": ({"RegionLocationMinX0": 200, "RegionLocationMaxX1": 100}, REJECT),
        "x1 2**32-1": ({"RegionLocationMaxX1": 2**32 - 1}, REJECT),
        "y1 2**31": ({"RegionLocationMaxY1": 2**31}, REJECT),
        "ref x 2**31-1": ({"ReferencePixelX0": 2**31 - 1}, REJECT),
        "ref y -2**31": ({"ReferencePixelY0": -(2**31)}, REJECT),
        "past the edge": ({"RegionLocationMaxX1": 900}, WRITE),
        "wholly outside": ({"RegionLocationMinX0": 850, "RegionLocationMaxX1": 900}, WRITE),
        "no PhysicalDeltaX": ({"PhysicalDeltaX": None}, WRITE),
    }
    for name, (values, expect) in bad_regions.items():
        variant("regions mangled", name, "palette", expect)(_region(0, **values))
    variant("regions mangled", "RegionDataType as LO", "single", REJECT)(
        lambda ds: _raw(ds.SequenceOfUltrasoundRegions[0], "RegionDataType", "LO", b"tissue")
    )

    colours = ("Red", "Green", "Blue")
    for name, fn in {
        "no red data": _deleter("RedPaletteColorLookupTableData"),
        "no tables": _deleter(*(f"{c}PaletteColorLookupTableData" for c in colours)),
        "no descriptors": _deleter(*(f"{c}PaletteColorLookupTableDescriptor" for c in colours)),
        "green descriptor differs": _setter("GreenPaletteColorLookupTableDescriptor", [128, 0, 8]),
        "two-value descriptor": _setter("RedPaletteColorLookupTableDescriptor", [256, 0]),
        "12-bit descriptor": lambda ds: [
            setattr(ds, f"{c}PaletteColorLookupTableDescriptor", [256, 0, 12]) for c in colours
        ],
        "half a table": lambda ds: setattr(
            ds, "RedPaletteColorLookupTableData", ds.RedPaletteColorLookupTableData[:128]
        ),
        "table 4x long": lambda ds: setattr(
            ds, "BluePaletteColorLookupTableData", ds.BluePaletteColorLookupTableData * 4
        ),
    }.items():
        variant("palette broken", name, "palette", REJECT)(fn)
    variant("palette broken", "segmented red missing", "aloka", REJECT)(
        _deleter("SegmentedRedPaletteColorLookupTableData")
    )
    variant("palette broken", "segmented garbage", "aloka", ANY)(
        _setter("SegmentedGreenPaletteColorLookupTableData", b"\x07\x00" * 8)
    )

    for kw, value, expect in (
        ("StudyInstanceUID", "1." + "2" * 63, REJECT),
        ("StudyInstanceUID", "1.2." + "3" * 250, REJECT),
        ("StudyInstanceUID", "../../../../tmp/evil", REJECT),
        ("SeriesInstanceUID", "1.2.3/../../x", REJECT),
        ("SOPInstanceUID", "1.2.abc", REJECT),
        ("StudyInstanceUID", "1.02.3", REJECT),
        ("StudyInstanceUID", "1.2." + "3" * 60, WRITE),  # 64 characters: valid
        ("SOPClassUID", "1.2.840.10008.5.1.4.1.1.6.1.99", REJECT),
    ):
        variant("UID", f"{kw}={value[:16]}({len(value)})", "single", expect)(_setter(kw, value))

    for value, expect in (("CT", REJECT), ("MR", REJECT), ("", REJECT), ("US ", WRITE)):
        variant("modality", f"Modality={value!r}", "single", expect)(_setter("Modality", value))
    variant("modality", "SC of US", "single", WRITE)(_setter("SOPClassUID", SC_IMAGE))
    variant("modality", "SC of CT", "single", REJECT)(
        lambda ds: (_setter("SOPClassUID", SC_IMAGE)(ds), _setter("Modality", "OT")(ds))
    )

    def pixels(ds: Dataset, data: bytes) -> None:
        ds.PixelData = data

    variant("pixels", "noise", "single", WRITE)(
        lambda ds: pixels(ds, hashlib.shake_256(b"x").digest(len(ds.PixelData)))
    )
    variant("pixels", "one frame more", "cine", REJECT)(
        lambda ds: pixels(ds, ds.PixelData + ds.PixelData[: 200 * 256])
    )
    variant("pixels", "one byte less", "cine", REJECT)(lambda ds: pixels(ds, ds.PixelData[:-2]))
    variant("pixels", "float pixels", "single", REJECT)(
        lambda ds: (
            ds.__setitem__(0x7FE00008, pydicom.DataElement(0x7FE00008, "OF", b"\0" * 8)),
            ds.__delitem__("PixelData"),
        )
    )

    def rle_frames(ds: Dataset, change) -> None:
        frames = list(generate_frames(ds.PixelData, number_of_frames=ds.NumberOfFrames))
        ds.PixelData = encapsulate(change(frames), has_bot=True)

    variant("pixels", "RLE frame 3 garbage", "cine_rle", REJECT)(
        lambda ds: rle_frames(ds, lambda f: [*f[:3], b"\x00" * 64, *f[4:]])
    )
    variant("pixels", "RLE frame missing", "cine_rle", REJECT)(
        lambda ds: rle_frames(ds, lambda f: f[:-1])
    )
    variant("pixels", "J2K stream garbage", "j2k", REJECT)(
        lambda ds: pixels(ds, encapsulate([b"\xff\x4f\xff\x51" + b"\x00" * 200]))
    )

    variant("own output", "Contributing Equipment dicom-sr", "single", REJECT)(
        lambda ds: setattr(ds, "ContributingEquipmentSequence", [_equipment(MANUFACTURER)])
    )
    variant("own output", "DerivationDescription", "single", REJECT)(
        _setter("DerivationDescription", f"Super-resolution x2 by {MANUFACTURER} 1.0; bicubic")
    )
    variant("own output", "other equipment", "single", WRITE)(
        lambda ds: setattr(ds, "ContributingEquipmentSequence", [_equipment("Acme")])
    )

    for name, uid, expect in (
        ("garbage", "1.2.3.4", REJECT),
        ("path", "../1.2", REJECT),
        ("JPEG over native", JPEGBaseline8Bit, REJECT),
        ("RLE over native", RLELossless, REJECT),
    ):
        variant("transfer syntax", name, "single", expect)(
            lambda ds, uid=uid: _lie_about_syntax(ds, uid)
        )
    # a meta VR that does not parse, or is no VR (the slow profile found these escaping)
    for vr, expect in ((b"UV", REJECT), (b"AI", ANY)):
        variant("transfer syntax", f"MediaStorageSOPClassUID as {vr.decode()}", "single", expect)(
            lambda ds, vr=vr: _bytes(ds).replace(b"\x02\x00\x02\x00UI", b"\x02\x00\x02\x00" + vr, 1)
        )
    variant("transfer syntax", "deflate over native", "single", ANY)(
        lambda ds: _lie_about_syntax(ds, DeflatedExplicitVRLittleEndian)
    )
    variant("transfer syntax", "native over RLE", "cine_rle", REJECT)(
        lambda ds: _lie_about_syntax(ds, "1.2.840.10008.1.2.1")
    )


def _equipment(manufacturer: str) -> Dataset:
    item = Dataset()
    item.Manufacturer = manufacturer
    return item


def _lie_about_syntax(ds: Dataset, uid: str) -> bytes:
    """The file as written in its own syntax, with another syntax named in its meta."""
    data = _bytes(ds)
    at = data.index(b"\x02\x00\x10\x00UI", 132)
    (length,) = struct.unpack("<H", data[at + 6 : at + 8])
    new = uid.encode() + b"\0" * (len(uid) % 2)
    data = data[: at + 6] + struct.pack("<H", len(new)) + new + data[at + 8 + length :]
    group = data.index(b"\x02\x00\x00\x00UL\x04\x00", 132) + 8
    (total,) = struct.unpack("<L", data[group : group + 4])
    return data[:group] + struct.pack("<L", total + len(new) - length) + data[group + 4 :]


_register_catalogue()


# running ------------------------------------------------------------------------------------
@cache
def _config():
    return load_pipeline(None, {"engine.method": "bicubic"})


def _digest(folder: Path, skip: Path | None = None) -> dict[str, str]:
    return {
        str(p): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and (skip is None or not p.is_relative_to(skip))
    }


def _run(inputs: Path, out: Path) -> dict[Path, tuple[str, str, Path | None]]:
    """Discover and process: (status, reason, output) per input file; "uncaught" on escape."""
    found = discover([inputs], exclude=[out])
    outcomes: dict[Path, tuple[str, str, Path | None]] = {}
    for s in found.skipped:
        outcomes[Path(s.path)] = ("skipped", s.reason, None)
    for series in found.series:
        try:
            result = process_series(series, _config(), out)
        except Exception as exc:  # noqa: BLE001 - the contract says this never happens
            text = "".join(traceback.format_exception(exc))
            for inst in series.instances:
                outcomes[inst.path] = ("uncaught", text, None)
            continue
        for r in result.instances:
            outcomes[Path(r.source)] = (r.status, r.reason, r.output)
    return outcomes


def _check_outcome(name: str, expect: str, outcome, rows: int | None = None) -> list[str]:
    """Problems with one variant's outcome under the contract (empty: fine)."""
    if outcome is None:
        return [f"{name}: no outcome at all (neither skipped nor processed)"]
    status, reason, output = outcome
    if status == "uncaught":
        return [f"{name}: exception escaped process_series:\n{reason}"]
    problems = []
    if status in ("skipped", "failed"):
        if not reason.strip():
            problems.append(f"{name}: {status} without a reason")
        if "Traceback" in reason or len(reason) > 1000:
            problems.append(f"{name}: reason is a traceback or too long: {reason[:300]}")
        if expect == WRITE:
            problems.append(f"{name}: expected written, {status}: {reason}")
    elif status == "written":
        if expect == REJECT:
            problems.append(f"{name}: expected a skip or failure, was written")
        elif output is None or not output.is_file():
            problems.append(f"{name}: written, but no output file")
        elif rows is not None and pydicom.dcmread(output, stop_before_pixels=True).Rows != 2 * rows:
            problems.append(f"{name}: output has the wrong size")
    return problems


def test_catalogue_of_hostile_variants(tmp_path):
    """Every catalogued mutation is skipped or failed with a reason; the originals are written."""
    inputs, out = tmp_path / "in", tmp_path / "in" / "sr"  # --out inside the input: excluded
    inputs.mkdir()
    expected: dict[Path, tuple[str, str, str]] = {}
    for k, (family, name, base, expect, fn) in enumerate(CATALOGUE):
        ds = _fresh(base, f"{family}/{name}")
        made = fn(ds)
        path = inputs / f"{k:03d}_{base}.dcm"
        if isinstance(made, bytes):
            path.write_bytes(made)
        else:
            _save(ds, path)
        expected[path] = (family, f"{family}: {name} ({base})", expect)
    originals = {}
    for base in ("single", "cine", "cine_rle", "rgb", "palette", "aloka", "j2k"):
        path = inputs / f"good_{base}.dcm"
        _save(_fresh(base, "original"), path)
        originals[path] = int(_base(base).Rows)
    (tmp_path / "beside.txt").write_text("not an input")
    before = _digest(tmp_path)

    outcomes = _run(inputs, out)
    again = _run(inputs, out)  # a re-run: nothing new, nothing reprocessed from out

    problems: list[str] = []
    counts: dict[str, Counter] = defaultdict(Counter)
    for path, (family, name, expect) in expected.items():
        outcome = outcomes.get(path)
        problems += _check_outcome(name, expect, outcome)
        counts[family][outcome[0] if outcome else "none"] += 1
    for path, rows in originals.items():
        status = outcomes.get(path, ("none", "", None))
        if status[0] != "written":
            problems.append(f"original {path.name} not written: {status[:2]}")
        else:
            problems += _check_outcome(path.name, WRITE, status, rows)
        if again.get(path, ("none",))[0] != "done":
            problems.append(f"original {path.name} not found done on a re-run: {again.get(path)}")
    assert not [p for p in again if p.is_relative_to(out)], "outputs were discovered as inputs"
    assert _digest(tmp_path, skip=out) == before, "something outside --out changed"
    print(f"\n{len(expected)} catalogued variants:")
    for family, counter in sorted(counts.items()):
        print(f"  {family:20s} {dict(counter)}")
    assert len(expected) > 100
    assert not problems, "\n".join(problems)


def test_own_outputs_are_not_processed_again(tmp_path):
    """A derived instance fed back in is skipped with the reason, not super-resolved again."""
    out = tmp_path / "sr"
    good = tmp_path / "in" / "single.dcm"
    good.parent.mkdir()
    _save(_base("single"), good)
    assert _run(good.parent, out)[good][0] == "written"
    derived = next(out.rglob("*.dcm"))
    outcomes = _run(derived.parent, tmp_path / "sr2")
    assert outcomes[derived][:2] == ("skipped", "derived by dicom-sr; not processed again")


def test_modality_reason_names_the_tag_and_class(tmp_path):
    ds = _fresh("single", "ct")
    ds.Modality = "CT"
    _save(ds, tmp_path / "ct.dcm")
    found = discover([tmp_path])
    assert [s.reason for s in found.skipped] == [
        "Modality CT (0008,0060) under Ultrasound Image Storage: US expected"
    ]


# hypothesis ---------------------------------------------------------------------------------
KINDS = ["truncate", "overwrite", "delete", "replace"]


def _mutate(kind: str, data: bytes, ds: Dataset, draw) -> bytes:
    """One random mutation of `kind`: truncation, bytes overwritten, a tag deleted or its value
    replaced by random bytes under a random VR."""
    if kind == "truncate":
        return data[: draw(st.integers(0, len(data) - 1))]
    if kind == "overwrite":
        n = draw(st.integers(1, 8))
        for _ in range(n):
            at = draw(st.integers(0, len(data) - 1))
            data = data[:at] + draw(st.binary(min_size=1, max_size=4)) + data[at + 1 :]
        return data
    tags = sorted(t for t in ds.keys() if t != 0x7FE00010)
    tag = draw(st.sampled_from(tags))
    copy_ds = copy.deepcopy(ds)
    if kind == "delete":
        del copy_ds[tag]
    else:
        vr = draw(st.sampled_from([ds[tag].VR, "US", "UL", "SL", "LO", "UI", "DS", "IS", "SQ"]))
        _raw(copy_ds, tag, vr, draw(st.binary(min_size=0, max_size=12)))
    try:
        return _bytes(copy_ds)
    except Exception:  # noqa: BLE001 - pydicom would not write it: mutate the bytes instead
        return data[: len(data) // 2]


#: Outcomes of the hypothesis examples by mutation kind, printed after the module (pytest -s).
TALLY: dict[str, Counter] = defaultdict(Counter)


@pytest.fixture(scope="module", autouse=True)
def _print_tally():
    yield
    if TALLY:
        print("\nhypothesis examples:")
        for kind, counter in sorted(TALLY.items()):
            print(f"  {kind:20s} {dict(counter)}")


def _fuzz_one(kind: str, base: str, data_strategy) -> None:
    ds = _fresh(base, "hypothesis")
    data = _mutate(kind, _bytes(ds), ds, data_strategy.draw)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        inputs, out = root / "in", root / "out"
        inputs.mkdir()
        path = inputs / "variant.dcm"
        path.write_bytes(data)
        before = _digest(root)
        outcomes = _run(inputs, out)
        problems = _check_outcome(f"{base} {kind} variant", ANY, outcomes.get(path))
        TALLY[kind][outcomes.get(path, ("none",))[0]] += 1
        assert not problems, "\n".join(problems)
        assert _digest(root, skip=out) == before


_SETTINGS = dict(
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(hypothesis.HealthCheck),
)


@pytest.mark.parametrize("kind", KINDS)
@hypothesis.settings(max_examples=10, **_SETTINGS)
@hypothesis.given(base=st.sampled_from(["single", "cine", "cine_rle"]), data=st.data())
def test_random_mutations(kind, base, data):
    _fuzz_one(kind, base, data)


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
@hypothesis.settings(max_examples=150, **_SETTINGS)
@hypothesis.given(
    base=st.sampled_from(["single", "cine", "cine_rle", "rgb", "palette", "aloka", "j2k"]),
    data=st.data(),
)
def test_random_mutations_long(kind, base, data):
    _fuzz_one(kind, base, data)
