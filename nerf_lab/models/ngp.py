"""Instant-NGP's field (Müller et al. 2022) in pure PyTorch: a multiresolution hash
encoding of the points in a box, a one-hidden-layer density MLP and a view-dependent
colour MLP (nerfacc's ``NGPradianceField`` without tiny-cuda-nn).

Points are normalised into the unit cube of ``aabb`` and encoded by
:class:`nerf_lab.encodings_hash.MultiresolutionHashEncoding`; densities and colours come
from :class:`nerf_lab.models.hybrid.DensityColorDecoder`; opacities are ``1 -
exp(-sigma * delta)`` with ``delta`` the world-space sample spacing. Points outside the
box are empty (density 0) and are not evaluated.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from nerf_lab.encodings_hash import MultiresolutionHashEncoding
from nerf_lab.hooks import ParamGroup
from nerf_lab.models.hybrid import DensityColorDecoder, EncodedField
from nerf_lab.validate import check_number

__all__ = ["NGPField"]


class NGPField(EncodedField):
    """Hash-grid field: ``forward(ray_bundle)`` -> ``(opacities, colors)``.

    Args:
        n_levels: hash levels ``L`` (Instant-NGP: 16).
        n_features_per_level: features per level ``F`` (2).
        log2_hashmap_size: ``log2 T``, entries per level (Instant-NGP: 19; 17 here, a
            quarter of the table for the small scenes a CPU trains).
        base_resolution: coarsest grid resolution ``N_min`` (16).
        max_resolution: finest grid resolution ``N_max`` (Instant-NGP: 512 to 524288 by
            scene size; 512 here).
        hash_init_scale: table entries start uniform in ``[-s, s]`` (Instant-NGP: 1e-4).
        aabb: the box ``[x_min, y_min, z_min, x_max, y_max, z_max]`` the grid covers;
            points outside are empty.
        n_hidden_density, n_density_layers, geo_feat_dim, n_hidden_color, n_color_layers,
        direction_encoding, sh_degree, n_harmonic_functions_dir, density_activation,
        density_bias: the decoder (:class:`~nerf_lab.models.hybrid.DensityColorDecoder`;
            defaults are Instant-NGP's / nerfacc's).
        table_lr_scale: learning rate of the hash table relative to the optimiser's ``lr``
            (the MLPs use 1). 10: with ``lr`` 3e-3, 0.03.
        mlp_l2_weight: weight of the L2 penalty ``sum w**2`` on the MLP weight matrices
            (Instant-NGP: 1e-6); 0: off.
        render_color_threshold: renders (no autograd) decode colours only at points whose
            compositing weight exceeds it (:class:`~nerf_lab.models.hybrid.EncodedField`);
            0: every point.

    ``param_groups()``: ``hash_table`` (at ``table_lr_scale``) and ``mlp`` (1.0).
    ``loss_terms()``: ``{"mlp_l2": ...}`` when ``mlp_l2_weight > 0``.
    """

    def __init__(
        self,
        n_levels: int = 16,
        n_features_per_level: int = 2,
        log2_hashmap_size: int = 17,
        base_resolution: int = 16,
        max_resolution: int = 512,
        hash_init_scale: float = 1e-4,
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
        table_lr_scale: float = 10.0,
        mlp_l2_weight: float = 0.0,
        render_color_threshold: float = 1.0e-5,
    ) -> None:
        super().__init__(aabb, render_color_threshold)
        self.table_lr_scale = check_number("table_lr_scale", table_lr_scale, 0, low_open=True)
        self.mlp_l2_weight = check_number("mlp_l2_weight", mlp_l2_weight, 0)
        self.encoding = MultiresolutionHashEncoding(
            n_levels=n_levels,
            n_features_per_level=n_features_per_level,
            log2_hashmap_size=log2_hashmap_size,
            base_resolution=base_resolution,
            max_resolution=max_resolution,
            init_scale=hash_init_scale,
        )
        self.decoder = DensityColorDecoder(
            self.encoding.get_output_dim(),
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
        """Hash features ``(K, L * F)`` of points ``(K, 3)`` in the unit cube."""
        return self.encoding(unit_points)

    def param_groups(self) -> list[ParamGroup]:
        """``hash_table`` at ``table_lr_scale``, ``mlp`` (the decoder) at 1."""
        return [
            {"name": "hash_table", "params": [self.encoding.table],
             "lr_scale": self.table_lr_scale},
            {"name": "mlp", "params": list(self.decoder.parameters()), "lr_scale": 1.0},
        ]  # fmt: skip

    def loss_terms(self) -> dict[str, torch.Tensor]:
        """``mlp_l2``: ``mlp_l2_weight * sum(W**2)`` over the decoder's weight matrices."""
        if self.mlp_l2_weight == 0.0:
            return {}
        weights = [p for n, p in self.decoder.named_parameters() if n.endswith("weight")]
        penalty = sum(w.square().sum() for w in weights if w.requires_grad)
        return {"mlp_l2": self.mlp_l2_weight * penalty}
