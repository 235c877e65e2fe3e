"""The seam: :func:`process_series` (one series in, one derived series out) and
:func:`process_inputs` (discover, then each series), with the identity behind derived UIDs."""

from __future__ import annotations

import hashlib
import json
import logging
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dicom_sr.config import PipelineConfig
from dicom_sr.dicom import regions as us_regions
from dicom_sr.dicom.cache import FrameCache
from dicom_sr.dicom.derive import derive_dataset
from dicom_sr.dicom.discover import Discovery, Instance, Series, discover
from dicom_sr.dicom.encode import FrameEncoder
from dicom_sr.dicom.frames import open_frames, to_pixels
from dicom_sr.dicom.inspection import check_max_pixels
from dicom_sr.dicom.provenance import Provenance, derived_series_uid, derived_sop_uid
from dicom_sr.dicom.store import (
    Manifest,
    instance_path,
    remove_stale_parts,
    series_lock,
    write_atomic,
)
from dicom_sr.engine import TrainedModel, pixel_identity
from dicom_sr.errors import (
    PERMANENT,
    Cancelled,
    DicomSrError,
    InputError,
    WriteError,
    classify,
    describe,
)
from dicom_sr.pipeline.frames import (
    frame_config,
    guard_text,
    make_provenance,
    short_uid,
    super_resolve_frame,
)
from dicom_sr.pipeline.prior import priors_identity, train_with_prior
from dicom_sr.pipeline.results import (
    CancelCheck,
    InstanceResult,
    ProgressCallback,
    ProgressEvent,
    RunResult,
    SeriesResult,
    Stage,
)

__all__ = ["identity_hash", "derived_series_uid_for", "process_series", "process_inputs"]

logger = logging.getLogger(__name__)


def identity_hash(config: PipelineConfig) -> str:
    """Hash of everything that decides the output pixels: the configuration, what the
    engine resolves at run time (perceptual source and VGG19 digest, device kind) and the
    weights digests of the pipeline's scanner priors (:class:`ConfigError` naming a prior file
    that is missing, not a prior, or for another scale)."""
    payload: dict[str, Any] = {"config": config.hash(), "engine": pixel_identity(config.engine)}
    priors = priors_identity(config)
    if priors:  # absent without priors: the identities of before priors existed still hold
        payload["priors"] = priors
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def derived_series_uid_for(series_uid: str, config: PipelineConfig, revision: int = 0) -> str:
    """The derived SeriesInstanceUID of ``series_uid`` under ``config``: the job key."""
    return derived_series_uid(
        config.output.uid_root, series_uid, identity_hash(config), revision=revision
    )


@dataclass(frozen=True)
class _Target:
    """One instance still to write: its derived SOP Instance UID and output path."""

    instance: Instance
    sop_uid: str
    path: Path


def _write_instance(
    target: _Target,
    model: TrainedModel,
    config: PipelineConfig,
    out_dir: Path,
    derived_series: str,
    provenance: Provenance,
    on_frame: Callable[[str], None],
    cache: FrameCache | None = None,
) -> InstanceResult:
    """Stream one instance's frames through the engine and the encoder, then write it
    (frames that `cache` holds are not decoded again)."""
    inst, path = target.instance, target.path
    t0 = time.perf_counter()
    s = config.engine.scale
    with open_frames(inst, cache) as reader:
        boxes = us_regions.tissue_regions(reader.header, inst.rows, inst.columns)
        with FrameEncoder(
            inst.rows * s,
            inst.columns * s,
            reader.layout,
            config.output.compress,
            config.output.jpeg_quality,
            spool_dir=out_dir,  # on the output's disk, not a RAM-backed /tmp
        ) as encoder:
            n = 0
            per_frame = frame_config(config, inst.number_of_frames)
            for frame in reader:
                luma, chroma = super_resolve_frame(frame, boxes, model, per_frame)
                encoder.add(to_pixels(luma, chroma, reader.layout))
                n += 1
                on_frame(inst.sop_instance_uid)
            ds = derive_dataset(
                reader.header,
                encoder.finish(),
                scale=s,
                number_of_frames=n,
                provenance=provenance,
                output=config.output,
                series_uid=derived_series,
                sop_uid=target.sop_uid,
            )
            size = write_atomic(ds, path)
    seconds = time.perf_counter() - t0
    Manifest.shared(out_dir).record(
        _manifest_entry(target, config, out_dir, derived_series, provenance)
        | {"status": "written", "frames": n, "bytes": size, "seconds": round(seconds, 3)}
    )
    logger.info(
        "series %s: wrote %s (%d frames, %.1f s)", short_uid(derived_series), path.name, n, seconds
    )
    return InstanceResult(inst.path, "written", path, n)


def _manifest_entry(
    target: _Target,
    config: PipelineConfig,
    out_dir: Path,
    derived_series: str,
    provenance: Provenance,
) -> dict[str, Any]:
    return {
        "source": str(target.instance.path),
        "source_sop_uid": target.instance.sop_instance_uid,
        "output": str(target.path.relative_to(out_dir)),
        "sop_uid": target.sop_uid,
        "series_uid": derived_series,
        "config_hash": provenance.config_hash,
        **(
            {"prior": provenance.prior_file, "prior_digest": provenance.prior_digest}
            if provenance.prior_digest
            else {}
        ),
        "pipeline": config.name,
        "method": config.engine.method,
        "scale": config.engine.scale,
    }


def process_series(
    series: Series,
    config: PipelineConfig,
    out_dir: Path,
    *,
    init: TrainedModel | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelCheck | None = None,
    revision: int = 0,
    model: TrainedModel | None = None,
    calling_ae: str = "",
) -> SeriesResult:
    """Super-resolve every frame of one series and write its derived series under ``out_dir``.

    Instances already written by an identical configuration (same derived UIDs, listed as
    written in the manifest, file present with its size) are skipped, so an interrupted run
    resumes where it stopped. Bad input and failed writes never raise: each becomes a failed
    :class:`InstanceResult` with its reason and the other instances still go through. Only
    :class:`~dicom_sr.errors.Cancelled` leaves, when ``cancel()`` turns true (polled every
    training iteration and every frame). ``revision`` > 0 makes a new, versioned derived
    series of the same source (its own UIDs). ``model``: upscale with this model as it is,
    no training (a node's late instances join their derived series with the model saved for
    it). A lock per derived series keeps two runs on one ``out_dir`` from computing the same
    series at once. Without ``init`` or ``model``, a series that a ``[[priors]]`` rule matches
    (its equipment, or ``calling_ae``: the AE title that sent it) warm-starts from that prior.
    """
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    ident = identity_hash(config)
    root = config.output.uid_root
    result = SeriesResult(
        study_uid=series.study_uid,
        source_series_uid=series.series_uid,
        derived_series_uid=derived_series_uid(root, series.series_uid, ident, revision=revision),
    )
    tag = short_uid(series.series_uid)

    def emit(stage: Stage, done: int = 0, total: int = 0, uid: str | None = None, msg: str = ""):
        if progress:
            progress(ProgressEvent(series.series_uid, stage, done, total, uid, msg))

    def check_cancel() -> None:
        if cancel is not None and cancel():
            raise Cancelled(f"series {series.series_uid}: cancelled")

    def on_train(event: ProgressEvent) -> None:
        check_cancel()
        if progress:
            progress(event)

    logger.info(
        "series %s: %d instance(s), %d frame(s) -> %s",
        tag,
        len(series.instances),
        series.n_frames,
        short_uid(result.derived_series_uid),
    )
    emit("start", 0, series.n_frames)
    try:
        with series_lock(out_dir, result.derived_series_uid):
            todo = _pending(series, result, config, out_dir, ident, revision)
            if todo:
                # each frame decoded once for the series; the spool goes with the series,
                # however it ends (Cancelled included)
                with FrameCache(spool_dir=out_dir) as cache:
                    _derive_series(
                        series, todo, result, config, out_dir, init, on_train, emit,
                        check_cancel, cache, revision, model, calling_ae,
                    )  # fmt: skip
    except Cancelled:
        raise
    except Exception as exc:  # noqa: BLE001 - the lock or the spool: this series fails, not the run
        _note_failure(result, exc, f"series {series.series_uid}")
        result.reason = result.reason or describe(exc)
        seen = {r.source for r in result.instances}
        for inst in series.instances:  # every instance gets an outcome
            if inst.path not in seen:
                result.instances.append(InstanceResult(inst.path, "failed", reason=result.reason))
    result.seconds = time.perf_counter() - t0
    if result.status == "failed":
        why = result.reason or (result.failed[0].reason if result.failed else "no instances")
        logger.warning("series %s: failed: %s", tag, why)
        emit("failed", result.frames, series.n_frames, msg=why)
    else:
        logger.info(
            "series %s: %s, %d frame(s) written, %d failed, %.1f s",
            tag,
            result.status,
            result.frames,
            len(result.failed),
            result.seconds,
        )
        emit("done", result.frames, series.n_frames, msg=result.status)
    return result


def _pending(
    series: Series,
    result: SeriesResult,
    config: PipelineConfig,
    out_dir: Path,
    ident: str,
    revision: int,
) -> list[_Target]:
    """The instances still to write; those done are added to ``result`` as "done", those whose
    UIDs cannot name a file, or whose frames exceed ``output.max_pixels``, as "failed"."""
    manifest = Manifest.shared(out_dir)
    todo = []
    for inst in series.instances:
        try:  # the size limit, here so that no front end can forget it
            check_max_pixels(inst.path, inst.rows, inst.columns, config.output.max_pixels)
        except InputError as exc:
            logger.warning("skipping %s: %s", inst.path, exc.reason)
            result.instances.append(InstanceResult(inst.path, "failed", reason=exc.reason))
            result.failure_kind = PERMANENT
            continue
        sop_uid = derived_sop_uid(
            config.output.uid_root, inst.sop_instance_uid, ident, revision=revision
        )
        try:
            path = instance_path(out_dir, series.study_uid, result.derived_series_uid, sop_uid)
        except (InputError, ValueError) as exc:
            result.instances.append(InstanceResult(inst.path, "failed", reason=str(exc)))
            result.failure_kind = PERMANENT
            continue
        if manifest.done(path):
            result.instances.append(InstanceResult(inst.path, "done", path, inst.number_of_frames))
        else:
            todo.append(_Target(inst, sop_uid, path))
    return todo


def _derive_series(
    series: Series,
    todo: list[_Target],
    result: SeriesResult,
    config: PipelineConfig,
    out_dir: Path,
    init: TrainedModel | None,
    on_train: ProgressCallback,
    emit: Callable[..., None],
    check_cancel: Callable[[], None],
    cache: FrameCache | None = None,
    revision: int = 0,
    model: TrainedModel | None = None,
    calling_ae: str = "",
) -> None:
    """Train once for the series (unless ``model`` is given), then write each pending instance;
    failures go in ``result``. Frames decoded for training are kept in `cache` for the write,
    their last use."""
    t_train = time.perf_counter()
    try:
        result.model = model or train_with_prior(
            series, config, init=init, calling_ae=calling_ae, progress=on_train, cache=cache
        )
        result.train_seconds = time.perf_counter() - t_train
        result.guard = dict(result.model.info.get("guard") or {})
        if result.guard:
            logger.info("series %s: %s", short_uid(series.series_uid), guard_text(result.guard))
        provenance = make_provenance(config, result.model, result.guard, revision)
    except Cancelled:
        raise
    except Exception as exc:  # noqa: BLE001 - one series' failure never ends the run
        _note_failure(result, exc, f"series {series.series_uid}: training")
        result.reason = describe(exc)
        for target in todo:
            _fail(result, target, result.reason, config, out_dir)
        return
    if cache is not None:
        cache.storing = False  # the write is each frame's last use

    total = sum(t.instance.number_of_frames for t in todo)
    done = 0

    def on_frame(instance_uid: str) -> None:
        nonlocal done
        done += 1
        emit("frame", done, total, instance_uid)
        check_cancel()

    for target in todo:
        before = done
        check_cancel()
        try:
            result.instances.append(
                _write_instance(
                    target,
                    result.model,
                    config,
                    out_dir,
                    result.derived_series_uid,
                    provenance,
                    on_frame,
                    cache,
                )
            )
        except Cancelled:
            raise
        except (InputError, WriteError) as exc:
            done = before + target.instance.number_of_frames
            _note_failure(result, exc, str(target.instance.path))
            _fail(result, target, str(exc), config, out_dir)
        except Exception as exc:  # noqa: BLE001 - one instance's failure never ends the run
            _note_failure(result, exc, str(target.instance.path))
            done = before + target.instance.number_of_frames
            _fail(result, target, describe(exc), config, out_dir)


def _note_failure(result: SeriesResult, exc: Exception, what: str) -> None:
    """Classify a failure for the front ends that retry (:func:`dicom_sr.errors.classify`);
    a bug of ours (not an input or write error) is logged at ERROR with its traceback."""
    kind = classify(exc)
    if kind == PERMANENT and not isinstance(exc, DicomSrError):
        logger.error("%s: %s", what, describe(exc), exc_info=exc)
        if not result.traceback:
            result.traceback = "".join(traceback.format_exception(exc))
    else:
        logger.debug("%s: %s", what, describe(exc), exc_info=exc)
    if kind == PERMANENT or not result.failure_kind:
        result.failure_kind = kind


def _fail(
    result: SeriesResult, target: _Target, reason: str, config: PipelineConfig, out_dir: Path
) -> None:
    """Record one failed instance in the result, the log and (if it can) the manifest."""
    logger.warning("failed: %s: %s", target.instance.path, reason)
    result.instances.append(InstanceResult(target.instance.path, "failed", reason=reason))
    entry = {
        "source": str(target.instance.path),
        "source_sop_uid": target.instance.sop_instance_uid,
        "output": str(target.path.relative_to(out_dir)),
        "series_uid": result.derived_series_uid,
        "config_hash": config.hash(),
        "status": "failed",
        "reason": reason,
    }
    try:
        Manifest.shared(out_dir).record(entry)
    except OSError as exc:  # the disk that refused the output may refuse the record too
        logger.debug("manifest record of a failure not written: %s", exc)


def process_inputs(
    inputs: Iterable[str | Path],
    config: PipelineConfig,
    out_dir: Path,
    *,
    init: TrainedModel | None = None,
    progress: ProgressCallback | None = None,
    on_series: Callable[[Series, int, int], None] | None = None,
    discovery: Discovery | None = None,
    cancel: CancelCheck | None = None,
) -> RunResult:
    """Discover the inputs and run :func:`process_series` on each series found.

    ``out_dir`` is never searched for inputs (a re-run must not super-resolve its own
    outputs), and stale temporary files of killed writers in it are removed first.
    """
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    removed = remove_stale_parts(out_dir)
    if removed:
        logger.info("removed %d stale temporary file(s) of an interrupted run", removed)
    if discovery is None:
        discovery = discover(inputs, max_pixels=config.output.max_pixels, exclude=[out_dir])
    run = RunResult(skipped=list(discovery.skipped))
    for k, series in enumerate(discovery.series):
        if on_series:
            on_series(series, k, len(discovery.series))
        run.series.append(
            process_series(series, config, out_dir, init=init, progress=progress, cancel=cancel)
        )
    run.seconds = time.perf_counter() - t0
    return run
