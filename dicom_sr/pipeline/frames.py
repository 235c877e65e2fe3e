"""The engine's side of a series: training crops, one training run, one frame's super-resolution.

Tissue regions go through the model; everything else is pixel-replicated (it invents nothing).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from dicom_sr import __version__
from dicom_sr.config import PipelineConfig
from dicom_sr.dicom import regions as us_regions
from dicom_sr.dicom.cache import FrameCache
from dicom_sr.dicom.discover import Series
from dicom_sr.dicom.frames import Frame, open_frames
from dicom_sr.dicom.provenance import Provenance
from dicom_sr.engine import (
    TrainedModel,
    cine_frame_indices,
    finetune,
    fit,
    get_method,
    learned_scale,
    select_device,
    upscale,
    upscale_np,
)
from dicom_sr.engine.infer import model_weight
from dicom_sr.errors import InputError
from dicom_sr.pipeline.results import ProgressCallback, ProgressEvent

__all__ = [
    "MIN_TRAIN_SIDE",
    "train_series",
    "super_resolve_frame",
    "guard_text",
    "make_provenance",
    "frame_config",
    "short_uid",
]

logger = logging.getLogger(__name__)

#: Tissue regions smaller than this (LR pixels, either side) are not used to train the model.
MIN_TRAIN_SIDE = 24


def short_uid(uid: str) -> str:
    """The last digits of a UID: enough to tell series apart in a log line."""
    return "..." + uid[-12:] if len(uid) > 15 else uid


def guard_text(guard: dict[str, Any]) -> str:
    """The guard's decision in one phrase, for the DerivationDescription and the log."""
    if not guard:
        return ""
    decision = guard.get("decision", "model")
    scores = ""
    if guard.get("model_db") is not None and guard.get("ibp_db") is not None:
        scores = (
            f" (model {guard['model_db']:.2f} dB, ibp {guard['ibp_db']:.2f} dB"
            f" on {guard.get('pairs', '?')} held-aside pairs)"
        )
    reason = f": {guard['reason']}" if guard.get("reason") else ""
    return f"guard: output {'model' if decision == 'model' else 'ibp'}{scores}{reason}"


def make_provenance(
    config: PipelineConfig, model: TrainedModel | None, guard: dict, revision: int = 0
) -> Provenance:
    """What the derived headers record: the method, the configuration's hash, the guard."""
    info = model.info if model is not None else {}
    method, scale = config.engine.method, config.engine.scale
    learned = learned_scale(model) if model is not None else scale
    if learned != scale:  # x4 through an x2 model (engine.model_scale)
        method += f" (x{learned} model, then bicubic and back projection to x{scale})"
    prior = info.get("warm_start_prior") or {}
    return Provenance(
        method=method,
        scale=scale,
        iterations=int(info.get("iterations", 0)),
        pipeline_name=config.name,
        pipeline_version=config.version,
        config_hash=config.hash(),
        software_version=__version__,
        perceptual=str(info.get("perceptual", "n/a")),
        extra="; ".join(t for t in (guard_text(guard), _blend_text(config, model, guard)) if t),
        revision=revision,
        prior_file=str(prior.get("file", "")),
        prior_digest=str(prior.get("digest", "")),
    )


def _blend_text(config: PipelineConfig, model: TrainedModel | None, guard: dict) -> str:
    """The model's share of a learned method's output (the rest ibp), for the provenance."""
    if model is None or not get_method(model.method).learned or guard.get("decision") == "ibp":
        return ""
    return f"model weight {model_weight(config.engine, guard):g} (rest ibp)"


def _iter_tissue_crops(
    series: Series, indices: set[int], cache: FrameCache | None = None
) -> Iterator[np.ndarray]:
    """Luminance crops of the tissue regions of the wanted frames (running index over the series).

    Only the wanted frames are decoded (kept in `cache`, when given, for the write). An
    instance that cannot be read gives no crops (it fails on its own when it is written).
    """
    first = 0
    for inst in series.instances:
        local = sorted(i - first for i in indices if first <= i < first + inst.number_of_frames)
        first += inst.number_of_frames
        if not local:
            continue
        try:
            with open_frames(inst, cache) as reader:
                boxes = us_regions.tissue_regions(reader.header, inst.rows, inst.columns)
                for frame in reader.frames(local):
                    for r in boxes:
                        crop = frame.luma[r.y0 : r.y1 + 1, r.x0 : r.x1 + 1]
                        if min(crop.shape) >= MIN_TRAIN_SIDE:
                            yield crop
        except InputError as exc:
            logger.warning("not used for training: %s", exc)


def train_series(
    series: Series,
    config: PipelineConfig,
    *,
    init: TrainedModel | None = None,
    progress: ProgressCallback | None = None,
    cache: FrameCache | None = None,
    iterations: int | None = None,
) -> TrainedModel:
    """Train the engine once for the whole series (the cine default: train once, reuse).

    ``iterations`` replaces the budget (a warm start from a scanner prior).
    Fathers are drawn from the tissue regions of frames spread over the series, decoded
    through `cache` when given (see :func:`~dicom_sr.dicom.frames.open_frames`). Methods that
    do not learn return at once. A series with too little tissue to learn from gets ``ibp``,
    and the model's ``info["guard"]`` says why: a user who asked for a study gets every series.
    """
    eng = config.engine

    def report(done: int, total: int) -> None:
        if progress:
            progress(ProgressEvent(series.series_uid, "train", done, total))

    if not get_method(eng.method).learned:
        return fit([], eng)
    if eng.cine_mode == "cold":
        # every frame trains its own model in _super_resolve_frame; nothing shared to train
        info = {"iterations": eng.iterations, "cine_mode": "cold"}
        return TrainedModel(eng.method, eng.scale, None, info)
    n = series.n_frames
    picks = cine_frame_indices(n, eng.cine_train_frames)
    crops = list(_iter_tissue_crops(series, set(picks), cache))
    if not crops:
        reason = f"no tissue region of at least {MIN_TRAIN_SIDE} px a side to train on"
        logger.warning("series %s: %s; output is ibp", short_uid(series.series_uid), reason)
        model = fit([], eng.model_copy(update={"method": "ibp"}))
        model.info["guard"] = {"decision": "ibp", "reason": reason}
        return model
    # one frame: the single-image budget; several: the cine budget (train once, reuse)
    budget = eng.iterations if n == 1 else round(eng.cine_budget * eng.iterations)
    if iterations is not None:
        budget = iterations
    return fit(crops, eng, init=init, iterations=budget, progress=report)


def frame_config(config: PipelineConfig, number_of_frames: int) -> PipelineConfig:
    """The configuration the frames of one instance are upscaled with: those of a cine (a
    multi-frame instance) use ``engine.cine_ensemble`` unless it is ``"same"``."""
    eng = config.engine
    size = eng.cine_ensemble
    if number_of_frames < 2 or size == "same" or size == eng.ensemble:
        return config
    return config.model_copy(update={"engine": eng.model_copy(update={"ensemble": size})})


def super_resolve_frame(
    frame: Frame, boxes: Sequence[us_regions.Region], model: TrainedModel, config: PipelineConfig
) -> tuple[np.ndarray, np.ndarray | None]:
    """Upscale one frame: the model inside tissue regions, pixel replication elsewhere."""
    eng = config.engine
    s = eng.scale
    luma = upscale_np(frame.luma, s, "nearest")
    per_frame = get_method(model.method).learned and eng.cine_mode != "shared"
    for r in boxes:
        crop = frame.luma[r.y0 : r.y1 + 1, r.x0 : r.x1 + 1]
        frame_model = model
        if per_frame:
            if eng.cine_mode == "cold":
                frame_model = fit([crop], eng)
            elif eng.finetune_iterations > 0:
                frame_model = finetune(crop, model, eng)
        luma[s * r.y0 : s * (r.y1 + 1), s * r.x0 : s * (r.x1 + 1)] = upscale(crop, frame_model, eng)
    chroma = None
    if frame.chroma is not None:  # on the engine's device: the CPU took longer than the GPU
        chroma = upscale_np(frame.chroma, s, "bicubic", device=select_device(eng.device))
    return luma, chroma
