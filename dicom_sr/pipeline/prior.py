"""Scanner priors on the pipeline's side: build one from many series, pick one for a series.

A prior is one generator trained by the series' own self-supervision on frames of many series
(nothing external). A series that a ``[[priors]]`` rule of the pipeline matches (Manufacturer,
ManufacturerModelName, the sender's AE title) warm-starts from it and trains
``engine.prior_iterations`` iterations instead of the full budget; the guard still judges it.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dicom_sr.config import ConfigError, PipelineConfig
from dicom_sr.dicom.cache import FrameCache
from dicom_sr.dicom.discover import Series, discover
from dicom_sr.dicom.frames import read_header
from dicom_sr.engine import TrainedModel, cine_frame_indices, fit, get_method, learned_scale
from dicom_sr.engine.infer import model_scale
from dicom_sr.engine.prior import read_prior, save_prior
from dicom_sr.errors import InputError
from dicom_sr.pipeline.frames import _iter_tissue_crops, short_uid, train_series
from dicom_sr.pipeline.results import ProgressCallback

__all__ = [
    "Prior",
    "build_prior",
    "equipment",
    "load_prior",
    "prior_for_series",
    "priors_identity",
    "train_with_prior",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prior:
    """A prior file, the SHA-256 of its weights and its model."""

    file: Path
    digest: str
    model: TrainedModel


def equipment(series: Series) -> tuple[str, str]:
    """Manufacturer and ManufacturerModelName of the series' first instance ("" if absent)."""
    try:
        ds = read_header(series.instances[0].path)
    except (InputError, IndexError):
        return "", ""
    return str(ds.get("Manufacturer", "") or ""), str(ds.get("ManufacturerModelName", "") or "")


def load_prior(file: str | os.PathLike[str], config: PipelineConfig) -> Prior:
    """Read a prior for ``config``; :class:`ConfigError` naming the file when it is missing, is
    not a prior, or was trained for another scale than the pipeline's."""
    path = Path(file)
    try:
        model = read_prior(path)
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: prior file not found (a [[priors]] rule of pipeline {config.name})"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the prior: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    eng = config.engine
    want, got = (eng.scale, model_scale(eng)), (model.scale, learned_scale(model))
    if want != got:
        raise ConfigError(
            f"{path}: prior for x{got[0]} (model x{got[1]}), but pipeline {config.name} "
            f"asks x{want[0]} (model x{want[1]})"
        )
    return Prior(path, str(model.info["prior"]["digest"]), model)


def _uses_priors(config: PipelineConfig) -> bool:
    eng = config.engine
    return bool(config.priors) and get_method(eng.method).learned and eng.cine_mode != "cold"


def priors_identity(config: PipelineConfig) -> list[str]:
    """The weights digests of every prior the pipeline maps, in rule order ([] without any):
    part of the pipeline's identity, so another prior file gives other derived UIDs."""
    if not _uses_priors(config):
        return []
    return [load_prior(rule.file, config).digest for rule in config.priors]


def prior_for_series(series: Series, config: PipelineConfig, calling_ae: str = "") -> Prior | None:
    """The prior of the first ``[[priors]]`` rule matching the series, or None."""
    if not _uses_priors(config):
        return None
    maker, model = equipment(series)
    rule = config.prior_for(maker, model, calling_ae)
    return None if rule is None else load_prior(rule.file, config)


def train_with_prior(
    series: Series,
    config: PipelineConfig,
    *,
    init: TrainedModel | None = None,
    calling_ae: str = "",
    progress: ProgressCallback | None = None,
    cache: FrameCache | None = None,
) -> TrainedModel:
    """:func:`train_series`, warm-started from the series' prior with ``prior_iterations``
    when a rule matches and no ``init`` is given; ``info["warm_start_prior"]`` says which."""
    prior = None if init is not None else prior_for_series(series, config, calling_ae)
    if prior is None:
        return train_series(series, config, init=init, progress=progress, cache=cache)
    n = config.engine.prior_iterations
    logger.info(
        "series %s: warm start from prior %s, %d iteration(s)",
        short_uid(series.series_uid), prior.file.name, n,
    )  # fmt: skip
    model = train_series(
        series, config, init=prior.model, iterations=n, progress=progress, cache=cache
    )
    if model.generator_state is not None:  # not the ibp of a series with no tissue
        model.info["warm_start_prior"] = {"file": prior.file.name, "digest": prior.digest}
    return model


def build_prior(
    inputs: Iterable[str | os.PathLike[str]],
    config: PipelineConfig,
    out: str | os.PathLike[str],
    *,
    iterations: int | None = None,
    per_series: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Train one generator on frames of every series in ``inputs`` and write it to ``out``.

    ``per_series`` frames (default ``engine.cine_train_frames``) spread over each series, so
    one long cine does not outweigh the others; ``iterations`` defaults to the cine budget.
    Returns the metadata written: pipeline, scales, series and frame counts, the equipment
    seen (never a patient's name or ID) and the weights' SHA-256.
    """
    eng, inputs = config.engine, list(inputs)
    if not get_method(eng.method).learned:
        raise ConfigError(f"pipeline {config.name}: method {eng.method!r} learns nothing")
    found = discover(inputs, max_pixels=config.output.max_pixels)
    per = per_series or eng.cine_train_frames
    crops, makers, models, used = [], set(), set(), 0
    for series in found.series:
        picks = set(cine_frame_indices(series.n_frames, per))
        got = list(_iter_tissue_crops(series, picks))
        if not got:
            logger.warning("series %s: no tissue to learn from", short_uid(series.series_uid))
            continue
        crops += got
        used += 1
        maker, model = equipment(series)
        makers.update([maker] if maker else [])
        models.update([model] if model else [])
    if not crops:
        raise InputError(", ".join(map(str, inputs)), "no usable ultrasound series to learn from")
    budget = round(eng.cine_budget * eng.iterations) if iterations is None else iterations
    logger.info("prior: %d frame(s) of %d series, %d iteration(s)", len(crops), used, budget)
    t0 = time.perf_counter()
    trained = fit(crops, eng, iterations=budget, progress=progress)
    meta = {
        "pipeline": config.name,
        "pipeline_version": config.version,
        "config_hash": config.hash(),
        "method": eng.method,
        "scale": eng.scale,
        "model_scale": learned_scale(trained),
        "series": used,
        "frames": len(crops),
        "per_series": per,
        "iterations": int(trained.info.get("iterations", budget)),
        "seconds": round(time.perf_counter() - t0, 2),
        "manufacturers": sorted(makers),
        "models": sorted(models),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    return save_prior(trained, meta, out)
