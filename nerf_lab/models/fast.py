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
* Renders (no autograd) go through blocks of whole rays (:data:`FastRadianceField.RENDER_BLOCK`
  points); per-point arithmetic runs on one contiguous tensor per axis
  (:func:`~nerf_lab.models.grid.voxel_cells`, :func:`~nerf_lab.models.grid.cell_corners`),
  and nothing is gathered when every point is occupied (the occupancy sampler's bundles)
  or coloured.

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
from nerf_lab.models.base import RadianceField
from nerf_lab.models.grid import (
    cell_corners,
    sampled_total_variation,
    total_variation,
    trilinear_interpolate,
    voxel_cells,
    world_to_voxel,
)
from nerf_lab.models.nerf import sample_spacing
from nerf_lab.models.occupancy import occupancy_from_density
from nerf_lab.raymarchers import transmittance
from nerf_lab.raysamplers import RayBundle
from nerf_lab.validate import check_int, check_number

__all__ = ["FastRadianceField"]


#: Raw densities are clamped here before the exponential (no overflow, no NaN gradient).
MAX_LOG_DENSITY = 20.0


def _take(x: torch.Tensor, index: torch.Tensor | None) -> torch.Tensor:
    """Rows ``index`` of ``x`` (all of them for ``None``)."""
    return x if index is None else x.index_select(0, index)


# ---------------------------------------------------------------------------------------
# Module
# ---------------------------------------------------------------------------------------
class FastRadianceField(RadianceField):
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
            (:meth:`loss_terms`); 0 disables it.
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

    #: Points per block of whole rays evaluated at a time without autograd (renders): each
    #: block is evaluated exactly as a call on its rays alone, with bounded memory. On 2
    #: CPU cores 131072 was the fastest of 16384 ... 2 M (32768: 1.4-1.8x slower, whole
    #: chunks of 524288: ~1.6x; per-op overhead and thread use against cache misses).
    RENDER_BLOCK = 131072
    #: Above this fraction of coloured points among the occupied ones, every occupied
    #: point is decoded and the others are zeroed (cheaper than gathering the others).
    DECODE_ALL_FRACTION = 0.9

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
        self.resolution = check_int("resolution", resolution, 2)
        self.n_features = check_int("n_features", n_features)
        self.n_hidden_neurons = check_int("n_hidden_neurons", n_hidden_neurons, 0)
        self.n_harmonic_functions_dir = check_int(
            "n_harmonic_functions_dir", n_harmonic_functions_dir, 0
        )
        self.bbox = check_number("bbox", bbox, 0, low_open=True)
        self.density_init = check_number("density_init", density_init, 0, low_open=True)
        self.occupancy_threshold = check_number("occupancy_threshold", occupancy_threshold, 0)
        self.termination_threshold = check_number(
            "termination_threshold", termination_threshold, 0, 1, high_open=True
        )
        self.color_threshold = check_number(
            "color_threshold", color_threshold, 0, 1, high_open=True
        )
        self.grid_lr_scale = check_number("grid_lr_scale", grid_lr_scale, 0, low_open=True)
        self.tv_weight = check_number("tv_weight", tv_weight, 0)
        self.tv_feature_weight = check_number("tv_feature_weight", tv_feature_weight, 0)
        self.tv_feature_samples = check_int("tv_feature_samples", tv_feature_samples, 0)
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
        self,
        rows: torch.Tensor,
        weights: torch.Tensor,
        directions: torch.Tensor,
        ray_index: torch.Tensor,
    ) -> torch.Tensor:
        """Colours ``(M, 3)`` of points with trilinear ``rows`` and ``weights`` ``(M, 8)``
        (:func:`~nerf_lab.models.grid.cell_corners`) on rays ``ray_index`` ``(M,)`` of
        ``directions``."""
        feats = trilinear_interpolate(self.features, rows, weights)
        if self.color_mlp is None:
            return torch.sigmoid(feats[:, :3])
        if rows.shape[0] == 0:  # (the harmonic embedding cannot take empty inputs)
            return directions.new_zeros(0, 3) + 0.0 * self.color_mlp[2].bias
        dirs = F.normalize(directions, dim=-1)
        if self.dir_embedding is not None:
            dirs = self.dir_embedding(dirs)
        first, last = self.color_mlp[0], self.color_mlp[2]
        nf = self.n_features
        # The direction part of the first layer is computed once per ray; each point's
        # feature part is accumulated onto its ray's row in place (addmm_), and the
        # activations are in place too: the same numbers as the plain layers, with a
        # third of the memory traffic.
        per_ray = F.linear(dirs, first.weight[:, nf:], first.bias)
        hidden = per_ray.index_select(0, ray_index).addmm_(feats, first.weight[:, :nf].t())
        return torch.addmm(last.bias, hidden.relu_(), last.weight.t()).sigmoid_()

    def forward(self, ray_bundle: RayBundle, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Densities ``(..., n_pts_per_ray, 1)`` and colours ``(..., n_pts_per_ray, 3)``."""
        lengths = ray_bundle.lengths
        lead, n_pts = lengths.shape[:-1], lengths.shape[-1]
        origins = ray_bundle.origins.reshape(-1, 3)
        directions = ray_bundle.directions.reshape(-1, 3)
        flat_lengths = lengths.reshape(-1, n_pts)
        n_rays = flat_lengths.shape[0]
        step = max(1, self.RENDER_BLOCK // max(n_pts, 1))
        occupancy = self.occupancy()
        if torch.is_grad_enabled() or n_rays <= step:
            densities, colors, counts = self._evaluate(origins, directions, flat_lengths, occupancy)
        else:  # renders: blocks of whole rays (every ray's values depend on it alone)
            densities = flat_lengths.new_empty(n_rays, n_pts)
            colors = flat_lengths.new_empty(n_rays, n_pts, 3)
            counts = dict.fromkeys(("points", "occupied", "live", "colored"), 0)
            for s in range(0, n_rays, step):
                rays = slice(s, s + step)
                d, c, n = self._evaluate(
                    origins[rays], directions[rays], flat_lengths[rays], occupancy
                )
                densities[rays], colors[rays] = d, c
                counts = {k: counts[k] + n[k] for k in counts}
        self.last_counts = counts
        return densities.view(*lead, n_pts, 1), colors.view(*lead, n_pts, 3)

    def _evaluate(
        self,
        origins: torch.Tensor,
        directions: torch.Tensor,
        lengths: torch.Tensor,
        occupancy: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, int]]:
        """Densities ``(n_rays, n_pts_per_ray)``, colours ``(n_rays, n_pts_per_ray, 3)``
        and the point counts of rays ``origins``, ``directions`` ``(n_rays, 3)`` with
        depths ``lengths`` ``(n_rays, n_pts_per_ray)``, given the cell ``occupancy``
        (:meth:`occupancy`)."""
        n_pts = lengths.shape[-1]
        r = self.resolution
        n_points = lengths.numel()
        # Every point's voxel coordinates and cell, one contiguous (n_points,) tensor per
        # axis; then only the points in occupied cells (inside the box) are looked at.
        # When all are (the occupancy sampler's bundles), nothing is gathered.
        voxels = [
            world_to_voxel(
                origins[:, a, None] + lengths * directions[:, a, None], self.bbox, r
            ).reshape(-1)
            for a in range(3)
        ]
        inside, cells = voxel_cells(voxels, r)
        cx, cy, cz = (c.long() for c in cells)
        occupied = inside & occupancy.index_select(0, (cz * (r - 1) + cy) * (r - 1) + cx)
        idx = occupied.nonzero().squeeze(1)
        sel = None if idx.shape[0] == n_points else idx
        cells = [_take(c, sel) for c in cells]
        fracs = [_take(v, sel) - c for v, c in zip(voxels, cells, strict=True)]
        if n_pts < 2:
            spacing = lengths.new_full((idx.shape[0],), 2.0 * self.bbox / (r - 1))
        else:
            spacing = _take(sample_spacing(lengths, directions).reshape(-1), sel)
        rows, weights = cell_corners(cells, fracs, r)

        # Pass 1: exact densities of the occupied points, without a graph.
        with torch.no_grad():
            raw = trilinear_interpolate(self.density, rows, weights)[:, 0]
            alpha_occ = 1.0 - torch.exp(-self._sigma(raw) * spacing)
            alphas = alpha_occ
            if sel is not None:
                alphas = lengths.new_zeros(n_points).index_copy_(0, idx, alpha_occ)
            trans = _take(transmittance(alphas.view(-1, n_pts)).reshape(-1), sel)
            live = trans > self.termination_threshold
            colored = live & (alpha_occ * trans > self.color_threshold)
        counts = {
            "points": n_points,
            "occupied": int(idx.numel()),
            "live": int(live.sum()),
            "colored": int(colored.sum()),
        }

        # Pass 2: the graph, only for points whose light can reach the camera.
        if torch.is_grad_enabled() and self.density.requires_grad:
            live_local = live.nonzero().squeeze(1)
            raw_live = trilinear_interpolate(
                self.density, _take(rows, live_local), _take(weights, live_local)
            )[:, 0]
            alpha_live = 1.0 - torch.exp(-self._sigma(raw_live) * _take(spacing, live_local))
            densities = alphas.index_copy(0, _take(idx, live_local), alpha_live)
        else:
            densities = alphas

        # Colours of the coloured points; when they are most of the occupied points,
        # decoding every occupied point and zeroing the others is cheaper than gathering
        # their corners (the same values).
        col_local: torch.Tensor | None = None
        if counts["colored"] < self.DECODE_ALL_FRACTION * idx.shape[0]:
            col_local = colored.nonzero().squeeze(1)
        col_idx = _take(idx, col_local)
        ray_index = torch.div(col_idx, n_pts, rounding_mode="floor")
        rgb = self._colors(_take(rows, col_local), _take(weights, col_local), directions,
                           ray_index).to(lengths.dtype)  # fmt: skip
        if col_local is None and counts["colored"] < idx.shape[0]:
            rgb = rgb.masked_fill(~colored[:, None], 0.0)
        if sel is None and col_local is None:
            colors = rgb
        else:
            colors = lengths.new_zeros(n_points, 3).index_copy(0, col_idx, rgb)
        return densities.view(-1, n_pts), colors.view(-1, n_pts, 3), counts

    # -- training hooks ------------------------------------------------------------------
    def param_groups(self) -> list[dict[str, Any]]:
        """The grids at ``lr * grid_lr_scale``, the colour MLP at ``lr``."""
        groups: list[dict[str, Any]] = [
            {
                "name": "grids",
                "params": [self.density, self.features],
                "lr_scale": self.grid_lr_scale,
            }
        ]
        if self.color_mlp is not None:
            groups.append(
                {"name": "mlp", "params": list(self.color_mlp.parameters()), "lr_scale": 1.0}
            )
        return groups

    def loss_terms(self) -> dict[str, torch.Tensor]:
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
