"""The node's parts: the SCP handler with a real pynetdicom peer, spool, assembly, forwarding."""

from __future__ import annotations

import errno
import json
import shutil
import socket
import ssl
import subprocess
import urllib.request
from io import BytesIO
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pydicom
import pytest
from conftest import us_file
from pydicom.filebase import DicomBytesIO
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)
from pynetdicom import AE, _config, evt
from pynetdicom.sop_class import CTImageStorage, UltrasoundImageStorage, Verification

from dicom_sr.dicom.discover import US_SOP_CLASSES
from dicom_sr.node.assembly import Assembly
from dicom_sr.node.forward import Destination, parse_destination, retry_delay, send_instances
from dicom_sr.node.health import HealthServer, Metrics
from dicom_sr.node.scp import (
    STATUS_CANNOT_UNDERSTAND,
    STATUS_OUT_OF_RESOURCES,
    STATUS_SOP_CLASS_MISMATCH,
    STATUS_UNUSABLE,
    ScpOptions,
    StoreHandler,
    make_ae,
    server_ssl_context,
)
from dicom_sr.node.spool import Spool

US_MULTIFRAME = "1.2.840.10008.5.1.4.1.1.3.1"


@pytest.fixture
def scp(tmp_path):
    """A US storage SCP (the node's handler and spool) on 127.0.0.1, allowing GOODSCU only."""
    spool = Spool(tmp_path / "node")
    received = []
    ae = make_ae(ScpOptions(ae_title="DICOMSR", allow_ae=("GOODSCU",)))
    handler = StoreHandler(spool, received.append)
    server = ae.start_server(
        ("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, handler)]
    )
    yield SimpleNamespace(port=server.server_address[1], spool=spool, received=received)
    server.shutdown()


def _associate(port: int, calling: str = "GOODSCU", contexts=None):
    ae = AE(ae_title=calling)
    for sop_class in contexts or (*sorted(US_SOP_CLASSES), Verification):
        ae.add_requested_context(sop_class, [ExplicitVRLittleEndian])
    return ae.associate("127.0.0.1", port, ae_title="DICOMSR")


def _send_raw(port: int, path: Path) -> int:
    """C-STORE a Part 10 file byte for byte (its File Meta names the SOP class and UID)."""
    old = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True  # sent from the file, never parsed by the SCU
    try:
        assoc = _associate(port)
        assert assoc.is_established
        status = assoc.send_c_store(path)
        assoc.release()
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = old
    return status.Status


def _raw_file(tmp_path: Path, body: bytes, sop_class=UltrasoundImageStorage) -> Path:
    """A file with valid File Meta and ``body`` as its data set."""
    meta = pydicom.dataset.FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    buf = BytesIO()
    buf.write(b"\0" * 128 + b"DICM")
    pydicom.filewriter.write_file_meta_info(buf, meta)
    path = tmp_path / f"raw-{meta.MediaStorageSOPInstanceUID}.dcm"
    path.write_bytes(buf.getvalue() + body)
    return path


def _explicit_little(ds: pydicom.Dataset, path: Path) -> Path:
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.save_as(path, enforce_file_format=True)
    return path


def _encode(ds: pydicom.Dataset) -> bytes:
    """The data set alone, explicit VR little endian (no File Meta)."""
    buf = DicomBytesIO()
    buf.is_little_endian, buf.is_implicit_VR = True, False
    pydicom.filewriter.write_dataset(buf, ds)
    return buf.getvalue()


@pytest.mark.network
def test_store_is_spooled_and_reads_back_and_a_duplicate_is_idempotent(scp):
    source = us_file("color-px.dcm")
    assoc = _associate(scp.port)
    assert assoc.is_established
    assert assoc.send_c_echo().Status == 0x0000
    assert assoc.send_c_store(pydicom.dcmread(source)).Status == 0x0000
    assert len(scp.received) == 1
    got = scp.received[0]
    mtime = got.path.stat().st_mtime_ns
    assert assoc.send_c_store(pydicom.dcmread(source)).Status == 0x0000  # duplicate
    assoc.release()
    assert len(scp.received) == 1  # not a new arrival
    assert got.path.stat().st_mtime_ns == mtime
    ref = pydicom.dcmread(source)
    back = pydicom.dcmread(got.path)
    assert got.path == (
        scp.spool.root / ref.StudyInstanceUID / ref.SeriesInstanceUID / f"{ref.SOPInstanceUID}.dcm"
    )
    np.testing.assert_array_equal(back.pixel_array, ref.pixel_array)
    assert not list(got.path.parent.glob("*.part"))


@pytest.mark.network
def test_unparseable_data_set_is_refused_quarantined_and_the_node_goes_on(scp, tmp_path):
    # a real data set cut in the middle of its Pixel Data value
    body = _encode(pydicom.dcmread(us_file("color-px.dcm")))[:-1000]
    assert _send_raw(scp.port, _raw_file(tmp_path, body)) == STATUS_CANNOT_UNDERSTAND
    # bytes that are not an explicit VR stream at all
    assert _send_raw(scp.port, _raw_file(tmp_path, b"garbage!" * 10)) == STATUS_CANNOT_UNDERSTAND
    kept = sorted(scp.spool.quarantine_dir.glob("*.txt"))
    assert len(kept) == 2
    reasons = [p.read_text() for p in kept]
    assert all("cannot be parsed" in r for r in reasons)
    assert any("(7FE0,0010) declares" in r for r in reasons)
    assert any(p.with_suffix(".dcm").read_bytes().endswith(body) for p in kept)
    # the node goes on: a good instance right after is stored
    assert _send_raw(scp.port, us_file("color-px.dcm")) == 0x0000
    assert len(scp.received) == 1


@pytest.mark.network
def test_sop_class_mismatch_is_0xA900(scp, tmp_path):
    ds = pydicom.dcmread(us_file("color-px.dcm"))
    path = _raw_file(tmp_path, _encode(ds), sop_class=US_MULTIFRAME)  # the request's class
    assert _send_raw(scp.port, path) == STATUS_SOP_CLASS_MISMATCH
    assert not scp.received
    reason = next(scp.spool.quarantine_dir.glob("*.txt")).read_text()
    assert "SOPClassUID (0008,0016)" in reason


@pytest.mark.network
def test_truncated_pixels_and_bad_uids_are_refused_and_never_become_paths(scp, tmp_path):
    ds = pydicom.dcmread(us_file("color-px.dcm"))
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 2]
    truncated = _explicit_little(ds, tmp_path / "truncated.dcm")
    assert _send_raw(scp.port, truncated) == STATUS_UNUSABLE

    ds = pydicom.dcmread(us_file("color-px.dcm"))
    ds.SeriesInstanceUID = "../../escape"
    bad = _explicit_little(ds, tmp_path / "bad-uid.dcm")
    assert _send_raw(scp.port, bad) == STATUS_UNUSABLE
    reasons = " ".join(p.read_text() for p in scp.spool.quarantine_dir.glob("*.txt"))
    assert "SeriesInstanceUID (0020,000E) is '../../escape'" in reasons
    assert "not a valid UID" in reasons and "truncated" in reasons
    assert not scp.received
    assert not (scp.spool.out_dir.parent / "escape").exists()
    assert not list(scp.spool.root.rglob("*.dcm"))


@pytest.mark.network
def test_disk_full_is_0xA700(scp, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Spool, "_write_checked", full)
    assert _send_raw(scp.port, us_file("color-px.dcm")) == STATUS_OUT_OF_RESOURCES
    assert not scp.received


@pytest.mark.network
def test_calling_ae_not_allowed_is_rejected(scp):
    assoc = _associate(scp.port, calling="INTRUDER")
    assert assoc.is_rejected
    assert not assoc.is_established


@pytest.mark.network
def test_other_sop_classes_are_refused_at_association(scp):
    assoc = _associate(scp.port, contexts=(CTImageStorage, Verification))
    assert assoc.is_established  # Verification is accepted ...
    assert [c.abstract_syntax for c in assoc.accepted_contexts] == [Verification]
    assert CTImageStorage in [c.abstract_syntax for c in assoc.rejected_contexts]
    with pytest.raises(ValueError):  # ... CT storage has no accepted context
        assoc.send_c_store(pydicom.dcmread(pydicom.data.get_testdata_file("CT_small.dcm")))
    assoc.release()


def test_assembly_waits_for_the_series_timeout():
    now = [0.0]
    asm = Assembly(10.0, clock=lambda: now[0])
    asm.arrived("1.2", "1.2.3", Path("a.dcm"))
    now[0] = 6.0
    asm.arrived("1.2", "1.2.3", Path("b.dcm"))
    now[0] = 8.0
    asm.arrived("1.2", "1.2.4", Path("c.dcm"))
    now[0] = 15.0
    assert asm.due() == []  # 9 s since the last instance of 1.2.3
    now[0] = 16.0
    (due,) = asm.due()
    assert (due.series_uid, due.paths) == ("1.2.3", {Path("a.dcm"), Path("b.dcm")})
    assert asm.pending() == 1
    now[0] = 18.0
    assert [a.series_uid for a in asm.due()] == ["1.2.4"]
    assert asm.due() == [] and asm.pending() == 0


def test_destination_and_back_off():
    assert parse_destination("PACS@10.0.0.2:104") == Destination("PACS", "10.0.0.2", 104)
    for bad in ("PACS@host", "@host:104", "THIS_TITLE_IS_TOO_LONG@h:104", "P@h:0"):
        with pytest.raises(ValueError, match="AE@HOST:PORT"):
            parse_destination(bad)
    assert [retry_delay(n, base=5, cap=60) for n in (1, 2, 3, 4, 5)] == [5, 10, 20, 40, 60]


@pytest.mark.network
def test_forward_sends_to_a_real_scp_and_skips_what_was_acknowledged(scp, tmp_path):
    files = []
    for k in range(2):
        ds = pydicom.dcmread(us_file("color-px.dcm"))
        ds.SOPInstanceUID = generate_uid()
        ds.InstanceNumber = k + 1
        files.append(_explicit_little(ds, tmp_path / f"{k}.dcm"))
    dest = Destination("DICOMSR", "127.0.0.1", scp.port)
    first = pydicom.dcmread(files[0]).SOPInstanceUID
    sent = send_instances(files, dest, calling_ae="GOODSCU", already_sent=[first])
    assert sent == [pydicom.dcmread(files[1]).SOPInstanceUID]
    assert [r.sop_uid for r in scp.received] == sent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.network
def test_health_and_metrics_over_http():
    metrics = Metrics()
    metrics.instances_received.inc(3)
    state = {"status": "ok", "jobs": {"queued": 1}}
    server = HealthServer("127.0.0.1", 0, metrics, lambda: state)
    server.start()
    try:
        base = f"http://127.0.0.1:{server.port}"
        with urllib.request.urlopen(f"{base}/health", timeout=5) as r:
            assert r.status == 200 and json.load(r)["jobs"] == {"queued": 1}
        with urllib.request.urlopen(f"{base}/metrics", timeout=5) as r:
            text = r.read().decode()
        assert "dicomsr_instances_received_total 3.0" in text
        assert "dicomsr_queue_depth" in text and "dicomsr_processing_seconds_bucket" in text
        state["status"] = "stopping"
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"{base}/health", timeout=5)
        assert err.value.code == 503
    finally:
        server.stop()


@pytest.fixture
def tls_files(tmp_path):
    """A self-signed certificate for 127.0.0.1 (openssl), used as the CA too."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    cert, key = tmp_path / "node.crt", tmp_path / "node.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.mark.network
def test_tls_association_with_client_certificates(tmp_path, tls_files):
    cert, key = tls_files
    spool = Spool(tmp_path / "node")
    received = []
    ae = make_ae(ScpOptions())
    server = ae.start_server(
        ("127.0.0.1", 0),
        block=False,
        evt_handlers=[(evt.EVT_C_STORE, StoreHandler(spool, received.append))],
        ssl_context=server_ssl_context(str(cert), str(key), str(cert)),
    )
    port = server.server_address[1]
    try:
        client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(cert))
        client.load_cert_chain(str(cert), str(key))
        scu = AE(ae_title="GOODSCU")
        for sop_class in sorted(US_SOP_CLASSES):
            scu.add_requested_context(sop_class, [ExplicitVRLittleEndian])
        assoc = scu.associate("127.0.0.1", port, ae_title="DICOMSR", tls_args=(client, "127.0.0.1"))
        assert assoc.is_established
        assert assoc.send_c_store(pydicom.dcmread(us_file("color-px.dcm"))).Status == 0x0000
        assoc.release()
        assert len(received) == 1
        # without a client certificate the TLS handshake fails: no association
        bare = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(cert))
        assoc = scu.associate("127.0.0.1", port, ae_title="DICOMSR", tls_args=(bare, "127.0.0.1"))
        assert not assoc.is_established
        # and a plain TCP peer gets nothing either
        assoc = scu.associate("127.0.0.1", port, ae_title="DICOMSR")
        assert not assoc.is_established
    finally:
        server.shutdown()


@pytest.mark.network
def test_forward_over_tls_with_a_client_certificate(tmp_path, tls_files):
    from dicom_sr.node.forward import ForwardError, client_ssl_context

    cert, key = tls_files
    received = []
    server = make_ae(ScpOptions()).start_server(
        ("127.0.0.1", 0),
        block=False,
        evt_handlers=[(evt.EVT_C_STORE, StoreHandler(Spool(tmp_path / "pacs"), received.append))],
        ssl_context=server_ssl_context(str(cert), str(key), str(cert)),  # client certs required
    )
    dest = Destination("DICOMSR", "127.0.0.1", server.server_address[1])
    files = []
    for k in range(2):
        ds = pydicom.dcmread(us_file("color-px.dcm"))
        ds.SOPInstanceUID = generate_uid()
        files.append(_explicit_little(ds, tmp_path / f"{k}.dcm"))
    try:
        ctx = client_ssl_context(str(cert), str(cert), str(key))
        sent = send_instances(files[:1], dest, calling_ae="DICOMSR", ssl_context=ctx)
        assert sent == [pydicom.dcmread(files[0]).SOPInstanceUID]
        assert [r.sop_uid for r in received] == sent
        with pytest.raises(ForwardError, match="association"):  # no client certificate
            send_instances(
                files[1:], dest, calling_ae="DICOMSR", ssl_context=client_ssl_context(str(cert))
            )
        with pytest.raises(ForwardError, match="association"):  # no TLS at all
            send_instances(files[1:], dest, calling_ae="DICOMSR")
        assert len(received) == 1
    finally:
        server.shutdown()


@pytest.mark.network
def test_forward_decodes_for_a_peer_that_takes_no_compressed_syntax(tmp_path):
    received = []

    def store(event):
        received.append(event.dataset)
        return 0x0000

    ae = AE(ae_title="PLAINPACS")
    for sop_class in sorted(US_SOP_CLASSES):
        ae.add_supported_context(sop_class, [ExplicitVRLittleEndian])
    server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, store)])
    ds = pydicom.dcmread(us_file("US1_UNCR.dcm"))
    ds.SOPInstanceUID = generate_uid()
    ds.compress(JPEGLSLossless)
    path = tmp_path / "jpegls.dcm"
    ds.save_as(path, enforce_file_format=True)
    try:
        dest = Destination("PLAINPACS", "127.0.0.1", server.server_address[1])
        assert send_instances([path], dest, calling_ae="DICOMSR") == [ds.SOPInstanceUID]
    finally:
        server.shutdown()
    (got,) = received
    got.file_meta = pydicom.dataset.FileMetaDataset()
    got.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    np.testing.assert_array_equal(
        got.pixel_array, pydicom.dcmread(us_file("US1_UNCR.dcm")).pixel_array
    )


def test_a_job_queued_under_another_pipeline_is_queued_again_under_the_nodes(tmp_path):
    from dicom_sr.config import load_pipeline
    from dicom_sr.jobs import JobStore
    from dicom_sr.node.service import Node, NodeOptions
    from dicom_sr.pipeline import derived_series_uid_for

    config = load_pipeline("bmode-default", {"engine.method": "bicubic"})
    node = Node(NodeOptions(out_dir=tmp_path), config)
    store = JobStore(tmp_path)
    store.add("1.2.3.999", kind="listen", study_uid="1.2", source_series_uid="1.2.3",
              config_hash="another", paths=["/spool/a.dcm"])  # fmt: skip
    submitted = []
    node.pool = SimpleNamespace(submit=lambda *args: submitted.append(args) or _Done())
    node._dispatch()
    old = store.get("1.2.3.999")
    assert old.state == "failed" and "queued the series again" in old.error
    key = derived_series_uid_for("1.2.3", config, 0)
    assert [a[0] for a in submitted] == [key]
    new = store.get(key)
    assert (new.state, new.paths, new.config_hash) == (
        "processing",
        ["/spool/a.dcm"],
        node.identity,
    )


class _Done:
    def done(self) -> bool:
        return False


def test_a_series_is_received_then_queued_and_a_restart_assembles_it_again(tmp_path):
    from dicom_sr.config import load_pipeline
    from dicom_sr.jobs import JobStore
    from dicom_sr.node.assembly import Arrivals
    from dicom_sr.node.service import Node, NodeOptions

    config = load_pipeline("bmode-default", {"engine.method": "bicubic"})
    node = Node(NodeOptions(out_dir=tmp_path, series_timeout=3600), config)
    folder = node.spool.root / "1.2" / "1.2.3"
    folder.mkdir(parents=True)
    paths = [folder / f"1.2.3.{k}.dcm" for k in (1, 2)]
    for p in paths:
        p.write_bytes(b"spooled")
    node._on_received(SimpleNamespace(study_uid="1.2", series_uid="1.2.3", path=paths[0]))
    (arr,) = node.assembly.unnoted()
    node._record(arr, "received")
    (job,) = JobStore(tmp_path).jobs()
    assert job.state == "received" and len(job.paths) == 2  # the whole spooled series
    # the node dies; the next one starts the series timeout again from the store
    again = Node(NodeOptions(out_dir=tmp_path, series_timeout=0), config)
    again._recover()
    (due,) = again.assembly.due()
    assert due.paths == set(paths)
    again._record(due, "queued")
    (job,) = JobStore(tmp_path).jobs()
    assert job.state == "queued" and job.revision == 0
    # a resend of what was processed changes nothing
    JobStore(tmp_path).set_state(job.key, "done")
    again._record(Arrivals("1.2", "1.2.3", {paths[1]}), "queued")
    assert [(j.revision, j.state) for j in JobStore(tmp_path).jobs()] == [(0, "done")]
    # a late instance joins the done job when its saved model is there ...
    late = folder / "1.2.3.3.dcm"
    late.write_bytes(b"spooled")
    model = again.upkeep.model_path(job.key)
    model.parent.mkdir(parents=True)
    model.write_bytes(b"model")
    again._record(Arrivals("1.2", "1.2.3", {late}), "queued")
    (job,) = JobStore(tmp_path).jobs()
    assert (job.revision, job.state, len(job.paths)) == (0, "queued", 3)
    # ... and makes a new revision of the whole series when that model is gone
    JobStore(tmp_path).set_state(job.key, "done")
    model.unlink()
    later = folder / "1.2.3.4.dcm"
    later.write_bytes(b"spooled")
    again._record(Arrivals("1.2", "1.2.3", {later}), "queued")
    revs = sorted((j.revision, j.state, len(j.paths)) for j in JobStore(tmp_path).jobs())
    assert revs == [(0, "done", 3), (1, "queued", 4)]


@pytest.mark.network
@pytest.mark.parametrize(
    "syntax, name",
    [
        (DeflatedExplicitVRLittleEndian, "US1_UNCR.dcm"),
        (JPEGLSLossless, "US1_UNCR.dcm"),
        (RLELossless, "US1_UNCR.dcm"),
        (ExplicitVRBigEndian, "ExplVR_BigEnd.dcm"),  # as stored
    ],
    ids=lambda v: UID(v).keyword if v.startswith("1.") else "",
)
def test_other_transfer_syntaxes_are_spooled_as_sent(scp, syntax, name):
    ds = pydicom.dcmread(us_file(name))
    ds.SOPInstanceUID = generate_uid()
    if UID(syntax).is_compressed:
        ds.compress(syntax)
    elif syntax != ds.file_meta.TransferSyntaxUID:
        ds.file_meta.TransferSyntaxUID = syntax
    ae = AE(ae_title="GOODSCU")
    ae.add_requested_context(ds.SOPClassUID, [syntax])
    assoc = ae.associate("127.0.0.1", scp.port, ae_title="DICOMSR")
    assert assoc.is_established
    assert assoc.send_c_store(ds).Status == 0x0000
    assoc.release()
    (got,) = scp.received
    back = pydicom.dcmread(got.path)
    assert back.file_meta.TransferSyntaxUID == syntax
    np.testing.assert_array_equal(back.pixel_array, pydicom.dcmread(us_file(name)).pixel_array)


def test_worker_failures_are_classified_and_a_bug_logs_its_traceback_at_error(tmp_path, caplog):
    from dicom_sr.config import load_pipeline
    from dicom_sr.node.workers import run_series_job

    config = load_pipeline("bmode-default", {"engine.method": "bicubic"})
    src = str(us_file("color-px.dcm"))
    with caplog.at_level("ERROR", logger="dicom_sr.node.workers"):
        bug = run_series_job("1.2.3", [src], None, str(tmp_path), 0)  # a bug of ours: no config
    assert bug["status"] == "failed" and bug["kind"] == "permanent"
    (record,) = [r for r in caplog.records if r.levelname == "ERROR"]
    assert record.exc_info and "AttributeError" in bug["reason"]
    gone = run_series_job("1.2.3", [src], config, str(tmp_path), 0, str(tmp_path / "no.pt"), True)
    assert gone["kind"] == "transient"  # the saved model could not be read: I/O, try again
    empty = run_series_job("1.2.3", [str(tmp_path / "missing.dcm")], config, str(tmp_path), 0)
    assert empty["kind"] == "permanent" and "0 series in the job" in empty["reason"]


def test_a_lost_lease_drops_the_result_and_a_stop_uses_no_attempt(tmp_path):
    from concurrent.futures import Future

    from dicom_sr.config import load_pipeline
    from dicom_sr.jobs import JobStore
    from dicom_sr.node.service import Node, NodeOptions

    config = load_pipeline("bmode-default", {"engine.method": "bicubic"})
    node = Node(NodeOptions(out_dir=tmp_path), config)
    store = JobStore(tmp_path)
    for key in ("1.2.3.1", "1.2.3.2"):
        store.add(key, kind="listen", study_uid="1.2", source_series_uid=key,
                  config_hash=node.identity, paths=["/spool/a.dcm"])  # fmt: skip
    futures = {}

    def submit(key, *args):
        futures[key] = Future()
        return futures[key]

    node.pool = SimpleNamespace(submit=submit)
    node._dispatch()
    assert sorted(futures) == ["1.2.3.1"]  # one worker
    store.connect().execute("UPDATE jobs SET lease_owner = 'other' WHERE key = '1.2.3.1'")
    node._renew()
    futures["1.2.3.1"].set_result({"status": "done", "frames": 1, "failed": []})
    node._collect()
    job = store.get("1.2.3.1")
    assert (job.state, job.lease_owner) == ("processing", "other")  # left to its new owner
    node._dispatch()
    futures["1.2.3.2"].set_result({"status": "cancelled", "reason": "cancelled"})
    node._collect()
    job = store.get("1.2.3.2")
    assert (job.state, job.attempts) == ("queued", 0)  # our own stop: no attempt used


@pytest.mark.slow  # three CycleGAN trainings: about 4 minutes on a loaded 2-core machine
def test_a_late_instance_is_upscaled_by_the_model_saved_for_its_series(tmp_path):
    """The worker saves the series' learned model; a late instance is upscaled by it (same
    pixels as with that model, not those of a model trained afresh), into the same series."""
    from dicom_sr.config import load_pipeline
    from dicom_sr.dicom.discover import discover
    from dicom_sr.engine import load_weights
    from dicom_sr.node.workers import run_series_job
    from dicom_sr.pipeline import derived_series_uid_for, process_series

    config = load_pipeline(
        "bmode-default",
        {"engine.iterations": 8, "engine.ensemble": 1, "engine.cine_ensemble": "same",
         "engine.seed": 1},
    )  # fmt: skip
    series_uid, paths = generate_uid(), []
    for k in range(3):
        ds = pydicom.dcmread(us_file("examples_rgb_color.dcm"))
        ds.SeriesInstanceUID, ds.SOPInstanceUID, ds.InstanceNumber = series_uid, generate_uid(), k
        paths.append(_explicit_little(ds, tmp_path / f"{k}.dcm"))
    key = derived_series_uid_for(series_uid, config)
    out, model = tmp_path / "derived", tmp_path / "models" / f"{key}.pt"
    model.parent.mkdir()
    first = run_series_job(key, list(map(str, paths[:2])), config, str(out), 0, str(model))
    assert first["status"] == "done" and load_weights(model).generator_state is not None
    late = run_series_job(key, [str(paths[2])], config, str(out), 0, str(model), True)
    assert late["status"] == "done" and late["train_seconds"] == 0.0  # nothing trained
    got = pydicom.dcmread(late["written"][0])
    firsts = [pydicom.dcmread(p) for p in first["written"]]
    assert got.SeriesInstanceUID == key == firsts[0].SeriesInstanceUID
    assert got.SOPInstanceUID not in {d.SOPInstanceUID for d in firsts}
    (late_series,) = discover([paths[2]]).series
    with_model = process_series(late_series, config, tmp_path / "a", model=load_weights(model))
    afresh = process_series(late_series, config, tmp_path / "b")  # trained on it alone
    same = pydicom.dcmread(with_model.instances[0].output).pixel_array
    other = pydicom.dcmread(afresh.instances[0].output).pixel_array
    np.testing.assert_array_equal(got.pixel_array, same)
    assert not np.array_equal(got.pixel_array, other)
