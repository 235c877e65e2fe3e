"""Find the ultrasound series to process among files, folders and DICOMDIRs.

Only headers are read (``stop_before_pixels``); the pixel data element is located and its
length checked against the image size without loading it. Anything that cannot be
processed becomes a :class:`Skipped` with its path and a plain reason naming the tag; one
bad file never stops discovery and inputs are never written to.

:func:`iter_inspected` walks lazily (``os.scandir``, sorted per folder), so planning over a
hundred thousand files never holds a list of them; :func:`discover` groups what it yields.
:func:`inspect` raises :class:`~dicom_sr.errors.InputError` for an unusable file, and
:func:`inspect_file` turns that into a :class:`Skipped`. What inspection refuses, besides
files that are not DICOM or are truncated: another Modality under an ultrasound SOP class,
invalid UIDs (:meth:`pydicom.uid.UID.is_valid`: at most 64 characters, digits and dots, so
the Study UID is always a short, safe folder name), a NumberOfFrames that disagrees with the
Pixel Data, PALETTE COLOR without usable lookup tables, unreadable US regions, and instances
that dicom-sr derived itself.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID

from dicom_sr.dicom.decoders import check_frames, seek_pixel_data, undecodable_reason
from dicom_sr.dicom.frames import palette_table
from dicom_sr.dicom.provenance import MANUFACTURER
from dicom_sr.dicom.reasons import brief, shown, tag_name
from dicom_sr.dicom.regions import MAX_SCALE, check_scalable
from dicom_sr.errors import InputError

LOGGER = logging.getLogger(__name__)

__all__ = [
    "Instance",
    "Series",
    "Skipped",
    "Discovery",
    "discover",
    "iter_inspected",
    "inspect",
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
#: The start of the DerivationDescription that dicom-sr writes (provenance.py).
_OUR_DERIVATION = "Super-resolution x"
_SAMPLES = {"MONOCHROME1": 1, "MONOCHROME2": 1, "PALETTE COLOR": 1, "RGB": 3}


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
    """A file (or DICOMDIR record) that will not be processed, and why."""

    path: str
    reason: str
    tag: str | None = None  # the attribute concerned, as "Keyword (gggg,eeee)"

    @classmethod
    def from_error(cls, exc: InputError) -> Skipped:
        """The skip an :class:`~dicom_sr.errors.InputError` describes."""
        return cls(exc.path, exc.reason, exc.tag)


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
    exclude: Iterable[str | os.PathLike] = (),
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
    exclude : iterable of path-like, optional
        Folders never entered (``--out`` inside an input: outputs are not inputs).

    Returns
    -------
    Discovery
        Series sorted by study and series UID; skipped files with a reason each.
    """
    skipped: list[Skipped] = []
    groups: dict[tuple[str, str], Series] = {}
    first_path: dict[str, Path] = {}
    for item in iter_inspected(inputs, max_pixels=max_pixels, exclude=exclude):
        if isinstance(item, Skipped):
            skipped.append(item)
            continue
        if unique_uids and item.sop_instance_uid in first_path:
            # same instance twice (a copy, or another encoding of it): outputs would collide
            other = first_path[item.sop_instance_uid]
            skipped.append(
                Skipped(str(item.path), f"same SOP Instance UID as {other}, already discovered")
            )
            continue
        first_path[item.sop_instance_uid] = item.path
        key = (item.study_uid, item.series_uid)
        groups.setdefault(key, Series(*key)).instances.append(item)
    for series in groups.values():
        series.instances.sort(key=_instance_order)
    return Discovery([groups[k] for k in sorted(groups)], skipped)


def iter_inspected(
    inputs: Iterable[str | os.PathLike],
    *,
    max_pixels: int | None = None,
    exclude: Iterable[str | os.PathLike] = (),
) -> Iterator[Instance | Skipped]:
    """Inspect every file under `inputs` once, lazily: an :class:`Instance` or a :class:`Skipped`.

    Folders are walked with :func:`os.scandir`, sorted per folder, depth first; a DICOMDIR
    yields the files its records reference (never one outside its own folder). Folders in
    `exclude` are never entered. Only the set of files already seen is kept (to inspect each
    once), never a list of the files to come.
    """
    excluded = {Path(p).resolve() for p in exclude}
    seen: set[Path] = set()
    for path, problem in _candidates(inputs, seen, excluded):
        if problem is not None:
            LOGGER.info("skipping %s: %s", path, problem.reason)
            yield problem
            continue
        result = inspect_file(path, max_pixels=max_pixels)
        if isinstance(result, Skipped):
            LOGGER.info("skipping %s: %s", result.path, result.reason)
        yield result


def _instance_order(inst: Instance) -> tuple[int, int, str]:
    none_last = 1 if inst.instance_number is None else 0
    return (none_last, inst.instance_number or 0, str(inst.path))


def _inside(path: Path, folders: set[Path]) -> Path | None:
    """The folder of `folders` that holds `path` (resolved), if any."""
    return next((f for f in folders if path == f or path.is_relative_to(f)), None)


def _walk(folder: Path, excluded: set[Path], visited: set[Path]) -> Iterator[Path]:
    """Files under `folder`, depth first, sorted by name per folder; symlink loops cut."""
    real = folder.resolve()
    if real in visited or _inside(real, excluded):
        return
    visited.add(real)
    try:
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as exc:
        LOGGER.warning("cannot list %s: %s", folder, exc.strerror or exc)
        return
    for entry in entries:
        try:
            is_dir, is_file = entry.is_dir(), entry.is_file()
        except OSError:
            continue
        if is_dir:
            yield from _walk(Path(entry.path), excluded, visited)
        elif is_file:
            yield Path(entry.path)


def _candidates(
    inputs: Iterable[str | os.PathLike], seen: set[Path], excluded: set[Path]
) -> Iterator[tuple[Path, Skipped | None]]:
    """Every file once: (path, None), or (path, Skipped) for what cannot even be inspected."""
    visited: set[Path] = set()
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files: Iterable[Path] = _walk(path, excluded, visited)
        elif path.is_file():
            holder = _inside(path.resolve(), excluded)
            if holder is not None:
                yield path, Skipped(str(path), f"inside the excluded folder {holder}, not read")
                continue
            files = [path]
        else:
            yield path, Skipped(str(path), "no such file or folder")
            continue
        for file in files:
            key = file.resolve()
            if key in seen:
                continue
            seen.add(key)
            if not _is_dicomdir(file):
                yield file, None
                continue
            for ref, problem in _dicomdir_records(file):  # an index, not an image: expand it
                rkey = ref.resolve()
                if problem is not None:
                    yield ref, problem
                elif rkey not in seen:
                    seen.add(rkey)
                    yield ref, None


def _is_dicomdir(path: Path) -> bool:
    """True for a file named DICOMDIR or whose file meta says Media Storage Directory."""
    if path.name.upper() == "DICOMDIR":
        return True
    try:
        with open(path, "rb") as f:
            f.seek(128)
            if f.read(4) != b"DICM":
                return False
        meta = pydicom.filereader.read_file_meta_info(path)
    except Exception:  # noqa: BLE001 - not readable as a DICOMDIR: inspection says why
        return False
    return meta.get("MediaStorageSOPClassUID") == _MEDIA_STORAGE_DIRECTORY


def _dicomdir_records(dicomdir: Path) -> Iterator[tuple[Path, Skipped | None]]:
    """The files the records of a DICOMDIR reference, each checked on its own.

    Read from DirectoryRecordSequence / ReferencedFileID directly rather than through
    :class:`pydicom.fileset.FileSet`, which refuses the whole set for one bad record: a
    record that points outside the DICOMDIR's folder, or to a file that is not there, is
    skipped with a reason and the other records are still processed.
    """
    root = dicomdir.parent.resolve()
    try:
        ds = pydicom.dcmread(dicomdir)
        records = list(ds.get("DirectoryRecordSequence") or [])
    except Exception as exc:  # noqa: BLE001 - a DICOMDIR that does not parse is one skip
        yield dicomdir, Skipped(str(dicomdir), f"DICOMDIR cannot be read: {brief(exc)}")
        return
    if "DirectoryRecordSequence" not in ds:
        tag = "DirectoryRecordSequence (0004,1220)"
        yield dicomdir, Skipped(str(dicomdir), f"DICOMDIR without {tag}", tag)
        return
    tag = "ReferencedFileID (0004,1500)"
    for k, record in enumerate(records):
        try:
            value = record.get("ReferencedFileID")
        except Exception as exc:  # noqa: BLE001 - one unreadable record
            where = f"{dicomdir} record {k}"
            yield dicomdir, Skipped(where, f"{tag} cannot be read: {brief(exc)}", tag)
            continue
        if value in (None, ""):
            continue  # a patient/study/series record: no file
        parts = [value] if isinstance(value, str) else [str(v) for v in value]
        where = f"{dicomdir} record {k} ({'/'.join(parts)})"
        bad = [p for p in parts if p in ("", ".", "..") or "/" in p or "\\" in p or ":" in p]
        target = root.joinpath(*parts)
        if bad or not target.resolve().is_relative_to(root):
            yield (
                target,
                Skipped(where, f"{tag} points outside the DICOMDIR's folder {root}; not read", tag),
            )
        elif not target.is_file():
            yield target, Skipped(str(target), f"listed in DICOMDIR {dicomdir}, missing", tag)
        else:
            yield target, None


def inspect_file(path: str | os.PathLike, *, max_pixels: int | None = None) -> Instance | Skipped:
    """Describe one file as an :class:`Instance`, or say why it is :class:`Skipped`."""
    try:
        return inspect(path, max_pixels=max_pixels)
    except InputError as exc:
        return Skipped.from_error(exc)


def inspect(path: str | os.PathLike, *, max_pixels: int | None = None) -> Instance:
    """Describe one file as an :class:`Instance`; :class:`~dicom_sr.errors.InputError` if unusable.

    Any exception from pydicom on a malformed file becomes an InputError naming the file.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return _inspect(path, f, max_pixels)
    except InputError:
        raise
    except InvalidDicomError as exc:
        raise InputError(path, f"not a DICOM file ({exc})") from None
    except OSError as exc:
        raise InputError(path, f"cannot read: {exc.strerror or exc}") from None
    except Exception as exc:  # noqa: BLE001 - a malformed file must not stop discovery
        LOGGER.debug("%s: unexpected error in inspection", path, exc_info=True)
        raise InputError(path, f"unreadable DICOM header: {brief(exc)}") from None


def _fail(path: Path, keyword: str, reason: str) -> InputError:
    return InputError(path, reason, tag=tag_name(keyword))


def _get(ds: Dataset, keyword: str, path: Path):
    """An attribute's value (None when absent or empty); InputError if it does not parse."""
    try:
        value = ds.get(keyword)
    except Exception as exc:  # noqa: BLE001 - pydicom converts values lazily
        raise _fail(path, keyword, f"{tag_name(keyword)} cannot be read: {brief(exc)}") from None
    return None if value is None or value == "" else value


def _int(ds: Dataset, keyword: str, path: Path, *, default: int | None = None) -> int:
    value = _get(ds, keyword, path)
    if value is None:
        if default is not None:
            return default
        raise _fail(path, keyword, f"missing {tag_name(keyword)}")
    try:
        number = int(value)
        if number != float(value):
            raise ValueError("not a whole number")
    except (TypeError, ValueError, OverflowError):
        raise _fail(
            path, keyword, f"{tag_name(keyword)} is {shown(value)}, expected an integer"
        ) from None
    return number


def _uid(ds: Dataset, keyword: str, path: Path) -> str:
    value = _get(ds, keyword, path)
    if value is None:
        raise _fail(path, keyword, f"missing {tag_name(keyword)}")
    uid = UID(str(value))
    if not uid.is_valid:
        raise _fail(
            path,
            keyword,
            f"{tag_name(keyword)} {shown(str(uid), 72)} is not a valid UID: "
            "expected at most 64 characters, "
            "digits and dots",
        )
    return str(uid)


def _derived_by_us(ds: Dataset, path: Path) -> bool:
    """True when dicom-sr made this instance (its Contributing Equipment or derivation says so)."""
    description = str(_get(ds, "DerivationDescription", path) or "")
    if description.startswith(_OUR_DERIVATION) and MANUFACTURER in description:
        return True
    for item in _get(ds, "ContributingEquipmentSequence", path) or []:
        if str(item.get("Manufacturer", "")).strip() == MANUFACTURER:
            return True
    return False


def _transfer_syntax(path: Path) -> UID:
    meta = pydicom.filereader.read_file_meta_info(path)
    tsyntax = meta.get("TransferSyntaxUID")
    keyword = "TransferSyntaxUID"
    if not tsyntax:
        raise _fail(path, keyword, f"no {tag_name(keyword)} in the file meta")
    uid = UID(str(tsyntax).strip())
    if not uid.is_transfer_syntax:
        raise _fail(
            path, keyword, f"{tag_name(keyword)} {str(uid)[:64]!r} is not a transfer syntax"
        )
    if (reason := undecodable_reason(uid)) is not None:
        raise _fail(path, keyword, reason)
    return uid


def _check_class(ds: Dataset, path: Path) -> str:
    """The SOP class, if it is ultrasound (or secondary capture of Modality US)."""
    sop_class = _uid(ds, "SOPClassUID", path)
    modality = str(_get(ds, "Modality", path) or "").strip()
    if not modality.isprintable() or len(modality) > 16:
        modality = shown(modality, 24)
    if sop_class.startswith(_SC_PREFIX) and modality == "US":
        return sop_class
    if sop_class not in US_SOP_CLASSES:
        raise _fail(
            path,
            "SOPClassUID",
            f"not an ultrasound image: Modality {modality or 'absent'}, SOP class "
            f"{UID(sop_class).name}",
        )
    if modality != "US":
        raise _fail(
            path,
            "Modality",
            f"Modality {modality or 'absent'} (0008,0060) under {UID(sop_class).name}: US expected",
        )
    return sop_class


def _check_image(ds: Dataset, path: Path) -> tuple[int, int, str]:
    """Rows, Columns and photometric interpretation, checked against each other."""
    rows, cols = _int(ds, "Rows", path), _int(ds, "Columns", path)
    if rows < 1 or cols < 1:
        raise _fail(path, "Rows", f"empty image: {rows} rows, {cols} columns")
    photometric = str(_get(ds, "PhotometricInterpretation", path) or "").strip()
    if not photometric:
        raise _fail(
            path, "PhotometricInterpretation", f"missing {tag_name('PhotometricInterpretation')}"
        )
    samples = _int(ds, "SamplesPerPixel", path)
    want = 3 if photometric.startswith("YBR") else _SAMPLES.get(photometric)
    if want is None:
        raise _fail(
            path,
            "PhotometricInterpretation",
            f"{tag_name('PhotometricInterpretation')} {photometric[:32]!r} is not supported: "
            "expected MONOCHROME1/2, RGB, YBR_* or PALETTE COLOR",
        )
    if samples != want:
        raise _fail(
            path,
            "SamplesPerPixel",
            f"{tag_name('SamplesPerPixel')} is {samples}, {photometric} needs {want}",
        )
    allocated = _int(ds, "BitsAllocated", path)
    stored = _int(ds, "BitsStored", path, default=allocated)
    if allocated not in (8, 16) or not 1 <= stored <= allocated:
        raise _fail(
            path,
            "BitsAllocated",
            f"{tag_name('BitsAllocated')} {allocated}, {tag_name('BitsStored')} {stored}: "
            "expected 8 or "
            "16 bits allocated and 1 <= BitsStored <= BitsAllocated",
        )
    if photometric == "PALETTE COLOR":
        palette_table(ds, path=path)  # raises InputError naming the table that is wrong
    return rows, cols, photometric


def _inspect(path: Path, f, max_pixels: int | None) -> Instance:
    uid = _transfer_syntax(path)
    if uid.is_deflated:  # zlib stream: no file offsets, read it all (native data only)
        ds: Dataset = pydicom.dcmread(f)
        element = None
    else:
        element = seek_pixel_data(f, uid)
        if element is not None:
            ds = element.header
        else:
            f.seek(0)
            ds = pydicom.dcmread(f, stop_before_pixels=True)
    try:
        return _describe(path, f, ds, uid, element, max_pixels)
    except InputError as exc:
        size = os.fstat(f.fileno()).st_size
        if element is None and exc.reason.startswith(("missing ", "Modality absent")):
            # a header cut short reads as a header without its later attributes: say so
            reason = f"{exc.reason}; the file ends at byte {size} with no Pixel Data: truncated?"
            raise InputError(path, reason, tag=exc.tag) from None
        raise


def _describe(path: Path, f, ds: Dataset, uid: UID, element, max_pixels: int | None) -> Instance:
    """The checks of :func:`inspect` on a header already read."""
    if _derived_by_us(ds, path):
        raise _fail(
            path, "ContributingEquipmentSequence", "derived by dicom-sr; not processed again"
        )
    sop_class = _check_class(ds, path)
    uids = {
        k: _uid(ds, k, path) for k in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
    }
    rows, cols, photometric = _check_image(ds, path)
    if max_pixels is not None and rows * cols > max_pixels:
        raise _fail(
            path,
            "Rows",
            f"frame of {cols}x{rows} = {rows * cols} pixels exceeds max_pixels {max_pixels}",
        )

    if uid.is_deflated:
        if "PixelData" not in ds:
            raise _fail(path, "PixelData", "no Pixel Data (7FE0,0010)")
        frames = check_frames(path, ds, stored=len(ds.PixelData))
    elif element is None:
        raise _fail(path, "PixelData", "no Pixel Data (7FE0,0010)")
    elif element.keyword != "PixelData":
        raise _fail(path, element.keyword, f"{element.keyword} (float pixels) is not supported")
    else:
        frames = check_frames(path, ds, element=element, file=f)
    check_scalable(ds, MAX_SCALE, path=path)  # regions: InputError naming the tag

    number = _get(ds, "InstanceNumber", path)
    try:
        instance_number = int(number) if number is not None else None
    except (TypeError, ValueError):
        instance_number = None  # only orders the series: a bad one sorts last, not a skip
    return Instance(
        path=path,
        sop_instance_uid=uids["SOPInstanceUID"],
        sop_class_uid=sop_class,
        study_uid=uids["StudyInstanceUID"],
        series_uid=uids["SeriesInstanceUID"],
        instance_number=instance_number,
        number_of_frames=frames,
        rows=rows,
        columns=cols,
        transfer_syntax_uid=str(uid),
        photometric=photometric,
    )
