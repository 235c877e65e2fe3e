"""The Dask cluster of a batch: an existing scheduler, or an embedded one on this machine.

Embedded: a :class:`distributed.LocalCluster` of worker processes (one series at a time each).
With GPUs (``--gpus-per-worker N``, or ``--device cuda``), each worker process gets its own
GPUs through ``CUDA_VISIBLE_DEVICES`` and declares the Dask resource ``GPU=N``, as
``dask-cuda``'s ``LocalCUDACluster`` does; the tasks then ask for ``GPU=1``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from dicom_sr.errors import DicomSrError, MissingExtra

__all__ = [
    "ClusterSpec",
    "open_client",
    "NoGpuWorkers",
    "gpu_count",
    "LOG_LIMITS",
    "TRIM_EVERY",
    "trim_dask_state",
]

logger = logging.getLogger(__name__)

#: Dask's in-memory logs, cut for a client that submits a task per series. Its defaults keep
#: the last 1,000 batches of messages of every comm (each holding the tasks it carried), 1,000
#: transitions, 10,000 log records and an hour of system-monitor samples: the client (and the
#: embedded scheduler, which lives in it) then grew with the number of series until those
#: filled (benchmarks/batch_archive.py).
LOG_LIMITS = {
    "distributed.admin.low-level-log-length": 100,
    "distributed.admin.log-length": 1000,
    "distributed.admin.system-monitor.log-length": 600,
}


#: Finished tasks between two trims of what Dask keeps per task (:func:`trim_dask_state`).
TRIM_EVERY = 2000


class NoGpuWorkers(DicomSrError, RuntimeError):
    """Tasks would ask for a GPU that no worker offers (they would wait for ever)."""


@dataclass(frozen=True)
class ClusterSpec:
    """Where to run: an existing ``scheduler``, or an embedded cluster of ``workers``."""

    scheduler: str | None = None
    workers: int | None = None
    threads_per_worker: int = 1
    gpus_per_worker: int = 0
    gpu: bool = False  # the tasks need a GPU each
    connect_timeout: float = 30.0


def gpu_count() -> int:
    """CUDA devices this process sees (0 without CUDA)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _distributed():
    try:
        import distributed
    except ImportError as exc:  # pragma: no cover - an extra
        raise MissingExtra(
            "dicom-sr batch needs distributed: pip install 'dicom-sr[batch]'"
        ) from exc
    return distributed


@contextmanager
def open_client(spec: ClusterSpec) -> Iterator[Any]:
    """A connected :class:`distributed.Client` (and its embedded cluster), closed on exit."""
    distributed = _distributed()
    import dask

    with dask.config.set(LOG_LIMITS):
        yield from _client(distributed, spec)


def _client(distributed, spec: ClusterSpec) -> Iterator[Any]:
    cluster = None
    if spec.scheduler:
        try:
            client = distributed.Client(spec.scheduler, timeout=spec.connect_timeout)
        except OSError as exc:
            raise ConnectionError(f"no Dask scheduler at {spec.scheduler}: {exc}") from exc
    else:
        cluster = _embedded(distributed, spec)
        client = distributed.Client(cluster)
        client.wait_for_workers(len(cluster.worker_spec), timeout=spec.connect_timeout * 4)
    try:
        if spec.gpu:
            _wait_for_gpu_workers(client, spec.connect_timeout)
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _embedded(distributed, spec: ClusterSpec):
    """A LocalCluster of worker processes; with GPUs, each worker pinned to its own."""
    threads = max(1, spec.threads_per_worker)
    kw: dict[str, Any] = {
        "threads_per_worker": 1,  # one series per worker process; torch threads inside it
        "processes": True,
        "dashboard_address": ":0",
    }
    per = spec.gpus_per_worker or (1 if spec.gpu else 0)
    if not per:
        n = spec.workers or max(1, (os.cpu_count() or 1) // threads)
        return distributed.LocalCluster(n_workers=n, **kw)
    gpus = gpu_count()
    if gpus < per:
        raise NoGpuWorkers(
            f"--gpus-per-worker {per} but this machine has {gpus} CUDA device(s)"
            " (use --device cpu, or --scheduler with GPU workers)"
        )
    groups = [",".join(str(g) for g in range(i * per, (i + 1) * per)) for i in range(gpus // per)]
    n = spec.workers or len(groups)
    if n > len(groups):
        logger.warning("%d workers share %d GPU group(s) of %d", n, len(groups), per)
    return gpu_cluster(distributed, groups, n, resources={"GPU": per}, **kw)


def gpu_cluster(distributed, groups: list[str], n: int, **kw: Any):
    """A LocalCluster of ``n`` workers whose i-th sees only the GPUs ``groups[i % len]``
    (``CUDA_VISIBLE_DEVICES``); ``kw`` as for LocalCluster."""
    cluster = _gpu_cluster_class(distributed, groups)(n_workers=0, **kw)
    cluster.scale(n)  # through new_worker_spec, which pins each worker
    return cluster


def _gpu_cluster_class(distributed, groups: list[str]):
    """A LocalCluster whose n-th worker sees only the GPUs of ``groups[n % len(groups)]``."""

    class GpuCluster(distributed.LocalCluster):
        def new_worker_spec(self):
            spec = super().new_worker_spec()
            for name, item in spec.items():
                index = int(name) if str(name).isdigit() else len(self.worker_spec)
                env = {**item["options"].get("env", {})}
                env["CUDA_VISIBLE_DEVICES"] = groups[index % len(groups)]
                item = {**item, "options": {**item["options"], "env": env}}
                spec[name] = item
            return spec

    return GpuCluster


def _wait_for_gpu_workers(client, timeout: float) -> None:
    """Tasks that ask for ``GPU=1`` wait for a worker that offers it: give up after
    ``timeout`` seconds with a clear error rather than hang."""
    deadline = time.monotonic() + timeout
    while True:
        workers = client.scheduler_info().get("workers", {})
        if any(w.get("resources", {}).get("GPU") for w in workers.values()):
            return
        if time.monotonic() > deadline:
            raise NoGpuWorkers(
                f"the tasks need a GPU but none of the {len(workers)} Dask worker(s) offers the"
                " resource GPU (start them with --resources GPU=1, dask-cuda-worker"
                " --resources GPU=1, or use --gpus-per-worker / --device cpu)"
            )
        time.sleep(0.5)


def trim_dask_state(client) -> None:
    """Drop what Dask keeps for every task after the task is gone, here (with the embedded
    scheduler), on the scheduler and on the workers.

    Two things grow with the number of tasks, one per series (found with tracemalloc on
    benchmarks/batch_archive.py's client after :data:`LOG_LIMITS`):

    - ``dask.utils.key_split`` memoizes the group of every task key in an LRU cache of
      100,000 keys, in every process;
    - the scheduler's default span appends a ``{"type": "Future"}`` record to its metadata
      for every ``Client.submit`` and never drops it (spans live as long as the scheduler).

    Emptying the cache costs one recomputation of a key's prefix; the span's list of
    collections is only shown on the dashboard. A process that cannot be reached keeps its
    state, and the batch goes on; a scheduler without dicom-sr installed keeps its span
    records.
    """
    from dask.utils import key_split

    key_split.cache_clear()
    # (the bound method pickles by reference to dask.utils: no dicom-sr needed over there)
    for call, func in (
        (client.run, key_split.cache_clear),
        (client.run_on_scheduler, key_split.cache_clear),
        (client.run_on_scheduler, _trim_spans),
    ):
        try:
            call(func)
        except Exception as exc:  # noqa: BLE001 - housekeeping; the batch goes on
            logger.debug("could not trim Dask's per-task state (%s): %s", call.__name__, exc)


def _trim_spans(dask_scheduler) -> int:
    """On the scheduler: empty the spans' lists of submitted collections; return how many
    records were dropped."""
    dropped = 0
    spans = getattr(dask_scheduler, "extensions", {}).get("spans")
    for span in getattr(spans, "spans", {}).values():
        metadata = getattr(span, "_metadata", None) or {}
        collections = metadata.get("collections")
        if isinstance(collections, list):
            dropped += len(collections)
            collections.clear()
    return dropped


def worker_slots(client) -> int:
    """Series the cluster runs at once: one per worker (a worker runs one at a time)."""
    return max(1, len(client.scheduler_info().get("workers", {})))


def dashboard(client) -> str | None:
    """The dashboard link, or None (bokeh missing is fine)."""
    try:
        return client.dashboard_link
    except Exception:  # noqa: BLE001 - no dashboard is fine
        return None
