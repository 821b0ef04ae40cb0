"""Multiresolution hash encoding (Instant-NGP, Müller et al. 2022), in pure PyTorch.

``L`` levels of trainable ``F``-dimensional feature vectors on regular grids of the unit
cube, with resolutions growing geometrically from ``N_min`` to ``N_max``::

    N_l = floor(N_min * b**l),   b = exp((ln N_max - ln N_min) / (L - 1))    (paper, Eq. 2-3)

A point ``x`` in ``[0, 1]^3`` is scaled by ``N_l``; the ``8`` vertices of its cell,
``floor(x N_l) + {0, 1}^3`` (integer coordinates ``0 .. N_l``), are looked up in the
level's table and trilinearly interpolated. A level whose ``(N_l + 1)**3`` vertices fit in
``T = 2**log2_hashmap_size`` entries is indexed densely (``x + y (N_l + 1) + z (N_l +
1)**2``, collision-free); finer levels use the spatial hash

    h(x, y, z) = (x * 1  xor  y * 2654435761  xor  z * 805459861) mod T.

The level features are concatenated, level 0 first: ``(L * F)`` features per point.

All levels live in one ``(n_rows, F)`` table (level ``l`` at rows ``offsets[l] ..
offsets[l] + table_sizes[l]``), so the encoding is one vectorised index computation over
points and levels and one :func:`nerf_lab.gather.weighted_corner_sum` for all of them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from nerf_lab.gather import weighted_corner_sum
from nerf_lab.validate import check_int, check_number

__all__ = [
    "HASH_PRIMES",
    "HashGridLayout",
    "MultiresolutionHashEncoding",
    "hash_grid_corners",
    "hash_grid_encode",
    "hash_grid_layout",
    "spatial_hash",
]

#: Instant-NGP's per-axis hash multipliers ``(pi_1, pi_2, pi_3)``.
HASH_PRIMES = (1, 2654435761, 805459861)

#: Largest table size exponent: ``L * 2**24`` rows stay far below int32's range.
MAX_LOG2_HASHMAP_SIZE = 24


@dataclass(frozen=True)
class HashGridLayout:
    """Where each level lives in the shared table.

    Attributes:
        resolutions: ``N_l`` per level (a level has ``(N_l + 1)**3`` vertices).
        table_sizes: rows per level: ``(N_l + 1)**3`` for dense levels, else ``T``.
        offsets: first row of each level in the shared table.
        n_dense: number of densely indexed levels (always the first ones).
        hashmap_size: ``T``.
        growth_factor: ``b``, the resolution ratio of consecutive levels before rounding.
    """

    resolutions: tuple[int, ...]
    table_sizes: tuple[int, ...]
    offsets: tuple[int, ...]
    n_dense: int
    hashmap_size: int
    growth_factor: float

    @property
    def n_levels(self) -> int:
        return len(self.resolutions)

    @property
    def n_rows(self) -> int:
        """Rows of the shared table."""
        return self.offsets[-1] + self.table_sizes[-1]


def hash_grid_layout(
    n_levels: int = 16,
    log2_hashmap_size: int = 19,
    base_resolution: int = 16,
    max_resolution: int = 2048,
) -> HashGridLayout:
    """The level resolutions and table layout of a hash grid (paper, Eq. 2-3).

    Args:
        n_levels: ``L``.
        log2_hashmap_size: ``log2 T``, 1 to :data:`MAX_LOG2_HASHMAP_SIZE`.
        base_resolution: ``N_min``, the coarsest resolution.
        max_resolution: ``N_max >= N_min``, the finest resolution (``L = 1``: ignored).

    Returns:
        The layout; level ``l`` has resolution ``floor(N_min * b**l)``.
    """
    check_int("n_levels", n_levels, 1)
    check_int("log2_hashmap_size", log2_hashmap_size, 1, MAX_LOG2_HASHMAP_SIZE)
    check_int("base_resolution", base_resolution, 1)
    check_int("max_resolution", max_resolution, 1)
    if max_resolution < base_resolution:
        raise ValueError(
            f"max_resolution must be >= base_resolution ({base_resolution}); "
            f"got {max_resolution!r}."
        )
    growth = (
        math.exp((math.log(max_resolution) - math.log(base_resolution)) / (n_levels - 1))
        if n_levels > 1
        else 1.0
    )
    # The 1e-9 keeps N_max itself from rounding down to N_max - 1.
    resolutions = tuple(
        min(max_resolution, int(math.floor(base_resolution * growth**lvl + 1e-9)))
        for lvl in range(n_levels)
    )
    hashmap_size = 2**log2_hashmap_size
    table_sizes = tuple(min((r + 1) ** 3, hashmap_size) for r in resolutions)
    n_dense = sum((r + 1) ** 3 <= hashmap_size for r in resolutions)
    offsets = tuple(sum(table_sizes[:lvl]) for lvl in range(n_levels))
    return HashGridLayout(resolutions, table_sizes, offsets, n_dense, hashmap_size, growth)


def spatial_hash(coords: torch.Tensor, hashmap_size: int) -> torch.Tensor:
    """Instant-NGP's spatial hash ``(x * 1 xor y * 2654435761 xor z * 805459861) mod T``.

    Equal to tiny-cuda-nn's uint32 arithmetic for a power-of-two ``T`` (the low bits of a
    product do not depend on the high bits that uint32 drops).

    Args:
        coords: ``(..., 3)`` non-negative integer vertex coordinates (int64).
        hashmap_size: ``T``.

    Returns:
        ``(...,)`` int64 in ``[0, T)``.
    """
    h = coords[..., 0] * HASH_PRIMES[0]
    h = h ^ (coords[..., 1] * HASH_PRIMES[1])
    h = h ^ (coords[..., 2] * HASH_PRIMES[2])
    return h % hashmap_size


def hash_grid_corners(
    points: torch.Tensor, layout: HashGridLayout
) -> tuple[torch.Tensor, torch.Tensor]:
    """Table rows and trilinear weights of the 8 cell vertices of each point at each level.

    Corner ``k = 4 dz + 2 dy + dx`` is vertex ``floor(x N_l) + (dx, dy, dz)``; points are
    clamped into ``[0, 1]^3``, and a coordinate equal to 1 uses the last cell with weight 1
    on its far side. Vectorised over points and levels: per-axis indices and weights are
    ``(2, L, M)`` and are combined into ``(8, L, M)`` once. The layout is corner-major,
    then level-major, so consecutive gathers read one level's table (a small working set).

    Args:
        points: ``(M, 3)`` in ``[0, 1]^3``; the weights are differentiable with respect to
            them.
        layout: :func:`hash_grid_layout`.

    Returns:
        rows ``(8, L, M)`` int32 (rows of the shared table) and weights ``(8, L, M)``
        (``points.dtype``, summing to 1 over the corners).
    """
    if points.dim() != 2 or points.shape[-1] != 3:
        raise ValueError(f"points must have shape (M, 3); got {tuple(points.shape)}.")
    device, n_levels, n_points = points.device, layout.n_levels, points.shape[0]
    nd, mask = layout.n_dense, layout.hashmap_size - 1
    res_i = torch.tensor(layout.resolutions, dtype=torch.int64, device=device)[:, None]
    res = res_i.to(points.dtype)
    last_cell = (res - 1.0).clamp_min(0.0)
    offsets = torch.tensor(layout.offsets, dtype=torch.int64, device=device)[:, None]
    side = res_i[:nd] + 1  # vertices per side of the dense levels
    dense_stride = (1, side, side * side)
    w, dense, hashed = [], [], []
    for axis in range(3):
        scaled = res * points[:, axis].clamp(0.0, 1.0)  # (L, M)
        cell = torch.minimum(scaled.detach().floor(), last_cell)
        frac = scaled - cell  # in [0, 1]; differentiable through `scaled`
        w.append(torch.stack((1.0 - frac, frac)))  # (2, L, M)
        cell = cell.long()
        if nd > 0:
            d = cell[:nd] * dense_stride[axis]
            if axis == 0:
                d += offsets[:nd]
            dense.append(torch.stack((d, d + dense_stride[axis])).int())  # (2, nd, M)
        if nd < n_levels:
            # (a xor b xor c) mod T == (a mod T) xor (b mod T) xor (c mod T) for T = 2**k,
            # so each axis term is reduced (and narrowed) before the 8-way combination.
            h = cell[nd:] * HASH_PRIMES[axis]
            hashed.append(torch.stack((h & mask, (h + HASH_PRIMES[axis]) & mask)).int())
    weights = (w[2][:, None, None] * w[1][None, :, None]) * w[0][None, None, :]
    weights = weights.reshape(8, n_levels, n_points)
    rows = torch.empty(2, 2, 2, n_levels, n_points, dtype=torch.int32, device=device)
    if nd > 0:
        tx, ty, tz = dense
        torch.add(tz[:, None, None] + ty[None, :, None], tx[None, None, :], out=rows[..., :nd, :])
    if nd < n_levels:
        hx, hy, hz = hashed
        out = rows[..., nd:, :]
        torch.bitwise_xor(hz[:, None, None] ^ hy[None, :, None], hx[None, None, :], out=out)
        out += offsets[nd:].int()
    return rows.reshape(8, n_levels, n_points), weights


def hash_grid_encode(
    points: torch.Tensor, table: torch.Tensor, layout: HashGridLayout
) -> torch.Tensor:
    """Multiresolution hash encoding of points in the unit cube.

    Differentiable with respect to ``table`` and ``points``.

    Args:
        points: ``(M, 3)`` in ``[0, 1]^3`` (clamped).
        table: ``(layout.n_rows, F)`` features of every level.
        layout: :func:`hash_grid_layout`.

    Returns:
        ``(M, L * F)``: level 0's ``F`` features, then level 1's, ...
    """
    if table.dim() != 2 or table.shape[0] != layout.n_rows:
        raise ValueError(
            f"table must have shape ({layout.n_rows}, F) for this layout; got {tuple(table.shape)}."
        )
    rows, weights = hash_grid_corners(points, layout)
    n_levels, n_points, n_features = layout.n_levels, points.shape[0], table.shape[1]
    out = weighted_corner_sum(
        table, rows.reshape(8, -1), weights.reshape(8, -1).to(table.dtype)
    )  # (L * M, F), level-major
    return (
        out.reshape(n_levels, n_points, n_features)
        .transpose(0, 1)
        .reshape(n_points, n_levels * n_features)
    )


class MultiresolutionHashEncoding(torch.nn.Module):
    """Trainable multiresolution hash encoding (see the module docstring).

    Args:
        n_levels: ``L`` (Instant-NGP: 16).
        n_features_per_level: ``F`` (2).
        log2_hashmap_size: ``log2 T`` (19).
        base_resolution: ``N_min`` (16).
        max_resolution: ``N_max`` (Instant-NGP: 512 to 524288 by scene size; 2048 here).
        init_scale: table entries start uniform in ``[-init_scale, init_scale]`` (1e-4).

    ``forward(points (..., 3) in [0, 1]^3)`` returns ``(..., L * F)``.
    """

    def __init__(
        self,
        n_levels: int = 16,
        n_features_per_level: int = 2,
        log2_hashmap_size: int = 19,
        base_resolution: int = 16,
        max_resolution: int = 2048,
        init_scale: float = 1e-4,
    ) -> None:
        super().__init__()
        check_int("n_features_per_level", n_features_per_level, 1)
        check_number("init_scale", init_scale, 0)
        self.layout = hash_grid_layout(n_levels, log2_hashmap_size, base_resolution, max_resolution)
        self.n_features_per_level = n_features_per_level
        table = torch.empty(self.layout.n_rows, n_features_per_level)
        self.table = torch.nn.Parameter(table.uniform_(-init_scale, init_scale))

    def get_output_dim(self) -> int:
        """``L * F``."""
        return self.layout.n_levels * self.n_features_per_level

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        lead = points.shape[:-1]
        out = hash_grid_encode(points.reshape(-1, 3), self.table, self.layout)
        return out.reshape(*lead, out.shape[-1])
