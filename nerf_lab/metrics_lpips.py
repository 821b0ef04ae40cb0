"""LPIPS (Zhang et al. 2018), only where the ``lpips`` package and its weights are local.

nerf_lab never downloads anything at run time. LPIPS needs

* the ``lpips`` package (which imports ``torchvision``; nerf_lab does not install
  torchvision, so in a plain nerf_lab environment LPIPS reports itself absent);
* its linear-layer weights, shipped inside the package (``lpips/weights/v0.1/<net>.pth``);
* the ImageNet backbone weights torchvision would otherwise download, already in the torch
  hub cache (``torch.hub.get_dir()/checkpoints/``, e.g. ``alexnet-owt-7be5be79.pth``).

:func:`lpips_available` checks all three without importing a network or touching the
network, and says what is missing; :func:`lpips` computes the metric only when everything
is there (else :class:`LpipsUnavailable` with that reason). Callers report LPIPS as absent
rather than failing: ``ok, reason = lpips_available(); if ok: ... else: log(reason)``.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import torch

from nerf_lab.validate import check_choice

__all__ = ["BACKBONE_FILES", "LpipsUnavailable", "lpips", "lpips_available"]

#: torchvision's checkpoint file of each LPIPS backbone (its download URL's file name).
BACKBONE_FILES = {
    "alex": "alexnet-owt-7be5be79.pth",
    "vgg": "vgg16-397923af.pth",
    "squeeze": "squeezenet1_1-b8a52dc0.pth",
}

_MODELS: dict[tuple[str, str], Any] = {}


class LpipsUnavailable(RuntimeError):
    """LPIPS cannot be computed here; the message says why."""


def _import_lpips() -> tuple[Any | None, str]:
    try:
        return importlib.import_module("lpips"), ""
    except ImportError as e:
        missing = getattr(e, "name", None) or "lpips"
        if missing == "torchvision":
            return None, (
                "LPIPS unavailable: the lpips package needs torchvision, which is not "
                "installed (nerf_lab does not install it)"
            )
        return None, (
            f"LPIPS unavailable: the {missing!r} package is not installed (pip install lpips; "
            "it needs torchvision and locally cached backbone weights)"
        )


def lpips_available(net: str = "alex") -> tuple[bool, str]:
    """Whether :func:`lpips` can run with backbone ``net`` without downloading anything.

    Args:
        net: ``"alex"`` (the usual choice for evaluation), ``"vgg"`` or ``"squeeze"``.

    Returns:
        ``(ok, reason)``: on failure ``reason`` names what is missing (package or file).
    """
    check_choice("net", net, sorted(BACKBONE_FILES))
    mod, reason = _import_lpips()
    if mod is None:
        return False, reason
    linear = Path(mod.__file__).parent / "weights" / "v0.1" / f"{net}.pth"
    if not linear.is_file():
        return False, f"LPIPS unavailable: its linear-layer weights {linear} are missing"
    backbone = Path(torch.hub.get_dir()) / "checkpoints" / BACKBONE_FILES[net]
    if not backbone.is_file():
        return False, (
            f"LPIPS unavailable: the {net} backbone weights {backbone} are not cached locally "
            "(nerf_lab never downloads them)"
        )
    return True, f"lpips with the {net} backbone ({backbone})"


def _model(net: str, device: torch.device) -> Any:
    key = (net, str(device))
    if key not in _MODELS:
        mod = importlib.import_module("lpips")
        model = mod.LPIPS(net=net, verbose=False)
        _MODELS[key] = model.eval().to(device)
    return _MODELS[key]


@torch.no_grad()
def lpips(pred: torch.Tensor, target: torch.Tensor, net: str = "alex") -> torch.Tensor:
    """Per-image LPIPS distance (lower is better).

    Args:
        pred, target: ``(n_images, H, W, 3)`` in [0, 1] (mapped to [-1, 1] for the
            network, as ``lpips``' ``normalize=True``).
        net: backbone, see :func:`lpips_available`.

    Returns:
        ``(n_images,)``.

    Raises:
        LpipsUnavailable: with :func:`lpips_available`'s reason.
    """
    if pred.shape != target.shape or pred.dim() != 4 or pred.shape[-1] != 3:
        raise ValueError(
            f"pred and target must both have shape (n_images, H, W, 3); got "
            f"{tuple(pred.shape)} and {tuple(target.shape)}."
        )
    ok, reason = lpips_available(net)
    if not ok:
        raise LpipsUnavailable(reason)
    model = _model(net, pred.device)
    x = pred.float().permute(0, 3, 1, 2).clamp(0, 1)
    y = target.float().permute(0, 3, 1, 2).clamp(0, 1)
    return model(x, y, normalize=True).reshape(-1)
