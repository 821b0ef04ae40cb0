"""Held-out evaluation: full renders of test views against their images."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from nerf_lab.cameras import FoVPerspectiveCameras
from nerf_lab.metrics import psnr, ssim
from nerf_lab.raymarchers import RenderOutput
from nerf_lab.raysamplers import RayBundle
from nerf_lab.renderer import Renderer


def evaluate_views(
    renderer: Renderer,
    raysampler: Callable[..., RayBundle],
    cameras: FoVPerspectiveCameras,
    images: torch.Tensor,
    chunk_size: int | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> tuple[dict[str, Any], RenderOutput]:
    """PSNR and SSIM of full renders of ``cameras`` against ``images``.

    Args:
        raysampler: full-image sampler of the images' size.
        cameras: ``n_views`` cameras; images: ``(n_views, H, W, 3)`` in [0, 1].

    Returns:
        The metrics (means and per-view lists, ``eval/`` keys) and the renders
        ``(n_views, H, W)``.
    """
    renders = renderer.render_views(cameras, raysampler, chunk_size, should_stop)
    rgb = renders.rgb[..., :3].clamp(0, 1)
    psnrs = psnr(rgb, images)
    ssims = ssim(rgb, images)
    metrics = {
        "eval/psnr": float(psnrs.mean()),
        "eval/ssim": float(ssims.mean()),
        "eval/psnr_per_view": [round(float(v), 4) for v in psnrs],
        "eval/ssim_per_view": [round(float(v), 5) for v in ssims],
        "eval/n_views": len(cameras),
    }
    return metrics, renders
