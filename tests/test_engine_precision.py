"""Inference precision (fp32 / bf16 autocast, chosen per machine) and the batched ensemble."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_engine_api import _detail_generator, _echo, _ge, _lr_of, _psnr

from dicom_sr.config import EngineConfig
from dicom_sr.engine import infer, pixel_identity, upscale
from dicom_sr.engine.api import TrainedModel
from dicom_sr.engine.infer import native_bf16, precision, self_ensemble

CPU = torch.device("cpu")


def test_precision_resolves_per_machine(monkeypatch):
    assert precision(EngineConfig(precision="fp32"), CPU) == "fp32"
    assert precision(EngineConfig(precision="bf16"), CPU) == "bf16"
    assert precision(EngineConfig(bf16=True), CPU) == "bf16"  # the older switch still forces it
    infer._cpu_flags.cache_clear()
    monkeypatch.setattr(infer, "_cpu_flags", lambda: frozenset({"avx2", "fma"}))
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    assert not native_bf16(CPU)
    assert precision(EngineConfig(), CPU) == "fp32"  # emulated bf16 is slower: stay in fp32
    monkeypatch.setattr(infer, "_cpu_flags", lambda: frozenset({"avx512f", "avx512_bf16"}))
    assert precision(EngineConfig(), CPU) == "bf16"
    # what auto resolved to is part of what decides the pixels (the derived UIDs)
    assert pixel_identity(EngineConfig(device="cpu"))["precision"] == "bf16"
    assert pixel_identity(EngineConfig(device="cpu", precision="fp32"))["precision"] == "fp32"
    assert "precision" not in pixel_identity(EngineConfig(device="cpu", method="ibp"))


@pytest.mark.parametrize(
    "crop, s", [(_echo, 2), (_ge, 2), (_echo, 4)], ids=["echo-x2", "ge-x2", "echo-x4"]
)
def test_bf16_psnr_matches_fp32_on_real_crops(crop, s):
    hr, lr = _lr_of(crop()[:128, :160], s, EngineConfig())
    model = TrainedModel("cyclegan", s, _detail_generator(s).state_dict(), {})
    base = dict(method="cyclegan", scale=s, ensemble=2, device="cpu")
    fp32 = upscale(lr, model, EngineConfig(**base, precision="fp32"))
    bf16 = upscale(lr, model, EngineConfig(**base, precision="bf16"))
    err = np.abs(bf16.astype(np.float64) - fp32)
    # with the image path in float32 (Generator._forward_mixed), measured on these crops:
    # largest pixel error 0.0003-0.0005, mean 3-5e-5, PSNR change under 0.003 dB; with the
    # whole generator in bf16 it was 0.0023 / 2e-4 / 0.029 dB on the quiet echo crop at x2
    assert abs(_psnr(bf16, hr, 2 * s) - _psnr(fp32, hr, 2 * s)) < 0.02
    assert 0 < err.max() < 0.002 and err.mean() < 2e-4


def test_under_autocast_the_image_path_stays_float32():
    """A fresh generator is the bicubic exactly; under bf16 autocast it still is (to float32
    rounding), because only the detail branches run in bf16, not the image."""
    from dicom_sr.engine.nets import Generator
    from dicom_sr.engine.resize import upscale_bicubic

    x = torch.rand(1, 1, 24, 32)
    G = Generator(2).eval()
    with torch.inference_mode():
        ref = upscale_bicubic(x, 2)
        with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
            out = G(x)
    assert out.dtype == torch.float32
    assert float((out - ref).abs().max()) < 1e-6
    assert float((ref.bfloat16().float() - ref).abs().max()) > 1e-4  # bf16 would have shown


def test_batched_ensemble_equals_the_loop():
    frame = torch.from_numpy(_ge()[:36, :52])[None, None]
    G = _detail_generator(2)
    config = EngineConfig(scale=2, ensemble=8, back_projection_iters=3, device="cpu")
    looped = self_ensemble(G, frame, config, CPU, batch=False)
    batched = self_ensemble(G, frame, config, CPU, batch=True)
    assert looped.shape == (1, 1, 72, 104)
    torch.testing.assert_close(batched, looped, atol=1e-5, rtol=0)
