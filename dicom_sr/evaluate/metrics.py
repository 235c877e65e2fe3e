"""Full-reference image quality metrics: PSNR and SSIM from scikit-image, VIF-P here.

All three take the reference (ground truth) first and the test image second, as 2-D float
arrays on a known ``data_range`` (1.0 for the engine's [0, 1] frames).

- :func:`psnr` is scikit-image's ``peak_signal_noise_ratio``: ``10 log10(data_range**2 / MSE)``
  (inf for identical images).
- :func:`ssim` is scikit-image's ``structural_similarity`` as Wang et al. (2004) define it:
  ``gaussian_weights=True, sigma=1.5, use_sample_covariance=False`` (an 11-tap Gaussian window
  truncated at 3.5 sigma, K1 = 0.01, K2 = 0.03, population covariances, mean over the pixels
  whose window lies inside the image).
- :func:`vif_p` (kept here: scikit-image has no VIF) is the pixel-domain Visual Information
  Fidelity of Sheikh & Bovik (2006), the multi-scale ``vifp_mscale`` of their reference code:
  4 scales with Gaussian windows of 17, 9, 5 and 3 taps (sigma = taps / 5), 'valid' filtering,
  dyadic decimation, visual noise variance ``sigma_nsq = 2`` on the 0-255 scale. Like IFC
  (which the paper reports) it is an information-theoretic ratio, but normalised: 1 for
  identical images, near 0 for unrelated ones, above 1 for contrast enhancement. Same numbers
  as ``sewar.full_ref.vifp`` on 8-bit-scaled input.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

__all__ = ["psnr", "ssim", "vif_p", "shave", "mean_abs_diff"]

_VIF_EPS = 1e-10


def _pair(reference: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ref = np.asarray(reference, dtype=np.float64)
    tst = np.asarray(test, dtype=np.float64)
    if ref.shape != tst.shape:
        raise ValueError(f"reference {ref.shape} and test {tst.shape} differ in shape")
    if ref.ndim != 2:
        raise ValueError(f"expected 2-D images, got shape {ref.shape}")
    return ref, tst


def shave(image: np.ndarray, border: int) -> np.ndarray:
    """Drop ``border`` pixels on every side (the usual SR evaluation margin)."""
    if border <= 0:
        return image
    return image[border:-border, border:-border]


def psnr(reference: np.ndarray, test: np.ndarray, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB; ``inf`` when the images are identical."""
    ref, tst = _pair(reference, test)
    if np.array_equal(ref, tst):
        return float("inf")  # skimage would divide by zero (with a warning) to get there
    return float(peak_signal_noise_ratio(ref, tst, data_range=data_range))


def ssim(
    reference: np.ndarray,
    test: np.ndarray,
    data_range: float = 1.0,
    *,
    sigma: float = 1.5,
    full: bool = False,
) -> float | tuple[float, np.ndarray]:
    """Structural similarity (Wang et al. 2004, Gaussian window); with ``full`` also the map."""
    ref, tst = _pair(reference, test)
    side = 2 * int(3.5 * sigma + 0.5) + 1  # the window skimage derives from sigma
    if min(ref.shape) < side:
        raise ValueError(f"image {ref.shape} smaller than the {side}-pixel SSIM window")
    out = structural_similarity(
        ref,
        tst,
        data_range=data_range,
        gaussian_weights=True,
        sigma=sigma,
        use_sample_covariance=False,
        full=full,
    )
    if full:
        value, smap = out
        return float(value), smap
    return float(out)


def _gauss_1d(taps: int) -> np.ndarray:
    r = taps // 2
    x = np.arange(-r, r + 1, dtype=np.float64)
    g = np.exp(-(x * x) / (2.0 * (taps / 5.0) ** 2))
    return g / g.sum()


def _filter_valid(a: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Separable 2-D filtering keeping only fully overlapped pixels (MATLAB 'valid')."""
    r = len(g) // 2
    out = ndimage.correlate1d(a, g, axis=0, mode="constant")
    out = ndimage.correlate1d(out, g, axis=1, mode="constant")
    return out[r : a.shape[0] - r, r : a.shape[1] - r]


def vif_p(
    reference: np.ndarray,
    test: np.ndarray,
    data_range: float = 1.0,
    *,
    sigma_nsq: float = 2.0,
) -> float:
    """Pixel-domain visual information fidelity (VIF-P), 4 scales; see the module docstring.

    The images are brought to the 0-255 scale first, because ``sigma_nsq`` is defined there.
    """
    ref, tst = _pair(reference, test)
    ref = ref * (255.0 / data_range)
    tst = tst * (255.0 / data_range)
    num = 0.0
    den = 0.0
    for level in range(4):
        taps = 2 ** (4 - level) + 1
        g = _gauss_1d(taps)
        if level > 0:
            ref = _filter_valid(ref, g)[::2, ::2]
            tst = _filter_valid(tst, g)[::2, ::2]
        if min(ref.shape) < taps:
            raise ValueError(f"image too small for VIF-P scale {level + 1} ({taps}-tap window)")
        mu1, mu2 = _filter_valid(ref, g), _filter_valid(tst, g)
        s1 = np.maximum(_filter_valid(ref * ref, g) - mu1 * mu1, 0.0)
        s2 = np.maximum(_filter_valid(tst * tst, g) - mu2 * mu2, 0.0)
        s12 = _filter_valid(ref * tst, g) - mu1 * mu2

        gain = s12 / (s1 + _VIF_EPS)
        sv = s2 - gain * s12
        flat = s1 < _VIF_EPS
        gain[flat] = 0.0
        sv[flat] = s2[flat]
        s1[flat] = 0.0
        dark = s2 < _VIF_EPS
        gain[dark] = 0.0
        sv[dark] = 0.0
        neg = gain < 0
        sv[neg] = s2[neg]
        gain[neg] = 0.0
        sv = np.maximum(sv, _VIF_EPS)

        num += float(np.sum(np.log10(1.0 + gain * gain * s1 / (sv + sigma_nsq))))
        den += float(np.sum(np.log10(1.0 + s1 / sigma_nsq)))
    if den == 0.0:
        # a flat reference carries no information: identical images are still a perfect match
        return 1.0 if np.array_equal(reference, test) else 0.0
    return num / den


def mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of two same-shape arrays (frame-to-frame change of a cine)."""
    a, b = _pair(a, b)
    return float(np.mean(np.abs(a - b)))
