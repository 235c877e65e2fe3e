"""The engine's public API on real ultrasound frames: fit, upscale, tiles, bf16, save/load."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
import torch

from dicom_sr.config import EngineConfig
from dicom_sr.engine import (
    METHODS,
    TrainedModel,
    downscale,
    finetune,
    fit,
    fit_cine,
    load_weights,
    save_weights,
    select_device,
    super_resolve,
    upscale,
)
from dicom_sr.engine.api import cine_frame_indices
from dicom_sr.engine.infer import apply_generator, ensemble_transforms, median, tile_bounds
from dicom_sr.engine.nets import Generator
from tests.conftest import us_file

CPU = torch.device("cpu")
#: a training budget that only checks the plumbing (the CPU is small and shared)
TINY = dict(iterations=1, crop_size=32, batch_size=1, father_scales=1, device="cpu")


def _echo() -> np.ndarray:
    """Tissue area (240 x 324) of a real Philips echo frame, MONOCHROME2, in [0, 1]."""
    ds = pydicom.dcmread(us_file("JPGLosslessP14SV1_1s_1f_8b.dcm"))
    return ds.pixel_array[252:492, 300:624].astype(np.float32) / 255


def _ge() -> np.ndarray:
    """Luminance of the scanned area (240 x 468) of a real GE RGB frame, in [0, 1]."""
    rgb = pydicom.dcmread(us_file("US1_UNCR.dcm")).pixel_array.astype(np.float32) / 255
    return (rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32))[104:344, 132:600]


def _psnr(a: np.ndarray, b: np.ndarray, margin: int) -> float:
    d = (a.astype(np.float64) - b)[margin:-margin, margin:-margin]
    return float(10 * np.log10(1.0 / np.mean(d**2)))


def _detail_generator(scale: int, seed: int = 0) -> Generator:
    """A generator whose branches add random (small) detail: G != bicubic, like a trained one."""
    g = torch.Generator().manual_seed(seed)
    G = Generator(scale)
    with torch.no_grad():
        for b in G.branches:
            b.out.weight.copy_(0.01 * torch.randn(b.out.weight.shape, generator=g))
    return G.eval()


def _lr_of(hr: np.ndarray, s: int, config: EngineConfig) -> tuple[np.ndarray, np.ndarray]:
    h, w = hr.shape[0] // s * s, hr.shape[1] // s * s
    hr = np.ascontiguousarray(hr[:h, :w])
    lr = downscale(torch.from_numpy(hr)[None, None], s, config)[0, 0].numpy()
    return hr, lr


def test_select_device():
    assert select_device("cpu") == CPU
    assert select_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="unknown device"):
        select_device("tpu")


@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.parametrize("s", [2, 3, 4])
def test_shapes_on_odd_sizes(method, s):
    frame = _echo()[101:138, 57:86]  # 37 x 29
    config = EngineConfig(method=method, scale=s, ensemble=2, back_projection_iters=1, **TINY)
    model = fit([frame], config)
    assert model.method == method and model.scale == s
    assert (model.generator_state is None) == (method in ("bicubic", "ibp"))
    out = upscale(frame, model, config)
    assert out.shape == (37 * s, 29 * s) and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    # the output is an upscaled version of this frame, not something else
    back = downscale(torch.from_numpy(out)[None, None], s, config)[0, 0].numpy()
    assert np.abs(back - frame).mean() < 0.05


@pytest.mark.parametrize("kernel", ["bicubic", "gaussian"])
@pytest.mark.parametrize("crop", [_echo, _ge], ids=["philips-echo", "ge-rgb"])
def test_ibp_beats_bicubic_on_real_crops(crop, kernel):
    hr, lr = _lr_of(crop(), 2, EngineConfig(kernel=kernel))
    psnr = {}
    for method in ("bicubic", "ibp"):
        config = EngineConfig(method=method, scale=2, kernel=kernel)
        psnr[method] = _psnr(upscale(lr, fit([], config), config), hr, margin=4)
    # measured 0.8-3.2 dB (bicubic kernel) and 2.2-10 dB (Gaussian PSF) on these crops
    assert psnr["ibp"] - psnr["bicubic"] > 0.5, psnr
    # and back projection makes the SR consistent with its LR input
    config = EngineConfig(method="ibp", scale=2, kernel=kernel)
    sr = upscale(lr, fit([], config), config)
    relr = downscale(torch.from_numpy(sr)[None, None], 2, config)[0, 0].numpy()
    bic = upscale(lr, fit([], config.model_copy(update={"method": "bicubic"})), config)
    rebic = downscale(torch.from_numpy(bic)[None, None], 2, config)[0, 0].numpy()
    assert np.abs(relr - lr).mean() < 0.25 * np.abs(rebic - lr).mean()


def test_tile_bounds_cover_once():
    for n, tile, ov in [(960, 256, 16), (1280, 256, 16), (37, 16, 8), (100, 100, 0), (5, 32, 4)]:
        cover = np.zeros(n, int)
        for c0, c1, w0, w1 in tile_bounds(n, tile, ov):
            cover[c0:c1] += 1
            assert w0 <= c0 < c1 <= w1 and w0 % 4 == 0
            assert c1 - c0 <= tile + 4 and (w0 == 0 or c0 - w0 >= ov)
            assert w1 == n or w1 - c1 >= ov
        assert np.all(cover == 1)


@pytest.mark.parametrize("s", [2, 3, 4])
def test_tiled_inference_equals_untiled(s):
    lr = torch.from_numpy(_ge()[:45, :67].copy())[None, None]
    G = _detail_generator(s)
    fp32 = dict(scale=s, precision="fp32")  # "auto" is bf16 on a CPU with native bf16
    whole = apply_generator(G, lr, EngineConfig(**fp32, tile=512), CPU)
    tiled = apply_generator(G, lr, EngineConfig(**fp32, tile=32, tile_overlap=16), CPU)
    assert whole.shape == (1, 1, 45 * s, 67 * s)
    torch.testing.assert_close(tiled, whole, atol=1e-5, rtol=0)
    bicubic = apply_generator(Generator(s).eval(), lr, EngineConfig(**fp32), CPU)
    assert (whole - bicubic).abs().mean() > 1e-3  # the check above is not vacuous
    # without enough context the seams show: overlap matters
    blind = apply_generator(G, lr, EngineConfig(**fp32, tile=32, tile_overlap=0), CPU)
    assert (blind - whole).abs().max() > 1e-4


def test_tiled_upscale_equals_untiled_through_the_api():
    frame = _echo()[:41, :67]
    model = TrainedModel("zssr", 2, _detail_generator(2).state_dict(), {})
    # fp32: tiling is exact only there. In bf16 ("auto" on an AVX512-BF16 CPU) every conv's
    # output is rounded to 8 mantissa bits, and a last-bit difference in oneDNN's fp32
    # accumulation (its blocking follows the tile shape and the buffers' alignment, so it
    # changes from process to process) flips some of those roundings: up to 3e-5 here.
    base = dict(method="zssr", scale=2, ensemble=2, back_projection_iters=2, device="cpu")
    base["precision"] = "fp32"
    whole = upscale(frame, model, EngineConfig(**base, tile=512))
    tiled = upscale(frame, model, EngineConfig(**base, tile=32, tile_overlap=16))
    np.testing.assert_allclose(tiled, whole, atol=1e-5, rtol=0)


def test_bf16_error_is_small():
    frame = _ge()[:60, :80]
    model = TrainedModel("cyclegan", 2, _detail_generator(2).state_dict(), {})
    base = dict(method="cyclegan", scale=2, ensemble=1, back_projection_iters=0, device="cpu")
    fp32 = upscale(frame, model, EngineConfig(**base, precision="fp32"))
    bf16 = upscale(frame, model, EngineConfig(**base, bf16=True, channels_last=True))
    err = np.abs(bf16 - fp32)
    # measured on CPU (real crops, x2 and x4, no back projection) with G wholly in bf16: max
    # 0.008-0.011, mean ~0.001 (8 mantissa bits); with the image path in fp32 (version 7)
    # about a tenth of that; back projection halves it
    assert err.max() < 0.02 and err.mean() < 0.003
    assert err.max() > 0  # bf16 really ran


def test_self_ensemble_parts():
    assert len(set(ensemble_transforms(8))) == 8 and ensemble_transforms(1) == [(0, False)]
    stack = torch.tensor([[1.0, 5.0], [3.0, 2.0], [2.0, 4.0], [10.0, 3.0]])
    np.testing.assert_allclose(median(stack).numpy(), np.median(stack.numpy(), axis=0))
    np.testing.assert_allclose(median(stack[:3]).numpy(), np.median(stack[:3].numpy(), axis=0))
    # an equivariant "generator" (the bicubic one) gives the same result with any ensemble
    frame = _echo()[:24, :30]
    model = TrainedModel("zssr", 2, Generator(2).state_dict(), {})
    outs = [
        upscale(frame, model, EngineConfig(method="zssr", scale=2, ensemble=e, device="cpu"))
        for e in (1, 8)
    ]
    np.testing.assert_allclose(outs[0], outs[1], atol=1e-5)


def test_same_seed_same_result_other_seed_differs():
    frame = _echo()[:40, :48]
    config = EngineConfig(
        method="zssr", scale=2, ensemble=1, back_projection_iters=1, **{**TINY, "iterations": 3}
    )
    a, b = fit([frame], config), fit([frame], config)
    for k in a.generator_state:
        torch.testing.assert_close(a.generator_state[k], b.generator_state[k], atol=0, rtol=0)
    np.testing.assert_array_equal(upscale(frame, a, config), upscale(frame, b, config))
    c = fit([frame], config.model_copy(update={"seed": 1}))
    assert any(
        not torch.equal(a.generator_state[k], c.generator_state[k]) for k in a.generator_state
    )


def test_warm_start_is_used():
    frame = _ge()[:40, :56]
    config = EngineConfig(method="zssr", scale=2, **{**TINY, "iterations": 2})
    init = TrainedModel("zssr", 2, _detail_generator(2, seed=7).state_dict(), {})
    # zero iterations from init: init's weights come back unchanged
    same = fit([frame], config, init=init, iterations=0)
    for k, v in init.generator_state.items():
        torch.testing.assert_close(same.generator_state[k], v, atol=0, rtol=0)
    assert same.info["warm_start"] is True
    warm = fit([frame], config, init=init)
    cold = fit([frame], config)
    key = "branches.0.out.weight"
    assert not torch.equal(warm.generator_state[key], cold.generator_state[key])
    # few steps from init stay close to init; the cold start begins at zero detail
    d_init = (warm.generator_state[key] - init.generator_state[key]).abs().max()
    assert d_init < (cold.generator_state[key] - init.generator_state[key]).abs().max()
    tuned = finetune(frame, init, config.model_copy(update={"finetune_iterations": 0}))
    torch.testing.assert_close(tuned.generator_state[key], init.generator_state[key])
    with pytest.raises(ValueError, match="no weights"):
        fit([frame], config, init=fit([], config.model_copy(update={"method": "ibp"})))
    with pytest.raises(ValueError, match="x3 model learning x3 from a x2 model"):
        fit([frame], config.model_copy(update={"scale": 3}), init=init)


def test_fit_cine_spreads_frames_and_budget():
    assert cine_frame_indices(10, 3) == [1, 5, 8]
    assert cine_frame_indices(4, 8) == [0, 1, 2, 3]
    cine = [_echo()[i : i + 48, 2 * i : 2 * i + 64].copy() for i in range(10)]
    config = EngineConfig(
        method="zssr", scale=2, cine_train_frames=3, cine_budget=1.5, **{**TINY, "iterations": 2}
    )
    totals = []
    model = fit_cine(cine, config, progress=lambda done, total: totals.append(total))
    assert set(totals) == {3} and model.info["iterations"] == 3
    assert model.info["frames"] == 3


def test_save_load_round_trip(tmp_path):
    frame = _echo()[:33, :41]
    config = EngineConfig(
        method="cyclegan", scale=2, ensemble=2, back_projection_iters=2, device="cpu"
    )
    model = TrainedModel(
        "cyclegan",
        2,
        _detail_generator(2).state_dict(),
        {"iterations": 5, "history": {"recon": [np.float32(0.1)]}, "src": tmp_path},
    )
    path = tmp_path / "w" / "model.pt"
    save_weights(model, path)
    back = load_weights(path, scale=2)
    assert back.method == "cyclegan" and back.scale == 2 and back.info["iterations"] == 5
    assert back.info["history"]["recon"] == [pytest.approx(0.1)] and back.info["src"] == str(
        tmp_path
    )
    np.testing.assert_array_equal(upscale(frame, back, config), upscale(frame, model, config))
    ibp = EngineConfig(method="ibp", scale=3)
    save_weights(fit([], ibp), tmp_path / "ibp.pt")
    assert load_weights(tmp_path / "ibp.pt").generator_state is None
    with pytest.raises(ValueError, match=r"model\.pt: weights are for x2, x4"):
        load_weights(path, scale=4)
    with pytest.raises(ValueError, match="configuration asks x3"):
        upscale(frame, back, config.model_copy(update={"scale": 3}))
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match=r"junk\.pt: not a dicom-sr weights file"):
        load_weights(junk)
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {}}, other)
    with pytest.raises(ValueError, match=r"other\.pt: not a dicom-sr weights file"):
        load_weights(other)


def test_super_resolve_bicubic_and_progress():
    frame = _echo()[:41, :53]
    calls = []
    out = super_resolve(
        frame, EngineConfig(method="ibp", scale=4), progress=lambda d, t: calls.append((d, t))
    )
    assert out.shape == (164, 212) and calls
    with pytest.raises(ValueError, match="2-D luminance"):
        upscale(
            np.zeros((4, 4, 3), np.float32),
            fit([], EngineConfig(method="ibp")),
            EngineConfig(method="ibp"),
        )
