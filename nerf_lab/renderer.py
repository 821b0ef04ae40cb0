"""``ImplicitRenderer``: raysampler + volumetric function + raymarcher, with chunking.

PyTorch3D's ``ImplicitRenderer`` evaluates the volumetric function on every ray at once;
a full 256x256 image with 128 points per ray is 8.4M points, far too many for the
tutorial's MLP in one go. Here ``chunk_size`` bounds the number of rays evaluated (and
raymarched) at a time, so a model never has to write its own ``batched_forward``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from nerf_lab.cameras import FoVPerspectiveCameras
from nerf_lab.raysamplers import RayBundle

VolumetricFunction = Callable[..., tuple[torch.Tensor, torch.Tensor]]


def flatten_ray_bundle(ray_bundle: RayBundle) -> RayBundle:
    """Merge the leading dimensions of a bundle into one ray dimension.

    Returns:
        RayBundle with origins/directions ``(n_rays, 3)``, lengths
        ``(n_rays, n_pts_per_ray)`` and xys ``(n_rays, 2)``.
    """
    n_pts = ray_bundle.lengths.shape[-1]
    return RayBundle(
        origins=ray_bundle.origins.reshape(-1, 3),
        directions=ray_bundle.directions.reshape(-1, 3),
        lengths=ray_bundle.lengths.reshape(-1, n_pts),
        xys=None if ray_bundle.xys is None else ray_bundle.xys.reshape(-1, 2),
    )


def slice_ray_bundle(ray_bundle: RayBundle, start: int, stop: int) -> RayBundle:
    """Rays ``start:stop`` of a flat bundle (see :func:`flatten_ray_bundle`)."""
    return RayBundle(
        origins=ray_bundle.origins[start:stop],
        directions=ray_bundle.directions[start:stop],
        lengths=ray_bundle.lengths[start:stop],
        xys=None if ray_bundle.xys is None else ray_bundle.xys[start:stop],
    )


def chunked_volumetric_function(
    volumetric_function: VolumetricFunction,
    ray_bundle: RayBundle,
    chunk_size: int,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Evaluate ``volumetric_function`` on at most ``chunk_size`` rays at a time.

    Args:
        ray_bundle: rays with leading shape ``(*rays_shape)``.

    Returns:
        densities ``(*rays_shape, n_pts_per_ray, 1)`` and features
        ``(*rays_shape, n_pts_per_ray, C)``, the same as one unchunked call.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1; got {chunk_size!r}.")
    rays_shape = ray_bundle.lengths.shape[:-1]
    flat = flatten_ray_bundle(ray_bundle)
    n_rays = flat.lengths.shape[0]
    outputs = [
        volumetric_function(ray_bundle=slice_ray_bundle(flat, i, i + chunk_size), **kwargs)
        for i in range(0, n_rays, chunk_size)
    ]
    densities = torch.cat([o[0] for o in outputs], dim=0)
    features = torch.cat([o[1] for o in outputs], dim=0)
    return (
        densities.reshape(*rays_shape, *densities.shape[1:]),
        features.reshape(*rays_shape, *features.shape[1:]),
    )


def render_ray_bundle(
    ray_bundle: RayBundle,
    volumetric_function: VolumetricFunction,
    raymarcher: Callable[..., torch.Tensor],
    chunk_size: int | None = None,
    cameras: FoVPerspectiveCameras | None = None,
    **kwargs: Any,
) -> torch.Tensor:
    """Evaluate the field on the rays and raymarch them, ``chunk_size`` rays at a time.

    Memory is bounded by ``chunk_size * n_pts_per_ray`` points (when no graph is kept).

    Args:
        ray_bundle: rays with leading shape ``(*rays_shape)``.
        chunk_size: rays per evaluation; ``None`` evaluates all rays at once.
        cameras: passed to ``volumetric_function`` (not to the raymarcher, as PyTorch3D).

    Returns:
        ``(*rays_shape, C_out)``: the raymarcher's output for every ray.
    """
    if chunk_size is None:
        densities, features = volumetric_function(ray_bundle=ray_bundle, cameras=cameras, **kwargs)
        return raymarcher(
            rays_densities=densities, rays_features=features, ray_bundle=ray_bundle, **kwargs
        )
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer or None; got {chunk_size!r}.")
    rays_shape = ray_bundle.lengths.shape[:-1]
    flat = flatten_ray_bundle(ray_bundle)
    n_rays = flat.lengths.shape[0]
    chunks = []
    for i in range(0, n_rays, chunk_size):
        sub = slice_ray_bundle(flat, i, i + chunk_size)
        densities, features = volumetric_function(ray_bundle=sub, cameras=cameras, **kwargs)
        chunks.append(
            raymarcher(rays_densities=densities, rays_features=features, ray_bundle=sub, **kwargs)
        )
    out = torch.cat(chunks, dim=0)
    return out.reshape(*rays_shape, out.shape[-1])


class ImplicitRenderer(torch.nn.Module):
    """PyTorch3D's ``ImplicitRenderer`` with optional chunked evaluation.

    Args:
        raysampler: called as ``raysampler(cameras=..., **kwargs)`` → RayBundle.
        raymarcher: called as ``raymarcher(rays_densities=..., rays_features=..., ...)``.
        chunk_size: if set, evaluate the volumetric function on at most this many rays at
            a time (bounded memory for full images); ``None`` is PyTorch3D's behaviour.

    ``forward(cameras, volumetric_function, **kwargs)`` returns ``(images, ray_bundle)``
    where ``images`` has shape ``(*rays_shape, C_out)`` (e.g. ``(batch, image_height,
    image_width, C + 1)`` for a grid sampler) and ``volumetric_function(ray_bundle=...,
    cameras=..., **kwargs)`` returns densities ``(*rays_shape, n_pts_per_ray, 1)`` and
    features ``(*rays_shape, n_pts_per_ray, C)``.
    """

    def __init__(
        self,
        raysampler: Callable[..., RayBundle],
        raymarcher: Callable[..., torch.Tensor],
        chunk_size: int | None = None,
    ) -> None:
        super().__init__()
        if not callable(raysampler) or not callable(raymarcher):
            raise ValueError("raysampler and raymarcher must be callable.")
        if chunk_size is not None and (
            isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1
        ):
            raise ValueError(f"chunk_size must be a positive integer or None; got {chunk_size!r}.")
        self.raysampler = raysampler
        self.raymarcher = raymarcher
        self.chunk_size = chunk_size

    def forward(
        self,
        cameras: FoVPerspectiveCameras,
        volumetric_function: VolumetricFunction,
        chunk_size: int | None = None,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, RayBundle]:
        if not callable(volumetric_function):
            raise ValueError('"volumetric_function" has to be a "Callable" object.')
        ray_bundle = self.raysampler(
            cameras=cameras, volumetric_function=volumetric_function, **kwargs
        )
        images = render_ray_bundle(
            ray_bundle,
            volumetric_function,
            self.raymarcher,
            chunk_size=self.chunk_size if chunk_size is None else chunk_size,
            cameras=cameras,
            **kwargs,
        )
        return images, ray_bundle
