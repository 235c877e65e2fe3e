"""``dicom-sr listen`` as a long-running service, with real peers on 127.0.0.1: attempts that
survive restarts, the operator's verbs, several destinations, health that sees trouble,
retention and the free-disk guard."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pydicom
import pytest
from conftest import us_file
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import UltrasoundImageStorage
from test_node_peers import Node, StoreScp, check_derived, free_port, make_study, run, wait_for

from dicom_sr.jobs import Forwards, JobStore

pytestmark = pytest.mark.network


@pytest.fixture
def peers():
    started: list = []
    yield started
    for peer in reversed(started):
        if isinstance(peer, Node) and peer.proc and peer.proc.poll() is None:
            peer.proc.kill()
            peer.proc.wait(10)
        elif isinstance(peer, StoreScp) and peer.proc.poll() is None:
            peer.stop()


def storescu(node: Node, *files: Path) -> None:
    sent = run("storescu", "-aec", "DICOMSR", "127.0.0.1", node.port, *files)
    assert sent.returncode == 0, sent.stderr


def jobs_cli(*args: str) -> subprocess.CompletedProcess:
    """``dicom-sr jobs ...`` in its own process, as an operator runs it beside the node."""
    cmd = [sys.executable, "-c", "from dicom_sr.cli import main; main()", "jobs", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def http(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def metric(port: int, name: str) -> float | None:
    """The value of one sample (``name`` with its labels, as exposed) or None."""
    for line in http(port, "/metrics")[1].splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return None


def count(log: Path, text: str) -> int:
    return log.read_text().count(text) if log.exists() else 0


def test_three_sigterms_during_one_series_then_it_completes_and_is_forwarded_once(tmp_path, peers):
    # 30 instances: ibp writes several a second on an idle machine, and each stop must land
    # while the series is still running
    study = make_study(tmp_path / "study", 30)
    dest = StoreScp(tmp_path / "pacs")
    node = Node(tmp_path / "node", "--method", "ibp", "--forward", dest.dest)
    peers += [dest, node]
    for k in range(3):  # as three `systemctl restart` in the middle of the series would
        node.start()
        if k == 0:
            storescu(node, *study)
        before = count(node.log, ": wrote ")
        wait_for(lambda b=before: count(node.log, ": wrote ") > b, 180, "an instance", node.log)
        assert node.stop() == 0
        (job,) = node.jobs()
        assert job.state == "queued", job
        assert job.attempts == 0  # a stop the node caused uses no attempt
    assert count(node.log, "cancelled, back to the queue") == 3
    node.start()
    wait_for(lambda: {j.state for j in node.jobs()} == {"forwarded"}, 300, "forwarded", node.log)
    got = dest.received()
    assert len(got) == len(study)  # every instance exactly once (storescp +uf: one file each)
    assert len({d.SeriesInstanceUID for d in got}) == 1
    check_derived(got, study)
    assert node.stop() == 0


def test_failed_series_comes_back_with_jobs_retry_or_a_resend(tmp_path, peers):
    dest = StoreScp(tmp_path / "pacs")
    health = free_port()
    out = tmp_path / "node"
    out.mkdir()
    (out / "derived").write_text("not a folder")  # every output write fails: series fail
    node = Node(out, "--forward", dest.dest, "--health-port", str(health)).start()
    peers += [dest, node]
    first, second = make_study(tmp_path / "a", 1), make_study(tmp_path / "b", 1)
    storescu(node, *first, *second)
    wait_for(lambda: [j.state for j in node.jobs()] == ["failed"] * 2, 120, "failures", node.log)
    wait_for(lambda: metric(health, "dicomsr_series_failed_total") == 2.0, 10, "the counter")
    assert "failed:" in node.log.read_text() and "ERROR" in node.log.read_text()
    (out / "derived").unlink()  # the operator fixes the disk ...

    listed = json.loads(jobs_cli("--out", str(out), "--json").stdout)
    by_source = {j["source_series_uid"]: j for j in listed}
    row = by_source[pydicom.dcmread(first[0]).SeriesInstanceUID]
    assert row["state"] == "failed" and row["calling_ae"] == "STORESCU" and row["error"]
    assert row["identity"] and row["destinations"] == []
    res = jobs_cli("retry", "--out", str(out), row["key"][-12:], "--json")  # ... retries one
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["retried"] == [row["key"]]
    wait_for(lambda: len(dest.received()) == 1, 120, "the retried series", node.log)

    storescu(node, *second)  # ... and the sender sends the other one again
    wait_for(lambda: {j.state for j in node.jobs()} == {"forwarded"}, 120, "both", node.log)
    got = dest.received()
    assert len(got) == 2
    check_derived(got, [*first, *second])
    table = jobs_cli("--out", str(out))
    assert table.returncode == 0 and "STORESCP@127.0.0.1" in table.stdout
    res = jobs_cli("forget", "--out", str(out), row["key"], "--json")
    assert json.loads(res.stdout)["forgotten"] == [row["key"]]
    assert len(node.jobs()) == 1
    assert node.stop() == 0


def test_two_destinations_one_down_each_gets_every_series_once(tmp_path, peers):
    up = StoreScp(tmp_path / "up")
    down_port, health = free_port(), free_port()
    down_dest = f"STORESCP@127.0.0.1:{down_port}"
    node = Node(
        tmp_path / "node",
        "--forward", up.dest, "--forward", down_dest,
        "--forward-retry", "0.5", "--forward-retry-max", "3600", "--forward-alert", "1",
        "--health-port", str(health),
    ).start()  # fmt: skip
    peers += [up, node]
    studies = [make_study(tmp_path / f"s{k}", 1) for k in range(2)]
    for study in studies:
        storescu(node, *study)
    wait_for(lambda: len(up.received()) == 2, 120, "the destination that is up", node.log)
    backlog = f'dicomsr_forward_backlog{{destination="{down_dest}"}}'
    wait_for(lambda: metric(health, backlog) == 2.0, 60, "the backlog", node.log)
    up_backlog = f'dicomsr_forward_backlog{{destination="{up.dest}"}}'
    wait_for(lambda: metric(health, up_backlog) == 0.0, 30, "no backlog where it is up")
    wait_for(lambda: http(health, "/health")[0] == 503, 60, "health 503", node.log)
    reasons = json.loads(http(health, "/health")[1])["problems"]
    assert [(p["reason"], p["destination"]) for p in reasons] == [("forward_failing", down_dest)]
    assert metric(health, "dicomsr_forward_oldest_seconds") > 0
    assert {j.state for j in node.jobs()} == {"done"}  # not forwarded until both have it

    down = StoreScp(tmp_path / "down", down_port)
    peers.append(down)
    os.kill(node.proc.pid, signal.SIGHUP)  # the destination is back: retry now, no back-off
    wait_for(lambda: {j.state for j in node.jobs()} == {"forwarded"}, 60, "both sent", node.log)
    assert "SIGHUP received" in node.log.read_text()
    wait_for(lambda: http(health, "/health")[0] == 200, 30, "health 200", node.log)
    wait_for(lambda: metric(health, backlog) == 0.0, 30, "the backlog to fall")
    wait_for(lambda: metric(health, "dicomsr_forward_oldest_seconds") == 0.0, 30, "oldest 0")
    assert metric(health, f'dicomsr_forward_failures_total{{destination="{down_dest}"}}') >= 1
    for peer in (up, down):
        got = peer.received()
        assert len(got) == 2  # each series exactly once at each destination
        check_derived(got, [p for s in studies for p in s])
    for job in node.jobs():
        assert {f.destination: f.state for f in Forwards(JobStore(node.out)).of(job.key)} == {
            up.dest: "sent",
            down_dest: "sent",
        }
    assert node.stop() == 0


def test_retention_deletes_files_of_forwarded_jobs_and_keeps_their_rows(tmp_path, peers):
    dest = StoreScp(tmp_path / "pacs")
    out = tmp_path / "node"
    node = Node(out, "--forward", dest.dest, "--retention", "10s").start()
    peers += [dest, node]
    study = make_study(tmp_path / "study", 2)
    storescu(node, *study)
    wait_for(lambda: len(dest.received()) == 2, 120, "forwarded", node.log)
    assert list(out.rglob("*.dcm"))

    def files() -> list[Path]:
        return [*out.glob("incoming/**/*.dcm"), *out.glob("derived/**/*.dcm")]

    wait_for(lambda: not files(), 60, "retention to delete the files", node.log)
    assert not list(out.glob("models/*"))
    (job,) = node.jobs()
    assert job.state == "forwarded" and job.purged is not None and len(job.paths) == 2
    listed = json.loads(jobs_cli("--out", str(out), "--json").stdout)
    assert [j["key"] for j in listed] == [job.key]
    # the same series sent again: already processed, so its spooled copies do not stay for ever
    storescu(node, *study)
    wait_for(lambda: "sent again after retention" in node.log.read_text(), 60, "resend", node.log)
    wait_for(lambda: not files(), 30, "the resent copies deleted", node.log)
    assert [j.key for j in node.jobs()] == [job.key] and len(dest.received()) == 2
    # ... unless the operator forgets the job first: then the resend is processed anew
    assert jobs_cli("--out", str(out), "forget", job.key).returncode == 0
    storescu(node, *study)
    wait_for(lambda: len(dest.received()) == 4, 120, "processed and forwarded anew", node.log)
    assert node.stop() == 0


@pytest.fixture
def small_disk(tmp_path):
    """A 20 MiB tmpfs (root only); skipped where mounting is not permitted."""
    where = tmp_path / "disk"
    where.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=20m", "tmpfs", str(where)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {mounted.stderr.decode().strip()}")
    yield where
    subprocess.run(["umount", "-l", str(where)], check=False)


def test_min_free_answers_a700_before_any_write_fails_and_loses_nothing(
    tmp_path, peers, small_disk
):
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * (6 << 20))
    out, health = small_disk / "node", free_port()
    node = Node(
        out, "--min-free", "8M", "--health-port", str(health), timeout=3600
    ).start()  # no processing: the spool alone fills the disk
    peers.append(node)
    ae = AE(ae_title="STORESCU")
    ae.add_requested_context(UltrasoundImageStorage, [ExplicitVRLittleEndian])
    assoc = ae.associate("127.0.0.1", node.port, ae_title="DICOMSR")
    assert assoc.is_established
    acknowledged, refused = [], None
    for _ in range(100):  # 232 kB each: 20 MiB cannot take them all
        ds = pydicom.dcmread(us_file("examples_rgb_color.dcm"))
        ds.SOPInstanceUID = generate_uid()
        rsp = assoc.send_c_store(ds)
        if rsp.Status != 0x0000:
            refused = rsp
            break
        acknowledged.append(ds.SOPInstanceUID)
    assoc.release()
    assert refused is not None and refused.Status == 0xA700
    assert "min-free" in refused.ErrorComment
    assert len(acknowledged) >= 10
    spooled = {p.stem: p for p in (out / "incoming").rglob("*.dcm")}
    assert sorted(spooled) == sorted(acknowledged)  # every Success is on disk, whole
    for uid in acknowledged:
        assert pydicom.dcmread(spooled[uid]).SOPInstanceUID == uid
    log = node.log.read_text()
    assert "spool write failed" not in log and "No space left" not in log
    assert "under --min-free" in log
    again = ae.associate("127.0.0.1", node.port, ae_title="DICOMSR")
    assert again.is_rejected, node.log.read_text()[-3000:]  # refused while the disk is low
    status, body = http(health, "/health")
    assert status == 503 and json.loads(body)["problems"][0]["reason"] == "disk_low"
    wait_for(lambda: metric(health, "dicomsr_disk_low") == 1.0, 10, "the disk_low gauge")
    rejected = 'dicomsr_associations_rejected_total{reason="disk_low"}'
    wait_for(lambda: metric(health, rejected) == 1.0, 10, "the rejection counted")
    assert metric(health, 'dicomsr_instances_refused_total{status="0xA700"}') == 1.0

    filler.unlink()  # space again: the node takes stores again
    wait_for(lambda: http(health, "/health")[0] == 200, 30, "health 200", node.log)
    assert run("echoscu", "-aec", "DICOMSR", "127.0.0.1", node.port).returncode == 0
    assert node.stop() == 0


def test_rejected_associations_are_counted_by_reason_and_refusals_carry_an_error_comment(
    tmp_path, peers
):
    health = free_port()
    node = Node(tmp_path / "node", "--allow-ae", "STORESCU", "--health-port", str(health)).start()
    peers.append(node)
    assert run("echoscu", "-aet", "INTRUDER", "-aec", "DICOMSR", "127.0.0.1", node.port).returncode
    wait_for(
        lambda: (
            metric(health, 'dicomsr_associations_rejected_total{reason="calling_ae_not_allowed"}')
            == 1.0
        ),
        10,
        "the rejection counted",
    )
    assert "rejected: calling_ae_not_allowed" in node.log.read_text()
    ds = pydicom.dcmread(us_file("color-px.dcm"))
    ds.SOPInstanceUID = generate_uid()
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 2]  # truncated: 0xC211
    ae = AE(ae_title="STORESCU")
    ae.add_requested_context(ds.SOPClassUID, [ExplicitVRLittleEndian])
    assoc = ae.associate("127.0.0.1", node.port, ae_title="DICOMSR")
    rsp = assoc.send_c_store(ds)
    assoc.release()
    assert rsp.Status == 0xC211
    assert 0 < len(rsp.ErrorComment) <= 64 and "PixelData (7FE0,0010)" in rsp.ErrorComment
    assert node.stop() == 0


def test_health_and_metrics_listen_on_localhost_by_default(tmp_path, peers):
    health = free_port()
    node = Node(tmp_path / "node", "--health-port", str(health)).start()
    peers.append(node)
    wait_for(lambda: "health and metrics on http://127.0.0.1:" in node.log.read_text(), 30, "log")
    assert http(health, "/health")[0] == 200
    assert node.stop() == 0


class OrthancPeer:
    """Orthanc as the destination PACS (REST on 127.0.0.1 to see what it stored)."""

    def __init__(self, folder: Path, dicom_port: int):
        folder.mkdir(parents=True, exist_ok=True)
        self.http_port, self.dicom_port = free_port(), dicom_port
        config = {
            "Name": "dicom-sr-test",
            "StorageDirectory": str(folder / "storage"),
            "IndexDirectory": str(folder / "index"),
            "HttpPort": self.http_port,
            "DicomPort": dicom_port,
            "DicomAet": "ORTHANC",
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomCheckCalledAet": False,
            "Plugins": [],
        }
        (folder / "orthanc.json").write_text(json.dumps(config))
        self.proc = subprocess.Popen(
            [ORTHANC, str(folder / "orthanc.json")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        wait_for(lambda: self.get("/system") is not None, 60, "Orthanc to start")

    def get(self, path: str):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=5) as r:
                return json.load(r)
        except OSError:
            return None

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


ORTHANC = "/usr/sbin/Orthanc"


@pytest.mark.skipif(not Path(ORTHANC).exists(), reason="Orthanc not installed")
def test_orthanc_down_then_up_gets_the_series_once_after_jobs_retry_forward(tmp_path, peers):
    port = free_port()
    node = Node(
        tmp_path / "node",
        "--forward",
        f"ORTHANC@127.0.0.1:{port}",
        "--forward-retry",
        "3600",
    ).start()  # fmt: skip
    # (--forward-retry 3600: the next try is an hour away unless the operator says "now")
    peers.append(node)
    study = make_study(tmp_path / "study", 2)
    storescu(node, *study)
    wait_for(
        lambda: any(j.forward_attempts >= 1 for j in node.jobs()), 120, "a failed forward", node.log
    )
    orthanc = OrthancPeer(tmp_path / "orthanc", port)
    try:
        res = jobs_cli("retry", "--out", str(node.out), "--forward", "--json")
        assert res.returncode == 0 and json.loads(res.stdout)["forwards_now"] == 1
        wait_for(lambda: {j.state for j in node.jobs()} == {"forwarded"}, 60, "sent", node.log)
        instances = orthanc.get("/instances")
        assert len(instances) == 2 and len(orthanc.get("/series")) == 1
        src = pydicom.dcmread(study[0], stop_before_pixels=True)
        for iid in instances:
            tags = orthanc.get(f"/instances/{iid}/simplified-tags")
            assert int(tags["Rows"]) == 2 * src.Rows
            assert tags["StudyInstanceUID"] == src.StudyInstanceUID
        assert node.stop() == 0
    finally:
        orthanc.stop()
