"""Where the engine computes, and the settings that make a CUDA run repeatable.

- :func:`select_device` turns ``engine.device`` into a :class:`torch.device` for a run (it
  refuses ``"cuda"`` where there is none).
- :func:`device_kind` says which kind of device a configuration *will* run on without
  refusing and without starting CUDA: planning on a submit host without a GPU, and the
  ``listen`` parent process, hash the pixel identity with it.
- :func:`repeatable` is the scope every fit and upscale runs in. On CUDA it turns on cuDNN's
  deterministic mode and ``torch.use_deterministic_algorithms`` (warn only: an operation
  without a deterministic kernel warns, it does not fail a series), and turns TF32 off, so
  that "fp32" is IEEE fp32 and one seed gives one set of pixels. The previous settings come
  back on exit: they are process-wide and belong to whoever set them. On the CPU it changes
  nothing (the CPU kernels the engine uses are deterministic already).
- :func:`cuda_bf16_native`: compute capability 8 or more. ``torch.cuda.is_bf16_supported()``
  also says True where bf16 is only emulated (V100, T4), which is slower than fp32.
- :func:`warm_up` starts CUDA (context, cuBLAS and cuDNN) ahead of the first series.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

import torch

__all__ = [
    "select_device",
    "device_kind",
    "repeatable",
    "cuda_bf16_native",
    "warm_up",
    "CUBLAS_WORKSPACE",
]

logger = logging.getLogger(__name__)

#: ``CUBLAS_WORKSPACE_CONFIG`` that makes cuBLAS deterministic (CUDA 10.2 and later); it must
#: be in the environment before cuBLAS starts, hence set when CUDA is selected.
CUBLAS_WORKSPACE = ":4096:8"


def _check_name(name: str) -> None:
    if name not in ("auto", "cpu") and not name.startswith("cuda"):
        raise ValueError(f"unknown device {name!r} (expected 'auto', 'cpu' or 'cuda')")


def select_device(name: str) -> torch.device:
    """``"auto"``: CUDA when available, else CPU; ``"cpu"``; ``"cuda"`` (raises if absent)."""
    _check_name(name)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    elif name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} requested but CUDA is not available")
    if name.startswith("cuda"):
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    return torch.device(name)


def device_kind(name: str) -> str:
    """``"cuda"`` or ``"cpu"``: the kind of device ``name`` runs on, for the pixel identity.

    Never refuses: ``"cuda"`` is ``"cuda"`` on a machine without one (planning for GPU
    workers). ``"auto"`` asks ``torch.cuda.is_available()``, which counts devices without
    creating a CUDA context (no GPU memory is taken).
    """
    _check_name(name)
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return "cpu" if name == "cpu" else "cuda"


def cuda_bf16_native(device: torch.device) -> bool:
    """Does this CUDA device compute bf16 natively (compute capability 8.0 or more)?"""
    major, _ = torch.cuda.get_device_capability(device)
    return major >= 8


@contextlib.contextmanager
def repeatable(device: torch.device) -> Iterator[None]:
    """Deterministic kernels and no TF32 on CUDA for the duration; restored on exit."""
    if device.type != "cuda":
        yield
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    saved = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.get_float32_matmul_precision(),
    )
    try:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.set_float32_matmul_precision("highest")  # no TF32 in matmuls
        with torch.backends.cudnn.flags(
            enabled=True, benchmark=False, deterministic=True, allow_tf32=False
        ):
            yield
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.set_float32_matmul_precision(saved[2])


def warm_up(name: str) -> bool:
    """Start CUDA now (context, cuBLAS, cuDNN) when ``name`` selects it; True if it did.

    A ``listen`` worker calls this while it waits for a series, so that the series does not
    pay the start-up. Nothing happens for the CPU, or for ``"auto"`` without a GPU.
    """
    if device_kind(name) != "cuda" or not torch.cuda.is_available():
        return False
    device = select_device("cuda" if name == "auto" else name)
    with repeatable(device), torch.inference_mode():
        x = torch.zeros(1, 1, 8, 8, device=device)
        torch.nn.functional.conv2d(x, torch.zeros(1, 1, 3, 3, device=device))
        x.flatten(1) @ torch.zeros(64, 1, device=device)
        torch.cuda.synchronize(device)
    return True
