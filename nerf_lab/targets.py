"""Training targets: the image values at the pixels the rays go through."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from nerf_lab.raysamplers import ndc_extent

LOOKUPS = ("pixel", "tutorial")


def sample_images_at_rays(
    images: torch.Tensor, xys: torch.Tensor, lookup: str = "pixel"
) -> torch.Tensor:
    """Target values at the rays' NDC positions.

    ``"pixel"`` returns the pixel each ray went through (PyTorch3D's NDC: +X left, +Y up,
    pixel centres, non-square images supported). ``"tutorial"`` reproduces the
    tutorial's ``sample_images_at_mc_locs``: bilinear ``grid_sample`` at ``-xys`` with
    ``align_corners=True``, which is off by half a pixel.

    Args:
        images: ``(batch, H, W, C)``.
        xys: ``(batch, n_rays, 2)`` (or ``(batch, *spatial, 2)``).

    Returns:
        ``(batch, n_rays, C)`` (``(batch, *spatial, C)``).
    """
    batch, height, width, channels = images.shape
    spatial = xys.shape[1:-1]
    xy = xys.reshape(batch, -1, 2)
    if lookup == "tutorial":
        sampled = F.grid_sample(
            images.permute(0, 3, 1, 2), -xy.view(batch, -1, 1, 2), align_corners=True
        )
        return sampled.permute(0, 2, 3, 1).reshape(batch, *spatial, channels)
    if lookup != "pixel":
        raise ValueError(f"lookup must be one of {list(LOOKUPS)}; got {lookup!r}.")
    range_x, range_y = ndc_extent(height, width)
    col = ((range_x - xy[..., 0]) * (width / (2 * range_x))).floor().long().clamp(0, width - 1)
    row = ((range_y - xy[..., 1]) * (height / (2 * range_y))).floor().long().clamp(0, height - 1)
    flat = images.reshape(batch, height * width, channels)
    idx = (row * width + col)[..., None].expand(-1, -1, channels)
    return torch.gather(flat, 1, idx).reshape(batch, *spatial, channels)


def ray_targets(
    images: torch.Tensor,
    silhouettes: torch.Tensor | None,
    xys: torch.Tensor,
    lookup: str = "pixel",
) -> dict[str, torch.Tensor | None]:
    """The loss targets of a batch of rays.

    Args:
        images: ``(batch, H, W, 3)``; silhouettes: ``(batch, H, W)`` or ``None``.
        xys: ``(batch, n_rays, 2)`` NDC positions of the rays.

    Returns:
        ``{"rgb": (batch * n_rays, 3), "silhouette": (batch * n_rays, 1) or None}``.
    """
    rgb = sample_images_at_rays(images, xys, lookup).reshape(-1, 3)
    sil = None
    if silhouettes is not None:
        sil = sample_images_at_rays(silhouettes[..., None], xys, lookup).reshape(-1, 1)
    return {"rgb": rgb, "silhouette": sil}
