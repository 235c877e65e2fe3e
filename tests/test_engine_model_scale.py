"""x4 through an x2 model (``engine.model_scale``): the model learns x2, ibp does the last x2."""

from __future__ import annotations

import dataclasses

import numpy as np
import pydantic
import pytest
import torch
from test_engine_api import _ge

from dicom_sr.config import EngineConfig
from dicom_sr.engine import fit, upscale
from dicom_sr.engine.api import learned_scale
from dicom_sr.engine.infer import finish_scale, model_scale
from dicom_sr.engine.resize import downscale

BASE = dict(method="zssr", iterations=2, crop_size=32, ensemble=1, device="cpu", guard=False)


def test_auto_learns_x2_at_x4_and_the_scale_itself_otherwise():
    assert model_scale(EngineConfig(scale=4)) == 2
    assert model_scale(EngineConfig(scale=2)) == 2
    assert model_scale(EngineConfig(scale=3)) == 3
    assert model_scale(EngineConfig(scale=4, model_scale=4)) == 4


@pytest.mark.parametrize(("scale", "ms"), [(3, 2), (2, 4), (4, 3)])
def test_a_model_scale_that_does_not_divide_the_scale_is_refused(scale, ms):
    with pytest.raises(pydantic.ValidationError, match=f"model_scale {ms} does not divide"):
        EngineConfig(scale=scale, model_scale=ms)


def test_x4_output_is_the_x2_blend_finished_by_bicubic_and_back_projection():
    frame = _ge()[:96, :96]  # a real GE tissue crop
    cfg4 = EngineConfig(scale=4, **BASE)
    model = fit([frame], cfg4)
    assert (model.scale, learned_scale(model)) == (4, 2)
    x2_state = fit([frame], EngineConfig(scale=2, **BASE)).generator_state
    assert {k: v.shape for k, v in model.generator_state.items()} == {
        k: v.shape for k, v in x2_state.items()
    }  # the generator is an x2 one
    out = upscale(frame, model, cfg4)
    assert out.shape == (384, 384)
    # by hand: the same generator as an x2 model, its x2 output (blended), then the last x2
    as_x2 = dataclasses.replace(model, scale=2)
    mid = upscale(frame, as_x2, EngineConfig(scale=2, **BASE))
    lr = torch.from_numpy(frame)[None, None]
    expected = finish_scale(torch.from_numpy(mid)[None, None], lr, cfg4)[0, 0].numpy()
    np.testing.assert_allclose(out, expected, atol=2e-6)
    # and it agrees with the input under the x4 degradation (back projection at x4)
    again = downscale(torch.from_numpy(out)[None, None], 4, cfg4)[0, 0].numpy()
    assert float(np.abs(again - frame).mean()) < 2e-3


def test_model_scale_4_keeps_the_direct_x4_model():
    frame = _ge()[:96, :96]
    model = fit([frame], EngineConfig(scale=4, model_scale=4, **BASE))
    assert learned_scale(model) == 4
    assert upscale(frame, model, EngineConfig(scale=4, model_scale=4, **BASE)).shape == (384, 384)


def test_warm_start_across_model_scales_is_refused():
    frame = _ge()[:64, :64]
    direct = fit([frame], EngineConfig(scale=4, model_scale=4, **BASE))
    with pytest.raises(ValueError, match="learning x2 from a x4 model learning x4"):
        fit([frame], EngineConfig(scale=4, **BASE), init=direct)
