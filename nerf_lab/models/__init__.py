"""Radiance fields: ``forward(ray_bundle)`` → ``(densities, colors)``."""

from nerf_lab.models.base import RadianceField
from nerf_lab.models.fast import FastRadianceField
from nerf_lab.models.kplanes import KPlanesField
from nerf_lab.models.nerf import NeuralRadianceField
from nerf_lab.models.nerf_full import NeRFFullField
from nerf_lab.models.ngp import NGPField

__all__ = [
    "FastRadianceField",
    "KPlanesField",
    "NGPField",
    "NeRFFullField",
    "NeuralRadianceField",
    "RadianceField",
]
