"""Weighted gathers of table rows: the interpolation kernel of hash-grid and plane fields.

Every interpolating encoding here (multiresolution hash grids, K-Planes) reduces to

    out[n] = sum_k weights[k, n] * table[rows[k, n]]

with a channel-last ``(n_rows, C)`` table and ``K`` corners per query (8 for trilinear, 4
for bilinear). The corner index comes first (``(K, N)`` layouts) so that every elementwise
step runs over long contiguous rows; on a CPU the cost is the random memory access of the
gathers and scatters, so :func:`weighted_corner_sum`

* gathers whole table rows as single machine words when a row is 4, 8 or 16 bytes (e.g.
  two float32 features), one memory access per corner instead of one per channel, and
* scatters its gradient with ``scatter_add_``: one 1-D scatter per channel for narrow
  rows, one 2-D scatter for wide rows (both measured faster on a CPU than ``index_add_``,
  ``index_put_(accumulate=True)`` or ``embedding_bag``'s sorting backward).

Callers that order the queries by table region (e.g. level-major for a hash grid) keep
the working set of the gathers small.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["gather_rows", "weighted_corner_sum"]

_WORD_DTYPES = {4: torch.int32, 8: torch.int64, 16: torch.complex128}

#: Up to this many channels the gradient is scattered one channel at a time (1-D
#: ``scatter_add_``); wider rows use one 2-D ``scatter_add_`` (measured on a CPU: per
#: channel is 2x faster at 2 channels, even at 4, 3x slower at 16).
_MAX_CHANNELS_PER_CHANNEL_SCATTER = 4


def gather_rows(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``table[index]`` for a contiguous ``(n_rows, C)`` table and a 1-D index.

    Rows of 4, 8 or 16 bytes are copied as one word each (a reinterpreting view, so the
    bits are copied unchanged).

    Args:
        table: ``(n_rows, C)``.
        index: ``(N,)`` int32 or int64.

    Returns:
        ``(N, C)``.
    """
    table = table.contiguous()
    word = _WORD_DTYPES.get(table.shape[1] * table.element_size())
    if word is None or table.is_complex():
        return table.index_select(0, index)
    words = table.view(word).reshape(-1)
    return words.index_select(0, index).view(table.dtype).reshape(-1, table.shape[1])


class _WeightedCornerSum(torch.autograd.Function):
    """``out[n] = sum_k weights[k, n] * table[rows[k, n]]`` with a 1-D scatter backward."""

    @staticmethod
    def forward(ctx: Any, table: torch.Tensor, rows: torch.Tensor, weights: torch.Tensor):
        ctx.save_for_backward(table if ctx.needs_input_grad[2] else None, rows, weights)
        ctx.table_shape = table.shape
        return _forward(table, rows, weights)

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor):
        table, rows, weights = ctx.saved_tensors
        grad_table = grad_weights = None
        if ctx.needs_input_grad[0]:
            n_rows, n_channels = ctx.table_shape
            index = rows.reshape(-1).long()
            if n_channels > _MAX_CHANNELS_PER_CHANNEL_SCATTER:
                # Wide rows: one 2-D scatter, a cache line of channels per index.
                grad_table = grad_out.new_zeros(n_rows, n_channels)
                contrib = (weights[:, :, None] * grad_out).reshape(-1, n_channels)
                grad_table.scatter_add_(0, index[:, None].expand(-1, n_channels), contrib)
            else:
                grad_flat = grad_out.new_zeros(n_rows * n_channels)
                if n_channels > 1:
                    index = index * n_channels  # not in place: `rows` may already be int64
                for c in range(n_channels):
                    contrib = weights * grad_out[:, c]  # (K, N)
                    grad_flat.scatter_add_(0, index + c if c else index, contrib.reshape(-1))
                grad_table = grad_flat.reshape(n_rows, n_channels)
        if ctx.needs_input_grad[2]:
            # d out[n] / d weights[k, n] = table[rows[k, n]].
            corners = gather_rows(table, rows.reshape(-1)).reshape(*rows.shape, -1)
            grad_weights = (corners * grad_out).sum(-1)
        return grad_table, None, grad_weights


def _forward(table: torch.Tensor, rows: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    n_corners, n = rows.shape
    corners = gather_rows(table, rows.reshape(-1)).reshape(n_corners, n, table.shape[1])
    out = corners[0] * weights[0, :, None]
    for k in range(1, n_corners):
        out.addcmul_(corners[k], weights[k, :, None])
    return out


def weighted_corner_sum(
    table: torch.Tensor, rows: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """Weighted sum of ``K`` table rows per query (trilinear/bilinear interpolation).

    Differentiable with respect to ``table`` and ``weights`` (``rows`` are indices).

    Args:
        table: ``(n_rows, C)`` channel-last values.
        rows: ``(K, N)`` int32 or int64 row indices into ``table`` (``n_rows * C`` must fit
            the index dtype).
        weights: ``(K, N)`` corner weights, the dtype of ``table``.

    Returns:
        ``(N, C)``: ``out[n] = sum_k weights[k, n] * table[rows[k, n]]``.
    """
    if rows.shape != weights.shape or rows.dim() != 2:
        raise ValueError(
            f"rows and weights must both have shape (K, N); got {tuple(rows.shape)} and "
            f"{tuple(weights.shape)}."
        )
    if table.dim() != 2:
        raise ValueError(f"table must have shape (n_rows, C); got {tuple(table.shape)}.")
    if torch.is_grad_enabled() and (table.requires_grad or weights.requires_grad):
        return _WeightedCornerSum.apply(table, rows, weights)
    return _forward(table, rows, weights)
