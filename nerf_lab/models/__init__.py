"""Radiance fields: ``forward(ray_bundle)`` → ``(densities, colors)``."""

from nerf_lab.models.fast import FastRadianceField
from nerf_lab.models.nerf import NeuralRadianceField

__all__ = ["FastRadianceField", "NeuralRadianceField"]
