"""The guard: held-aside pairs that training never sees decide between the model and ibp."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_engine_api import _detail_generator, _echo, _ge

from dicom_sr.config import EngineConfig
from dicom_sr.engine import fit, guard_decision, upscale
from dicom_sr.engine.api import TrainedModel
from dicom_sr.engine.fathers import build_fathers, father_factors
from dicom_sr.engine.guard import hold_aside, judge
from dicom_sr.engine.infer import model_weight
from dicom_sr.engine.train import STOP_TOLERANCE

CPU = torch.device("cpu")
TINY = dict(iterations=1, crop_size=32, batch_size=1, father_scales=2, device="cpu")
GUARD_KEYS = {
    "decision",
    "model_db",
    "ibp_db",
    "alone_db",
    "best_weight",
    "weight",
    "pairs",
    "margin_db",
    "reason",
}


@pytest.mark.parametrize("s", [2, 4])
def test_pairs_come_from_the_strip_and_training_never_touches_it(s):
    frame = _ge()  # 240 x 468
    config = EngineConfig(scale=s, crop_size=64, father_scales=4, guard_pairs=8)
    held = hold_aside([frame], config)
    (strip,) = held.strips
    assert strip is not None
    w = strip.stop - strip.start  # the crop size, at most a third of the frame
    assert w == min(64, frame.shape[strip.axis] // 3) // s * s
    assert 4 <= len(held.hr) == len(held.lr) <= 8
    full = torch.from_numpy(frame)
    band = full.narrow(strip.axis, strip.start, w).numpy()
    full_size = 0
    for hr, lr in zip(held.hr, held.lr, strict=True):
        assert hr.shape[-2] == s * lr.shape[-2] and hr.shape[-1] == s * lr.shape[-1]
        # a full-size pair is a square of the band's own pixels
        if hr.shape[-1] == w:
            tile = hr[0, 0].numpy()
            hits = [
                np.array_equal(
                    tile, band[i : i + w, :w] if strip.axis == -1 else band[:w, i : i + w]
                )
                for i in range(0, max(band.shape) - w + 1, w)
            ]
            assert any(hits)
            full_size += 1
    assert full_size > 0
    fathers = build_fathers([frame], config, CPU, held.strips)
    assert len(fathers.images) == len(father_factors(4))
    crop = fathers.crop
    for pos, fac in zip(fathers.positions, father_factors(4), strict=True):
        lo, hi = strip.scaled(fac)
        idx = torch.arange(pos.shape[1] if strip.axis == -1 else pos.shape[0])
        touches = (idx + crop > lo) & (idx < hi)
        along = pos if strip.axis == -1 else pos.T
        assert float(along[:, touches].abs().sum()) == 0.0  # no window meets the band
        assert bool((along[:, ~touches] > 0).all())  # every other window stays possible


def test_too_small_a_frame_holds_nothing_aside():
    frame = _echo()[:24, :30]  # a band would need 6 LR px, a third of the frame at most
    model = fit([frame], EngineConfig(method="zssr", **TINY))
    g = model.info["guard"]
    assert set(g) >= {"decision", "model_db", "ibp_db", "pairs", "reason"}
    assert g["decision"] == "model" and g["pairs"] == 0 and "too small" in g["reason"]


def test_a_bad_model_is_replaced_by_ibp():
    frame = _ge()[:120, :234]
    config = EngineConfig(
        method="cyclegan", scale=2, ensemble=1, device="cpu", crop_size=32, guard_margin_db=0.0
    )
    bad = _detail_generator(2)
    with torch.no_grad():
        for b in bad.branches:  # loud random detail: far worse than ibp
            b.out.weight.mul_(50.0)
    held = hold_aside([frame], config)
    verdict = judge(bad, held, config, CPU)
    assert set(verdict) == GUARD_KEYS
    assert verdict["decision"] == "ibp" and verdict["pairs"] == len(held.hr) > 0
    assert verdict["model_db"] < verdict["ibp_db"] - 0.3  # measured -0.64 dB
    model = TrainedModel("cyclegan", 2, bad.state_dict(), {"guard": verdict})
    assert guard_decision(model) == "ibp"
    ibp = EngineConfig(method="ibp", scale=2)
    np.testing.assert_array_equal(upscale(frame, model, config), upscale(frame, fit([], ibp), ibp))
    # the same weights without the verdict give the generator's (worse) output
    raw = upscale(frame, TrainedModel("cyclegan", 2, bad.state_dict(), {}), config)
    assert np.abs(raw - upscale(frame, fit([], ibp), ibp)).mean() > 1e-3


def test_fit_records_the_verdict_and_the_margin_decides():
    frame = _echo()  # 240 x 324
    base = dict(method="zssr", ensemble=1, back_projection_iters=2, **TINY)
    kept = fit([frame], EngineConfig(**base, guard_margin_db=-100.0))
    dropped = fit([frame], EngineConfig(**base, guard_margin_db=100.0))
    for m in (kept, dropped):
        g = m.info["guard"]
        assert set(g) == GUARD_KEYS and g["pairs"] > 0
        assert 15.0 < g["ibp_db"] < 60.0 and 15.0 < g["model_db"] < 60.0
    assert kept.info["guard"]["decision"] == "model"
    assert (
        dropped.info["guard"]["decision"] == "ibp"
        and "output is ibp" in dropped.info["guard"]["reason"]
    )
    # same seed, same training: the strip is chosen the same way, so the scores agree
    assert kept.info["guard"]["model_db"] == dropped.info["guard"]["model_db"]
    off = fit([frame], EngineConfig(**base, guard=False))
    assert off.info["guard"]["pairs"] == 0 and off.info["guard"]["decision"] == "model"


def _pairs_outputs(G, held, config):
    """The model alone, ibp and the fathers of the held-aside pairs (border shaved)."""
    from dicom_sr.engine.infer import ibp, self_ensemble

    s = config.scale
    out = []
    for lr, hr in zip(held.lr, held.hr, strict=True):
        with torch.inference_mode():
            m = self_ensemble(G, lr, config, CPU)[..., s:-s, s:-s].double()
            b = ibp(lr, config)[..., s:-s, s:-s].double()
        out.append((m.flatten(), b.flatten(), hr[..., s:-s, s:-s].double().flatten()))
    return [torch.cat(parts) for parts in zip(*out, strict=True)]


def test_the_pairs_weight_is_the_best_blend_of_model_and_ibp_on_the_pairs():
    frame = _ge()[:120, :234]
    config = EngineConfig(method="zssr", scale=2, ensemble=1, device="cpu", crop_size=32)
    torch.manual_seed(0)
    G = _detail_generator(2)
    held = hold_aside([frame], config)
    pairs = judge(G, held, config, CPU)
    chosen = judge(G, held, config.model_copy(update={"model_weight": "pairs"}), CPU)
    m, b, y = _pairs_outputs(G, held, config)

    def db(w: float) -> float:
        return float(10 * torch.log10(1 / ((w * m + (1 - w) * b - y) ** 2).mean()))

    auto = model_weight(config)
    assert pairs["weight"] == auto and abs(pairs["model_db"] - db(auto)) < 1e-3
    assert abs(pairs["alone_db"] - db(1.0)) < 1e-3 and abs(pairs["ibp_db"] - db(0.0)) < 1e-3
    w = chosen["weight"]
    assert 0.0 <= w <= 1.0 and w == round(chosen["best_weight"], 2)
    assert abs(chosen["model_db"] - db(w)) < 1e-3
    # no weight on a fine grid beats the chosen one by more than rounding
    assert all(db(g / 20) <= chosen["model_db"] + 2e-3 for g in range(21))
    # upscale applies the chosen weight: the blend of the model alone and ibp
    model = TrainedModel("zssr", 2, G.state_dict(), {"guard": chosen})
    alone = upscale(frame, model, config.model_copy(update={"model_weight": 1.0}))
    anchor = upscale(frame, fit([], EngineConfig(method="ibp", scale=2)), config)
    shipped = upscale(frame, model, config.model_copy(update={"model_weight": "pairs"}))
    np.testing.assert_allclose(shipped, np.clip(w * alone + (1 - w) * anchor, 0, 1), atol=2e-6)


def test_early_stopping_ends_on_a_flat_held_aside_error_and_refit_sees_the_strip():
    frame = _echo()  # 240 x 324
    base = dict(method="zssr", ensemble=1, back_projection_iters=2, crop_size=32, device="cpu")
    base.update(batch_size=1, father_scales=2, lr_check_every=4, stop_patience=0)
    base.update(refit_iterations=0)
    capped = fit([frame], EngineConfig(**base, iterations=40))
    stopped = fit([frame], EngineConfig(**{**base, "stop_patience": 2}, iterations=400, lr=2e-6))
    assert capped.info["iterations"] == 40 and "held" not in capped.info["history"]
    # at a rate too small to learn, the held-aside error cannot keep improving: it stops
    # long before the cap, and the weights are those of its best evaluation
    held = stopped.info["history"]["held"]
    best = int(stopped.info["history"]["best_iteration"][0])
    assert stopped.info["iterations"] < 400 and len(held) >= 2
    assert stopped.info["iterations"] - best >= 2
    # nothing after the best evaluation improved on it by the tolerance
    assert min(held[best:]) > held[best - 1] * (1 - STOP_TOLERANCE)
    refit = fit([frame], EngineConfig(**{**base, "refit_iterations": 6}, iterations=8))
    alone = fit([frame], EngineConfig(**base, iterations=8))
    assert refit.info["refit"]["iterations"] == 6 and "refit" not in alone.info
    # the verdict is that of the model trained without the strip; the weights moved on
    assert refit.info["guard"] == alone.info["guard"]
    assert any(
        not torch.equal(refit.generator_state[k], alone.generator_state[k])
        for k in alone.generator_state
    )
