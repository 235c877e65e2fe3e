"""Scanner priors on the engine's side: a weights file whose ``info["prior"]`` says what it is.

A prior is a generator trained by the usual self-supervision on frames of many series; a new
series warm-starts from it (``fit(..., init=prior)``) and trains a few iterations only. The file
is an ordinary :func:`~dicom_sr.engine.api.save_weights` file, so ``load_weights`` reads it
too; ``info["prior"]["digest"]`` is the SHA-256 of the generator's weights, checked on reading.
"""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path
from typing import Any

import torch

from dicom_sr.engine.api import TrainedModel, load_weights, save_weights

__all__ = ["weights_digest", "save_prior", "read_prior", "prior_meta"]


def weights_digest(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 (hex) of a state dict: names, dtypes, shapes and values, in name order.

    Independent of how the file was written (torch.save adds a random id to every file)."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()


def save_prior(model: TrainedModel, meta: dict[str, Any], path: str | os.PathLike[str]) -> dict:
    """Write ``model`` as a prior with ``meta`` (plus its digest) to ``path``, atomically.

    Returns the metadata as written."""
    if model.generator_state is None:
        raise ValueError(f"{path}: a {model.method!r} model has no weights to make a prior of")
    meta = {**meta, "digest": weights_digest(model.generator_state)}
    info = {**model.info, "prior": meta}
    save_weights(TrainedModel(model.method, model.scale, model.generator_state, info), path)
    return meta


def prior_meta(model: TrainedModel) -> dict[str, Any]:
    """The prior metadata of a model read from a prior file ({} for any other model)."""
    meta = (model.info or {}).get("prior")
    return dict(meta) if isinstance(meta, dict) else {}


def read_prior(path: str | os.PathLike[str]) -> TrainedModel:
    """Read a prior file; ValueError naming the file when it is not one or its digest is wrong.

    Cached by path, size and modification time: a series needs its prior once per process."""
    path = Path(path)
    st = path.stat()
    return _read(path.resolve(), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _read(path: Path, size: int, mtime_ns: int) -> TrainedModel:
    model = load_weights(path)
    meta = prior_meta(model)
    if not meta.get("digest") or model.generator_state is None:
        raise ValueError(f"{path}: a weights file but not a prior (no prior metadata)")
    if weights_digest(model.generator_state) != meta["digest"]:
        raise ValueError(f"{path}: the weights do not match the prior's recorded digest")
    return model
