"""Where DICOM meets the engine: one series in, one derived series out.

:func:`process_series` is the seam every front end shares (``process``, ``listen``, ``batch``,
``evaluate``): it holds no global state, never prints, reports progress through a callback and
never raises for one bad input or one failed write (see :mod:`dicom_sr.errors`). Frames stream
through it one at a time: decoded, split into tissue regions (super-resolved by the engine) and
the rest (pixel replication, which invents nothing), encoded, written.

Modules: :mod:`~dicom_sr.pipeline.results` (what a run reports), :mod:`~dicom_sr.pipeline.frames`
(training crops and one frame's super-resolution), :mod:`~dicom_sr.pipeline.series` (the seam).
"""

from dicom_sr.pipeline.frames import MIN_TRAIN_SIDE, train_series
from dicom_sr.pipeline.results import (
    CancelCheck,
    InstanceResult,
    ProgressCallback,
    ProgressEvent,
    RunResult,
    SeriesResult,
)
from dicom_sr.pipeline.series import (
    derived_series_uid_for,
    identity_hash,
    process_inputs,
    process_series,
)

__all__ = [
    "MIN_TRAIN_SIDE",
    "CancelCheck",
    "InstanceResult",
    "ProgressCallback",
    "ProgressEvent",
    "RunResult",
    "SeriesResult",
    "derived_series_uid_for",
    "identity_hash",
    "process_inputs",
    "process_series",
    "train_series",
]
