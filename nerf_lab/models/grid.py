"""Dense-grid primitives: voxel coordinates, cells, trilinear interpolation (as weighted row
sums of a channel-last table, fast on CPU) and total variation.

All pure functions of tensors; the fields in :mod:`nerf_lab.models` are built on them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

__all__ = [
    "cell_corners",
    "sampled_total_variation",
    "total_variation",
    "trilinear_corners",
    "trilinear_interpolate",
    "voxel_cells",
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


def voxel_cells(
    voxels: Sequence[torch.Tensor], resolution: int
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Whether points lie in the grid, and the cell each point lies in.

    Args:
        voxels: 3 tensors ``(M,)``, the voxel coordinates x, y, z (see
            :func:`world_to_voxel`; one contiguous tensor per axis).
        resolution: ``R``, vertices per side.

    Returns:
        inside ``(M,)`` bool: every coordinate in ``[0, R - 1]``; and 3 tensors ``(M,)``
        (float, integral): the cell's lower vertex per axis, ``floor`` clamped into
        ``[0, R - 2]`` (a point on the last plane lies in the last cell).
    """
    n = resolution - 1
    inside: torch.Tensor | None = None
    cells = []
    for v in voxels:
        ok = (v >= 0.0) & (v <= float(n))
        inside = ok if inside is None else inside.logical_and_(ok)
        cells.append(v.floor().clamp_(0.0, n - 1.0))
    assert inside is not None
    return inside, cells


def cell_corners(
    cells: Sequence[torch.Tensor], fracs: Sequence[torch.Tensor], resolution: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Table rows and trilinear weights of the 8 vertices of cells.

    Args:
        cells: 3 tensors ``(M,)`` (integral values in ``[0, R - 2]``): each point's cell,
            as its lower vertex x, y, z.
        fracs: 3 tensors ``(M,)`` in [0, 1]: the point's position in its cell per axis.
        resolution: ``R``, vertices per side.

    Returns:
        rows ``(M, 8)`` (int64; vertex ``(ix, iy, iz)`` is row ``(iz * R + iy) * R + ix``)
        and weights ``(M, 8)``, in the order ``(dz, dy, dx)`` over ``{0, 1}**3``.
    """
    r = resolution
    cx, cy, cz = (c.long() for c in cells)
    base = (cz * r + cy) * r + cx
    offsets = torch.tensor(
        [(dz * r + dy) * r + dx for dz in (0, 1) for dy in (0, 1) for dx in (0, 1)],
        device=base.device,
    )
    rows = base[:, None] + offsets
    # The 8 products w_z * w_y * w_x as contiguous (M,) columns: broadcasting over the
    # (M, 2, 2, 2) view runs with inner dimensions of 2, several times slower on a CPU.
    fx, fy, fz = fracs
    gx, gy, gz = 1.0 - fx, 1.0 - fy, 1.0 - fz
    zy = (gz * gy, gz * fy, fz * gy, fz * fy)
    weights = torch.stack([p * x for p in zy for x in (gx, fx)], dim=-1)
    return rows, weights


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
    v = voxels.clamp(0.0, r - 1.0).t().contiguous()
    v0 = v.floor().clamp_(max=r - 2.0)
    return cell_corners(v0, v - v0, r)


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
