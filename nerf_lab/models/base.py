"""The field contract and an optional base class.

**Contract** (the tutorial's): a field is a ``torch.nn.Module`` whose
``forward(ray_bundle, **kwargs)`` returns

* ``densities``: ``(..., n_pts_per_ray, 1)`` per-point opacities in [0, 1], and
* ``colors``: ``(..., n_pts_per_ray, 3)`` in [0, 1],

for a :class:`~nerf_lab.raysamplers.RayBundle` of leading shape ``(...)``. Any module
with that ``forward`` trains, renders and evaluates in nerf_lab without subclassing
anything: it gets one parameter group, no extra loss terms and no per-step callback.

:class:`RadianceField` is the optional base that adds those hooks (see
:class:`nerf_lab.hooks.TrainingHooks`).
"""

from __future__ import annotations

from typing import Any

import torch

from nerf_lab.hooks import TrainingHooks
from nerf_lab.raysamplers import RayBundle


class RadianceField(TrainingHooks, torch.nn.Module):
    """Base class for fields that want named parameter groups, loss terms or a callback.

    Subclasses implement :meth:`forward` and override any of
    :meth:`~nerf_lab.hooks.TrainingHooks.param_groups`,
    :meth:`~nerf_lab.hooks.TrainingHooks.loss_terms` and
    :meth:`~nerf_lab.hooks.TrainingHooks.on_train_step`.
    """

    def forward(self, ray_bundle: RayBundle, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Densities ``(..., n_pts_per_ray, 1)`` in [0, 1], colours ``(..., n_pts_per_ray, 3)``."""
        raise NotImplementedError
