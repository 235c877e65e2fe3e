"""Send derived series on (``--forward AE@HOST:PORT``) as a C-STORE SCU, with back-off.

One association per attempt carries every instance not yet acknowledged; an instance the peer
acknowledged is never sent again, so a retry after a partial failure sends only the rest. A
file is sent as stored when the peer accepts its transfer syntax, and decoded (lossless
compression only: nothing changes in the pixels) when the peer accepts it uncompressed only.
"""

from __future__ import annotations

import logging
import os
import re
import ssl
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE

from dicom_sr.errors import Transient

__all__ = [
    "Destination",
    "ForwardError",
    "client_ssl_context",
    "parse_destination",
    "retry_delay",
    "send_instances",
]

logger = logging.getLogger(__name__)

_DEST = re.compile(r"^(?P<ae>[^@]{1,16})@(?P<host>\[[^\]]+\]|[^:]+):(?P<port>\d{1,5})$")


class ForwardError(Transient):
    """This attempt to forward failed; what was acknowledged so far is in ``sent``."""

    def __init__(self, message: str, sent: list[str]):
        super().__init__(message)
        self.sent = sent


@dataclass(frozen=True)
class Destination:
    """A C-STORE SCP: called AE title, host and port."""

    ae_title: str
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


def parse_destination(text: str) -> Destination:
    """``AE@HOST:PORT`` as a :class:`Destination`; ValueError says what was expected."""
    m = _DEST.match(text.strip())
    if not m or not 0 < int(m["port"]) < 65536 or not m["ae"].strip():
        raise ValueError(f"{text!r} is not AE@HOST:PORT (AE title of 1-16 characters)")
    return Destination(m["ae"].strip(), m["host"].strip("[]"), int(m["port"]))


def client_ssl_context(
    ca: str | None = None, cert: str | None = None, key: str | None = None
) -> ssl.SSLContext:
    """A TLS client context for the destinations: the server is verified against ``ca`` (the
    system's CAs without it) and its name checked; ``cert``/``key``: our client certificate."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert:
        ctx.load_cert_chain(certfile=cert, keyfile=key)
    return ctx


def retry_delay(attempt: int, *, base: float, cap: float) -> float:
    """Seconds before retry number ``attempt`` (1, 2, ...): ``base * 2**(attempt-1)``, capped."""
    return min(cap, base * 2 ** max(0, attempt - 1))


def _as_accepted(assoc, path: Path, ds: pydicom.Dataset) -> Path | pydicom.Dataset:
    """The file itself when the peer accepted its transfer syntax (sent as stored, never
    decoded); otherwise it decoded, for an uncompressed context (as ``dcmsend`` does with a
    lossless file that a peer does not take compressed)."""
    syntax = str(ds.file_meta.TransferSyntaxUID)
    sop_class = str(ds.SOPClassUID)
    accepted = {
        str(cx.transfer_syntax[0])
        for cx in assoc.accepted_contexts
        if str(cx.abstract_syntax) == sop_class
    }
    if syntax in accepted or not accepted:
        return path  # (none accepted: pynetdicom's own error names the SOP class)
    full = pydicom.dcmread(path)
    full.decompress()
    logger.debug("%s: peer does not accept %s; sent decoded", path.name, syntax)
    return full


def send_instances(
    paths: Iterable[str | os.PathLike[str]],
    dest: Destination,
    *,
    calling_ae: str,
    already_sent: Iterable[str] = (),
    ssl_context: ssl.SSLContext | None = None,
    timeout: float = 30.0,
    on_sent: Callable[[str], None] | None = None,
) -> list[str]:
    """C-STORE the instances at ``paths`` not in ``already_sent`` (SOP Instance UIDs).

    Returns the SOP Instance UIDs the peer acknowledged, all of them. Raises
    :class:`ForwardError` (with the ones acknowledged before it) when the association cannot
    be made or an instance is refused.
    """
    done = set(already_sent)
    todo: list[tuple[Path, pydicom.Dataset]] = []
    for path in paths:
        if Path(path).stem in done:  # named <SOPInstanceUID>.dcm: sent (and maybe deleted since)
            continue
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        if str(ds.SOPInstanceUID) not in done:
            todo.append((Path(path), ds))
    sent: list[str] = []
    if not todo:
        return sent
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    ae.connection_timeout = timeout  # a host that drops packets must not hang the forwarder
    contexts: dict[str, set[str]] = {}
    for _, ds in todo:
        syntaxes = contexts.setdefault(str(ds.SOPClassUID), set())
        syntaxes.add(str(ds.file_meta.TransferSyntaxUID))
    for sop_class, syntaxes in contexts.items():
        for syntax in syntaxes:  # one context per syntax: the peer may accept only some
            ae.add_requested_context(sop_class, [syntax])
        ae.add_requested_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    tls = (ssl_context, dest.host) if ssl_context is not None else None
    assoc = ae.associate(dest.host, dest.port, ae_title=dest.ae_title, tls_args=tls)
    if not assoc.is_established:
        why = "rejected" if assoc.is_rejected else "aborted" if assoc.is_aborted else "no answer"
        raise ForwardError(f"association with {dest} failed ({why})", sent)
    try:
        for path, ds in todo:
            status = assoc.send_c_store(_as_accepted(assoc, path, ds))
            code = getattr(status, "Status", None)
            if code is None:
                raise ForwardError(f"{dest}: no answer to C-STORE of {path.name}", sent)
            if code != 0x0000 and not 0xB000 <= code <= 0xBFFF:
                comment = getattr(status, "ErrorComment", "") or ""
                why = f" ({comment})" if comment else ""
                raise ForwardError(f"{dest} refused {path.name}: status 0x{code:04X}{why}", sent)
            sent.append(str(ds.SOPInstanceUID))
            if on_sent:
                on_sent(str(ds.SOPInstanceUID))
    except ForwardError:
        raise
    except Exception as exc:  # noqa: BLE001 - a dropped link, an unencodable file...
        raise ForwardError(f"{dest}: {type(exc).__name__}: {exc}", sent) from None
    finally:
        if assoc.is_established:
            assoc.release()
    return sent
