"""The SCP side of the node: presentation contexts, TLS, and the C-STORE handler.

Built on pynetdicom's event handlers (see ``pynetdicom/apps/storescp``): the handler is a plain
callable bound to ``EVT_C_STORE``, returns a status and never lets an exception escape. Only
the ultrasound image storage SOP classes (and Verification) are offered, so a request for any
other SOP class is refused at association time (its presentation context is rejected).
"""

from __future__ import annotations

import dataclasses
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass

from pydicom import Dataset
from pydicom.uid import (
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from pynetdicom import AE, evt
from pynetdicom.service_class import StorageServiceClass
from pynetdicom.sop_class import Verification, register_uid, uid_to_service_class

from dicom_sr.dicom.discover import US_SOP_CLASSES
from dicom_sr.errors import InputError, WriteError, describe
from dicom_sr.node.spool import Received, SopClassMismatch, Spool

__all__ = [
    "TRANSFER_SYNTAXES",
    "STATUS_SUCCESS",
    "STATUS_OUT_OF_RESOURCES",
    "STATUS_SOP_CLASS_MISMATCH",
    "STATUS_CANNOT_UNDERSTAND",
    "STATUS_UNUSABLE",
    "STATUS_INTERNAL",
    "ScpOptions",
    "StoreHandler",
    "AssociationGate",
    "refusal",
    "make_ae",
    "server_ssl_context",
]

logger = logging.getLogger(__name__)

#: Every transfer syntax ``process`` decodes, uncompressed ones first (the preferred order).
TRANSFER_SYNTAXES: tuple[str, ...] = (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    ExplicitVRBigEndian,
    DeflatedExplicitVRLittleEndian,
    RLELossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    JPEG2000Lossless,
    JPEG2000,
)

STATUS_SUCCESS = 0x0000
#: Out of resources: the spool's disk is full.
STATUS_OUT_OF_RESOURCES = 0xA700
#: Data set does not match SOP class (or its SOP Instance UID is not the request's).
STATUS_SOP_CLASS_MISMATCH = 0xA900
#: Cannot understand: the data set does not parse.
STATUS_CANNOT_UNDERSTAND = 0xC210
#: Cannot understand: it parses but cannot be processed (bad UID, truncated pixels...).
STATUS_UNUSABLE = 0xC211
#: Cannot understand: the node failed on it for another reason (see the node's log).
STATUS_INTERNAL = 0xC2FF


@dataclass(frozen=True)
class ScpOptions:
    """How the SCP presents itself on the network."""

    ae_title: str = "DICOMSR"
    allow_ae: tuple[str, ...] = ()
    max_pdu: int = 16382
    max_associations: int = 10
    network_timeout: float = 60.0


#: The retired US storage classes, which pynetdicom knows no service class for.
_RETIRED_US = {
    "1.2.840.10008.5.1.4.1.1.6": "UltrasoundImageStorageRetired",
    "1.2.840.10008.5.1.4.1.1.3": "UltrasoundMultiFrameImageStorageRetired",
}


def _register_retired_us() -> None:
    """Bind the retired US classes to pynetdicom's Storage service (once per process)."""
    for uid, keyword in _RETIRED_US.items():
        if uid_to_service_class(uid) is not StorageServiceClass:
            register_uid(uid, keyword, StorageServiceClass)


def make_ae(options: ScpOptions) -> AE:
    """An AE offering Verification and US storage in :data:`TRANSFER_SYNTAXES`, nothing else."""
    _register_retired_us()
    ae = AE(ae_title=options.ae_title)
    ae.add_supported_context(Verification, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    for sop_class in sorted(US_SOP_CLASSES):
        ae.add_supported_context(sop_class, list(TRANSFER_SYNTAXES))
    ae.maximum_pdu_size = options.max_pdu
    ae.maximum_associations = options.max_associations
    ae.network_timeout = options.network_timeout
    if options.allow_ae:  # any other calling AE title: association rejected (permanent)
        ae.require_calling_aet = list(options.allow_ae)
    return ae


def server_ssl_context(cert: str, key: str, ca: str | None = None) -> ssl.SSLContext:
    """A TLS server context; with ``ca``, peers must present a certificate signed by it."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(certfile=cert, keyfile=key)
    if ca:
        ctx.load_verify_locations(cafile=ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def refusal(status: int, reason: str) -> Dataset:
    """A DIMSE status with an ErrorComment (0000,0902) saying why (LO: at most 64 characters)."""
    rsp = Dataset()
    rsp.Status = status
    text = " ".join(reason.split())
    rsp.ErrorComment = text if len(text) <= 64 else text[:61] + "..."
    return rsp


class StoreHandler:
    """``EVT_C_STORE``: spool the instance durably, then answer; pass new ones on.

    ``guard(nbytes)`` is asked first and may return a reason to refuse with 0xA700 before
    anything is written (the disk is below ``--min-free``). ``on_duplicate`` hears of
    instances already spooled (a resend: the node re-queues a failed series for it). Every
    refusal carries an ErrorComment with its reason.
    """

    def __init__(
        self,
        spool: Spool,
        on_received: Callable[[Received], None],
        on_refused: Callable[[int], None] | None = None,
        *,
        guard: Callable[[int], str | None] | None = None,
        on_duplicate: Callable[[Received], None] | None = None,
    ) -> None:
        self.spool = spool
        self.on_received = on_received
        self.on_refused = on_refused
        self.guard = guard
        self.on_duplicate = on_duplicate

    def __call__(self, event: evt.Event) -> int | Dataset:
        """Return the DIMSE status; never raises (pynetdicom's handler contract)."""
        data = b""
        calling = ""
        try:
            req = event.request
            peer = event.assoc.requestor
            calling = str(peer.ae_title).strip()
            source = f"C-STORE from {peer.ae_title}@{peer.address} (message {req.MessageID})"
            data = event.encoded_dataset(include_meta=True)
            low = self.guard(len(data)) if self.guard else None
            if low:
                return self._refuse(STATUS_OUT_OF_RESOURCES, data, low, keep=False)
            got = self.spool.accept(
                data,
                sop_class_uid=str(req.AffectedSOPClassUID),
                sop_instance_uid=str(req.AffectedSOPInstanceUID),
                source=source,
            )
            got = dataclasses.replace(got, calling_ae=calling)
        except SopClassMismatch as exc:
            return self._refuse(STATUS_SOP_CLASS_MISMATCH, data, describe(exc), exc.reason)
        except InputError as exc:
            unparsed = "cannot be parsed" in exc.reason
            status = STATUS_CANNOT_UNDERSTAND if unparsed else STATUS_UNUSABLE
            return self._refuse(status, data, describe(exc), exc.reason)
        except WriteError as exc:
            status = STATUS_OUT_OF_RESOURCES if exc.disk_full else STATUS_INTERNAL
            logger.error("spool write failed: %s", exc)
            return self._refuse(status, data, describe(exc), exc.reason, keep=not exc.disk_full)
        except Exception as exc:  # noqa: BLE001 - a handler never lets an exception escape
            logger.debug("C-STORE handler failed", exc_info=True)
            return self._refuse(STATUS_INTERNAL, data, describe(exc))
        series = got.series_uid[-8:]
        notify = self.on_received if got.new else self.on_duplicate
        if got.new:
            logger.info("series ..%s: received instance ..%s", series, got.sop_uid[-8:])
        else:
            logger.info("series ..%s: duplicate instance ..%s", series, got.sop_uid[-8:])
        try:
            if notify is not None:
                notify(got)
        except Exception:  # noqa: BLE001 - it is on disk: a restart will pick it up
            logger.exception("series ..%s: could not queue instance ..%s", series, got.sop_uid[-8:])
        return STATUS_SUCCESS

    def _refuse(
        self, status: int, data: bytes, reason: str, comment: str = "", *, keep: bool = True
    ) -> Dataset:
        """Log, count and quarantine (``keep``) a refusal; the status with ``comment`` (or the
        reason) as its ErrorComment."""
        try:
            where = self.spool.quarantine(data, reason) if keep and data else None
            logger.warning(
                "refused with 0x%04X: %s%s", status, reason, f" (kept as {where})" if where else ""
            )
            if self.on_refused:
                self.on_refused(status)
        except Exception:  # noqa: BLE001 - never escape, even while refusing
            logger.debug("refusal bookkeeping failed", exc_info=True)
        return refusal(status, comment or reason)


class AssociationGate:
    """``EVT_REQUESTED`` and ``EVT_REJECTED``: refuse new associations while ``closed()``
    gives a reason (A-ASSOCIATE-RJ, transient, local limit exceeded: the sender retries
    later), and count every rejection by reason."""

    def __init__(
        self,
        options: ScpOptions,
        closed: Callable[[], str | None],
        on_rejected: Callable[[str], None],
    ) -> None:
        self.options = options
        self.closed = closed
        self.on_rejected = on_rejected

    def requested(self, event: evt.Event) -> None:
        try:
            why = self.closed()
            if why:
                assoc = event.assoc
                calling = str(getattr(assoc.requestor.primitive, "calling_ae_title", "")).strip()
                logger.warning(
                    "association from %s@%s rejected: %s", calling, assoc.requestor.address, why
                )
                assoc.acse.send_reject(0x02, 0x03, 0x02)
                self.on_rejected("disk_low")
                assoc.kill()  # as pynetdicom does after its own rejections: the RJ goes out
        except Exception:  # noqa: BLE001
            logger.debug("association gate failed", exc_info=True)

    def rejected(self, event: evt.Event) -> None:
        """pynetdicom rejected it: say why (it only logs "Rejecting Association")."""
        try:
            assoc = event.assoc
            peer = assoc.requestor
            calling = str(peer.ae_title).strip()
            if self.options.allow_ae and calling not in self.options.allow_ae:
                reason = "calling_ae_not_allowed"
            elif len([a for a in assoc.ae.active_associations if a.is_acceptor]) > (
                assoc.ae.maximum_associations
            ):
                reason = "too_many_associations"
            else:
                reason = "other"
            logger.warning("association from %s@%s rejected: %s", calling, peer.address, reason)
            self.on_rejected(reason)
        except Exception:  # noqa: BLE001
            logger.debug("rejection bookkeeping failed", exc_info=True)


def log_association(event: evt.Event) -> None:
    """``EVT_ACCEPTED`` / ``EVT_RELEASED`` / ``EVT_ABORTED``: one line each."""
    try:
        peer = event.assoc.requestor
        logger.info("association %s: %s@%s", event.event.name, peer.ae_title, peer.address)
    except Exception:  # noqa: BLE001
        logger.debug("association log failed", exc_info=True)
