"""``dicom-sr listen`` as a process, with dcmtk peers on 127.0.0.1 (echoscu, storescu, dcmsend,
storescp as the --forward destination): what a PACS administrator would check."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pydicom
import pytest
from conftest import dcmtk, us_file
from pydicom.uid import generate_uid

from dicom_sr.jobs import JobStore

pytestmark = [
    pytest.mark.network,
    pytest.mark.skipif(
        not all(dcmtk(t) for t in ("echoscu", "storescu", "dcmsend", "storescp")),
        reason="dcmtk not installed",
    ),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(check, timeout: float, what: str, log: Path | None = None):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = check()
        if value:
            return value
        time.sleep(0.25)
    tail = log.read_text()[-3000:] if log and log.exists() else ""
    raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{tail}")


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


class Node:
    """``dicom-sr listen`` in a subprocess (bicubic: the method does not matter here)."""

    def __init__(self, out: Path, *extra: str, timeout: float = 1.0):
        self.out, self.port, self.extra, self.timeout = out, free_port(), extra, timeout
        self.log = out.parent / f"{out.name}-{self.port}.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> Node:
        cmd = [sys.executable, "-c", "from dicom_sr.cli import main; main()", "listen"]
        cmd += ["--out", str(self.out), "--port", str(self.port), "--bind", "127.0.0.1"]
        cmd += ["--method", "bicubic", "--series-timeout", str(self.timeout), *self.extra]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        wait_for(lambda: port_open(self.port), 30, "the node to listen", self.log)
        return self

    def stop(self, sig: int = signal.SIGTERM) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(30)

    def jobs(self):
        return JobStore(self.out).jobs()


class StoreScp:
    """dcmtk's storescp: every object received gets a file of its own (+uf), so a duplicate
    shows as a second file."""

    def __init__(self, folder: Path, port: int | None = None):
        self.folder, self.port = folder, port or free_port()
        folder.mkdir(parents=True, exist_ok=True)
        self.log = folder.parent / f"storescp-{self.port}.log"  # not in folder: received()
        self.proc = subprocess.Popen(
            [
                dcmtk("storescp"),
                "-aet",
                "STORESCP",
                "+xa",
                "+uf",
                "-od",
                str(folder),
                str(self.port),
            ],
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
        )

        def listening() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"storescp exited {self.proc.returncode}: {self.log}")
            return port_open(self.port)

        wait_for(listening, 30, "storescp to listen", self.log)

    @property
    def dest(self) -> str:
        return f"STORESCP@127.0.0.1:{self.port}"

    def received(self) -> list[pydicom.Dataset]:
        return [pydicom.dcmread(p) for p in sorted(self.folder.iterdir()) if p.is_file()]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture
def peers(tmp_path):
    started: list = []
    yield started
    for peer in started:
        if isinstance(peer, Node) and peer.proc and peer.proc.poll() is None:
            peer.proc.kill()
            peer.proc.wait(10)
        elif isinstance(peer, StoreScp) and peer.proc.poll() is None:
            peer.stop()


def run(tool: str, *args: str | Path | int) -> subprocess.CompletedProcess:
    """Run a dcmtk tool (the Debian binary, not pynetdicom's app of the same name)."""
    cmd = [dcmtk(tool), *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def check_derived(got: list[pydicom.Dataset], sources: list[Path]) -> None:
    """Each source has one derived instance: same study, new series, x2, frames decoded."""
    by_source = {ds.SourceImageSequence[0].ReferencedSOPInstanceUID: ds for ds in got}
    assert len(by_source) == len(got) == len(sources)
    for path in sources:
        src = pydicom.dcmread(path, stop_before_pixels=True)
        ds = by_source[src.SOPInstanceUID]
        assert ds.StudyInstanceUID == src.StudyInstanceUID
        assert ds.SeriesInstanceUID != src.SeriesInstanceUID
        assert (ds.Rows, ds.Columns) == (2 * src.Rows, 2 * src.Columns)
        frames = int(src.get("NumberOfFrames") or 1)
        assert int(ds.get("NumberOfFrames") or 1) == frames
        assert ds.pixel_array.shape[int(frames > 1)] == 2 * src.Rows


def test_echo_storescu_dcmsend_forwarded_read_back_then_sigterm_exits_0(tmp_path, peers):
    dest = StoreScp(tmp_path / "pacs")
    node = Node(tmp_path / "node", "--forward", dest.dest, "--workers", "2").start()
    peers += [dest, node]
    echo = run("echoscu", "-aec", "DICOMSR", "127.0.0.1", str(node.port))
    assert echo.returncode == 0, echo.stderr
    native = [us_file("examples_rgb_color.dcm"), us_file("ExplVR_BigEnd.dcm")]
    sent = run("storescu", "-aec", "DICOMSR", "127.0.0.1", str(node.port), *map(str, native))
    assert sent.returncode == 0, sent.stderr
    compressed = [
        us_file("OBXXXX1A_rle_2frame.dcm"),  # RLE, 2 frames
        us_file("examples_jpeg2k.dcm"),  # JPEG 2000 lossless
    ]
    # -dn: send the compressed bytes as they are (dcmsend decompresses lossless by default)
    sent = run(
        "dcmsend", "-dn", "-aec", "DICOMSR", "127.0.0.1", str(node.port), *map(str, compressed)
    )
    assert sent.returncode == 0, sent.stderr
    for path in compressed:  # spooled as sent: the compressed bytes, not a decoded copy
        src = pydicom.dcmread(path, stop_before_pixels=True)
        spooled = next((tmp_path / "node" / "incoming").rglob(f"{src.SOPInstanceUID}.dcm"))
        ts = pydicom.dcmread(spooled, stop_before_pixels=True).file_meta.TransferSyntaxUID
        assert ts == src.file_meta.TransferSyntaxUID
    wait_for(lambda: len(dest.received()) == 4, 120, "4 derived instances", node.log)
    check_derived(dest.received(), native + compressed)
    wait_for(lambda: {j.state for j in node.jobs()} == {"forwarded"}, 10, "forwarded", node.log)
    assert node.stop() == 0
    assert "series .." in node.log.read_text()  # line logs name the series


def make_study(folder: Path, n: int) -> list[Path]:
    """``n`` single-frame instances of one new series (copies of a real US frame)."""
    folder.mkdir(parents=True)
    series, out = generate_uid(), []
    for k in range(n):
        ds = pydicom.dcmread(us_file("examples_rgb_color.dcm"))
        ds.SeriesInstanceUID, ds.SOPInstanceUID, ds.InstanceNumber = series, generate_uid(), k + 1
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.save_as(folder / f"{k}.dcm", enforce_file_format=True)
        out.append(folder / f"{k}.dcm")
    return out


def test_sigkill_mid_study_then_restart_and_resend_completes_it(tmp_path, peers):
    study = make_study(tmp_path / "study", 3)
    dest = StoreScp(tmp_path / "pacs")
    out = tmp_path / "node"
    node = Node(out, "--forward", dest.dest, timeout=4.0).start()
    peers += [dest, node]
    first = run("storescu", "-aec", "DICOMSR", "127.0.0.1", str(node.port), *map(str, study[:2]))
    assert first.returncode == 0, first.stderr  # two acknowledged ...
    node.proc.kill()  # ... and the node dies before the series is complete
    node.proc.wait(10)
    assert len(list((out / "incoming").rglob("*.dcm"))) == 2
    again = Node(out, "--forward", dest.dest, timeout=4.0).start()
    peers.append(again)
    resend = run("storescu", "-aec", "DICOMSR", "127.0.0.1", str(again.port), *map(str, study))
    assert resend.returncode == 0, resend.stderr
    wait_for(
        lambda: any(j.state == "forwarded" and len(j.paths) == 3 for j in again.jobs()),
        90,
        "the whole study forwarded",
        again.log,
    )
    got = dest.received()
    series = {ds.SeriesInstanceUID for ds in got}
    assert len(series) == 1 and len(got) == 3  # one derived series, every instance once
    check_derived(got, study)
    assert again.stop() == 0


def test_forward_destination_down_then_up_everything_arrives_once(tmp_path, peers):
    study = make_study(tmp_path / "study", 2)
    port = free_port()
    node = Node(
        tmp_path / "node",
        "--forward",
        f"STORESCP@127.0.0.1:{port}",
        "--forward-retry",
        "0.5",
        "--forward-retry-max",
        "2",
    ).start()
    peers.append(node)
    sent = run("storescu", "-aec", "DICOMSR", "127.0.0.1", str(node.port), *map(str, study))
    assert sent.returncode == 0, sent.stderr
    wait_for(
        lambda: any(j.state == "done" and j.forward_attempts >= 2 for j in node.jobs()),
        60,
        "failed forwarding attempts",
        node.log,
    )
    # the node still receives while its destination is down
    assert run("echoscu", "-aec", "DICOMSR", "127.0.0.1", str(node.port)).returncode == 0
    dest = StoreScp(tmp_path / "pacs", port)
    peers.append(dest)
    wait_for(lambda: {j.state for j in node.jobs()} == {"forwarded"}, 30, "forwarded", node.log)
    time.sleep(3)  # a duplicate send would show up as a third file
    got = dest.received()
    assert len(got) == 2
    check_derived(got, study)
    first_series = got[0].SeriesInstanceUID

    # one more instance of the processed series joins the same derived series (saved model)
    late = make_study(tmp_path / "late", 1)[0]
    ds = pydicom.dcmread(late)
    ds.SeriesInstanceUID = pydicom.dcmread(study[0]).SeriesInstanceUID
    ds.InstanceNumber = 3
    ds.save_as(late, enforce_file_format=True)
    sent = run("storescu", "-aec", "DICOMSR", "127.0.0.1", str(node.port), str(late))
    assert sent.returncode == 0, sent.stderr
    wait_for(lambda: len(dest.received()) == 3, 60, "the late instance", node.log)
    wait_for(lambda: {j.state for j in node.jobs()} == {"forwarded"}, 30, "forwarded", node.log)
    got = dest.received()
    assert {d.SeriesInstanceUID for d in got} == {first_series}  # one derived series
    assert len({d.SOPInstanceUID for d in got}) == 3
    check_derived(got, [*study, late])
    assert not any("rev" in d.SeriesDescription for d in got)
    (job,) = node.jobs()
    assert job.revision == 0 and len(job.paths) == 3
    assert "with its saved model" in node.log.read_text()
    assert node.stop() == 0


def test_sigterm_while_processing_requeues_the_series_and_exits_0(tmp_path, peers):
    out = tmp_path / "node"
    node = Node(out, "--method", "ibp").start()  # ibp: a long frame loop, no training
    peers.append(node)
    cine = us_file("color3d_jpeg_baseline.dcm")  # 120 frames
    assert run("dcmsend", "-dn", "-aec", "DICOMSR", "127.0.0.1", node.port, cine).returncode == 0
    wait_for(lambda: ": frame " in node.log.read_text(), 90, "frames to start", node.log)
    t0 = time.monotonic()
    assert node.stop() == 0
    assert time.monotonic() - t0 < 20
    (job,) = node.jobs()
    assert job.state == "queued" and "cancelled" in job.error
    assert job.attempts == 0  # a stop the node caused uses no attempt
    assert "cancelled, back to the queue" in node.log.read_text()
    assert not list((out / "derived").rglob("*.dcm"))  # nothing half-written
