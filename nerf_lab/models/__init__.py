"""Radiance fields: ``forward(ray_bundle)`` → ``(densities, colors)``.

Any ``torch.nn.Module`` with that ``forward`` is a field; :class:`RadianceField` is the
optional base class with training hooks (see :mod:`nerf_lab.models.base`).
"""

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
