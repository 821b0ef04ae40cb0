"""Raymarchers: turn per-point densities and features into per-ray features.

The pure function :func:`emission_absorption` holds the maths; the modules are thin,
PyTorch3D-compatible wrappers around it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch


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


def emission_absorption(
    rays_densities: torch.Tensor,
    rays_features: torch.Tensor,
    surface_thickness: int = 1,
    eps: float = 1e-10,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Emission-absorption compositing (PyTorch3D's formulation).

    With per-point opacities ``d_i``, the transmittance is the shifted cumulative product
    ``T_i = prod_{j <= i - surface_thickness} (1 + eps - d_j)``, the weights are
    ``w_i = d_i T_i`` and the ray opacity is ``1 - prod_i (1 - d_i)``.

    Args:
        rays_densities: ``(..., n_pts_per_ray)`` per-point opacities in [0, 1].
        rays_features: ``(..., n_pts_per_ray, C)``.

    Returns:
        features ``(..., C)`` and opacities ``(..., 1)``.
    """
    absorption = shifted_cumprod((1.0 + eps) - rays_densities, shift=surface_thickness)
    weights = rays_densities * absorption
    features = (weights[..., None] * rays_features).sum(dim=-2)
    opacities = 1.0 - torch.prod(1.0 - rays_densities, dim=-1, keepdim=True)
    return features, opacities


class EmissionAbsorptionRaymarcher(torch.nn.Module):
    """PyTorch3D's ``EmissionAbsorptionRaymarcher``.

    Args:
        surface_thickness: the shift of the cumulative transmittance product (in points).
        background_color: optional colour of ``K <= C`` values composited behind the
            first ``K`` feature channels (``features + (1 - opacity) * background_color``).
            ``None`` (the default, PyTorch3D's behaviour) composites nothing, i.e. a black
            background.
        check_bounds: verify that densities lie in [0, 1] (as PyTorch3D does).

    ``forward(rays_densities (..., n_pts_per_ray, 1), rays_features (..., n_pts_per_ray, C))``
    returns ``(..., C + 1)``: the composited features followed by the opacity.
    """

    def __init__(
        self,
        surface_thickness: int = 1,
        background_color: Sequence[float] | None = None,
        check_bounds: bool = True,
    ) -> None:
        super().__init__()
        if isinstance(surface_thickness, bool) or not isinstance(surface_thickness, int):
            raise ValueError(f"surface_thickness must be an int >= 1; got {surface_thickness!r}.")
        if surface_thickness < 1:
            raise ValueError(f"surface_thickness must be >= 1; got {surface_thickness!r}.")
        self.surface_thickness = surface_thickness
        self.background_color = (
            None if background_color is None else tuple(float(c) for c in background_color)
        )
        self.check_bounds = check_bounds

    def forward(
        self,
        rays_densities: torch.Tensor,
        rays_features: torch.Tensor,
        eps: float = 1e-10,
        **kwargs: Any,
    ) -> torch.Tensor:
        check_raymarcher_inputs(rays_densities, rays_features)
        if self.check_bounds:
            check_density_bounds(rays_densities)
        features, opacities = emission_absorption(
            rays_densities[..., 0], rays_features, self.surface_thickness, eps
        )
        if self.background_color is not None:
            k = len(self.background_color)
            if k > features.shape[-1]:
                raise ValueError(
                    f"background_color has {k} values but the features have only "
                    f"{features.shape[-1]} channels."
                )
            bg = torch.tensor(self.background_color, dtype=features.dtype, device=features.device)
            features = torch.cat(
                (features[..., :k] + (1.0 - opacities) * bg, features[..., k:]), dim=-1
            )
        return torch.cat((features, opacities), dim=-1)
