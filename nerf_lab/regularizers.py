"""Regularisers of the compositing weights along rays, as pure functions.

* :func:`distortion_loss`: mip-NeRF 360's distortion loss (Barron et al. 2022, eq. 15) in
  the O(n) form of nerfacc (Li et al. 2023) / nerfstudio.
* :func:`outer`, :func:`lossfun_outer`, :func:`interlevel_loss`: mip-NeRF 360's proposal
  loss L_prop (eq. 10-13), as nerfstudio's ``interlevel_loss``: the proposal weights must
  bound the final weights from above on every interval.
* :func:`opacity_loss`: the binary entropy of the ray opacity.

Shapes use ``(...)`` for the rays (e.g. ``(n_rays,)``) and ``n_pts_per_ray`` for the
samples of a ray; an interval set is given by its sorted edges ``(..., n_pts_per_ray + 1)``
or by ``(t_starts, t_ends)`` ``(..., n_pts_per_ray)``
(:func:`nerf_lab.resamplers.lengths_to_intervals` builds them from a bundle's depths).
A grid total variation is :func:`nerf_lab.models.fast.total_variation`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = [
    "distortion_loss",
    "interlevel_loss",
    "lossfun_outer",
    "opacity_loss",
    "outer",
]


def _exclusive_cumsum(x: torch.Tensor) -> torch.Tensor:
    """``out[..., i] = sum_{j < i} x[..., j]``."""
    return torch.cumsum(x, dim=-1) - x


def distortion_loss(
    weights: torch.Tensor, t_starts: torch.Tensor, t_ends: torch.Tensor
) -> torch.Tensor:
    """mip-NeRF 360's distortion loss of each ray (Barron et al. 2022, eq. 15).

    ``L = sum_{i,j} w_i w_j |m_i - m_j| + 1/3 sum_i w_i^2 (e_i - s_i)`` with the interval
    midpoints ``m_i = (s_i + e_i) / 2``: the expected distance between two independent
    draws from the step-function density ``w_i / (e_i - s_i)`` on ``[s_i, e_i)``. It pulls
    the weights of a ray together into one compact interval (fewer floaters). Computed in
    O(n) with exclusive prefix sums, as nerfacc's ``distortion``: for sorted,
    non-overlapping intervals ``sum_{i,j} w_i w_j |m_i - m_j| = 2 sum_i w_i (m_i
    sum_{j<i} w_j - sum_{j<i} w_j m_j)``.

    Args:
        weights: ``(..., n_pts_per_ray)`` compositing weights of the intervals.
        t_starts: ``(..., n_pts_per_ray)`` interval starts, sorted along the ray.
        t_ends: ``(..., n_pts_per_ray)`` interval ends (``t_ends[i] <= t_starts[i + 1]``).

    Returns:
        ``(...)`` the loss of each ray (in the units of ``t``; z-depth for nerf_lab's
        bundles). Average it over rays and weight it in the loss.
    """
    if not (weights.shape == t_starts.shape == t_ends.shape):
        raise ValueError(
            "weights, t_starts and t_ends must have the same shape (..., n_pts_per_ray); got "
            f"{tuple(weights.shape)}, {tuple(t_starts.shape)}, {tuple(t_ends.shape)}."
        )
    mids = 0.5 * (t_starts + t_ends)
    deltas = t_ends - t_starts
    loss_uni = (deltas * weights.pow(2)).sum(dim=-1) / 3.0
    loss_bi = 2.0 * (
        weights * (mids * _exclusive_cumsum(weights) - _exclusive_cumsum(weights * mids))
    ).sum(dim=-1)
    return loss_uni + loss_bi


def outer(
    t0_starts: torch.Tensor,
    t0_ends: torch.Tensor,
    t1_starts: torch.Tensor,
    t1_ends: torch.Tensor,
    y1: torch.Tensor,
) -> torch.Tensor:
    """Outer measure of a step function on other intervals (nerfstudio's ``outer``).

    For each query interval ``[a, b) = [t0_starts[i], t0_ends[i])`` the sum of ``y1[k]``
    over the key intervals ``k`` that touch it, ``t1_starts[k] <= b`` and
    ``t1_ends[k] > a`` (mip-NeRF 360 eq. 11), with nerfstudio's clamping at the ends: the
    first key interval is counted for a query ending before it, and the last one for a
    query starting after it. For queries inside the span of the keys (the case of two
    samplings of the same ``[near, far]``) the clamping changes nothing.

    Args:
        t0_starts, t0_ends: ``(..., n_0)`` sorted query intervals.
        t1_starts, t1_ends: ``(..., n_1)`` sorted key intervals (contiguous:
            ``t1_ends[k] = t1_starts[k + 1]``).
        y1: ``(..., n_1)`` key weights.

    Returns:
        ``(..., n_0)`` the outer measure of each query interval.
    """
    cy1 = torch.cat([torch.zeros_like(y1[..., :1]), torch.cumsum(y1, dim=-1)], dim=-1)
    n_1 = y1.shape[-1]
    idx_lo = torch.searchsorted(t1_starts.contiguous(), t0_starts.contiguous(), side="right") - 1
    idx_lo = idx_lo.clamp(min=0, max=n_1 - 1)
    idx_hi = torch.searchsorted(t1_ends.contiguous(), t0_ends.contiguous(), side="right")
    idx_hi = idx_hi.clamp(min=0, max=n_1 - 1)
    cy1_lo = torch.take_along_dim(cy1[..., :-1], idx_lo, dim=-1)
    cy1_hi = torch.take_along_dim(cy1[..., 1:], idx_hi, dim=-1)
    return cy1_hi - cy1_lo


def lossfun_outer(
    t: torch.Tensor,
    w: torch.Tensor,
    t_env: torch.Tensor,
    w_env: torch.Tensor,
    eps: float = 1e-7,
) -> torch.Tensor:
    """Per-interval proposal loss: ``max(w - outer(w_env), 0)^2 / (w + eps)`` (mip-NeRF 360
    eq. 13; nerfstudio's ``lossfun_outer``).

    Zero where the envelope's mass on the intervals touching ``[t_i, t_{i+1})`` is at
    least ``w_i``; it only pushes the envelope up (``w`` is the target and is detached by
    :func:`interlevel_loss`).

    Args:
        t: ``(..., n + 1)`` sorted edges of the target intervals.
        w: ``(..., n)`` target weights.
        t_env: ``(..., m + 1)`` sorted edges of the envelope's intervals.
        w_env: ``(..., m)`` envelope weights (the proposal's).
        eps: keeps the division finite where ``w = 0``.

    Returns:
        ``(..., n)``.
    """
    w_outer = outer(t[..., :-1], t[..., 1:], t_env[..., :-1], t_env[..., 1:], w_env)
    return torch.clamp(w - w_outer, min=0).pow(2) / (w + eps)


def interlevel_loss(
    proposal_edges: Sequence[torch.Tensor],
    proposal_weights: Sequence[torch.Tensor],
    edges: torch.Tensor,
    weights: torch.Tensor,
) -> torch.Tensor:
    """mip-NeRF 360's proposal loss L_prop (nerfstudio's ``interlevel_loss``).

    ``sum_k mean(lossfun_outer(edges, stop_grad(weights), proposal_edges[k],
    proposal_weights[k]))``: the final pass's weights, detached, are the target each
    proposal level's weights must bound from above, so the loss trains only the proposal
    fields (their weights carry the gradient) and never the final field.

    Args:
        proposal_edges: one ``(..., n_k + 1)`` tensor of sorted edges per proposal level.
        proposal_weights: one ``(..., n_k)`` tensor of weights per proposal level.
        edges: ``(..., n_pts_per_ray + 1)`` the final pass's sorted interval edges.
        weights: ``(..., n_pts_per_ray)`` the final pass's compositing weights.

    Returns:
        ``()`` the sum over levels of the mean over rays and intervals.
    """
    if len(proposal_edges) != len(proposal_weights) or not proposal_edges:
        raise ValueError(
            "proposal_edges and proposal_weights must be non-empty and of the same length; got "
            f"{len(proposal_edges)} and {len(proposal_weights)}."
        )
    c = edges.detach()
    w = weights.detach()
    loss = torch.zeros((), dtype=weights.dtype, device=weights.device)
    for cp, wp in zip(proposal_edges, proposal_weights, strict=True):
        loss = loss + lossfun_outer(c, w, cp.detach(), wp).mean()
    return loss


def opacity_loss(opacity: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Binary entropy of the ray opacity, ``-(o log o + (1 - o) log(1 - o))``.

    Minimal (0) for rays that are fully transparent or fully opaque, maximal (``log 2``) at
    ``o = 0.5``: it discourages semi-transparent rays (haze, floaters) where the scene is
    known to be solid or empty. ``o`` is clamped to ``[eps, 1 - eps]`` so the value and its
    gradient stay finite (the gradient is 0 where the clamp is active).

    Args:
        opacity: ``(...)`` ray opacities in [0, 1] (e.g. a render's ``(..., 1)``).
        eps: the clamp margin.

    Returns:
        ``(...)`` the entropy of each ray, in nats.
    """
    o = opacity.clamp(eps, 1.0 - eps)
    return -(o * torch.log(o) + (1.0 - o) * torch.log1p(-o))
