"""One SQLite job store (``OUT/jobs.sqlite3``) shared by ``listen`` and ``batch``.

A job is one source series processed with one pipeline: its key is the derived series UID
(computed by the caller with :func:`dicom_sr.pipeline.derived_series_uid_for`). States::

    received -> queued -> processing -> done | failed ;  done -> forwarded   (node only)

``batch`` calls ``queued`` "planned" and ``processing`` "running" (:data:`BATCH_LABELS`).

Why SQLite: WAL journaling with ``synchronous=FULL`` makes every committed state change survive
a SIGKILL or a power cut, readers never block the writer, and ``BEGIN IMMEDIATE`` makes a claim
atomic across threads and processes. Each thread (and each process, after a fork) gets its own
connection; every state change is one short transaction.

A worker *claims* a job with a lease (``lease_owner``, ``lease_expires``) and renews it while it
runs. A job whose lease expired, or whose owner is a dead process on this host, can be claimed
again by anyone: a worker that died releases its series. Each claim counts an attempt; a stop
the owner caused itself gives it back (:meth:`JobStore.release` with ``refund``), and a
transient failure puts the job back with a ``not_before`` time (back-off).

The package: :mod:`dicom_sr.jobs.model` (the :class:`Job` row, states, lease owners),
:mod:`dicom_sr.jobs.store` (:class:`JobStore`, the SQLite side) and
:mod:`dicom_sr.jobs.forwards` (:class:`Forwards`: what each destination of a node was sent).
Import from here.
"""

from __future__ import annotations

from dicom_sr.jobs.forwards import Forward, Forwards
from dicom_sr.jobs.model import (
    BATCH_LABELS,
    STATES,
    Job,
    Kind,
    State,
    make_owner,
    owner_is_dead,
)
from dicom_sr.jobs.store import STORE_NAME, JobStore

__all__ = [
    "STATES",
    "BATCH_LABELS",
    "STORE_NAME",
    "Forward",
    "Forwards",
    "Job",
    "JobStore",
    "Kind",
    "State",
    "make_owner",
    "owner_is_dead",
]
