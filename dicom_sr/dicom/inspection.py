"""Inspect one file's header: an ultrasound :class:`Instance` this tool can process, or why not.

Only the header is read (``stop_before_pixels``); the pixel data element is located and its
length checked against the image size without loading it. :func:`inspect` raises
:class:`~dicom_sr.errors.InputError` for an unusable file (a reason naming the file and the
tag, never a raw pydicom traceback); :func:`inspect_file` turns that into a :class:`Skipped`.
What is refused, besides files that are not DICOM or are truncated: another Modality under an
ultrasound SOP class, invalid UIDs (:func:`valid_uid`, the one check for every UID that becomes
part of a path: at most 64 characters, digits and dots, so the Study UID is always a short,
safe folder name), image attributes that disagree (samples for the photometric
interpretation, bits), a NumberOfFrames that disagrees with the Pixel Data
(:func:`.decoders.check_frames`), PALETTE COLOR without usable lookup tables, unreadable US
regions or regions that overflow when scaled, and instances that dicom-sr derived itself.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID

from dicom_sr.dicom.decoders import check_frames, seek_pixel_data, undecodable_reason
from dicom_sr.dicom.frames import palette_table
from dicom_sr.dicom.provenance import MANUFACTURER
from dicom_sr.dicom.reasons import brief, not_dicom, shown, tag_name
from dicom_sr.dicom.regions import MAX_SCALE, check_scalable
from dicom_sr.errors import InputError

LOGGER = logging.getLogger(__name__)

__all__ = [
    "Instance",
    "Skipped",
    "inspect",
    "inspect_file",
    "check_max_pixels",
    "valid_uid",
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
        raise InputError(path, not_dicom(exc)) from None
    except OSError as exc:
        raise InputError(path, f"cannot read: {exc.strerror or exc}") from None
    except Exception as exc:  # noqa: BLE001 - a malformed file must not stop discovery
        LOGGER.debug("%s: unexpected error in inspection", path, exc_info=True)
        raise InputError(path, f"unreadable DICOM header: {brief(exc)}") from None


def check_max_pixels(path: str | os.PathLike, rows: int, cols: int, max_pixels: int | None) -> None:
    """Raise :class:`InputError` when one frame of ``rows`` x ``cols`` exceeds ``max_pixels``:
    the one reason every front end gives for a frame over the limit."""
    if max_pixels is not None and rows * cols > max_pixels:
        raise _fail(
            Path(path),
            "Rows",
            f"frame of {cols}x{rows} = {rows * cols} pixels exceeds max_pixels {max_pixels}",
        )


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


def valid_uid(value: object, keyword: str, path: str | os.PathLike[str]) -> str:
    """``value`` as a UID safe to use as a file or folder name, else :class:`InputError`.

    The one check for every UID that becomes part of a path (input inspection, the node's
    spool, the output store). Surrounding whitespace and trailing NUL padding are removed; what
    remains must be non-empty and pass :meth:`pydicom.uid.UID.is_valid`: at most 64
    characters, digits and dots, no leading zeros (so never ``..``, ``/`` or a long name).

    Parameters
    ----------
    value : object
        The attribute's value (None when absent).
    keyword : str
        Its DICOM keyword, e.g. ``"SeriesInstanceUID"``; the error's tag is
        ``Keyword (gggg,eeee)`` (:func:`~dicom_sr.dicom.reasons.tag_name`).
    path : path-like
        The file (or output folder) the UID belongs to, named by the error.

    Returns
    -------
    str
        The UID, stripped of its padding: use this, not ``value``, in the path.

    Raises
    ------
    InputError
        "missing Keyword (gggg,eeee)" for an absent or empty value, else "Keyword
        (gggg,eeee) is '...' (n characters), not a valid UID: ...".
    """
    tag = tag_name(keyword)
    text = "" if value is None else str(value).strip().rstrip("\0").strip()
    if not text:
        raise InputError(path, f"missing {tag}", tag=tag)
    if not UID(text, validation_mode=pydicom.config.IGNORE).is_valid:
        raise InputError(
            path,
            f"{tag} is {shown(text, 72)} ({len(text)} characters), not a valid UID: expected "
            "digits and dots, no leading zeros, at most 64 characters",
            tag=tag,
        )
    return text


def _check_readable(ds: Dataset, path: Path, depth: int = 0) -> None:
    """Every public attribute parses (nested ones too): the derived instance copies them all,
    so one that does not is a skip now, naming it, not a failure after the frames are done."""
    for tag in list(ds.keys()):
        if tag.is_private or 0x5000 <= tag.group <= 0x60FF:
            continue  # not copied into the derived instance (curves, overlays, private)
        try:
            elem = ds[tag]
        except Exception as exc:  # noqa: BLE001 - pydicom converts raw values lazily
            raise InputError(
                path, f"{tag_name(tag)} cannot be read: {brief(exc)}", tag=tag_name(tag)
            ) from None
        if elem.VR == "SQ" and depth < 8:
            for item in elem.value or []:
                _check_readable(item, path, depth + 1)


def _derived_by_us(ds: Dataset, path: Path) -> bool:
    """True when dicom-sr made this instance: a Contributing Equipment item of Manufacturer
    dicom-sr, or a DerivationDescription as :func:`.provenance.derivation_description` writes
    it ("Super-resolution x.. by dicom-sr ..."; the name too, so another vendor's is kept)."""
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
    sop_class = valid_uid(_get(ds, "SOPClassUID", path), "SOPClassUID", path)
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
    _check_readable(ds, path)
    uids = {
        k: valid_uid(_get(ds, k, path), k, path)
        for k in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
    }
    rows, cols, photometric = _check_image(ds, path)
    check_max_pixels(path, rows, cols, max_pixels)

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
