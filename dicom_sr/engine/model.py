"""A trained model and its file: what :func:`dicom_sr.engine.api.fit` returns, how it is saved
and read back (plain data through ``torch.save``, read with ``weights_only=True``)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dicom_sr.fsio import atomic_write

__all__ = [
    "TrainedModel",
    "build_generator",
    "plain",
    "save_weights",
    "read_weights",
    "WEIGHTS_FORMAT",
    "WEIGHTS_VERSION",
]

#: Marker and version of the files written by :func:`save_weights`.
WEIGHTS_FORMAT = "dicom-sr-weights"
WEIGHTS_VERSION = 1


@dataclass
class TrainedModel:
    """What :func:`~dicom_sr.engine.api.fit` returns and :func:`~dicom_sr.engine.api.upscale` uses.

    ``generator_state`` is the state dict of ``Generator(info["model_scale"])`` (on the CPU;
    ``scale`` when absent), or None for the methods that learn nothing. ``info`` holds plain
    values: iterations, final_lr, seconds, perceptual, history, warm_start, model_scale.
    """

    method: str
    scale: int
    generator_state: dict[str, torch.Tensor] | None
    info: dict[str, Any] = field(default_factory=dict)
    #: generators built from ``generator_state``, per (scale, device): built once, reused by
    #: every frame of a series (not saved, not compared)
    _nets: dict[tuple[int, str], torch.nn.Module] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __getstate__(self) -> dict[str, Any]:  # a pickled model leaves its device copies
        state = dict(self.__dict__)
        state["_nets"] = {}
        return state

    def generator(self, scale: int, device: torch.device) -> torch.nn.Module:
        """The generator (eval mode) on ``device``, built on the first call and kept."""
        key = (scale, str(device))
        if key not in self._nets:
            if self.generator_state is None:
                raise ValueError(f"a {self.method!r} model has no generator weights")
            self._nets.clear()  # one device at a time: do not hold a copy on each
            self._nets[key] = build_generator(scale, self.generator_state).to(device)
        return self._nets[key]


def build_generator(scale: int, state: dict[str, torch.Tensor]) -> torch.nn.Module:
    """A ``Generator(scale)`` with ``state`` loaded, in eval mode (on the CPU)."""
    from dicom_sr.engine.nets import Generator

    G = Generator(scale)
    G.load_state_dict(state)
    return G.eval()


def plain(value: Any) -> Any:
    """Python scalars/lists/dicts only, so ``info`` survives ``torch.load(weights_only=True)``."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else value.tolist()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)  # e.g. a Path: weights_only loading accepts plain types only


def save_weights(model: TrainedModel, path: str | os.PathLike[str]) -> None:
    """Write ``model`` to ``path`` (``torch.save`` of plain data; atomic replace)."""
    path = Path(path)
    payload = {
        "format": WEIGHTS_FORMAT,
        "version": WEIGHTS_VERSION,
        "method": model.method,
        "scale": int(model.scale),
        "state": model.generator_state,
        "info": plain(model.info),
    }
    atomic_write(path, lambda fh: torch.save(payload, fh))


def read_weights(path: str | os.PathLike[str], *, scale: int | None = None) -> TrainedModel:
    """The model in a :func:`save_weights` file, its format, version and scale checked (the
    method's registry checks are :func:`dicom_sr.engine.api.load_weights`'s).

    Raises ValueError naming the file when it is not a dicom-sr weights file, has a newer
    format version or (with ``scale``) is for another scale.
    """
    path = Path(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:
        raise ValueError(
            f"{path}: not a dicom-sr weights file ({exc.__class__.__name__})"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != WEIGHTS_FORMAT:
        raise ValueError(f"{path}: not a dicom-sr weights file (no {WEIGHTS_FORMAT!r} marker)")
    version = payload.get("version")
    if not isinstance(version, int) or version > WEIGHTS_VERSION:
        raise ValueError(
            f"{path}: weights format version {version!r}; this dicom-sr reads up to "
            f"{WEIGHTS_VERSION}"
        )
    method = payload.get("method")
    if not isinstance(method, str):
        raise ValueError(f"{path}: no method named in the weights file")
    file_scale = payload.get("scale")
    if not isinstance(file_scale, int):
        raise ValueError(f"{path}: no scale in the weights file")
    if scale is not None and file_scale != scale:
        raise ValueError(f"{path}: weights are for x{file_scale}, x{scale} was asked for")
    state = payload.get("state")
    return TrainedModel(method, file_scale, state, dict(payload.get("info") or {}))
