"""Build the compare pages: one viewer page per source series with its derived series, an index.

Layout of ``DIR``: ``index.html``, ``series-NNN.html``, ``assets/`` (the viewer's script and
style sheet), ``frames/NNN/<layer>/<frame>.<fmt>`` and ``frames/NNN/thumb.webp``. Every path in
the pages is relative, so the folder can be copied or zipped and opened anywhere. Patient
names, IDs and file paths are never written into the pages.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from pydicom import Dataset

from dicom_sr import __version__
from dicom_sr.compare.compute import compute_derived
from dicom_sr.compare.frames import calibration, frame_rate, read_display_frames, region_mask
from dicom_sr.compare.provenance import known_configs, provenance_rows
from dicom_sr.compare.sources import DerivedIndex, DerivedSeries, derived_for, read_derived
from dicom_sr.config import PipelineConfig
from dicom_sr.dicom.discover import Series, Skipped, discover
from dicom_sr.dicom.frames import read_header
from dicom_sr.errors import InputError
from dicom_sr.viewer import (
    PROCESSED_NOTE,
    ImageStore,
    IndexRow,
    Layer,
    ViewerPage,
    write_assets,
    write_index,
    write_page,
)

__all__ = ["CompareResult", "build_compare", "SHOWN_AS_STORED"]

logger = logging.getLogger(__name__)

SHOWN_AS_STORED = (
    "Burned-in text is shown as the scanner stored it and may identify the patient; "
    "--deidentify-text blanks everything outside the ultrasound regions."
)
UNBLANKED = (
    "The ultrasound regions cover the whole frame: --deidentify-text blanked nothing here, and "
    "text burned in inside the regions is shown."
)
_INDEX_COLUMNS = ("frames", "source", "shown against", "guard chose", "ruler")


@dataclass
class CompareResult:
    """What :func:`build_compare` wrote."""

    out_dir: Path
    index: Path
    pages: list[Path] = field(default_factory=list)
    left_out: list[tuple[str, str]] = field(default_factory=list)  # (series UID, reason)
    skipped: list[Skipped] = field(default_factory=list)
    images: int = 0
    image_bytes: int = 0

    @property
    def total_bytes(self) -> int:
        """Size of everything under ``out_dir`` (pages, assets, frames)."""
        return sum(p.stat().st_size for p in self.out_dir.rglob("*") if p.is_file())


@dataclass
class _Context:
    out_dir: Path
    store: ImageStore
    configs: dict[str, PipelineConfig]
    deidentify: bool
    computed: set[str]  # derived series UIDs made with --method for this page
    source_bicubic: bool = True


def build_compare(
    inputs: Iterable[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    *,
    derived: Sequence[str | os.PathLike[str]] = (),
    config: PipelineConfig | None = None,
    deidentify: bool = False,
    fmt: str = "webp",
    quality: int | None = None,
    source_bicubic: bool = True,
    on_series: Callable[[int, int], None] | None = None,
) -> CompareResult:
    """Write the compare pages of the source series under ``inputs`` into ``out_dir``.

    ``derived`` are output folders of ``process``/``listen``/``batch`` whose manifests link
    derived series to their sources; ``config``, when given, derives every series on the fly
    with it as well (``--method``). ``fmt``/``quality``: frame encoding (lossless by default).
    ``source_bicubic``: also write the source frames upscaled by bicubic to the display size
    (the viewer's "bicubic" choice; False halves a large cine's page, leaving replication).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    index = read_derived(derived)
    found = discover(inputs, exclude=[out, *index.folders])
    result = CompareResult(out, out / "index.html", skipped=list(found.skipped))
    extra = {config.hash(): config} if config is not None else {}
    store = ImageStore(out, fmt, quality)
    ctx = _Context(out, store, known_configs(extra), deidentify, set(), source_bicubic)
    with tempfile.TemporaryDirectory(prefix=".compare-", dir=out) as scratch:
        if config is not None:
            for r in compute_derived(found.series, config, Path(scratch)):
                ctx.computed.add(r.derived_series_uid)
            _merge(index, read_derived([scratch]))
        write_assets(out)
        rows = []
        for k, series in enumerate(found.series, 1):
            if on_series:
                on_series(k, len(found.series))
            rows.append(_series_row(k, series, derived_for(series, index), ctx, result))
    result.images, result.image_bytes = ctx.store.files, ctx.store.bytes
    write_index(
        result.index,
        "dicom-sr compare",
        _INDEX_COLUMNS,
        rows,
        intro=[_intro(found.series, found.skipped)],
        notes=[PROCESSED_NOTE, *([] if deidentify else [SHOWN_AS_STORED])],
    )
    return result


def _merge(into: DerivedIndex, other: DerivedIndex) -> None:
    for key, items in other.by_source.items():
        into.by_source.setdefault(key, []).extend(items)


def _intro(series: Sequence[Series], skipped: Sequence[Skipped]) -> str:
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    text = f"{len(series)} source series; made {when} by dicom-sr {__version__}."
    if skipped:
        text += f" {len(skipped)} file(s) were not ultrasound images dicom-sr can read."
    return text


def _title(ds: Dataset, k: int) -> str:
    return str(ds.get("SeriesDescription") or "") or f"series {k}"


def _series_row(
    k: int,
    series: Series,
    derived: list[DerivedSeries],
    ctx: _Context,
    result: CompareResult,
) -> IndexRow:
    """Write one series' page and frames; return its index row (without a link when the
    series is left out, the reason in its cells)."""
    header = read_header(series.instances[0].path)
    title = _title(header, k)
    size = f"{series.instances[0].columns} x {series.instances[0].rows}"
    reason = "" if derived else "no derived series found (see --derived, --method)"
    if not reason and ctx.deidentify:
        reason = _deidentify_problem(series, derived)
    if reason:
        result.left_out.append((series.series_uid, reason))
        return IndexRow("", title, None, [str(series.n_frames), size, reason, "", ""])
    page = _build_page(k, series, derived, header, ctx)
    path = write_page(ctx.out_dir / f"series-{k:03d}.html", page)
    result.pages.append(path)
    right = page.layers[page.right]
    guard = right.provenance.get("guard chose", "")
    guard = "no guard" if guard.startswith("no guard") else guard
    ruler = _ruler_summary(page.layers)
    thumb = f"frames/{k:03d}/thumb.webp"
    return IndexRow(path.name, title, thumb, [str(page.frames), size, right.label, guard, ruler])


def _deidentify_problem(series: Series, derived: list[DerivedSeries]) -> str:
    """Why a series cannot be shown with its text blanked ("" when it can)."""
    paths = [i.path for i in series.instances]
    paths += [d.path for ds in derived for d in ds.instances if d is not None]
    for path in paths:
        try:
            h = read_header(path)
            region_mask(h, int(h.Rows), int(h.Columns), path)
        except InputError as exc:
            return f"left out: {exc.reason}"
    return ""


def _build_page(
    k: int, series: Series, derived: list[DerivedSeries], header: Dataset, ctx: _Context
) -> ViewerPage:
    """Encode the frames of the source and each derived series; describe the page."""
    heads = [read_header(d.first.path) for d in derived]
    width = max(int(h.Columns) for h in heads)
    height = max(int(h.Rows) for h in heads)
    first = series.instances[0]
    scale = max(1, round(width / first.columns)) if ctx.source_bicubic else 1
    warnings: list[str] = []
    if ctx.deidentify:
        mask = region_mask(header, first.rows, first.columns, first.path)
        if mask.mean() > 0.98:
            warnings.append(UNBLANKED)
            logger.warning("compare: series %d: %s", k, UNBLANKED)
    source = _source_layer(k, series, scale, ctx, warnings)
    source.calibration = calibration(header, first.columns, width)
    layers = [source]
    for j, (d, h) in enumerate(zip(derived, heads, strict=True), 1):
        layer = _derived_layer(k, j, series, d, ctx, warnings)
        layer.calibration = calibration(h, int(h.Columns), width)
        layer.provenance = provenance_rows(h, ctx.configs)
        computed = d.series_uid in ctx.computed
        layer.label = _label(d, computed)
        if not d.complete:
            warnings.append(f"{layer.label}: some source instances have no derived copy")
        layers.append(layer)
    return ViewerPage(
        title=_title(header, k),
        width=width,
        height=height,
        frames=series.n_frames,
        layers=layers,
        fps=frame_rate(header),
        facts=_facts(header, series, width, height, layers, ctx.deidentify),
        warnings=warnings,
    )


def _label(d: DerivedSeries, computed: bool) -> str:
    f = d.first
    if computed:
        return f"{f.method} x{f.scale}, computed for this page"
    return f"derived: {f.method} x{f.scale} (config {f.config_hash})"


def _source_layer(k: int, series: Series, scale: int, ctx: _Context, warnings: list[str]) -> Layer:
    frames: list[str | None] = []
    bicubic: list[str | None] = []
    for inst in series.instances:
        try:
            for f in read_display_frames(inst.path, deidentify=ctx.deidentify, bicubic_scale=scale):
                n = len(frames)
                if n == 0:
                    ctx.store.thumb(f"frames/{k:03d}/thumb", f.image)
                frames.append(ctx.store.frame(f"frames/{k:03d}/0/{n:04d}", f.image))
                if f.bicubic is not None:
                    bicubic.append(ctx.store.frame(f"frames/{k:03d}/0b/{n:04d}", f.bicubic))
        except InputError as exc:
            warnings.append(f"source: {exc.reason}")  # no path: it may name the patient
            logger.warning("compare: %s", exc)
        frames += [None] * (_frames_until(series, inst) - len(frames))
        bicubic += [None] * (len(frames) - len(bicubic))
    return Layer("source", "source", frames, bicubic if scale > 1 else None)


def _frames_until(series: Series, inst) -> int:
    """Frames of ``series`` up to and including the instance ``inst``."""
    total = 0
    for i in series.instances:
        total += i.number_of_frames
        if i is inst:
            break
    return total


def _derived_layer(
    k: int, j: int, series: Series, d: DerivedSeries, ctx: _Context, warnings: list[str]
) -> Layer:
    frames: list[str | None] = []
    for inst, copy in zip(series.instances, d.instances, strict=True):
        end = _frames_until(series, inst)
        if copy is not None:
            try:
                for f in read_display_frames(copy.path, deidentify=ctx.deidentify):
                    if len(frames) >= end:
                        break
                    frames.append(ctx.store.frame(f"frames/{k:03d}/{j}/{len(frames):04d}", f.image))
            except InputError as exc:
                warnings.append(f"derived: {exc.reason}")
                logger.warning("compare: %s", exc)
        frames += [None] * (end - len(frames))
    return Layer("derived", "derived", frames)


def _ruler_summary(layers: Sequence[Layer]) -> str:
    cals = [layer.calibration for layer in layers]
    if cals[0] is None or any(c is None for c in cals[1:]):
        return "no calibration" if all(c is None for c in cals) else "calibration missing"
    x0, y0 = cals[0]
    agree = all(abs(c[0] - x0) <= 1e-3 * x0 and abs(c[1] - y0) <= 1e-3 * y0 for c in cals[1:] if c)
    return "distances agree" if agree else "distances DIFFER"


def _equipment(ds: Dataset) -> str:
    parts = (ds.get("Manufacturer"), ds.get("ManufacturerModelName"))
    return " ".join(str(p) for p in parts if p)


def _facts(
    ds: Dataset,
    series: Series,
    width: int,
    height: int,
    layers: Sequence[Layer],
    deidentify: bool,
) -> list[tuple[str, str]]:
    first = series.instances[0]
    facts = [
        ("Modality", str(ds.get("Modality", "") or "")),
        ("Equipment", _equipment(ds)),
        ("Instances, frames", f"{len(series.instances)}, {series.n_frames}"),
        ("Source size", f"{first.columns} x {first.rows}"),
        ("Display size", f"{width} x {height} (the derived size)"),
    ]
    cal = []
    for layer in layers:
        c = layer.calibration
        text = "none" if c is None else f"{c[0]:.4f} x {c[1]:.4f}"
        cal.append(f"{layer.label}: {text}")
    facts.append(("mm per display pixel (x, y)", "; ".join(cal) + f" ({_ruler_summary(layers)})"))
    burned = str(ds.get("BurnedInAnnotation", "") or "not stated")
    facts.append(("Burned In Annotation (0028,0301)", burned))
    facts.append(
        (
            "Burned-in text",
            "blanked outside the ultrasound regions" if deidentify else "shown as stored",
        )
    )
    return facts
