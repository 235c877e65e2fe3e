"""The compare page in a real browser: the distribution's Chromium driven by Playwright.

Skipped when Chromium or Playwright is missing (scripts/setup.sh --test installs both);
Playwright never downloads a browser here: it launches /usr/bin/chromium. The pages are opened
from disk (file://), as a user opens them. What is drawn is compared on screenshots.
"""

from __future__ import annotations

import io
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import us_file
from PIL import Image

from dicom_sr.compare import build_compare
from dicom_sr.config import PipelineConfig
from dicom_sr.pipeline import process_inputs

sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = sorted((ROOT / "sample_data").glob("*.dcm"))
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
#: Generous: the machine running the tests may be busy (waits end as soon as the event comes).
WAIT_MS = 30_000

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="chromium not installed (apt-get install chromium)"
)


def bicubic() -> PipelineConfig:
    return PipelineConfig().with_overrides({"engine.method": "bicubic"})


@pytest.fixture(scope="module")
def sample_pages(tmp_path_factory):
    """The sample data processed with bicubic, then compared through its output folder."""
    derived = tmp_path_factory.mktemp("derived")
    process_inputs(SAMPLES, bicubic(), derived)
    return build_compare(SAMPLES, tmp_path_factory.mktemp("page"), derived=[derived])


@pytest.fixture(scope="module")
def cine_page(tmp_path_factory):
    """A 30-frame SonoSite colour cine, derived on the fly (--method bicubic); lossy frames and
    no bicubic source frames keep it quick (the sample pages test the lossless defaults)."""
    result = build_compare(
        [us_file("examples_ybr_color.dcm")],
        tmp_path_factory.mktemp("cine"),
        config=bicubic(),
        quality=80,
        source_bicubic=False,
    )
    (page,) = result.pages
    return page


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    with sync_api.sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),  # a fresh --user-data-dir
            executable_path=CHROMIUM,
            headless=True,
            args=FLAGS,
            viewport={"width": 1280, "height": 900},
        )
        yield context
        context.close()


@pytest.fixture
def open_page(browser):
    """Open a page from disk; on teardown, fail on any console error or uncaught exception."""
    errors: list[str] = []
    pages = []

    def opener(path: Path):
        page = browser.new_page()
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(path.resolve().as_uri())
        pages.append(page)
        return page

    yield opener
    for page in pages:
        page.close()
    assert not errors, f"console errors: {errors}"


def settle(page) -> None:
    """Wait until the shown frame's images are in, then two animation frames (drawn)."""
    page.wait_for_function("window.dicomSrViewer.ready()", timeout=WAIT_MS)
    page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")


def shot(page, selector: str) -> np.ndarray:
    png = page.locator(selector).screenshot()
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)


def changed(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of pixels that differ by more than a few levels."""
    return float((np.abs(a - b).max(axis=-1) > 4).mean())


DECODE_ALL = """async () => {
  const d = window.dicomSrViewer.data;
  const urls = d.layers.flatMap(l => [...l.frames, ...(l.bicubic || [])]).filter(u => u);
  const sizes = await Promise.all(urls.map(async u => {
    const img = new Image(); img.src = u;
    try { await img.decode(); } catch (e) { return [u, 0]; }
    return [u, img.naturalWidth];
  }));
  return sizes;
}"""


def test_index_and_every_image_decodes(sample_pages, open_page):
    index = open_page(sample_pages.index)
    widths = index.evaluate(
        """async () => Promise.all([...document.images].map(async img => {
            img.scrollIntoView(); await img.decode(); return img.naturalWidth; }))"""
    )
    assert len(widths) == len(SAMPLES) and min(widths) > 0
    for path in sample_pages.pages:
        page = open_page(path)
        sizes = page.evaluate(DECODE_ALL)
        assert len(sizes) >= 3 and all(w > 0 for _, w in sizes), sizes


def same(a: np.ndarray, b: np.ndarray) -> float:
    """:func:`changed` over the common part of two screenshots (the views may differ by 1 px)."""
    h, w = min(a.shape[0], b.shape[0]), min(a.shape[1], b.shape[1])
    return changed(a[:h, :w], b[:h, :w])


def test_zoom_in_one_view_moves_the_other(sample_pages, open_page):
    page = open_page(sample_pages.pages[0])
    page.select_option("#layer-b", "0")  # the source on both sides: the views must match
    settle(page)
    before = shot(page, "#view-right")
    box = page.locator("#view-left").bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.4, box["y"] + box["height"] * 0.4)
    page.mouse.wheel(0, -600)
    page.wait_for_function("window.dicomSrViewer.state.zoom > 1.5", timeout=WAIT_MS)
    settle(page)
    left, right = shot(page, "#view-left"), shot(page, "#view-right")
    assert changed(before, right) > 0.2
    assert same(left, right) < 0.01
    # a drag on the right view pans the left one alike; a double-click resets both
    rbox = page.locator("#view-right").bounding_box()
    page.mouse.move(rbox["x"] + 200, rbox["y"] + 200)
    page.mouse.down()
    page.mouse.move(rbox["x"] + 260, rbox["y"] + 230, steps=4)
    page.mouse.up()
    settle(page)
    panned_left, panned_right = shot(page, "#view-left"), shot(page, "#view-right")
    assert changed(left, panned_left) > 0.2
    assert same(panned_left, panned_right) < 0.01
    page.locator("#view-left").dblclick()
    page.wait_for_function("window.dicomSrViewer.state.zoom === 1", timeout=WAIT_MS)
    settle(page)
    assert changed(before, shot(page, "#view-right")) < 0.01


def test_swipe_and_flip_change_what_is_drawn(sample_pages, open_page):
    page = open_page(sample_pages.pages[0])
    page.click("#mode-swipe")
    settle(page)
    half = shot(page, "#view-swipe")
    page.locator("#swipe").fill("200")
    page.wait_for_function("window.dicomSrViewer.state.swipe === 0.2", timeout=WAIT_MS)
    settle(page)
    fifth = shot(page, "#view-swipe")
    w = half.shape[1]
    band = slice(int(0.23 * w), int(0.47 * w))  # was the A side, now B (the lines left out)
    assert changed(half[:, band], fifth[:, band]) > 0.02
    # flip: the same place shows the other image
    page.keyboard.press("f")
    page.wait_for_function("window.dicomSrViewer.state.flipped", timeout=WAIT_MS)
    settle(page)
    assert changed(fifth[:, band], shot(page, "#view-swipe")[:, band]) > 0.02


def test_source_by_replication_or_bicubic(sample_pages, open_page):
    page = open_page(sample_pages.pages[0])
    settle(page)
    replicated = shot(page, "#view-left")
    page.select_option("#resample", "bicubic")
    settle(page)
    assert changed(replicated, shot(page, "#view-left")) > 0.02


def test_frame_slider_and_cine_play(cine_page, open_page):
    page = open_page(cine_page)
    assert page.evaluate("window.dicomSrViewer.data.frames") == 30
    sizes = page.evaluate(DECODE_ALL)
    assert len(sizes) == 60 and all(w > 0 for _, w in sizes)  # source and derived, 30 each
    settle(page)
    first_left, first_right = shot(page, "#view-left"), shot(page, "#view-right")
    page.locator("#frame").fill("15")
    page.wait_for_function("window.dicomSrViewer.state.frame === 15", timeout=WAIT_MS)
    settle(page)
    assert changed(first_left, shot(page, "#view-left")) > 0.01
    assert changed(first_right, shot(page, "#view-right")) > 0.01
    assert page.locator("#viewer").get_attribute("data-frame") == "15"
    page.click("#play")
    page.wait_for_function(
        "window.dicomSrViewer.state.frame >= 18 || window.dicomSrViewer.state.frame < 15",
        timeout=WAIT_MS,
    )
    page.click("#play")  # pause
    assert not page.evaluate("window.dicomSrViewer.state.playing")


def test_index_of_50_series_loads_thumbnails_lazily(tmp_path, open_page):
    """A study of 50 series: the index opens with the thumbnails on screen loaded, not all;
    scrolling to the end loads the last one."""
    from dicom_sr.viewer import ImageStore, IndexRow, write_assets, write_index

    store = ImageStore(tmp_path)
    rng = np.random.default_rng(0)
    rows = []
    for k in range(50):
        thumb = store.thumb(f"frames/{k:03d}/thumb", rng.integers(0, 255, (240, 320), np.uint8))
        rows.append(IndexRow(f"series-{k:03d}.html", f"series {k}", thumb, ["1"]))
    write_assets(tmp_path)
    page = open_page(write_index(tmp_path / "index.html", "50 series", ["frames"], rows))
    page.wait_for_function("document.images[0].complete && document.images[0].naturalWidth > 0")
    loaded = "[...document.images].filter(i => i.complete && i.naturalWidth > 0).length"
    assert page.evaluate(loaded) < 50
    page.locator("img").last.scroll_into_view_if_needed()
    last = "(() => { const i = [...document.images].pop(); return i.naturalWidth > 0; })()"
    page.wait_for_function(last, timeout=WAIT_MS)


def test_evaluation_report_pages(tmp_path, open_page):
    """evaluate's report.html and its viewer pages: the ground truth, the degraded input and
    each method decode and are drawn; the tables are there."""
    from dicom_sr.evaluate import run_evaluation

    report = run_evaluation(
        [ROOT / "sample_data" / "us_phantom_single.dcm"],
        tmp_path,
        methods=["bicubic", "ibp"],
        scales=[2],
        config=PipelineConfig(),
        cine_frames=0,
        figures_enabled=False,
    )
    index = open_page(tmp_path / "report.html")
    assert index.locator("th", has_text="PSNR [dB]").count() >= 1
    (href,) = set(index.locator("table.index a").evaluate_all("as => as.map(a => a.href)"))
    page = open_page(Path(href.removeprefix("file://")))
    sizes = page.evaluate(DECODE_ALL)
    assert len(sizes) == 5 and all(w > 0 for _, w in sizes)  # truth, degraded (+ bicubic), 2
    labels = page.evaluate("window.dicomSrViewer.data.layers.map(l => l.label)")
    assert labels == ["ground truth", "degraded input (x2 smaller)", *report["methods"]]
    settle(page)
    truth = shot(page, "#view-left")
    page.select_option("#layer-a", "1")  # the degraded input, replicated
    settle(page)
    assert changed(truth, shot(page, "#view-left")) > 0.05


def test_shift_drag_measures_the_same_length_on_both_sides(sample_pages, open_page):
    """A distance measured on the source and on the derived frame, each with its own regions'
    calibration: the same millimetres (the derived regions were rescaled right)."""
    page = open_page(sample_pages.pages[0])
    settle(page)
    box = page.locator("#view-left").bounding_box()
    x, y = box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.3
    page.keyboard.down("Shift")
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + 150, y + 100, steps=5)
    page.mouse.up()
    page.keyboard.up("Shift")
    page.wait_for_function("window.dicomSrViewer.state.measure !== null", timeout=WAIT_MS)
    text = page.locator("#measure").inner_text()
    a, b = (float(v) for v in re.findall(r"([\d.]+) mm", text))
    assert a > 5 and a == b, text
    page.keyboard.press("Escape")
    page.wait_for_function("window.dicomSrViewer.state.measure === null", timeout=WAIT_MS)
