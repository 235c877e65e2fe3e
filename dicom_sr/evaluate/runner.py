"""``run_evaluation``: the whole protocol over DICOM inputs, written as a report folder."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from dicom_sr import __version__
from dicom_sr.config import PipelineConfig
from dicom_sr.dicom.discover import Skipped
from dicom_sr.errors import InputError
from dicom_sr.evaluate import figures
from dicom_sr.evaluate.html import ViewerPages
from dicom_sr.evaluate.measure import machine_info
from dicom_sr.evaluate.protocol import (
    Degradation,
    EvalImage,
    MethodSpec,
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
    html_enabled: bool = True,
) -> dict:
    """Evaluate ``methods`` at ``scales`` on the frames of ``inputs``; write and return the report.

    Parameters
    ----------
    inputs : DICOM files or folders (discovered like ``dicom-sr process``).
    out_dir : report folder: ``report.json``, ``report.md``, ``figures/*.png`` and, with
        ``html_enabled``, ``report.html`` with a viewer page per image, scale and cine.
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
    degradation = degradation or Degradation(seed=config.engine.seed)
    scales = sorted(set(scales))
    specs = resolve_methods(methods, config)
    skipped: list[Skipped] = []
    images, cine_insts = load_images(
        inputs, scales=scales, margin=margin, max_images=max_images, skipped=skipped
    )
    cine_insts = cine_insts[:max_cines] if cine_frames > 1 else []
    run = _Run(
        out_dir=out_dir,
        specs=specs,
        scales=scales,
        degradation=degradation,
        figures=figures_enabled,
        pages=ViewerPages(out_dir) if html_enabled else None,
        total=(len(images) + len(cine_insts)) * len(scales) * len(specs),
        progress=progress,
    )
    report = _new_report(config, degradation, specs, scales, margin)
    for img in images:
        report["images"].append(_evaluate_image(run, img, report["figures"]))
    for inst in cine_insts:
        try:
            hr_frames = load_cine(inst, scales=scales, margin=margin, max_frames=cine_frames)
        except (InputError, ValueError) as exc:
            skipped.append(Skipped(str(inst.path), f"cine: {exc}"))
            continue
        report["cine"] += _evaluate_cine(run, inst.path, hr_frames, report["figures"])
    report["summary"] = summarize(report["images"], run.names, scales)
    report["skipped"] = [{"path": s.path, "reason": s.reason} for s in skipped]
    write_report(report, out_dir)
    if run.pages is not None:
        run.pages.write(report)
    return report


@dataclass
class _Run:
    """What every step of one evaluation shares: where it writes and how far it is."""

    out_dir: Path
    specs: list[MethodSpec]
    scales: list[int]
    degradation: Degradation
    figures: bool
    pages: ViewerPages | None
    total: int
    progress: Callable[[int, int], None] | None
    done: int = 0

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.specs]

    @property
    def fig_dir(self) -> Path:
        return self.out_dir / "figures"

    def step(self) -> None:
        self.done += 1
        if self.progress:
            self.progress(self.done, self.total)


def _new_report(
    config: PipelineConfig,
    degradation: Degradation,
    specs: list[MethodSpec],
    scales: list[int],
    margin: int,
) -> dict:
    """The report's header (software, machine, configuration, protocol) and empty sections."""
    return {
        "version": 1,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
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
        "methods": [s.name for s in specs],
        "method_configs": {s.name: s.engine.model_dump(mode="json") for s in specs},
        "ablations": [s.name for s in specs if s.ablation],
        "scales": scales,
        "images": [],
        "cine": [],
        "figures": [],
        "skipped": [],
    }


def _evaluate_image(run: _Run, img: EvalImage, figure_list: list[str]) -> dict:
    """Every method at every scale on one ground-truth crop: its report entry."""
    entry = {
        "id": img.id,
        "path": str(img.path),
        "frame_index": img.frame_index,
        "number_of_frames": img.number_of_frames,
        "crop_box": list(img.box),
        "hr_shape": list(img.hr.shape),
        "results": {n: {} for n in run.names},
    }
    for s in run.scales:
        lr = run.degradation.apply(img.hr, s)
        outputs, scores = {}, {}
        for spec in run.specs:
            method_run = run_method(spec, [lr], s)
            scores[spec.name] = score(img.hr, method_run.sr[0], s)
            outputs[spec.name] = method_run.sr[0]
            entry["results"][spec.name][str(s)] = {
                **scores[spec.name],
                "train_seconds": method_run.train_seconds,
                "infer_seconds": method_run.infer_seconds,
                "peak_rss_mb": method_run.peak_rss_mb,
                "rss_increase_mb": method_run.rss_increase_mb,
                "model_info": method_run.info,
            }
            logger.info(
                "%s x%d %s: PSNR %.2f dB SSIM %.4f VIF-P %.4f",
                img.id,
                s,
                spec.name,
                *scores[spec.name].values(),
            )
            run.step()
        if run.figures:
            path = run.fig_dir / f"{_slug(img.id)}_x{s}.png"
            figures.comparison_figure(
                path,
                img.hr,
                lr,
                outputs,
                scores,
                scale=s,
                title=f"{img.id}: x{s}, {run.degradation.describe()}",
            )
            figure_list.append(str(path.relative_to(run.out_dir)))
        if run.pages is not None:
            frames = {n: [o] for n, o in outputs.items()}
            slug = f"{_slug(img.id)}_x{s}"
            run.pages.add(f"{img.id}: x{s}", slug, s, [img.hr], [lr], frames, scores)
    return entry


def _evaluate_cine(
    run: _Run, path: Path, hr_frames: list[np.ndarray], figure_list: list[str]
) -> list[dict]:
    """Temporal consistency of every method at every scale on one cine: its report entries."""
    entries = []
    for s in run.scales:
        lrs = [run.degradation.apply(f, s) for f in hr_frames]
        results, srs = {}, {}
        for spec in run.specs:
            method_run = run_method(spec, lrs, s)
            srs[spec.name] = method_run.sr
            results[spec.name] = {
                **cine_scores(hr_frames, method_run.sr, s),
                "train_seconds": method_run.train_seconds,
                "infer_seconds": method_run.infer_seconds,
                "peak_rss_mb": method_run.peak_rss_mb,
            }
            run.step()
        cid = f"{path.stem}[{len(hr_frames)} frames]"
        entries.append({"id": cid, "path": str(path), "scale": s, "results": results})
        if run.figures:
            fig = run.fig_dir / f"{_slug(path.stem)}_cine_x{s}.png"
            figures.cine_figure(
                fig,
                hr_frames,
                srs,
                title=f"{cid}: x{s}, frame-to-frame change (source vs super-resolved)",
            )
            figure_list.append(str(fig.relative_to(run.out_dir)))
        if run.pages is not None:
            run.pages.add(f"{cid}: x{s}", f"{_slug(path.stem)}_cine_x{s}", s, hr_frames, lrs, srs)
    return entries


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)
