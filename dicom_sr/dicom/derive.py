"""Build the DERIVED ultrasound instance that carries super-resolved pixels.

The derived instance is a copy of the source header (patient, study, equipment, frame timing
and everything else that still holds) in a new series of the same study, with the same SOP
class, the encoded pixels, the US regions rescaled, and the General Image module's derivation
attributes (Image Type, Source Image Sequence, Derivation Description/Code, Contributing
Equipment, Lossy Image Compression history) filled in. See ``docs/output.rst`` for what is
removed and why.

An input that cannot be derived (a required attribute missing, a copied attribute that does
not parse or cannot be written back, regions that overflow when scaled) raises
:class:`~dicom_sr.errors.InputError` naming the source file and the tag; a size mismatch
between the encoded frames and the source is a caller's bug and stays a ``ValueError``.
"""

from __future__ import annotations

import copy
import logging
import os
from datetime import UTC, datetime

import highdicom as hd
from pydicom import DataElement, Dataset
from pydicom.charset import convert_encodings
from pydicom.dataset import FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element
from pydicom.multival import MultiValue
from pydicom.sr.codedict import codes
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID
from pydicom.valuerep import format_number_as_ds

from dicom_sr.config import OutputConfig
from dicom_sr.dicom import regions
from dicom_sr.dicom.encode import LOSSY_METHODS, EncodedPixels
from dicom_sr.dicom.provenance import (
    Provenance,
    contributing_equipment,
    derivation_description,
    derived_uid,
)
from dicom_sr.dicom.reasons import brief, tag_name
from dicom_sr.errors import InputError

__all__ = ["Provenance", "derived_uid", "derive_dataset", "REMOVED_KEYWORDS"]

logger = logging.getLogger(__name__)

#: Attributes dropped from every derived instance: pixel statistics and padding values that
#: interpolation invalidates, the icon, and encapsulation details of the source pixels.
REMOVED_KEYWORDS: tuple[str, ...] = (
    "PixelData",
    "FloatPixelData",
    "DoubleFloatPixelData",
    "ExtendedOffsetTable",
    "ExtendedOffsetTableLengths",
    "PixelDataProviderURL",
    "DataSetTrailingPadding",
    "IconImageSequence",
    "SmallestImagePixelValue",
    "LargestImagePixelValue",
    "SmallestPixelValueInSeries",
    "LargestPixelValueInSeries",
    "PixelPaddingValue",
    "PixelPaddingRangeLimit",
    "PlanarConfiguration",
    "LossyImageCompressionRatio",
    "LossyImageCompressionMethod",
    "SourceImageSequence",
    "DerivationDescription",
    "DerivationCodeSequence",
)

#: Palette Color Lookup Table module: meaningless once pixels are RGB or grey.
PALETTE_KEYWORDS: tuple[str, ...] = (
    "RedPaletteColorLookupTableDescriptor",
    "GreenPaletteColorLookupTableDescriptor",
    "BluePaletteColorLookupTableDescriptor",
    "AlphaPaletteColorLookupTableDescriptor",
    "RedPaletteColorLookupTableData",
    "GreenPaletteColorLookupTableData",
    "BluePaletteColorLookupTableData",
    "AlphaPaletteColorLookupTableData",
    "SegmentedRedPaletteColorLookupTableData",
    "SegmentedGreenPaletteColorLookupTableData",
    "SegmentedBluePaletteColorLookupTableData",
    "SegmentedAlphaPaletteColorLookupTableData",
    "PaletteColorLookupTableUID",
)

#: Grey-scale transforms (Modality/VOI LUT, Presentation LUT) apply to MONOCHROME only.
GREYSCALE_KEYWORDS: tuple[str, ...] = (
    "WindowCenter",
    "WindowWidth",
    "WindowCenterWidthExplanation",
    "VOILUTFunction",
    "VOILUTSequence",
    "ModalityLUTSequence",
    "RescaleIntercept",
    "RescaleSlope",
    "RescaleType",
    "PresentationLUTShape",
)

_SERIES_DESCRIPTION_MAX = 64  # LO
_CS_MAX = 16
_CS_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 _")
_IS_MAX = 2**31 - 1


def derive_dataset(
    source: Dataset,
    encoded: EncodedPixels,
    *,
    scale: int,
    number_of_frames: int,
    provenance: Provenance,
    output: OutputConfig,
    series_uid: str,
    sop_uid: str,
) -> Dataset:
    """Return the derived instance for one source instance.

    Parameters
    ----------
    source : pydicom.Dataset
        The source header (its Pixel Data, if present, is not copied).
    encoded : encode.EncodedPixels
        The output frames, already encoded.
    scale : int
        Integer upscaling factor; Rows/Columns must equal the source's times ``scale``.
    number_of_frames : int
        Frames in ``encoded``: the first ``number_of_frames`` frames of the source.
    provenance, output
        What goes into the derivation attributes; naming and numbering of the series.
    series_uid, sop_uid : str
        New Series and SOP Instance UIDs (see :func:`provenance.derived_uid`).
    """
    where = _source_name(source)
    _check(source, encoded, scale, number_of_frames, where)
    now = datetime.now(UTC)

    ds = Dataset()
    for tag in list(source.keys()):
        if tag.is_private or tag.group in range(0x5000, 0x5100, 2):
            continue  # private tags: semantics unknown; 50xx curves (retired)
        if 0x6000 <= tag.group <= 0x601E and tag.group % 2 == 0:
            continue  # overlays: drawn on the source grid, not the derived one
        try:
            elem = source[tag]
            if elem.keyword in REMOVED_KEYWORDS:
                continue
            ds.add(copy.deepcopy(elem))
        except Exception as exc:  # noqa: BLE001 - pydicom converts raw values lazily
            raise InputError(
                where, f"{tag_name(tag)} cannot be read: {brief(exc)}", tag=tag_name(tag)
            ) from None
    ds.remove_private_tags()  # also inside sequences
    for keyword in PALETTE_KEYWORDS:
        ds.pop(keyword, None)
    if encoded.samples_per_pixel != 1:
        for keyword in GREYSCALE_KEYWORDS:
            ds.pop(keyword, None)

    _set_identity(ds, source, scale, output, series_uid, sop_uid, now, provenance.revision)
    _set_frames(ds, source, number_of_frames)
    _set_pixels(ds, encoded)
    _set_lossy(ds, source, encoded, where)
    _set_derivation(ds, source, encoded, provenance, number_of_frames, now)
    regions.scale_regions(ds, scale, path=where)
    _check_writable(ds, where)

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = encoded.transfer_syntax_uid
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = meta
    return ds


def _copy_dataset(item: Dataset) -> Dataset:
    out = Dataset()
    for elem in item:
        out.add(copy.deepcopy(elem))
    return out


def _source_name(source: Dataset) -> str:
    """The source's file (pydicom records it when reading), else its SOP Instance UID."""
    name = getattr(source, "filename", None)
    if isinstance(name, str | os.PathLike) and str(name):
        return str(name)
    return f"source {source.get('SOPInstanceUID', '?')}"


def _check_writable(ds: Dataset, where: str) -> None:
    """Encode every attribute but the pixels once, so a value the source got wrong (a US
    that overflows, a string in a number's VR) is an InputError naming it, not a failed write."""
    try:
        encodings = convert_encodings(ds.get("SpecificCharacterSet") or "ISO_IR 6")
    except Exception:  # noqa: BLE001 - pydicom falls back itself; so do we
        encodings = ["iso8859"]
    for elem in ds:
        if elem.tag == 0x7FE00010:
            continue
        fp = DicomBytesIO()
        fp.is_little_endian, fp.is_implicit_VR = True, False
        try:
            write_data_element(fp, elem, encodings)
        except Exception as exc:  # noqa: BLE001 - whatever pydicom refuses to encode
            raise InputError(
                where,
                f"{tag_name(elem.tag)} cannot be written in the derived instance: {brief(exc)}",
                tag=tag_name(elem.tag),
            ) from None


def _check(source: Dataset, encoded: EncodedPixels, scale: int, n: int, where: str) -> None:
    for keyword in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "Rows", "Columns"):
        if source.get(keyword) in (None, ""):
            raise InputError(
                where,
                f"missing {tag_name(keyword)}, cannot derive an image from it",
                tag=tag_name(keyword),
            )
    want = (int(source.Rows) * scale, int(source.Columns) * scale)
    if (encoded.rows, encoded.columns) != want:
        raise ValueError(
            f"{where}: encoded frames are {encoded.rows}x{encoded.columns}, expected "
            f"Rows x Columns = {want[0]}x{want[1]} (source x{scale})"
        )
    if encoded.number_of_frames != n:
        raise ValueError(
            f"{where}: {encoded.number_of_frames} frames encoded but number_of_frames={n}"
        )
    try:
        src_frames = int(source.get("NumberOfFrames") or 1)
    except (TypeError, ValueError):
        raise InputError(
            where, f"{tag_name('NumberOfFrames')} is not an integer", tag=tag_name("NumberOfFrames")
        ) from None
    if not 1 <= n <= src_frames:
        raise ValueError(f"{where}: NumberOfFrames {src_frames}, cannot derive {n} frames")


def _as_cs(value: str, where: str, keyword: str) -> str:
    """``value`` as a valid Code String (upper case, digits, space, ``_``; 16 characters): a
    scanner's own value (Aloka writes ``ABDOM/RAD`` in ImageType) copied as is would make the
    derived object invalid."""
    cs = "".join(c if c in _CS_CHARS else "_" for c in value.upper())[:_CS_MAX]
    if cs != value:
        logger.info(
            "%s: %s value %r is not a valid CS; written as %r", where, tag_name(keyword), value, cs
        )
    return cs


def _set_identity(
    ds: Dataset,
    source: Dataset,
    scale: int,
    output: OutputConfig,
    series_uid: str,
    sop_uid: str,
    now: datetime,
    revision: int = 0,
) -> None:
    source_where = _source_name(source)
    ds.SeriesInstanceUID = UID(series_uid)
    ds.SOPInstanceUID = UID(sop_uid)
    image_type = [_as_cs(str(v), source_where, "ImageType") for v in source.get("ImageType") or []]
    ds.ImageType = ["DERIVED", "SECONDARY", *image_type[2:]]
    suffix = output.series_description_suffix.format(scale=scale)
    if revision:
        suffix += f" rev {revision}"
    base = str(source.get("SeriesDescription") or "")
    base = base[: max(0, _SERIES_DESCRIPTION_MAX - len(suffix))]
    ds.SeriesDescription = (base + suffix).strip()[:_SERIES_DESCRIPTION_MAX]
    try:
        number = int(source.get("SeriesNumber") or 0)
    except (TypeError, ValueError):
        logger.warning("%s: SeriesNumber (0020,0011) is not an integer; 0 assumed", source_where)
        number = 0
    ds.SeriesNumber = max(-_IS_MAX, min(_IS_MAX, number + output.series_number_offset))
    local = now.astimezone()
    ds.InstanceCreationDate = local.strftime("%Y%m%d")
    ds.InstanceCreationTime = local.strftime("%H%M%S")


def _set_frames(ds: Dataset, source: Dataset, n: int) -> None:
    """Keep the cine timing; trim per-frame vectors when only the first n frames are derived."""
    if "NumberOfFrames" not in source:
        return
    ds.NumberOfFrames = n
    src_n = int(source.NumberOfFrames)
    if n == src_n:
        return
    if "FrameTimeVector" in ds:
        ds.FrameTimeVector = list(ds.FrameTimeVector)[:n]
    for keyword in ("StartTrim", "StopTrim"):
        if keyword in ds:
            setattr(ds, keyword, min(int(ds[keyword].value), n))


def _set_pixels(ds: Dataset, enc: EncodedPixels) -> None:
    """Image Pixel module and Pixel Data; a file-object value stays buffered (never read here)."""
    ds.Rows = enc.rows
    ds.Columns = enc.columns
    ds.SamplesPerPixel = enc.samples_per_pixel
    ds.PhotometricInterpretation = enc.photometric
    if enc.planar_configuration is not None:
        ds.PlanarConfiguration = enc.planar_configuration
    ds.BitsAllocated = enc.bits_allocated
    ds.BitsStored = enc.bits_stored
    ds.HighBit = enc.high_bit
    ds.PixelRepresentation = 0
    vr = "OB" if enc.encapsulated or enc.bits_allocated == 8 else "OW"
    ds["PixelData"] = DataElement(0x7FE00010, vr, enc.pixel_data)
    ds["PixelData"].is_undefined_length = enc.encapsulated


def _values(ds: Dataset, keyword: str) -> list:
    value = ds.get(keyword)
    if value is None or value == "":
        return []
    return list(value) if isinstance(value, MultiValue | list | tuple) else [value]


def _set_lossy(ds: Dataset, source: Dataset, enc: EncodedPixels, where: str) -> None:
    """Carry the lossy compression history over and add this output's step, if lossy.

    Kept here: highdicom has no public helper for this (its ``Image`` copies the source's
    values inline, without appending a new step). Once 01 (lossy) an image and its
    derivatives stay 01 (PS3.3 C.7.6.1.1.5). A source stored in a lossy transfer syntax is
    lossy even when its header does not say so.
    """
    try:
        ratios = [float(v) for v in _values(source, "LossyImageCompressionRatio")]
    except (TypeError, ValueError):
        keyword = "LossyImageCompressionRatio"
        raise InputError(
            where,
            f"{tag_name(keyword)} is {source.get(keyword)!r}, expected numbers",
            tag=tag_name(keyword),
        ) from None
    methods = [str(v) for v in _values(source, "LossyImageCompressionMethod")]
    meta = getattr(source, "file_meta", None)
    src_ts = str(getattr(meta, "TransferSyntaxUID", "") or "") if meta is not None else ""
    src_lossy = str(source.get("LossyImageCompression", "")) == "01" or src_ts in LOSSY_METHODS
    if src_ts in LOSSY_METHODS and len(methods) == len(ratios) - 1:
        methods.append(LOSSY_METHODS[src_ts])  # the source's own step, named by its syntax
    if enc.lossy:
        if enc.lossy_ratio is not None:
            ratios.append(enc.lossy_ratio)
        if enc.lossy_method:
            methods.append(enc.lossy_method)
    if src_lossy or enc.lossy:
        ds.LossyImageCompression = "01"
    elif "LossyImageCompression" in source:
        ds.LossyImageCompression = source.LossyImageCompression
    if ratios:
        ds.LossyImageCompressionRatio = [_ds(r) for r in ratios]
    if methods:
        ds.LossyImageCompressionMethod = methods
    if ratios and methods and len(ratios) != len(methods):
        logger.warning(
            "%s: lossy compression history has %d ratio(s) but %d method(s)",
            where,
            len(ratios),
            len(methods),
        )


def _ds(value: float) -> str:
    """Format a ratio as a Decimal String (at most 16 characters), pydicom's way."""
    return format_number_as_ds(float(value))


def _set_derivation(
    ds: Dataset,
    source: Dataset,
    enc: EncodedPixels,
    provenance: Provenance,
    n: int,
    now: datetime,
) -> None:
    ref = Dataset()
    ref.ReferencedSOPClassUID = source.SOPClassUID
    ref.ReferencedSOPInstanceUID = source.SOPInstanceUID
    src_n = int(source.get("NumberOfFrames") or 1)
    if "NumberOfFrames" in source and n < src_n:
        ref.ReferencedFrameNumber = list(range(1, n + 1)) if n > 1 else 1
    ref.PurposeOfReferenceCodeSequence = [
        hd.sr.CodedConcept.from_code(codes.DCM.SourceImageForImageProcessingOperation)
    ]
    ref.SpatialLocationsPreserved = "NO"
    ds.SourceImageSequence = [ref]

    ds.DerivationDescription = derivation_description(
        provenance, compression=enc.transfer_syntax_uid.name
    )
    derivation = [hd.sr.CodedConcept.from_code(codes.DCM.SpatialResampling)]
    if enc.lossy:
        derivation.append(hd.sr.CodedConcept.from_code(codes.DCM.LossyCompression))
    ds.DerivationCodeSequence = derivation

    items = [_copy_dataset(item) for item in source.get("ContributingEquipmentSequence", [])]
    items.append(contributing_equipment(provenance, now))
    ds.ContributingEquipmentSequence = items
