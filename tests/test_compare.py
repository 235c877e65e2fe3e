"""``dicom-sr compare`` without a browser: what the pages hold, read back from disk."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pydicom
import pytest
from click.testing import CliRunner
from conftest import us_file
from PIL import Image

from dicom_sr.cli import main
from dicom_sr.compare import build_compare
from dicom_sr.compare.frames import calibration, region_mask
from dicom_sr.compare.provenance import parse_description, provenance_rows
from dicom_sr.config import PipelineConfig
from dicom_sr.engine.infer import model_weight
from dicom_sr.errors import InputError
from dicom_sr.pipeline import process_inputs
from dicom_sr.pipeline.frames import guard_text
from dicom_sr.viewer import Layer, ViewerPage
from dicom_sr.viewer.page import render_page

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = sorted((ROOT / "sample_data").glob("*.dcm"))


def page_data(path: Path) -> dict:
    """The JSON a viewer page embeds."""
    html = path.read_text(encoding="utf-8")
    match = re.search(r'<script type="application/json" id=viewer-data>(.*?)</script>', html, re.S)
    assert match, f"{path}: no viewer data"
    return json.loads(match.group(1))


def grey(path: Path) -> np.ndarray:
    """A grey frame read back from the page (lossless WebP decodes as three equal channels)."""
    img = np.asarray(Image.open(path))
    if img.ndim == 3:
        assert np.array_equal(img[..., 0], img[..., 1]) and np.array_equal(img[..., 0], img[..., 2])
        img = img[..., 0]
    return img


@pytest.fixture(scope="module")
def derived_out(tmp_path_factory) -> Path:
    """The sample data processed with bicubic, as ``dicom-sr process`` writes it."""
    out = tmp_path_factory.mktemp("derived")
    config = PipelineConfig().with_overrides({"engine.method": "bicubic"})
    run = process_inputs(SAMPLES, config, out)
    assert run.written == len(SAMPLES)
    return out


@pytest.fixture(scope="module")
def sample_page(derived_out, tmp_path_factory):
    out = tmp_path_factory.mktemp("page")
    return build_compare(SAMPLES, out, derived=[derived_out])


def test_every_source_series_gets_a_page_linked_from_the_index(sample_page):
    assert len(sample_page.pages) == len(SAMPLES) and not sample_page.left_out
    index = sample_page.index.read_text(encoding="utf-8")
    for page in sample_page.pages:
        assert f'href="{page.name}"' in index
    assert index.count("data-src=") == len(SAMPLES) and "assets/index.js" in index
    # local assets only: no URL with a scheme anywhere in the pages
    for html in [index, *(p.read_text(encoding="utf-8") for p in sample_page.pages)]:
        assert not re.search(r"(src|href)=\"?(https?:)?//", html)
    assert (sample_page.out_dir / "assets" / "viewer.js").is_file()


def test_frames_are_the_source_and_the_derived_pixels(sample_page, derived_out):
    cine = next(p for p in sample_page.pages if "cine" in page_data(p)["title"])
    data = page_data(cine)
    source, derived = data["layers"][0], data["layers"][1]
    assert data["frames"] == 6 and len(source["frames"]) == len(derived["frames"]) == 6
    assert (data["width"], data["height"]) == (512, 400)
    # lossless: the decoded source frame equals the DICOM's pixels (WebP stores grey as RGB)
    ds = pydicom.dcmread(ROOT / "sample_data" / "us_phantom_cine.dcm")
    first = grey(cine.parent / source["frames"][0])
    assert first.shape == (200, 256) and np.array_equal(first, ds.pixel_array[0])
    (written,) = [
        p for p in derived_out.rglob("*.dcm") if pydicom.dcmread(p).get("NumberOfFrames") == 6
    ]
    out = grey(cine.parent / derived["frames"][3])
    assert np.array_equal(out, pydicom.dcmread(written).pixel_array[3])
    # the source's bicubic frames: the engine's bicubic (the bicubic method's), at the derived size
    from dicom_sr.engine import upscale_np

    want = np.rint(np.clip(upscale_np(first / 255.0, 2, "bicubic"), 0, 1) * 255).astype(np.uint8)
    assert np.array_equal(grey(cine.parent / source["bicubic"][0]), want)


def test_ruler_and_provenance(sample_page):
    data = page_data(sample_page.pages[0])
    source, derived = data["layers"][0], data["layers"][1]
    assert source["calibration"] == pytest.approx(derived["calibration"])
    assert source["calibration"]["x"] > 0
    prov = derived["provenance"]
    assert prov["method"] == "bicubic" and prov["scale"] == "x2"
    assert (
        prov["config hash"] == PipelineConfig().with_overrides({"engine.method": "bicubic"}).hash()
    )
    assert prov["blend weight"].startswith("none")
    html = sample_page.pages[0].read_text(encoding="utf-8")
    assert "processed images" in html and "distances agree" in html


def test_description_parse_reads_the_guard_and_its_scores():
    guard = {"decision": "ibp", "model_db": 30.5, "ibp_db": 31.25, "pairs": 8, "reason": "r"}
    text = (
        "Super-resolution x4 by dicom-sr 0.1.0; method cyclegan; iterations 300; perceptual "
        f"loss off; pipeline bmode-default v7 config 0123456789abcdef; {guard_text(guard)}"
    )
    fields = parse_description(text)
    assert fields["scale"] == "4" and fields["guard"] == "ibp"
    assert (fields["model_db"], fields["ibp_db"], fields["pairs"]) == ("30.50", "31.25", "8")
    ds = pydicom.Dataset()
    ds.DerivationDescription = text
    rows = provenance_rows(ds, {})
    assert rows["guard chose"] == "ibp" and "30.50 dB" in rows["guard scores"]
    assert rows["blend weight"] == "none: the guard chose ibp"
    cfg = PipelineConfig()
    ds.DerivationDescription = text.replace("0123456789abcdef", cfg.hash()).replace(
        guard_text(guard), guard_text({**guard, "decision": "model"})
    )
    w = model_weight(cfg.engine)
    assert provenance_rows(ds, {cfg.hash(): cfg})["blend weight"] == f"{w:g} model + {1 - w:g} ibp"
    # a header that records the weight is read as it says, whatever the configuration
    ds.DerivationDescription += "; model weight 0.7 (rest ibp)"
    assert provenance_rows(ds, {})["blend weight"] == "0.7 model + 0.3 ibp"


@pytest.mark.slow
def test_provenance_of_a_real_cyclegan_series(tmp_path):
    """A learned method end to end: the page shows the guard's choice, both scores and the
    blend weight that the derived header records."""
    config = PipelineConfig().with_overrides({"engine.iterations": 2})
    sample = ROOT / "sample_data" / "us_phantom_single.dcm"
    process_inputs([sample], config, tmp_path / "out")
    result = build_compare([sample], tmp_path / "page", derived=[tmp_path / "out"])
    prov = page_data(result.pages[0])["layers"][1]["provenance"]
    assert prov["method"] == "cyclegan" and prov["config hash"] == config.hash()
    assert prov["guard chose"] in ("model", "ibp")
    assert re.fullmatch(
        r"model -?[\d.]+ dB, ibp -?[\d.]+ dB on \d+ held-aside pairs", prov["guard scores"]
    )
    want = "none: the guard chose ibp" if prov["guard chose"] == "ibp" else "0.5 model + 0.5 ibp"
    assert prov["blend weight"] == want


def test_deidentify_text_blanks_outside_the_regions(derived_out, tmp_path):
    result = build_compare(SAMPLES, tmp_path, derived=[derived_out], deidentify=True)
    assert len(result.pages) == len(SAMPLES)
    for page in result.pages:
        data = page_data(page)
        # the burned-in text (top-left corner, outside every region) is blank
        src = np.asarray(Image.open(page.parent / data["layers"][0]["frames"][0]))
        src = src if "RGB" in data["title"] else src[..., 0]
        ds = pydicom.dcmread(_source_of(data))
        mask = region_mask(ds, ds.Rows, ds.Columns, "x")
        assert not mask.all()
        assert src[~mask].max() == 0
        raw = ds.pixel_array if ds.get("NumberOfFrames") is None else ds.pixel_array[0]
        assert raw[~mask].max() > 0, "the sample has burned-in text outside its regions"
        assert np.array_equal(src[mask], raw[mask])


def _source_of(data: dict) -> Path:
    title = data["title"]
    name = {"B-mode phantom cine": "cine", "B-mode phantom RGB": "rgb"}.get(title, "single")
    return ROOT / "sample_data" / f"us_phantom_{name}.dcm"


def test_deidentify_leaves_out_series_without_regions(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    ds = pydicom.dcmread(ROOT / "sample_data" / "us_phantom_single.dcm")
    del ds.SequenceOfUltrasoundRegions
    ds.save_as(src / "noregions.dcm")
    result = build_compare(
        [src],
        tmp_path / "page",
        config=PipelineConfig().with_overrides({"engine.method": "bicubic"}),
        deidentify=True,
    )
    assert not result.pages
    ((_, reason),) = result.left_out
    assert "SequenceOfUltrasoundRegions" in reason and "(0018,6011)" in reason


def test_calibration_per_display_pixel():
    ds = pydicom.dcmread(us_file("examples_ybr_color.dcm"), stop_before_pixels=True)
    x, y = calibration(ds, ds.Columns, 2 * ds.Columns)
    r = ds.SequenceOfUltrasoundRegions[0]
    assert x == pytest.approx(10 * abs(float(r.PhysicalDeltaX)) / 2)
    assert y == pytest.approx(10 * abs(float(r.PhysicalDeltaY)) / 2)


def test_page_escapes_text_and_cannot_end_its_script():
    layer = Layer("<b>x</b>", "source", ["a.webp"])
    page = ViewerPage("</script><script>alert(1)</script>", 4, 4, 1, [layer, layer])
    html = render_page(page)
    assert "<script>alert(1)" not in html
    assert html.count("</script>") == 2  # the data element's and the viewer's


def test_cli_needs_something_to_compare_against(tmp_path):
    result = CliRunner().invoke(main, ["compare", str(SAMPLES[0]), "--out", str(tmp_path)])
    assert result.exit_code == 2 and "--derived" in result.output


def test_cli_method_on_the_fly(tmp_path):
    result = CliRunner().invoke(
        main,
        ["compare", str(SAMPLES[2]), "--out", str(tmp_path / "p"), "--method", "bicubic", "-q"],
    )
    assert result.exit_code == 0, result.output
    assert "1 series page(s)" in result.output
    data = page_data(tmp_path / "p" / "series-001.html")
    assert data["layers"][1]["label"] == "bicubic x2, computed for this page"
    # the scratch output is gone: the page folder holds pages, assets and frames only
    assert {p.name for p in (tmp_path / "p").iterdir()} == {
        "index.html",
        "series-001.html",
        "assets",
        "frames",
    }


def test_listen_output_folder_is_found(derived_out, tmp_path):
    """``listen`` keeps its manifest in OUT/derived/: --derived OUT finds it there."""
    import shutil

    from dicom_sr.compare.sources import read_derived

    node = tmp_path / "node"
    shutil.copytree(derived_out, node / "derived")
    index = read_derived([node])
    assert index.folders == [node / "derived"]
    assert len(index.by_source) == len(SAMPLES)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no manifest.jsonl"):
        read_derived([empty])


def test_deidentify_warns_when_the_regions_cover_the_frame(tmp_path):
    """A region as large as the frame leaves nothing to blank: the page says so rather than
    implying the burned-in text is gone; a sample with text outside its region gets no such
    warning."""
    src = tmp_path / "src"
    src.mkdir()
    ds = pydicom.dcmread(ROOT / "sample_data" / "us_phantom_single.dcm")
    region = ds.SequenceOfUltrasoundRegions[0]
    region.RegionLocationMinX0, region.RegionLocationMinY0 = 0, 0
    region.RegionLocationMaxX1, region.RegionLocationMaxY1 = ds.Columns - 1, ds.Rows - 1
    ds.save_as(src / "whole.dcm")
    result = build_compare(
        [src, ROOT / "sample_data" / "us_phantom_rgb.dcm"],
        tmp_path / "page",
        config=PipelineConfig().with_overrides({"engine.method": "bicubic"}),
        deidentify=True,
    )
    flagged = {
        page_data(p)["title"]: "blanked nothing here" in p.read_text(encoding="utf-8")
        for p in result.pages
    }
    assert flagged == {"B-mode phantom": True, "B-mode phantom RGB": False}


def test_cli_png_frames_and_lossy_only_as_webp(derived_out, tmp_path):
    single = str(ROOT / "sample_data" / "us_phantom_single.dcm")
    args = ["compare", single, "--derived", str(derived_out), "-q"]
    bad = CliRunner().invoke(
        main, [*args, "--out", str(tmp_path / "a"), "--format", "png", "--quality", "50"]
    )
    assert bad.exit_code == 2 and "WebP only" in bad.output
    ok = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "b"), "--format", "png"])
    assert ok.exit_code == 0, ok.output
    data = page_data(tmp_path / "b" / "series-001.html")
    for url in data["layers"][0]["frames"] + data["layers"][1]["frames"]:
        with Image.open(tmp_path / "b" / url) as im:
            assert im.format == "PNG"
