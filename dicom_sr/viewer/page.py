"""The HTML: one viewer page per series (two synced views, swipe, flip, cine) and an index.

The page's description is embedded as JSON in a ``<script type="application/json">`` element
(no ``fetch``: browsers refuse it on ``file://``); ``assets/viewer.js`` reads it. Text from the
inputs is escaped everywhere, and every ``<`` inside the JSON is written ``\\u003c``, so no
value can end (or nest) the script element.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from html import escape
from importlib import resources
from pathlib import Path

from dicom_sr.fsio import write_bytes

__all__ = [
    "PROCESSED_NOTE",
    "ASSETS_DIR",
    "Layer",
    "ViewerPage",
    "IndexRow",
    "write_assets",
    "write_page",
    "write_index",
    "index_table",
    "lazy_script",
]

#: The plain note every page shows.
PROCESSED_NOTE = (
    "The derived images are processed images, made by software for comparison with the "
    "source. They are not the acquired images: read and measure on the source series."
)
#: Folder, next to the pages, that holds the viewer's script and style sheet.
ASSETS_DIR = "assets"
_ASSETS = ("viewer.js", "viewer.css", "index.js")

_KEYS = (
    ("wheel", "zoom both views at the cursor"),
    ("drag", "pan both views"),
    ("double-click, R", "reset zoom and pan"),
    ("shift + drag", "measure: the length in mm by each side's own calibration"),
    ("F", "flip: swap A and B at the same place"),
    ("1 / 2, 0 or Esc", "show A only / B only; back to both, measurement cleared"),
    ("S", "side by side / swipe"),
    ("space", "play / pause"),
    ("\u2190 \u2192", "previous / next frame"),
)


@dataclass
class Layer:
    """One image set of a series: the source, a derived series, a reference.

    ``frames`` are URLs relative to the page (None where the layer has no such frame);
    ``bicubic`` the same frames upscaled to the display size by bicubic interpolation, for
    layers stored smaller than it; ``calibration`` the millimetres per display pixel (x, y)
    from the Sequence of Ultrasound Regions.
    """

    label: str
    kind: str
    frames: list[str | None]
    bicubic: list[str | None] | None = None
    calibration: tuple[float, float] | None = None
    provenance: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict:
        out = asdict(self)
        if self.calibration is not None:
            out["calibration"] = {"x": self.calibration[0], "y": self.calibration[1]}
        return out


@dataclass
class ViewerPage:
    """Everything one viewer page shows."""

    title: str
    width: int
    height: int
    frames: int
    layers: list[Layer]
    left: int = 0
    right: int = 1
    fps: float = 20.0
    facts: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    note: str = PROCESSED_NOTE
    back: str | None = "index.html"
    back_label: str = "all series"

    def data(self) -> dict:
        return {
            "title": self.title,
            "width": self.width,
            "height": self.height,
            "frames": self.frames,
            "fps": self.fps,
            "left": self.left,
            "right": min(self.right, len(self.layers) - 1),
            "layers": [layer.to_json() for layer in self.layers],
        }


@dataclass
class IndexRow:
    """One line of the index: a thumbnail, a link to the series page, and cells."""

    link: str
    title: str
    thumbnail: str | None
    cells: list[str]


def write_assets(out_dir: Path) -> None:
    """Copy the viewer's script and style sheet into ``out_dir/assets``."""
    folder = Path(out_dir, ASSETS_DIR)
    folder.mkdir(parents=True, exist_ok=True)
    source = resources.files("dicom_sr.viewer") / "assets"
    for name in _ASSETS:
        write_bytes(folder / name, (source / name).read_bytes())


def _head(title: str, assets: str) -> str:
    return (
        "<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title>"
        f'<link rel=stylesheet href="{escape(assets)}/viewer.css"></head><body>\n'
    )


def _facts(facts: Sequence[tuple[str, str]]) -> str:
    rows = "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in facts)
    return f"<table>{rows}</table>" if rows else ""


def _controls() -> str:
    return (
        "<div class=controls>"
        "<label>A <select id=layer-a></select></label>"
        "<label>B <select id=layer-b></select></label>"
        "<label>Smaller images shown by <select id=resample>"
        "<option value=nearest>pixel replication</option>"
        "<option value=bicubic>bicubic</option></select></label>"
        "<button id=mode-side>Side by side</button><button id=mode-swipe>Swipe</button>"
        "<button id=reset>Reset view</button><span id=shown></span>"
        '<span id=measure aria-label="measurement"></span></div>'
        '<div class="controls cine"><button id=play>Play</button>'
        '<input id=frame type=range min=0 max=0 value=0 aria-label="frame">'
        "<span id=frame-label></span></div>"
    )


def _views() -> str:
    view = (
        '<div class=view><canvas id=view-{0} aria-label="{0} view"></canvas>'
        "<span class=label id=label-{0}></span></div>"
    )
    return (
        f"<div class=views>{view.format('left')}{view.format('right')}</div>"
        f"<div class=swipe-view>{view.format('swipe')}"
        '<input id=swipe type=range min=0 max=1000 value=500 aria-label="swipe"></div>'
    )


def _json_script(data: dict) -> str:
    text = json.dumps(data, separators=(",", ":")).replace("<", "\\u003c")
    return f'<script type="application/json" id=viewer-data>{text}</script>\n'


def render_page(page: ViewerPage, assets: str = ASSETS_DIR) -> str:
    """The HTML of one viewer page."""
    if len(page.layers) < 2:
        raise ValueError(f"{page.title}: a comparison needs two layers, got {len(page.layers)}")
    back = ""
    if page.back:
        back = f'<a href="{escape(page.back)}">&larr; {escape(page.back_label)}</a>'

    warnings = "".join(f"<p class=warn>{escape(w)}</p>" for w in page.warnings)
    keys = "".join(
        f"<tr><th><kbd>{escape(k)}</kbd></th><td>{escape(v)}</td></tr>" for k, v in _KEYS
    )
    return (
        _head(page.title, assets)
        + f"<header>{back}<h1>{escape(page.title)}</h1>"
        + f"<p class=note>{escape(page.note)}</p>{warnings}</header>\n"
        + f"<main id=viewer data-mode=side data-frame=0>{_controls()}{_views()}</main>\n"
        + f"<footer><h2>Series</h2>{_facts(page.facts)}"
        + "<h2>Provenance</h2><div id=provenance></div>"
        + f"<h2>Keys</h2><table>{keys}</table></footer>\n"
        + _json_script(page.data())
        + f'<script src="{escape(assets)}/viewer.js"></script>\n</body></html>\n'
    )


def write_page(path: Path, page: ViewerPage, assets: str = ASSETS_DIR) -> Path:
    """Write one viewer page at ``path`` (assets relative to it); return the path."""
    write_bytes(path, render_page(page, assets).encode("utf-8"))
    return path


def index_table(columns: Sequence[str], rows: Sequence[IndexRow]) -> str:
    """A table of thumbnails (loaded lazily) and links; ``columns`` name the link's column
    and the cells'."""
    head = "".join(f"<th>{escape(c)}</th>" for c in ("", *columns))
    body = []
    for row in rows:
        thumb = (
            f'<img class=thumb data-src="{escape(row.thumbnail)}" alt="" width=160 height=120>'
            if row.thumbnail
            else ""
        )
        title = (
            f'<a href="{escape(row.link)}">{escape(row.title)}</a>'
            if row.link
            else escape(row.title)
        )
        if row.link and thumb:
            thumb = f'<a href="{escape(row.link)}">{thumb}</a>'
        cells = "".join(f"<td>{escape(c)}</td>" for c in row.cells)
        body.append(f"<tr><td>{thumb}</td><td>{title}</td>{cells}</tr>")
    return (
        f"<table class=index><thead><tr>{head}</tr></thead><tbody>\n"
        + "\n".join(body)
        + "\n</tbody></table>"
    )


def lazy_script(assets: str = ASSETS_DIR) -> str:
    """The script that loads the thumbnails of :func:`index_table` as they near the screen."""
    return f'<script src="{escape(assets)}/index.js"></script>\n'


def write_index(
    path: Path,
    title: str,
    columns: Sequence[str],
    rows: Sequence[IndexRow],
    *,
    intro: Sequence[str] = (),
    notes: Sequence[str] = (),
    assets: str = ASSETS_DIR,
) -> Path:
    """The index page: one row per series, thumbnails loaded as they near the screen (a study
    of 50 series loads only what is on screen; ``assets/index.js``)."""
    paras = "".join(f"<p>{escape(p)}</p>" for p in intro)
    note_html = "".join(f"<p class=note>{escape(n)}</p>" for n in notes)
    html = (
        _head(title, assets)
        + f"<header><h1>{escape(title)}</h1>{note_html}{paras}</header>\n"
        + f"<main>{index_table(['series', *columns], rows)}</main>\n"
        + lazy_script(assets)
        + "</body></html>\n"
    )
    write_bytes(path, html.encode("utf-8"))
    return path
