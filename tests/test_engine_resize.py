"""The engine's resampling: MATLAB bicubic values, pixel-centre alignment, sizes, numpy helper."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
import torch
from PIL import Image
from scipy.ndimage import gaussian_filter
from scipy.ndimage import shift as ndshift
from scipy.optimize import minimize

from dicom_sr.config import EngineConfig
from dicom_sr.engine.resize import (
    cubic,
    downscale,
    resize_bicubic,
    taps,
    upscale_bicubic,
    upscale_np,
)
from tests.conftest import us_file

BICUBIC = EngineConfig(kernel="bicubic")
GAUSSIAN = EngineConfig(kernel="gaussian", psf_sigma_axial=1.0, psf_sigma_lateral=1.5)


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))[None, None]


def _real_frame() -> np.ndarray:
    """A tissue area (240 x 324) of a real Philips B-mode echo frame, in [0, 1]."""
    ds = pydicom.dcmread(us_file("JPGLosslessP14SV1_1s_1f_8b.dcm"))
    return ds.pixel_array[252:492, 300:624].astype(np.float32) / 255


def _ls_shift(ref: np.ndarray, moved: np.ndarray, margin: int) -> np.ndarray:
    """Sub-pixel (dy, dx) that best re-aligns ``moved`` onto ``ref`` (least squares, cubic
    spline shifts); unlike phase correlation it is not biased by aliased detail."""
    ref = ref.astype(np.float64)
    moved = moved[: ref.shape[0], : ref.shape[1]].astype(np.float64)
    inner = (slice(margin, -margin), slice(margin, -margin))

    def cost(d: np.ndarray) -> float:
        return float(np.mean((ndshift(moved, d, order=3, mode="nearest") - ref)[inner] ** 2))

    return minimize(cost, np.zeros(2), method="Powell").x


def _centroid(a: np.ndarray) -> tuple[float, float]:
    ys, xs = np.indices(a.shape)
    m = a.sum()
    return float((a * ys).sum() / m), float((a * xs).sum() / m)


def test_keys_kernel_values():
    # a = -0.5: interpolating (1 at 0, 0 at the other integers), known x2 phase weights
    assert cubic(np.array([0.0, 1.0, 2.0, -1.0]))[0] == 1.0
    assert np.allclose(cubic(np.array([1.0, 2.0, -1.0, 2.5])), 0.0)
    idx, w = taps(10, 20, 2.0)
    # output 4 samples input 1.75: taps 0..3 at distances 1.75, 0.75, 0.25, 1.25
    row = dict(zip(idx[4].tolist(), w[4].tolist(), strict=True))
    assert row[0] == pytest.approx(-0.0234375)
    assert row[1] == pytest.approx(0.2265625)
    assert row[2] == pytest.approx(0.8671875)
    assert row[3] == pytest.approx(-0.0703125)
    assert np.allclose(w.sum(axis=1), 1.0)


@pytest.mark.parametrize("s", [2, 3, 4])
def test_matches_pil_bicubic_in_interior(s):
    # Pillow's BICUBIC is Keys a=-0.5 with the same centre convention and antialiasing; it only
    # differs at the borders (it renormalises a clipped window instead of mirroring).
    rng = np.random.default_rng(s)
    a = rng.random((12 * s, 10 * s)).astype(np.float32)
    pil = Image.fromarray(a, mode="F")
    up = upscale_bicubic(_t(a), s)[0, 0].numpy()
    ref_up = np.asarray(pil.resize((a.shape[1] * s, a.shape[0] * s), Image.BICUBIC))
    m = 3 * s
    np.testing.assert_allclose(up[m:-m, m:-m], ref_up[m:-m, m:-m], atol=1e-5)
    dn = downscale(_t(a), s, BICUBIC)[0, 0].numpy()
    ref_dn = np.asarray(pil.resize((a.shape[1] // s, a.shape[0] // s), Image.BICUBIC))
    np.testing.assert_allclose(dn[3:-3, 3:-3], ref_dn[3:-3, 3:-3], atol=1e-5)
    assert not np.allclose(dn, a[::s, ::s], atol=1e-3)  # really filtered


@pytest.mark.parametrize("s", [2, 3, 4])
def test_linear_ramp_reproduced_in_interior(s):
    h, w = 9 * s + 1, 11 * s + 3
    ys, xs = np.indices((h, w), dtype=np.float64)
    ramp = (0.3 * ys - 0.2 * xs + 1.0).astype(np.float32)
    # downscaling samples the ramp at the LR centres (i + 0.5) * s - 0.5
    dn = downscale(_t(ramp), s, BICUBIC)[0, 0].numpy()
    ly, lx = np.indices(dn.shape, dtype=np.float64)
    expect = 0.3 * ((ly + 0.5) * s - 0.5) - 0.2 * ((lx + 0.5) * s - 0.5) + 1.0
    np.testing.assert_allclose(dn[3:-3, 3:-3], expect[3:-3, 3:-3], atol=1e-5)
    # upscaling samples the ramp at (i + 0.5) / s - 0.5
    small = ramp[: h // s + 2, : w // s + 2]
    up = upscale_bicubic(_t(small), s)[0, 0].numpy()
    uy, ux = np.indices(up.shape, dtype=np.float64)
    expect = 0.3 * ((uy + 0.5) / s - 0.5) - 0.2 * ((ux + 0.5) / s - 0.5) + 1.0
    np.testing.assert_allclose(
        up[2 * s : -2 * s, 2 * s : -2 * s], expect[2 * s : -2 * s, 2 * s : -2 * s], atol=1e-5
    )


@pytest.mark.parametrize("s", [2, 3, 4])
@pytest.mark.parametrize("config", [BICUBIC, GAUSSIAN], ids=["bicubic", "gaussian"])
def test_down_up_does_not_shift_a_blob(s, config):
    ys, xs = np.indices((97, 131), dtype=np.float64)
    cy, cx = 47.3, 60.8
    blob = np.exp(-((ys - cy) ** 2 / (2 * 5.0**2) + (xs - cx) ** 2 / (2 * 7.0**2)))
    dn = downscale(_t(blob), s, config)[0, 0].numpy().astype(np.float64)
    # the LR blob sits at the HR position mapped through the LR centres (i + 0.5) * s - 0.5
    ly, lx = _centroid(dn)
    assert abs((ly + 0.5) * s - 0.5 - cy) < 0.05
    assert abs((lx + 0.5) * s - 0.5 - cx) < 0.05
    up = upscale_bicubic(_t(dn), s)[0, 0].numpy()[:97, :131].astype(np.float64)
    uy, ux = _centroid(np.clip(up, 0, None))
    assert abs(uy - cy) < 0.05 and abs(ux - cx) < 0.05


@pytest.mark.parametrize("s", [2, 3, 4])
@pytest.mark.parametrize("config", [BICUBIC, GAUSSIAN], ids=["bicubic", "gaussian"])
def test_down_up_does_not_shift_a_real_frame(s, config):
    frame = _real_frame()
    up = upscale_bicubic(downscale(_t(frame), s, config), s)[0, 0].numpy()
    shift = _ls_shift(frame, up, margin=4 * s)
    assert np.all(np.abs(shift) < 0.05), shift
    # the classic mistake, decimating the top-left sample of each s x s block, shifts the
    # result by (s - 1) / 2 px, and the estimator sees it
    naive = upscale_bicubic(_t(gaussian_filter(frame, s / 2)[::s, ::s]), s)[0, 0].numpy()
    shift = _ls_shift(frame, naive, margin=4 * s)
    np.testing.assert_allclose(shift, [-(s - 1) / 2] * 2, atol=0.05)


@pytest.mark.parametrize("s", [2, 3, 4])
@pytest.mark.parametrize("config", [BICUBIC, GAUSSIAN], ids=["bicubic", "gaussian"])
def test_down_up_commutes_with_flips(s, config):
    # exact statement of "no shift": flipping before or after gives the same image, on a size
    # that is a multiple of s (a shift would change sign under the flip)
    frame = _real_frame()[: 12 * 19, : 12 * 26]

    def down_up(a: np.ndarray) -> np.ndarray:
        return upscale_bicubic(downscale(_t(a), s, config), s)[0, 0].numpy()

    ref = down_up(frame)
    np.testing.assert_allclose(down_up(frame[::-1, ::-1])[::-1, ::-1], ref, atol=1e-5)


@pytest.mark.parametrize("s", [2, 3, 4])
@pytest.mark.parametrize("config", [BICUBIC, GAUSSIAN], ids=["bicubic", "gaussian"])
@pytest.mark.parametrize("hw", [(37, 53), (40, 41), (1, 9)])
def test_shapes_odd_sizes(s, config, hw):
    x = torch.rand(2, 1, *hw)
    dn = downscale(x, s, config)
    assert dn.shape == (2, 1, -(-hw[0] // s), -(-hw[1] // s))
    up = upscale_bicubic(dn, s)
    assert up.shape[-2:] == (dn.shape[-2] * s, dn.shape[-1] * s)
    assert downscale(up, s, config).shape == dn.shape
    assert torch.isfinite(dn).all() and torch.isfinite(up).all()


def test_constant_preserved_and_gaussian_blurs_more():
    x = torch.full((1, 1, 33, 47), 0.37)
    for config in (BICUBIC, GAUSSIAN):
        torch.testing.assert_close(downscale(x, 3, config), torch.full((1, 1, 11, 16), 0.37))
    frame = _t(_real_frame())
    wide = EngineConfig(kernel="gaussian", psf_sigma_axial=3.0, psf_sigma_lateral=3.0)
    assert downscale(frame, 2, wide).std() < downscale(frame, 2, GAUSSIAN).std()


def test_gaussian_axes_use_their_own_sigma():
    # a vertical line (varies along columns) is blurred by the lateral sigma only
    x = torch.zeros(1, 1, 40, 40)
    x[..., 20] = 1.0
    lat = downscale(
        x, 2, EngineConfig(kernel="gaussian", psf_sigma_axial=1.0, psf_sigma_lateral=3.0)
    )[0, 0, 10]
    ax = downscale(
        x, 2, EngineConfig(kernel="gaussian", psf_sigma_axial=3.0, psf_sigma_lateral=1.0)
    )[0, 0, 10]
    assert lat.max() < ax.max()


def test_resize_bicubic_any_ratio():
    frame = _t(_real_frame())
    out = resize_bicubic(frame, (173, 301))
    assert out.shape == (1, 1, 173, 301)
    assert abs(out.mean().item() - frame.mean().item()) < 0.01
    # an integer ratio equals downscale/upscale_bicubic
    h, w = frame.shape[-2:]
    torch.testing.assert_close(
        resize_bicubic(frame, (h // 2, w // 2)), downscale(frame, 2, BICUBIC)
    )
    torch.testing.assert_close(resize_bicubic(frame, (h * 3, w * 3)), upscale_bicubic(frame, 3))
    torch.testing.assert_close(resize_bicubic(frame, (h, w)), frame)


def test_upscale_np_modes():
    frame = _real_frame()[:31, :45]
    near = upscale_np(frame, 3, "nearest")
    assert near.shape == (93, 135) and near.dtype == np.float32
    np.testing.assert_array_equal(near[::3, ::3], frame)
    np.testing.assert_array_equal(near[2::3, 1::3], frame)
    bic = upscale_np(frame, 2, "bicubic")
    assert bic.shape == (62, 90)
    assert bic.min() >= frame.min() and bic.max() <= frame.max()
    raw = upscale_bicubic(_t(frame), 2)[0, 0].numpy()
    inside = (raw > frame.min()) & (raw < frame.max())
    np.testing.assert_allclose(bic[inside], raw[inside])
    rgb = np.stack([frame, frame * 0.5, 1 - frame], axis=-1)
    up = upscale_np(rgb, 2, "bicubic")
    assert up.shape == (62, 90, 3)
    np.testing.assert_allclose(up[..., 0], bic, atol=1e-6)
    assert up[..., 1].max() <= rgb[..., 1].max()


def test_cached_weights_work_with_autograd_after_inference_mode():
    # the weight cache is shared by inference (inference_mode) and training (autograd)
    x = _t(_real_frame()[:23, :31])
    with torch.inference_mode():
        ref = upscale_bicubic(x, 2)
        downscale(ref, 2, GAUSSIAN)
    y = x.clone().requires_grad_(True)
    out = downscale(upscale_bicubic(y, 2), 2, GAUSSIAN)
    out.sum().backward()
    assert y.grad is not None and torch.isfinite(y.grad).all() and y.grad.abs().sum() > 0
    torch.testing.assert_close(upscale_bicubic(y, 2).detach(), ref)


# --- the short separable filters used off the CPU ---------------------------------------------

_FACTORS = [
    (2.0, "bicubic", 0.0),
    (3.0, "bicubic", 0.0),
    (4.0, "bicubic", 0.0),
    (1 / 2, "bicubic", 0.0),
    (1 / 3, "bicubic", 0.0),
    (1 / 4, "bicubic", 0.0),
    (1 / 2, "gaussian", 1.2),
    (1 / 4, "gaussian", 2.0),
]


@pytest.mark.parametrize("n", [1, 2, 3, 7, 33, 130])
@pytest.mark.parametrize(("scale", "kernel", "sigma"), _FACTORS)
@pytest.mark.parametrize("dim", [-1, -2])
def test_separable_filters_equal_the_dense_matrix(n, scale, kernel, sigma, dim):
    """Off the CPU, integer factors resample with 4-to-10-tap filters: the dense matrix's
    result to float32 rounding (stated bound 1e-6 on [0, 1] data), down to 1-pixel axes
    (mirrored more than once), and the same gradients."""
    from dicom_sr.engine import resize

    out = n * round(scale) if scale > 1 else -(-n // round(1 / scale))
    shape = (2, 1, 5, n) if dim == -1 else (2, 1, n, 6)
    x = torch.rand(shape, generator=torch.Generator().manual_seed(n), requires_grad=True)
    args = (dim, out, scale, kernel, sigma)
    dense = resize._resample_axis(x, *args, separable=False)
    short = resize._resample_axis(x, *args, separable=True)
    assert resize._polyphase(n, out, float(scale), kernel, float(sigma)) is not None
    assert short.shape == dense.shape
    assert (short - dense).abs().max() < 1e-6
    w = torch.rand(dense.shape, generator=torch.Generator().manual_seed(1))
    (g_dense,) = torch.autograd.grad((dense * w).sum(), x)
    (g_short,) = torch.autograd.grad((short * w).sum(), x)
    assert (g_short - g_dense).abs().max() < 1e-5


def test_resampling_by_a_non_integer_factor_keeps_the_dense_matrix():
    from dicom_sr.engine import resize

    assert resize._polyphase(100, 75, 0.75, "bicubic", 0.0) is None
    x = torch.rand(1, 1, 30, 100)
    a = resize._resample_axis(x, -1, 75, 0.75, "bicubic", separable=True)
    b = resize._resample_axis(x, -1, 75, 0.75, "bicubic", separable=False)
    assert torch.equal(a, b)
