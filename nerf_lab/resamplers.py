"""Resamplers: samplers of a later render pass (coarse-to-fine), and the intervals of samples.

The renderer's multi-pass protocol is PyTorch3D's (``projects/nerf/nerf/raysampler.py``):
a resampler is an ``nn.Module`` called as
``resampler(input_ray_bundle=bundle, ray_weights=weights, **kwargs)`` with the previous
pass's :class:`~nerf_lab.raysamplers.RayBundle` and its compositing weights
``w_i = alpha_i T_i`` ``(..., n_pts_per_ray)``; it returns the bundle of the next pass
(same rays, new ``lengths``), or ``(bundle, aux)`` with ``aux`` a dict of per-ray tensors
``(..., *)`` for the render output (e.g. proposal weights for a loss). A resampler that
does not need the field's weights sets the class attribute ``needs_field_weights = False``
and is called with ``ray_weights=None`` (the renderer then skips the coarse field pass).

**Intervals of point samples.** nerf_lab's fields compute a point's opacity over the
spacing to the next sample (``alpha_i = 1 - exp(-sigma_i delta_i)``,
``delta_i = t_{i+1} - t_i``, the last point reusing the spacing before it;
:func:`nerf_lab.models.nerf.sample_spacing`), so ``w_i`` is the probability that the ray
ends in ``[t_i, t_{i+1})``. :func:`lengths_to_edges` / :func:`lengths_to_intervals` turn
sorted sample depths into exactly these intervals, for the interval-based samplers and
regularisers (proposal sampling, mip-NeRF 360's losses).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from nerf_lab import hooks
from nerf_lab.hooks import ParamGroup
from nerf_lab.raysamplers import RayBundle
from nerf_lab.renderer import Resampler
from nerf_lab.sample_pdf import invert_cdf, sample_pdf, stratified_quantiles
from nerf_lab.validate import check_bool, check_int, check_number

__all__ = [
    "ProbabilisticRaysampler",
    "split_resampler_output",
    "lengths_to_edges",
    "lengths_to_intervals",
]


def split_resampler_output(result: Any) -> tuple[RayBundle, dict[str, torch.Tensor]]:
    """``(bundle, aux)`` from a resampler's return value: a :class:`RayBundle` (then
    ``aux = {}``) or a pair ``(RayBundle, aux dict)``.

    :class:`RayBundle` is a ``NamedTuple``, so ``isinstance(result, tuple)`` alone cannot
    tell the two apart; this checks for a bundle first.
    """
    if isinstance(result, RayBundle):
        return result, {}
    if (
        isinstance(result, tuple)
        and len(result) == 2
        and isinstance(result[0], RayBundle)
        and isinstance(result[1], dict)
    ):
        return result[0], dict(result[1])
    raise TypeError(
        "a resampler must return a RayBundle or (RayBundle, dict of per-ray tensors); got "
        f"{type(result).__name__}."
    )


def lengths_to_edges(lengths: torch.Tensor) -> torch.Tensor:
    """Interval edges of sorted point samples, in the fields' spacing convention.

    Point ``i`` owns ``[t_i, t_{i+1})``; the last point owns ``[t_{n-1}, t_{n-1} + (t_{n-1}
    - t_{n-2}))`` (it reuses the spacing before it, as
    :func:`nerf_lab.models.nerf.sample_spacing` does).

    Args:
        lengths: ``(..., n_pts_per_ray)`` sorted depths, ``n_pts_per_ray >= 2``.

    Returns:
        ``(..., n_pts_per_ray + 1)`` edges.
    """
    if lengths.shape[-1] < 2:
        raise ValueError(
            f"lengths must have >= 2 points per ray to define intervals; got {lengths.shape[-1]}."
        )
    last = 2.0 * lengths[..., -1:] - lengths[..., -2:-1]
    return torch.cat((lengths, last), dim=-1)


def lengths_to_intervals(lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(t_starts, t_ends)``, each ``(..., n_pts_per_ray)``: the intervals of
    :func:`lengths_to_edges`."""
    edges = lengths_to_edges(lengths)
    return edges[..., :-1], edges[..., 1:]


class ProbabilisticRaysampler(Resampler):
    """Importance sampling along rays from the previous pass's weights (NeRF's fine pass).

    PyTorch3D's ``projects/nerf`` ``ProbabilisticRaysampler`` (Mildenhall et al. 2020,
    section 5.2): the bins are the midpoints of the input depths, the bin weights are the
    input weights without the first and last point (``ray_weights[..., 1:-1]``), and
    ``n_pts_per_ray`` depths are drawn with :func:`~nerf_lab.sample_pdf.sample_pdf` (random
    quantiles when stratified, else evenly spaced ones), without gradients. With
    ``add_input_samples`` the input depths are kept; the result is sorted by depth.

    Two sampling options from later work, off by default (PyTorch3D's numbers):

    * ``stratified_quantiles``: one quantile per stratum ``[k/n, (k+1)/n)`` (a random
      position in it when stratified, its centre otherwise;
      :func:`~nerf_lab.sample_pdf.stratified_quantiles`) instead of PyTorch3D's ``n``
      i.i.d. uniform quantiles (``torch.linspace(0, 1, n)`` when not stratified): the
      draws cover the PDF evenly, with no clusters and gaps (mip-NeRF's
      ``sorted_piecewise_constant_pdf``, nerfstudio's ``PDFSampler``).
    * ``histogram_padding``: added to every bin weight before drawing (nerfstudio's
      ``PDFSampler``, 0.01 there; mip-NeRF's ``resample_padding``), so bins the coarse
      pass found empty keep some samples (a surface it missed can still be found).

    Args:
        n_pts_per_ray: depths drawn per ray.
        stratified: random quantiles in training (``self.training``).
        stratified_test: random quantiles in evaluation (``not self.training``).
        add_input_samples: return the input depths together with the new ones
            (``n_in + n_pts_per_ray`` points), else only the new ones.
        stratified_quantiles: one quantile per stratum (see above).
        histogram_padding: ``>= 0`` added to every bin weight (see above).
        coarse_pass_grad: whether the renderer records autograd for the coarse pass
            (:class:`~nerf_lab.renderer.Resampler`); ``False`` when no loss term reads it
            (every term with ``passes: last``): the coarse pass then costs a forward only.
        coarse_field: the field of the coarse pass, a module with the field contract
            (PyTorch3D ``projects/nerf`` trains a coarse and a fine network); ``None``: the
            renderer's field serves both passes. It learns only from loss terms on the
            coarse pass (``passes: all``), so it needs ``coarse_pass_grad``; its parameter
            groups, loss terms (prefixed ``coarse_``) and per-step callback are the
            resampler's.

    ``forward(input_ray_bundle, ray_weights)``: the input bundle of leading shape ``(...)``
    with ``n_in >= 3`` depths per ray and weights ``(..., n_in)``; returns a bundle with
    the same ``origins``, ``directions``, ``xys`` and sorted ``lengths``
    ``(..., n_in + n_pts_per_ray)`` (or ``(..., n_pts_per_ray)``). The same numbers as
    PyTorch3D's for its ``(batch, n_rays, n_in)`` bundles; any leading shape works here.
    """

    needs_field_weights: ClassVar[bool] = True

    def __init__(
        self,
        n_pts_per_ray: int,
        stratified: bool,
        stratified_test: bool,
        add_input_samples: bool = True,
        stratified_quantiles: bool = False,
        histogram_padding: float = 0.0,
        coarse_pass_grad: bool = True,
        coarse_field: torch.nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.coarse_pass_grad = check_bool("coarse_pass_grad", coarse_pass_grad)
        if coarse_field is not None and not isinstance(coarse_field, torch.nn.Module):
            raise ValueError(
                "coarse_field must be a field (a torch.nn.Module) or null; got "
                f"{type(coarse_field).__name__}."
            )
        if coarse_field is not None and not coarse_pass_grad:
            raise ValueError(
                "coarse_field: a separate coarse field learns only from a loss on the coarse "
                "pass, which coarse_pass_grad=false renders without gradients; set "
                "coarse_pass_grad: true (and a loss term with passes: all)."
            )
        self.coarse_field = coarse_field
        self._n_pts_per_ray = check_int("n_pts_per_ray", n_pts_per_ray)
        self._stratified = check_bool("stratified", stratified)
        self._stratified_test = check_bool("stratified_test", stratified_test)
        self._add_input_samples = check_bool("add_input_samples", add_input_samples)
        self._stratified_quantiles = check_bool("stratified_quantiles", stratified_quantiles)
        self._histogram_padding = check_number("histogram_padding", histogram_padding, 0)

    # -- hooks (those of the coarse field, if any) ---------------------------------------
    def coarse_pass_field(self) -> torch.nn.Module | None:
        """``coarse_field`` (``None``: the renderer's field)."""
        return self.coarse_field

    def param_groups(self) -> list[ParamGroup]:
        """The coarse field's groups, named ``coarse_field/<name>``; none without one."""
        if self.coarse_field is None:
            return []
        return hooks.param_groups(self.coarse_field, "coarse_field")

    def loss_terms(self) -> dict[str, torch.Tensor]:
        """The coarse field's own terms, named ``coarse_<name>``."""
        if self.coarse_field is None:
            return {}
        return {f"coarse_{k}": v for k, v in hooks.loss_terms(self.coarse_field).items()}

    def on_train_step(self, step: int, n_iter: int) -> None:
        """The coarse field's per-step callback."""
        if self.coarse_field is not None:
            hooks.on_train_step(self.coarse_field, step, n_iter)

    def forward(
        self, input_ray_bundle: RayBundle, ray_weights: torch.Tensor, **kwargs: Any
    ) -> RayBundle:
        z_vals = input_ray_bundle.lengths
        if ray_weights is None or ray_weights.shape != z_vals.shape:
            got = None if ray_weights is None else tuple(ray_weights.shape)
            raise ValueError(
                f"ray_weights must have the shape of the input lengths {tuple(z_vals.shape)}; "
                f"got {got}."
            )
        if z_vals.shape[-1] < 3:
            raise ValueError(
                "ProbabilisticRaysampler needs >= 3 input points per ray (its bins are the "
                f"midpoints without the end points); got {z_vals.shape[-1]}."
            )
        with torch.no_grad():
            z_vals_mid = 0.5 * (z_vals[..., 1:] + z_vals[..., :-1])
            stratified = self._stratified if self.training else self._stratified_test
            bins = z_vals_mid.reshape(-1, z_vals_mid.shape[-1])
            weights = ray_weights.reshape(-1, ray_weights.shape[-1])[..., 1:-1]
            if self._stratified_quantiles or self._histogram_padding > 0:
                z_samples = self._draw(bins, weights, stratified)
            else:  # PyTorch3D's draws and numbers
                z_samples = sample_pdf(bins, weights, self._n_pts_per_ray, det=not stratified)
            z_samples = z_samples.reshape(*z_vals.shape[:-1], self._n_pts_per_ray)
        if self._add_input_samples:
            z_vals = torch.cat((z_vals, z_samples.to(z_vals.dtype)), dim=-1)
        else:
            z_vals = z_samples.to(z_vals.dtype)
        z_vals, _ = torch.sort(z_vals, dim=-1)
        return RayBundle(
            origins=input_ray_bundle.origins,
            directions=input_ray_bundle.directions,
            lengths=z_vals,
            xys=input_ray_bundle.xys,
        )

    def _draw(self, bins: torch.Tensor, weights: torch.Tensor, stratified: bool) -> torch.Tensor:
        """``(n_rays, n_pts_per_ray)`` depths from ``bins`` ``(n_rays, n_bins + 1)`` and
        ``weights`` ``(n_rays, n_bins)`` with the options' quantiles and padding."""
        n, batch = self._n_pts_per_ray, bins.shape[:-1]
        if self._stratified_quantiles:
            u = stratified_quantiles(batch, n, stratified, device=bins.device)
        elif stratified:
            u = torch.rand((*batch, n), device=bins.device)
        else:
            u = torch.linspace(0.0, 1.0, n, device=bins.device).expand(*batch, n)
        padded = weights.float().clamp(min=0.0) + self._histogram_padding
        return invert_cdf(bins.float(), padded, u, eps=1e-5, exact_cumsum=False)
