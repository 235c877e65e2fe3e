"""``dicom-sr batch``: streaming plan, failures isolated, resumable after SIGKILL, Dask clusters.

The pixels come from ``--method bicubic`` (no training), so the tests are about the batch
machinery: what is planned, what is retried, what is skipped, and what reaches the disk.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
from conftest import us_file
from pydicom.data import get_testdata_file
from pydicom.encaps import encapsulate, generate_frames
from pydicom.uid import generate_uid

from dicom_sr.batch import plan as plan_mod
from dicom_sr.batch.plan import plan_archive
from dicom_sr.batch.runner import BatchOptions, run_batch
from dicom_sr.config import load_pipeline
from dicom_sr.dicom.store import LOCKS_DIR
from dicom_sr.jobs import JobStore

distributed = pytest.importorskip("distributed")

SINGLES = ["OBXXXX1A.dcm", "ExplVR_BigEnd.dcm", "color-pl.dcm", "gdcm-US-ALOKA-16.dcm"]
CINE_FRAMES = 10
RESUME = ["OBXXXX1A.dcm", "color-pl.dcm"]  # fast ones, before the cine


def _config(method: str = "bicubic"):
    return load_pipeline("bmode-default", {"engine.method": method, "engine.threads": 1})


def _copy(names, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copy(us_file(name), folder / name)


def _last_cine(folder: Path) -> Path:
    """The SonoSite cine cut to its first 10 frames, in a study whose UID sorts last."""
    ds = pydicom.dcmread(us_file("examples_ybr_color.dcm"))
    frames = generate_frames(ds.PixelData, number_of_frames=ds.NumberOfFrames)
    ds.PixelData = encapsulate([next(frames) for _ in range(CINE_FRAMES)])
    ds.NumberOfFrames = CINE_FRAMES
    ds.StudyInstanceUID = "2.25.9" + "9" * 30
    path = folder / "cine.dcm"
    ds.save_as(path)
    return path


def _undecodable(folder: Path) -> Path:
    """A valid header whose JPEG Lossless data cannot be decoded: fails at processing time."""
    ds = pydicom.dcmread(us_file("JPGLosslessP14SV1_1s_1f_8b.dcm"))
    noise = np.random.default_rng(0).integers(0, 255, 3000, dtype=np.uint8).tobytes()
    ds.PixelData = encapsulate([b"\xff\xd8" + noise + b"\xff\xd9"])
    ds.SeriesInstanceUID = generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    path = folder / "undecodable.dcm"
    ds.save_as(path)
    return path


def _outputs(out: Path) -> dict[str, bytes]:
    """Derived files under ``out`` (relative path -> pixel data)."""
    files = sorted(p for p in out.rglob("*.dcm"))
    return {str(p.relative_to(out)): pydicom.dcmread(p).PixelData for p in files}


def _written(out: Path) -> dict[str, int]:
    """How many times the manifest says each output was written."""
    counts: dict[str, int] = {}
    for line in (out / "manifest.jsonl").read_text().splitlines():
        entry = json.loads(line)
        if entry.get("status") == "written":
            counts[entry["output"]] = counts.get(entry["output"], 0) + 1
    return counts


class NoSqlite(distributed.WorkerPlugin):
    """Makes every SQLite open in a worker process fail: the job store is the client's alone."""

    def setup(self, worker):
        import sqlite3

        def refuse(*args, **kwargs):
            raise sqlite3.OperationalError(f"unable to open database file {args[:1]}")

        sqlite3.connect = refuse


@pytest.fixture(scope="module")
def cluster():
    """A distributed LocalCluster of two worker processes, started by the test; its workers
    cannot open any SQLite file (so no task can touch the job store)."""
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as c:
        with distributed.Client(c) as client:
            client.register_plugin(NoSqlite())
            assert client.run(_sqlite_refused) == dict.fromkeys(client.run(os.getpid), True)
        yield c


def _sqlite_refused() -> bool:
    import sqlite3

    try:
        sqlite3.connect(":memory:")
    except sqlite3.OperationalError:
        return True
    return False


# -- planning (no cluster) --------------------------------------------------------------------


def test_plan_streams_resumes_and_keys_by_pipeline(tmp_path, monkeypatch):
    archive = tmp_path / "archive"
    _copy(SINGLES + ["OBXXXX1A_rle.dcm"], archive)  # the RLE copy repeats OBXXXX1A's UID
    (archive / "notes.txt").write_text("not DICOM")
    store = JobStore(archive / "out")  # inside the archive: never planned
    monkeypatch.setattr(plan_mod, "COMMIT_EVERY", 2)

    def crash(n):
        if n == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        plan_archive([archive], _config(), store, on_file=crash)
    plan = plan_archive([archive], _config(), store)
    assert plan.files == 6 and plan.inspected == 3  # the 3 committed before the crash not re-read
    assert plan.series == 4 and plan.skipped == 2
    reasons = {Path(s["path"]).name: s["reason"] for s in plan.skipped_files(store)}
    assert reasons["notes.txt"].startswith("not a DICOM file")
    assert "same SOP Instance UID" in reasons["OBXXXX1A_rle.dcm"]
    keys = {s.key for s in plan.planned(store)}
    assert len(keys) == 4
    again = plan_archive([archive], _config("ibp"), store)  # another pipeline: new keys
    assert not {s.key for s in again.planned(store)} & keys
    assert len(store.jobs(kind="batch")) == 8
    (archive / "ExplVR_BigEnd.dcm").unlink()  # gone from the archive: gone from the plan
    (archive / "notes.txt").write_text("changed, still not DICOM")  # changed: read again
    later = plan_archive([archive], _config(), store)
    assert (later.files, later.inspected, later.series, later.skipped) == (5, 1, 3, 2)
    assert later.gone == 1
    (archive / "OBXXXX1A.dcm").unlink()  # the original gone: its copy is planned instead
    last = plan_archive([archive], _config(), store)
    assert (last.files, last.inspected, last.series, last.skipped, last.gone) == (4, 0, 3, 1, 1)
    assert [s["path"] for s in last.skipped_files(store)] == [str(archive / "notes.txt")]
    rle = pydicom.dcmread(archive / "OBXXXX1A_rle.dcm", stop_before_pixels=True)
    (job,) = [j for j in store.jobs() if j.source_series_uid == rle.SeriesInstanceUID
              and j.config_hash == last.config_hash]  # fmt: skip
    assert job.paths == [str(archive / "OBXXXX1A_rle.dcm")]


# -- a cluster started by the test -------------------------------------------------------------


def test_batch_completes_valid_series_and_reports_the_rest(tmp_path, cluster):
    archive = tmp_path / "archive"
    _copy(SINGLES[:2], archive)
    _undecodable(archive)
    shutil.copy(get_testdata_file("CT_small.dcm"), archive / "ct.dcm")
    (archive / "junk.dcm").write_bytes(b"\0" * 200)
    raw = us_file("US1_UNCR.dcm").read_bytes()
    (archive / "truncated.dcm").write_bytes(raw[: len(raw) // 2])
    out = tmp_path / "out"
    options = BatchOptions(scheduler=cluster.scheduler_address, retries=1)
    report = run_batch([archive], _config(), out, options)

    assert report["series"] == {
        "usable": 3, "already_done": 0, "this_run": 3, "done": 2, "failed": 1, "unfinished": 0,
    }  # fmt: skip
    (failure,) = report["failures"]
    # an input error: a retry would fail the same way, so it fails at once (--retries unused)
    assert failure["attempts"] == 1 and "cannot decode frame 0" in failure["error"]
    assert "undecodable.dcm" in failure["error"]
    skipped = {Path(s["path"]).name for s in report["skipped"]}
    assert skipped == {"ct.dcm", "junk.dcm", "truncated.dcm"}
    assert json.loads((out / "batch-report.json").read_text())["series"]["failed"] == 1
    for name in SINGLES[:2]:  # each valid source has its derived file, twice the size
        src = pydicom.dcmread(archive / name, stop_before_pixels=True)
        (derived,) = [
            p
            for p in out.rglob("*.dcm")
            if pydicom.dcmread(p, stop_before_pixels=True)
            .SourceImageSequence[0]
            .ReferencedSOPInstanceUID
            == src.SOPInstanceUID
        ]
        ds = pydicom.dcmread(derived)
        assert (ds.Rows, ds.Columns) == (2 * src.Rows, 2 * src.Columns)
        assert ds.pixel_array.std() > 0


def test_worker_killed_mid_series_is_retried(tmp_path, cluster):
    """The worker running the series dies: Dask's lost-worker handling runs the task again on
    another worker, and the client, which alone holds the store, records it done."""
    archive = tmp_path / "archive"
    archive.mkdir()
    _last_cine(archive)
    out = tmp_path / "out"
    options = BatchOptions(scheduler=cluster.scheduler_address, retries=2)
    box: dict = {}
    # ibp, not bicubic: 10 frames of back projection last seconds, so the kill lands mid-series
    # on an idle machine too (bicubic finished within the second the test waited)
    runner = threading.Thread(
        target=lambda: box.update(run_batch([archive], _config("ibp"), out, options))
    )
    runner.start()
    victim = None
    with distributed.Client(cluster.scheduler_address) as client:
        deadline = time.monotonic() + 120
        while victim is None and time.monotonic() < deadline:
            busy = [w for w, keys in client.processing().items() if keys]
            if busy and _started(out):
                time.sleep(0.5)  # inside the series
                victim = client.run(os.getpid, workers=busy[:1])[busy[0]]
            time.sleep(0.05)
        assert victim is not None, "the series never started"
        os.kill(victim, signal.SIGKILL)
        runner.join(300)
    assert box["series"]["done"] == 1 and box["series"]["failed"] == 0
    (job,) = JobStore(out).jobs()
    assert job.state == "done" and job.attempts == 1  # rerun by Dask: no attempt of ours used
    assert job.result["pid"] != victim
    (derived,) = out.rglob("*.dcm")
    assert pydicom.dcmread(derived).NumberOfFrames == CINE_FRAMES
    assert not list(out.rglob("*.part"))


def _started(out: Path) -> bool:
    """True once a worker has begun a series in ``out`` (it takes the series' lock)."""
    return (out / LOCKS_DIR).exists()


# -- the command, killed and restarted; then the same on a cluster ------------------------------


def _batch_cmd(archive: Path, out: Path, *extra: str, method: str = "bicubic") -> list[str]:
    code = "import sys; from dicom_sr.cli import main; sys.exit(main())"
    return [sys.executable, "-c", code, "batch", str(archive), "--out", str(out),
            "--method", method, *extra]  # fmt: skip


@pytest.fixture(scope="module")
def killed_and_restarted(tmp_path_factory):
    """``dicom-sr batch`` SIGKILLed (with its workers) while the last series runs, then rerun."""
    root = tmp_path_factory.mktemp("resume")
    archive = root / "archive"
    _copy(RESUME, archive)
    _last_cine(archive)
    out = root / "out"
    # ibp: the cine's back projection lasts seconds, so the kill lands while it runs on an
    # idle machine too (bicubic could finish within the second the fixture waits)
    proc = subprocess.Popen(
        _batch_cmd(archive, out, "--workers", "1", method="ibp"),
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    store_path = out / "jobs.sqlite3"
    deadline = time.monotonic() + 180
    before = None
    while time.monotonic() < deadline and proc.poll() is None:
        if store_path.exists():
            jobs = JobStore(out).jobs()
            cine = [j for j in jobs if j.frames == CINE_FRAMES]
            others = [j for j in jobs if j.frames != CINE_FRAMES]
            # "processing" is "submitted": a series done, the cine not yet
            if cine and cine[0].state == "processing" and "done" in {j.state for j in others}:
                time.sleep(0.5)
                before = {j.key: (j.state, j.attempts) for j in JobStore(out).jobs()}
                os.killpg(proc.pid, signal.SIGKILL)
                break
        time.sleep(0.05)
    proc.wait(30)
    assert before is not None, "the batch ended before it could be killed"
    done_before = {k for k, (state, _) in before.items() if state == "done"}
    written_before = _written(out)
    rerun = subprocess.run(
        _batch_cmd(archive, out, "--workers", "1", "--json", method="ibp"),
        capture_output=True,
        text=True,
    )
    return archive, out, done_before, written_before, rerun


def test_killed_batch_resumes_without_redoing_done_series(killed_and_restarted):
    archive, out, done_before, written_before, rerun = killed_and_restarted
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    report = json.loads(rerun.stdout)
    assert done_before  # the kill came half way: some series done, the cine running
    assert report["series"]["already_done"] == len(done_before)
    assert report["series"]["this_run"] == report["series"]["done"] == 3 - len(done_before)
    jobs = {j.key: j for j in JobStore(out).jobs()}
    assert all(jobs[k].attempts == 1 for k in done_before)  # never started again
    assert jobs.keys() - done_before and all(j.state == "done" for j in jobs.values())
    written = _written(out)
    assert all(n == 1 for n in written.values())  # no output written twice
    assert set(written_before) < set(written)
    assert len(_outputs(out)) == len(RESUME) + 1
    assert not list(out.rglob("*.part"))


def test_cluster_run_gives_identical_pixels(killed_and_restarted, cluster, tmp_path):
    """Workers that cannot open the store (``cluster`` refuses SQLite in them; ``--store`` is
    outside the shared ``--out``) give the embedded run's pixels, byte for byte."""
    archive, out, *_ = killed_and_restarted
    store = tmp_path / "client-only" / "jobs.sqlite3"
    report = run_batch(
        [archive],
        _config("ibp"),
        tmp_path / "out",
        BatchOptions(scheduler=cluster.scheduler_address, store=store),
    )
    assert report["series"]["done"] == len(RESUME) + 1
    assert report["store"] == str(store) and not (tmp_path / "out" / "jobs.sqlite3").exists()
    assert {j.state for j in JobStore(tmp_path / "out", path=store).jobs()} == {"done"}
    embedded, on_cluster = _outputs(out), _outputs(tmp_path / "out")
    assert embedded.keys() == on_cluster.keys() and len(embedded) == len(RESUME) + 1
    for name in embedded:
        assert embedded[name] == on_cluster[name], name


def test_dry_run_plans_and_bad_options_exit_2(tmp_path):
    from click.testing import CliRunner

    from dicom_sr.cli import main

    archive = tmp_path / "archive"
    _copy(SINGLES[:2], archive)
    out = tmp_path / "out"
    runner = CliRunner()
    res = runner.invoke(main, ["batch", str(archive), "--out", str(out), "--dry-run"])
    assert res.exit_code == 0, res.output
    assert res.output.count("would process") == 2 and "2 series to do" in res.output
    assert JobStore(out).counts()["queued"] == 2 and not list(out.rglob("*.dcm"))
    elsewhere = tmp_path / "local" / "jobs.sqlite3"  # --store: the store outside --out
    res = runner.invoke(
        main, ["batch", str(archive), "--out", str(tmp_path / "o2"), "--store", str(elsewhere),
               "--dry-run"],
    )  # fmt: skip
    assert res.exit_code == 0 and "2 series to do" in res.output, res.output
    assert JobStore(tmp_path / "o2", path=elsewhere).counts()["queued"] == 2
    assert not (tmp_path / "o2" / "jobs.sqlite3").exists()
    listed = runner.invoke(main, ["jobs", "--store", str(elsewhere), "--json"])  # the operator
    assert listed.exit_code == 0, listed.output
    assert sorted(j["state"] for j in json.loads(listed.output)) == ["queued", "queued"]
    bad = ["batch", str(archive), "--out", str(out), "--scheduler", "tcp://127.0.0.1:1"]
    assert runner.invoke(main, [*bad, "--workers", "2"]).exit_code == 2
    assert (
        runner.invoke(main, ["batch", str(archive), "--out", str(out), "--retries", "-1"]).exit_code
        == 2
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    res = runner.invoke(main, ["batch", str(empty), "--out", str(out / "e")])
    assert res.exit_code == 1 and "planned 0 series" in res.output


def test_without_distributed_batch_says_which_extra_in_one_line(tmp_path, monkeypatch):
    """A set-up without the batch extra: one clear error line and exit 1, not a traceback."""
    from click.testing import CliRunner

    from dicom_sr.cli import main

    archive = tmp_path / "archive"
    _copy(SINGLES[:1], archive)
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed -> ImportError
    res = CliRunner().invoke(main, ["batch", str(archive), "--out", str(tmp_path / "out")])
    assert res.exit_code == 1 and isinstance(res.exception, SystemExit), res.output
    assert "Error: dicom-sr batch needs distributed: pip install 'dicom-sr[batch]'" in res.output
    assert "Traceback" not in res.output


# -- planning follows the archive; one size limit; failures classified ---------------------------


def test_renamed_file_is_processed_under_its_new_name_and_nothing_is_redone(tmp_path, cluster):
    archive = tmp_path / "archive"
    _copy(["ExplVR_BigEnd.dcm", "color-pl.dcm", "OBXXXX1A.dcm"], archive)
    out = tmp_path / "out"
    options = BatchOptions(scheduler=cluster.scheduler_address, limit=2)
    first = run_batch([archive], _config(), out, options)
    assert first["series"]["done"] == 2
    jobs = JobStore(out).jobs()
    (waiting,) = [j for j in jobs if j.state == "queued"]
    done = [j for j in jobs if j.state == "done"]
    moves = {}  # one done series' file and the waiting one's file, renamed
    for job in (done[0], waiting):
        old = Path(job.paths[0])
        moves[job.key] = old.rename(old.with_name("moved-" + old.name))
    written = _written(out)

    second = run_batch([archive], _config(), out, BatchOptions(scheduler=cluster.scheduler_address))
    assert second["series"]["already_done"] == 2 and second["series"]["this_run"] == 1
    assert second["series"]["done"] == 1 and second["skipped"] == []  # no "same SOP" copy
    assert second["plan"]["gone_files"] == 2
    after = {j.key: j for j in JobStore(out).jobs()}
    assert all(j.state == "done" for j in after.values())
    for key, path in moves.items():
        assert after[key].paths == [str(path)]  # planned under the new name
    assert after[done[0].key].attempts == 1  # the done series was not started again
    entries = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    (new,) = [e for e in entries if e["status"] == "written" and e["output"] not in written]
    assert new["source"] == str(moves[waiting.key])  # processed from its new name
    assert all(n == 1 for n in _written(out).values())  # nothing written twice


def test_frame_over_max_pixels_skipped_by_batch_with_the_reason_process_gives(tmp_path, cluster):
    from dicom_sr.dicom.discover import discover
    from dicom_sr.pipeline import process_inputs, process_series

    archive = tmp_path / "archive"
    _copy(["OBXXXX1A.dcm", "ExplVR_BigEnd.dcm"], archive)  # 800x600 and 80x60
    config = _config().with_overrides({"output.max_pixels": 100 * 100})
    processed = process_inputs([archive], config, tmp_path / "process")
    (by_process,) = [s.reason for s in processed.skipped]
    assert "exceeds max_pixels 10000" in by_process
    report = run_batch(
        [archive], config, tmp_path / "batch", BatchOptions(scheduler=cluster.scheduler_address)
    )
    assert report["series"]["done"] == 1
    assert report["skipped"] == [{"path": str(archive / "OBXXXX1A.dcm"), "reason": by_process}]
    # and process_series itself refuses it, whoever built the series (listen, a library user)
    (series,) = [s for s in discover([archive / "OBXXXX1A.dcm"]).series]
    result = process_series(series, config, tmp_path / "direct")
    assert result.status == "failed" and result.failed[0].reason == by_process
    assert not list((tmp_path / "direct").rglob("*.dcm"))


def test_bug_in_a_task_fails_once_with_its_traceback_at_error(tmp_path, monkeypatch, caplog):
    """A TypeError of ours is permanent: one attempt, not --retries, and the traceback logged."""
    import logging

    from dicom_sr.pipeline import series as series_mod

    calls = []

    def broken(*args, **kwargs):
        calls.append(1)
        raise TypeError("injected bug")

    monkeypatch.setattr(series_mod, "super_resolve_frame", broken)
    archive = tmp_path / "archive"
    _copy(["ExplVR_BigEnd.dcm"], archive)
    caplog.set_level(logging.ERROR, logger="dicom_sr")
    # in-process workers (threads): the monkeypatched pipeline is the one the task runs
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None
    ) as local:
        options = BatchOptions(scheduler=local.scheduler_address, retries=3)
        report = run_batch([archive], _config(), tmp_path / "out", options)
    assert report["series"]["failed"] == 1 and len(calls) == 1
    (failure,) = report["failures"]
    assert failure["attempts"] == 1 and "TypeError: injected bug" in failure["error"]
    (record,) = [r for r in caplog.records if r.name == "dicom_sr.batch.runner"]
    assert record.levelname == "ERROR" and "not retried" in record.getMessage()
    assert "Traceback" in record.getMessage() and "in broken" in record.getMessage()


def test_device_cuda_without_a_gpu_ends_at_once_with_one_line(tmp_path):
    import torch
    from click.testing import CliRunner

    from dicom_sr.cli import main

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    archive = tmp_path / "archive"
    _copy(["ExplVR_BigEnd.dcm"], archive)
    args = ["batch", str(archive), "--out", str(tmp_path / "out"), "--device", "cuda"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 2 and "no CUDA device" in res.output
    assert "Traceback" not in res.output and not (tmp_path / "out" / "jobs.sqlite3").exists()


def test_a_submit_host_without_a_gpu_plans_for_gpu_workers(tmp_path):
    """With --scheduler the workers hold the GPUs: a dry run plans the series for CUDA here."""
    import torch
    from click.testing import CliRunner

    from dicom_sr.cli import main

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    archive = tmp_path / "archive"
    _copy(["ExplVR_BigEnd.dcm"], archive)
    out = tmp_path / "out"
    args = ["batch", str(archive), "--out", str(out), "--device", "cuda", "--dry-run"]
    args += ["--scheduler", "tcp://127.0.0.1:9", "--json"]
    res = CliRunner().invoke(main, args)
    assert "no CUDA device" not in res.output and "Traceback" not in res.output, res.output
    report = json.loads(res.output)
    assert report["plan"]["series"] == 1 and len(report["todo"]) == 1


def test_tasks_that_need_a_gpu_no_worker_offers_end_with_an_error(cluster):
    """No hang: when no connected worker declares the GPU resource, the run stops and says so."""
    from dicom_sr.batch.cluster import ClusterSpec, NoGpuWorkers, open_client

    spec = ClusterSpec(scheduler=cluster.scheduler_address, gpu=True, connect_timeout=1)
    with pytest.raises(NoGpuWorkers, match="offers the resource GPU"):
        with open_client(spec):
            pass


def _key_cache_size() -> int:
    from dask.utils import key_split

    return key_split.cache_info().currsize


def _submitted_collections(dask_scheduler) -> int:
    spans = dask_scheduler.extensions["spans"].spans.values()
    return sum(len((span._metadata or {}).get("collections", [])) for span in spans)


def test_dask_per_task_state_is_trimmed_here_on_the_scheduler_and_on_the_workers(cluster):
    """Dask keeps per task, after the task is gone, a memoized key group (``key_split``, up
    to 100,000 keys per process) and a record in the scheduler's default span. Every series
    is a task with a key of its own: the client drops both, so that a long batch does not
    grow with them."""
    from dask.utils import key_split

    from dicom_sr.batch.cluster import trim_dask_state

    with distributed.Client(cluster) as client:
        for i in range(30):
            client.submit(str, i, key=f"dicom-sr-series-k{i}-1-{i}").result()
        client.run(key_split, "dicom-sr-series-on-a-worker-1")
        key_split("dicom-sr-series-here-1")
        assert min(client.run(_key_cache_size).values()) >= 1
        assert client.run_on_scheduler(_key_cache_size) >= 1 and _key_cache_size() >= 1
        assert client.run_on_scheduler(_submitted_collections) >= 30
        trim_dask_state(client)
        assert set(client.run(_key_cache_size).values()) == {0}
        assert client.run_on_scheduler(_key_cache_size) == 0 and _key_cache_size() == 0
        assert client.run_on_scheduler(_submitted_collections) == 0


def test_embedded_gpu_workers_each_see_their_own_gpu():
    """--gpus-per-worker: each worker process gets its own CUDA_VISIBLE_DEVICES and the
    resource GPU (the variable is set whether or not this machine has the devices)."""
    from dicom_sr.batch.cluster import gpu_cluster

    with gpu_cluster(
        distributed, ["0", "1"], 2, threads_per_worker=1, processes=True,
        dashboard_address=None, resources={"GPU": 1},
    ) as c, distributed.Client(c) as client:  # fmt: skip
        client.wait_for_workers(2, timeout=120)
        seen = client.run(lambda: os.environ.get("CUDA_VISIBLE_DEVICES"))
        assert sorted(seen.values()) == ["0", "1"]
        workers = client.scheduler_info()["workers"].values()
        assert [w["resources"] for w in workers] == [{"GPU": 1}, {"GPU": 1}]
