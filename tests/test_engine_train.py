"""Networks, losses and self-supervised training of the engine, on real ultrasound tissue."""

from __future__ import annotations

import logging

import numpy as np
import pydicom
import pytest
import torch
from conftest import us_file
from pydicom.pixels import apply_color_lut

from dicom_sr.config import EngineConfig, LossWeights, load_pipeline
from dicom_sr.engine import train as train_mod
from dicom_sr.engine.fathers import build_fathers, crop_weights, sample_batch
from dicom_sr.engine.losses import TERMS, Networks, generator_losses
from dicom_sr.engine.nets import (
    Degrader,
    Generator,
    PatchDiscriminator,
    VGG19Features,
    count_parameters,
    find_vgg19_weights,
)
from dicom_sr.engine.resize import downscale, upscale_bicubic
from dicom_sr.engine.train import plateau, train

CPU = torch.device("cpu")
ABLATIONS = {
    "ablation-gan-alone": {"adversarial"},
    "ablation-cycle-alone": {"cycle_forward", "cycle_backward"},
    "ablation-gan-forward-cycle": {"adversarial", "cycle_forward"},
    "ablation-gan-backward-cycle": {"adversarial", "cycle_backward"},
    "ablation-gan-cycle": {"adversarial", "cycle_forward", "cycle_backward"},
}


def read_luma(name: str) -> np.ndarray:
    """Luminance in [0, 1] of a real ultrasound file (RGB or palette), frame 0."""
    ds = pydicom.dcmread(us_file(name))
    arr = ds.pixel_array
    if ds.PhotometricInterpretation == "PALETTE COLOR":
        arr = apply_color_lut(arr, ds)
    arr = arr.astype(np.float32) / (65535.0 if arr.dtype == np.uint16 else 255.0)
    if arr.ndim == 3:
        arr = arr[..., :3] @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return arr.astype(np.float32)


@pytest.fixture(scope="module")
def tissue() -> np.ndarray:
    """A 160 x 192 tissue area (lymph node) of US1_UNCR.dcm."""
    return np.ascontiguousarray(read_luma("US1_UNCR.dcm")[120:280, 96:288])


def small(**kw) -> EngineConfig:
    base = dict(crop_size=32, batch_size=2, father_scales=2, iterations=6)
    base.update(kw)
    return EngineConfig(**base)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_network_shapes_odd_sizes(scale):
    lr = torch.rand(2, 1, 13, 17)
    assert Generator(scale)(lr).shape == (2, 1, 13 * scale, 17 * scale)
    hr = torch.rand(1, 1, 37, 29)
    lr_fake = Degrader(scale)(hr)
    assert lr_fake.shape == (1, 1, -(-37 // scale), -(-29 // scale))
    d = PatchDiscriminator()
    assert d(torch.rand(3, 1, 64, 64)).shape == (3, 1, 16, 16)
    side = 64 // scale
    assert d(torch.rand(3, 1, side, side)).shape == (3, 1, -(-side // 4), -(-side // 4))


def test_generator_size_and_bicubic_start(tissue):
    g = Generator(2)
    n = count_parameters(g)
    assert 200_000 < n < 320_000  # the paper's 1.1 MB of float32
    lr = downscale(torch.from_numpy(tissue)[None, None], 2, EngineConfig())
    with torch.no_grad():
        out = g(lr)
    torch.testing.assert_close(out, upscale_bicubic(lr, 2), atol=1e-6, rtol=0)
    # the detail branches are not dead: one gradient step moves the output
    loss = (g(lr) - torch.from_numpy(tissue)[None, None]).abs().mean()
    loss.backward()
    assert all(b.out.weight.grad.abs().sum() > 0 for b in g.branches)


def test_fathers_and_sons(tissue):
    cfg = small(scale=3, augment="dihedral", noise_std=0.0)
    fathers = build_fathers([tissue], cfg, CPU)
    assert fathers.crop == 30 and len(fathers.images) == 3
    assert fathers.images[0].shape[-2:] == tissue.shape
    assert fathers.probs[0] > fathers.probs[-1]
    x, y = sample_batch(fathers, cfg, torch.Generator().manual_seed(0))
    assert y.shape == (2, 1, 30, 30) and x.shape == (2, 1, 10, 10)
    torch.testing.assert_close(x, downscale(y, 3, cfg))


def test_losses_fall_and_recon_error_drops(tissue):
    # without the adversarial term every remaining term is a distance that training must lower
    cfg = small(
        iterations=30, lr_min_iterations=1000, lr_check_every=8, losses=LossWeights(adversarial=0)
    )
    res = train([tissue], cfg, method="cyclegan", device=CPU)
    assert res.iterations == 30
    for term in ("pixel", "cycle_forward", "cycle_backward", "total"):
        h = np.array(res.history[term])
        assert h[-10:].mean() < h[:10].mean(), term
    assert res.history["recon"][-1] < res.history["recon"][0]
    assert "d_hr" not in res.history  # no adversarial term: no discriminator training


@pytest.mark.parametrize("name", sorted(ABLATIONS))
def test_ablation_computes_exactly_its_terms(name, tissue):
    config = load_pipeline(name).engine
    assert config.method == "cyclegan"
    expected = ABLATIONS[name]
    calls = {"g": 0, "f": 0, "d_hr": 0, "d_lr": 0}
    nets = Networks(
        g=Generator(2), f=Degrader(2), d_hr=PatchDiscriminator(), d_lr=PatchDiscriminator()
    )
    for key in ("g", "f"):
        getattr(nets, key).register_forward_hook(
            lambda *_, key=key: calls.__setitem__(key, calls[key] + 1)
        )
    for key in ("d_hr", "d_lr"):  # the losses call D.features (real and fake in one batch)
        d = getattr(nets, key)

        def counted(t, key=key, features=d.features):
            calls[key] += 1
            return features(t)

        d.features = counted
    y = torch.from_numpy(tissue[:32, :32].copy())[None, None]
    x = downscale(y, 2, config)
    step = generator_losses(x, y, nets, config, torch.zeros_like)
    assert set(step.terms) == expected
    assert calls["g"] == 1 + ("cycle_backward" in expected) - (
        "cycle_forward" not in expected and "adversarial" not in expected
    )
    assert calls["f"] == 1 + ("cycle_forward" in expected) - (
        "cycle_backward" not in expected and "adversarial" not in expected
    )
    assert calls["d_hr"] == calls["d_lr"] == ("adversarial" in expected)
    weights = config.losses
    assert {t for t in TERMS if getattr(weights, t) > 0} == expected


def test_zero_weight_skips_cycles(tissue):
    config = small(
        losses=LossWeights(perceptual=0, adversarial=0, cycle_forward=0, cycle_backward=0)
    )
    counts = []
    nets = Networks(g=Generator(2), f=Degrader(2))
    nets.g.register_forward_hook(lambda *_: counts.append("g"))
    nets.f.register_forward_hook(lambda *_: counts.append("f"))
    y = torch.from_numpy(tissue[:32, :32].copy())[None, None]
    step = generator_losses(downscale(y, 2, config), y, nets, config, torch.zeros_like)
    assert set(step.terms) == {"pixel"} and sorted(counts) == ["f", "g"]


def test_plateau_rule():
    steps = np.arange(0, 120, 15.0)
    rng = np.random.default_rng(0)
    falling = 0.05 - 1e-4 * steps + rng.normal(0, 1e-5, steps.size)
    flat = 0.03 + rng.normal(0, 1e-4, steps.size)
    assert not plateau(steps, falling)
    assert plateau(steps, flat)
    assert plateau(steps, np.full(steps.size, 0.03))  # an exact plateau decays too


def test_lr_policy_lowers_every_optimiser_rate(tissue):
    # a rate too small to change float32 weights: the recon error is an exact plateau
    cfg = small(
        iterations=20, lr=1e-30, lr_check_every=4, lr_min_iterations=4, lr_factor=10.0, lr_min=1e-32
    )
    res = train([tissue], cfg, method="cyclegan", device=CPU)
    for key in ("lr", "lr_d"):  # G+F and the discriminators' optimisers
        rates = res.history[key]
        assert rates[0] == pytest.approx(1e-30)
        assert rates[4] == pytest.approx(1e-31) and rates[8] == pytest.approx(1e-32)
    # decays at iterations 4, 8, 12; below lr_min after the third: stops there
    assert res.final_lr == pytest.approx(1e-33) and res.iterations == 12


def test_lr_policy_keeps_rate_while_improving(tissue):
    cfg = small(iterations=24, lr_check_every=8, lr_min_iterations=8, batch_size=4)
    res = train([tissue], cfg, method="zssr", device=CPU)
    assert res.history["recon"][-1] < res.history["recon"][0]
    assert res.final_lr == pytest.approx(cfg.lr)


def test_deterministic_under_seed(tissue):
    cfg = small(iterations=4)
    a = train([tissue], cfg, method="cyclegan", device=CPU)
    b = train([tissue], cfg, method="cyclegan", device=CPU)
    c = train([tissue], cfg.model_copy(update={"seed": 1}), method="cyclegan", device=CPU)
    assert a.history["total"] == b.history["total"]
    for k, v in a.generator_state.items():
        torch.testing.assert_close(v, b.generator_state[k], rtol=0, atol=0)
    assert a.history["total"] != c.history["total"]


def test_warm_start(tissue):
    cfg = small(iterations=24, batch_size=4, lr_check_every=4, lr_min_iterations=1000)
    first = train([tissue], cfg, method="zssr", device=CPU)
    same = train(
        [tissue], cfg, method="zssr", init_state=first.generator_state, iterations=0, device=CPU
    )
    for k, v in first.generator_state.items():
        torch.testing.assert_close(v, same.generator_state[k], rtol=0, atol=0)
    warm = train(
        [tissue],
        cfg,
        method="zssr",
        init_state=first.generator_state,
        iterations=4,
        lr=1e-4,
        device=CPU,
    )
    cold = train([tissue], cfg, method="zssr", iterations=4, device=CPU)
    assert warm.history["recon"][0] < cold.history["recon"][0]
    assert warm.history["lr"][0] == pytest.approx(1e-4)


def _torchvision_vgg19_state() -> dict[str, torch.Tensor]:
    """A random VGG19 state dict in torchvision's key layout (features.N, classifier.N)."""
    cfg = [64, 64, "M", 128, 128, "M"] + ([256] * 4 + ["M"]) + ([512] * 4 + ["M"]) * 2
    state, idx, c_in = {}, 0, 3
    for v in cfg:
        if v == "M":
            idx += 1
            continue
        state[f"features.{idx}.weight"] = torch.randn(v, c_in, 3, 3) * 0.05
        state[f"features.{idx}.bias"] = torch.randn(v) * 0.05
        c_in, idx = v, idx + 2
    state["classifier.0.weight"] = torch.randn(8, 8)
    return state


def test_vgg19_loads_torchvision_keys(tmp_path, monkeypatch):
    state = _torchvision_vgg19_state()
    checkpoints = tmp_path / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save(state, checkpoints / "vgg19-dcbb9e9d.pth")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    found = find_vgg19_weights(None)
    assert found == checkpoints / "vgg19-dcbb9e9d.pth"
    net = VGG19Features.from_file(found)
    torch.testing.assert_close(net.features[25].weight, state["features.25.weight"])
    assert len([m for m in net.features if isinstance(m, torch.nn.Conv2d)]) == 12
    assert net(torch.rand(1, 1, 32, 32)).shape == (1, 512, 4, 4)
    del state["features.25.bias"]  # conv4_4: the last layer used
    torch.save(state, tmp_path / "broken.pth")
    with pytest.raises(KeyError, match="features.25.bias"):
        VGG19Features.from_file(tmp_path / "broken.pth")


def test_perceptual_source_reported(tissue, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # empty: no VGG19
    train_mod._warn_no_vgg19.cache_clear()  # warned once per process: start afresh
    cfg = small(iterations=2)
    with caplog.at_level(logging.WARNING, logger="dicom_sr.engine.train"):
        res = train([tissue], cfg, method="cyclegan", device=CPU)
        train([tissue], cfg, method="cyclegan", device=CPU)
    # the default fallback leaves the term out: it is never computed
    assert res.perceptual == "off (no VGG19 weights)"
    assert "perceptual" not in res.history and "adversarial" in res.history
    assert sum("VGG19" in r.message for r in caplog.records) == 1
    d_hr = cfg.model_copy(update={"perceptual_fallback": "d_hr"})
    res = train([tissue], d_hr, method="cyclegan", device=CPU)
    assert res.perceptual == "d_hr" and len(res.history["perceptual"]) == 2
    torch.save(_torchvision_vgg19_state(), tmp_path / "vgg.pth")
    cfg = small(iterations=1, vgg19_weights=str(tmp_path / "vgg.pth"))
    res = train([tissue], cfg, method="cyclegan", device=CPU)
    assert res.perceptual == "vgg19" and len(res.history["perceptual"]) == 1
    off = cfg.model_copy(update={"losses": LossWeights(perceptual=0)})
    assert train([tissue], off, method="cyclegan", device=CPU).perceptual == "off"
    assert train([tissue], cfg, method="zssr", device=CPU).perceptual == "off"


def test_crop_weights_are_window_std():
    img = torch.rand(20, 30, generator=torch.Generator().manual_seed(1))
    w = crop_weights(img, 8, floor=0.0)
    ref = torch.stack(
        [
            torch.stack([img[i : i + 8, j : j + 8].std(unbiased=False) for j in range(23)])
            for i in range(13)
        ]
    )
    assert w.shape == (13, 23)
    torch.testing.assert_close(w, ref, atol=1e-6, rtol=0)


def test_content_sampling_avoids_the_black_around_a_sector():
    # a real SonoSite sector (its tissue region): about 60% of the box is black background
    ds = pydicom.dcmread(us_file("examples_ybr_color.dcm"))
    rgb = ds.pixel_array[0, 31:239, 84:319].astype(np.float32) / 255.0
    frame = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)

    def flat_fraction(sampling: str) -> float:
        cfg = small(crop_size=32, batch_size=200, crop_sampling=sampling)
        _, y = sample_batch(build_fathers([frame], cfg, CPU), cfg, torch.Generator().manual_seed(0))
        return float((y.flatten(1).std(1) < 0.01).float().mean())

    uniform, content = flat_fraction("uniform"), flat_fraction("content")
    assert uniform > 0.15  # the sector's corners do give flat crops
    assert content < uniform / 2
