"""Radiance fields: ``forward(ray_bundle)`` → ``(densities, colors)``."""

from nerf_lab.models.nerf import NeuralRadianceField

__all__ = ["NeuralRadianceField"]
