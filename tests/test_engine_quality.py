"""Does self-supervised training beat bicubic + back projection on real ultrasound tissue?

Held-aside tissue crops of real files are downscaled by the configured kernel; each method
super-resolves the LR crop (training on the LR crop only, the zero-shot setting) and is scored
in PSNR against the crop, ``scale`` pixels of border shaved. ``ibp`` (bicubic + back
projection, no learning) is the anchor a learned method must beat. The default run trains ZSSR
and the CycleGAN briefly on one crop at x2; the ``slow`` variants run the full 300-iteration
budget on three crops from three files at x2 and x4.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_engine_train import read_luma

from dicom_sr.config import EngineConfig
from dicom_sr.engine.api import fit, upscale
from dicom_sr.engine.resize import downscale

#: (file, rows, cols) of tissue areas away from text overlays
CROPS = {
    "US1_UNCR.dcm": (slice(96, 336), slice(48, 560)),
    "JPGLosslessP14SV1_1s_1f_8b.dcm": (slice(360, 680), slice(440, 824)),
    "gdcm-US-ALOKA-16.dcm": (slice(136, 392), slice(24, 312)),
}


def tissue_crop(name: str) -> np.ndarray:
    rows, cols = CROPS[name]
    return np.ascontiguousarray(read_luma(name)[rows, cols])


def psnr(sr: np.ndarray, hr: np.ndarray, shave: int) -> float:
    a, b = sr[shave:-shave, shave:-shave], hr[shave:-shave, shave:-shave]
    return float(10 * np.log10(1.0 / np.mean((a.astype(np.float64) - b) ** 2)))


def scores(hr: np.ndarray, config: EngineConfig, methods: list[str]) -> dict[str, float]:
    lr = downscale(torch.from_numpy(hr)[None, None], config.scale, config)[0, 0].numpy()
    out = {}
    for m in methods:
        cfg = config.model_copy(update={"method": m})
        out[m] = psnr(upscale(lr, fit([lr], cfg), cfg), hr, config.scale)
    return out


def test_learning_beats_ibp_x2_quick():
    # a CI-sized budget: 100 iterations of batch 2 of 48 px crops
    hr = tissue_crop("US1_UNCR.dcm")[:224, 32:256]
    config = EngineConfig(
        scale=2, iterations=100, batch_size=2, crop_size=48, ensemble=2, device="cpu"
    )
    s = scores(hr, config, ["bicubic", "ibp", "zssr", "cyclegan"])
    assert s["ibp"] > s["bicubic"]
    assert s["zssr"] > s["ibp"] + 0.3, s
    assert s["cyclegan"] > s["ibp"] + 0.3, s


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CROPS))
@pytest.mark.parametrize("scale", [2, 4])
def test_learning_vs_ibp_full_budget(name, scale):
    hr = tissue_crop(name)
    config = EngineConfig(scale=scale, iterations=300, device="cpu")
    s = scores(hr, config, ["ibp", "zssr", "cyclegan"])
    # measured (300 iterations, ensemble 8): x2 +0.22 to +2.54 dB over ibp, x4 -0.08 to +0.19;
    # single runs differ by up to about 0.2 dB (thread count, random draws)
    margin = 0.1 if scale == 2 else -0.25
    assert s["zssr"] > s["ibp"] + margin, s
    assert s["cyclegan"] > s["ibp"] + margin, s


@pytest.mark.parametrize("name", sorted(CROPS))
@pytest.mark.parametrize("scale", [2, 4])
def test_momentum_back_projection_on_real_tissue(name, scale):
    """With the same steps, momentum takes ``ibp`` further where plain steps are slow (the x2
    JPGLossless crop: measured +0.29 dB) and loses little where they are not (measured at
    worst -0.05 dB on these tissue crops), still agreeing with the LR input to half a grey
    level (mean absolute residual; measured at most 0.34, and 0.53 for 10 plain steps on
    the evaluation's crops)."""
    hr = tissue_crop(name)
    hr = hr[: hr.shape[0] // scale * scale, : hr.shape[1] // scale * scale]
    plain = EngineConfig(method="ibp", scale=scale, back_projection_momentum=0.0, device="cpu")
    lr_t = downscale(torch.from_numpy(hr)[None, None], scale, plain)
    lr = lr_t[0, 0].numpy()
    got = {}
    for beta in (0.0, 0.8):
        cfg = plain.model_copy(update={"back_projection_momentum": beta})
        sr = upscale(lr, fit([], cfg), cfg)
        residual = downscale(torch.from_numpy(sr)[None, None], scale, cfg) - lr_t
        got[beta] = (psnr(sr, hr, scale), float(residual.abs().mean()))
    gain = got[0.8][0] - got[0.0][0]
    assert gain > (0.1 if (name, scale) == ("JPGLosslessP14SV1_1s_1f_8b.dcm", 2) else -0.06), got
    assert got[0.8][1] < 0.5 / 255, got
