"""Depth ranges (``near``, ``far``) of scenes: the z-depths, in each camera's view space, that
cover the scene's content.

Depths are PyTorch3D view-space z (``X_view = X_world @ R + T``, camera looking along +Z), the
same units as the ``lengths`` of a :class:`nerf_lab.raysamplers.RayBundle` whose directions
have view-space z = 1.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

# Relative lower clamp of ``near``: a camera inside the content's bounding volume still gets
# ``near = NEAR_EPS_FRACTION * distance`` (> 0), never 0 or a negative depth.
NEAR_EPS_FRACTION = 0.01


def bounding_radius(points: torch.Tensor, center: Sequence[float] | None = None) -> float:
    """Radius of the smallest ball around ``center`` holding every point.

    For a triangle mesh, pass its vertices: every surface point is a convex combination of
    the vertices of its face, so it lies in the same ball.

    Args:
        points: ``(n_points, 3)``.
        center: ``(3,)`` ball centre (default: the origin).

    Returns:
        ``max_i |points_i - center|``.
    """
    if points.dim() != 2 or points.shape[1] != 3 or points.shape[0] == 0:
        raise ValueError(f"points must have shape (n_points >= 1, 3); got {tuple(points.shape)}.")
    c = torch.zeros(3, dtype=points.dtype, device=points.device)
    if center is not None:
        c = torch.as_tensor(center, dtype=points.dtype, device=points.device).reshape(3)
    return float((points - c).norm(dim=1).max())


def orbit_depth_range(distance: float, radius: float) -> tuple[float, float]:
    """Depth range of content within ``radius`` of the point that cameras at ``distance`` look at.

    A camera at ``C`` (``|C - c| = distance``) looking at ``c`` sees a point ``p`` with
    ``|p - c| <= radius`` at z-depth ``(p - C) . (c - C) / distance`` in
    ``[distance - radius, distance + radius]``.

    Args:
        distance: camera distance from the look-at point (> 0).
        radius: bounding radius of the content around the look-at point (>= 0).

    Returns:
        ``(near, far) = (max(NEAR_EPS_FRACTION * distance, distance - radius),
        distance + radius)``.
    """
    if not distance > 0:
        raise ValueError(f"distance must be > 0; got {distance!r}.")
    if not radius >= 0:
        raise ValueError(f"radius must be >= 0; got {radius!r}.")
    near = max(NEAR_EPS_FRACTION * float(distance), float(distance) - float(radius))
    return near, float(distance) + float(radius)


def view_depths(R: torch.Tensor, T: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """View-space z-depth of every point in every camera.

    Args:
        R: ``(n_views, 3, 3)`` world-to-view rotations.
        T: ``(n_views, 3)`` world-to-view translations.
        points: ``(n_points, 3)`` world points.

    Returns:
        ``(n_views, n_points)``: ``(points @ R + T)[..., 2]``.
    """
    if R.dim() != 3 or R.shape[1:] != (3, 3) or T.shape != (R.shape[0], 3):
        raise ValueError(
            f"R must be (n_views, 3, 3) and T (n_views, 3); got {tuple(R.shape)}, {tuple(T.shape)}."
        )
    if points.dim() != 2 or points.shape[1] != 3:
        raise ValueError(f"points must have shape (n_points, 3); got {tuple(points.shape)}.")
    dtype = torch.promote_types(R.dtype, points.dtype)
    return R[:, :, 2].to(dtype) @ points.to(dtype).T + T[:, 2].to(dtype)[:, None]


def box_corners(box_min: Sequence[float], box_max: Sequence[float]) -> torch.Tensor:
    """The 8 corners of an axis-aligned box, ``(8, 3)`` float64."""
    lo = torch.as_tensor(box_min, dtype=torch.float64).reshape(3)
    hi = torch.as_tensor(box_max, dtype=torch.float64).reshape(3)
    if not bool((lo < hi).all()):
        raise ValueError(
            f"box_min must be < box_max on every axis; got {lo.tolist()}, {hi.tolist()}."
        )
    idx = torch.tensor([[(k >> a) & 1 for a in range(3)] for k in range(8)], dtype=torch.bool)
    return torch.where(idx, hi, lo)


def box_depth_range(
    R: torch.Tensor,
    T: torch.Tensor,
    box_min: Sequence[float],
    box_max: Sequence[float],
    min_near: float | None = None,
) -> tuple[float, float]:
    """Depth range covering an axis-aligned box in every camera.

    Depth is affine in the world point, so its extremes over the box are at corners: per camera
    the min / max z-depth of the 8 corners, then the min / max over cameras.

    Args:
        R: ``(n_views, 3, 3)`` world-to-view rotations.
        T: ``(n_views, 3)`` world-to-view translations.
        box_min, box_max: ``(3,)`` box corners in world coordinates.
        min_near: lower clamp of ``near`` (default: ``NEAR_EPS_FRACTION`` times the smallest
            distance from a camera centre to the box centre), so ``near > 0`` even for cameras
            inside the box.

    Returns:
        ``(near, far)`` with ``0 < near < far``.
    """
    corners = box_corners(box_min, box_max)
    depths = view_depths(R.double(), T.double(), corners)  # (n_views, 8)
    near, far = float(depths.min()), float(depths.max())
    if min_near is None:
        centers = -torch.einsum("nj,nij->ni", T.double(), R.double())  # C = -R T (row vectors)
        mid = 0.5 * (corners[0] + corners[7])
        min_near = NEAR_EPS_FRACTION * max(float((centers - mid).norm(dim=1).min()), 1e-6)
    if far <= 0:
        raise ValueError(
            f"The box {list(box_min)}..{list(box_max)} is behind every camera (max depth {far})."
        )
    return max(near, float(min_near)), far
