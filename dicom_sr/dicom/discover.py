"""Find the ultrasound series to process among files, folders and DICOMDIRs.

Only headers are read (``stop_before_pixels``); the pixel data element is located and its
length checked against the image size without loading it. Anything that cannot be
processed becomes a :class:`Skipped` with its path and a plain reason; one bad file never
stops discovery and inputs are never written to.
"""

from __future__ import annotations

import logging
import os
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.encaps import parse_basic_offsets, parse_fragments
from pydicom.errors import InvalidDicomError
from pydicom.fileset import FileSet
from pydicom.uid import UID

from dicom_sr.dicom.decoders import seek_pixel_data, undecodable_reason

LOGGER = logging.getLogger(__name__)

__all__ = [
    "Instance",
    "Series",
    "Skipped",
    "Discovery",
    "discover",
    "inspect_file",
    "US_SOP_CLASSES",
]

#: Ultrasound image storage SOP classes (current and retired).
US_SOP_CLASSES: frozenset[str] = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.6.1",  # US Image Storage
        "1.2.840.10008.5.1.4.1.1.3.1",  # US Multi-frame Image Storage
        "1.2.840.10008.5.1.4.1.1.6",  # US Image Storage (Retired)
        "1.2.840.10008.5.1.4.1.1.3",  # US Multi-frame Image Storage (Retired)
    }
)
#: Secondary capture classes, kept only when their Modality is US.
_SC_PREFIX = "1.2.840.10008.5.1.4.1.1.7"
_MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"
_UNDEFINED = 0xFFFFFFFF


@dataclass(frozen=True)
class Instance:
    """One image file, described by its header."""

    path: Path
    sop_instance_uid: str
    sop_class_uid: str
    study_uid: str
    series_uid: str
    instance_number: int | None
    number_of_frames: int
    rows: int
    columns: int
    transfer_syntax_uid: str
    photometric: str


@dataclass
class Series:
    """The instances of one series, sorted by InstanceNumber (then path)."""

    study_uid: str
    series_uid: str
    instances: list[Instance] = field(default_factory=list)

    @property
    def n_frames(self) -> int:
        """Total number of frames over the instances."""
        return sum(i.number_of_frames for i in self.instances)


@dataclass(frozen=True)
class Skipped:
    """A file that will not be processed, and why."""

    path: str
    reason: str


@dataclass
class Discovery:
    """What :func:`discover` found."""

    series: list[Series]
    skipped: list[Skipped]


def discover(
    inputs: Iterable[str | os.PathLike],
    *,
    max_pixels: int | None = None,
    unique_uids: bool = True,
) -> Discovery:
    """Group the ultrasound instances under `inputs` into series.

    Parameters
    ----------
    inputs : iterable of path-like
        Files, folders (searched recursively) and DICOMDIR files.
    max_pixels : int, optional
        Instances whose frames have more pixels (Rows x Columns) are skipped.
    unique_uids : bool, optional
        If True (default) a file whose SOP Instance UID was already found (a copy, or
        another encoding of the same image) is skipped: its derived output would take the
        same UID and path. False keeps every file (for evaluation over test collections).

    Returns
    -------
    Discovery
        Series sorted by study and series UID; skipped files with a reason each.
    """
    seen: set[Path] = set()
    found: list[Instance] = []
    skipped: list[Skipped] = []
    for path, problem in _candidates(inputs, seen):
        if problem:
            skipped.append(Skipped(str(path), problem))
            continue
        result = inspect_file(path, max_pixels=max_pixels)
        if isinstance(result, Skipped):
            LOGGER.info("skipping %s: %s", result.path, result.reason)
            skipped.append(result)
        elif result is not None:
            found.append(result)

    groups: dict[tuple[str, str], Series] = {}
    first_path: dict[str, Path] = {}
    for inst in found:
        if unique_uids and inst.sop_instance_uid in first_path:
            # same instance twice (a copy, or another encoding of it): outputs would collide
            other = first_path[inst.sop_instance_uid]
            skipped.append(
                Skipped(str(inst.path), f"same SOP Instance UID as {other}, already discovered")
            )
            continue
        first_path[inst.sop_instance_uid] = inst.path
        key = (inst.study_uid, inst.series_uid)
        groups.setdefault(key, Series(*key)).instances.append(inst)
    for series in groups.values():
        series.instances.sort(key=_instance_order)
    return Discovery([groups[k] for k in sorted(groups)], skipped)


def _instance_order(inst: Instance) -> tuple[int, int, str]:
    none_last = 1 if inst.instance_number is None else 0
    return (none_last, inst.instance_number or 0, str(inst.path))


def _candidates(
    inputs: Iterable[str | os.PathLike], seen: set[Path]
) -> Iterator[tuple[Path, str | None]]:
    """Every file once: (path, None), or (path, problem) for inputs that are not there."""
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file())
        elif path.is_file():
            files = [path]
        else:
            yield path, "no such file or folder"
            continue
        for file in files:
            key = file.resolve()
            if key in seen:
                continue
            seen.add(key)
            refs = _dicomdir_references(file)
            if refs is None:
                yield file, None
                continue
            for ref in refs:  # a DICOMDIR is an index, not an image: expand it
                rkey = ref.resolve()
                if rkey not in seen:
                    seen.add(rkey)
                    yield (ref, None) if ref.is_file() else (ref, "listed in DICOMDIR, missing")


def _dicomdir_references(path: Path) -> list[Path] | None:
    """The files a DICOMDIR refers to, or None if `path` is not a DICOMDIR."""
    if path.name.upper() != "DICOMDIR":
        try:
            with open(path, "rb") as f:
                f.seek(128)
                if f.read(4) != b"DICM":
                    return None
            meta = pydicom.filereader.read_file_meta_info(path)
        except (OSError, InvalidDicomError, ValueError, struct.error):
            return None
        if meta.get("MediaStorageSOPClassUID") != _MEDIA_STORAGE_DIRECTORY:
            return None
    try:
        fileset = FileSet(pydicom.dcmread(path))
    except Exception as exc:  # noqa: BLE001 - not a usable DICOMDIR: treat as a file
        LOGGER.debug("%s: not read as a DICOMDIR: %s", path, exc)
        return None
    return [Path(inst.path) for inst in fileset]


def inspect_file(path: str | os.PathLike, *, max_pixels: int | None = None) -> Instance | Skipped:
    """Describe one file as an :class:`Instance`, or say why it is :class:`Skipped`."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return _inspect(path, f, max_pixels)
    except InvalidDicomError as exc:
        return Skipped(str(path), f"not a DICOM file ({exc})")
    except OSError as exc:
        return Skipped(str(path), f"cannot read: {exc}")
    except Exception as exc:  # noqa: BLE001 - a malformed file must not stop discovery
        return Skipped(str(path), f"unreadable DICOM header: {type(exc).__name__}: {exc}")


def _inspect(path: Path, f, max_pixels: int | None) -> Instance | Skipped:
    meta = pydicom.filereader.read_file_meta_info(path)
    tsyntax = meta.get("TransferSyntaxUID")
    if not tsyntax:
        return Skipped(str(path), "no Transfer Syntax UID (0002,0010) in the file meta")
    uid = UID(tsyntax)
    if uid.is_deflated:
        ds: Dataset = pydicom.dcmread(f, stop_before_pixels=True)
        element = None
    else:
        element = seek_pixel_data(f, uid)
        ds = element.header if element is not None else None
        if ds is None:
            f.seek(0)
            ds = pydicom.dcmread(f, stop_before_pixels=True)

    sop_class = str(ds.get("SOPClassUID", ""))
    modality = str(ds.get("Modality", "")).strip()
    if not sop_class:
        return Skipped(str(path), "no SOP Class UID (0008,0016): truncated header or not an image")
    if sop_class.startswith(_SC_PREFIX) and modality == "US":
        pass
    elif sop_class not in US_SOP_CLASSES:
        name = UID(sop_class).name if sop_class else "none"
        return Skipped(
            str(path), f"not an ultrasound image: Modality {modality or 'absent'}, SOP class {name}"
        )
    for keyword in (
        "SOPInstanceUID",
        "StudyInstanceUID",
        "SeriesInstanceUID",
        "Rows",
        "Columns",
        "BitsAllocated",
        "SamplesPerPixel",
        "PhotometricInterpretation",
    ):
        if ds.get(keyword) in (None, ""):
            return Skipped(
                str(path), f"missing {keyword} ({pydicom.datadict.tag_for_keyword(keyword):08X})"
            )
    stored: int | None = None  # bytes of native pixel data actually present
    if uid.is_deflated:  # zlib stream: no file offsets, read it all (native data only)
        full = pydicom.dcmread(path)
        if "PixelData" not in full:
            return Skipped(str(path), "no Pixel Data (7FE0,0010)")
        stored = len(full.PixelData)
    elif element is None:
        return Skipped(str(path), "no Pixel Data (7FE0,0010)")
    elif element.keyword != "PixelData":
        return Skipped(str(path), f"{element.keyword} (float pixels) is not supported")

    if (reason := undecodable_reason(uid)) is not None:
        return Skipped(str(path), reason)

    rows, cols = int(ds.Rows), int(ds.Columns)
    frames = int(ds.get("NumberOfFrames") or 1)
    if rows < 1 or cols < 1 or frames < 1:
        return Skipped(str(path), f"empty image: {rows} rows, {cols} columns, {frames} frames")
    if max_pixels is not None and rows * cols > max_pixels:
        return Skipped(
            str(path),
            f"frame of {cols}x{rows} = {rows * cols} pixels exceeds max_pixels {max_pixels}",
        )
    problem = None
    if element is not None and uid.is_encapsulated:
        size = os.fstat(f.fileno()).st_size
        problem = _check_encapsulated(f, element, uid, ds, frames, size)
    elif element is not None:
        if element.length == _UNDEFINED:
            problem = "native Pixel Data (7FE0,0010) with undefined length"
        else:
            stored = min(element.length, os.fstat(f.fileno()).st_size - element.value_offset)
    if stored is not None:
        problem = _check_native(stored, ds, frames)
    if problem:
        return Skipped(str(path), problem)

    number = ds.get("InstanceNumber")
    return Instance(
        path=path,
        sop_instance_uid=str(ds.SOPInstanceUID),
        sop_class_uid=sop_class,
        study_uid=str(ds.StudyInstanceUID),
        series_uid=str(ds.SeriesInstanceUID),
        instance_number=int(number) if number not in (None, "") else None,
        number_of_frames=frames,
        rows=rows,
        columns=cols,
        transfer_syntax_uid=str(uid),
        photometric=str(ds.PhotometricInterpretation).strip(),
    )


def _check_native(stored: int, ds: Dataset, frames: int) -> str | None:
    """Truncation check for native Pixel Data: bytes present vs the image size."""
    samples = int(ds.Rows) * int(ds.Columns) * int(ds.SamplesPerPixel) * frames
    expected = (samples * int(ds.BitsAllocated) + 7) // 8
    if stored < expected:
        return (
            f"truncated: Pixel Data (7FE0,0010) holds {stored} bytes, {expected} expected for "
            f"{frames} frame(s) of {ds.Columns}x{ds.Rows}x{ds.SamplesPerPixel} "
            f"at {ds.BitsAllocated} bits"
        )
    return None


def _check_encapsulated(f, element, uid: UID, ds: Dataset, frames: int, size: int) -> str | None:
    """Truncation check for encapsulated Pixel Data: every item there, every frame there."""
    if element.length != _UNDEFINED:
        return "encapsulated Pixel Data (7FE0,0010) must have undefined length"
    endian = "<" if uid.is_little_endian else ">"
    try:
        offsets = parse_basic_offsets(f, endianness=endian)
        first = f.tell()
        count, positions = parse_fragments(f, endianness=endian)
    except (ValueError, struct.error) as exc:
        return f"truncated or malformed encapsulated Pixel Data: {exc}"
    if count == 0:
        return "truncated: encapsulated Pixel Data has no fragments"
    f.seek(positions[-1] + 4)
    last_len = struct.unpack(f"{endian}L", f.read(4))[0]
    end = positions[-1] + 8 + last_len
    f.seek(end)
    delimiter = f.read(4)
    if end > size or delimiter != struct.pack(f"{endian}HH", 0xFFFE, 0xE0DD):
        return f"truncated: encapsulated Pixel Data ends at byte {size}, before its last item"
    starts = {p - first for p in positions}
    if "ExtendedOffsetTable" in ds:
        n_ext = len(ds.ExtendedOffsetTable) // 8
        if n_ext != frames:
            return f"Extended Offset Table lists {n_ext} frames, NumberOfFrames is {frames}"
    elif offsets:
        if len(offsets) != frames:
            return f"Basic Offset Table lists {len(offsets)} frames, NumberOfFrames is {frames}"
        missing = [i for i, o in enumerate(offsets) if o not in starts]
        if missing:
            return f"truncated: frame {missing[0]} of {frames} is not in the encapsulated data"
    elif count < frames:
        return f"truncated: {count} fragments for {frames} frames"
    return None
