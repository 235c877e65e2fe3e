"""run_evaluation on real ultrasound files: report.json, report.md and figures on disk."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from conftest import us_file
from PIL import Image

from dicom_sr.config import PipelineConfig
from dicom_sr.evaluate import run_evaluation
from dicom_sr.evaluate.protocol import Degradation, cine_scores, resolve_methods

METHODS = ["bicubic", "ibp", "zssr"]


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    """One evaluation at x2 of a 30-frame colour cine, an RGB frame and a too-small frame."""
    out = tmp_path_factory.mktemp("eval")
    config = PipelineConfig().with_overrides({"engine.iterations": 2, "engine.ensemble": 1})
    calls = []
    report = run_evaluation(
        [
            us_file("examples_ybr_color.dcm"),
            us_file("examples_rgb_color.dcm"),
            us_file("ExplVR_BigEnd.dcm"),
        ],
        out,
        methods=METHODS,
        scales=[2],
        config=config,
        progress=lambda done, total: calls.append((done, total)),
        cine_frames=3,
    )
    return out, report, calls


def test_report_json(evaluated):
    out, report, calls = evaluated
    data = json.loads((out / "report.json").read_text())
    assert data["methods"] == METHODS and data["scales"] == [2]
    assert len(data["images"]) == 2
    for img in data["images"]:
        h, w = img["hr_shape"]
        assert h % 2 == 0 and w % 2 == 0 and min(h, w) >= 96
        for m in METHODS:
            r = img["results"][m]["2"]
            for key in ("psnr", "ssim", "vif_p", "train_seconds", "infer_seconds", "peak_rss_mb"):
                assert isinstance(r[key], float) and math.isfinite(r[key]), (m, key)
            assert 15 < r["psnr"] < 60 and 0 < r["ssim"] <= 1 and 0 < r["vif_p"] < 1.5
            assert r["peak_rss_mb"] > 50
        # back projection makes the input consistent: it must beat plain bicubic
        assert img["results"]["ibp"]["2"]["psnr"] > img["results"]["bicubic"]["2"]["psnr"]
    summary = data["summary"]["ibp"]["2"]["psnr"]
    values = [img["results"]["ibp"]["2"]["psnr"] for img in data["images"]]
    assert summary["n"] == 2 and summary["mean"] == pytest.approx(np.mean(values))
    assert summary["std"] == pytest.approx(np.std(values))
    # the 80 x 60 frame is reported, with the reason, not silently dropped
    (skipped,) = data["skipped"]
    assert "ExplVR_BigEnd" in skipped["path"] and "too small" in skipped["reason"]
    # progress: every (image or cine) x method, ending at total
    assert calls[-1][0] == calls[-1][1] == (2 + 1) * len(METHODS)


def test_cine_section(evaluated):
    out, report, _ = evaluated
    (cine,) = report["cine"]
    assert "examples_ybr_color" in cine["id"] and cine["scale"] == 2
    for m in METHODS:
        r = cine["results"][m]
        assert r["frames"] == 3
        assert r["source_mad"] > 0 and r["sr_mad"] > 0 and r["flicker"] >= 0
        # super-resolving a degraded cine cannot recover all the source's frame-to-frame change
        assert r["sr_mad"] < 1.5 * r["source_mad"]


def test_report_markdown(evaluated):
    out, report, _ = evaluated
    md = (out / "report.md").read_text()
    assert "| method | scale | PSNR [dB] | SSIM | VIF-P |" in md
    for m in METHODS:
        assert f"| {m} | x2 | " in md
    mean = report["summary"]["ibp"]["2"]["psnr"]["mean"]
    assert f"{mean:.2f} ± " in md
    assert "Cine temporal consistency" in md and "VIF-P" in md
    assert "## Not evaluated" in md and "ExplVR_BigEnd" in md


def test_figures(evaluated):
    out, report, _ = evaluated
    assert len(report["figures"]) == 3  # two images + one cine
    for rel in report["figures"]:
        path = out / rel
        with Image.open(path) as im:
            im.verify()
        with Image.open(path) as im:
            w, h = im.size
            assert im.format == "PNG" and 600 <= w <= 3000 and 250 <= h <= 1500
            px = np.asarray(im.convert("L"))
            assert px.std() > 20  # images, not a blank canvas


def test_cine_scores_known_values():
    """A static SR of a changing source has zero SR change and flicker = source change."""
    rng = np.random.default_rng(1)
    hr = [rng.random((40, 40)).astype(np.float32) for _ in range(3)]
    static = [hr[0]] * 3
    r = cine_scores(hr, static, 2)
    inner = [f[2:-2, 2:-2] for f in hr]
    expect = np.mean([np.abs(b - a).mean() for a, b in zip(inner, inner[1:], strict=False)])
    assert r["sr_mad"] == 0 and r["mad_ratio"] == 0
    assert r["source_mad"] == pytest.approx(expect) and r["flicker"] == pytest.approx(expect)


def test_degradation_psf_is_anisotropic():
    """The PSF blurs columns (lateral) more than rows (axial); the engine's kernel is untouched."""
    img = np.zeros((64, 64), np.float32)
    img[32, 32] = 1.0
    lr = Degradation(kernel="psf", sigma_axial=0.5, sigma_lateral=1.5).apply(img, 2)
    rows_spread = (lr.sum(axis=1) > 1e-3).sum()
    cols_spread = (lr.sum(axis=0) > 1e-3).sum()
    assert cols_spread > rows_spread
    bic = Degradation().apply(img, 2)
    assert bic.shape == lr.shape == (32, 32) and not np.allclose(bic, lr)


def test_resolve_methods_keeps_run_settings():
    config = PipelineConfig().with_overrides({"engine.iterations": 7, "engine.seed": 3})
    specs = resolve_methods(["bicubic", "cyclegan"], config)
    assert [s.engine.method for s in specs] == ["bicubic", "cyclegan"]
    assert all(s.engine.iterations == 7 and s.engine.seed == 3 for s in specs)
    assert not any(s.ablation for s in specs)


def test_resolve_ablation_takes_losses_and_run_budget():
    """An ablation pipeline brings its loss weights; the run keeps its budget and seed."""
    config = PipelineConfig().with_overrides({"engine.iterations": 7, "engine.method": "zssr"})
    (spec,) = resolve_methods(["ablation-gan-alone"], config)
    assert spec.ablation and spec.name == "ablation-gan-alone"
    assert spec.engine.method == "cyclegan" and spec.engine.iterations == 7
    losses = spec.engine.losses
    assert losses.adversarial > 0
    assert losses.pixel == losses.perceptual == losses.cycle_forward == losses.cycle_backward == 0


def test_markdown_ablation_table():
    """Ablations get a Table V style table (PSNR, VIF-P, SSIM per scale), full model last."""
    from dicom_sr.evaluate.report import render_markdown, summarize

    methods = ["ablation-gan-alone", "ablation-cycle-alone", "cyclegan"]
    psnrs = {
        "ablation-gan-alone": [30.0, 32.0],
        "ablation-cycle-alone": [31.0, 33.0],
        "cyclegan": [32.5, 33.5],
    }
    images = []
    for k in range(2):
        results = {
            m: {
                "2": {
                    "psnr": psnrs[m][k],
                    "ssim": 0.9,
                    "vif_p": 0.6,
                    "train_seconds": 1.0,
                    "infer_seconds": 0.1,
                    "peak_rss_mb": 500.0,
                    "rss_increase_mb": 10.0,
                }
            }
            for m in methods
        }
        images.append({"id": f"img{k}", "hr_shape": [100, 120], "results": results})
    report = {
        "methods": methods,
        "scales": [2],
        "images": images,
        "ablations": methods[:2],
        "summary": summarize(images, methods, [2]),
        "created": "now",
        "cine": [],
        "config": {"name": "bmode-default", "hash": "abc"},
        "protocol": {"degradation": "d", "ground_truth": "g", "metrics": "m", "memory": "r"},
        "machine": {"cpu_model": "cpu", "usable_cores": 2, "torch": "2", "torch_threads": 2},
    }
    md = render_markdown(report)
    table = md.split("## Ablation")[1].split("## Per image")[0]
    assert "| variant | PSNR [dB] x2 | VIF-P x2 | SSIM x2 |" in table
    assert "| ablation-gan-alone | 31.00 ± 1.00 | 0.6000 ± 0.0000 | 0.9000 ± 0.0000 |" in table
    assert table.strip().splitlines()[-1].startswith("| cyclegan (all losses) | 33.00 ± 0.50 |")


def test_unknown_method_is_named():
    from dicom_sr.config import ConfigError

    with pytest.raises(ConfigError, match="unknown method 'srgan'.*ablation-gan-alone"):
        resolve_methods(["bicubic", "srgan"], PipelineConfig())


def test_html_report_and_viewer_pages(evaluated):
    """report.html holds the tables and links one viewer page per image x scale and per cine;
    each page shows the ground truth, the degraded input and every method, lossless."""
    out, report, _ = evaluated
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "| method |" not in html and "<th>PSNR [dB]</th>" in html
    pages = sorted(out.glob("view-*.html"))
    assert len(pages) == len(report["images"]) + len(report["cine"])
    for page in pages:
        assert f'href="{page.name}"' in html
    assert (out / "assets" / "viewer.js").is_file()
    from test_compare import page_data

    img = report["images"][0]
    (data,) = [d for d in map(page_data, pages) if d["title"] == f"{img['id']}: x2"]
    labels = [layer["label"] for layer in data["layers"]]
    assert labels[:2] == ["ground truth", "degraded input (x2 smaller)"] and labels[2:] == METHODS
    h, w = img["hr_shape"]
    assert (data["width"], data["height"]) == (w, h)
    with Image.open(out / data["layers"][1]["frames"][0]) as lr:
        assert lr.size == (w // 2, h // 2)
    psnr = data["layers"][3]["provenance"]["psnr"]
    assert float(psnr) == pytest.approx(img["results"]["ibp"]["2"]["psnr"], abs=1e-4)
