"""Proposal sampling (mip-NeRF 360, Barron et al. 2022; nerfstudio's nerfacto).

Small density-only *proposal fields* predict where along a ray the final field's weights
will be; each level's weights define a PDF from which the next level's depths are drawn
(:func:`~nerf_lab.sample_pdf.invert_cdf` with stratified quantiles), and the last level's
PDF gives the final bundle that the real field renders. The proposal fields are trained
only by the proposal loss (:func:`nerf_lab.regularizers.interlevel_loss`, mip-NeRF 360
eq. 13) against the final weights with a stop-gradient; the final field never sees their
gradient because the depths drawn from a PDF are not differentiable.

**Outputs for the loss.** :class:`ProposalResampler` returns ``(bundle, aux)``:

* ``bundle``: the final :class:`~nerf_lab.raysamplers.RayBundle` (same rays, sorted
  ``lengths`` ``(..., n_pts_per_ray)``);
* ``aux``: a dict of per-ray tensors, for level ``k`` of ``n_levels``:
  ``"proposal_edges/k"`` ``(..., n_k + 1)`` and ``"proposal_weights/k"`` ``(..., n_k)``
  (the weights carry the gradient into the proposal field). They have the rays' leading
  shape, so chunked renders concatenate them along the rays like any per-ray output.
  :meth:`ProposalOutputs.from_aux` reads them back; the loss is

  ``interlevel_loss(p.edges, p.weights, lengths_to_edges(out.lengths), out.weights)``

  with ``p = ProposalOutputs.from_aux(out.aux)`` and ``out`` the final pass's render
  output (its sample depths and compositing weights).

A render that uses a :class:`ProposalResampler` needs no coarse pass of the real field:
``needs_field_weights = False``, so the renderer calls it with ``ray_weights=None``.

**Ray skipping** (``skip_threshold > 0``): rays whose last proposal level's opacity (the
sum of its weights) is at or below ``skip_threshold`` are marked in
``aux[Resampler.ACTIVE_RAYS]`` as needing no field evaluation, so renders with
:class:`~nerf_lab.render_shortcuts.RenderShortcuts` leave them empty. This is not exact:
the interlevel loss makes the proposal weights an upper envelope of the field's only as
far as it has been trained (measure it: ``scripts/bench.py --render-run``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from nerf_lab.hooks import ParamGroup
from nerf_lab.models.fast import total_variation
from nerf_lab.raymarchers import transmittance
from nerf_lab.raysamplers import RayBundle, ray_bundle_to_ray_points
from nerf_lab.renderer import Resampler
from nerf_lab.resamplers import lengths_to_edges
from nerf_lab.sample_pdf import invert_cdf, stratified_quantiles
from nerf_lab.validate import check_bool, check_int, check_number, is_int

__all__ = [
    "DensityGrid",
    "ProposalOutputs",
    "ProposalResampler",
    "anneal_exponent",
    "check_aabb",
    "pdf_resample",
    "weights_from_sigma",
]

#: ``log`` of the largest density ``sigma`` a proposal grid can output.
MAX_LOG_DENSITY = 15.0


def check_aabb(name: str, aabb: Any) -> tuple[float, ...]:
    """``aabb`` as 6 floats ``(x_min, y_min, z_min, x_max, y_max, z_max)`` with min < max,
    else ``ValueError`` naming ``name``."""
    try:
        values = tuple(float(v) for v in aabb)
    except (TypeError, ValueError):
        values = ()
    if (
        len(values) != 6
        or not all(math.isfinite(v) for v in values)
        or not all(values[i] < values[i + 3] for i in range(3))
    ):
        raise ValueError(
            f"{name} must be 6 finite numbers [x_min, y_min, z_min, x_max, y_max, z_max] with "
            f"each min < max; got {aabb!r}."
        )
    return values


def weights_from_sigma(
    sigma: torch.Tensor, edges: torch.Tensor, direction_norms: torch.Tensor
) -> torch.Tensor:
    """Compositing weights ``w_i = alpha_i T_i`` of densities on intervals.

    ``alpha_i = 1 - exp(-sigma_i delta_i |d|)`` with ``delta_i = edges[i + 1] - edges[i]``
    (depth units) and ``T_i = prod_{j<i} (1 - alpha_j)``.

    Args:
        sigma: ``(..., n_pts_per_ray)`` densities per world unit, ``>= 0``.
        edges: ``(..., n_pts_per_ray + 1)`` interval edges in depth.
        direction_norms: ``(..., 1)`` world length of a unit of depth (``|directions|``).

    Returns:
        ``(..., n_pts_per_ray)`` weights; their sum is the ray's opacity.
    """
    deltas = (edges[..., 1:] - edges[..., :-1]) * direction_norms
    alpha = -torch.expm1(-sigma * deltas)
    return alpha * transmittance(alpha)


def anneal_exponent(step: int, slope: float, max_num_iters: int) -> float:
    """nerfstudio's proposal-weight annealing exponent at a training step.

    ``f(x) = s x / ((s - 1) x + 1)`` with ``x = min(step / max_num_iters, 1)`` and slope
    ``s``: 0 at step 0 (uniform proposal PDFs), 1 from ``max_num_iters`` on.
    ``max_num_iters = 0`` disables annealing (always 1).
    """
    if max_num_iters <= 0:
        return 1.0
    x = min(max(step / max_num_iters, 0.0), 1.0)
    return slope * x / ((slope - 1.0) * x + 1.0)


def pdf_resample(
    edges: torch.Tensor,
    weights: torch.Tensor,
    n_samples: int,
    stratified: bool,
    histogram_padding: float = 0.01,
) -> torch.Tensor:
    """Draw sorted depths from the step-function PDF of weights on intervals (no gradient).

    The weights (detached) are padded by ``histogram_padding`` per interval (nerfstudio's
    ``PDFSampler``: every interval keeps some probability, so an all-zero ray samples
    evenly) and inverted with one quantile per stratum (:func:`stratified_quantiles`).

    Args:
        edges: ``(..., n_in + 1)`` sorted edges.
        weights: ``(..., n_in)`` non-negative weights.
        n_samples: depths drawn per ray.
        stratified: a random quantile per stratum, else the stratum centres.
        histogram_padding: ``> 0`` added to every weight.

    Returns:
        ``(..., n_samples)`` sorted depths in ``[edges[..., 0], edges[..., -1]]``.
    """
    with torch.no_grad():
        padded = weights.detach().clamp(min=0.0) + histogram_padding
        u = stratified_quantiles(
            weights.shape[:-1], n_samples, stratified, device=weights.device, dtype=edges.dtype
        )
        samples = invert_cdf(edges.detach(), padded, u, eps=0.0, exact_cumsum=False)
        return torch.sort(samples, dim=-1).values


class DensityGrid(torch.nn.Module):
    """A density-only field on a dense grid: the proposal field.

    ``sigma(x) = exp(min(g(x) + log(density_init), MAX_LOG_DENSITY))`` with ``g`` the
    trilinear interpolation of an ``(R, R, R)`` grid of raw values (starting at 0, so
    ``sigma = density_init`` everywhere) whose vertices span ``aabb``; ``sigma = 0``
    outside ``aabb``.

    Args:
        resolution: grid vertices per side ``R >= 2``.
        aabb: ``[x_min, y_min, z_min, x_max, y_max, z_max]``, the box the grid covers.
        density_init: initial density (per world unit).

    ``forward(points (..., 3))`` returns ``sigma`` ``(...)``.
    """

    def __init__(
        self,
        resolution: int = 64,
        aabb: Sequence[float] = (-1.0, -1.0, -1.0, 1.0, 1.0, 1.0),
        density_init: float = 1.0,
    ) -> None:
        super().__init__()
        self.resolution = check_int("resolution", resolution, 2)
        self.aabb = check_aabb("aabb", aabb)
        self.shift = math.log(check_number("density_init", density_init, 0, low_open=True))
        r = self.resolution
        #: ``(R, R, R)`` raw values, indexed ``[z, y, x]`` (``grid_sample``'s layout).
        self.raw = torch.nn.Parameter(torch.zeros(r, r, r))

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        lo = points.new_tensor(self.aabb[:3])
        hi = points.new_tensor(self.aabb[3:])
        flat = points.reshape(-1, 3)
        normalized = (flat - lo) / (hi - lo) * 2.0 - 1.0  # [-1, 1] over the box, (x, y, z)
        raw = F.grid_sample(
            self.raw.to(points.dtype)[None, None],
            normalized[None, :, None, None, :],
            mode="bilinear",
            padding_mode="border",
            align_corners=True,
        ).reshape(flat.shape[0])
        inside = ((flat >= lo) & (flat <= hi)).all(dim=-1)
        sigma = torch.exp(torch.clamp(raw + self.shift, max=MAX_LOG_DENSITY))
        return torch.where(inside, sigma, torch.zeros_like(sigma)).reshape(points.shape[:-1])


@dataclass
class ProposalOutputs:
    """The proposal levels of a render, coarse first.

    Attributes:
        edges: per level ``k``, ``(..., n_k + 1)`` sorted interval edges (depth).
        weights: per level ``k``, ``(..., n_k)`` the proposal field's compositing weights
            on those intervals (with the gradient into the proposal field).
    """

    edges: list[torch.Tensor]
    weights: list[torch.Tensor]

    def to_aux(self) -> dict[str, torch.Tensor]:
        """``{"proposal_edges/k": ..., "proposal_weights/k": ...}`` for every level."""
        aux: dict[str, torch.Tensor] = {}
        for k, (e, w) in enumerate(zip(self.edges, self.weights, strict=True)):
            aux[f"proposal_edges/{k}"] = e
            aux[f"proposal_weights/{k}"] = w
        return aux

    @staticmethod
    def from_aux(aux: Mapping[str, torch.Tensor]) -> ProposalOutputs:
        """Read the levels back from a render's ``aux`` (the inverse of :meth:`to_aux`)."""
        edges, weights = [], []
        k = 0
        while f"proposal_edges/{k}" in aux:
            edges.append(aux[f"proposal_edges/{k}"])
            weights.append(aux[f"proposal_weights/{k}"])
            k += 1
        if not edges:
            raise ValueError(
                f"aux holds no proposal levels ('proposal_edges/0' missing); keys: {sorted(aux)}."
            )
        return ProposalOutputs(edges, weights)


class ProposalResampler(Resampler):
    """Proposal sampling with 1 or more density grids (mip-NeRF 360 / nerfacto).

    Level 0 evaluates proposal field 0 at the input bundle's depths (so the input must
    have ``n_proposal_samples[0]`` points per ray: set the ray generators'
    ``n_pts_per_ray`` to it); level ``k >= 1`` evaluates field ``k`` at
    ``n_proposal_samples[k]`` depths drawn from level ``k - 1``'s weights; the final
    ``n_pts_per_ray`` depths are drawn from the last level's weights. Each level's point
    ``i`` owns the interval ``[t_i, t_{i+1})`` (:func:`~nerf_lab.resamplers.lengths_to_edges`,
    the fields' spacing convention), and draws use :func:`pdf_resample` (stratified
    quantiles in training, stratum centres in evaluation unless ``stratified_test``).
    Before drawing, weights are raised to nerfstudio's annealing exponent
    (:func:`anneal_exponent`, updated in :meth:`on_train_step`; 1 in evaluation).

    Args:
        n_proposal_samples: points per ray at which each proposal level is evaluated (one
            entry per proposal field; nerfacto: ``(256, 96)``).
        n_pts_per_ray: final points per ray (for the real field).
        resolutions: grid vertices per side of each proposal field (one per level).
        aabb: ``[x_min, y_min, z_min, x_max, y_max, z_max]`` the grids cover; the
            proposal density is 0 outside it, so no final sample is drawn outside.
        density_init: the grids' initial density (per world unit).
        stratified: random quantiles in training.
        stratified_test: random quantiles in evaluation.
        histogram_padding: weight added to every interval before drawing.
        anneal_slope: slope ``s`` of the annealing schedule.
        anneal_max_num_iters: steps until the exponent reaches 1 (0: no annealing).
        lr_scale: learning rate of the proposal grids relative to the optimiser's.
        tv_weight: weight of the grids' total variation in :meth:`loss_terms` (0: off).
        skip_threshold: proposal opacity at or below which a ray is marked as needing no
            field evaluation (aux ``Resampler.ACTIVE_RAYS``; see the module docstring),
            in [0, 1); 0: no ray is marked (the key is absent).

    ``forward(input_ray_bundle, ray_weights=None)``: ``ray_weights`` is ignored. Returns
    ``(bundle, aux)``: the final bundle (lengths ``(..., n_pts_per_ray)``) and
    :meth:`ProposalOutputs.to_aux` of the levels (see the module docstring), plus
    ``aux[Resampler.ACTIVE_RAYS]`` ``(..., 1)`` bool when ``skip_threshold > 0``.
    """

    needs_field_weights: ClassVar[bool] = False

    def __init__(
        self,
        n_proposal_samples: Sequence[int] = (64,),
        n_pts_per_ray: int = 32,
        resolutions: Sequence[int] = (64,),
        aabb: Sequence[float] = (-1.0, -1.0, -1.0, 1.0, 1.0, 1.0),
        density_init: float = 1.0,
        stratified: bool = True,
        stratified_test: bool = False,
        histogram_padding: float = 0.01,
        anneal_slope: float = 10.0,
        anneal_max_num_iters: int = 1000,
        lr_scale: float = 1.0,
        tv_weight: float = 0.0,
        skip_threshold: float = 0.0,
    ) -> None:
        super().__init__()
        counts = list(n_proposal_samples) if isinstance(n_proposal_samples, Sequence) else []
        if not counts or any(not is_int(n) or n < 2 for n in counts):
            raise ValueError(
                "n_proposal_samples must be a non-empty list of integers >= 2 (points per ray "
                f"of each proposal level); got {n_proposal_samples!r}."
            )
        res = list(resolutions) if isinstance(resolutions, Sequence) else []
        if len(res) != len(counts):
            raise ValueError(
                f"resolutions must have one entry per proposal level ({len(counts)}); got "
                f"{resolutions!r}."
            )
        self.n_proposal_samples = counts
        self.n_pts_per_ray = check_int("n_pts_per_ray", n_pts_per_ray)
        self.stratified = check_bool("stratified", stratified)
        self.stratified_test = check_bool("stratified_test", stratified_test)
        self.histogram_padding = check_number(
            "histogram_padding", histogram_padding, 0, low_open=True
        )
        self.lr_scale = check_number("lr_scale", lr_scale, 0, low_open=True)
        self.anneal_slope = check_number("anneal_slope", anneal_slope, 0, low_open=True)
        self.anneal_max_num_iters = check_int("anneal_max_num_iters", anneal_max_num_iters, 0)
        self.tv_weight = check_number("tv_weight", tv_weight, 0)
        self.skip_threshold = check_number("skip_threshold", skip_threshold, 0, 1, high_open=True)
        self.fields = torch.nn.ModuleList(
            DensityGrid(resolution=r, aabb=aabb, density_init=density_init) for r in res
        )
        self._anneal = 1.0 if anneal_max_num_iters == 0 else 0.0

    # -- hooks ---------------------------------------------------------------------------
    def param_groups(self) -> list[ParamGroup]:
        """One group ``"proposal"`` with every grid, at ``lr_scale``."""
        return [{"name": "proposal", "params": list(self.parameters()), "lr_scale": self.lr_scale}]

    def loss_terms(self) -> dict[str, torch.Tensor]:
        """``{"proposal_tv": tv_weight * sum_k TV(grid_k)}`` when ``tv_weight > 0``."""
        if self.tv_weight <= 0.0:
            return {}
        tv = sum(total_variation(f.raw[..., None]) for f in self.fields)
        return {"proposal_tv": self.tv_weight * tv}

    def on_train_step(self, step: int, n_iter: int) -> None:
        """Update the annealing exponent for ``step``."""
        self._anneal = anneal_exponent(step, self.anneal_slope, self.anneal_max_num_iters)

    # -- sampling ------------------------------------------------------------------------
    def forward(
        self,
        input_ray_bundle: RayBundle,
        ray_weights: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> tuple[RayBundle, dict[str, torch.Tensor]]:
        lengths = input_ray_bundle.lengths
        if lengths.shape[-1] != self.n_proposal_samples[0]:
            raise ValueError(
                f"ProposalResampler: the input bundle has {lengths.shape[-1]} points per ray but "
                f"n_proposal_samples[0]={self.n_proposal_samples[0]}; set the ray generators' "
                "n_pts_per_ray to n_proposal_samples[0]."
            )
        stratified = self.stratified if self.training else self.stratified_test
        anneal = self._anneal if self.training else 1.0
        norms = input_ray_bundle.directions.norm(dim=-1, keepdim=True)
        outputs = ProposalOutputs([], [])
        for k, field in enumerate(self.fields):
            if k > 0:
                lengths = pdf_resample(
                    outputs.edges[-1],
                    outputs.weights[-1].detach().pow(anneal),
                    self.n_proposal_samples[k],
                    stratified,
                    self.histogram_padding,
                )
            lengths = lengths.detach()
            edges = lengths_to_edges(lengths)
            points = ray_bundle_to_ray_points(input_ray_bundle._replace(lengths=lengths))
            sigma = field(points)
            outputs.edges.append(edges)
            outputs.weights.append(weights_from_sigma(sigma, edges, norms))
        final = pdf_resample(
            outputs.edges[-1],
            outputs.weights[-1].detach().pow(anneal),
            self.n_pts_per_ray,
            stratified,
            self.histogram_padding,
        )
        aux = outputs.to_aux()
        if self.skip_threshold > 0.0:
            opacity = outputs.weights[-1].detach().sum(dim=-1, keepdim=True)
            aux[self.ACTIVE_RAYS] = opacity > self.skip_threshold
        return input_ray_bundle._replace(lengths=final), aux
