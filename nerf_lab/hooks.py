"""The optional training hooks of a component (a field, a trainable sampler).

A component is any ``torch.nn.Module``. Plain modules get the defaults below: all their
parameters in one group at the optimiser's learning rate, no extra loss terms, nothing
done per step. A component that wants more subclasses :class:`TrainingHooks` (fields
usually through :class:`nerf_lab.models.RadianceField`) and overrides what it needs.

The trainer calls the module-level functions (:func:`param_groups`, :func:`loss_terms`,
:func:`on_train_step`), which dispatch on ``isinstance`` — an explicit contract, no
attribute probing.
"""

from __future__ import annotations

from typing import Any

import torch

#: A parameter group as ``torch.optim`` takes it, plus two keys of nerf_lab's:
#: ``name`` (for logs) and ``lr_scale`` (the group's learning rate relative to the
#: optimiser's ``lr``). torch optimisers keep unknown keys in ``param_groups``.
ParamGroup = dict[str, Any]


class TrainingHooks:
    """Optional hooks with explicit defaults; mix into a ``torch.nn.Module``.

    Override any of:

    * :meth:`param_groups` — named groups with their own learning-rate scales (e.g. grids
      at 60x the MLP's rate).
    * :meth:`loss_terms` — extra named, already weighted loss terms (e.g. total variation
      of a grid), added to the loss of every training step and logged as
      ``train/loss/<name>``.
    * :meth:`on_train_step` — called before each training step (e.g. a grid update).
    """

    def param_groups(self) -> list[ParamGroup]:
        """``[{"name", "params", "lr_scale"}, ...]``; default: one group of everything."""
        assert isinstance(self, torch.nn.Module)
        return [{"name": "params", "params": list(self.parameters()), "lr_scale": 1.0}]

    def loss_terms(self) -> dict[str, torch.Tensor]:
        """Extra named loss terms ``{name: () tensor}``, already weighted; default: none."""
        return {}

    def on_train_step(self, step: int, n_iter: int) -> None:
        """Called before training step ``step`` (0-based) of ``n_iter``; default: nothing."""
        return None


def param_groups(module: torch.nn.Module, prefix: str = "") -> list[ParamGroup]:
    """The parameter groups of ``module``: its own (:class:`TrainingHooks`) or one group of
    ``module.parameters()``. Group names are prefixed with ``prefix`` + ``/``; groups
    without trainable parameters are left out."""
    if isinstance(module, TrainingHooks):
        groups = module.param_groups()
    else:
        groups = [{"name": "params", "params": list(module.parameters()), "lr_scale": 1.0}]
    out = []
    for g in groups:
        params = [p for p in g["params"] if p.requires_grad]
        if not params:
            continue
        scale = float(g.get("lr_scale", 1.0))
        if not scale > 0:
            raise ValueError(f"param group {g.get('name')!r}: lr_scale must be > 0; got {scale!r}.")
        name = str(g.get("name", "params"))
        out.append({**g, "params": params, "name": f"{prefix}/{name}" if prefix else name,
                    "lr_scale": scale})  # fmt: skip
    return out


def loss_terms(module: Any) -> dict[str, torch.Tensor]:
    """``module.loss_terms()`` for :class:`TrainingHooks`, else ``{}``."""
    return module.loss_terms() if isinstance(module, TrainingHooks) else {}


def on_train_step(module: Any, step: int, n_iter: int) -> None:
    """``module.on_train_step(step, n_iter)`` for :class:`TrainingHooks`, else nothing."""
    if isinstance(module, TrainingHooks):
        module.on_train_step(step, n_iter)
