"""Occupancy of a density grid: which cells can hold visible density (empty-space skipping).

A cell is occupied when one of its 8 corner values reaches the threshold; trilinear
interpolation is a convex combination of the corners, so no point of an empty cell can
reach it.
"""

from __future__ import annotations

import torch

__all__ = ["occupancy_from_density"]


def occupancy_from_density(raw_density: torch.Tensor, raw_threshold: float) -> torch.Tensor:
    """Cells with at least one corner at or above ``raw_threshold``.

    Args:
        raw_density: ``(R, R, R)`` raw grid values (``(z, y, x)`` layout).
        raw_threshold: threshold on the raw values.

    Returns:
        ``((R - 1)**3,)`` bool, flat over cells ``(cz * (R - 1) + cy) * (R - 1) + cx``.
    """
    occ = raw_density >= raw_threshold
    occ = occ[1:] | occ[:-1]
    occ = occ[:, 1:] | occ[:, :-1]
    occ = occ[:, :, 1:] | occ[:, :, :-1]
    return occ.reshape(-1)
