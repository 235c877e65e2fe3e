"""Time and memory measurement, and a description of the machine the numbers came from.

Peak memory is the process's resident set size (RSS) sampled by a background thread with
psutil. ``tracemalloc`` cannot see torch's allocations, and ``getrusage``'s ``ru_maxrss`` is a
lifetime high-water mark that only moves when a step beats every earlier one, so neither answers
"how much did this step need". Sampling can miss spikes shorter than the interval (10 ms).
"""

from __future__ import annotations

import os
import platform
import threading
import time
from dataclasses import dataclass, field

import psutil

__all__ = ["RssSampler", "Timed", "machine_info"]

_MB = 1024.0 * 1024.0


@dataclass
class RssSampler:
    """Context manager sampling this process's RSS; ``peak_mb`` and ``delta_mb`` after exit."""

    interval: float = 0.01
    start_mb: float = 0.0
    peak_mb: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)

    @property
    def delta_mb(self) -> float:
        """Peak RSS above the RSS at entry: what the measured step added."""
        return max(0.0, self.peak_mb - self.start_mb)

    def _run(self, proc: psutil.Process) -> None:
        while not self._stop.wait(self.interval):
            self.peak_mb = max(self.peak_mb, proc.memory_info().rss / _MB)

    def __enter__(self) -> RssSampler:
        proc = psutil.Process()
        self.start_mb = self.peak_mb = proc.memory_info().rss / _MB
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, args=(proc,), daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak_mb = max(self.peak_mb, psutil.Process().memory_info().rss / _MB)


@dataclass
class Timed:
    """Context manager measuring wall-clock seconds (``perf_counter``)."""

    seconds: float = 0.0
    _t0: float = 0.0

    def __enter__(self) -> Timed:
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self._t0


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict:
    """CPU model, cores, memory, Python/torch versions, torch threads and GPU (if any), and
    whether the CPU computes bf16 natively (then ``engine.precision = "auto"`` runs bf16)."""
    import torch

    from dicom_sr.engine.infer import native_bf16

    info = {
        "cpu_model": _cpu_model(),
        "logical_cores": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_gb": round(psutil.virtual_memory().total / 1024**3, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_native_bf16": native_bf16(torch.device("cpu")),
        "cuda": None,
    }
    if torch.cuda.is_available():
        info["cuda"] = {
            "device": torch.cuda.get_device_name(0),
            "version": torch.version.cuda,
            "memory_gb": round(torch.cuda.get_device_properties(0).total_memory / 1024**3, 1),
        }
    return info
