"""Occupancy-grid sampling for any field, with fixed-size bundles (nerfacc's ``OccGridEstimator``
idea, Li et al. 2023; Instant-NGP's occupancy grid).

**Design.** :class:`OccupancyGrid` keeps, for each cell of a regular grid over ``aabb``, an
exponential moving maximum of the opacity that the field gives a short step inside the
cell, and a boolean "occupied" mask (the value above ``min(threshold, mean)``, as
nerfacc). Every ``update_every`` training steps (:meth:`OccupancyGrid.on_train_step`) it
queries the field at a random point of each chosen cell: every cell during
``warmup_steps``, afterwards ``n_cells // 4`` random cells plus up to as many occupied
ones. The field is queried through its ray-bundle contract (:func:`query_density`), so
any field works; bind it once with :meth:`OccupancyGrid.bind_field`.

:class:`OccupancyResampler` then places the ``n_pts_per_ray`` samples of each ray only in
the occupied part of ``[near, far]`` (the input bundle's first and last depth): the
ray is cut at every grid plane it crosses (:func:`ray_grid_edges`), so each segment lies
in one cell; occupied segments get a weight equal to their length and the samples are
drawn from that step-function PDF with one quantile per stratum
(:func:`~nerf_lab.sample_pdf.invert_cdf`, ``eps = 0``): uniform over the occupied length,
and every sample inside an occupied cell. A ray that crosses no occupied cell ("early
out") gets evenly spread samples over ``[near, far]`` instead (its weights will be ~0),
and ``aux["occupancy_hit"]`` ``(..., 1)`` says which rays hit; the same rays are marked
in ``aux[Resampler.ACTIVE_RAYS]`` (bool), so renders with
:class:`~nerf_lab.render_shortcuts.RenderShortcuts` evaluate the field only on the rays
that hit (evaluation only; training evaluates every ray).

**Limits.** Bundles keep a fixed number of points per ray, so the grid concentrates
samples but saves no field evaluations by itself (nerfacc's packed, variable-length
samples do); in evaluation the renderer's ray skipping and early ray termination
(:mod:`nerf_lab.render_shortcuts`) save most of them. The fields compute a point's
opacity over the spacing to the next sample, which across a skipped gap is the gap's
length: the last sample before a gap is over-weighted if its density is not ~0 (with a
conservative grid, the edge of an occupied region is nearly empty). A ray is cut into
``sum(resolution) + 4`` segments, so memory grows with the resolution (64: 197 edges per
ray). Cells are not marked invisible from the cameras (nerfacc's
``mark_invisible_cells``), and the grid has one level (no unbounded scenes).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import torch

from nerf_lab.hooks import ParamGroup, TrainingHooks
from nerf_lab.proposal import check_aabb
from nerf_lab.raysamplers import RayBundle
from nerf_lab.renderer import Resampler
from nerf_lab.sample_pdf import invert_cdf, stratified_quantiles
from nerf_lab.validate import check_bool, check_int, check_number, invalid, is_int, is_number

__all__ = [
    "OccupancyGrid",
    "OccupancyResampler",
    "ema_update",
    "occupied_segments",
    "query_density",
    "ray_aabb_interval",
    "ray_grid_edges",
    "ray_grid_edges_in_box",
    "grid_edges_between",
    "coarse_occupancy",
    "occupied_bounds",
]


def query_density(
    field: torch.nn.Module,
    points: torch.Tensor,
    spacing: float,
    chunk_size: int = 65536,
) -> torch.Tensor:
    """The opacity a field gives a step of length ``spacing`` at each point.

    Each point becomes a 2-point ray (origin = the point, a unit direction +z, depths
    ``0`` and ``spacing``), so a field that scales densities by the sample spacing
    returns ``alpha = 1 - exp(-sigma(p) * spacing)`` for the first point (a field whose
    opacity ignores the spacing, e.g. the tutorial's ``density_scaling=none``, returns its
    per-sample opacity). Evaluated without gradients, ``chunk_size`` points at a time.

    Args:
        field: ``forward(ray_bundle) -> (densities (..., n_pts_per_ray, 1), colors)``.
        points: ``(n_points, 3)`` world points.
        spacing: the step length (world units, > 0).
        chunk_size: points per field call.

    Returns:
        ``(n_points,)`` opacities in [0, 1].
    """
    if not (spacing > 0.0):
        raise ValueError(f"spacing must be > 0; got {spacing!r}.")
    out = []
    with torch.no_grad():
        for start in range(0, points.shape[0], chunk_size):
            p = points[start : start + chunk_size]
            n = p.shape[0]
            directions = torch.zeros_like(p)
            directions[:, 2] = 1.0
            lengths = p.new_tensor([0.0, spacing]).expand(n, 2).contiguous()
            bundle = RayBundle(origins=p, directions=directions, lengths=lengths,
                               xys=p.new_zeros(n, 2))  # fmt: skip
            densities, _ = field(ray_bundle=bundle)
            out.append(densities[:, 0, 0].to(points.dtype))
    if not out:
        return points.new_zeros(0)
    return torch.cat(out)


def ema_update(
    occs: torch.Tensor, indices: torch.Tensor, values: torch.Tensor, decay: float
) -> torch.Tensor:
    """nerfacc's EMA update of an occupancy grid, with a scatter-max for repeated cells.

    For each distinct cell ``c`` in ``indices``:
    ``occs'[c] = max(decay * occs[c], max of values[j] with indices[j] == c)``; other
    cells are unchanged.

    Args:
        occs: ``(n_cells,)`` occupancy values.
        indices: ``(n,)`` cell indices (repeats allowed).
        values: ``(n,)`` new values.
        decay: the EMA decay in [0, 1].

    Returns:
        ``(n_cells,)`` the new values (a new tensor).
    """
    out = occs.clone()
    out[indices] = occs[indices] * decay
    return out.scatter_reduce(0, indices, values.to(out.dtype), reduce="amax", include_self=True)


def ray_grid_edges(
    origins: torch.Tensor,
    directions: torch.Tensor,
    near: torch.Tensor,
    far: torch.Tensor,
    aabb: Sequence[float],
    resolution: Sequence[int],
) -> torch.Tensor:
    """Depths where rays cross the planes of a grid, clamped to ``[near, far]``, sorted.

    Between two consecutive edges a ray stays inside one cell (or outside the box).

    Args:
        origins: ``(..., 3)``.
        directions: ``(..., 3)`` (any length; depths are in their units).
        near, far: ``(...)`` depth range of each ray.
        aabb: 6 floats, the grid's box.
        resolution: cells per axis ``(R_x, R_y, R_z)``.

    Returns:
        ``(..., sum(resolution) + 5)`` sorted depths from ``near`` to ``far``.
    """
    near = near[..., None]
    far = far[..., None]
    crossings = [near, far]
    for axis in range(3):
        r = int(resolution[axis])
        planes = torch.linspace(
            aabb[axis], aabb[axis + 3], r + 1, device=origins.device, dtype=origins.dtype
        )
        o = origins[..., axis : axis + 1]
        d = directions[..., axis : axis + 1]
        safe_d = torch.where(d == 0, torch.ones_like(d), d)
        t = (planes - o) / safe_d
        t = torch.where(d == 0, far.expand_as(t), t)
        crossings.append(torch.minimum(torch.maximum(t, near), far))
    return torch.sort(torch.cat(crossings, dim=-1), dim=-1).values


def ray_aabb_interval(
    origins: torch.Tensor, directions: torch.Tensor, aabb: Sequence[float]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Depths where rays enter and leave a box (slab method).

    Args:
        origins, directions: ``(n_rays, 3)`` (depths are in units of ``directions``).
        aabb: 6 floats ``[x_min, y_min, z_min, x_max, y_max, z_max]``.

    Returns:
        ``t_in``, ``t_out``: ``(n_rays,)``; ``t_in >= t_out`` for rays that miss the box.
    """
    tiny = torch.finfo(directions.dtype).tiny
    safe = torch.where(directions.abs() < tiny, torch.full_like(directions, tiny), directions)
    inv = 1.0 / safe
    t0 = (origins.new_tensor(aabb[:3]) - origins) * inv
    t1 = (origins.new_tensor(aabb[3:]) - origins) * inv
    return torch.minimum(t0, t1).amax(dim=-1), torch.maximum(t0, t1).amin(dim=-1)


def ray_grid_edges_in_box(
    origins: torch.Tensor,
    directions: torch.Tensor,
    near: torch.Tensor,
    far: torch.Tensor,
    aabb: Sequence[float],
    resolution: Sequence[int],
) -> torch.Tensor:
    """:func:`ray_grid_edges` with only the planes a ray crosses inside the box.

    The same crossings (the same plane positions and arithmetic) inside the ray's part of
    ``[near, far]`` in the box (:func:`grid_edges_between`), so the same segments of
    positive length there; outside the box there are no cells to cut.

    Args:
        origins, directions: ``(n_rays, 3)``; near, far: ``(n_rays,)``.
        aabb: 6 floats, the grid's box; resolution: ``(R_x, R_y, R_z)``.

    Returns:
        ``(n_rays, n_edges)`` sorted depths from ``near`` to ``far``.
    """
    t_in, t_out = ray_aabb_interval(origins, directions, aabb)
    t0 = torch.minimum(torch.maximum(t_in, near), far)
    t1 = torch.maximum(torch.minimum(t_out, far), t0)
    return grid_edges_between(origins, directions, near, far, t0, t1, aabb, resolution)


def grid_edges_between(
    origins: torch.Tensor,
    directions: torch.Tensor,
    near: torch.Tensor,
    far: torch.Tensor,
    t0: torch.Tensor,
    t1: torch.Tensor,
    aabb: Sequence[float],
    resolution: Sequence[int],
) -> torch.Tensor:
    """``near``, ``t0``, the depths in ``[t0, t1]`` where rays cross grid planes, ``t1``,
    ``far``, sorted.

    Each axis gets as many planes as the ray of the batch that crosses the most in its
    interval (the others repeat ``t1``), instead of every plane: cheaper for rays that run
    along an axis, cross a corner or have a short interval. The crossings are
    :func:`ray_grid_edges`'s (the same plane positions and arithmetic).

    Args:
        origins, directions: ``(n_rays, 3)``.
        near, far: ``(n_rays,)`` the ray's depth range; t0, t1: ``(n_rays,)`` the part
            of it to cut, ``near <= t0 <= t1 <= far``.
        aabb: 6 floats, the grid's box; resolution: ``(R_x, R_y, R_z)``.

    Returns:
        ``(n_rays, n_edges)`` sorted depths.
    """
    crossings = [near[:, None], t0[:, None], t1[:, None], far[:, None]]
    for axis in range(3):
        r = int(resolution[axis])
        lo, hi = aabb[axis], aabb[axis + 3]
        planes = torch.linspace(lo, hi, r + 1, device=origins.device, dtype=origins.dtype)
        o = origins[:, axis]
        d = directions[:, axis]
        p0, p1 = o + t0 * d, o + t1 * d
        scale = r / (hi - lo)
        # planes k_lo..k_hi lie between the positions at t0 and t1 (one more each side
        # against rounding; their crossings are clamped to [t0, t1]).
        k_lo = (torch.floor((torch.minimum(p0, p1) - lo) * scale) - 1).clamp(0, r).long()
        k_hi = (torch.ceil((torch.maximum(p0, p1) - lo) * scale) + 1).clamp(0, r).long()
        count = torch.where((d != 0) & (t1 > t0), k_hi - k_lo + 1, torch.zeros_like(k_lo))
        width = int(count.max()) if count.numel() else 0
        if width == 0:
            continue
        k = (k_lo[:, None] + torch.arange(width, device=origins.device)).clamp_(max=r)
        parallel = d == 0
        safe_d = torch.where(parallel, torch.ones_like(d), d)
        t = _lookup(planes, k).sub_(o[:, None]).div_(safe_d[:, None])
        if bool(parallel.any()):
            t = torch.where(parallel[:, None], t1[:, None], t)
        crossings.append(t.clamp_(min=t0[:, None], max=t1[:, None]))
    return torch.sort(torch.cat(crossings, dim=-1), dim=-1).values


def _lookup(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``table[index]`` for a 1-D ``table`` and an index of any shape (``index_select``:
    about twice as fast as advanced indexing on a CPU)."""
    return table.index_select(0, index.reshape(-1)).view(index.shape)


def occupied_bounds(binaries: torch.Tensor, aabb: Sequence[float]) -> tuple[float, ...] | None:
    """The box ``[x_min, y_min, z_min, x_max, y_max, z_max]`` around the occupied cells of
    a grid ``(R_x, R_y, R_z)`` over ``aabb`` (``None`` if no cell is occupied)."""
    occupied = binaries.nonzero()
    if occupied.shape[0] == 0:
        return None
    lo, hi = occupied.amin(dim=0).tolist(), (occupied.amax(dim=0) + 1).tolist()
    size = [(aabb[a + 3] - aabb[a]) / binaries.shape[a] for a in range(3)]
    return (*(aabb[a] + lo[a] * size[a] for a in range(3)),
            *(aabb[a] + hi[a] * size[a] for a in range(3)))  # fmt: skip


def coarse_occupancy(
    binaries: torch.Tensor, aabb: Sequence[float], factor: int
) -> tuple[torch.Tensor, tuple[float, ...]]:
    """A coarser grid, occupied where any of its ``factor**3`` cells is.

    Args:
        binaries: ``(R_x, R_y, R_z)`` bool; aabb: its box.
        factor: cells per side of a coarse cell.

    Returns:
        ``(ceil(R_x / factor), ...)`` bool and the coarse grid's box (the same corner
        ``aabb[:3]``, cells ``factor`` times larger; it extends past ``aabb`` where ``R``
        is not a multiple of ``factor``, with empty cells there).
    """
    coarse = torch.nn.functional.max_pool3d(
        binaries[None, None].float(), kernel_size=factor, stride=factor, ceil_mode=True
    )[0, 0].bool()
    hi = tuple(
        aabb[a] + (aabb[a + 3] - aabb[a]) / binaries.shape[a] * factor * coarse.shape[a]
        for a in range(3)
    )
    return coarse, (*aabb[:3], *hi)


def occupied_segments(
    origins: torch.Tensor,
    directions: torch.Tensor,
    edges: torch.Tensor,
    binaries: torch.Tensor,
    aabb: Sequence[float],
) -> torch.Tensor:
    """Whether each segment between consecutive edges lies in an occupied cell.

    The cell of a segment is the cell of its midpoint (exact for the edges of
    :func:`ray_grid_edges`); segments outside the box are empty.

    Args:
        origins, directions: ``(..., 3)``.
        edges: ``(..., n_edges)`` sorted depths.
        binaries: ``(R_x, R_y, R_z)`` bool occupancy.
        aabb: 6 floats, the grid's box.

    Returns:
        ``(..., n_edges - 1)`` bool.
    """
    res = binaries.shape
    # A border of empty cells around the grid: a cell coordinate clamped into it needs no
    # inside test.
    padded = binaries.new_zeros(res[0] + 2, res[1] + 2, res[2] + 2)
    padded[1:-1, 1:-1, 1:-1] = binaries
    # Flat indices are accumulated in the edges' float dtype where it holds them exactly.
    exact = math.prod(padded.shape) <= 2.0 / torch.finfo(edges.dtype).eps
    mids2 = edges[..., 1:] + edges[..., :-1]  # twice the midpoints
    flat: torch.Tensor | None = None
    for a in range(3):
        # The cell coordinate of the midpoint, (o + t d - lo) / extent * R, one border cell
        # on: ((o - lo) * scale + 1) + 2t * (d * scale / 2), with one fused multiply-add
        # on the (..., n_edges - 1) tensors (per-ray factors are computed once).
        scale = res[a] / (aabb[a + 3] - aabb[a])
        offset = (origins[..., a : a + 1] - aabb[a]) * scale + 1.0
        slope = directions[..., a : a + 1] * (0.5 * scale)
        c = torch.addcmul(offset, mids2, slope).floor_().clamp_(0, res[a] + 1)
        if not exact:
            c = c.long()
        flat = c if flat is None else flat.mul_(res[a] + 2).add_(c)
    assert flat is not None
    return _lookup(padded.reshape(-1), flat.long())


def _resolution3(value: Any) -> tuple[int, int, int]:
    if is_int(value):
        value = (value, value, value)
    try:
        res = tuple(value)
    except TypeError:
        res = ()
    if len(res) != 3 or any(not is_int(r) or r < 1 for r in res):
        raise ValueError(
            f"resolution must be an integer >= 1 or 3 of them [R_x, R_y, R_z]; got {value!r}."
        )
    return res  # type: ignore[return-value]


class OccupancyGrid(TrainingHooks, torch.nn.Module):
    """A binary occupancy grid kept up to date from any field (nerfacc's ``OccGridEstimator``).

    Buffers (saved in ``state_dict``): ``occs`` ``(R_x * R_y * R_z,)`` the moving maximum
    of each cell's opacity, and ``binaries`` ``(R_x, R_y, R_z)`` the occupied cells
    (cell ``(i, j, k)`` spans ``aabb_min + [i, i + 1] * cell_size`` along x, y, z). Until
    the first update every cell counts as occupied.

    Args:
        resolution: cells per axis, an int or ``[R_x, R_y, R_z]``.
        aabb: ``[x_min, y_min, z_min, x_max, y_max, z_max]``.
        ema_decay: decay of the moving maximum per update, in [0, 1].
        threshold: opacity above which a cell is occupied (the mean of ``occs`` is used
            when smaller, as nerfacc).
        update_every: update every this many training steps.
        warmup_steps: before this step every cell is queried; afterwards a quarter of the
            cells at random plus up to as many occupied ones.
        spacing: the step length of the opacity query (world units); ``None``: the
            smallest cell edge.
        query_chunk_size: points per field call in an update.

    Use :meth:`bind_field` once (the renderer's field); :meth:`on_train_step` then updates
    every ``update_every`` steps, or call :meth:`update` directly.
    """

    def __init__(
        self,
        resolution: int | Sequence[int] = 64,
        aabb: Sequence[float] = (-1.0, -1.0, -1.0, 1.0, 1.0, 1.0),
        ema_decay: float = 0.95,
        threshold: float = 0.01,
        update_every: int = 16,
        warmup_steps: int = 256,
        spacing: float | None = None,
        query_chunk_size: int = 65536,
    ) -> None:
        super().__init__()
        self.resolution = _resolution3(resolution)
        self.aabb = check_aabb("aabb", aabb)
        self.ema_decay = check_number("ema_decay", ema_decay, 0, 1)
        self.threshold = check_number("threshold", threshold, 0, 1, high_open=True)
        self.update_every = check_int("update_every", update_every)
        self.warmup_steps = check_int("warmup_steps", warmup_steps, 0)
        self.cell_size = tuple(
            (self.aabb[a + 3] - self.aabb[a]) / self.resolution[a] for a in range(3)
        )
        if spacing is None:
            spacing = min(self.cell_size)
        if not (is_number(spacing) and spacing > 0):
            raise invalid("spacing", spacing, "a finite number > 0 or null")
        self.spacing = float(spacing)
        self.query_chunk_size = check_int("query_chunk_size", query_chunk_size)
        n_cells = math.prod(self.resolution)
        self.register_buffer("occs", torch.zeros(n_cells))
        self.register_buffer("binaries", torch.ones(self.resolution, dtype=torch.bool))
        self._field_ref: tuple[torch.nn.Module, ...] = ()
        self._culling_cache: tuple[torch.Tensor, tuple[int, int, int], Any] | None = None

    @property
    def n_cells(self) -> int:
        return self.occs.shape[0]

    def bind_field(self, field: torch.nn.Module) -> None:
        """Use ``field`` for the updates (kept as a plain reference, not a submodule: its
        parameters stay out of this module's ``state_dict`` and ``parameters()``)."""
        self._field_ref = (field,)

    def param_groups(self) -> list[ParamGroup]:
        """None: the grid has no trainable parameters."""
        return []

    def cell_indices_to_points(self, indices: torch.Tensor, jitter: bool = True) -> torch.Tensor:
        """World points in cells ``(n,)`` → ``(n, 3)``: uniform in the cell, or its centre."""
        rx, ry, rz = self.resolution
        ijk = torch.stack((indices // (ry * rz), (indices // rz) % ry, indices % rz), dim=-1)
        offset = torch.rand(ijk.shape, device=indices.device) if jitter else 0.5
        lo = torch.tensor(self.aabb[:3], device=indices.device)
        size = torch.tensor(self.cell_size, device=indices.device)
        return lo + (ijk.to(lo.dtype) + offset) * size

    def _cells_to_update(self, step: int) -> torch.Tensor:
        device = self.occs.device
        if step < self.warmup_steps:
            return torch.arange(self.n_cells, device=device)
        n = self.n_cells // 4
        uniform = torch.randint(self.n_cells, (n,), device=device)
        occupied = torch.nonzero(self.binaries.reshape(-1))[:, 0]
        if occupied.shape[0] > n:
            occupied = occupied[torch.randint(occupied.shape[0], (n,), device=device)]
        return torch.cat((uniform, occupied))

    @torch.no_grad()
    def update(self, step: int, field: torch.nn.Module | None = None) -> None:
        """Query the field in the cells chosen for ``step`` and refresh ``occs``/``binaries``."""
        if field is None:
            if not self._field_ref:
                raise RuntimeError(
                    "OccupancyGrid has no field to query: call bind_field(field) first."
                )
            field = self._field_ref[0]
        indices = self._cells_to_update(step)
        points = self.cell_indices_to_points(indices)
        values = query_density(field, points, self.spacing, self.query_chunk_size)
        self.occs = ema_update(self.occs, indices, values, self.ema_decay)
        threshold = torch.clamp(self.occs.mean(), max=self.threshold)
        self.binaries = (self.occs > threshold).reshape(self.resolution)

    def on_train_step(self, step: int, n_iter: int) -> None:
        """Update every ``update_every`` steps (step 0 included)."""
        if step % self.update_every == 0:
            self.update(step)

    def occupied_fraction(self) -> float:
        return float(self.binaries.float().mean())

    def culling_grids(
        self, factor: int
    ) -> tuple[tuple[float, ...] | None, torch.Tensor, tuple[float, ...]]:
        """The box around the occupied cells (:func:`occupied_bounds`) and the coarse grid
        of ``factor`` with its box (:func:`coarse_occupancy`), computed once per state of
        ``binaries``: a sampler needs them for every chunk of rays, the grid changes only
        in :meth:`update` (a new tensor) or by an in-place write (``load_state_dict``: its
        version counter and its count of occupied cells change)."""
        b = self.binaries
        key = (b._version, factor, int(b.sum()))
        cache = self._culling_cache
        if cache is not None and cache[0] is b and cache[1] == key:
            return cache[2]
        value = (occupied_bounds(b, self.aabb), *coarse_occupancy(b, self.aabb, factor))
        self._culling_cache = (b, key, value)
        return value


class OccupancyResampler(Resampler):
    """Samples only in occupied cells of an :class:`OccupancyGrid` (see the module docstring).

    Args:
        grid: the occupancy grid (a submodule: its buffers are saved with the resampler).
        n_pts_per_ray: points per ray of the returned bundle.
        stratified: a random quantile per stratum in training, else stratum centres.
        stratified_test: the same in evaluation.
        coarse_factor: cells per side of the cells of a coarse culling grid (``1``: none).
            Speed only, the samples are the same: rays are first cut at the coarse grid's
            planes (:func:`coarse_occupancy`, occupied where any of its cells is), and only
            rays that cross an occupied coarse cell are cut at the grid's own planes,
            between their first and last occupied coarse cell.

    ``forward(input_ray_bundle, ray_weights=None)``: only the rays and the depth range
    ``[lengths[..., 0], lengths[..., -1]]`` of the input are used. Returns ``(bundle,
    aux)``: sorted lengths ``(..., n_pts_per_ray)`` and ``aux = {"occupancy_hit": (..., 1),
    Resampler.ACTIVE_RAYS: (..., 1)}``: 1.0 (float), resp. true (bool), where the ray
    crosses an occupied cell (rays that cross none need no field evaluation).

    Hooks: :meth:`on_train_step` updates the grid; bind the field with :meth:`bind_field`.
    """

    needs_field_weights: ClassVar[bool] = False

    def __init__(
        self,
        grid: OccupancyGrid,
        n_pts_per_ray: int = 64,
        stratified: bool = True,
        stratified_test: bool = False,
        coarse_factor: int = 4,
    ) -> None:
        super().__init__()
        if not isinstance(grid, OccupancyGrid):
            raise ValueError(f"grid must be an OccupancyGrid; got {type(grid).__name__}.")
        self.grid = grid
        self.n_pts_per_ray = check_int("n_pts_per_ray", n_pts_per_ray)
        self.stratified = check_bool("stratified", stratified)
        self.stratified_test = check_bool("stratified_test", stratified_test)
        self.coarse_factor = check_int("coarse_factor", coarse_factor)

    def bind_field(self, field: torch.nn.Module) -> None:
        """The field the grid queries in its updates (:meth:`OccupancyGrid.bind_field`)."""
        self.grid.bind_field(field)

    def _coarse_cull(
        self,
        origins: torch.Tensor,
        directions: torch.Tensor,
        near: torch.Tensor,
        far: torch.Tensor,
        t0: torch.Tensor,
        t1: torch.Tensor,
        rays: torch.Tensor,
        coarse: torch.Tensor,
        coarse_aabb: tuple[float, ...],
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The rays (of ``rays``) that cross an occupied cell of the coarse grid ``coarse``
        over ``coarse_aabb`` (:meth:`OccupancyGrid.culling_grids`) within ``[t0, t1]``, and
        their depths ``(n,)`` of the first entry into and the last exit from one."""
        o, d, a, b, n, f = (
            x.index_select(0, rays) for x in (origins, directions, t0, t1, near, far)
        )
        edges = grid_edges_between(o, d, n, f, a, b, coarse_aabb, coarse.shape)
        starts, ends = edges[:, :-1], edges[:, 1:]
        occupied = occupied_segments(o, d, edges, coarse, coarse_aabb) & (ends > starts)
        inf = torch.full_like(starts, torch.inf)
        first = torch.where(occupied, starts, inf).amin(dim=-1)
        last = torch.where(occupied, ends, -inf).amax(dim=-1)
        keep = occupied.any(dim=-1).nonzero()[:, 0]
        return rays[keep], first.index_select(0, keep), last.index_select(0, keep)

    def param_groups(self) -> list[ParamGroup]:
        return []

    def on_train_step(self, step: int, n_iter: int) -> None:
        self.grid.on_train_step(step, n_iter)

    def forward(
        self,
        input_ray_bundle: RayBundle,
        ray_weights: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> tuple[RayBundle, dict[str, torch.Tensor]]:
        lengths = input_ray_bundle.lengths
        lead, dtype = lengths.shape[:-1], lengths.dtype
        with torch.no_grad():
            origins = input_ray_bundle.origins.to(dtype).reshape(-1, 3)
            directions = input_ray_bundle.directions.to(dtype).reshape(-1, 3)
            near = lengths[..., 0].reshape(-1)
            far = lengths[..., -1].reshape(-1)
            stratified = self.stratified if self.training else self.stratified_test
            u = stratified_quantiles(lead, self.n_pts_per_ray, stratified,
                                     device=lengths.device, dtype=dtype)  # fmt: skip
            # u = 0 would map to the ray's near end even if it is empty.
            u = u.clamp(min=torch.finfo(u.dtype).eps).reshape(-1, self.n_pts_per_ray)
            # Rays that hit nothing: evenly spread over [near, far].
            samples = near[:, None] + u * (far - near)[:, None]
            hit = torch.zeros_like(near, dtype=torch.bool)
            # Only rays whose [near, far] meets the box around the occupied cells can hit
            # one ...
            bounds, coarse, coarse_aabb = self.grid.culling_grids(self.coarse_factor)
            if bounds is None:
                t0 = t1 = near
            else:
                t_in, t_out = ray_aabb_interval(origins, directions, bounds)
                t0, t1 = torch.maximum(t_in, near), torch.minimum(t_out, far)
            rays = (t0 < t1).nonzero()[:, 0]
            # ... and only those that cross an occupied coarse cell, between the first
            # and the last of them.
            if rays.numel() > 0 and self.coarse_factor > 1:
                rays, t0, t1 = self._coarse_cull(origins, directions, near, far, t0, t1, rays,
                                                 coarse, coarse_aabb)  # fmt: skip
            else:
                t0, t1 = t0.index_select(0, rays), t1.index_select(0, rays)
            if rays.numel() > 0:
                o, d, n, f = (x.index_select(0, rays) for x in (origins, directions, near, far))
                edges = grid_edges_between(o, d, n, f, t0, t1, self.grid.aabb,
                                           self.grid.resolution)  # fmt: skip
                occupied = occupied_segments(o, d, edges, self.grid.binaries, self.grid.aabb)
                weights = (edges[:, 1:] - edges[:, :-1]).mul_(occupied)  # occupied lengths
                ray_hit = (weights > 0).any(dim=-1)
                hit[rays] = ray_hit
                sel = ray_hit.nonzero()[:, 0]
                if sel.shape[0] < rays.shape[0]:
                    edges, weights = edges.index_select(0, sel), weights.index_select(0, sel)
                    rays = rays.index_select(0, sel)
                inverted = invert_cdf(edges, weights, u.index_select(0, rays), eps=0.0,
                                      exact_cumsum=False)  # fmt: skip
                samples.index_copy_(0, rays, inverted)
            # (sorted already: increasing quantiles through a non-decreasing inverse CDF)
            samples = samples.reshape(*lead, self.n_pts_per_ray)
            hit = hit.reshape(*lead, 1)
        bundle = input_ray_bundle._replace(lengths=samples)
        return bundle, {"occupancy_hit": hit.to(lengths.dtype), self.ACTIVE_RAYS: hit}
