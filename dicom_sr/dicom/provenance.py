"""Provenance of a derived image: deterministic UIDs and the text that says how it was made.

UIDs come from :func:`pydicom.uid.generate_uid` with fixed entropy sources, so running the same
configuration on the same source again yields the same Series and SOP Instance UIDs, and the
output file of a finished instance is found where it was left.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import highdicom as hd
from pydicom import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

__all__ = [
    "Provenance",
    "derived_uid",
    "derived_series_uid",
    "derived_sop_uid",
    "derivation_description",
    "contributing_equipment",
    "MANUFACTURER",
]

#: Manufacturer (0008,0070) of the Contributing Equipment item that names this software.
MANUFACTURER = "dicom-sr"

_ST_MAX = 1024  # Short Text: DerivationDescription, ContributionDescription
_LO_MAX = 64  # Long String: SoftwareVersions values


@dataclass(frozen=True)
class Provenance:
    """How a derived image was made, as recorded in its header."""

    method: str
    scale: int
    iterations: int
    pipeline_name: str
    pipeline_version: str
    config_hash: str
    software_version: str
    perceptual: str
    extra: str = ""
    #: > 0: a re-derivation of a source series that grew; the SeriesDescription says which
    revision: int = 0
    #: the scanner prior the model was warm-started from (file name, SHA-256 of its weights)
    prior_file: str = ""
    prior_digest: str = ""


def derived_uid(uid_root: str, *parts: str) -> str:
    """A UID under ``uid_root`` that depends only on ``parts`` (same parts, same UID).

    Examples
    --------
    >>> derived_uid("1.2.826.0.1.3680043.8.498.", "1.2.3", "abc") == derived_uid(
    ...     "1.2.826.0.1.3680043.8.498", "1.2.3", "abc")
    True
    """
    if not parts:
        raise ValueError("derived_uid needs at least one part, else it would not be derived")
    prefix = uid_root if uid_root.endswith(".") else uid_root + "."
    return str(generate_uid(prefix=prefix, entropy_srcs=["dicom-sr", *map(str, parts)]))


def derived_series_uid(
    uid_root: str, source_series_uid: str, identity: str, *, revision: int = 0
) -> str:
    """Series Instance UID of the series derived from one source series.

    ``identity`` is the hash of everything that decides the output pixels (the pipeline's
    ``identity_hash``: configuration, perceptual source and VGG19 digest, device kind), so
    different pixels never share a UID. ``revision`` > 0 makes a new, versioned derived series
    of the same source and configuration (its own UIDs); 0 is the original derivation.
    """
    return derived_uid(uid_root, source_series_uid, identity, *_revision(revision))


def derived_sop_uid(uid_root: str, source_sop_uid: str, identity: str, *, revision: int = 0) -> str:
    """SOP Instance UID of the instance derived from one source instance (see
    :func:`derived_series_uid` for ``identity`` and ``revision``)."""
    return derived_uid(uid_root, source_sop_uid, identity, *_revision(revision))


def _revision(revision: int) -> tuple[str, ...]:
    """Entropy for a revision: none for 0, so UIDs made before revisions existed still hold."""
    if isinstance(revision, bool) or not isinstance(revision, int) or revision < 0:
        raise ValueError(f"revision must be an integer >= 0, got {revision!r}")
    return (f"revision={revision}",) if revision else ()


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."


def derivation_description(
    provenance: Provenance, *, compression: str = "", limit: int = _ST_MAX
) -> str:
    """Human-readable DerivationDescription (ST, at most 1024 characters)."""
    p = provenance
    parts = [
        f"Super-resolution x{p.scale} by {MANUFACTURER} {p.software_version}",
        f"method {p.method}",
        f"iterations {p.iterations}",
        f"perceptual loss {p.perceptual or 'off'}",
        f"pipeline {p.pipeline_name} v{p.pipeline_version} config {p.config_hash}",
    ]
    if p.prior_digest:
        parts.append(f"prior {p.prior_file} sha256 {p.prior_digest}")
    if compression:
        parts.append(f"output {compression}")
    if p.extra:
        parts.append(p.extra)
    return _clip("; ".join(parts), limit)


def software_versions(provenance: Provenance) -> list[str]:
    """SoftwareVersions values (LO, 64 characters each)."""
    p = provenance
    return [
        _clip(f"{MANUFACTURER} {p.software_version}", _LO_MAX),
        _clip(f"pipeline {p.pipeline_name} {p.pipeline_version} {p.config_hash}", _LO_MAX),
    ]


def contributing_equipment(provenance: Provenance, when: datetime | None = None) -> Dataset:
    """One Contributing Equipment Sequence item naming dicom-sr as Processing Equipment."""
    when = when or datetime.now(UTC)
    return hd.ContributingEquipment(
        manufacturer=MANUFACTURER,
        purpose_of_reference=codes.DCM.ProcessingEquipment,
        manufacturer_model_name=MANUFACTURER,
        software_versions=software_versions(provenance),
        contribution_datetime=when,
        contribution_description=_clip(
            f"Spatial resampling x{provenance.scale} (super-resolution, "
            f"method {provenance.method})",
            _ST_MAX,
        ),
    )
