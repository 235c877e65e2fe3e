"""Series processing in worker processes, one fresh process per series.

A :class:`~concurrent.futures.ProcessPoolExecutor` with the ``spawn`` start method and
``max_tasks_per_child=1``: torch's threads and caches stay one series' business, a crash takes
one series with it, and no association thread ever waits for training. A shared event asks the
running series to stop (the pipeline's ``cancel`` check); so does the node process dying.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any

from dicom_sr.config import PipelineConfig
from dicom_sr.errors import PERMANENT, Cancelled, classify, describe
from dicom_sr.logs import route_warnings

__all__ = ["LOG_FORMAT", "WorkerPool", "disk_full", "merge_results", "run_series_job"]

logger = logging.getLogger(__name__)

#: One line per record, with time and level, whether or not there is a terminal.
LOG_FORMAT = "%(asctime)s %(levelname)-7s %(processName)s %(name)s: %(message)s"

_stop: Any = None
_parent: int | None = None
_busy = False  # this process took a series (it exits after that one)
_preloader: threading.Thread | None = None


def _init_worker(stop_event: Any, parent_pid: int, log_level: int, device: str = "cpu") -> None:
    """Worker start: signals are the node's business; log lines like the node's."""
    global _stop, _parent, _preloader
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _stop, _parent = stop_event, parent_pid
    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True).start()
    logging.basicConfig(level=log_level, format=LOG_FORMAT, force=True)
    route_warnings()
    logging.getLogger("pynetdicom").setLevel(max(log_level, logging.WARNING))
    if not stop_event.is_set():  # the executor replaces a worker as soon as it exits:
        # import torch while idle, not when a series comes; in a thread, so that a node that
        # stops meanwhile does not wait for the import (the series' own import waits for it)
        _preloader = threading.Thread(target=_preload, args=(device,), name="preload", daemon=True)
        _preloader.start()


def _preload(device: str = "cpu") -> None:
    """Import the pipeline and, when ``device`` runs on CUDA, start CUDA: a worker serves one
    series, so its CUDA start-up is paid here, while it waits, not by the series."""
    try:
        import dicom_sr.pipeline  # noqa: F401
        from dicom_sr.engine.device import warm_up

        warm_up(device)
    except Exception:  # noqa: BLE001 - the series' own import reports it
        logger.debug("preload failed", exc_info=True)


def _watch_parent(parent_pid: int, grace: float = 30.0) -> None:
    """Exit when the node is gone (SIGKILL): an idle worker would wait for work forever."""
    while os.getppid() == parent_pid:
        time.sleep(1.0)
    if _busy:
        time.sleep(grace)  # the series in hand sees _cancelled() first and stops cleanly
    os._exit(0)


def _cancelled() -> bool:
    """The node asked us to stop, or the node is gone (a SIGKILL leaves us orphaned)."""
    if _stop is not None and _stop.is_set():
        return True
    return _parent is not None and os.getppid() != _parent


def run_series_job(
    key: str,
    paths: list[str],
    config: PipelineConfig,
    out_dir: str,
    revision: int,
    model_path: str | None = None,
    use_model: bool = False,
    calling_ae: str = "",
) -> dict[str, Any]:
    """In the worker: discover ``paths`` (one series) and run the pipeline on it.

    Returns the series result's :meth:`~dicom_sr.pipeline.SeriesResult.to_dict`, with
    ``sources`` (the inputs that got an output), ``status`` "cancelled" when the node asked to
    stop, and for a failure ``kind`` (:func:`~dicom_sr.errors.classify`: "permanent" or
    "transient"); never raises. The model trained for the series is saved to ``model_path``;
    with ``use_model`` it is loaded from there instead and nothing is trained (late instances
    join their series' derived series, upscaled by the same model). ``calling_ae``, the AE
    title that sent the series, can pick its scanner prior (``[[priors]]``).
    """
    global _busy
    _busy = True
    if _preloader is not None:
        _preloader.join()  # two threads importing one package can see it half-initialised
    from dicom_sr.dicom.discover import discover
    from dicom_sr.engine import load_weights, save_weights
    from dicom_sr.pipeline import process_series

    tag = key[-8:]
    last = [0.0]

    def progress(event) -> None:
        now = time.monotonic()
        if event.stage == "train" and now - last[0] >= 10.0:
            last[0] = now
            logger.info(
                "series ..%s: training %d/%d", event.series_uid[-8:], event.done, event.total
            )
        elif event.stage == "frame" and now - last[0] >= 10.0:
            last[0] = now
            logger.info("series ..%s: frame %d/%d", event.series_uid[-8:], event.done, event.total)

    try:
        found = discover(paths, max_pixels=config.output.max_pixels)
        if len(found.series) != 1:
            why = "; ".join(f"{s.path}: {s.reason}" for s in found.skipped) or "no series"
            reason = f"{len(found.series)} series in the job: {why}"
            return {"status": "failed", "kind": PERMANENT, "reason": reason}
        model = load_weights(model_path, scale=config.engine.scale) if use_model else None
        result = process_series(
            found.series[0],
            config,
            Path(out_dir),
            progress=progress,
            cancel=_cancelled,
            revision=revision,
            model=model,
            calling_ae=calling_ae,
        )
        out = result.to_dict()
        out["sources"] = [str(r.source) for r in result.instances if r.status != "failed"]
        if result.derived_series_uid != key:
            out["status"] = "failed"
            out["kind"] = PERMANENT
            out["reason"] = f"derived series {result.derived_series_uid} is not the job's {key}"
        elif out["status"] == "failed":
            out["kind"] = PERMANENT  # the pipeline judged every input: the same on a retry
        elif model_path and result.model is not None and not use_model:
            save_weights(result.model, model_path)
        return out
    except Cancelled:
        logger.info("derived ..%s: cancelled, back to the queue", tag)
        return {"status": "cancelled", "reason": "cancelled"}
    except Exception as exc:  # noqa: BLE001 - one series' failure, reported, never raised
        kind = classify(exc)
        if kind == PERMANENT:
            logger.error("derived ..%s failed: %s", tag, describe(exc), exc_info=True)
        else:
            logger.warning("derived ..%s failed (%s): %s", tag, kind, describe(exc))
        return {"status": "failed", "kind": kind, "reason": describe(exc)}


def merge_results(old: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    """A late instances' result joined to the job's earlier one (outputs and sources add up)."""
    if not old:
        return new
    out = dict(new)
    for key in ("written", "already_done", "sources"):
        out[key] = sorted({*old.get(key, []), *new.get(key, [])})
    out["frames"] = int(old.get("frames", 0)) + int(new.get("frames", 0))
    return out


def disk_full(result: dict[str, Any]) -> bool:
    """Some instance failed for want of disk space (worth another attempt later)."""
    return any("errno 28" in f["reason"] or "errno 122" in f["reason"] for f in result["failed"])


class WorkerPool:
    """``workers`` spawned processes, each running one series and exiting."""

    def __init__(self, workers: int, log_level: int = logging.INFO, device: str = "cpu") -> None:
        self.workers = workers
        self.log_level = log_level
        self.device = device  # engine.device: "cuda"/"auto" warm CUDA up in idle workers
        self._ctx = multiprocessing.get_context("spawn")
        self.stop_event = self._ctx.Event()
        self._executor = self._new_executor()

    def _new_executor(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=self._ctx,
            max_tasks_per_child=1,
            initializer=_init_worker,
            initargs=(self.stop_event, os.getpid(), self.log_level, self.device),
        )

    def submit(
        self,
        key: str,
        paths: list[str],
        config: PipelineConfig,
        out_dir: Path,
        revision: int,
        model_path: Path | None = None,
        use_model: bool = False,
        calling_ae: str = "",
    ) -> Future:
        """Run one series job; the future's result is :func:`run_series_job`'s dict."""
        return self._executor.submit(
            run_series_job,
            key,
            paths,
            config,
            str(out_dir),
            revision,
            None if model_path is None else str(model_path),
            use_model,
            calling_ae,
        )

    def restart(self) -> None:
        """Replace a broken pool (a worker was killed) with a fresh one."""
        self.shutdown(timeout=10.0)
        self._executor = self._new_executor()

    def cancel(self) -> None:
        """Ask every running series to stop at its next check."""
        self.stop_event.set()

    def shutdown(self, timeout: float = 60.0) -> bool:
        """No more work; wait for the worker processes to exit (after :meth:`cancel`, a running
        series stops at its next check). False if they did not within ``timeout`` seconds.

        Always a waiting shutdown: ``shutdown(wait=False)`` of CPython 3.11 lets the executor's
        manager thread crash while replacing a worker (one task per child), leaving a process
        that the interpreter then waits for at exit.
        """
        thread = threading.Thread(
            target=self._executor.shutdown,
            kwargs={"wait": True, "cancel_futures": True},
            name="pool-shutdown",
            daemon=True,
        )
        thread.start()
        thread.join(timeout)
        return not thread.is_alive()
