"""Hybrid fields (an explicit encoding + small MLPs): the base class of Instant-NGP's and
K-Planes' fields, their shared density/colour decoder, density activation and scene box.

:class:`EncodedField` evaluates a field only at points inside its box (points outside get
density 0 and colour 0), encodes them (the subclass's :meth:`EncodedField.encode`),
decodes densities and colours with :class:`DensityColorDecoder` and turns densities into
opacities ``1 - exp(-sigma * delta)`` with ``delta`` the world-space sample spacing
(:func:`nerf_lab.models.nerf.sample_spacing`), so one field works with any number of
points per ray (at least 2).

The decoder (Instant-NGP, Müller et al. 2022; K-Planes' hybrid model uses the same):

* density MLP: encoded point -> ``n_hidden_density`` (ReLU, ``n_density_layers`` hidden
  layers) -> ``1 + geo_feat_dim``; the first output, shifted by ``density_bias``, goes
  through the density activation (``trunc_exp``: ``exp`` with a gradient clamped at
  ``exp(15)``, nerfacc's ``trunc_exp(x - 1)``), the others are geometry features;
* colour MLP: ``[geometry features, encoded view direction]`` -> ``n_hidden_color``
  (ReLU, ``n_color_layers`` hidden layers) -> 3 -> sigmoid. The view direction is the same
  for every point of a ray, so its part of the first layer is computed once
  per ray (PyTorch3D's ``LinearWithRepeat``).

tiny-cuda-nn's fully fused MLPs have no biases; these ``torch.nn.Linear`` layers do.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from nerf_lab.encodings import HarmonicEmbedding, SphericalHarmonicsEncoding
from nerf_lab.models.base import RadianceField
from nerf_lab.models.nerf import sample_spacing
from nerf_lab.raymarchers import transmittance
from nerf_lab.raysamplers import RayBundle, ray_bundle_to_ray_points
from nerf_lab.validate import check_choice, check_int, check_number

__all__ = [
    "DENSITY_ACTIVATIONS",
    "DIRECTION_ENCODINGS",
    "DensityColorDecoder",
    "EncodedField",
    "density_activation",
    "normalize_aabb",
    "parse_aabb",
    "scatter_rows",
    "trunc_exp",
]

DENSITY_ACTIVATIONS = ("trunc_exp", "exp", "softplus", "relu")
DIRECTION_ENCODINGS = ("sh", "harmonic", "none")


class _TruncExp(torch.autograd.Function):
    """``exp(x)`` whose gradient uses ``exp(min(x, 15))`` (torch-ngp, nerfacc, K-Planes)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return torch.exp(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return grad * torch.exp(x.clamp(max=15.0))


def trunc_exp(x: torch.Tensor) -> torch.Tensor:
    """``exp(x)`` with the gradient of ``exp(min(x, 15))``: large raw densities cannot
    produce exploding gradients. Same shape as ``x``."""
    return _TruncExp.apply(x)


def density_activation(raw: torch.Tensor, name: str) -> torch.Tensor:
    """Non-negative density ``sigma`` from raw values (same shape), by name
    (:data:`DENSITY_ACTIVATIONS`)."""
    if name == "trunc_exp":
        return trunc_exp(raw)
    if name == "exp":
        return raw.exp()
    if name == "softplus":
        return F.softplus(raw)
    if name == "relu":
        return F.relu(raw)
    raise ValueError(f"density_activation must be one of {DENSITY_ACTIVATIONS}; got {name!r}.")


def parse_aabb(aabb: Sequence[float]) -> torch.Tensor:
    """``[x_min, y_min, z_min, x_max, y_max, z_max]`` (nerfacc's order) -> ``(2, 3)``.

    Raises ``ValueError`` unless there are 6 finite numbers with min < max per axis.
    """
    try:
        values = [float(v) for v in aabb]
    except (TypeError, ValueError):
        values = []
    box = torch.tensor(values, dtype=torch.float64) if len(values) == 6 else None
    if box is None or not bool(torch.isfinite(box).all()) or not bool((box[:3] < box[3:]).all()):
        raise ValueError(
            "aabb must be 6 finite numbers [x_min, y_min, z_min, x_max, y_max, z_max] with "
            f"min < max on every axis; got {aabb!r}."
        )
    return box.reshape(2, 3).float()


def normalize_aabb(points: torch.Tensor, aabb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Map the box to the unit cube.

    Args:
        points: ``(..., 3)`` world points.
        aabb: ``(2, 3)`` box corners (:func:`parse_aabb`).

    Returns:
        ``(..., 3)`` points in box units (``[0, 1]^3`` inside) and the ``(...)`` bool
        mask of points inside the closed box.
    """
    lo, hi = aabb[0].to(points), aabb[1].to(points)
    unit = (points - lo) / (hi - lo)
    inside = ((unit >= 0.0) & (unit <= 1.0)).all(dim=-1)
    return unit, inside


def scatter_rows(values: torch.Tensor, index: torch.Tensor, n: int) -> torch.Tensor:
    """Rows ``values`` placed at ``index`` of an ``(n, C)`` tensor of zeros (differentiable).

    Args:
        values: ``(K, C)``.
        index: ``(K,)`` int64 distinct row indices.

    Returns:
        ``(n, C)``.
    """
    return values.new_zeros(n, values.shape[-1]).index_copy(0, index, values)


def _mlp(n_in: int, n_hidden: int, n_hidden_layers: int, n_out: int) -> torch.nn.Sequential:
    layers: list[torch.nn.Module] = []
    width = n_in
    for _ in range(n_hidden_layers):
        layers += [torch.nn.Linear(width, n_hidden), torch.nn.ReLU(inplace=True)]
        width = n_hidden
    layers.append(torch.nn.Linear(width, n_out))
    return torch.nn.Sequential(*layers)


class DensityColorDecoder(torch.nn.Module):
    """Instant-NGP's density MLP and view-dependent colour MLP (see the module docstring).

    Args:
        n_input: features of an encoded point.
        n_hidden_density: width of the density MLP (64).
        n_density_layers: hidden layers of the density MLP (1).
        geo_feat_dim: geometry features passed to the colour MLP (15).
        n_hidden_color: width of the colour MLP (64).
        n_color_layers: hidden layers of the colour MLP (2, at least 1).
        direction_encoding: ``"sh"`` (spherical harmonics of ``sh_degree`` bands),
            ``"harmonic"`` (``n_harmonic_functions_dir`` frequencies, PyTorch3D's
            ``HarmonicEmbedding`` with the input appended) or ``"none"`` (no view
            dependence).
        sh_degree: bands of the spherical harmonics (4: 16 components).
        n_harmonic_functions_dir: frequencies of the harmonic direction encoding.
        density_activation: one of :data:`DENSITY_ACTIVATIONS`.
        density_bias: added to the raw density before the activation (nerfacc: -1).
    """

    def __init__(
        self,
        n_input: int,
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
    ) -> None:
        super().__init__()
        check_int("n_input", n_input)
        check_int("n_hidden_density", n_hidden_density)
        check_int("n_density_layers", n_density_layers, 0)
        check_int("geo_feat_dim", geo_feat_dim)
        check_int("n_hidden_color", n_hidden_color)
        check_int("n_color_layers", n_color_layers)
        check_choice("direction_encoding", direction_encoding, DIRECTION_ENCODINGS)
        check_choice("density_activation", density_activation, DENSITY_ACTIVATIONS)
        self.density_bias = check_number("density_bias", density_bias)
        self.density_activation = density_activation
        self.geo_feat_dim = geo_feat_dim
        self.direction_encoding = direction_encoding
        self.dir_encoder: torch.nn.Module | None
        if direction_encoding == "sh":
            self.dir_encoder = SphericalHarmonicsEncoding(sh_degree)
            n_dir = self.dir_encoder.get_output_dim()
        elif direction_encoding == "harmonic":
            check_int("n_harmonic_functions_dir", n_harmonic_functions_dir)
            self.dir_encoder = HarmonicEmbedding(
                n_harmonic_functions_dir, omega0=1.0, append_input=True
            )
            n_dir = self.dir_encoder.get_output_dim(3)
        else:
            self.dir_encoder = None
            n_dir = 0
        self.density_mlp = _mlp(n_input, n_hidden_density, n_density_layers, 1 + geo_feat_dim)
        # The first colour layer, Linear on [geo features, direction encoding], evaluated
        # in two parts (per point, per ray) as PyTorch3D's LinearWithRepeat.
        self.color_first = torch.nn.Linear(geo_feat_dim + n_dir, n_hidden_color)
        self.color_mlp = torch.nn.Sequential(
            torch.nn.ReLU(inplace=True), _mlp(n_hidden_color, n_hidden_color, n_color_layers - 1, 3)
        )

    def density(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Density ``sigma`` and geometry features of encoded points.

        Args:
            features: ``(N, n_input)``.

        Returns:
            sigma ``(N,)`` (non-negative, at least float32) and geometry features
            ``(N, geo_feat_dim)``.
        """
        out = self.density_mlp(features)
        raw = out[:, 0]
        if raw.dtype in (torch.float16, torch.bfloat16):
            raw = raw.float()  # the activation in fp32 under autocast (as nerfacc)
        if self.density_bias != 0.0:
            raw = raw + self.density_bias
        return density_activation(raw, self.density_activation), out[:, 1:]

    def per_ray(self, directions: torch.Tensor) -> torch.Tensor:
        """Direction part of the first colour layer (zeros without a direction encoding).

        Args:
            directions: ``(n_rays, 3)`` ray directions (any length but 0).

        Returns:
            ``(n_rays, n_hidden_color)``.
        """
        weight = self.color_first.weight[:, self.geo_feat_dim :]
        if self.dir_encoder is None:
            return weight.new_zeros(directions.shape[0], weight.shape[0])
        if self.direction_encoding == "harmonic":
            directions = F.normalize(directions, dim=-1)
        return F.linear(self.dir_encoder(directions), weight)

    def color(self, geo: torch.Tensor, per_ray: torch.Tensor) -> torch.Tensor:
        """RGB in [0, 1] from geometry features and the per-ray first-layer part.

        Args:
            geo: ``(N, geo_feat_dim)``.
            per_ray: ``(N, n_hidden_color)`` (:meth:`per_ray`, gathered per point).

        Returns:
            ``(N, 3)``.
        """
        first = self.color_first
        hidden = F.linear(geo, first.weight[:, : self.geo_feat_dim], first.bias) + per_ray
        return torch.sigmoid(self.color_mlp(hidden))


class EncodedField(RadianceField):
    """Base of the hybrid fields: box test, encoding, :class:`DensityColorDecoder`.

    Subclasses set ``self.decoder`` and implement :meth:`encode`.

    Args:
        aabb: the scene box ``[x_min, y_min, z_min, x_max, y_max, z_max]``; the encoding
            covers it, points outside are empty.
        render_color_threshold: when > 0, calls without autograd (renders) decode colours
            only at points whose compositing weight ``alpha_i T_i`` along their ray
            exceeds it (``T_i = prod_{j<i} (1 - alpha_j)``, the emission-absorption
            raymarcher's); the other points get colour 0, which changes a composited
            colour by at most ``n_pts_per_ray * render_color_threshold``. Densities are
            always exact, and training (autograd on) decodes every point. The colour MLP
            is the larger of the two MLPs, and most points of a render lie in empty space
            or behind a surface. 0: off.
    """

    decoder: DensityColorDecoder

    def __init__(self, aabb: Sequence[float], render_color_threshold: float = 1.0e-5) -> None:
        super().__init__()
        self.register_buffer("aabb", parse_aabb(aabb))
        self.render_color_threshold = check_number(
            "render_color_threshold", render_color_threshold, 0, 1, high_open=True
        )

    def encode(self, unit_points: torch.Tensor) -> torch.Tensor:
        """Features ``(K, n_input)`` of points ``(K, 3)`` in the unit cube (the box)."""
        raise NotImplementedError

    def query(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Density and geometry features at world points, for the points inside the box.

        Args:
            points: ``(N, 3)`` world points.

        Returns:
            ``index`` ``(K,)`` (int64, the points inside the box), ``sigma`` ``(K,)`` and
            geometry features ``(K, geo_feat_dim)`` at those points.
        """
        unit, inside = normalize_aabb(points, self.aabb)
        index = inside.nonzero()[:, 0]
        sigma, geo = self.decoder.density(self.encode(unit[index]))
        return index, sigma, geo

    def densities(self, points: torch.Tensor) -> torch.Tensor:
        """Density ``sigma`` ``(N,)`` at world points ``(N, 3)`` (0 outside the box)."""
        index, sigma, _ = self.query(points)
        return sigma.new_zeros(points.shape[0]).index_copy(0, index, sigma)

    def forward(self, ray_bundle: RayBundle, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Opacities ``(..., n_pts_per_ray, 1)`` in [0, 1], colours ``(..., n_pts_per_ray, 3)``.

        Needs ``n_pts_per_ray >= 2`` (the sample spacing).
        """
        points = ray_bundle_to_ray_points(ray_bundle)  # (..., P, 3)
        lead, n_pts = points.shape[:-2], points.shape[-2]
        spacing = sample_spacing(ray_bundle.lengths, ray_bundle.directions)  # (..., P)
        flat = points.reshape(-1, 3)
        n = flat.shape[0]
        index, sigma, geo = self.query(flat)
        sigma = sigma.new_zeros(n).index_copy(0, index, sigma).reshape(*lead, n_pts)
        opacities = 1.0 - torch.exp(-sigma * spacing)
        if self.render_color_threshold > 0.0 and not torch.is_grad_enabled():
            # Only the points that show: weight alpha_i T_i above the threshold.
            alphas = opacities.reshape(-1, n_pts).float()
            weights = (alphas * transmittance(alphas)).reshape(-1)
            visible = (weights[index] > self.render_color_threshold).nonzero()[:, 0]
            index, geo = index[visible], geo[visible]
        per_ray = self.decoder.per_ray(ray_bundle.directions.reshape(-1, 3))
        rgb = self.decoder.color(geo, per_ray[torch.div(index, n_pts, rounding_mode="floor")])
        colors = scatter_rows(rgb, index, n).reshape(*lead, n_pts, 3)
        return opacities[..., None], colors
