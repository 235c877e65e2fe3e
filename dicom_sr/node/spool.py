"""Durable receive: each accepted instance is on disk (atomically) before the node says Success.

Layout under the node's ``--out``::

    incoming/<StudyUID>/<SeriesUID>/<SOPUID>.dcm     what was received, as sent (File Meta added)
    quarantine/<time>-<n>.dcm + .txt                 what was refused, with the reason

UIDs become path parts only after :func:`~dicom_sr.dicom.inspection.valid_uid` (non-empty,
:meth:`pydicom.uid.UID.is_valid`, which also caps them at 64 characters). A file is written
to a temporary name in its folder, flushed, renamed over the final name and the folder
flushed, so a crash leaves the whole instance or none of it.
"""

from __future__ import annotations

import errno
import itertools
import logging
import os
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import pydicom
from pydicom.dataelem import RawDataElement

from dicom_sr.dicom.discover import Skipped, inspect_file
from dicom_sr.dicom.inspection import valid_uid
from dicom_sr.dicom.reasons import tag_name
from dicom_sr.errors import InputError, WriteError
from dicom_sr.fsio import write_bytes

__all__ = [
    "Received",
    "SopClassMismatch",
    "Spool",
    "parse",
]

logger = logging.getLogger(__name__)

#: Tells apart quarantined files of one process within one second (their names must differ).
_counter = itertools.count()


class SopClassMismatch(InputError):
    """The data set's SOP Class or Instance UID is not the one of its C-STORE request."""


@dataclass(frozen=True)
class Received:
    """One instance in the spool; ``new`` is False for an identical duplicate."""

    path: Path
    study_uid: str
    series_uid: str
    sop_uid: str
    new: bool
    calling_ae: str = ""


#: pydicom warnings that mean the byte stream is not what its transfer syntax says.
_MALFORMED = ("End of file", "Expected explicit VR", "Expected implicit VR")
_UNDEFINED = 0xFFFFFFFF


def parse(data: bytes, source: str) -> pydicom.Dataset:
    """Parse a Part 10 byte stream strictly; :class:`InputError` "cannot be parsed" otherwise.

    pydicom reads leniently (a value cut short is read as what is there), so its warnings of a
    malformed stream and every top-level element's declared length are checked too.
    """
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ds = pydicom.dcmread(BytesIO(data))
            elements = list(ds.elements())
        bad = [str(w.message) for w in caught if str(w.message).startswith(_MALFORMED)]
        if bad:
            raise InputError(source, f"data set cannot be parsed: {bad[0]}")
        for elem in elements:
            if isinstance(elem, RawDataElement) and elem.length != _UNDEFINED:
                got = len(elem.value or b"")
                if got != elem.length:
                    tag = f"({elem.tag.group:04X},{elem.tag.element:04X})"
                    raise InputError(
                        source,
                        f"data set cannot be parsed: {tag} declares {elem.length} bytes, "
                        f"{got} present",
                        tag=tag,
                    )
        for _ in ds:  # convert every top-level value now, not in the middle of later work
            pass
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - any parse failure means "cannot understand"
        raise InputError(source, f"data set cannot be parsed: {exc}") from None
    return ds


class Spool:
    """The node's durable inbox (``OUT/incoming``) and its quarantine (``OUT/quarantine``)."""

    def __init__(self, out_dir: str | os.PathLike[str], *, max_pixels: int | None = None) -> None:
        self.out_dir = Path(out_dir)
        self.max_pixels = max_pixels
        self.root = self.out_dir / "incoming"
        self.quarantine_dir = self.out_dir / "quarantine"

    def accept(
        self, data: bytes, *, sop_class_uid: str, sop_instance_uid: str, source: str
    ) -> Received:
        """Check one received Part 10 byte stream and spool it; idempotent for duplicates.

        Raises
        ------
        InputError
            The data set cannot be parsed, lacks a valid UID, or cannot be processed
            (the reason from :func:`~dicom_sr.dicom.discover.inspect_file`).
        SopClassMismatch
            Its SOP Class/Instance UID differs from the request's.
        WriteError
            The spool could not be written (``disk_full`` set for ENOSPC/EDQUOT).
        """
        ds = parse(data, source)
        sop_class = valid_uid(ds.get("SOPClassUID"), "SOPClassUID", source)
        sop_uid = valid_uid(ds.get("SOPInstanceUID"), "SOPInstanceUID", source)
        if sop_class != str(sop_class_uid).strip():
            raise SopClassMismatch(
                source,
                f"{tag_name('SOPClassUID')} {sop_class} differs from the request's "
                f"Affected SOP Class UID {sop_class_uid}",
                tag=tag_name("SOPClassUID"),
            )
        if sop_uid != str(sop_instance_uid).strip():
            raise SopClassMismatch(
                source,
                f"{tag_name('SOPInstanceUID')} {sop_uid} differs from the request's "
                f"Affected SOP Instance UID {sop_instance_uid}",
                tag=tag_name("SOPInstanceUID"),
            )
        study = valid_uid(ds.get("StudyInstanceUID"), "StudyInstanceUID", source)
        series = valid_uid(ds.get("SeriesInstanceUID"), "SeriesInstanceUID", source)
        path = self.root / study / series / f"{sop_uid}.dcm"
        try:
            if path.is_file() and path.stat().st_size == len(data):
                if path.read_bytes() == data:
                    return Received(path, study, series, sop_uid, new=False)
            self._write_checked(data, path, source)
        except OSError as exc:
            raise WriteError.from_os_error(path, exc, source=source) from None
        return Received(path, study, series, sop_uid, new=True)

    def _write_checked(self, data: bytes, path: Path, source: str) -> None:
        """Write to a temp name, check the image is processable there, then rename."""

        def processable(tmp: Path) -> None:
            found = inspect_file(tmp, max_pixels=self.max_pixels)
            if isinstance(found, Skipped):
                raise InputError(source, found.reason.replace(str(tmp), "data set"))

        write_bytes(path, data, check=processable)

    def quarantine(self, data: bytes, reason: str) -> Path | None:
        """Keep a refused data set with a ``.txt`` reason beside it; None if that fails too."""
        stem = f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}-{next(_counter)}"
        target = self.quarantine_dir / f"{stem}.dcm"
        try:
            write_bytes(target, data)
            write_bytes(target.with_suffix(".txt"), (reason + "\n").encode("utf-8", "replace"))
        except OSError as exc:
            level = (
                logging.ERROR if exc.errno not in (errno.ENOSPC, errno.EDQUOT) else logging.WARNING
            )
            logger.log(level, "could not quarantine a refused data set: %s", exc)
            return None
        return target

    def series(self) -> Iterator[tuple[str, str, list[Path]]]:
        """Every spooled series as (study UID, series UID, instance paths), for a restart."""
        if not self.root.is_dir():
            return
        for study in sorted(p for p in self.root.iterdir() if p.is_dir()):
            for series in sorted(p for p in study.iterdir() if p.is_dir()):
                paths = sorted(series.glob("*.dcm"))
                if paths:
                    yield study.name, series.name, paths
