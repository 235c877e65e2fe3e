"""Find the ultrasound series to process among files, folders and DICOMDIRs.

:func:`iter_inspected` walks lazily (``os.scandir``, sorted per folder, depth first), so
planning over a hundred thousand files never holds a list of them, and inspects each file
once (:mod:`.inspection`: headers only); :func:`discover` groups what it yields into series.
A DICOMDIR is expanded record by record: a record whose file is missing, or outside the
DICOMDIR's folder, is one :class:`Skipped`, and the other records are still processed.
Anything that cannot be processed becomes a :class:`Skipped` with its path and a plain
reason naming the tag; one bad file never stops discovery and inputs are never written to.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pydicom

from dicom_sr.dicom.inspection import US_SOP_CLASSES, Instance, Skipped, inspect, inspect_file
from dicom_sr.dicom.reasons import brief

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

_MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"


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
        return meta.get("MediaStorageSOPClassUID") == _MEDIA_STORAGE_DIRECTORY
    except Exception:  # noqa: BLE001 - not readable as a DICOMDIR: inspection says why
        return False


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
