"""Multi-scale feature planes (K-Planes, Fridovich-Keil et al. 2023, static scenes).

A point ``x`` in ``[0, 1]^3`` is projected onto the three axis-aligned planes ``xy``,
``xz``, ``yz`` (:data:`PLANE_AXES`). At each scale ``s`` every plane is an ``R_s x R_s``
grid of ``C`` features, bilinearly interpolated with ``F.grid_sample(...,
align_corners=True)``'s convention: vertex ``i`` of an axis sits at ``i / (R_s - 1)``.
The three plane features are multiplied elementwise (the Hadamard product), and the
products of all scales are concatenated (``(S * C)`` features per point; K-Planes'
``concat_features_across_scales``) or summed (``C``).

Plane ``(a, b)`` is K-Planes' ``(1, C, R, R)`` tensor sampled at ``(x_a, x_b)``: ``x_a``
indexes its width (last axis), ``x_b`` its height. All planes live in one channel-last
``(n_rows, C)`` table, plane ``p`` of scale ``s`` at rows ``offsets[s][p] + v * R_s + u``
(``u`` along the width), so that interpolation is one :func:`nerf_lab.gather.
weighted_corner_sum` for all scales and planes; :func:`plane_views` gives the
``(R_s, R_s, C)`` views (height, width, channel) for the regularisers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from nerf_lab.gather import weighted_corner_sum
from nerf_lab.validate import check_int, is_int

__all__ = [
    "PLANE_AXES",
    "PlaneLayout",
    "plane_corners",
    "plane_features",
    "plane_l1",
    "plane_layout",
    "plane_total_variation",
    "plane_views",
    "sample_planes",
]

#: The coordinate pairs ``(width axis, height axis)`` of the planes: xy, xz, yz.
PLANE_AXES = ((0, 1), (0, 2), (1, 2))


@dataclass(frozen=True)
class PlaneLayout:
    """Resolutions and table rows of the planes.

    Attributes:
        resolutions: ``R_s`` per scale (vertices per side).
        offsets: first row of each scale's ``len(PLANE_AXES)`` planes, ``[s][p]``.
    """

    resolutions: tuple[int, ...]
    offsets: tuple[tuple[int, ...], ...]

    @property
    def n_scales(self) -> int:
        return len(self.resolutions)

    @property
    def n_rows(self) -> int:
        """Rows of the shared table."""
        return sum(len(PLANE_AXES) * r * r for r in self.resolutions)


def plane_layout(resolution: int, multiscale: Sequence[int]) -> PlaneLayout:
    """Scales ``resolution * m`` for each multiplier ``m`` (K-Planes: 64 x [1, 2, 4, 8]).

    Raises ``ValueError`` for a resolution below 2 or a multiplier below 1.
    """
    check_int("resolution", resolution, 2)
    mults = list(multiscale) if isinstance(multiscale, Sequence) else []
    if not mults or any(not is_int(m) or m < 1 for m in mults):
        raise ValueError(
            f"multiscale must be a non-empty list of integers >= 1; got {multiscale!r}."
        )
    resolutions = tuple(resolution * m for m in mults)
    offsets, row = [], 0
    for r in resolutions:
        offsets.append(tuple(row + p * r * r for p in range(len(PLANE_AXES))))
        row += len(PLANE_AXES) * r * r
    return PlaneLayout(resolutions, tuple(offsets))


def plane_corners(points: torch.Tensor, layout: PlaneLayout) -> tuple[torch.Tensor, torch.Tensor]:
    """Table rows and bilinear weights of the 4 plane vertices around each projected point.

    Corner ``k = 2 dv + du`` is vertex ``(floor(u (R - 1)) + du, floor(v (R - 1)) + dv)``;
    points are clamped into ``[0, 1]^3``.

    Args:
        points: ``(M, 3)`` in ``[0, 1]^3``; the weights are differentiable with respect to
            them.
        layout: :func:`plane_layout`.

    Returns:
        rows ``(4, S, 3, M)`` int32 and weights ``(4, S, 3, M)`` (``points.dtype``),
        scale-major then plane-major.
    """
    if points.dim() != 2 or points.shape[-1] != 3:
        raise ValueError(f"points must have shape (M, 3); got {tuple(points.shape)}.")
    device, n_points = points.device, points.shape[0]
    n_planes = len(PLANE_AXES)
    res_i = torch.tensor(layout.resolutions, dtype=torch.int64, device=device)[:, None]
    last = (res_i - 1).to(points.dtype)  # (S, 1): the coordinate scale R - 1
    cells, fracs = [], []
    for axis in range(3):
        scaled = last * points[:, axis].clamp(0.0, 1.0)  # (S, M)
        cell = torch.minimum(scaled.detach().floor(), last - 1.0)
        fracs.append(scaled - cell)
        cells.append(cell.long())
    offsets = torch.tensor(layout.offsets, dtype=torch.int64, device=device)  # (S, 3)
    rows = torch.empty(2, 2, layout.n_scales, n_planes, n_points, dtype=torch.int32,
                       device=device)  # fmt: skip
    weights = points.new_empty(2, 2, layout.n_scales, n_planes, n_points)
    for p, (a, b) in enumerate(PLANE_AXES):
        base = cells[b] * res_i + cells[a] + offsets[:, p : p + 1]  # (S, M)
        fu, fv = fracs[a], fracs[b]
        for dv in (0, 1):
            wv = fv if dv else 1.0 - fv
            for du in (0, 1):
                rows[dv, du, :, p] = base + (dv * res_i + du)
                weights[dv, du, :, p] = wv * (fu if du else 1.0 - fu)
    return rows.reshape(4, layout.n_scales, n_planes, n_points), weights.reshape(
        4, layout.n_scales, n_planes, n_points
    )


def sample_planes(points: torch.Tensor, table: torch.Tensor, layout: PlaneLayout) -> torch.Tensor:
    """Bilinearly interpolated features of every plane at every scale.

    Differentiable with respect to ``table`` and ``points``.

    Args:
        points: ``(M, 3)`` in ``[0, 1]^3`` (clamped).
        table: ``(layout.n_rows, C)``.
        layout: :func:`plane_layout`.

    Returns:
        ``(S, 3, M, C)``: scale, plane (:data:`PLANE_AXES`), point, channel.
    """
    if table.dim() != 2 or table.shape[0] != layout.n_rows:
        raise ValueError(
            f"table must have shape ({layout.n_rows}, C) for this layout; got {tuple(table.shape)}."
        )
    rows, weights = plane_corners(points, layout)
    out = weighted_corner_sum(table, rows.reshape(4, -1), weights.reshape(4, -1).to(table.dtype))
    return out.reshape(layout.n_scales, len(PLANE_AXES), points.shape[0], table.shape[1])


def plane_features(
    points: torch.Tensor, table: torch.Tensor, layout: PlaneLayout, concat: bool = True
) -> torch.Tensor:
    """K-Planes features: the Hadamard product over the planes, per scale, then the scales
    concatenated (``concat``) or summed.

    Args:
        points: ``(M, 3)`` in ``[0, 1]^3``.
        table: ``(layout.n_rows, C)``.

    Returns:
        ``(M, S * C)`` (scale 0's channels first) or ``(M, C)``.
    """
    planes = sample_planes(points, table, layout)  # (S, 3, M, C)
    product = planes[:, 0] * planes[:, 1] * planes[:, 2]  # (S, M, C)
    if not concat:
        return product.sum(0)
    return product.transpose(0, 1).reshape(points.shape[0], layout.n_scales * table.shape[1])


def plane_views(table: torch.Tensor, layout: PlaneLayout) -> list[torch.Tensor]:
    """Every plane as an ``(R_s, R_s, C)`` view of the table (height, width, channel),
    scale-major then in :data:`PLANE_AXES` order."""
    views = []
    for r, offs in zip(layout.resolutions, layout.offsets, strict=True):
        views += [table[o : o + r * r].view(r, r, table.shape[1]) for o in offs]
    return views


def plane_total_variation(table: torch.Tensor, layout: PlaneLayout) -> torch.Tensor:
    """K-Planes' plane TV: per plane, the mean squared difference of neighbouring vertices
    along the width and along the height, averaged; then averaged over all planes of all
    scales. Returns a scalar ``()``."""
    total = table.new_zeros(())
    views = plane_views(table, layout)
    for t in views:
        tv_w = (t[:, 1:] - t[:, :-1]).square().mean()
        tv_h = (t[1:] - t[:-1]).square().mean()
        total = total + 0.5 * (tv_w + tv_h)
    return total / len(views)


def plane_l1(table: torch.Tensor, layout: PlaneLayout) -> torch.Tensor:
    """Mean absolute feature value per plane, averaged over all planes of all scales (a
    sparsity prior, weighted like :func:`plane_total_variation`). Returns ``()``."""
    views = plane_views(table, layout)
    return sum(t.abs().mean() for t in views) / len(views)
