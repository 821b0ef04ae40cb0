"""nerf_lab.metrics.ssim against an independent, straightforward SSIM (Wang et al. 2004).

The reference below is the textbook definition, written without pytorch_msssim: an 11x11
Gaussian window (sigma 1.5, normalised), applied with no padding ("valid", as Wang et
al.'s MATLAB ``filter2(..., 'valid')`` and ``tf.image.ssim``, which NeRF papers report),
local means / variances / covariance as window-weighted moments, ``C1 = (0.01 L)^2``,
``C2 = (0.03 L)^2`` with ``L`` the data range, and the SSIM map averaged over all valid
positions and colour channels.
"""

import numpy as np
import pytest
import torch

from nerf_lab.metrics import ssim


def _window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    c = np.arange(size, dtype=np.float64) - size // 2
    g = np.exp(-(c[:, None] ** 2 + c[None, :] ** 2) / (2 * sigma**2))
    return g / g.sum()


def _filter_valid(img: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Window-weighted sum over every fully-inside position of an (H, W) image."""
    k = w.shape[0]
    views = np.lib.stride_tricks.sliding_window_view(img, (k, k))  # (H-k+1, W-k+1, k, k)
    return np.einsum("ijkl,kl->ij", views, w)


def reference_ssim(x: np.ndarray, y: np.ndarray, data_range: float = 1.0, win: int = 11,
                   sigma: float = 1.5, k1: float = 0.01, k2: float = 0.03) -> float:  # fmt: skip
    """SSIM of two (H, W, C) images: mean over valid positions and channels."""
    w = _window(win, sigma)
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    maps = []
    for c in range(x.shape[-1]):
        a, b = x[..., c].astype(np.float64), y[..., c].astype(np.float64)
        mu_a, mu_b = _filter_valid(a, w), _filter_valid(b, w)
        var_a = _filter_valid(a * a, w) - mu_a**2
        var_b = _filter_valid(b * b, w) - mu_b**2
        cov = _filter_valid(a * b, w) - mu_a * mu_b
        maps.append(
            (2 * mu_a * mu_b + c1)
            * (2 * cov + c2)
            / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
        )
    return float(np.mean(maps))


def _pairs(seed: int):
    rng = np.random.default_rng(seed)
    # Independent noise, a noisy copy, and a smooth image with a shifted copy.
    a = rng.random((2, 32, 40, 3))
    yield a[0], a[1]
    yield a[0], np.clip(a[0] + 0.1 * rng.standard_normal(a[0].shape), 0, 1)
    yy, xx = np.mgrid[0:48, 0:48] / 48.0
    smooth = np.stack([np.sin(6 * xx) * 0.5 + 0.5, yy, xx * yy], -1)
    yield smooth, np.roll(smooth, 2, axis=1)


@pytest.mark.parametrize("seed", [0, 1])
def test_ssim_matches_an_independent_implementation(seed):
    for x, y in _pairs(seed):
        got = ssim(torch.from_numpy(x)[None].float(), torch.from_numpy(y)[None].float())
        assert float(got[0]) == pytest.approx(reference_ssim(x, y), abs=2e-5)


def test_ssim_parameters_are_the_standard_ones():
    # The reference with other parameters disagrees: the agreement above pins them down.
    x, y = next(_pairs(0))
    got = float(ssim(torch.from_numpy(x)[None].float(), torch.from_numpy(y)[None].float())[0])
    for other in (dict(sigma=1.0), dict(win=7), dict(k2=0.05), dict(data_range=2.0)):
        assert abs(got - reference_ssim(x, y, **other)) > 1e-3, other


def test_ssim_closed_forms_and_batching():
    # Identical images: 1. Constant images a, b: the luminance term only.
    img = torch.rand(1, 20, 20, 3)
    assert float(ssim(img, img.clone())[0]) == pytest.approx(1.0, abs=1e-6)
    a, b = 0.3, 0.7
    const = ssim(torch.full((1, 16, 16, 3), a), torch.full((1, 16, 16, 3), b))
    c1 = 0.01**2
    # (float32 moments E[x^2] - mu^2 leave ~1e-8 of variance: ~1e-5 in the contrast term.)
    assert float(const[0]) == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1), abs=2e-5)
    # Per image: a batch gives each image's own value.
    batch_x, batch_y = torch.rand(3, 24, 24, 3), torch.rand(3, 24, 24, 3)
    per = ssim(batch_x, batch_y)
    for i in range(3):
        torch.testing.assert_close(per[i], ssim(batch_x[i : i + 1], batch_y[i : i + 1])[0])


@pytest.mark.parametrize("side", [11, 12, 13])
def test_ssim_uses_the_full_window_whenever_it_fits(side):
    x, y = np.random.default_rng(side).random((2, side, side + 3, 3))
    got = float(ssim(torch.from_numpy(x)[None].float(), torch.from_numpy(y)[None].float())[0])
    assert got == pytest.approx(reference_ssim(x, y, win=11), abs=2e-5)
