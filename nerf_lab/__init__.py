"""nerf_lab: PyTorch3D's NeRF tutorial as a Hydra research framework, in pure PyTorch.

The names below match PyTorch3D's, so tutorial code only changes its imports::

    from nerf_lab import FoVPerspectiveCameras, NDCMultinomialRaysampler, ...
"""

from nerf_lab.cameras import (
    FoVPerspectiveCameras,
    PerspectiveCameras,
    look_at_rotation,
    look_at_view_transform,
    so3_exp_map,
)
from nerf_lab.data import Scene, generate_cow_renders
from nerf_lab.encodings import HarmonicEmbedding
from nerf_lab.models.base import RadianceField
from nerf_lab.models.nerf import NeuralRadianceField
from nerf_lab.raymarchers import EmissionAbsorptionRaymarcher, RenderOutput
from nerf_lab.raysamplers import (
    MonteCarloRaysampler,
    NDCMultinomialRaysampler,
    RayBundle,
    ray_bundle_to_ray_points,
)
from nerf_lab.renderer import ImplicitRenderer, Renderer, Resampler

__version__ = "0.1.0"

__all__ = [
    "EmissionAbsorptionRaymarcher",
    "FoVPerspectiveCameras",
    "HarmonicEmbedding",
    "ImplicitRenderer",
    "MonteCarloRaysampler",
    "NDCMultinomialRaysampler",
    "NeuralRadianceField",
    "RadianceField",
    "PerspectiveCameras",
    "RayBundle",
    "RenderOutput",
    "Renderer",
    "Resampler",
    "Scene",
    "generate_cow_renders",
    "look_at_rotation",
    "look_at_view_transform",
    "ray_bundle_to_ray_points",
    "so3_exp_map",
]
