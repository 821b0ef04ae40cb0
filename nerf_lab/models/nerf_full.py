"""The full NeRF MLP of PyTorch3D's ``projects/nerf`` (``nerf/implicit_function.py``).

``NeRFFullField`` is PyTorch3D's ``NeuralRadianceField`` of that project (Mildenhall et
al. 2020, supplementary Fig. 7), with its class layout, module names, creation order and
initialisation (so the same seed gives the same weights):

* ``harmonic_embedding_xyz`` / ``harmonic_embedding_dir``: PyTorch3D's library
  ``HarmonicEmbedding`` (``omega_0=1``, log-spaced frequencies, input appended) of the
  points and of the normalised ray directions;
* ``mlp_xyz``: :class:`MLPWithInputSkips`, ``n_layers_xyz`` Linear+ReLU layers of
  ``n_hidden_neurons_xyz`` with the point embedding appended before the layers in
  ``append_xyz`` (Xavier-uniform weights);
* ``density_layer``: Linear from the xyz features (Xavier, zero bias), raw density
  ``r``, opacity ``1 - exp(-relu(r + noise) * delta)``;
* ``intermediate_linear`` (no activation) and ``color_layer``: :class:`LinearWithRepeat`
  on ``[features, direction embedding]`` -> ReLU -> Linear(3) -> sigmoid.

``delta`` is the spacing of consecutive samples, ``1e10`` after the last one (PyTorch3D;
``last_spacing="repeat"`` repeats the previous spacing instead). PyTorch3D's
``projects/nerf`` samples rays with unit directions, so its ``lengths`` are world
distances; nerf_lab's rays have view-space z = 1, so the spacing here is ``diff(lengths) *
|direction|``: the same world-space spacing. ``density_noise_std`` adds Gaussian noise to
the raw densities in training (PyTorch3D passes it to ``forward`` in training, 0 in
evaluation; here the constructor value is used while ``self.training``, and a
``density_noise_std`` keyword of ``forward`` overrides it).

Not nerf_lab's tutorial field (:class:`nerf_lab.models.NeuralRadianceField`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from nerf_lab.encodings import HarmonicEmbedding
from nerf_lab.hooks import ParamGroup
from nerf_lab.models.base import RadianceField
from nerf_lab.raysamplers import RayBundle, ray_bundle_to_ray_points
from nerf_lab.validate import check_bool, check_choice, check_int, check_number, is_int

__all__ = ["LAST_SPACINGS", "LinearWithRepeat", "MLPWithInputSkips", "NeRFFullField",
           "nerf_deltas"]  # fmt: skip

LAST_SPACINGS = ("far", "repeat")


def _xavier_init(linear: torch.nn.Linear) -> None:
    torch.nn.init.xavier_uniform_(linear.weight.data)


def nerf_deltas(
    lengths: torch.Tensor, directions: torch.Tensor, last_spacing: str = "far"
) -> torch.Tensor:
    """World-space spacing of consecutive samples, NeRF's ``1e10`` after the last one.

    Args:
        lengths: ``(..., n_pts_per_ray)`` sorted depths.
        directions: ``(..., 3)`` ray directions (``lengths`` are in their units).
        last_spacing: ``"far"`` (``1e10``, PyTorch3D / NeRF) or ``"repeat"`` (the spacing
            before it; needs ``n_pts_per_ray >= 2``).

    Returns:
        ``(..., n_pts_per_ray)``.
    """
    check_choice("last_spacing", last_spacing, LAST_SPACINGS)
    deltas = lengths[..., 1:] - lengths[..., :-1]
    if last_spacing == "far":
        last = torch.full_like(lengths[..., :1], 1e10)
    else:
        if lengths.shape[-1] < 2:
            raise ValueError(
                f"last_spacing='repeat' needs >= 2 points per ray; got {lengths.shape[-1]}."
            )
        last = deltas[..., -1:]
    return torch.cat((deltas, last), dim=-1) * directions.norm(dim=-1, keepdim=True)


class LinearWithRepeat(torch.nn.Module):
    """PyTorch3D's ``LinearWithRepeat``: a Linear on ``[x, y]`` with ``y`` shared along the
    points of a ray.

    ``forward((x (..., k, n1), y (..., n2)))`` equals ``Linear(n1 + n2, out)`` on
    ``cat([x, y[..., None, :].expand(..., k, n2)], -1)``: ``(..., k, out_features)``.
    Initialised as ``torch.nn.Linear``.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.weight = torch.nn.Parameter(torch.empty(out_features, in_features))
        if bias:
            self.bias = torch.nn.Parameter(torch.empty(out_features))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """``torch.nn.Linear``'s initialisation."""
        torch.nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.weight.shape[1]
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
            torch.nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, input: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        n1 = input[0].shape[-1]
        output1 = F.linear(input[0], self.weight[:, :n1], self.bias)
        output2 = F.linear(input[1], self.weight[:, n1:], None)
        return output1 + output2.unsqueeze(-2)


class MLPWithInputSkips(torch.nn.Module):
    """PyTorch3D's ``MLPWithInputSkips``: Linear+ReLU layers; before each layer whose index
    is in ``input_skips`` the skip tensor ``z`` is appended to the features.

    Args:
        n_layers: number of Linear+ReLU layers.
        input_dim: channels of the input ``x``.
        output_dim: channels of the output (= ``hidden_dim`` as PyTorch3D builds it).
        skip_dim: channels of ``z``.
        hidden_dim: hidden units.
        input_skips: layer indices that also take ``z``.

    ``forward(x (..., input_dim), z (..., skip_dim))`` returns ``(..., hidden_dim)``.
    """

    def __init__(
        self,
        n_layers: int,
        input_dim: int,
        output_dim: int,
        skip_dim: int,
        hidden_dim: int,
        input_skips: Sequence[int] = (),
    ) -> None:
        super().__init__()
        layers = []
        for layeri in range(n_layers):
            if layeri == 0:
                dimin, dimout = input_dim, hidden_dim
            elif layeri in input_skips:
                dimin, dimout = hidden_dim + skip_dim, hidden_dim
            else:
                dimin, dimout = hidden_dim, hidden_dim
            linear = torch.nn.Linear(dimin, dimout)
            _xavier_init(linear)
            layers.append(torch.nn.Sequential(linear, torch.nn.ReLU(True)))
        self.mlp = torch.nn.ModuleList(layers)
        self._input_skips = set(input_skips)

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        y = x
        for li, layer in enumerate(self.mlp):
            if li in self._input_skips:
                y = torch.cat((y, z), dim=-1)
            y = layer(y)
        return y


class NeRFFullField(RadianceField):
    """PyTorch3D ``projects/nerf``'s NeRF MLP: ``forward(ray_bundle)`` -> ``(opacities,
    colors)`` (see the module docstring).

    Args:
        n_harmonic_functions_xyz: frequencies of the point embedding (PyTorch3D's configs:
            10).
        n_harmonic_functions_dir: frequencies of the direction embedding (4).
        n_hidden_neurons_xyz: width of the xyz MLP (256).
        n_hidden_neurons_dir: width of the colour MLP (128).
        n_layers_xyz: layers of the xyz MLP (8).
        append_xyz: indices of the xyz layers that also take the point embedding ((5,)),
            each in ``[1, n_layers_xyz)``.
        use_multiple_streams: on CUDA, compute densities and colours on two streams.
        density_noise_std: std of the Gaussian noise on the raw densities while training
            (0: none, PyTorch3D's configs).
        last_spacing: ``"far"`` (the last sample's spacing is ``1e10``, PyTorch3D) or
            ``"repeat"``.

    ``param_groups()``: one ``mlp`` group at 1.0; no loss terms.
    """

    def __init__(
        self,
        n_harmonic_functions_xyz: int = 10,
        n_harmonic_functions_dir: int = 4,
        n_hidden_neurons_xyz: int = 256,
        n_hidden_neurons_dir: int = 128,
        n_layers_xyz: int = 8,
        append_xyz: Sequence[int] = (5,),
        use_multiple_streams: bool = True,
        density_noise_std: float = 0.0,
        last_spacing: str = "far",
    ) -> None:
        super().__init__()
        for name, value in (
            ("n_harmonic_functions_xyz", n_harmonic_functions_xyz),
            ("n_harmonic_functions_dir", n_harmonic_functions_dir),
            ("n_hidden_neurons_xyz", n_hidden_neurons_xyz),
            ("n_hidden_neurons_dir", n_hidden_neurons_dir),
            ("n_layers_xyz", n_layers_xyz),
        ):
            check_int(name, value)
        skips = list(append_xyz) if isinstance(append_xyz, Sequence) else None
        if skips is None or any(not is_int(i) or not 1 <= i < n_layers_xyz for i in skips):
            raise ValueError(
                f"append_xyz must be a list of layer indices in [1, {n_layers_xyz}) "
                f"(n_layers_xyz={n_layers_xyz}); got {append_xyz!r}."
            )
        check_bool("use_multiple_streams", use_multiple_streams)
        self.density_noise_std = check_number("density_noise_std", density_noise_std, 0)
        check_choice("last_spacing", last_spacing, LAST_SPACINGS)
        self.last_spacing = last_spacing

        self.harmonic_embedding_xyz = HarmonicEmbedding(
            n_harmonic_functions_xyz, omega0=1.0, append_input=True
        )
        self.harmonic_embedding_dir = HarmonicEmbedding(
            n_harmonic_functions_dir, omega0=1.0, append_input=True
        )
        embedding_dim_xyz = n_harmonic_functions_xyz * 2 * 3 + 3
        embedding_dim_dir = n_harmonic_functions_dir * 2 * 3 + 3

        self.mlp_xyz = MLPWithInputSkips(
            n_layers_xyz,
            embedding_dim_xyz,
            n_hidden_neurons_xyz,
            embedding_dim_xyz,
            n_hidden_neurons_xyz,
            input_skips=tuple(skips),
        )
        self.intermediate_linear = torch.nn.Linear(n_hidden_neurons_xyz, n_hidden_neurons_xyz)
        _xavier_init(self.intermediate_linear)
        self.density_layer = torch.nn.Linear(n_hidden_neurons_xyz, 1)
        _xavier_init(self.density_layer)
        # PyTorch3D: zero bias, to avoid a completely transparent initialisation.
        self.density_layer.bias.data[:] = 0.0
        self.color_layer = torch.nn.Sequential(
            LinearWithRepeat(n_hidden_neurons_xyz + embedding_dim_dir, n_hidden_neurons_dir),
            torch.nn.ReLU(True),
            torch.nn.Linear(n_hidden_neurons_dir, 3),
            torch.nn.Sigmoid(),
        )
        self.use_multiple_streams = use_multiple_streams

    def _get_densities(
        self,
        features: torch.Tensor,
        lengths: torch.Tensor,
        directions: torch.Tensor,
        density_noise_std: float,
    ) -> torch.Tensor:
        """Opacities ``(..., P, 1)`` from xyz features ``(..., P, H)``."""
        raw_densities = self.density_layer(features)
        deltas = nerf_deltas(lengths, directions, self.last_spacing)[..., None]
        if density_noise_std > 0.0:
            raw_densities = raw_densities + torch.randn_like(raw_densities) * density_noise_std
        return 1 - (-deltas * torch.relu(raw_densities)).exp()

    def _get_colors(self, features: torch.Tensor, rays_directions: torch.Tensor) -> torch.Tensor:
        """Colours ``(..., P, 3)`` from xyz features ``(..., P, H)`` and directions ``(..., 3)``."""
        rays_directions_normed = F.normalize(rays_directions, dim=-1)
        rays_embedding = self.harmonic_embedding_dir(rays_directions_normed)
        return self.color_layer((self.intermediate_linear(features), rays_embedding))

    def _get_densities_and_colors(
        self, features: torch.Tensor, ray_bundle: RayBundle, density_noise_std: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.use_multiple_streams and features.is_cuda:
            current_stream = torch.cuda.current_stream(features.device)
            other_stream = torch.cuda.Stream(features.device)
            other_stream.wait_stream(current_stream)
            with torch.cuda.stream(other_stream):
                rays_densities = self._get_densities(
                    features, ray_bundle.lengths, ray_bundle.directions, density_noise_std
                )
            rays_colors = self._get_colors(features, ray_bundle.directions)
            current_stream.wait_stream(other_stream)
        else:
            rays_densities = self._get_densities(
                features, ray_bundle.lengths, ray_bundle.directions, density_noise_std
            )
            rays_colors = self._get_colors(features, ray_bundle.directions)
        return rays_densities, rays_colors

    def forward(
        self, ray_bundle: RayBundle, density_noise_std: float | None = None, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Opacities ``(..., n_pts_per_ray, 1)`` in [0, 1], colours ``(..., n_pts_per_ray, 3)``.

        Args:
            density_noise_std: noise std on the raw densities; ``None``: the constructor's
                value while training, 0 in evaluation.
        """
        if density_noise_std is None:
            density_noise_std = self.density_noise_std if self.training else 0.0
        rays_points_world = ray_bundle_to_ray_points(ray_bundle)
        embeds_xyz = self.harmonic_embedding_xyz(rays_points_world)
        features = self.mlp_xyz(embeds_xyz, embeds_xyz)
        return self._get_densities_and_colors(features, ray_bundle, density_noise_std)

    def param_groups(self) -> list[ParamGroup]:
        """One group, ``mlp``, at 1."""
        return [{"name": "mlp", "params": list(self.parameters()), "lr_scale": 1.0}]
