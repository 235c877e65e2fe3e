"""The evaluation report as HTML: ``report.html`` (the tables) and a viewer page per image and
scale (and per cine), showing the ground truth, the degraded input and every method's output
at the same place and zoom, with the viewer of ``dicom-sr compare``.

Frames are written as they are produced (lossless WebP: the metrics' pixels, not a codec's),
so nothing is kept in memory between images; the pages are written at the end.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html import escape
from pathlib import Path

import numpy as np

from dicom_sr.engine import upscale_np
from dicom_sr.evaluate.report import (
    CINE_NOTE,
    PER_IMAGE_NOTE,
    Table,
    ablation_table,
    cine_table,
    header_lines,
    per_image_table,
    quality_table,
)
from dicom_sr.fsio import write_bytes
from dicom_sr.viewer import ImageStore, IndexRow, Layer, ViewerPage, write_assets, write_page
from dicom_sr.viewer.page import ASSETS_DIR, index_table, lazy_script

__all__ = ["ViewerPages", "render_html", "HTML_NOTE"]

HTML_NOTE = (
    "The method images are super-resolved from a degraded copy of a real frame, made on "
    "purpose to score the methods against the frame itself (the ground truth)."
)


@dataclass
class _Entry:
    title: str
    page: str
    thumbnail: str
    frames: int
    scale: int


class ViewerPages:
    """Collects the viewer pages of one evaluation under ``out_dir``."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = Path(out_dir)
        self.store = ImageStore(self.out_dir)
        self.pages: list[tuple[_Entry, ViewerPage]] = []

    def add(
        self,
        title: str,
        slug: str,
        scale: int,
        hr: Sequence[np.ndarray],
        lr: Sequence[np.ndarray],
        outputs: Mapping[str, Sequence[np.ndarray]],
        scores: Mapping[str, Mapping[str, float]] | None = None,
    ) -> None:
        """One page: ground truth ``hr``, degraded ``lr`` (shown at the HR size by pixel
        replication or bicubic) and each method's output, frame by frame."""
        base = f"frames/{slug}"
        thumb = self.store.thumb(f"{base}/thumb", hr[0])
        truth = Layer("ground truth", "reference", self._frames(f"{base}/hr", hr))
        truth.provenance = {"what": "the real frame's tissue crop (luminance), as stored"}
        degraded = Layer(
            f"degraded input (x{scale} smaller)",
            "source",
            self._frames(f"{base}/lr", lr),
            bicubic=self._frames(
                f"{base}/lr-bicubic", [upscale_np(f, scale, "bicubic") for f in lr]
            ),
        )
        degraded.provenance = {"what": f"the ground truth made x{scale} smaller on purpose"}
        layers = [truth, degraded]
        for k, (name, frames) in enumerate(outputs.items()):
            prov = {"method": name, "scale": f"x{scale}"}
            if scores and name in scores:
                prov.update({key: f"{value:.4f}" for key, value in scores[name].items()})
            frames_k = self._frames(f"{base}/m{k}", frames)
            layers.append(Layer(name, "derived", frames_k, provenance=prov))
        height, width = hr[0].shape[:2]
        page = ViewerPage(
            title=title,
            width=width,
            height=height,
            frames=len(hr),
            layers=layers,
            left=0,
            right=len(layers) - 1,
            facts=[("Crop", f"{width} x {height}"), ("Scale", f"x{scale}")],
            note=HTML_NOTE,
            back="report.html",
            back_label="evaluation report",
        )
        entry = _Entry(title, f"view-{slug}.html", thumb, len(hr), scale)
        self.pages.append((entry, page))

    def _frames(self, stem: str, frames: Sequence[np.ndarray]) -> list[str | None]:
        return [self.store.frame(f"{stem}/{k:04d}", f) for k, f in enumerate(frames)]

    def write(self, report: dict) -> Path:
        """Write the viewer pages, their assets and ``report.html``; return its path."""
        write_assets(self.out_dir)
        for entry, page in self.pages:
            write_page(self.out_dir / entry.page, page)
        rows = [
            IndexRow(e.page, e.title, e.thumbnail, [str(e.frames), f"x{e.scale}"])
            for e, _ in self.pages
        ]
        path = self.out_dir / "report.html"
        write_bytes(path, render_html(report, rows).encode("utf-8"))
        return path


def _html_table(table: Table) -> str:
    header, rows = table
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_html(report: dict, rows: Sequence[IndexRow]) -> str:
    """``report.html``: the Markdown report's tables, then the viewer pages and figures."""
    first, *rest = header_lines(report)
    n = len(report["images"])
    parts = [
        "<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>",
        "<title>dicom-sr evaluation</title>",
        f'<link rel=stylesheet href="{ASSETS_DIR}/viewer.css"></head><body><main>',
        "<h1>dicom-sr evaluation</h1>",
        f"<p>{escape(first.replace('`', ''))}</p><ul>",
        *[f"<li>{escape(x)}</li>" for x in rest],
        "</ul>",
        f"<p class=note>{escape(HTML_NOTE)}</p>",
        "<h2>Compare the images</h2>",
        index_table(["image", "frames", "scale"], rows),
        f"<h2>Quality per method and scale (mean ± std over {n} image(s))</h2>",
        _html_table(quality_table(report)),
    ]
    ablation = ablation_table(report)
    if ablation:
        parts += ["<h2>Ablation (loss terms of the CycleGAN)</h2>", _html_table(ablation)]
    parts += ["<h2>Per image</h2>", f"<p>{escape(PER_IMAGE_NOTE)}</p>"]
    parts.append(_html_table(per_image_table(report)))
    cine = cine_table(report)
    if cine:
        parts += ["<h2>Cine temporal consistency</h2>", f"<p>{escape(CINE_NOTE)}</p>"]
        parts.append(_html_table(cine))
    if report.get("figures"):
        parts.append("<h2>Figures</h2>")
        parts += [
            f'<p><img loading=lazy src="{escape(f)}" alt="{escape(Path(f).stem)}" '
            'style="max-width:100%"></p>'
            for f in report["figures"]
        ]
    if report.get("skipped"):
        parts.append("<h2>Not evaluated</h2><ul>")
        parts += [f"<li>{escape(s['path'])}: {escape(s['reason'])}</li>" for s in report["skipped"]]
        parts.append("</ul>")
    parts.append("</main>" + lazy_script() + "</body></html>\n")
    return "\n".join(parts)
