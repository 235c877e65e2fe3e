"""The engine's public API: fit a model to frames, upscale frames with it, save and load it.

Methods live behind one small registry (in the manner of pydicom's pixel decoders): a name maps
to a :class:`Method` that knows how to ``fit`` and how to ``apply``. ``"bicubic"`` and ``"ibp"``
learn nothing; ``"zssr"`` and ``"cyclegan"`` train the generator of
:mod:`dicom_sr.engine.nets` with :func:`dicom_sr.engine.train.train` and apply it with the
tiled self-ensemble of :mod:`dicom_sr.engine.infer`.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dicom_sr.config import EngineConfig
from dicom_sr.engine.device import device_kind, repeatable, select_device
from dicom_sr.engine.guard import hold_aside, judge
from dicom_sr.engine.guard import skipped as guard_skipped
from dicom_sr.engine.infer import (
    blend_with_ibp,
    finish_scale,
    ibp,
    model_scale,
    model_weight,
    precision,
    self_ensemble,
)
from dicom_sr.engine.model import (
    WEIGHTS_FORMAT,
    WEIGHTS_VERSION,
    TrainedModel,
    build_generator,
    plain,
    read_weights,
    save_weights,
)
from dicom_sr.engine.resize import upscale_bicubic

__all__ = [
    "TrainedModel",
    "Method",
    "METHODS",
    "get_method",
    "fit",
    "finetune",
    "upscale",
    "guard_decision",
    "learned_scale",
    "super_resolve",
    "fit_cine",
    "cine_frame_indices",
    "save_weights",
    "load_weights",
    "select_device",
    "WEIGHTS_FORMAT",
    "WEIGHTS_VERSION",
]

logger = logging.getLogger(__name__)

Progress = Callable[[int, int], None]


def pixel_identity(config: EngineConfig) -> dict[str, str]:
    """What, besides the configuration, decides the output pixels of ``config.method``.

    The perceptual loss source (a VGG19 file found in the hub cache changes the training) with
    the file's digest, the device kind (CPU and CUDA kernels differ in the last bits) and the
    inference precision that ``engine.precision`` resolves to. The pipeline hashes this with
    the configuration into the derived UIDs, so one UID is one set of pixels. Seed and thread
    count are in the configuration hash or do not change the pixels.

    Works for ``device = "cuda"`` on a machine without CUDA (planning for GPU workers) and
    never starts CUDA (the ``listen`` parent must not hold GPU memory). On CUDA, ``"auto"``
    precision is recorded as its rule, ``auto:cc8`` (bf16 on compute capability 8 or more,
    else fp32), because a host without the GPU cannot resolve it: set ``engine.precision``
    to pin the arithmetic across a mixed fleet. On the CPU it resolves on this machine.
    """
    method = get_method(config.method)
    kind = device_kind(config.device)
    identity = {"device": kind}
    if method.learned:
        explicit = config.bf16 or config.precision != "auto"
        if kind == "cuda" and not explicit:
            identity["precision"] = "auto:cc8"
        else:  # "auto" on the CPU resolves per machine: bf16 where native, else fp32
            identity["precision"] = precision(config, torch.device(kind))
    if method.learned and config.method == "cyclegan" and config.losses.perceptual > 0:
        from dicom_sr.engine.nets import find_vgg19_weights

        path = find_vgg19_weights(config.vgg19_weights)
        if path is not None:
            identity["perceptual"] = "vgg19:" + _file_digest(path)
        else:
            identity["perceptual"] = config.perceptual_fallback
    else:
        identity["perceptual"] = "off"
    return identity


@functools.lru_cache(maxsize=8)
def _file_digest(path: Path) -> str:
    """SHA-256 (16 hex digits) of a weights file; cached by path for the life of the process."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def _as_frame(frame: np.ndarray) -> torch.Tensor:
    arr = np.asarray(frame)
    if arr.ndim != 2:
        raise ValueError(f"expected a 2-D luminance frame (H, W), got shape {arr.shape}")
    if min(arr.shape) < 1:
        raise ValueError(f"empty frame of shape {arr.shape}")
    return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))[None, None]


def _to_numpy(x: torch.Tensor) -> np.ndarray:
    return x[0, 0].clamp(0.0, 1.0).to("cpu", torch.float32).numpy()


@dataclass(frozen=True)
class Method:
    """One SR method: ``fit`` trains (or not), ``apply`` upscales one frame tensor."""

    name: str
    learned: bool
    fit: Callable[..., TrainedModel]
    apply: Callable[[torch.Tensor, TrainedModel, EngineConfig, torch.device], torch.Tensor]


def _fit_nothing(name: str) -> Callable[..., TrainedModel]:
    def fit_(frames, config, *, init, iterations, lr, progress, device) -> TrainedModel:
        if progress:
            progress(0, 0)
        return TrainedModel(name, config.scale, None, {"iterations": 0, "perceptual": "off"})

    return fit_


# Every apply function moves ``lr`` to ``device`` first: whatever it builds from ``lr`` is then
# on that device (an x4 finished from an x2 model used to mix a CPU ``lr`` with a CUDA output).
def _apply_bicubic(lr, model, config, device) -> torch.Tensor:
    return upscale_bicubic(lr.to(device), config.scale)


def _apply_ibp(lr, model, config, device) -> torch.Tensor:
    return ibp(lr.to(device), config)


def learned_scale(model: TrainedModel) -> int:
    """The factor ``model``'s generator upscales by (:func:`dicom_sr.engine.infer.model_scale`)."""
    return int(model.info.get("model_scale", model.scale))


def _fit_learned(name: str) -> Callable[..., TrainedModel]:
    def fit_(frames, config, *, init, iterations, lr, progress, device) -> TrainedModel:
        from dicom_sr.engine.train import train

        out_scale, ms = config.scale, model_scale(config)
        config = config.model_copy(update={"scale": ms})  # what the generator learns
        if not frames:
            raise ValueError(f"method {name!r} needs at least one frame to learn from")
        init_state = None
        if init is not None:
            if init.generator_state is None:
                raise ValueError(
                    f"cannot warm-start {name!r} from a {init.method!r} model: it has no weights"
                )
            if (init.scale, learned_scale(init)) != (out_scale, ms):
                raise ValueError(
                    f"cannot warm-start a x{out_scale} model learning x{ms} from a "
                    f"x{init.scale} model learning x{learned_scale(init)}"
                )
            init_state = init.generator_state
        held = hold_aside(frames, config) if config.guard else None
        pairs = (held.lr, held.hr) if held is not None and held.hr else None
        res = train(
            frames,
            config,
            method=name,
            init_state=init_state,
            iterations=iterations,
            lr=lr,
            device=device,
            progress=progress,
            strips=held.strips if held is not None else None,
            held_pairs=pairs,
        )
        state = res.generator_state  # train() returns detached CPU copies
        if held is None:
            verdict = guard_skipped("guard off (engine.guard)")
        else:
            verdict = judge(build_generator(config.scale, state), held, config, device)
        info = {
            "iterations": int(res.iterations),
            "final_lr": float(res.final_lr),
            "seconds": float(res.seconds),
            "perceptual": str(res.perceptual),
            "history": plain(res.history),
            "warm_start": init is not None,
            "frames": len(frames),
            "guard": verdict,
            "model_scale": ms,
        }
        refit = min(config.refit_iterations, int(res.iterations))  # none after none
        if pairs is not None and refit > 0:
            state, info["refit"] = _refit(frames, config, name, res, refit, device)
        return TrainedModel(name, out_scale, state, info)

    return fit_


def _refit(
    frames, config: EngineConfig, name: str, first, iterations: int, device
) -> tuple[dict, dict]:
    """The output model: the guard's model trained on, now on the whole frame (its strip
    included), for ``iterations`` (``config.refit_iterations``, at most what the first run
    trained) at the rate the first run ended with. The verdict stays that of the model that
    never saw the strip."""
    from dicom_sr.engine.train import train

    res = train(
        frames,
        config,
        method=name,
        init_state=first.generator_state,
        iterations=iterations,
        lr=first.final_lr,
        device=device,
        recon=False,  # its history is not kept
    )
    return res.generator_state, {"iterations": int(res.iterations), "seconds": float(res.seconds)}


def guard_decision(model: TrainedModel) -> str:
    """``"ibp"`` when the guard found the model no better than ibp, else ``"model"``."""
    verdict = (model.info or {}).get("guard")
    return verdict.get("decision", "model") if isinstance(verdict, dict) else "model"


def _apply_learned(lr, model, config, device) -> torch.Tensor:
    lr = lr.to(device)
    if guard_decision(model) == "ibp":
        return _apply_ibp(lr, model, config, device)
    ms = learned_scale(model)
    cfg = config if ms == config.scale else config.model_copy(update={"scale": ms})
    sr = self_ensemble(model.generator(ms, device), lr, cfg, device)
    w = model_weight(config, model.info.get("guard"))
    if w < 1.0:
        sr = blend_with_ibp(sr, _apply_ibp(lr, model, cfg, device), w)
    return sr if ms == config.scale else finish_scale(sr, lr, config)


#: The registry: method name -> :class:`Method`.
METHODS: dict[str, Method] = {
    "bicubic": Method("bicubic", False, _fit_nothing("bicubic"), _apply_bicubic),
    "ibp": Method("ibp", False, _fit_nothing("ibp"), _apply_ibp),
    "zssr": Method("zssr", True, _fit_learned("zssr"), _apply_learned),
    "cyclegan": Method("cyclegan", True, _fit_learned("cyclegan"), _apply_learned),
}


def get_method(name: str) -> Method:
    """The registered :class:`Method` called ``name``."""
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(
            f"unknown SR method {name!r} (expected one of {sorted(METHODS)})"
        ) from None


def _set_threads(config: EngineConfig) -> None:
    """Apply ``engine.threads`` (0 keeps torch's default). torch has only a process-wide
    setting, so it belongs to the process: ``listen`` and ``batch`` run one series per worker
    process, whose configuration is the only one there; the check makes repeat calls free."""
    if config.threads > 0 and torch.get_num_threads() != config.threads:
        torch.set_num_threads(config.threads)  # process-wide: torch has no local setting


def fit(
    frames: Sequence[np.ndarray],
    config: EngineConfig,
    *,
    init: TrainedModel | None = None,
    iterations: int | None = None,
    lr: float | None = None,
    progress: Progress | None = None,
) -> TrainedModel:
    """Fit ``config.method`` to ``frames`` (2-D float32 in [0, 1]); ``init`` warm-starts it.

    ``iterations`` / ``lr`` override the configured ones (fine-tuning). Methods that learn
    nothing return at once with ``generator_state=None``. Same seed, frames and device give
    the same model.
    """
    method = get_method(config.method)
    for i, f in enumerate(frames):
        if np.ndim(f) != 2:
            raise ValueError(f"frame {i}: expected a 2-D luminance frame, got {np.shape(f)}")
    _set_threads(config)
    device = select_device(config.device)
    with repeatable(device):
        model = method.fit(
            frames,
            config,
            init=init,
            iterations=iterations,
            lr=lr,
            progress=progress,
            device=device,
        )
    logger.debug("fit %s x%d: %s", model.method, model.scale, model.info.get("iterations"))
    return model


def finetune(
    frame: np.ndarray, model: TrainedModel, config: EngineConfig, progress: Progress | None = None
) -> TrainedModel:
    """Warm-start from ``model`` on one frame with the fine-tuning budget and rate."""
    return fit(
        [frame],
        config,
        init=model,
        iterations=config.finetune_iterations,
        lr=config.finetune_lr,
        progress=progress,
    )


def upscale(frame: np.ndarray, model: TrainedModel, config: EngineConfig) -> np.ndarray:
    """Super-resolve one frame (H, W) with ``model``: (H*s, W*s) float32 clipped to [0, 1].

    The model's method decides how (bicubic | ibp | generator with tiles, self-ensemble and
    back projection); ``config`` gives the inference settings and must have the model's scale.
    """
    if model.scale != config.scale:
        raise ValueError(f"model is for x{model.scale} but the configuration asks x{config.scale}")
    method = get_method(model.method)
    if method.learned and model.generator_state is None:
        raise ValueError(f"a {model.method!r} model needs generator weights; it has none")
    _set_threads(config)
    device = select_device(config.device)
    with repeatable(device), torch.inference_mode():
        sr = method.apply(_as_frame(frame).to(device), model, config, device)
    return _to_numpy(sr)


def super_resolve(
    frame: np.ndarray, config: EngineConfig, progress: Progress | None = None
) -> np.ndarray:
    """Fit on the frame itself, then upscale it (the zero-shot recipe)."""
    return upscale(frame, fit([frame], config, progress=progress), config)


def cine_frame_indices(n: int, k: int) -> list[int]:
    """``min(k, n)`` indices spread evenly over a loop of ``n`` frames (centre of each k-th)."""
    k = min(k, n)
    return [int((i + 0.5) * n / k) for i in range(k)]


def fit_cine(
    frames: Sequence[np.ndarray], config: EngineConfig, progress: Progress | None = None
) -> TrainedModel:
    """One model for a whole cine: ``config.cine_train_frames`` frames spread over the loop,
    ``round(config.cine_budget * config.iterations)`` iterations."""
    if len(frames) == 0:
        raise ValueError("fit_cine: no frames")
    picks = [frames[i] for i in cine_frame_indices(len(frames), config.cine_train_frames)]
    return fit(
        picks, config, iterations=round(config.cine_budget * config.iterations), progress=progress
    )


def load_weights(path: str | os.PathLike[str], *, scale: int | None = None) -> TrainedModel:
    """Read a model written by :func:`save_weights` (safely: ``weights_only=True``).

    Raises ValueError naming the file when it is not a dicom-sr weights file, has a newer
    format version, names an unknown method, or (with ``scale``) is for another scale.
    """
    model = read_weights(path, scale=scale)
    if model.method not in METHODS:
        raise ValueError(
            f"{path}: unknown method {model.method!r} (expected one of {sorted(METHODS)})"
        )
    if METHODS[model.method].learned and not isinstance(model.generator_state, dict):
        raise ValueError(f"{path}: a {model.method!r} weights file without generator weights")
    return model
