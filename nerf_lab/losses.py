"""Losses. Each loss module returns a dict of named, already-weighted terms."""

from __future__ import annotations

import torch


def huber(x: torch.Tensor, y: torch.Tensor, scaling: float = 0.1) -> torch.Tensor:
    """The tutorial's pseudo-Huber loss, elementwise.

    ``scaling * (sqrt(1 + (x - y)^2 / scaling^2) - 1)`` (the square root's argument is
    clamped at 1e-4, as in the tutorial).

    Args:
        x, y: tensors of the same shape ``(...)``.

    Returns:
        ``(...)`` elementwise losses.
    """
    diff_sq = (x - y) ** 2
    return ((1 + diff_sq / (scaling**2)).clamp(1e-4).sqrt() - 1) * float(scaling)


def mse(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Elementwise squared error ``(x - y)^2`` of two ``(...)`` tensors."""
    return (x - y) ** 2


class _WeightedLoss(torch.nn.Module):
    def __init__(self, color_weight: float = 1.0, silhouette_weight: float = 1.0) -> None:
        super().__init__()
        for name, w in (("color_weight", color_weight), ("silhouette_weight", silhouette_weight)):
            if not (float(w) >= 0.0):
                raise ValueError(f"{name} must be >= 0; got {w!r}.")
        self.color_weight = float(color_weight)
        self.silhouette_weight = float(silhouette_weight)

    def elementwise(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(
        self,
        rendered_colors: torch.Tensor,
        target_colors: torch.Tensor,
        rendered_silhouettes: torch.Tensor,
        target_silhouettes: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """Named loss terms (means over rays and channels, times their weights).

        Args:
            rendered_colors, target_colors: ``(..., 3)``.
            rendered_silhouettes, target_silhouettes: ``(..., 1)``.

        Returns:
            ``{"color": ..., "silhouette": ...}`` scalar tensors; terms with weight 0 are
            left out.
        """
        terms = {}
        if self.color_weight > 0:
            terms["color"] = (
                self.color_weight * self.elementwise(rendered_colors, target_colors).abs().mean()
            )
        if self.silhouette_weight > 0:
            terms["silhouette"] = (
                self.silhouette_weight
                * self.elementwise(rendered_silhouettes, target_silhouettes).abs().mean()
            )
        return terms


class HuberLoss(_WeightedLoss):
    """The tutorial's loss: pseudo-Huber on colour and silhouette.

    Args:
        scaling: the pseudo-Huber scale (0.1 in the tutorial).
        color_weight, silhouette_weight: weights of the two terms.
    """

    def __init__(
        self, scaling: float = 0.1, color_weight: float = 1.0, silhouette_weight: float = 1.0
    ) -> None:
        super().__init__(color_weight, silhouette_weight)
        if not float(scaling) > 0:
            raise ValueError(f"scaling must be > 0; got {scaling!r}.")
        self.scaling = float(scaling)

    def elementwise(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return huber(x, y, self.scaling)


class MSELoss(_WeightedLoss):
    """Mean squared error on colour and silhouette.

    Args:
        color_weight, silhouette_weight: weights of the two terms.
    """

    def elementwise(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return mse(x, y)
