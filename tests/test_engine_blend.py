"""The model's share of the output (``engine.model_weight``): the default blends evenly with ibp."""

from __future__ import annotations

import numpy as np
import pytest
from test_engine_api import _ge

from dicom_sr.config import EngineConfig
from dicom_sr.engine import fit, upscale
from dicom_sr.engine.infer import AUTO_MODEL_WEIGHT, model_weight

BASE = dict(method="zssr", iterations=2, crop_size=32, ensemble=1, device="cpu", guard=False)


def _ibp(frame: np.ndarray, scale: int) -> np.ndarray:
    cfg = EngineConfig(method="ibp", scale=scale, device="cpu")
    return upscale(frame, fit([], cfg), cfg)


def test_auto_is_the_same_blend_at_every_scale():
    for scale in (2, 3, 4):
        assert model_weight(EngineConfig(scale=scale)) == AUTO_MODEL_WEIGHT == 0.75
    assert model_weight(EngineConfig(scale=4, model_weight=0.8)) == 0.8
    assert model_weight(EngineConfig(scale=2, model_weight=1.0)) == 1.0


@pytest.mark.parametrize("weight", ["auto", 0.5])
def test_the_x4_output_is_the_weighted_mean_of_model_and_ibp(weight):
    frame = _ge()[:96, :96]  # a real GE tissue crop
    direct = dict(BASE, model_scale=4)  # an x4 model (auto learns x2 at x4)
    model = fit([frame], EngineConfig(scale=4, **direct))
    alone = upscale(frame, model, EngineConfig(scale=4, model_weight=1.0, **direct))
    mixed = upscale(frame, model, EngineConfig(scale=4, model_weight=weight, **direct))
    w = AUTO_MODEL_WEIGHT if weight == "auto" else weight
    expected = np.clip(w * alone + (1 - w) * _ibp(frame, 4), 0.0, 1.0)
    np.testing.assert_allclose(mixed, expected, atol=2e-6)
    assert float(np.abs(mixed - alone).max()) > 1e-3  # the blend really changed the output


def test_at_x2_auto_blends_and_weight_1_is_the_model_alone():
    frame = _ge()[:64, :64]
    model = fit([frame], EngineConfig(scale=2, **BASE))
    auto = upscale(frame, model, EngineConfig(scale=2, **BASE))
    alone = upscale(frame, model, EngineConfig(scale=2, model_weight=1.0, **BASE))
    w = AUTO_MODEL_WEIGHT
    expected = np.clip(w * alone + (1 - w) * _ibp(frame, 2), 0.0, 1.0)
    np.testing.assert_allclose(auto, expected, atol=2e-6)
    assert float(np.abs(auto - alone).max()) > 1e-3
