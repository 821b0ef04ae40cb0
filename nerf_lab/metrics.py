"""Image quality metrics."""

from __future__ import annotations

import torch
from pytorch_msssim import ssim as _ssim


def _check_pair(pred: torch.Tensor, target: torch.Tensor) -> None:
    if pred.shape != target.shape:
        raise ValueError(
            f"pred and target must have the same shape; got {tuple(pred.shape)} and "
            f"{tuple(target.shape)}."
        )


def mse_to_psnr(mse: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """PSNR in dB from a mean squared error (any shape)."""
    return 10.0 * torch.log10(data_range**2 / mse.clamp_min(1e-12))


def psnr(pred: torch.Tensor, target: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Per-image PSNR in dB.

    Args:
        pred, target: ``(n_images, H, W, C)`` in ``[0, data_range]``.

    Returns:
        ``(n_images,)``.
    """
    _check_pair(pred, target)
    mse = ((pred.float() - target.float()) ** 2).flatten(1).mean(1)
    return mse_to_psnr(mse, data_range)


def ssim(pred: torch.Tensor, target: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Per-image SSIM (Gaussian window 11, sigma 1.5; Wang et al. 2004), via pytorch_msssim.

    As Wang et al.'s reference and ``tf.image.ssim``: no padding (the SSIM map covers the
    positions where the window fits), ``K = (0.01, 0.03)``, the map averaged over positions
    and channels. Images with a side under 11 pixels use the largest odd window that fits
    (sigma still 1.5); ``tests/test_metrics_ssim.py`` checks all of this against an
    independent implementation.

    Args:
        pred, target: ``(n_images, H, W, C)`` in ``[0, data_range]``.

    Returns:
        ``(n_images,)``.
    """
    _check_pair(pred, target)
    x = pred.float().permute(0, 3, 1, 2)
    y = target.float().permute(0, 3, 1, 2)
    # The largest odd window that fits, at most 11 (pytorch_msssim skips the smoothing
    # along any side shorter than the window instead of failing).
    side = min(x.shape[-2:])
    win_size = min(11, side if side % 2 else side - 1)
    if win_size < 3:
        raise ValueError(f"SSIM needs images of at least 3x3 pixels; got {tuple(pred.shape)}.")
    return _ssim(x, y, data_range=data_range, size_average=False, win_size=win_size)
