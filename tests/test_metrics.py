"""PSNR, SSIM and VIF-P of dicom_sr.evaluate.metrics against values computed by hand and
against sewar, a second implementation (the module wraps scikit-image, so scikit-image itself
would not be an independent reference)."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from conftest import us_file
from scipy import ndimage
from sewar.full_ref import psnr as sewar_psnr
from sewar.full_ref import ssim as sewar_ssim
from sewar.full_ref import vifp as sewar_vifp
from sewar.utils import Filter

from dicom_sr.evaluate.metrics import mean_abs_diff, psnr, shave, ssim, vif_p


@pytest.fixture(scope="module")
def frame() -> np.ndarray:
    """A 160 x 200 crop of a real grey ultrasound frame, float in [0, 1]."""
    ds = pydicom.dcmread(us_file("JPGLosslessP14SV1_1s_1f_8b.dcm"))
    px = ds.pixel_array.astype(np.float64)
    rows, cols = px.shape
    crop = px[rows // 2 - 80 : rows // 2 + 80, cols // 2 - 100 : cols // 2 + 100]
    assert crop.std() > 5, "the crop must hold tissue texture"
    return crop / 255.0


def _degraded(frame: np.ndarray) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "blur": ndimage.gaussian_filter(frame, 1.2),
        "noise": np.clip(frame + rng.normal(0, 0.03, frame.shape), 0, 1),
        "shift": np.roll(frame, (1, 2), axis=(0, 1)),
        "contrast": np.clip(0.5 + 0.7 * (frame - 0.5), 0, 1),
    }


@pytest.mark.parametrize("kind", ["blur", "noise", "shift", "contrast"])
def test_against_references(frame, kind):
    test = _degraded(frame)[kind]
    assert psnr(frame, test) == pytest.approx(sewar_psnr(frame, test, MAX=1.0), rel=1e-10)
    # Wang et al.'s SSIM: an 11-tap Gaussian window of sigma 1.5, K1 0.01, K2 0.03, the mean
    # over the windows that lie inside the image ("valid")
    gauss = {"fltr": Filter.GAUSSIAN, "ws": 11, "sigma": 1.5}
    ref_ssim, _ = sewar_ssim(frame, test, MAX=1.0, fltr_specs=gauss, mode="valid")
    assert ssim(frame, test) == pytest.approx(ref_ssim, abs=1e-9)
    # sewar's VIF-P works on the 0-255 scale its sigma_nsq = 2 was defined for
    ref_vif = sewar_vifp(frame * 255.0, test * 255.0)
    assert vif_p(frame, test) == pytest.approx(ref_vif, rel=1e-7)
    assert 0.0 < vif_p(frame, test) < 1.0 or kind == "contrast"


def test_psnr_by_hand():
    """Squared errors 0.01, 0.01, 0, 0: MSE 0.005, PSNR 10 log10(1 / 0.005) = 23.0103 dB."""
    ref = np.array([[0.0, 0.5], [1.0, 0.25]])
    test = ref + np.array([[0.1, -0.1], [0.0, 0.0]])
    assert psnr(ref, test) == pytest.approx(23.010299956639812, abs=1e-9)
    # on the 0-255 scale: errors of 25.5 grey levels, the same ratio to the peak
    assert psnr(ref * 255, test * 255, 255) == pytest.approx(23.010299956639812, abs=1e-9)


def test_ssim_by_hand():
    """Two flat images 0.5 and 0.6: no structure, so SSIM is the luminance term alone,
    (2 * 0.5 * 0.6 + C1) / (0.5**2 + 0.6**2 + C1) with C1 = (0.01 * 1)**2 = 0.98361."""
    flat = np.full((16, 16), 0.5)
    assert ssim(flat, flat + 0.1) == pytest.approx(0.6001 / 0.6101, abs=1e-12)
    # data_range sets C1: on a 0-255 scale the same images give the same value
    assert ssim(flat * 255, (flat + 0.1) * 255, 255) == pytest.approx(0.6001 / 0.6101, abs=1e-9)


def test_identical_images(frame):
    assert psnr(frame, frame) == float("inf")
    assert ssim(frame, frame) == pytest.approx(1.0, abs=1e-12)
    assert vif_p(frame, frame) == pytest.approx(1.0, abs=1e-9)


def test_known_intensity_shift(frame):
    """A constant offset d gives MSE d**2 exactly: PSNR = -20 log10(d)."""
    base = np.clip(frame, 0.1, 0.9)
    assert psnr(base, base + 0.01) == pytest.approx(40.0, abs=1e-9)
    assert psnr(base, base - 0.1) == pytest.approx(20.0, abs=1e-9)
    # SSIM's luminance term reacts; its structure term does not, so it stays close to 1
    assert 0.9 < ssim(base, base + 0.01) < 1.0


def test_known_spatial_shift_is_monotonic(frame):
    """Larger translations of the same texture score worse on every metric."""
    scores = []
    for d in (0, 1, 2, 4):
        moved = ndimage.shift(frame, (0, d), order=1, mode="nearest")
        scores.append((psnr(frame, moved), ssim(frame, moved), vif_p(frame, moved)))
    for better, worse in zip(scores, scores[1:], strict=False):
        assert all(b > w for b, w in zip(better, worse, strict=True))


def test_data_range_scales(frame):
    test = _degraded(frame)["noise"]
    assert psnr(frame * 4095, test * 4095, 4095) == pytest.approx(psnr(frame, test))
    assert ssim(frame * 4095, test * 4095, 4095) == pytest.approx(ssim(frame, test))
    assert vif_p(frame * 4095, test * 4095, 4095) == pytest.approx(vif_p(frame, test))


def test_helpers_and_errors(frame):
    assert shave(frame, 3).shape == (frame.shape[0] - 6, frame.shape[1] - 6)
    assert shave(frame, 0) is frame
    assert mean_abs_diff(frame, frame + 0.25) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="differ in shape"):
        psnr(frame, frame[:-1])
    with pytest.raises(ValueError, match="too small"):
        vif_p(frame[:20, :20], frame[:20, :20])
    value, smap = ssim(frame, _degraded(frame)["blur"], full=True)
    assert smap.shape == frame.shape and smap.min() < value < smap.max()
