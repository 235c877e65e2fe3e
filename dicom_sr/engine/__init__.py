"""The SR engine: numpy frame in, super-resolved frame out. Never imports DICOM libraries.

Public API (implemented in :mod:`dicom_sr.engine.api`)::

    fit(frames, config, *, init=None, iterations=None, lr=None, progress=None) -> TrainedModel
    upscale(frame, model, config) -> np.ndarray   # ibp output when the guard said so
    guard_decision(model) -> "model" | "ibp"      # model.info["guard"]: see engine.guard
    learned_scale(model) -> int                   # the factor its generator learned
    super_resolve(frame, config, progress=None) -> np.ndarray
    fit_cine(frames, config, progress=None) -> TrainedModel
    cine_frame_indices(n, k) -> list[int]
    finetune(frame, model, config, progress=None) -> TrainedModel
    save_weights(model, path); load_weights(path, *, scale=None) -> TrainedModel
    select_device(name) -> torch.device

and the resampling helpers of :mod:`dicom_sr.engine.resize` (``downscale``,
``upscale_bicubic``, ``resize_bicubic``, ``upscale_np``).
"""

from dicom_sr.engine.api import (
    METHODS,
    TrainedModel,
    cine_frame_indices,
    finetune,
    fit,
    fit_cine,
    get_method,
    guard_decision,
    learned_scale,
    load_weights,
    pixel_identity,
    save_weights,
    select_device,
    super_resolve,
    upscale,
)
from dicom_sr.engine.resize import downscale, resize_bicubic, upscale_bicubic, upscale_np

__all__ = [
    "METHODS",
    "TrainedModel",
    "cine_frame_indices",
    "finetune",
    "fit",
    "fit_cine",
    "get_method",
    "guard_decision",
    "learned_scale",
    "load_weights",
    "pixel_identity",
    "save_weights",
    "select_device",
    "super_resolve",
    "upscale",
    "downscale",
    "resize_bicubic",
    "upscale_bicubic",
    "upscale_np",
]
