"""A vectorised triangle rasteriser with PyTorch3D's semantics (pure torch, CPU or GPU).

It reproduces ``pytorch3d.renderer.mesh.rasterize_meshes`` for one face per pixel:

* pixel ``(row i, col j)`` of an ``H x W`` image has its centre at NDC
  ``x = PixToNonSquareNdc(W - 1 - j, W, H)``, ``y = PixToNonSquareNdc(H - 1 - i, H, W)``
  (+X left, +Y up; the shorter side spans ``[-1, 1]``);
* barycentrics are computed in screen space with PyTorch3D's edge functions, a pixel is
  inside a face when all three perspective-corrected barycentrics are ``> 0``, and the
  nearest face by interpolated view-space depth wins (ties: the smallest face index);
* ``dist`` is the *squared* 2D distance from the pixel centre to the triangle's edges and a
  pixel outside every face is still "covered" when ``dist < blur_radius`` (PyTorch3D compares
  the squared distance with ``blur_radius`` and grows bounding boxes by ``sqrt(blur_radius)``).

Work is enumerated as (face, pixel-in-bounding-box) pairs in chunks, so memory stays bounded.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

K_EPSILON = 1e-8
MAX_PAIRS_PER_CHUNK = 2_000_000


class Fragments(NamedTuple):
    """Rasterisation output for ``n_views`` images of ``H x W`` pixels (one face per pixel).

    Attributes:
        pix_to_face: ``(n_views, H, W)`` int64 nearest face containing the pixel, -1 if none.
        bary_coords: ``(n_views, H, W, 3)`` perspective-corrected barycentrics of that face.
        zbuf: ``(n_views, H, W)`` view-space depth of the hit (-1 where there is none).
        coverage: ``(n_views, H, W)`` bool, inside a face or within ``blur_radius`` of one.
    """

    pix_to_face: torch.Tensor
    bary_coords: torch.Tensor
    zbuf: torch.Tensor
    coverage: torch.Tensor


def pix_to_ndc(index: torch.Tensor, size: int, other: int) -> torch.Tensor:
    """NDC centre of pixel ``index`` along an axis of ``size`` pixels (PyTorch3D's
    ``PixToNonSquareNdc``; ``index`` counts from the +X / +Y end)."""
    rng = 2.0
    if size > other:
        rng = size * rng / other
    offset = rng / 2.0
    return -offset + (rng * index.to(torch.float32) + offset) / size


def _edge(px, py, ax, ay, bx, by):
    # PyTorch3D's EdgeFunctionForward(p, a, b).
    return (px - ax) * (by - ay) - (py - ay) * (bx - ax)


def _point_segment_dist2(px, py, ax, ay, bx, by):
    # PyTorch3D's PointLineDistanceForward: squared distance to the segment a-b.
    bax, bay = bx - ax, by - ay
    l2 = bax * bax + bay * bay
    t = (bax * (px - ax) + bay * (py - ay)) / torch.where(l2 > 0, l2, torch.ones_like(l2))
    t = t.clamp(0.0, 1.0)
    dx = ax + t * bax - px
    dy = ay + t * bay - py
    d = dx * dx + dy * dy
    degenerate = (px - bx) * (px - bx) + (py - by) * (py - by)
    return torch.where(l2 <= K_EPSILON, degenerate, d)


def _pixel_range(lo: torch.Tensor, hi: torch.Tensor, size: int, other: int):
    """Conservative integer pixel index range whose centres may fall in NDC ``[lo, hi]``.

    NDC decreases with the pixel index; the affine map is inverted with a small tolerance
    (1e-3 px), the exact inside / distance tests run later.
    """
    scale = min(size, other)
    # centre(k) = (size - 1 - 2k) / scale  =>  k = (size - 1 - x * scale) / 2
    k_lo = torch.ceil((size - 1 - hi * scale) / 2.0 - 1e-3).long()
    k_hi = torch.floor((size - 1 - lo * scale) / 2.0 + 1e-3).long()
    return k_lo.clamp(0, size - 1), k_hi.clamp(-1, size - 1)


def rasterize(
    face_verts: torch.Tensor,
    image_size: tuple[int, int],
    blur_radius: float = 0.0,
    max_pairs_per_chunk: int = MAX_PAIRS_PER_CHUNK,
) -> Fragments:
    """Rasterise triangles already projected to NDC (x, y) with view-space depth as z.

    Args:
        face_verts: ``(n_views, n_faces, 3, 3)``: per view, per face, per corner
            ``(x_ndc, y_ndc, z_view)``.
        image_size: ``(H, W)``.
        blur_radius: PyTorch3D's ``blur_radius`` (compared with the squared NDC distance).
        max_pairs_per_chunk: upper bound on (face, pixel) pairs processed at once.

    Returns:
        :class:`Fragments` with ``(n_views, H, W, ...)`` tensors.
    """
    if face_verts.dim() != 4 or face_verts.shape[-2:] != (3, 3):
        raise ValueError(
            f"face_verts must have shape (n_views, n_faces, 3, 3); got {tuple(face_verts.shape)}."
        )
    H, W = int(image_size[0]), int(image_size[1])
    if H <= 0 or W <= 0:
        raise ValueError(f"image_size must be positive; got {image_size}.")
    if blur_radius < 0:
        raise ValueError(f"blur_radius must be >= 0; got {blur_radius}.")
    device = face_verts.device
    n_views, n_faces = face_verts.shape[:2]
    fv = face_verts.to(torch.float32)
    pix_to_face = torch.full((n_views, H * W), -1, dtype=torch.int64, device=device)
    bary_out = torch.zeros((n_views, H * W, 3), dtype=torch.float32, device=device)
    zbuf = torch.full((n_views, H * W), -1.0, dtype=torch.float32, device=device)
    coverage = torch.zeros((n_views, H * W), dtype=torch.bool, device=device)
    best_z = torch.full((n_views * H * W,), math.inf, dtype=torch.float32, device=device)
    sqrt_blur = math.sqrt(blur_radius)

    x, y, z = fv[..., 0], fv[..., 1], fv[..., 2]  # (n_views, n_faces, 3)
    area = _edge(x[..., 2], y[..., 2], x[..., 0], y[..., 0], x[..., 1], y[..., 1])
    # Faces behind (or touching) the camera plane are skipped; PyTorch3D has no clipping here.
    valid = (area.abs() > K_EPSILON) & (z.min(-1).values > 1e-6)
    col_lo, col_hi = _pixel_range(x.min(-1).values - sqrt_blur, x.max(-1).values + sqrt_blur, W, H)
    row_lo, row_hi = _pixel_range(y.min(-1).values - sqrt_blur, y.max(-1).values + sqrt_blur, H, W)
    n_cols = (col_hi - col_lo + 1).clamp(min=0)
    n_rows = (row_hi - row_lo + 1).clamp(min=0)
    counts = torch.where(valid, n_cols * n_rows, torch.zeros_like(n_cols)).reshape(-1)

    # Chunk the flattened (view, face) list so each chunk has at most max_pairs_per_chunk pairs.
    cum = torch.cumsum(counts, 0)
    total = int(cum[-1]) if cum.numel() else 0
    start = 0
    n_items = counts.numel()
    while start < n_items and total > 0:
        base = int(cum[start - 1]) if start > 0 else 0
        stop = int(
            torch.searchsorted(
                cum, torch.tensor(base + max_pairs_per_chunk, device=device), right=True
            )
        )
        stop = max(stop, start + 1)
        stop = min(stop, n_items)
        item_counts = counts[start:stop]
        n_pairs = int(item_counts.sum())
        if n_pairs:
            _raster_chunk(
                fv.reshape(-1, 3, 3)[start:stop],
                area.reshape(-1)[start:stop],
                torch.arange(start, stop, device=device),
                item_counts,
                n_pairs,
                col_lo.reshape(-1)[start:stop],
                row_lo.reshape(-1)[start:stop],
                n_cols.reshape(-1)[start:stop],
                n_faces,
                (H, W),
                blur_radius,
                pix_to_face.view(-1),
                bary_out.view(-1, 3),
                zbuf.view(-1),
                coverage.view(-1),
                best_z,
            )
        start = stop
    return Fragments(
        pix_to_face.view(n_views, H, W),
        bary_out.view(n_views, H, W, 3),
        zbuf.view(n_views, H, W),
        coverage.view(n_views, H, W),
    )


def _raster_chunk(
    fv: torch.Tensor,
    area: torch.Tensor,
    item_ids: torch.Tensor,
    item_counts: torch.Tensor,
    n_pairs: int,
    col_lo: torch.Tensor,
    row_lo: torch.Tensor,
    n_cols: torch.Tensor,
    n_faces: int,
    hw: tuple[int, int],
    blur_radius: float,
    pix_to_face: torch.Tensor,
    bary_out: torch.Tensor,
    zbuf: torch.Tensor,
    coverage: torch.Tensor,
    best_z: torch.Tensor,
) -> None:
    """Rasterise one chunk of (view, face) items into the flat output buffers, in place.

    ``fv (n_items, 3, 3)``, ``area``/``item_ids``/``item_counts``/``col_lo``/``row_lo``/
    ``n_cols`` ``(n_items,)``; item ``k`` is face ``item_ids[k] % n_faces`` of view
    ``item_ids[k] // n_faces`` and owns ``item_counts[k]`` pixels of its bounding box.
    Outputs are flat over ``n_views * H * W`` pixels.
    """
    H, W = hw
    device = fv.device
    local_item = torch.repeat_interleave(torch.arange(len(item_counts), device=device), item_counts)
    first = torch.cumsum(item_counts, 0) - item_counts
    offset = torch.arange(n_pairs, device=device) - first[local_item]
    nc = n_cols[local_item]
    col = col_lo[local_item] + offset % nc
    row = row_lo[local_item] + torch.div(offset, nc, rounding_mode="floor")
    keep = (row < H) & (col < W)
    if not bool(keep.all()):
        local_item, col, row = local_item[keep], col[keep], row[keep]

    px = pix_to_ndc(W - 1 - col, W, H)
    py = pix_to_ndc(H - 1 - row, H, W)
    f = fv[local_item]  # (P, 3, 3)
    x0, y0, z0 = f[:, 0, 0], f[:, 0, 1], f[:, 0, 2]
    x1, y1, z1 = f[:, 1, 0], f[:, 1, 1], f[:, 1, 2]
    x2, y2, z2 = f[:, 2, 0], f[:, 2, 1], f[:, 2, 2]
    a = area[local_item]
    w0 = _edge(px, py, x1, y1, x2, y2) / a
    w1 = _edge(px, py, x2, y2, x0, y0) / a
    w2 = _edge(px, py, x0, y0, x1, y1) / a
    # Perspective correction with view-space depths (PyTorch3D's
    # BarycentricPerspectiveCorrectionForward).
    t0, t1, t2 = w0 * z1 * z2, z0 * w1 * z2, z0 * z1 * w2
    denom = (t0 + t1 + t2).clamp(min=K_EPSILON)
    b0, b1, b2 = t0 / denom, t1 / denom, t2 / denom
    inside = (b0 > 0) & (b1 > 0) & (b2 > 0)
    pz = b0 * z0 + b1 * z1 + b2 * z2
    pix = _view_offset(item_ids[local_item], n_faces, H * W) + row * W + col

    pix_in = pix[inside]
    coverage[pix_in] = True
    if blur_radius > 0:
        # Only pixels not yet covered by a face need the (costly) distance test.
        o = (~inside & ~coverage[pix]).nonzero()[:, 0]
        if o.numel():
            px_o, py_o = px[o], py[o]
            fo = f[o]
            ax, ay, bx, by, cx, cy = (fo[:, k, c] for k in range(3) for c in range(2))
            d = torch.minimum(
                torch.minimum(
                    _point_segment_dist2(px_o, py_o, ax, ay, bx, by),
                    _point_segment_dist2(px_o, py_o, ax, ay, cx, cy),
                ),
                _point_segment_dist2(px_o, py_o, bx, by, cx, cy),
            )
            coverage[pix[o][d < blur_radius]] = True
    if pix_in.numel() == 0:
        return
    z_in = pz[inside]
    face_in = item_ids[local_item][inside] % n_faces
    bary_in = torch.stack([b0[inside], b1[inside], b2[inside]], dim=-1)
    # Nearest face per pixel within the chunk (ties -> smallest face index) ...
    zmin = torch.full_like(best_z, math.inf).scatter_reduce(0, pix_in, z_in, "amin")
    is_min = z_in == zmin[pix_in]
    big = torch.iinfo(torch.int64).max
    fmin = torch.full(best_z.shape, big, dtype=torch.int64, device=device).scatter_reduce(
        0, pix_in, torch.where(is_min, face_in, torch.full_like(face_in, big)), "amin"
    )
    win = is_min & (face_in == fmin[pix_in])
    pix_w, z_w = pix_in[win], z_in[win]
    # ... then merged with earlier chunks (earlier chunks hold smaller face indices).
    better = z_w < best_z[pix_w]
    pix_w = pix_w[better]
    best_z[pix_w] = z_w[better]
    zbuf[pix_w] = z_w[better]
    pix_to_face[pix_w] = face_in[win][better]
    bary_out[pix_w] = bary_in[win][better]


def _view_offset(item_ids: torch.Tensor, n_faces: int, n_pix: int) -> torch.Tensor:
    # Flat pixel offset of each item's view: (item // n_faces) * n_pix.
    return torch.div(item_ids, n_faces, rounding_mode="floor") * n_pix
