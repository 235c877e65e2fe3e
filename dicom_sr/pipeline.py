"""Where DICOM meets the engine: one series in, one derived series out.

:func:`process_series` is the seam every front end shares (``process``, ``listen``, ``batch``,
``evaluate``): it holds no global state, never prints, and reports progress through a callback.
Frames stream through it one at a time: decoded, split into tissue regions (super-resolved by
the engine) and the rest (pixel replication, which invents nothing), encoded, written.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from dicom_sr import __version__
from dicom_sr.config import PipelineConfig
from dicom_sr.dicom import regions as us_regions
from dicom_sr.dicom.derive import derive_dataset
from dicom_sr.dicom.discover import Discovery, Instance, Series, Skipped, discover
from dicom_sr.dicom.encode import FrameEncoder
from dicom_sr.dicom.frames import Frame, FrameDecodeError, open_frames, to_pixels
from dicom_sr.dicom.provenance import Provenance, derived_series_uid, derived_sop_uid
from dicom_sr.dicom.store import Manifest, instance_path, write_atomic
from dicom_sr.engine import (
    TrainedModel,
    cine_frame_indices,
    finetune,
    fit,
    upscale,
    upscale_np,
)

__all__ = [
    "ProgressEvent",
    "InstanceResult",
    "SeriesResult",
    "RunResult",
    "process_series",
    "process_inputs",
]

logger = logging.getLogger(__name__)

#: Tissue regions smaller than this (LR pixels, either side) are not used to train the model.
MIN_TRAIN_SIDE = 24


@dataclass(frozen=True)
class ProgressEvent:
    """One step of work. ``stage`` is "train" or "frames"; ``done``/``total`` count its units."""

    series_uid: str
    stage: Literal["train", "frames"]
    done: int
    total: int


ProgressCallback = Callable[[ProgressEvent], None]


@dataclass
class InstanceResult:
    """What happened to one source instance."""

    source: Path
    status: Literal["written", "done", "failed"]
    output: Path | None = None
    frames: int = 0
    reason: str = ""


@dataclass
class SeriesResult:
    """What happened to one series: its derived series and each instance."""

    study_uid: str
    source_series_uid: str
    derived_series_uid: str
    instances: list[InstanceResult] = field(default_factory=list)
    train_seconds: float = 0.0
    seconds: float = 0.0
    model: TrainedModel | None = None

    @property
    def frames(self) -> int:
        return sum(r.frames for r in self.instances if r.status == "written")

    @property
    def failed(self) -> list[InstanceResult]:
        return [r for r in self.instances if r.status == "failed"]


@dataclass
class RunResult:
    """Everything a ``process`` run did: per-series results and the files it skipped."""

    series: list[SeriesResult] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def written(self) -> int:
        return sum(1 for s in self.series for r in s.instances if r.status == "written")

    @property
    def frames(self) -> int:
        return sum(s.frames for s in self.series)

    @property
    def all_skipped(self) -> list[Skipped]:
        """Skipped inputs plus instances that failed while being processed."""
        failed = [
            Skipped(str(r.source), r.reason)
            for s in self.series
            for r in s.instances
            if r.status == "failed"
        ]
        return [*self.skipped, *failed]


def _provenance(config: PipelineConfig, model: TrainedModel | None) -> Provenance:
    info = model.info if model is not None else {}
    return Provenance(
        method=config.engine.method,
        scale=config.engine.scale,
        iterations=int(info.get("iterations", 0)),
        pipeline_name=config.name,
        pipeline_version=config.version,
        config_hash=config.hash(),
        software_version=__version__,
        perceptual=str(info.get("perceptual", "n/a")),
    )


def _iter_tissue_crops(series: Series, indices: set[int]) -> Iterator[np.ndarray]:
    """Luminance crops of the tissue regions of the wanted frames (running index over the series).

    Only the wanted frames are decoded.
    """
    first = 0
    for inst in series.instances:
        local = sorted(i - first for i in indices if first <= i < first + inst.number_of_frames)
        first += inst.number_of_frames
        if not local:
            continue
        try:
            with open_frames(inst) as reader:
                boxes = us_regions.tissue_regions(reader.header, inst.rows, inst.columns)
                for frame in reader.frames(local):
                    for r in boxes:
                        crop = frame.luma[r.y0 : r.y1 + 1, r.x0 : r.x1 + 1]
                        if min(crop.shape) >= MIN_TRAIN_SIDE:
                            yield crop
        except FrameDecodeError as exc:
            logger.warning("not used for training: %s", exc)


def train_series(
    series: Series,
    config: PipelineConfig,
    *,
    init: TrainedModel | None = None,
    progress: ProgressCallback | None = None,
) -> TrainedModel:
    """Train the engine once for the whole series (the cine default: train once, reuse).

    Fathers are drawn from the tissue regions of frames spread over the series. Methods that
    do not learn return at once.
    """
    eng = config.engine

    def report(done: int, total: int) -> None:
        if progress:
            progress(ProgressEvent(series.series_uid, "train", done, total))

    if eng.method in ("bicubic", "ibp"):
        return fit([], eng)
    if eng.cine_mode == "cold":
        # every frame trains its own model in _super_resolve_frame; nothing shared to train
        info = {"iterations": eng.iterations, "cine_mode": "cold"}
        return TrainedModel(eng.method, eng.scale, None, info)
    n = series.n_frames
    picks = cine_frame_indices(n, eng.cine_train_frames)
    crops = list(_iter_tissue_crops(series, set(picks)))
    if not crops:
        raise ValueError(f"series {series.series_uid}: no tissue region large enough to train on")
    # one frame: the single-image budget; several: the cine budget (train once, reuse)
    budget = eng.iterations if n == 1 else round(eng.cine_budget * eng.iterations)
    return fit(crops, eng, init=init, iterations=budget, progress=report)


def _super_resolve_frame(
    frame: Frame, boxes: Sequence[us_regions.Region], model: TrainedModel, config: PipelineConfig
) -> tuple[np.ndarray, np.ndarray | None]:
    """Upscale one frame: the model inside tissue regions, pixel replication elsewhere."""
    eng = config.engine
    s = eng.scale
    luma = upscale_np(frame.luma, s, "nearest")
    for r in boxes:
        crop = frame.luma[r.y0 : r.y1 + 1, r.x0 : r.x1 + 1]
        frame_model = model
        if eng.method in ("zssr", "cyclegan") and eng.cine_mode != "shared":
            if eng.cine_mode == "cold":
                frame_model = fit([crop], eng)
            elif eng.finetune_iterations > 0:
                frame_model = finetune(crop, model, eng)
        luma[s * r.y0 : s * (r.y1 + 1), s * r.x0 : s * (r.x1 + 1)] = upscale(crop, frame_model, eng)
    chroma = None if frame.chroma is None else upscale_np(frame.chroma, s, "bicubic")
    return luma, chroma


def _write_instance(
    inst: Instance,
    model: TrainedModel,
    config: PipelineConfig,
    out_dir: Path,
    derived_series: str,
    sop_uid: str,
    path: Path,
    provenance: Provenance,
    on_frame: Callable[[], None],
) -> InstanceResult:
    """Stream one instance's frames through the engine and the encoder, then write it."""
    t0 = time.perf_counter()
    s = config.engine.scale
    cfg_hash = provenance.config_hash
    with open_frames(inst) as reader:
        boxes = us_regions.tissue_regions(reader.header, inst.rows, inst.columns)
        encoder = FrameEncoder(
            inst.rows * s,
            inst.columns * s,
            reader.layout,
            config.output.compress,
            config.output.jpeg_quality,
        )
        n = 0
        for frame in reader:
            luma, chroma = _super_resolve_frame(frame, boxes, model, config)
            encoder.add(to_pixels(luma, chroma, reader.layout))
            n += 1
            on_frame()
        ds = derive_dataset(
            reader.header,
            encoder.finish(),
            scale=s,
            number_of_frames=n,
            provenance=provenance,
            output=config.output,
            series_uid=derived_series,
            sop_uid=sop_uid,
        )
    write_atomic(ds, path)
    seconds = time.perf_counter() - t0
    Manifest(out_dir).record(
        {
            "source": str(inst.path),
            "source_sop_uid": inst.sop_instance_uid,
            "output": str(path.relative_to(out_dir)),
            "sop_uid": sop_uid,
            "series_uid": derived_series,
            "config_hash": cfg_hash,
            "pipeline": config.name,
            "method": config.engine.method,
            "scale": s,
            "frames": n,
            "seconds": round(seconds, 3),
            "status": "written",
        }
    )
    logger.info("wrote %s (%d frames, %.1f s)", path.name, n, seconds)
    return InstanceResult(inst.path, "written", path, n)


def process_series(
    series: Series,
    config: PipelineConfig,
    out_dir: Path,
    *,
    init: TrainedModel | None = None,
    progress: ProgressCallback | None = None,
) -> SeriesResult:
    """Super-resolve every frame of one series and write its derived series under ``out_dir``.

    Instances already written by an identical configuration (same derived UIDs, listed in the
    manifest and readable) are skipped, so an interrupted run resumes where it stopped. An
    instance that fails to decode is reported in the result; the others still go through.
    """
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    cfg_hash = config.hash()
    root = config.output.uid_root
    result = SeriesResult(
        study_uid=series.study_uid,
        source_series_uid=series.series_uid,
        derived_series_uid=derived_series_uid(root, series.series_uid, cfg_hash),
    )
    manifest = Manifest(out_dir)
    todo = []
    for inst in series.instances:
        sop_uid = derived_sop_uid(root, inst.sop_instance_uid, cfg_hash)
        path = instance_path(out_dir, series.study_uid, result.derived_series_uid, sop_uid)
        if manifest.done(path):
            result.instances.append(InstanceResult(inst.path, "done", path, inst.number_of_frames))
        else:
            todo.append((inst, sop_uid, path))
    if not todo:
        result.seconds = time.perf_counter() - t0
        return result

    t_train = time.perf_counter()
    result.model = train_series(series, config, init=init, progress=progress)
    result.train_seconds = time.perf_counter() - t_train
    provenance = _provenance(config, result.model)

    total = sum(inst.number_of_frames for inst, _, _ in todo)
    done = 0

    def on_frame() -> None:
        nonlocal done
        done += 1
        if progress:
            progress(ProgressEvent(series.series_uid, "frames", done, total))

    for inst, sop_uid, path in todo:
        before = done
        try:
            result.instances.append(
                _write_instance(
                    inst,
                    result.model,
                    config,
                    out_dir,
                    result.derived_series_uid,
                    sop_uid,
                    path,
                    provenance,
                    on_frame,
                )
            )
        except (FrameDecodeError, ValueError, OSError) as exc:
            logger.warning("failed: %s: %s", inst.path, exc)
            done = before + inst.number_of_frames
            result.instances.append(InstanceResult(inst.path, "failed", reason=str(exc)))
    result.seconds = time.perf_counter() - t0
    return result


def process_inputs(
    inputs: Iterable[str | Path],
    config: PipelineConfig,
    out_dir: Path,
    *,
    init: TrainedModel | None = None,
    progress: ProgressCallback | None = None,
    on_series: Callable[[Series, int, int], None] | None = None,
    discovery: Discovery | None = None,
) -> RunResult:
    """Discover the inputs and run :func:`process_series` on each series found."""
    t0 = time.perf_counter()
    if discovery is None:
        discovery = discover(inputs, max_pixels=config.output.max_pixels)
    run = RunResult(skipped=list(discovery.skipped))
    for k, series in enumerate(discovery.series):
        if on_series:
            on_series(series, k, len(discovery.series))
        try:
            run.series.append(process_series(series, config, out_dir, init=init, progress=progress))
        except (ValueError, FrameDecodeError) as exc:
            logger.warning("series skipped: %s", exc)
            for inst in series.instances:
                run.skipped.append(Skipped(str(inst.path), str(exc)))
    run.seconds = time.perf_counter() - t0
    return run
