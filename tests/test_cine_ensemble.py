"""``engine.cine_ensemble``: the self-ensemble of a cine's frames, apart from single frames."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom

from dicom_sr.cli.options import load_config
from dicom_sr.config import load_pipeline
from dicom_sr.dicom.discover import discover
from dicom_sr.pipeline import process_series
from dicom_sr.pipeline.frames import frame_config

SAMPLE = Path(__file__).resolve().parent.parent / "sample_data"
TINY = {"engine.method": "zssr", "engine.iterations": 2, "engine.back_projection_iters": 0}


def test_frame_config_changes_the_ensemble_of_cines_only():
    config = load_pipeline(None, {"engine.ensemble": 8, "engine.cine_ensemble": 2})
    assert frame_config(config, 1) is config
    assert frame_config(config, 6).engine.ensemble == 2
    assert frame_config(config, 6).hash() != config.hash()
    same = load_pipeline(None, {"engine.ensemble": 8, "engine.cine_ensemble": "same"})
    assert frame_config(same, 6) is same


def test_the_ensemble_option_applies_to_cines_too():
    assert load_config({"ensemble": "8"}).engine.cine_ensemble == "same"
    assert load_config({}).engine.cine_ensemble == load_pipeline(None).engine.cine_ensemble


def _pixels(config, out: Path) -> np.ndarray:
    [series] = discover([SAMPLE / "us_phantom_cine.dcm"]).series
    result = process_series(series, config, out)
    assert result.status == "done"
    return pydicom.dcmread(result.instances[0].output).pixel_array


def test_a_cine_is_upscaled_with_the_cine_ensemble(tmp_path: Path):
    """Ensemble 2 with cine_ensemble 1 writes the cine exactly as ensemble 1 does."""
    cine_one = load_pipeline(None, {**TINY, "engine.ensemble": 2, "engine.cine_ensemble": 1})
    one = load_pipeline(None, {**TINY, "engine.ensemble": 1, "engine.cine_ensemble": "same"})
    two = load_pipeline(None, {**TINY, "engine.ensemble": 2, "engine.cine_ensemble": "same"})
    a = _pixels(cine_one, tmp_path / "a")
    assert np.array_equal(a, _pixels(one, tmp_path / "b"))
    assert not np.array_equal(a, _pixels(two, tmp_path / "c"))
