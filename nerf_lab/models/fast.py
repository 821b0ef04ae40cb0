"""A fast radiance field: dense voxel grids, a tiny colour MLP, and skipping of empty space.

The field (DVGO-style, Sun et al. 2022) stores a raw density and ``n_features`` colour
features at the ``resolution**3`` vertices of a regular grid over the cube
``[-bbox, bbox]**3``, interpolates them trilinearly and decodes the colour with a small
MLP fed the interpolated features and a low-frequency embedding of the view direction.

Everything that makes it fast on a CPU is in the evaluation order, not in the function:

* Trilinear interpolation is a weighted sum of 8 rows of a channel-last ``(R**3, C)``
  table, done by ``F.embedding_bag`` (several times faster than ``F.grid_sample`` on CPU,
  forward and backward). :func:`trilinear_interpolate` equals ``F.grid_sample(...,
  align_corners=True)`` on the ``(1, C, R, R, R)`` view of the table.
* Empty-space skipping: an occupancy grid marks each grid cell whose 8 corner densities
  are all below ``occupancy_threshold``. Trilinear interpolation is a convex combination
  of the corners and the density activation is monotonic, so every point of such a cell
  has a density below the threshold; those points (and points outside the box) get
  density exactly 0 without touching the grids. The occupancy grid is derived from the
  density grid and recomputed whenever that parameter changes (tracked by its version
  counter), so the field stays a pure function of its parameters.
* Early ray termination: densities are first computed without a graph; the per-point
  transmittance ``T_i = prod_{j<i} (1 - alpha_j)`` then selects the points that matter.
  Colours are decoded only where ``T_i > termination_threshold`` and ``alpha_i T_i >
  color_threshold`` (elsewhere they are 0, which changes a composited colour by at most
  ``termination_threshold + n_pts_per_ray * color_threshold``); densities are always the
  exact values, and get gradients only where ``T_i > termination_threshold``.

Densities are opacities ``alpha = 1 - exp(-sigma * delta)`` with ``sigma =
exp(min(raw + log(density_init), MAX_LOG_DENSITY))`` (raw starts at 0) and ``delta`` the
world-space sample spacing, so one field works with any number of points per ray. The
exponential (as in Instant-NGP) lets Adam's bounded steps reach both empty space and
opaque surfaces within a few dozen updates, which a softplus does not.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from nerf_lab.encodings import HarmonicEmbedding
from nerf_lab.raymarchers import transmittance
from nerf_lab.raysamplers import RayBundle

__all__ = [
    "FastRadianceField",
    "occupancy_from_density",
    "point_occupancy",
    "ray_box_interval",
    "sampled_total_variation",
    "total_variation",
    "transmittance",
    "trilinear_corners",
    "trilinear_interpolate",
    "world_to_voxel",
]


# ---------------------------------------------------------------------------------------
# Pure functions
# ---------------------------------------------------------------------------------------
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
    frac = v - v0
    i0 = v0.long()
    base = (i0[:, 2] * r + i0[:, 1]) * r + i0[:, 0]
    offsets = torch.tensor(
        [(dz * r + dy) * r + dx for dz in (0, 1) for dy in (0, 1) for dx in (0, 1)],
        device=voxels.device,
    )
    rows = base[:, None] + offsets
    fx, fy, fz = frac.unbind(-1)
    wx = torch.stack((1.0 - fx, fx), dim=-1)
    wy = torch.stack((1.0 - fy, fy), dim=-1)
    wz = torch.stack((1.0 - fz, fz), dim=-1)
    weights = (wz[:, :, None, None] * wy[:, None, :, None] * wx[:, None, None, :]).reshape(-1, 8)
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


def occupancy_from_density(raw_density: torch.Tensor, raw_threshold: float) -> torch.Tensor:
    """Cells with at least one corner at or above ``raw_threshold``.

    Args:
        raw_density: ``(R, R, R)`` raw grid values (``(z, y, x)`` layout).
        raw_threshold: threshold on the raw values.

    Returns:
        ``((R - 1)**3,)`` bool, flat over cells ``(cz * (R - 1) + cy) * (R - 1) + cx``.
    """
    occ = raw_density >= raw_threshold
    occ = occ[1:] | occ[:-1]
    occ = occ[:, 1:] | occ[:, :-1]
    occ = occ[:, :, 1:] | occ[:, :, :-1]
    return occ.reshape(-1)


def point_occupancy(voxels: torch.Tensor, occupancy: torch.Tensor, resolution: int) -> torch.Tensor:
    """Whether each point lies inside the grid and in an occupied cell.

    Args:
        voxels: ``(M, 3)`` voxel coordinates.
        occupancy: ``((R - 1)**3,)`` bool from :func:`occupancy_from_density`.

    Returns:
        ``(M,)`` bool.
    """
    n = resolution - 1
    inside = ((voxels >= 0.0) & (voxels <= float(n))).all(dim=-1)
    cell = voxels.floor().long().clamp_(0, n - 1)
    cell_index = (cell[:, 2] * n + cell[:, 1]) * n + cell[:, 0]
    return inside & occupancy[cell_index]


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


#: Raw densities are clamped here before the exponential (no overflow, no NaN gradient).
MAX_LOG_DENSITY = 20.0


def _point_spacing(
    lengths: torch.Tensor, directions: torch.Tensor, flat_index: torch.Tensor, default: float
) -> torch.Tensor:
    """:func:`nerf_lab.models.nerf.sample_spacing` at some points only.

    Args:
        lengths: ``(n_rays, n_pts_per_ray)``; directions: ``(n_rays, 3)``.
        flat_index: ``(M,)`` indices into ``lengths.reshape(-1)``.
        default: the spacing used when rays have a single point.

    Returns:
        ``(M,)`` world-space spacings.
    """
    n_pts = lengths.shape[-1]
    if n_pts < 2:
        return lengths.new_full(flat_index.shape, default)
    flat = lengths.reshape(-1)
    last = (flat_index % n_pts) == n_pts - 1
    lo = torch.where(last, flat_index - 1, flat_index)
    ray = torch.div(flat_index, n_pts, rounding_mode="floor")
    return (flat[lo + 1] - flat[lo]) * directions.norm(dim=-1)[ray]


# ---------------------------------------------------------------------------------------
# Validation helpers
# ---------------------------------------------------------------------------------------
def _int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}.")
    return value


def _float(name: str, value: Any, minimum: float, *, strict: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise ValueError(f"{name} must be a number; got {value!r}.")
    ok = value > minimum if strict else value >= minimum
    if not ok or math.isinf(value):
        raise ValueError(f"{name} must be {'>' if strict else '>='} {minimum}; got {value!r}.")
    return float(value)


# ---------------------------------------------------------------------------------------
# Module
# ---------------------------------------------------------------------------------------
class FastRadianceField(torch.nn.Module):
    """Dense-voxel-grid radiance field: ``forward(ray_bundle)`` → ``(densities, colors)``.

    Args:
        resolution: grid vertices per side ``R`` (the voxel size is ``2 bbox / (R - 1)``).
        n_features: colour features per vertex.
        n_hidden_neurons: width of the colour MLP's hidden layer; 0 decodes the colour
            directly as ``sigmoid(features[:3])`` (view-independent; needs
            ``n_features >= 3``).
        n_harmonic_functions_dir: frequencies of the view-direction embedding (0: none).
        bbox: half-size of the cube ``[-bbox, bbox]**3`` the grids cover; outside it the
            density is 0.
        density_init: initial density ``sigma`` (per unit length) everywhere.
        occupancy_threshold: density ``sigma`` below which a cell counts as empty
            (``0`` disables the skipping of empty cells, not of points outside the box).
        termination_threshold: transmittance below which a point gets no colour and no
            density gradient (``0`` disables early ray termination).
        color_threshold: compositing weight ``alpha_i T_i`` at or below which a point gets
            no colour.
        grid_lr_scale: the grids' learning rate relative to the MLP's, in
            :meth:`param_groups`.
        tv_weight: weight of the total-variation loss on the density grid
            (:meth:`extra_losses`); 0 disables it.
        tv_feature_weight: the same on the colour feature grid (smoother colours, but
            on a CPU the exact term roughly doubles the step time at ``n_features=8``).
        tv_feature_samples: if > 0, estimate the feature TV from this many random
            vertices per step (:func:`sampled_total_variation`) instead of all of them
            (at 65536 samples the fast preset's CPU step is still a third slower).

    ``forward`` returns densities ``(..., n_pts_per_ray, 1)`` (opacities in [0, 1]) and
    colours ``(..., n_pts_per_ray, 3)`` in [0, 1] for a bundle of leading shape ``(...)``.
    Rays must be complete (all their points in one call), as :class:`ImplicitRenderer`
    guarantees, because early termination looks along each ray.
    """

    def __init__(
        self,
        resolution: int = 128,
        n_features: int = 3,
        n_hidden_neurons: int = 0,
        n_harmonic_functions_dir: int = 2,
        bbox: float = 1.0,
        density_init: float = 0.02,
        occupancy_threshold: float = 1e-2,
        termination_threshold: float = 1e-4,
        color_threshold: float = 1e-5,
        grid_lr_scale: float = 100.0,
        tv_weight: float = 0.0,
        tv_feature_weight: float = 0.0,
        tv_feature_samples: int = 0,
    ) -> None:
        super().__init__()
        self.resolution = _int("resolution", resolution, 2)
        self.n_features = _int("n_features", n_features, 1)
        self.n_hidden_neurons = _int("n_hidden_neurons", n_hidden_neurons, 0)
        self.n_harmonic_functions_dir = _int(
            "n_harmonic_functions_dir", n_harmonic_functions_dir, 0
        )
        self.bbox = _float("bbox", bbox, 0.0, strict=True)
        self.density_init = _float("density_init", density_init, 0.0, strict=True)
        self.occupancy_threshold = _float(
            "occupancy_threshold", occupancy_threshold, 0.0, strict=False
        )
        self.termination_threshold = _float(
            "termination_threshold", termination_threshold, 0.0, strict=False
        )
        if self.termination_threshold >= 1.0:
            raise ValueError(f"termination_threshold must be < 1; got {termination_threshold!r}.")
        self.color_threshold = _float("color_threshold", color_threshold, 0.0, strict=False)
        if self.color_threshold >= 1.0:
            raise ValueError(f"color_threshold must be < 1; got {color_threshold!r}.")
        self.grid_lr_scale = _float("grid_lr_scale", grid_lr_scale, 0.0, strict=True)
        self.tv_weight = _float("tv_weight", tv_weight, 0.0, strict=False)
        self.tv_feature_weight = _float("tv_feature_weight", tv_feature_weight, 0.0, strict=False)
        self.tv_feature_samples = _int("tv_feature_samples", tv_feature_samples, 0)
        if self.n_hidden_neurons == 0 and self.n_features < 3:
            raise ValueError(
                f"n_hidden_neurons=0 decodes colours from the first 3 features, so n_features "
                f"must be >= 3; got {n_features!r}."
            )

        r = self.resolution
        # sigma = exp(raw + shift); raw starts at 0, i.e. sigma = density_init.
        self.shift = math.log(self.density_init)
        self.density = torch.nn.Parameter(torch.zeros(r**3, 1))
        self.features = torch.nn.Parameter(torch.empty(r**3, self.n_features).uniform_(-0.1, 0.1))
        if self.n_hidden_neurons > 0:
            self.dir_embedding = (
                HarmonicEmbedding(self.n_harmonic_functions_dir, omega0=1.0, append_input=True)
                if self.n_harmonic_functions_dir > 0
                else None
            )
            dir_dim = self.dir_embedding.get_output_dim(3) if self.dir_embedding is not None else 3
            self.color_mlp: torch.nn.Module | None = torch.nn.Sequential(
                torch.nn.Linear(self.n_features + dir_dim, self.n_hidden_neurons),
                torch.nn.ReLU(),
                torch.nn.Linear(self.n_hidden_neurons, 3),
            )
        else:
            self.dir_embedding = None
            self.color_mlp = None
        self._occupancy_cache: tuple[tuple[int, int, str, float], torch.Tensor] | None = None
        #: point counts of the last forward call (points, occupied, live, colored).
        self.last_counts: dict[str, int] = {}

    # -- occupancy -----------------------------------------------------------------------
    @property
    def raw_occupancy_threshold(self) -> float:
        """The occupancy threshold on raw grid values (``-inf`` when skipping is off)."""
        if self.occupancy_threshold <= 0.0:
            return -math.inf
        return math.log(self.occupancy_threshold) - self.shift

    def occupancy(self) -> torch.Tensor:
        """``((R - 1)**3,)`` bool cell occupancy of the current density grid (cached).

        The cache is keyed on the density parameter's storage, version counter and sum, so
        any change of the grid (an optimizer step, ``load_state_dict``, a write through
        ``.data``, which bypasses the version counter, as fused Adam does) refreshes it.
        """
        d = self.density
        key = (d.data_ptr(), d._version, str(d.device), float(d.detach().sum()))
        if self._occupancy_cache is not None and self._occupancy_cache[0] == key:
            return self._occupancy_cache[1]
        r = self.resolution
        with torch.no_grad():
            occ = occupancy_from_density(d.detach().view(r, r, r), self.raw_occupancy_threshold)
        self._occupancy_cache = (key, occ)
        return occ

    def invalidate_cache(self) -> None:
        """Forget the cached occupancy grid (it is recomputed on the next call)."""
        self._occupancy_cache = None

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        self.invalidate_cache()
        super()._load_from_state_dict(*args, **kwargs)

    def occupied_fraction(self) -> float:
        """Fraction of grid cells that are occupied (a diagnostic)."""
        return float(self.occupancy().float().mean())

    # -- field ---------------------------------------------------------------------------
    def _sigma(self, raw: torch.Tensor) -> torch.Tensor:
        return torch.exp((raw + self.shift).clamp(max=MAX_LOG_DENSITY))

    def _colors(
        self, feats: torch.Tensor, directions: torch.Tensor, ray_index: torch.Tensor
    ) -> torch.Tensor:
        """Colours ``(M, 3)`` of points with features ``(M, F)`` on rays ``ray_index``."""
        if self.color_mlp is None:
            return torch.sigmoid(feats[:, :3])
        if feats.shape[0] == 0:  # (the harmonic embedding cannot take empty inputs)
            return feats.new_zeros(0, 3) + 0.0 * self.color_mlp[2].bias
        dirs = F.normalize(directions, dim=-1)
        if self.dir_embedding is not None:
            dirs = self.dir_embedding(dirs)
        first = self.color_mlp[0]
        nf = self.n_features
        # The direction part of the first layer is computed once per ray.
        per_ray = F.linear(dirs, first.weight[:, nf:], first.bias)
        hidden = F.linear(feats, first.weight[:, :nf]) + per_ray[ray_index]
        return torch.sigmoid(self.color_mlp[2](torch.relu(hidden)))

    def forward(self, ray_bundle: RayBundle, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Densities ``(..., n_pts_per_ray, 1)`` and colours ``(..., n_pts_per_ray, 3)``."""
        lengths = ray_bundle.lengths
        lead, n_pts = lengths.shape[:-1], lengths.shape[-1]
        r = self.resolution
        origins = ray_bundle.origins.reshape(-1, 3)
        directions = ray_bundle.directions.reshape(-1, 3)
        flat_lengths = lengths.reshape(-1, n_pts)
        n_points = flat_lengths.numel()
        # Only points whose depth lies in (a slightly widened) ray-box interval are looked
        # at; the exact inside test is point_occupancy's.
        near, far = ray_box_interval(origins, directions, self.bbox)
        in_box = (flat_lengths >= near[:, None]) & (flat_lengths <= far[:, None])
        cand = in_box.reshape(-1).nonzero().squeeze(1)
        cand_ray = torch.div(cand, n_pts, rounding_mode="floor")
        points = origins[cand_ray] + flat_lengths.reshape(-1)[cand, None] * directions[cand_ray]
        voxels = world_to_voxel(points, self.bbox, r)
        occupied = point_occupancy(voxels, self.occupancy(), r)
        occ_local = occupied.nonzero().squeeze(1)
        idx = cand[occ_local]
        rows, weights = trilinear_corners(voxels[occ_local], r)
        spacing = _point_spacing(flat_lengths, directions, idx, 2.0 * self.bbox / (r - 1))

        # Pass 1: exact densities of the occupied points, without a graph.
        with torch.no_grad():
            alpha_occ = 1.0 - torch.exp(
                -self._sigma(trilinear_interpolate(self.density, rows, weights))[:, 0] * spacing
            )
            alphas = flat_lengths.new_zeros(n_points).index_copy_(0, idx, alpha_occ)
            trans = transmittance(alphas.view(-1, n_pts)).reshape(-1)[idx]
            live = trans > self.termination_threshold
            colored = live & (alpha_occ * trans > self.color_threshold)
        self.last_counts = {
            "points": n_points,
            "occupied": int(idx.numel()),
            "live": int(live.sum()),
            "colored": int(colored.sum()),
        }

        # Pass 2: the graph, only for points whose light can reach the camera.
        needs_grad = torch.is_grad_enabled() and self.density.requires_grad
        if needs_grad:
            live_local = live.nonzero().squeeze(1)
            raw_live = trilinear_interpolate(self.density, rows[live_local], weights[live_local])[
                :, 0
            ]
            alpha_live = 1.0 - torch.exp(-self._sigma(raw_live) * spacing[live_local])
            densities = alphas.index_copy(0, idx[live_local], alpha_live)
        else:
            densities = alphas

        col_local = colored.nonzero().squeeze(1)
        col_idx = idx[col_local]
        feats = trilinear_interpolate(self.features, rows[col_local], weights[col_local])
        rgb = self._colors(feats, directions, torch.div(col_idx, n_pts, rounding_mode="floor"))
        colors = flat_lengths.new_zeros(n_points, 3).index_copy(0, col_idx, rgb.to(lengths.dtype))
        return densities.view(*lead, n_pts, 1), colors.view(*lead, n_pts, 3)

    # -- trainer hooks -------------------------------------------------------------------
    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        """Adam parameter groups: the grids at ``lr * grid_lr_scale``, the MLP at ``lr``."""
        groups: list[dict[str, Any]] = [
            {"params": [self.density, self.features], "lr": lr * self.grid_lr_scale}
        ]
        if self.color_mlp is not None:
            groups.append({"params": list(self.color_mlp.parameters()), "lr": lr})
        return groups

    def extra_losses(self) -> dict[str, torch.Tensor]:
        """Weighted total variation of the raw density grid (``"tv"``, if ``tv_weight >
        0``) and of the feature grid (``"tv_feature"``, if ``tv_feature_weight > 0``)."""
        r = self.resolution
        out = {}
        if self.tv_weight > 0.0:
            out["tv"] = self.tv_weight * total_variation(self.density.view(r, r, r, 1))
        if self.tv_feature_weight > 0.0:
            tv = (
                total_variation(self.features.view(r, r, r, self.n_features))
                if not self.tv_feature_samples
                else sampled_total_variation(self.features, (r, r, r), self.tv_feature_samples)
            )
            out["tv_feature"] = self.tv_feature_weight * tv
        return out
