"""Ray samplers with PyTorch3D's names, signatures, shapes and conventions.

A raysampler is called as ``sampler(cameras)`` and returns a :class:`RayBundle` whose
leading dimensions are ``(batch, *spatial)``: ``(batch, image_height, image_width)`` for
:class:`NDCMultinomialRaysampler` and ``(batch, n_rays_per_image)`` for
:class:`MonteCarloRaysampler`.

Ray directions have view-space z equal to 1 (they are not normalised) and ``lengths``
are therefore view-space z-depths: ``origins + lengths * directions`` lies at depth
``lengths`` in front of the camera.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch

from nerf_lab.cameras import CamerasBase
from nerf_lab.validate import check_int


class RayBundle(NamedTuple):
    """Rays and the depths of their sample points (PyTorch3D's ``RayBundle``).

    Attributes:
        origins: ``(..., 3)`` ray origins in world coordinates.
        directions: ``(..., 3)`` ray directions in world coordinates.
        lengths: ``(..., n_pts_per_ray)`` depths of the sample points along each ray.
        xys: ``(..., 2)`` NDC coordinates of the pixel each ray goes through.
    """

    origins: torch.Tensor
    directions: torch.Tensor
    lengths: torch.Tensor
    xys: torch.Tensor


def ray_bundle_variables_to_ray_points(
    rays_origins: torch.Tensor, rays_directions: torch.Tensor, rays_lengths: torch.Tensor
) -> torch.Tensor:
    """Points ``origins + lengths * directions``.

    Args:
        rays_origins: ``(..., 3)``.
        rays_directions: ``(..., 3)``.
        rays_lengths: ``(..., n_pts_per_ray)``.

    Returns:
        ``(..., n_pts_per_ray, 3)`` world points.
    """
    return rays_origins[..., None, :] + rays_lengths[..., :, None] * rays_directions[..., None, :]


def ray_bundle_to_ray_points(ray_bundle: RayBundle) -> torch.Tensor:
    """World points of every sample of a :class:`RayBundle`.

    Returns:
        ``(..., n_pts_per_ray, 3)``.
    """
    return ray_bundle_variables_to_ray_points(
        ray_bundle.origins, ray_bundle.directions, ray_bundle.lengths
    )


def _check_depths(min_depth: float, max_depth: float) -> None:
    # 0 is allowed: NDC rays (nerf_lab.ndc) sample the NDC parameter t in [0, 1].
    if not (float(min_depth) >= 0.0):
        raise ValueError(f"min_depth must be >= 0; got {min_depth!r}.")
    if not (float(min_depth) < float(max_depth)):
        raise ValueError(
            f"min_depth must be smaller than max_depth; got min_depth={min_depth!r}, "
            f"max_depth={max_depth!r}."
        )


def jiggle_within_stratas(bin_centers: torch.Tensor) -> torch.Tensor:
    """Draw one uniform sample inside each depth stratum (PyTorch3D's stratified sampling).

    The strata are bounded by the midpoints between consecutive ``bin_centers``; the first
    and last strata end at the first and last centre.

    Args:
        bin_centers: ``(..., n_pts_per_ray)`` sorted depths.

    Returns:
        ``(..., n_pts_per_ray)`` jittered, still sorted depths.
    """
    mids = 0.5 * (bin_centers[..., 1:] + bin_centers[..., :-1])
    upper = torch.cat((mids, bin_centers[..., -1:]), dim=-1)
    lower = torch.cat((bin_centers[..., :1], mids), dim=-1)
    return lower + (upper - lower) * torch.rand_like(lower)


def safe_multinomial(weights: torch.Tensor, num_samples: int) -> torch.Tensor:
    """``torch.multinomial`` without replacement, falling back to sampling with replacement
    for rows with fewer than ``num_samples`` non-zero weights (PyTorch3D's behaviour).

    Args:
        weights: ``(batch, n_pixels)`` non-negative weights.

    Returns:
        ``(batch, num_samples)`` indices.
    """
    try:
        res = torch.multinomial(weights, num_samples, replacement=False)
    except RuntimeError:
        no_repl = (weights > 0.0).sum(dim=-1) >= num_samples
        res = weights.new_zeros(weights.shape[0], num_samples, dtype=torch.int64)
        if no_repl.any():
            res[no_repl] = torch.multinomial(weights[no_repl], num_samples, replacement=False)
        res[~no_repl] = torch.multinomial(weights[~no_repl], num_samples, replacement=True)
        return res
    repl = (weights > 0.0).sum(dim=-1) < num_samples
    if repl.any():
        res[repl] = torch.multinomial(weights[repl], num_samples, replacement=True)
    return res


def xy_to_ray_bundle(
    cameras: CamerasBase,
    xy_grid: torch.Tensor,
    min_depth: float,
    max_depth: float,
    n_pts_per_ray: int,
    unit_directions: bool = False,
    stratified_sampling: bool = False,
) -> RayBundle:
    """Rays through given NDC points of each camera.

    Args:
        cameras: ``batch`` cameras.
        xy_grid: ``(batch, *spatial, 2)`` NDC points (+X left, +Y up).
        min_depth, max_depth: depth range of the samples.
        n_pts_per_ray: samples per ray, spaced evenly in depth.
        unit_directions: normalise the directions (lengths are then no longer z-depths).
        stratified_sampling: jitter each sample within its depth stratum.

    Returns:
        RayBundle with origins/directions ``(batch, *spatial, 3)``, lengths
        ``(batch, *spatial, n_pts_per_ray)`` and xys ``(batch, *spatial, 2)``.
    """
    batch_size = xy_grid.shape[0]
    if batch_size != len(cameras):
        raise ValueError(
            f"xy_grid batch size {batch_size} does not match the number of cameras {len(cameras)}."
        )
    spatial_size = xy_grid.shape[1:-1]
    xy = xy_grid.reshape(batch_size, -1, 2)
    n_rays = xy.shape[1]
    depths = torch.linspace(
        min_depth, max_depth, n_pts_per_ray, dtype=xy_grid.dtype, device=xy_grid.device
    )
    lengths = depths[None, None].expand(batch_size, n_rays, n_pts_per_ray)
    if stratified_sampling:
        lengths = jiggle_within_stratas(lengths)
    directions_view = cameras.get_ray_directions_view(xy)
    directions = directions_view @ cameras.R.transpose(1, 2).to(xy.dtype)
    # A real (not expanded) tensor, so that ``origins.view(-1, 3)`` works as in PyTorch3D.
    origins = cameras.get_camera_center().to(xy.dtype)[:, None, :].repeat(1, n_rays, 1)
    if unit_directions:
        directions = torch.nn.functional.normalize(directions, dim=-1)
    return RayBundle(
        origins=origins.reshape(batch_size, *spatial_size, 3),
        directions=directions.reshape(batch_size, *spatial_size, 3),
        lengths=lengths.reshape(batch_size, *spatial_size, n_pts_per_ray),
        xys=xy_grid,
    )


def ndc_extent(image_height: int, image_width: int) -> tuple[float, float]:
    """Half-extents ``(range_x, range_y)`` of an image in PyTorch3D's NDC: the shorter side
    spans [-1, 1], the longer side ``[-long/short, long/short]``."""
    s = min(image_height, image_width)
    return image_width / s, image_height / s


def ndc_pixel_grid(
    image_height: int, image_width: int, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """NDC coordinates of the pixel centres of an image (PyTorch3D's convention).

    Pixel ``(row 0, col 0)`` is the top-left pixel, at the largest x (+X is left) and the
    largest y (+Y is up). The shorter side spans [-1, 1]; the longer side spans
    ``[-long/short, long/short]``.

    Returns:
        ``(image_height, image_width, 2)`` with ``[..., 0] = x`` and ``[..., 1] = y``.
    """
    range_x, range_y = ndc_extent(image_height, image_width)
    half_pix_width = range_x / image_width
    half_pix_height = range_y / image_height
    ys = torch.linspace(
        range_y - half_pix_height, -range_y + half_pix_height, image_height, device=device
    )
    xs = torch.linspace(
        range_x - half_pix_width, -range_x + half_pix_width, image_width, device=device
    )
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack((grid_x, grid_y), dim=-1)


class NDCMultinomialRaysampler(torch.nn.Module):
    """One ray through every pixel centre (PyTorch3D's ``NDCMultinomialRaysampler``).

    Args:
        image_width, image_height: image size in pixels.
        n_pts_per_ray: samples per ray.
        min_depth, max_depth: depth range of the samples.
        n_rays_per_image: if given, sample this many pixels per image (without
            replacement; weighted by ``mask`` when one is passed) instead of the full grid.
        unit_directions: normalise ray directions.
        stratified_sampling: jitter each sample within its depth stratum.

    ``forward(cameras)`` returns a RayBundle with origins/directions
    ``(batch, image_height, image_width, 3)``, lengths ``(batch, image_height,
    image_width, n_pts_per_ray)`` and xys ``(batch, image_height, image_width, 2)``; with
    ``n_rays_per_image`` the spatial shape is ``(n_rays_per_image, 1)`` as in PyTorch3D.
    """

    def __init__(
        self,
        *,
        image_width: int,
        image_height: int,
        n_pts_per_ray: int,
        min_depth: float,
        max_depth: float,
        n_rays_per_image: int | None = None,
        unit_directions: bool = False,
        stratified_sampling: bool = False,
    ) -> None:
        super().__init__()
        self._image_width = check_int("image_width", image_width)
        self._image_height = check_int("image_height", image_height)
        self._n_pts_per_ray = check_int("n_pts_per_ray", n_pts_per_ray)
        if n_rays_per_image is not None:
            check_int("n_rays_per_image", n_rays_per_image)
        _check_depths(min_depth, max_depth)
        self._min_depth = float(min_depth)
        self._max_depth = float(max_depth)
        self._n_rays_per_image = n_rays_per_image
        self._unit_directions = unit_directions
        self._stratified_sampling = stratified_sampling
        self.register_buffer(
            "_xy_grid", ndc_pixel_grid(image_height, image_width), persistent=False
        )

    def forward(
        self,
        cameras: CamerasBase,
        *,
        mask: torch.Tensor | None = None,
        min_depth: float | None = None,
        max_depth: float | None = None,
        n_rays_per_image: int | None = None,
        n_pts_per_ray: int | None = None,
        stratified_sampling: bool | None = None,
        **kwargs: Any,
    ) -> RayBundle:
        """Sample rays of ``cameras``; keyword arguments override the constructor's.

        Args:
            cameras: ``batch`` cameras.
            mask: optional ``(batch, image_height, image_width)`` sampling weights.
        """
        batch_size = len(cameras)
        device = cameras.device
        xy_grid = self._xy_grid.to(device).expand(batch_size, -1, -1, -1)
        num_rays = n_rays_per_image if n_rays_per_image is not None else self._n_rays_per_image
        if mask is not None and num_rays is None:
            num_rays = int(mask.reshape(batch_size, -1).sum(-1).min().item())
        if num_rays is not None:
            if mask is None:
                mask = xy_grid.new_ones(xy_grid.shape[:-1])
            elif mask.shape != xy_grid.shape[:-1]:
                raise ValueError(
                    f"mask must have shape {tuple(xy_grid.shape[:-1])}; got {tuple(mask.shape)}."
                )
            rays_idx = safe_multinomial(mask.reshape(batch_size, -1).float(), num_rays)
            rays_idx = rays_idx[..., None].expand(-1, -1, 2)
            xy_grid = torch.gather(xy_grid.reshape(batch_size, -1, 2), 1, rays_idx)[:, :, None]
        min_d = self._min_depth if min_depth is None else min_depth
        max_d = self._max_depth if max_depth is None else max_depth
        _check_depths(min_d, max_d)
        return xy_to_ray_bundle(
            cameras,
            xy_grid,
            min_d,
            max_d,
            self._n_pts_per_ray if n_pts_per_ray is None else n_pts_per_ray,
            self._unit_directions,
            self._stratified_sampling if stratified_sampling is None else stratified_sampling,
        )


class MonteCarloRaysampler(torch.nn.Module):
    """Rays through uniform random NDC points (PyTorch3D's ``MonteCarloRaysampler``).

    Args:
        min_x, max_x, min_y, max_y: NDC rectangle the ray pixels are drawn from.
        n_rays_per_image: rays per camera.
        n_pts_per_ray: samples per ray.
        min_depth, max_depth: depth range of the samples.
        unit_directions: normalise ray directions.
        stratified_sampling: jitter each sample within its depth stratum.

    ``forward(cameras)`` returns a RayBundle with origins/directions
    ``(batch, n_rays_per_image, 3)``, lengths ``(batch, n_rays_per_image,
    n_pts_per_ray)`` and xys ``(batch, n_rays_per_image, 2)``. The random draws (x first,
    then y) follow PyTorch3D, so the same seed gives the same rays.
    """

    def __init__(
        self,
        min_x: float,
        max_x: float,
        min_y: float,
        max_y: float,
        n_rays_per_image: int,
        n_pts_per_ray: int,
        min_depth: float,
        max_depth: float,
        *,
        unit_directions: bool = False,
        stratified_sampling: bool = False,
    ) -> None:
        super().__init__()
        if not (min_x < max_x and min_y < max_y):
            raise ValueError(
                "Need min_x < max_x and min_y < max_y; got "
                f"x: [{min_x!r}, {max_x!r}], y: [{min_y!r}, {max_y!r}]."
            )
        self._min_x, self._max_x = float(min_x), float(max_x)
        self._min_y, self._max_y = float(min_y), float(max_y)
        self._n_rays_per_image = check_int("n_rays_per_image", n_rays_per_image)
        self._n_pts_per_ray = check_int("n_pts_per_ray", n_pts_per_ray)
        _check_depths(min_depth, max_depth)
        self._min_depth = float(min_depth)
        self._max_depth = float(max_depth)
        self._unit_directions = unit_directions
        self._stratified_sampling = stratified_sampling

    def forward(
        self,
        cameras: CamerasBase,
        *,
        stratified_sampling: bool | None = None,
        **kwargs: Any,
    ) -> RayBundle:
        """Sample ``n_rays_per_image`` random rays for each of ``cameras``."""
        batch_size = len(cameras)
        device = cameras.device
        rays_xy = torch.cat(
            [
                torch.rand(
                    size=(batch_size, self._n_rays_per_image, 1), dtype=torch.float32, device=device
                )
                * (high - low)
                + low
                for low, high in ((self._min_x, self._max_x), (self._min_y, self._max_y))
            ],
            dim=2,
        )
        return xy_to_ray_bundle(
            cameras,
            rays_xy,
            self._min_depth,
            self._max_depth,
            self._n_pts_per_ray,
            self._unit_directions,
            self._stratified_sampling if stratified_sampling is None else stratified_sampling,
        )
