"""Raymarchers: turn per-point densities and features into per-ray features.

The pure function :func:`emission_absorption` holds the maths; the modules are thin,
PyTorch3D-compatible wrappers around it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from nerf_lab.validate import check_int


def shifted_cumprod(x: torch.Tensor, shift: int = 1) -> torch.Tensor:
    """Cumulative product along the last dim, shifted right by ``shift`` (ones fill in).

    ``out[..., i] = prod(x[..., : i - shift + 1])`` and ``out[..., :shift] = 1``.

    Args:
        x: ``(..., n_pts_per_ray)``.

    Returns:
        ``(..., n_pts_per_ray)``.
    """
    x_cumprod = torch.cumprod(x, dim=-1)
    return torch.cat([torch.ones_like(x_cumprod[..., :shift]), x_cumprod[..., :-shift]], dim=-1)


def transmittance(alphas: torch.Tensor) -> torch.Tensor:
    """Light reaching each point: ``T_i = prod_{j < i} (1 - alpha_j)``.

    The compositing weight of point ``i`` is ``alpha_i T_i`` (:func:`emission_absorption`
    with ``eps=0`` and ``surface_thickness=1``).

    Args:
        alphas: ``(..., n_pts_per_ray)`` opacities.

    Returns:
        ``(..., n_pts_per_ray)``.
    """
    return shifted_cumprod(1.0 - alphas)


def check_density_bounds(rays_densities: torch.Tensor) -> None:
    """Raise ``ValueError`` unless every density lies in [0, 1]."""
    lo, hi = torch.aminmax(rays_densities.detach())
    if bool(lo < 0.0) or bool(hi > 1.0):
        raise ValueError(
            "rays_densities have to be in range [0, 1]; got values in "
            f"[{float(lo):.4g}, {float(hi):.4g}]."
        )


def check_raymarcher_inputs(rays_densities: torch.Tensor, rays_features: torch.Tensor) -> None:
    """Validate the shapes ``(..., n_pts_per_ray, 1)`` and ``(..., n_pts_per_ray, C)``."""
    if not torch.is_tensor(rays_densities) or not torch.is_tensor(rays_features):
        raise ValueError("rays_densities and rays_features must be tensors.")
    if rays_densities.dim() < 2 or rays_densities.shape[-1] != 1:
        raise ValueError(
            "rays_densities must have shape (..., n_pts_per_ray, 1); "
            f"got {tuple(rays_densities.shape)}."
        )
    if rays_features.shape[:-1] != rays_densities.shape[:-1]:
        raise ValueError(
            "rays_features must have shape (..., n_pts_per_ray, C) matching rays_densities "
            f"{tuple(rays_densities.shape)}; got {tuple(rays_features.shape)}."
        )


def emission_absorption_weights(
    rays_densities: torch.Tensor, surface_thickness: int = 1, eps: float = 1e-10
) -> torch.Tensor:
    """Compositing weights ``w_i = d_i T_i`` (PyTorch3D's emission-absorption formulation).

    With per-point opacities ``d_i`` the transmittance is the shifted cumulative product
    ``T_i = prod_{j <= i - surface_thickness} (1 + eps - d_j)``.

    Args:
        rays_densities: ``(..., n_pts_per_ray)`` per-point opacities in [0, 1].

    Returns:
        ``(..., n_pts_per_ray)`` weights.
    """
    absorption = shifted_cumprod((1.0 + eps) - rays_densities, shift=surface_thickness)
    return rays_densities * absorption


def emission_absorption(
    rays_densities: torch.Tensor,
    rays_features: torch.Tensor,
    surface_thickness: int = 1,
    eps: float = 1e-10,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Emission-absorption compositing (PyTorch3D's formulation).

    The features are ``sum_i w_i f_i`` with the weights of
    :func:`emission_absorption_weights`; the ray opacity is ``1 - prod_i (1 - d_i)``.

    Args:
        rays_densities: ``(..., n_pts_per_ray)`` per-point opacities in [0, 1].
        rays_features: ``(..., n_pts_per_ray, C)``.

    Returns:
        features ``(..., C)`` and opacities ``(..., 1)``.
    """
    weights = emission_absorption_weights(rays_densities, surface_thickness, eps)
    features = (weights[..., None] * rays_features).sum(dim=-2)
    opacities = 1.0 - torch.prod(1.0 - rays_densities, dim=-1, keepdim=True)
    return features, opacities


def expected_depth(
    weights: torch.Tensor, lengths: torch.Tensor, eps: float = 1e-10
) -> torch.Tensor:
    """Expected depth of the visible surface: ``sum_i w_i z_i / sum_i w_i``.

    As nerfstudio's: the weighted mean of the sample depths, clipped to the depths of the
    first and last samples (an empty ray, with all weights ~0, gets a depth inside that
    range rather than 0); read it together with the opacity.

    Args:
        weights: ``(..., n_pts_per_ray)`` compositing weights.
        lengths: ``(..., n_pts_per_ray)`` sorted sample depths.

    Returns:
        ``(..., 1)`` depths (z-depths for nerf_lab's raysamplers).
    """
    depth = (weights * lengths).sum(-1, keepdim=True) / (weights.sum(-1, keepdim=True) + eps)
    return torch.minimum(torch.maximum(depth, lengths[..., :1]), lengths[..., -1:])


@dataclass
class RenderOutput:
    """The structured result of rendering rays (one pass, plus the passes before it).

    Attributes:
        rgb: ``(..., C)`` composited features (the colour for ``C = 3``), background
            included.
        opacity: ``(..., 1)`` ray opacity ``1 - prod_i (1 - d_i)``.
        depth: ``(..., 1)`` expected z-depth (:func:`expected_depth`).
        weights: ``(..., n_pts_per_ray)`` compositing weights ``w_i``.
        lengths: ``(..., n_pts_per_ray)`` the sample depths the weights belong to.
        passes: the outputs of earlier passes of a multi-pass render (coarse first); empty
            for a single pass.
        aux: extra per-ray tensors ``(..., *)`` a sampler adds (e.g. proposal weights), by
            name.
    """

    rgb: torch.Tensor
    opacity: torch.Tensor
    depth: torch.Tensor
    weights: torch.Tensor
    lengths: torch.Tensor
    passes: list[RenderOutput] = field(default_factory=list)
    aux: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def all_passes(self) -> list[RenderOutput]:
        """Every pass, coarse first, this (the final) one last."""
        return [*self.passes, self]

    def map(self, fn: Any) -> RenderOutput:
        """Apply ``fn`` to every tensor (of every pass and of ``aux``)."""
        return RenderOutput(
            rgb=fn(self.rgb),
            opacity=fn(self.opacity),
            depth=fn(self.depth),
            weights=fn(self.weights),
            lengths=fn(self.lengths),
            passes=[p.map(fn) for p in self.passes],
            aux={k: fn(v) for k, v in self.aux.items()},
        )

    def reshape(self, *rays_shape: int) -> RenderOutput:
        """Give every tensor the leading shape ``rays_shape`` (from a flat ``(n_rays, ...)``)."""
        return self.map(lambda t: t.reshape(*rays_shape, *t.shape[1:]))

    @staticmethod
    def cat(outputs: Sequence[RenderOutput]) -> RenderOutput:
        """Concatenate flat outputs ``(n_rays_k, ...)`` of chunks of rays along the rays
        (a single output is returned as it is)."""
        first = outputs[0]
        if len(outputs) == 1:
            return first

        def cat(get: Any) -> torch.Tensor:
            return torch.cat([get(o) for o in outputs], dim=0)

        return RenderOutput(
            rgb=cat(lambda o: o.rgb),
            opacity=cat(lambda o: o.opacity),
            depth=cat(lambda o: o.depth),
            weights=cat(lambda o: o.weights),
            lengths=cat(lambda o: o.lengths),
            passes=[
                RenderOutput.cat([o.passes[i] for o in outputs]) for i in range(len(first.passes))
            ],
            aux={k: cat(lambda o, k=k: o.aux[k]) for k in first.aux},
        )


class Raymarcher(torch.nn.Module):
    """Optional base of a raymarcher: ``march`` plus hooks with defaults.

    A raymarcher is any object with ``march(rays_densities, rays_features, ray_bundle)`` →
    :class:`RenderOutput` (plain modules work); subclassing this adds
    :meth:`march_empty`, which a subclass may answer without arithmetic.
    """

    def march(
        self, rays_densities: torch.Tensor, rays_features: torch.Tensor, ray_bundle: Any
    ) -> RenderOutput:
        raise NotImplementedError

    def march_empty(self, ray_bundle: Any, n_channels: int) -> RenderOutput:
        """What :meth:`march` gives rays with zero densities and features (no field
        evaluation: e.g. rays that cross no occupied cell).

        Args:
            ray_bundle: flat rays, lengths ``(n_rays, n_pts_per_ray)``.
            n_channels: feature channels ``C``.

        Returns:
            :class:`RenderOutput` of ``n_rays`` rays. Default: :meth:`march` on zeros.
        """
        lengths = ray_bundle.lengths
        n_rays, n_pts = lengths.shape
        return self.march(
            lengths.new_zeros(n_rays, n_pts, 1), lengths.new_zeros(n_rays, n_pts, n_channels),
            ray_bundle,
        )  # fmt: skip


def march_empty(raymarcher: Any, ray_bundle: Any, n_channels: int) -> RenderOutput:
    """:meth:`Raymarcher.march_empty` for any raymarcher (a plain one: ``march`` on zero
    densities and features). Flat rays, lengths ``(n_rays, n_pts_per_ray)``."""
    if isinstance(raymarcher, Raymarcher):
        return raymarcher.march_empty(ray_bundle, n_channels)
    return Raymarcher.march_empty(raymarcher, ray_bundle, n_channels)


class EmissionAbsorptionRaymarcher(Raymarcher):
    """PyTorch3D's ``EmissionAbsorptionRaymarcher``.

    Args:
        surface_thickness: the shift of the cumulative transmittance product (in points).
        background_color: optional colour of ``K <= C`` values composited behind the
            first ``K`` feature channels (``features + (1 - opacity) * background_color``).
            ``None`` (the default, PyTorch3D's behaviour) composites nothing, i.e. a black
            background.
        check_bounds: verify that densities lie in [0, 1] (as PyTorch3D does).

    ``forward(rays_densities (..., n_pts_per_ray, 1), rays_features (..., n_pts_per_ray, C))``
    returns ``(..., C + 1)``: the composited features followed by the opacity (PyTorch3D's
    output). :meth:`march` returns the same as a :class:`RenderOutput` with the depth and
    the per-sample weights.
    """

    def __init__(
        self,
        surface_thickness: int = 1,
        background_color: Sequence[float] | None = None,
        check_bounds: bool = True,
    ) -> None:
        super().__init__()
        self.surface_thickness = check_int("surface_thickness", surface_thickness)
        self.background_color = (
            None if background_color is None else tuple(float(c) for c in background_color)
        )
        self.check_bounds = check_bounds

    def _background(self, features: torch.Tensor) -> torch.Tensor | None:
        """``background_color`` ``(K,)`` on the features' dtype and device (``None``
        without one); ``ValueError`` if it has more values than ``features (..., C)`` has
        channels."""
        if self.background_color is None:
            return None
        k = len(self.background_color)
        if k > features.shape[-1]:
            raise ValueError(
                f"background_color has {k} values but the features have only "
                f"{features.shape[-1]} channels."
            )
        return torch.tensor(self.background_color, dtype=features.dtype, device=features.device)

    def _composite(
        self, rays_densities: torch.Tensor, rays_features: torch.Tensor, eps: float
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        check_raymarcher_inputs(rays_densities, rays_features)
        if self.check_bounds:
            check_density_bounds(rays_densities)
        densities = rays_densities[..., 0]
        weights = emission_absorption_weights(densities, self.surface_thickness, eps)
        features = (weights[..., None] * rays_features).sum(dim=-2)
        opacities = 1.0 - torch.prod(1.0 - densities, dim=-1, keepdim=True)
        bg = self._background(features)
        if bg is not None:
            k = bg.shape[0]
            features = torch.cat(
                (features[..., :k] + (1.0 - opacities) * bg, features[..., k:]), dim=-1
            )
        return features, opacities, weights

    def forward(
        self,
        rays_densities: torch.Tensor,
        rays_features: torch.Tensor,
        eps: float = 1e-10,
        **kwargs: Any,
    ) -> torch.Tensor:
        """``(..., C + 1)``: composited features, then the opacity."""
        features, opacities, _ = self._composite(rays_densities, rays_features, eps)
        return torch.cat((features, opacities), dim=-1)

    def march(
        self,
        rays_densities: torch.Tensor,
        rays_features: torch.Tensor,
        ray_bundle: Any,
        eps: float = 1e-10,
    ) -> RenderOutput:
        """The structured form of :meth:`forward`.

        Args:
            rays_densities: ``(..., n_pts_per_ray, 1)`` opacities in [0, 1].
            rays_features: ``(..., n_pts_per_ray, C)``.
            ray_bundle: the rays (its ``lengths (..., n_pts_per_ray)`` give the depth).

        Returns:
            :class:`RenderOutput` with rgb ``(..., C)``, opacity and depth ``(..., 1)``,
            weights and lengths ``(..., n_pts_per_ray)``.
        """
        features, opacities, weights = self._composite(rays_densities, rays_features, eps)
        lengths = ray_bundle.lengths.to(weights.dtype)
        return RenderOutput(
            rgb=features,
            opacity=opacities,
            depth=expected_depth(weights, lengths),
            weights=weights,
            lengths=lengths,
        )

    def march_empty(self, ray_bundle: Any, n_channels: int) -> RenderOutput:
        """:meth:`march` of zero densities and features, built directly: no weights,
        opacity 0, the background colour (0 without one), :func:`expected_depth` of zero
        weights (the first sample's depth for sorted, non-negative depths)."""
        lengths = ray_bundle.lengths
        n_rays = lengths.shape[0]
        rgb = lengths.new_zeros(n_rays, n_channels)
        bg = self._background(rgb)
        if bg is not None:
            rgb[:, : bg.shape[0]] = bg
        weights = torch.zeros_like(lengths)
        return RenderOutput(
            rgb=rgb,
            opacity=lengths.new_zeros(n_rays, 1),
            depth=expected_depth(weights, lengths),
            weights=weights,
            lengths=lengths,
        )
