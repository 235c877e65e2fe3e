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

CPU = torch.device("cpu")
TINY = dict(iterations=1, crop_size=32, batch_size=1, father_scales=2, device="cpu")
GUARD_KEYS = {"decision", "model_db", "ibp_db", "pairs", "margin_db", "reason"}


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
