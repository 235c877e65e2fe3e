"""The SQLite job store: states, idempotent adds, leases, concurrent claims, SIGKILL safety."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import pytest

from dicom_sr.jobs import JobStore, make_owner, owner_is_dead


def _add(store: JobStore, key: str, **kw):
    kw.setdefault("kind", "batch")
    return store.add(
        key,
        study_uid="1.2",
        source_series_uid=f"src.{key}",
        config_hash="abc",
        paths=["a.dcm"],
        **kw,
    )


def test_state_machine_and_readback(tmp_path):
    store = JobStore(tmp_path)
    job = _add(store, "k1", kind="listen", state="received")
    assert (job.state, job.attempts, job.paths) == ("received", 0, ["a.dcm"])
    store.add_paths("k1", ["b.dcm", "a.dcm"])
    store.set_state("k1", "queued")
    claimed = store.claim("me", lease_seconds=30)
    assert claimed.key == "k1" and claimed.attempts == 1 and claimed.lease_owner == "me"
    store.set_state("k1", "done", result={"frames": 3}, frames=3)
    store.set_state("k1", "forwarded")
    back = JobStore(tmp_path).get("k1")  # a fresh store reads what was committed
    assert back.state == "forwarded"
    assert back.paths == ["a.dcm", "b.dcm"]
    assert back.result == {"frames": 3} and back.frames == 3
    assert back.lease_owner is None
    with pytest.raises(ValueError, match="cannot go from forwarded to queued"):
        store.set_state("k1", "queued")
    with pytest.raises(KeyError):
        store.set_state("nope", "done")
    with pytest.raises(ValueError, match="unknown job state"):
        store.set_state("k1", "planned")  # type: ignore[arg-type]
    assert store.counts()["forwarded"] == 1 and store.counts()["queued"] == 0


def test_add_is_idempotent_and_done_stays_done(tmp_path):
    store = JobStore(tmp_path)
    _add(store, "k")
    store.set_state("k", "done", result={"ok": True})
    again = store.add(
        "k", kind="batch", study_uid="1.2", source_series_uid="src.k", config_hash="abc",
        paths=["a.dcm", "c.dcm"],
    )  # fmt: skip
    assert again.state == "done" and again.paths == ["a.dcm", "c.dcm"]
    assert len(store.jobs()) == 1
    assert store.claim("me", lease_seconds=30) is None


def test_expired_lease_is_reclaimed_by_another_owner(tmp_path):
    store = JobStore(tmp_path)
    _add(store, "k")
    assert store.claim("w1", lease_seconds=0.2).attempts == 1
    assert store.claim("w2", lease_seconds=30) is None  # lease still held
    assert store.renew("k", "w1", 0.2)
    time.sleep(0.3)
    job = store.claim("w2", lease_seconds=30)
    assert job.key == "k" and job.lease_owner == "w2" and job.attempts == 2
    assert "died or stalled" in job.error
    assert not store.renew("k", "w1", 30)  # w1 lost it and can tell
    assert not store.release("k", "w1")
    assert store.release("k", "w2", error="cancelled")
    assert store.get("k").state == "queued"


def test_dead_owner_releases_and_max_attempts_fails(tmp_path):
    store = JobStore(tmp_path)
    _add(store, "k")
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    dead = f"{make_owner().split(':')[0]}:{proc.pid}:x"
    assert owner_is_dead(dead) and not owner_is_dead(make_owner())
    store.claim(dead, lease_seconds=3600)
    assert store.requeue_unfinished("batch") == 1  # the dead owner's long lease does not hold
    store.claim(dead, lease_seconds=3600)
    assert store.claim("w", lease_seconds=30, key="k", max_attempts=2) is None
    failed = store.get("k")
    assert failed.state == "failed" and failed.error.startswith("gave up after 2 attempts")
    assert store.requeue_unfinished("batch", failed=True) == 1
    assert store.get("k").attempts == 0


def test_due_forwards(tmp_path):
    store = JobStore(tmp_path)
    _add(store, "k", kind="listen")
    _add(store, "b")  # batch jobs are never forwarded
    for key in ("k", "b"):
        store.set_state(key, "done")
    assert [j.key for j in store.due_forwards()] == ["k"]
    store.forward_failed("k", "connection refused", time.time() + 60)
    assert store.due_forwards() == []
    assert [j.key for j in store.due_forwards(time.time() + 61)] == ["k"]
    assert store.get("k").forward_attempts == 1


def _claim_all(out_dir: str, ready, go, queue) -> None:
    store = JobStore(out_dir)
    owner = make_owner()
    got = []
    ready.put(owner)
    go.wait(60)
    while (job := store.claim(owner, lease_seconds=60)) is not None:
        got.append(job.key)
        time.sleep(0.002)  # a little work between claims, as a real worker does
        store.set_state(job.key, "done")
    queue.put(got)


def test_two_processes_never_claim_the_same_job(tmp_path):
    store = JobStore(tmp_path)
    keys = [f"k{i:03d}" for i in range(200)]
    for key in keys:
        _add(store, key)
    ctx = multiprocessing.get_context("spawn")
    ready, go, queue = ctx.Queue(), ctx.Event(), ctx.Queue()
    args = (str(tmp_path), ready, go, queue)
    procs = [ctx.Process(target=_claim_all, args=args) for _ in range(2)]
    for p in procs:
        p.start()
    for _ in procs:
        ready.get(timeout=60)
    go.set()  # both claim at once
    got = [queue.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(10)
    assert got[0] and got[1]  # they really ran side by side
    assert not set(got[0]) & set(got[1])
    assert sorted(got[0] + got[1]) == keys
    assert store.counts()["done"] == 200


def test_sigkill_mid_transaction_leaves_a_readable_store(tmp_path):
    script = textwrap.dedent(
        f"""
        import sys
        from dicom_sr.jobs import JobStore
        store = JobStore({str(tmp_path)!r})
        i = 0
        while True:
            key = f"k{{i}}"
            store.add(key, kind="batch", study_uid="1", source_series_uid=key, config_hash="h",
                      paths=[f"p{{j}}" for j in range(50)])
            store.claim("w", lease_seconds=60, key=key)
            store.set_state(key, "done", result={{"i": i}})
            if i == 20:
                print("running", flush=True)
            i += 1
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "running"
    time.sleep(0.3)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    db = sqlite3.connect(tmp_path / "jobs.sqlite3")
    assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    db.close()
    store = JobStore(tmp_path)
    jobs = store.jobs()
    assert len(jobs) > 20
    # every committed job is whole: done ones carry their result, the last may be mid-way
    for job in jobs[:-1]:
        assert job.state == "done" and json.dumps(job.result) and len(job.paths) == 50


def test_jobs_command_lists_states(tmp_path):
    from click.testing import CliRunner

    from dicom_sr.cli import main

    store = JobStore(tmp_path)
    _add(store, "1.2.3")
    _add(store, "1.2.4")
    store.set_state("1.2.4", "failed", error="bad.dcm: no Pixel Data (7FE0,0010)")
    runner = CliRunner()
    res = runner.invoke(main, ["jobs", "--out", str(tmp_path), "--json", "--state", "failed"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.output)
    assert [(r["key"], r["state"], r["error"]) for r in rows] == [
        ("1.2.4", "failed", "bad.dcm: no Pixel Data (7FE0,0010)")
    ]
    res = runner.invoke(main, ["jobs", "--out", str(tmp_path)])
    assert res.exit_code == 0 and "planned" in res.output and "queued: 1, failed: 1" in res.output
    res = runner.invoke(main, ["jobs", "--out", str(tmp_path / "missing")])
    assert res.exit_code == 2


def _open_fresh_stores(root: str, rounds: int, barrier, base, queue) -> None:
    errors = []
    if barrier.wait(120) == 0:
        base.value = time.time() + 0.5
    barrier.wait(60)
    for r in range(rounds):
        while time.time() < base.value + 0.3 * r:
            pass  # every process opens the same fresh store at the same moment
        try:
            _add(JobStore(os.path.join(root, f"fresh{r}")), f"k{os.getpid()}")
        except sqlite3.OperationalError as exc:
            errors.append(f"round {r}: {exc}")
    queue.put(errors)


def test_many_processes_opening_a_fresh_store_at_once(tmp_path):
    """SQLite runs no busy handler for ``PRAGMA journal_mode = WAL``: first opens of a fresh
    store from several processes (a batch and its workers, or a ``jobs`` poll) must wait for
    each other, not fail with "database is locked" (5 of 160 opens failed before the fix)."""
    n, rounds = 8, 20
    ctx = multiprocessing.get_context("spawn")
    barrier, base, queue = ctx.Barrier(n), ctx.Value("d", 0.0), ctx.Queue()
    args = (str(tmp_path), rounds, barrier, base, queue)
    procs = [ctx.Process(target=_open_fresh_stores, args=args) for _ in range(n)]
    for p in procs:
        p.start()
    errors = [e for _ in procs for e in queue.get(timeout=300)]
    for p in procs:
        p.join(10)
    assert errors == []
    for r in range(rounds):
        store = JobStore(tmp_path / f"fresh{r}")
        assert store.counts()["queued"] == n
        assert store.connect().execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_release_refunds_a_stop_we_caused_and_backs_off_a_transient_failure(tmp_path):
    store = JobStore(tmp_path)
    _add(store, "k", kind="listen")
    for _ in range(5):  # five stops of the node: no attempt used
        assert store.claim("w", lease_seconds=30).attempts == 1
        assert store.release("k", "w", error="cancelled: node stopping", refund=True)
    assert store.get("k").attempts == 0
    store.claim("w", lease_seconds=30)
    store.release("k", "w", error="worker died", retry_at=time.time() + 60)
    job = store.get("k")
    assert (job.state, job.attempts, job.error) == ("queued", 1, "worker died")
    assert store.claim("w", lease_seconds=30) is None  # backing off
    store.connect().execute("UPDATE jobs SET not_before = ? WHERE key = 'k'", (time.time() - 1,))
    assert store.claim("w", lease_seconds=30).attempts == 2


def test_retry_forget_and_reopen(tmp_path):
    store = JobStore(tmp_path)
    for key in ("a", "b", "c"):
        _add(store, key, kind="listen")
    store.set_state("a", "failed", error="bad")
    store.set_state("b", "failed", error="bad")
    assert store.retry(["a", "c"]) == ["a"]  # c is not failed: left alone
    assert store.get("a").state == "queued" and store.get("a").attempts == 0
    assert store.retry(kind="listen") == ["b"]
    store.set_state("c", "done", result={"sources": ["a.dcm"]})
    store.set_state("c", "forwarded")
    job = store.reopen("c", ["late.dcm"])
    assert (job.state, job.paths, job.result) == (
        "queued",
        ["a.dcm", "late.dcm"],
        {"sources": ["a.dcm"]},
    )
    claimed = store.claim("w", lease_seconds=30, key="c")
    assert store.forget(["c", "a", "nope"]) == ["a"]  # a processing job is not forgotten
    assert claimed.key == "c" and [j.key for j in store.jobs()] == ["b", "c"]


def test_forwards_per_destination_exactly_once(tmp_path):
    from dicom_sr.jobs import Forwards

    store = JobStore(tmp_path)
    fw = Forwards(store)
    dests = ["A@h:1", "B@h:2"]
    for key in ("k1", "k2"):
        _add(store, key, kind="listen")
        store.set_state(key, "done", result={"written": [f"/{key}/1.dcm"]})
        fw.open(key, dests)
    assert fw.backlog(dests) == {
        "A@h:1": (2, fw.of("k1")[0].created),
        "B@h:2": (2, fw.of("k1")[0].created),
    }
    assert fw.sent("k1", "A@h:1", ["1"]) is False  # B still owed: done, not forwarded
    assert store.get("k1").state == "done"
    fw.failed("k1", "B@h:2", "refused", time.time() + 600, [])
    assert [(j.key, f.destination) for j, f in fw.due(dests)] == [("k2", "A@h:1"), ("k2", "B@h:2")]
    assert fw.flush() == 3  # k1 at B, k2 at both: due now
    assert ("k1", "B@h:2") in [(j.key, f.destination) for j, f in fw.due(dests)]
    assert fw.sent("k1", "B@h:2", ["1"]) is True
    assert store.get("k1").state == "forwarded" and store.get("k1").forward_attempts == 1
    assert fw.backlog(dests)["B@h:2"][0] == 1
    # late instances: the rows go back to pending with what was acknowledged kept
    store.reopen("k1", ["late.dcm"])
    store.set_state("k1", "done")
    fw.open("k1", dests)
    assert {f.destination: (f.state, f.sent) for f in fw.of("k1")} == {
        "A@h:1": ("pending", ["1"]),
        "B@h:2": ("pending", ["1"]),
    }


def test_jobs_retry_and_forget_commands(tmp_path):
    from click.testing import CliRunner

    from dicom_sr.cli import main
    from dicom_sr.jobs import Forwards

    store = JobStore(tmp_path)
    _add(store, "1.2.3.100", kind="listen")
    _add(store, "1.2.3.200", kind="listen")
    store.set_state("1.2.3.100", "failed", error="boom")
    store.set_state("1.2.3.200", "done")
    Forwards(store).open("1.2.3.200", ["A@h:1"])
    Forwards(store).failed("1.2.3.200", "A@h:1", "down", time.time() + 600, [])
    runner = CliRunner()
    res = runner.invoke(main, ["jobs", "retry", "--out", str(tmp_path), ".100", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["retried"] == ["1.2.3.100"]
    res = runner.invoke(main, ["jobs", "retry", "--out", str(tmp_path), "--forward", "--json"])
    assert json.loads(res.output)["forwards_now"] == 1
    assert Forwards(store).of("1.2.3.200")[0].next_at is None
    res = runner.invoke(main, ["jobs", "retry", "--out", str(tmp_path), "nothing-like-it"])
    assert res.exit_code == 1
    res = runner.invoke(main, ["jobs", "--out", str(tmp_path), "--json"])
    (row,) = [r for r in json.loads(res.output) if r["key"] == "1.2.3.200"]
    assert row["identity"] == "abc" and row["destinations"][0]["error"] == "down"
    res = runner.invoke(main, ["jobs", "forget", "--out", str(tmp_path), "1.2.3.200", "--json"])
    assert json.loads(res.output) == {"forgotten": ["1.2.3.200"], "not_found": []}
    assert [j.key for j in store.jobs()] == ["1.2.3.100"]


def test_durations_and_sizes():
    from dicom_sr.node.upkeep import parse_duration, parse_size

    assert [parse_duration(t) for t in ("30s", "12h", "7d", "2w", "90")] == [
        30,
        43200,
        604800,
        1209600,
        90,
    ]
    assert [parse_size(t) for t in ("500M", "2G", "4096", "1.5k")] == [
        500 << 20,
        2 << 30,
        4096,
        1536,
    ]
    for bad in ("7 days", "-1d", "", "5x"):
        with pytest.raises(ValueError, match="is not a"):
            parse_duration(bad)
    with pytest.raises(ValueError, match="is not a size"):
        parse_size("lots")


def test_a_destination_taken_out_does_not_hold_a_job_back(tmp_path):
    from dicom_sr.jobs import Forwards

    store = JobStore(tmp_path)
    fw = Forwards(store)
    _add(store, "k", kind="listen")
    store.set_state("k", "done")
    fw.open("k", ["OLD@h:1", "NEW@h:2"])
    assert fw.sent("k", "NEW@h:2", ["1"], ["NEW@h:2"]) is True  # OLD is no longer configured
    assert store.get("k").state == "forwarded"
    _add(store, "j", kind="listen")
    store.set_state("j", "done")
    fw.open("j", ["OLD@h:1"])
    assert fw.settle("j", ["NEW@h:2"]) is True  # on start, under the new configuration
    assert fw.settle("k", []) is False
