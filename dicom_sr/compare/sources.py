"""Which derived series belong to which source series: read from output manifests.

``process``, ``listen`` and ``batch`` all record every written instance in
``OUT/manifest.jsonl`` with the source's SOP Instance UID (``source_sop_uid``), the derived
series UID and the output path; that is the link this module follows. Nothing is guessed from
file names or descriptions.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from dicom_sr.dicom.discover import Series
from dicom_sr.dicom.store import MANIFEST_NAME, Manifest
from dicom_sr.errors import InputError

__all__ = ["DerivedInstance", "DerivedSeries", "DerivedIndex", "read_derived", "derived_for"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DerivedInstance:
    """One written derived instance, as the manifest records it."""

    source_sop_uid: str
    series_uid: str
    path: Path
    method: str
    scale: int
    config_hash: str
    pipeline: str


@dataclass
class DerivedSeries:
    """The derived instances of one source series that share a derived series UID, in the
    order of the source's instances (None where an instance has no derived copy)."""

    series_uid: str
    instances: list[DerivedInstance | None] = field(default_factory=list)

    @property
    def first(self) -> DerivedInstance:
        return next(i for i in self.instances if i is not None)

    @property
    def complete(self) -> bool:
        return all(i is not None for i in self.instances)


@dataclass
class DerivedIndex:
    """Derived instances by source SOP Instance UID, from one or more output folders."""

    by_source: dict[str, list[DerivedInstance]] = field(default_factory=dict)
    folders: list[Path] = field(default_factory=list)


#: Where a manifest lies under an output folder: ``process``/``batch`` OUT, ``listen`` OUT.
_MANIFEST_PLACES = (MANIFEST_NAME, f"derived/{MANIFEST_NAME}")


def _manifest_path(out: Path) -> Path:
    if out.is_file() and out.name == MANIFEST_NAME:
        return out
    for place in _MANIFEST_PLACES:
        if (out / place).is_file():
            return out / place
    raise InputError(
        out, f"no {MANIFEST_NAME} here nor in derived/: not an output folder of dicom-sr"
    )


def read_derived(outputs: Iterable[str | os.PathLike[str]]) -> DerivedIndex:
    """Index the written instances of each output folder (or manifest file) by source SOP UID.

    An output folder of ``process`` or ``batch`` holds ``manifest.jsonl``; one of ``listen``
    holds it in ``derived/``. Both are found.

    The latest entry for an output decides (a rewrite after a failure counts); an output
    whose file is gone is left out with a warning. Raises :class:`InputError` naming a folder
    without a manifest.
    """
    index = DerivedIndex()
    for out in outputs:
        manifest_path = _manifest_path(Path(out))
        folder = manifest_path.parent
        index.folders.append(folder)
        latest: dict[str, dict] = {}
        for entry in Manifest(folder).entries():
            if entry.get("output") and entry.get("status") in ("written", "failed"):
                latest[os.path.normpath(entry["output"])] = entry
        for output, entry in latest.items():
            source = entry.get("source_sop_uid")
            if entry.get("status") != "written" or not source:
                continue
            path = Path(folder, output)
            if not path.is_file():
                logger.warning("%s: %s is listed as written but is missing", manifest_path, path)
                continue
            index.by_source.setdefault(str(source), []).append(
                DerivedInstance(
                    source_sop_uid=str(source),
                    series_uid=str(entry.get("series_uid", "")),
                    path=path,
                    method=str(entry.get("method", "")),
                    scale=int(entry.get("scale") or 0),
                    config_hash=str(entry.get("config_hash", "")),
                    pipeline=str(entry.get("pipeline", "")),
                )
            )
    return index


def derived_for(series: Series, index: DerivedIndex) -> list[DerivedSeries]:
    """The derived series of ``series``, in the order they were first found."""
    found: dict[str, DerivedSeries] = {}
    for k, inst in enumerate(series.instances):
        for derived in index.by_source.get(inst.sop_instance_uid, []):
            group = found.setdefault(
                derived.series_uid,
                DerivedSeries(derived.series_uid, [None] * len(series.instances)),
            )
            group.instances[k] = derived
    return list(found.values())
