"""K-Planes' hybrid field for static scenes (Fridovich-Keil et al. 2023), in pure PyTorch.

Points normalised into the unit cube of ``aabb`` are encoded by multi-scale feature planes
(:mod:`nerf_lab.encodings_planes`: the xy, xz and yz planes at ``resolution * m`` for each
``m`` in ``multiscale``, bilinear interpolation, the Hadamard product over planes, scales
concatenated) and decoded by Instant-NGP's density and colour MLPs
(:class:`nerf_lab.models.hybrid.DensityColorDecoder`, as K-Planes' hybrid model).
Opacities are ``1 - exp(-sigma * delta)`` with ``delta`` the world-space sample spacing;
points outside the box are empty.

Regularisers (:meth:`KPlanesField.loss_terms`, weights 0 = off): K-Planes' plane total
variation (``tv_weight``; its NeRF-synthetic configs use 0.01) and an L1 sparsity prior
on the plane features (``l1_weight``). K-Planes' own L1 term acts on the space-time planes
(``|1 - plane|``) and is zero for a static scene; this static field has no time planes, so
``l1_weight`` applies ``|plane|`` to the spatial planes (empty space = zero features).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from nerf_lab.encodings_planes import (
    plane_features,
    plane_l1,
    plane_layout,
    plane_total_variation,
    plane_views,
)
from nerf_lab.hooks import ParamGroup
from nerf_lab.models.hybrid import DensityColorDecoder, EncodedField
from nerf_lab.validate import check_bool, check_int, check_number

__all__ = ["KPlanesField"]


class KPlanesField(EncodedField):
    """Multi-scale plane field: ``forward(ray_bundle)`` -> ``(opacities, colors)``.

    Args:
        resolution: plane resolution at the coarsest scale (K-Planes: 64).
        multiscale: resolution multipliers (K-Planes: [1, 2, 4, 8]).
        n_features: feature channels per plane (K-Planes: 32).
        concat_features: concatenate the scales' features (K-Planes) or sum them.
        init_low, init_high: plane features start uniform in ``[init_low, init_high]``
            (K-Planes: 0.1, 0.5).
        aabb: the box ``[x_min, y_min, z_min, x_max, y_max, z_max]`` the planes cover;
            points outside are empty.
        n_hidden_density, n_density_layers, geo_feat_dim, n_hidden_color, n_color_layers,
        direction_encoding, sh_degree, n_harmonic_functions_dir, density_activation,
        density_bias: the decoder (:class:`~nerf_lab.models.hybrid.DensityColorDecoder`;
            defaults are K-Planes' hybrid model's).
        plane_lr_scale: learning rate of the planes relative to the optimiser's ``lr``
            (the MLPs use 1).
        tv_weight: weight of the plane total variation; 0: off.
        l1_weight: weight of the L1 sparsity prior on the plane features; 0: off.
        render_color_threshold: renders (no autograd) decode colours only at points whose
            compositing weight exceeds it (:class:`~nerf_lab.models.hybrid.EncodedField`);
            0: every point.

    ``param_groups()``: ``planes`` (at ``plane_lr_scale``) and ``mlp`` (1.0).
    ``loss_terms()``: ``plane_tv`` and ``plane_l1`` when their weights are > 0.
    """

    def __init__(
        self,
        resolution: int = 64,
        multiscale: Sequence[int] = (1, 2, 4),
        n_features: int = 16,
        concat_features: bool = True,
        init_low: float = 0.1,
        init_high: float = 0.5,
        aabb: Sequence[float] = (-1.0, -1.0, -1.0, 1.0, 1.0, 1.0),
        n_hidden_density: int = 64,
        n_density_layers: int = 1,
        geo_feat_dim: int = 15,
        n_hidden_color: int = 64,
        n_color_layers: int = 2,
        direction_encoding: str = "sh",
        sh_degree: int = 4,
        n_harmonic_functions_dir: int = 4,
        density_activation: str = "trunc_exp",
        density_bias: float = -1.0,
        plane_lr_scale: float = 10.0,
        tv_weight: float = 0.0,
        l1_weight: float = 0.0,
        render_color_threshold: float = 1.0e-5,
    ) -> None:
        super().__init__(aabb, render_color_threshold)
        self.layout = plane_layout(resolution, multiscale)
        check_int("n_features", n_features)
        check_bool("concat_features", concat_features)
        low = check_number("init_low", init_low)
        high = check_number("init_high", init_high)
        if not low <= high:
            raise ValueError(
                f"init_low must be <= init_high; got init_low={init_low!r}, "
                f"init_high={init_high!r}."
            )
        self.plane_lr_scale = check_number("plane_lr_scale", plane_lr_scale, 0, low_open=True)
        self.tv_weight = check_number("tv_weight", tv_weight, 0)
        self.l1_weight = check_number("l1_weight", l1_weight, 0)
        self.concat_features = concat_features
        self.n_features = n_features
        table = torch.empty(self.layout.n_rows, n_features).uniform_(low, high)
        self.planes = torch.nn.Parameter(table)
        n_input = n_features * (self.layout.n_scales if concat_features else 1)
        self.decoder = DensityColorDecoder(
            n_input,
            n_hidden_density=n_hidden_density,
            n_density_layers=n_density_layers,
            geo_feat_dim=geo_feat_dim,
            n_hidden_color=n_hidden_color,
            n_color_layers=n_color_layers,
            direction_encoding=direction_encoding,
            sh_degree=sh_degree,
            n_harmonic_functions_dir=n_harmonic_functions_dir,
            density_activation=density_activation,
            density_bias=density_bias,
        )

    def encode(self, unit_points: torch.Tensor) -> torch.Tensor:
        """Plane features ``(K, S * C)`` (or ``(K, C)``) of points ``(K, 3)`` in the unit cube."""
        return plane_features(unit_points, self.planes, self.layout, self.concat_features)

    def plane_grids(self) -> list[torch.Tensor]:
        """Every plane as K-Planes' ``(1, C, R, R)`` tensor (a view; scale-major, then
        xy, xz, yz), e.g. for ``F.grid_sample``."""
        return [v.permute(2, 0, 1)[None] for v in plane_views(self.planes, self.layout)]

    def param_groups(self) -> list[ParamGroup]:
        """``planes`` at ``plane_lr_scale``, ``mlp`` (the decoder) at 1."""
        return [
            {"name": "planes", "params": [self.planes], "lr_scale": self.plane_lr_scale},
            {"name": "mlp", "params": list(self.decoder.parameters()), "lr_scale": 1.0},
        ]

    def loss_terms(self) -> dict[str, torch.Tensor]:
        """``plane_tv`` (``tv_weight`` x plane TV) and ``plane_l1`` (``l1_weight`` x mean
        ``|feature|``), each only when its weight is > 0."""
        terms = {}
        if self.tv_weight > 0.0:
            terms["plane_tv"] = self.tv_weight * plane_total_variation(self.planes, self.layout)
        if self.l1_weight > 0.0:
            terms["plane_l1"] = self.l1_weight * plane_l1(self.planes, self.layout)
        return terms
