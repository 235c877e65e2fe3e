"""The evaluation report: ``report.json`` (every number) and ``report.md`` (the paper's tables).

Tables: quality per method and scale (Tables II/III: PSNR, SSIM, VIF-P as mean ± std over the
images, with training and inference seconds and peak memory), a Table V style ablation table
when ablation pipelines were evaluated, per-image results, and cine temporal consistency.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = [
    "METRICS",
    "summarize",
    "render_markdown",
    "write_report",
    "json_safe",
    "header_lines",
    "quality_table",
    "ablation_table",
    "per_image_table",
    "cine_table",
]

#: Per-run quantities summarised over images, with their table headers and formats.
METRICS = {
    "psnr": ("PSNR [dB]", "{:.2f}"),
    "ssim": ("SSIM", "{:.4f}"),
    "vif_p": ("VIF-P", "{:.4f}"),
    "train_seconds": ("train [s]", "{:.2f}"),
    "infer_seconds": ("infer [s]", "{:.3f}"),
    "peak_rss_mb": ("peak RSS [MB]", "{:.0f}"),
    "rss_increase_mb": ("RSS increase [MB]", "{:.0f}"),
}


def json_safe(obj):
    """Recursively replace non-finite floats by None and numpy scalars by Python ones."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj


def summarize(images: Sequence[dict], methods: Sequence[str], scales: Sequence[int]) -> dict:
    """``{method: {scale: {metric: {mean, std, n}}}}`` over the images (std: population)."""
    out: dict = {}
    for m in methods:
        out[m] = {}
        for s in scales:
            rows = [
                img["results"][m][str(s)] for img in images if str(s) in img["results"].get(m, {})
            ]
            stats = {}
            for key in METRICS:
                vals = np.array([r[key] for r in rows if r.get(key) is not None], dtype=float)
                vals = vals[np.isfinite(vals)]
                stats[key] = {
                    "mean": float(vals.mean()) if vals.size else None,
                    "std": float(vals.std()) if vals.size else None,
                    "n": int(vals.size),
                }
            out[m][str(s)] = stats
    return out


def _pm(stat: dict, fmt: str) -> str:
    if not stat or stat.get("mean") is None:
        return "n/a"
    if stat["n"] > 1:
        return f"{fmt.format(stat['mean'])} ± {fmt.format(stat['std'])}"
    return fmt.format(stat["mean"])


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


def _fmt(value, fmt: str) -> str:
    return "n/a" if value is None else fmt.format(value)


#: A table: its header and its rows of cells.
Table = tuple[list[str], list[list[str]]]

CINE_NOTE = (
    "Each frame degraded, then super-resolved with the cine default (one `fit_cine`, "
    "then `upscale` per frame). MAD: mean absolute frame-to-frame difference; ratio = "
    "SR MAD / source MAD (above 1: the method adds change); flicker: mean "
    "|ΔSR − Δsource|."
)
PER_IMAGE_NOTE = "Cells: PSNR [dB] / SSIM / VIF-P."


def header_lines(report: dict) -> list[str]:
    """What was evaluated, how, and on which machine (one line each)."""
    proto, machine = report["protocol"], report["machine"]
    return [
        f"{len(report['images'])} image(s); pipeline `{report['config']['name']}` "
        f"(hash `{report['config']['hash']}`); created {report['created']}.",
        f"Degradation: {proto['degradation']}",
        f"Ground truth: {proto['ground_truth']}",
        f"Metrics: {proto['metrics']}",
        f"Memory: {proto['memory']}",
        f"Machine: {machine['cpu_model']}, {machine['usable_cores']} cores, "
        f"torch {machine['torch']} ({machine['torch_threads']} threads)",
    ]


def quality_table(report: dict) -> Table:
    """Tables II/III: every metric as mean ± std per method and scale."""
    summary = report["summary"]
    header = ["method", "scale", *[h for h, _ in METRICS.values()]]
    rows = []
    for s in report["scales"]:
        for m in report["methods"]:
            st = summary[m][str(s)]
            rows.append([m, f"x{s}", *[_pm(st[k], f) for k, (_, f) in METRICS.items()]])
    return header, rows


def ablation_table(report: dict) -> Table | None:
    """Table V style: PSNR, VIF-P and SSIM per scale of each ablation, the full model last."""
    ablations = report.get("ablations") or []
    if not ablations:
        return None
    summary, scales = report["summary"], report["scales"]
    keys = ("psnr", "vif_p", "ssim")
    header = ["variant"] + [f"{METRICS[k][0]} x{s}" for s in scales for k in keys]
    rows = []
    for m in [*ablations, *[x for x in report["methods"] if x == "cyclegan"]]:
        label = m if m in ablations else "cyclegan (all losses)"
        rows.append(
            [label] + [_pm(summary[m][str(s)][k], METRICS[k][1]) for s in scales for k in keys]
        )
    return header, rows


def per_image_table(report: dict) -> Table:
    """PSNR / SSIM / VIF-P of every method on every image and scale."""
    methods = report["methods"]
    header = ["image", "crop (w x h)", "scale", *methods]
    rows = []
    for img in report["images"]:
        for s in report["scales"]:
            cells = []
            for m in methods:
                r = img["results"].get(m, {}).get(str(s))
                cells.append(
                    "n/a"
                    if r is None
                    else f"{_fmt(r['psnr'], '{:.2f}')} / {_fmt(r['ssim'], '{:.3f}')} / "
                    f"{_fmt(r['vif_p'], '{:.3f}')}"
                )
            h, w = img["hr_shape"]
            rows.append([img["id"], f"{w} x {h}", f"x{s}", *cells])
    return header, rows


def cine_table(report: dict) -> Table | None:
    """Temporal consistency of each method on each cine and scale."""
    cines = report.get("cine") or []
    if not cines:
        return None
    header = [
        "cine",
        "scale",
        "method",
        "frames",
        "source MAD",
        "SR MAD",
        "ratio",
        "flicker",
        "PSNR mean",
        "train [s]",
        "infer [s/frame]",
    ]
    rows = []
    for c in cines:
        for m, r in c["results"].items():
            rows.append(
                [
                    c["id"],
                    f"x{c['scale']}",
                    m,
                    str(r["frames"]),
                    f"{r['source_mad']:.5f}",
                    f"{r['sr_mad']:.5f}",
                    _fmt(r["mad_ratio"], "{:.3f}"),
                    f"{r['flicker']:.5f}",
                    f"{r['psnr_mean']:.2f}",
                    f"{r['train_seconds']:.2f}",
                    f"{r['infer_seconds'] / max(1, r['frames']):.3f}",
                ]
            )
    return header, rows


def render_markdown(report: dict) -> str:
    """The human-readable report: protocol, tables, figure links."""
    first, *rest = header_lines(report)
    n = len(report["images"])
    lines = ["# dicom-sr evaluation", "", first, "", *[f"- {x}" for x in rest], ""]
    lines += [f"## Quality per method and scale (mean ± std over {n} image(s); Tables II/III)", ""]
    lines += _table(*quality_table(report))
    ablation = ablation_table(report)
    if ablation:
        lines += ["", "## Ablation (Table V style: loss terms of the CycleGAN)", ""]
        lines += _table(*ablation)
    lines += ["", "## Per image", "", PER_IMAGE_NOTE, ""]
    lines += _table(*per_image_table(report))
    cine = cine_table(report)
    if cine:
        lines += ["", "## Cine temporal consistency", "", CINE_NOTE, ""]
        lines += _table(*cine)
    if report.get("figures"):
        lines += ["", "## Figures", ""]
        lines += [f"![{Path(f).stem}]({f})" for f in report["figures"]]
    if report.get("skipped"):
        lines += ["", "## Not evaluated", ""]
        lines += [f"- `{s['path']}`: {s['reason']}" for s in report["skipped"]]
    return "\n".join(lines) + "\n"


def write_report(report: dict, out_dir: Path) -> tuple[Path, Path]:
    """Write ``report.json`` (strict JSON: non-finite numbers become null) and ``report.md``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    safe = json_safe(report)
    json_path = out_dir / "report.json"
    json_path.write_text(json.dumps(safe, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    md_path = out_dir / "report.md"
    md_path.write_text(render_markdown(safe), encoding="utf-8")
    return json_path, md_path
