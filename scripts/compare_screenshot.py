"""Make the README's screenshot of the compare page from the tool's own output.

Processes the sample data with a cheap method (``ibp`` by default), writes the compare page
against that output (``dicom-sr compare --derived``), opens the cine's page in the
distribution's Chromium (Playwright; no browser is downloaded), zooms both views in on the
tissue, measures one distance on both and saves the viewer as a PNG.

Usage: python scripts/compare_screenshot.py [TARGET.png] [--method ibp] [--keep DIR]
(default target: docs/_static/compare.png).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

#: Resolves after two animation frames: what was scheduled is drawn.
DRAWN = "() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))"


def make_pages(work: Path, method: str) -> Path:
    """``dicom-sr process`` then ``dicom-sr compare`` on sample_data; return the cine's page."""
    samples = str(ROOT / "sample_data")
    cli = [sys.executable, "-m", "dicom_sr.cli"]
    out, page = work / "out", work / "page"
    process = [*cli, "process", samples, "--out", str(out), "--method", method, "-q"]
    subprocess.run(process, check=True)
    subprocess.run(
        [*cli, "compare", samples, "--derived", str(out), "--out", str(page), "-q"], check=True
    )
    for html in sorted(page.glob("series-*.html")):
        if "phantom cine" in html.read_text(encoding="utf-8"):
            return html
    raise SystemExit(f"{page}: no page of the sample cine")


def screenshot(page_path: Path, target: Path) -> None:
    """Open the page, zoom in on the tissue in the left view (the right one follows), measure
    a distance, save."""
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    with tempfile.TemporaryDirectory() as profile, sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            profile,
            executable_path=chromium,
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1200, "height": 760},
        )
        page = context.new_page()
        page.goto(page_path.resolve().as_uri())
        page.wait_for_function("window.dicomSrViewer.ready()")
        box = page.locator("#view-left").bounding_box()
        page.mouse.move(box["x"] + box["width"] * 0.45, box["y"] + box["height"] * 0.55)
        page.mouse.wheel(0, -500)
        page.wait_for_function("window.dicomSrViewer.state.zoom > 1.5")
        # a measurement (shift + drag): the same millimetres by each side's own calibration
        x, y = box["x"] + box["width"] * 0.2, box["y"] + box["height"] * 0.35
        page.keyboard.down("Shift")
        page.mouse.move(x, y)
        page.mouse.down()
        page.mouse.move(x + box["width"] * 0.5, y + box["height"] * 0.3, steps=5)
        page.mouse.up()
        page.keyboard.up("Shift")
        page.wait_for_function("window.dicomSrViewer.ready()")
        page.evaluate(DRAWN)
        target.parent.mkdir(parents=True, exist_ok=True)
        page.locator("#viewer").screenshot(path=str(target))
        context.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", nargs="?", default=str(ROOT / "docs/_static/compare.png"))
    parser.add_argument("--method", default="ibp", help="method of the derived series (ibp)")
    parser.add_argument("--keep", default=None, help="keep the output and page in this folder")
    args = parser.parse_args()
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="compare-shot-"))
    try:
        page = make_pages(work, args.method)
        screenshot(page, Path(args.target))
        print(f"wrote {args.target} from {page}")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
