"""Dense-grid primitives: voxel coordinates, ray-box intervals, trilinear interpolation
(as weighted row sums of a channel-last table, fast on CPU) and total variation.

All pure functions of tensors; the fields in :mod:`nerf_lab.models` are built on them.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

__all__ = [
    "ray_box_interval",
    "sampled_total_variation",
    "total_variation",
    "trilinear_corners",
    "trilinear_interpolate",
    "world_to_voxel",
]


def world_to_voxel(points: torch.Tensor, bbox: float, resolution: int) -> torch.Tensor:
    """Continuous voxel coordinates: ``-bbox`` maps to 0 and ``+bbox`` to ``resolution - 1``.

    Args:
        points: ``(..., 3)`` world points ``(x, y, z)``.

    Returns:
        ``(..., 3)`` voxel coordinates ``(x, y, z)``.
    """
    return (points + bbox) * ((resolution - 1) / (2.0 * bbox))


def ray_box_interval(
    origins: torch.Tensor, directions: torch.Tensor, bbox: float, margin: float = 1e-4
) -> tuple[torch.Tensor, torch.Tensor]:
    """Depth interval ``[near, far]`` in which each ray is inside ``[-bbox, bbox]**3``.

    The interval is widened by ``margin * (1 + |depth|)`` so that rounding never drops a
    point inside the box; rays missing the box get ``near > far``.

    Args:
        origins, directions: ``(n_rays, 3)``.

    Returns:
        near, far: ``(n_rays,)`` in units of ``directions`` (z-depths for the raysamplers).
    """
    tiny = torch.finfo(directions.dtype).tiny
    safe = torch.where(directions.abs() < tiny, torch.full_like(directions, tiny), directions)
    inv = 1.0 / safe
    t0 = (-bbox - origins) * inv
    t1 = (bbox - origins) * inv
    near = torch.minimum(t0, t1).amax(dim=-1)
    far = torch.maximum(t0, t1).amin(dim=-1)
    return near - margin * (1 + near.abs()), far + margin * (1 + far.abs())


def trilinear_corners(voxels: torch.Tensor, resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Table rows and weights of the 8 grid vertices around each point.

    The table row of vertex ``(ix, iy, iz)`` is ``(iz * R + iy) * R + ix``, i.e. the
    ``(R**3, C)`` table is the channel-last form of a ``(C, D=R, H=R, W=R)`` volume in
    ``F.grid_sample``'s layout. Points are clamped into the grid.

    Args:
        voxels: ``(M, 3)`` voxel coordinates ``(x, y, z)`` (see :func:`world_to_voxel`).
        resolution: ``R``, vertices per side.

    Returns:
        rows ``(M, 8)`` (int64) and weights ``(M, 8)`` (summing to 1 per point).
    """
    r = resolution
    v = voxels.clamp(0.0, r - 1.0)
    v0 = v.floor().clamp_(max=r - 2.0)
    i0 = v0.long()
    base = (i0[:, 2] * r + i0[:, 1]) * r + i0[:, 0]
    offsets = torch.tensor(
        [(dz * r + dy) * r + dx for dz in (0, 1) for dy in (0, 1) for dx in (0, 1)],
        device=voxels.device,
    )
    rows = base[:, None] + offsets
    # The 8 products w_z * w_y * w_x as contiguous (M,) columns: broadcasting over the
    # (M, 2, 2, 2) view runs with inner dimensions of 2, several times slower on a CPU.
    fx, fy, fz = (v - v0).t().contiguous()
    gx, gy, gz = 1.0 - fx, 1.0 - fy, 1.0 - fz
    zy = (gz * gy, gz * fy, fz * gy, fz * fy)
    weights = torch.stack([p * x for p in zy for x in (gx, fx)], dim=-1)
    return rows, weights


class _WeightedRowSum(torch.autograd.Function):
    """``out[m] = sum_k weights[m, k] * table[rows[m, k]]`` with a scatter-add backward.

    ``F.embedding_bag`` computes the forward well, but its backward sorts the indices,
    which on a CPU costs several times more than a plain ``index_add_``.
    """

    @staticmethod
    def forward(ctx: Any, table: torch.Tensor, rows: torch.Tensor, weights: torch.Tensor):
        ctx.save_for_backward(rows, weights)
        ctx.table_shape = table.shape
        return F.embedding_bag(rows, table, per_sample_weights=weights, mode="sum")

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor):
        rows, weights = ctx.saved_tensors
        n_channels = ctx.table_shape[1]
        grad_table = grad_out.new_zeros(ctx.table_shape)
        contrib = (weights[:, :, None] * grad_out[:, None, :]).reshape(-1, n_channels)
        grad_table.index_add_(0, rows.reshape(-1), contrib)
        return grad_table, None, None


def trilinear_interpolate(
    table: torch.Tensor, rows: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """Weighted sum of table rows (trilinear interpolation given :func:`trilinear_corners`).

    Differentiable with respect to ``table`` only.

    Args:
        table: ``(R**3, C)`` grid values.
        rows, weights: ``(M, 8)``.

    Returns:
        ``(M, C)``.
    """
    if torch.is_grad_enabled() and table.requires_grad:
        return _WeightedRowSum.apply(table, rows, weights.detach())
    return F.embedding_bag(rows, table, per_sample_weights=weights, mode="sum")


def total_variation(grid: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of neighbouring vertices, summed over the 3 axes.

    Args:
        grid: ``(D, H, W, C)`` channel-last grid.

    Returns:
        ``()`` the sum over axes of the mean (over vertex pairs and channels) of the
        squared differences.
    """
    return (
        (grid[1:] - grid[:-1]).pow(2).mean()
        + (grid[:, 1:] - grid[:, :-1]).pow(2).mean()
        + (grid[:, :, 1:] - grid[:, :, :-1]).pow(2).mean()
    )


def sampled_total_variation(
    table: torch.Tensor, grid_shape: tuple[int, int, int], n_samples: int
) -> torch.Tensor:
    """An estimate of :func:`total_variation` from ``n_samples`` random vertices.

    Each sample is a vertex of the first ``D - 1, H - 1, W - 1`` along each axis and its
    3 forward neighbours, so the estimate (and its gradient, which touches only the
    sampled vertices) costs ``O(n_samples * C)`` instead of ``O(D H W C)``. Sampling away
    from the last face of each axis differs from the exact pair average only by
    boundary terms of relative size ``O(1 / R)``; its expectation is exactly the mean over
    those interior vertices. Uses the global torch RNG.

    Args:
        table: ``(D * H * W, C)`` the grid as a channel-last table (row ``(z * H + y) * W +
            x``), e.g. a parameter: its gradient is sparse, so pass the leaf itself (a
            reshape of it cannot pass a sparse gradient back).
        grid_shape: ``(D, H, W)``, each ``>= 2``.
        n_samples: number of random vertices.

    Returns:
        ``()`` the estimate.
    """
    d, h, w = grid_shape
    dev = table.device
    z = torch.randint(0, d - 1, (n_samples,), device=dev)
    y = torch.randint(0, h - 1, (n_samples,), device=dev)
    x = torch.randint(0, w - 1, (n_samples,), device=dev)
    base = (z * h + y) * w + x
    # One lookup of the 4 vertices per sample; sparse=True gives the table a sparse
    # gradient (the sampled rows only) instead of a dense zero-filled grid per lookup.
    rows = torch.stack((base, base + h * w, base + w, base + 1))
    v = F.embedding(rows, table, sparse=True)
    return (v[1:] - v[0]).pow(2).mean(dim=(1, 2)).sum()
