"""``run_evaluation``: the whole protocol over DICOM inputs, written as a report folder."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from dicom_sr import __version__
from dicom_sr.config import PipelineConfig
from dicom_sr.dicom.discover import Skipped
from dicom_sr.errors import InputError
from dicom_sr.evaluate import figures
from dicom_sr.evaluate.measure import machine_info
from dicom_sr.evaluate.protocol import (
    Degradation,
    cine_scores,
    load_cine,
    load_images,
    resolve_methods,
    run_method,
    score,
)
from dicom_sr.evaluate.report import summarize, write_report

__all__ = ["run_evaluation"]

logger = logging.getLogger(__name__)

METRICS_NOTE = (
    "PSNR and SSIM (Wang et al. 2004: Gaussian window sigma 1.5, K1 0.01, K2 0.03, data range 1) "
    "and VIF-P (pixel-domain VIF of Sheikh & Bovik 2006, 4 scales, sigma_nsq 2 on the 0-255 "
    "scale; the paper's IFC is the unnormalised wavelet-domain relative) on the luminance of the "
    "tissue crop, ignoring a border of `scale` pixels"
)
MEMORY_NOTE = (
    "peak resident set size of the process (psutil sampling every 10 ms) during training + "
    "inference of one method on one image; the increase over the RSS at its start is in report.json"
)


def run_evaluation(
    inputs: list[Path],
    out_dir: Path,
    *,
    methods: list[str],
    scales: list[int],
    config: PipelineConfig,
    max_images: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    degradation: Degradation | None = None,
    margin: int = 8,
    cine_frames: int = 30,
    max_cines: int = 1,
    figures_enabled: bool = True,
) -> dict:
    """Evaluate ``methods`` at ``scales`` on the frames of ``inputs``; write and return the report.

    Parameters
    ----------
    inputs : DICOM files or folders (discovered like ``dicom-sr process``).
    out_dir : report folder: ``report.json``, ``report.md``, ``figures/*.png``.
    methods : base methods (bicubic, ibp, zssr, cyclegan) and/or ablation pipeline names.
    scales : upscaling factors.
    config : the run's pipeline; its engine settings (iterations, ensemble, seed, ...) apply to
        every method.
    max_images : evaluate at most this many frames (one per instance).
    progress : ``progress(done, total)`` after every (image or cine) x scale x method.
    degradation : the protocol's degradation (default: antialiased bicubic).
    margin : pixels cropped off each side of the tissue region.
    cine_frames, max_cines : temporal consistency on the first ``max_cines`` multi-frame
        instances, over their first ``cine_frames`` frames (0 disables it).
    """
    out_dir = Path(out_dir)
    fig_dir = out_dir / "figures"
    degradation = degradation or Degradation(seed=config.engine.seed)
    scales = sorted(set(scales))
    specs = resolve_methods(methods, config)
    names = [s.name for s in specs]
    skipped: list[Skipped] = []
    images, cine_insts = load_images(
        inputs, scales=scales, margin=margin, max_images=max_images, skipped=skipped
    )
    cine_insts = cine_insts[:max_cines] if cine_frames > 1 else []
    total = (len(images) + len(cine_insts)) * len(scales) * len(specs)
    done = 0

    def step() -> None:
        nonlocal done
        done += 1
        if progress:
            progress(done, total)

    report: dict = {
        "version": 1,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "software": {"dicom_sr": __version__},
        "machine": machine_info(),
        "config": {
            "name": config.name,
            "version": config.version,
            "hash": config.hash(),
            "engine": config.engine.model_dump(mode="json"),
        },
        "protocol": {
            "degradation": degradation.describe(),
            "degradation_params": asdict(degradation),
            "ground_truth": (
                f"first frame of each instance, luminance, largest tissue region less a "
                f"{margin} px margin, trimmed to a multiple of {np.lcm.reduce(scales)}"
            ),
            "metrics": METRICS_NOTE,
            "memory": MEMORY_NOTE,
            "shave": "scale",
        },
        "methods": names,
        "method_configs": {s.name: s.engine.model_dump(mode="json") for s in specs},
        "ablations": [s.name for s in specs if s.ablation],
        "scales": scales,
        "images": [],
        "cine": [],
        "figures": [],
        "skipped": [],
    }

    for img in images:
        entry = {
            "id": img.id,
            "path": str(img.path),
            "frame_index": img.frame_index,
            "number_of_frames": img.number_of_frames,
            "crop_box": list(img.box),
            "hr_shape": list(img.hr.shape),
            "results": {n: {} for n in names},
        }
        for s in scales:
            lr = degradation.apply(img.hr, s)
            outputs, scores = {}, {}
            for spec in specs:
                run = run_method(spec, [lr], s)
                scores[spec.name] = score(img.hr, run.sr[0], s)
                outputs[spec.name] = run.sr[0]
                entry["results"][spec.name][str(s)] = {
                    **scores[spec.name],
                    "train_seconds": run.train_seconds,
                    "infer_seconds": run.infer_seconds,
                    "peak_rss_mb": run.peak_rss_mb,
                    "rss_increase_mb": run.rss_increase_mb,
                    "model_info": run.info,
                }
                logger.info(
                    "%s x%d %s: PSNR %.2f dB SSIM %.4f VIF-P %.4f",
                    img.id,
                    s,
                    spec.name,
                    *scores[spec.name].values(),
                )
                step()
            if figures_enabled:
                path = fig_dir / f"{_slug(img.id)}_x{s}.png"
                figures.comparison_figure(
                    path,
                    img.hr,
                    lr,
                    outputs,
                    scores,
                    scale=s,
                    title=f"{img.id}: x{s}, {degradation.describe()}",
                )
                report["figures"].append(str(path.relative_to(out_dir)))
        report["images"].append(entry)

    for inst in cine_insts:
        try:
            hr_frames = load_cine(inst, scales=scales, margin=margin, max_frames=cine_frames)
        except (InputError, ValueError) as exc:
            skipped.append(Skipped(str(inst.path), f"cine: {exc}"))
            continue
        for s in scales:
            lrs = [degradation.apply(f, s) for f in hr_frames]
            results, srs = {}, {}
            for spec in specs:
                run = run_method(spec, lrs, s)
                srs[spec.name] = run.sr
                results[spec.name] = {
                    **cine_scores(hr_frames, run.sr, s),
                    "train_seconds": run.train_seconds,
                    "infer_seconds": run.infer_seconds,
                    "peak_rss_mb": run.peak_rss_mb,
                }
                step()
            cid = f"{inst.path.stem}[{len(hr_frames)} frames]"
            report["cine"].append(
                {"id": cid, "path": str(inst.path), "scale": s, "results": results}
            )
            if figures_enabled:
                path = fig_dir / f"{_slug(inst.path.stem)}_cine_x{s}.png"
                figures.cine_figure(
                    path,
                    hr_frames,
                    srs,
                    title=f"{cid}: x{s}, frame-to-frame change (source vs super-resolved)",
                )
                report["figures"].append(str(path.relative_to(out_dir)))

    report["summary"] = summarize(report["images"], names, scales)
    report["skipped"] = [{"path": s.path, "reason": s.reason} for s in skipped]
    write_report(report, out_dir)
    return report


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)
