"""The tutorial's neural radiance field."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from nerf_lab.encodings import HarmonicEmbedding
from nerf_lab.raymarchers import transmittance
from nerf_lab.raysamplers import RayBundle, ray_bundle_to_ray_points
from nerf_lab.renderer import chunked_volumetric_function
from nerf_lab.validate import check_choice, check_int, check_number

DENSITY_SCALINGS = ("none", "spacing")


def sample_spacing(lengths: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    """World-space distance between consecutive samples of each ray.

    The last sample reuses the spacing before it (not NeRF's 1e10), so that a ray whose
    densities are all small stays transparent.

    Args:
        lengths: ``(..., n_pts_per_ray)`` sorted depths.
        directions: ``(..., 3)`` ray directions (``lengths`` are in their units).

    Returns:
        ``(..., n_pts_per_ray)`` spacings.
    """
    if lengths.shape[-1] < 2:
        raise ValueError(
            f"Density scaling by sample spacing needs >= 2 points per ray; got {lengths.shape[-1]}."
        )
    deltas = lengths[..., 1:] - lengths[..., :-1]
    deltas = torch.cat((deltas, deltas[..., -1:]), dim=-1)
    return deltas * directions.norm(dim=-1, keepdim=True)


def density_to_opacity(
    raw_densities: torch.Tensor, spacing: torch.Tensor | None = None
) -> torch.Tensor:
    """Per-point opacity ``1 - exp(-sigma)`` (tutorial) or ``1 - exp(-sigma * delta)``.

    Args:
        raw_densities: ``(..., n_pts_per_ray, 1)`` non-negative densities ``sigma``.
        spacing: optional ``(..., n_pts_per_ray)`` sample spacings ``delta``.

    Returns:
        ``(..., n_pts_per_ray, 1)`` opacities in [0, 1].
    """
    if spacing is not None:
        raw_densities = raw_densities * spacing[..., None]
    return 1 - (-raw_densities).exp()


class NeuralRadianceField(torch.nn.Module):
    """The tutorial's NeRF MLP: ``forward(ray_bundle)`` → ``(densities, colors)``.

    Architecture and initialisation follow the tutorial exactly (the modules are created
    in the same order, so the same seed gives the same weights): a harmonic embedding of
    the points, two Linear+Softplus(beta=10) layers, a density head (Linear+Softplus with
    bias -1.5, mapped to an opacity by ``1 - exp(-x)``) and a colour head fed the features
    and the harmonic embedding of the normalised ray direction (Linear+Softplus, Linear,
    Sigmoid).

    The colour head's first layer is evaluated as ``features @ W_f + embed(dir) @ W_d + b``
    with the direction term computed once per ray instead of once per point: the same
    function as the tutorial's concatenation, with about a third fewer FLOPs.

    Args:
        n_harmonic_functions: frequencies of the harmonic embedding.
        n_hidden_neurons: width of the hidden layers.
        omega0: lowest harmonic frequency.
        density_scaling: ``"none"`` (tutorial: opacity ``1 - exp(-sigma)``) or
            ``"spacing"`` (``1 - exp(-sigma * delta)`` with the world-space sample spacing).
        render_color_threshold: when > 0, calls without autograd (rendering) decode
            colours only at points whose compositing weight ``alpha_i T_i`` exceeds it
            (``T_i = prod_{j<i} (1 - alpha_j)``, as the emission-absorption raymarcher);
            other points get colour 0, which changes a composited colour by at most
            ``n_pts_per_ray * render_color_threshold``. Densities are always exact, and
            training (autograd on) always evaluates every point. 0 (default): off.

    Returns of ``forward``: densities ``(..., n_pts_per_ray, 1)`` in [0, 1] and colours
    ``(..., n_pts_per_ray, 3)`` in [0, 1], for a bundle of leading shape ``(...)``.
    """

    def __init__(
        self,
        n_harmonic_functions: int = 60,
        n_hidden_neurons: int = 256,
        omega0: float = 0.1,
        density_scaling: str = "none",
        render_color_threshold: float = 0.0,
    ) -> None:
        super().__init__()
        check_int("n_hidden_neurons", n_hidden_neurons)
        check_choice("density_scaling", density_scaling, DENSITY_SCALINGS)
        self.density_scaling = density_scaling
        self.render_color_threshold = check_number(
            "render_color_threshold", render_color_threshold, 0, 1, high_open=True
        )
        self.harmonic_embedding = HarmonicEmbedding(n_harmonic_functions, omega0)
        embedding_dim = n_harmonic_functions * 2 * 3
        self.mlp = torch.nn.Sequential(
            torch.nn.Linear(embedding_dim, n_hidden_neurons),
            torch.nn.Softplus(beta=10.0),
            torch.nn.Linear(n_hidden_neurons, n_hidden_neurons),
            torch.nn.Softplus(beta=10.0),
        )
        self.color_layer = torch.nn.Sequential(
            torch.nn.Linear(n_hidden_neurons + embedding_dim, n_hidden_neurons),
            torch.nn.Softplus(beta=10.0),
            torch.nn.Linear(n_hidden_neurons, 3),
            torch.nn.Sigmoid(),
        )
        self.density_layer = torch.nn.Sequential(
            torch.nn.Linear(n_hidden_neurons, 1),
            torch.nn.Softplus(beta=10.0),
        )
        # The tutorial's initialisation: start with nearly transparent space.
        self.density_layer[0].bias.data[0] = -1.5
        self.n_hidden_neurons = n_hidden_neurons

    def _get_densities(
        self, features: torch.Tensor, lengths: torch.Tensor, directions: torch.Tensor
    ) -> torch.Tensor:
        # Always in fp32: under bf16 autocast the tiny initial densities (softplus of -1.5
        # with beta 10 is ~3e-8) round to exactly 0 and stop every density gradient.
        with torch.autocast(device_type=features.device.type, enabled=False):
            if features.dtype not in (torch.float32, torch.float64):
                features = features.float()
            raw_densities = self.density_layer(features)
        spacing = sample_spacing(lengths, directions) if self.density_scaling == "spacing" else None
        return density_to_opacity(raw_densities, spacing)

    def _color_first_layer_per_ray(self, rays_directions: torch.Tensor) -> torch.Tensor:
        """Direction part (and bias) of the colour head's first layer: ``(..., H)``."""
        rays_embedding = self.harmonic_embedding(F.normalize(rays_directions, dim=-1))
        first = self.color_layer[0]
        return F.linear(rays_embedding, first.weight[:, self.n_hidden_neurons :], first.bias)

    def _color_head(self, features: torch.Tensor, per_ray: torch.Tensor) -> torch.Tensor:
        """Colours ``(..., 3)`` from point features ``(..., H)`` and the per-ray part of the
        first layer (:meth:`_color_first_layer_per_ray`, broadcastable to ``(..., H)``)."""
        hidden = F.linear(features, self.color_layer[0].weight[:, : self.n_hidden_neurons])
        # In place: the matmul's backward does not need its output, and this saves a full
        # pass over the (n_rays, n_pts_per_ray, n_hidden) activations.
        hidden += per_ray
        for layer in self.color_layer[1:]:
            hidden = layer(hidden)
        return hidden

    def _get_colors(self, features: torch.Tensor, rays_directions: torch.Tensor) -> torch.Tensor:
        """Colours from point features ``(..., P, H)`` and directions ``(..., 3)``."""
        # Per-ray part of the first layer, broadcast over the points of each ray.
        per_ray = self._color_first_layer_per_ray(rays_directions)
        return self._color_head(features, per_ray[..., None, :])

    def forward(self, ray_bundle: RayBundle, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Densities ``(..., n_pts_per_ray, 1)`` and colours ``(..., n_pts_per_ray, 3)``."""
        rays_points_world = ray_bundle_to_ray_points(ray_bundle)
        embeds = self.harmonic_embedding(rays_points_world)
        features = self.mlp(embeds)
        rays_densities = self._get_densities(features, ray_bundle.lengths, ray_bundle.directions)
        if self.render_color_threshold > 0.0 and not torch.is_grad_enabled():
            rays_colors = self._get_visible_colors(
                features, ray_bundle.directions, rays_densities[..., 0]
            )
        else:
            rays_colors = self._get_colors(features, ray_bundle.directions)
        return rays_densities, rays_colors

    def _get_visible_colors(
        self, features: torch.Tensor, rays_directions: torch.Tensor, opacities: torch.Tensor
    ) -> torch.Tensor:
        """Colours ``(..., P, 3)`` decoded only where the compositing weight is above
        ``render_color_threshold`` (0 elsewhere), from features ``(..., P, H)``,
        directions ``(..., 3)`` and opacities ``(..., P)``."""
        lead, n_pts = opacities.shape[:-1], opacities.shape[-1]
        alphas = opacities.reshape(-1, n_pts).float()
        weights = alphas * transmittance(alphas)
        visible = (weights > self.render_color_threshold).reshape(-1).nonzero()[:, 0]
        per_ray = self._color_first_layer_per_ray(rays_directions.reshape(-1, 3))
        rgb = self._color_head(
            features.reshape(-1, features.shape[-1])[visible],
            per_ray[torch.div(visible, n_pts, rounding_mode="floor")],
        )
        colors = rgb.new_zeros(alphas.numel(), 3).index_copy_(0, visible, rgb)
        return colors.reshape(*lead, n_pts, 3)

    def batched_forward(
        self, ray_bundle: RayBundle, n_batches: int = 16, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The tutorial's ``batched_forward``: ``forward`` over ``n_batches`` chunks of rays.

        Prefer ``ImplicitRenderer(..., chunk_size=...)``, which also raymarches per chunk.
        """
        n_rays = ray_bundle.lengths[..., 0].numel()
        chunk = max(1, -(-n_rays // n_batches))
        return chunked_volumetric_function(self.forward, ray_bundle, chunk, **kwargs)
