"""Weighted corner gathers and the multiresolution hash encoding, against plain loops."""

from __future__ import annotations

import math

import pytest
import torch

from nerf_lab.encodings_hash import (
    HASH_PRIMES,
    MultiresolutionHashEncoding,
    hash_grid_corners,
    hash_grid_encode,
    hash_grid_layout,
    spatial_hash,
)
from nerf_lab.gather import gather_rows, weighted_corner_sum

# A tiny grid with both kinds of level: T = 64 entries; N = 2, 4, 8, 16: (N + 1)**3 = 27
# vertices fit (dense), 125, 729 and 4913 do not (hashed).
TINY = {"n_levels": 4, "log2_hashmap_size": 6, "base_resolution": 2, "max_resolution": 16}


# --------------------------------------------------------------------------- gather
@pytest.mark.parametrize(
    ("n_channels", "dtype"),
    [(1, torch.float32), (2, torch.float32), (3, torch.float32), (4, torch.float32),
     (2, torch.float64), (5, torch.float64)],
)  # fmt: skip
def test_weighted_corner_sum_matches_loop(n_channels, dtype):
    table = torch.randn(37, n_channels, dtype=dtype)
    rows = torch.randint(0, 37, (8, 11), dtype=torch.int32)
    weights = torch.rand(8, 11, dtype=dtype)
    out = weighted_corner_sum(table, rows, weights)
    ref = torch.zeros(11, n_channels, dtype=dtype)
    for n in range(11):
        for k in range(8):
            ref[n] += weights[k, n] * table[int(rows[k, n])]
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(gather_rows(table, rows.reshape(-1).long()), table[rows.reshape(-1)])


@pytest.mark.parametrize("n_channels", [1, 2, 7])  # per-channel and 2-D scatters
def test_weighted_corner_sum_gradients_and_repeated_rows(n_channels):
    table = torch.randn(6, n_channels, dtype=torch.float64, requires_grad=True)
    rows = torch.tensor([[0, 0, 5], [1, 0, 5], [2, 2, 2], [3, 4, 0]])  # repeats within and across
    weights = torch.rand(4, 3, dtype=torch.float64, requires_grad=True)
    torch.autograd.gradcheck(lambda t, w: weighted_corner_sum(t, rows, w), (table, weights))
    # The same gradient as autograd through the plain formula.
    g = torch.randn(3, n_channels, dtype=torch.float64)
    out = weighted_corner_sum(table, rows, weights)
    (gt, gw) = torch.autograd.grad(out, (table, weights), g)
    ref = (weights[:, :, None] * table[rows]).sum(0)
    (rt, rw) = torch.autograd.grad(ref, (table, weights), g)
    torch.testing.assert_close(gt, rt)
    torch.testing.assert_close(gw, rw)
    # The backward must not modify the (int64) index tensor it was given.
    assert torch.equal(rows, torch.tensor([[0, 0, 5], [1, 0, 5], [2, 2, 2], [3, 4, 0]]))


def test_weighted_corner_sum_empty_and_bad_shapes():
    table = torch.randn(5, 2, requires_grad=True)
    out = weighted_corner_sum(table, torch.zeros(8, 0, dtype=torch.long), torch.zeros(8, 0))
    assert out.shape == (0, 2)
    with pytest.raises(ValueError, match="shape"):
        weighted_corner_sum(table, torch.zeros(8, 3, dtype=torch.long), torch.zeros(3, 8))


# --------------------------------------------------------------------------- layout and hash
def test_layout_follows_the_paper():
    layout = hash_grid_layout(16, 19, 16, 2048)
    b = math.exp((math.log(2048) - math.log(16)) / 15)
    assert layout.growth_factor == pytest.approx(b)
    assert layout.resolutions == tuple(math.floor(16 * b**lvl + 1e-9) for lvl in range(16))
    assert layout.resolutions[0] == 16 and layout.resolutions[-1] == 2048
    t = 2**19
    for lvl, r in enumerate(layout.resolutions):
        assert layout.table_sizes[lvl] == min((r + 1) ** 3, t)
        assert (lvl < layout.n_dense) == ((r + 1) ** 3 <= t)
    assert layout.offsets == tuple(sum(layout.table_sizes[:lvl]) for lvl in range(16))
    tiny = hash_grid_layout(**TINY)
    assert tiny.resolutions == (2, 4, 8, 16) and tiny.n_dense == 1
    assert hash_grid_layout(1, 4, 8, 8).resolutions == (8,)


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [({"n_levels": 0}, "n_levels"), ({"log2_hashmap_size": 25}, "log2_hashmap_size"),
     ({"base_resolution": 0}, "base_resolution"), ({"max_resolution": 8}, "max_resolution"),
     ({"n_levels": 2.0}, "n_levels")],
)  # fmt: skip
def test_layout_rejects_bad_arguments(kwargs, word):
    with pytest.raises(ValueError, match=word):
        hash_grid_layout(**{"base_resolution": 16, **kwargs})


def test_spatial_hash_is_instant_ngps_uint32_hash():
    coords = torch.randint(0, 5000, (200, 3))
    t = 2**19
    out = spatial_hash(coords, t)
    for (x, y, z), h in zip(coords.tolist(), out.tolist(), strict=True):
        # tiny-cuda-nn: uint32 products and xor, then mod T.
        u = ((x * HASH_PRIMES[0]) ^ (y * HASH_PRIMES[1]) ^ (z * HASH_PRIMES[2])) & 0xFFFFFFFF
        assert h == u % t
        assert h == ((x * 1) ^ (y * 2654435761) ^ (z * 805459861)) % t


# --------------------------------------------------------------------------- encoding
def loop_encode(points, table, layout):
    """Per point, per level, per corner, with Python integers."""
    feats = []
    for p in points.tolist():
        row_feats = []
        for lvl, n in enumerate(layout.resolutions):
            scaled = [min(max(c, 0.0), 1.0) * n for c in p]
            cell = [min(math.floor(s), max(n - 1, 0)) for s in scaled]
            frac = [s - c for s, c in zip(scaled, cell, strict=True)]
            acc = torch.zeros(table.shape[1], dtype=table.dtype)
            for dz in (0, 1):
                for dy in (0, 1):
                    for dx in (0, 1):
                        x, y, z = cell[0] + dx, cell[1] + dy, cell[2] + dz
                        if (n + 1) ** 3 <= layout.hashmap_size:
                            idx = x + y * (n + 1) + z * (n + 1) ** 2
                        else:
                            idx = ((x * 1) ^ (y * 2654435761) ^ (z * 805459861)) % (
                                layout.hashmap_size
                            )
                        w = (
                            (frac[0] if dx else 1 - frac[0])
                            * (frac[1] if dy else 1 - frac[1])
                            * (frac[2] if dz else 1 - frac[2])
                        )
                        acc += w * table[layout.offsets[lvl] + idx]
            row_feats.append(acc)
        feats.append(torch.cat(row_feats))
    return torch.stack(feats)


@pytest.mark.parametrize("n_features", [1, 2, 4])
def test_encoding_matches_per_point_per_level_loop(n_features):
    layout = hash_grid_layout(**TINY)
    table = torch.randn(layout.n_rows, n_features, dtype=torch.float64)
    points = torch.rand(25, 3, dtype=torch.float64)
    points[0] = torch.tensor([0.0, 1.0, 0.5])  # faces of the cube
    points[1] = torch.tensor([1.0, 1.0, 1.0])
    points[2] = torch.tensor([1.2, -0.3, 0.5])  # clamped
    out = hash_grid_encode(points, table, layout)
    assert out.shape == (25, 4 * n_features)
    torch.testing.assert_close(out, loop_encode(points, table, layout))


def test_encoding_gradcheck_tiny_table_and_points():
    layout = hash_grid_layout(**TINY)
    table = torch.randn(layout.n_rows, 2, dtype=torch.float64, requires_grad=True)
    # Interior points, away from cell faces at every level (finite differences stay in-cell).
    points = (torch.rand(6, 3, dtype=torch.float64) * 0.8 + 0.1).requires_grad_(True)
    torch.autograd.gradcheck(lambda t, p: hash_grid_encode(p, t, layout), (table, points))


def test_dense_levels_are_collision_free_and_rows_stay_in_their_level():
    layout = hash_grid_layout(
        n_levels=6, log2_hashmap_size=12, base_resolution=3, max_resolution=40
    )
    assert 0 < layout.n_dense < layout.n_levels
    for lvl in range(layout.n_levels):
        n = layout.resolutions[lvl]
        # Every vertex of the level is corner 0 of a point just inside its cell, clamped at
        # the far faces: put the points at vertex / n and read each corner.
        g = torch.arange(n + 1, dtype=torch.float64) / n
        pts = torch.stack(torch.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3)
        rows, weights = hash_grid_corners(pts, layout)
        level_rows = rows[:, lvl]
        lo, hi = layout.offsets[lvl], layout.offsets[lvl] + layout.table_sizes[lvl]
        assert int(level_rows.min()) >= lo and int(level_rows.max()) < hi
        # The corner with weight 1 is the vertex itself.
        vertex_rows = level_rows.gather(0, weights[:, lvl].argmax(0, keepdim=True))[0].long()
        xyz = (pts * n).round().long()
        if lvl < layout.n_dense:
            expected = xyz[:, 0] + xyz[:, 1] * (n + 1) + xyz[:, 2] * (n + 1) ** 2
            assert vertex_rows.unique().numel() == (n + 1) ** 3 == layout.table_sizes[lvl]
        else:
            expected = spatial_hash(xyz, layout.hashmap_size)
        assert torch.equal(vertex_rows - lo, expected)


def test_interpolation_reproduces_a_linear_function_on_dense_levels():
    layout = hash_grid_layout(n_levels=2, log2_hashmap_size=12, base_resolution=4, max_resolution=9)
    assert layout.n_dense == 2
    table = torch.zeros(layout.n_rows, 1, dtype=torch.float64)
    coef = torch.tensor([0.3, -1.2, 2.0], dtype=torch.float64)
    for lvl, n in enumerate(layout.resolutions):
        idx = torch.arange((n + 1) ** 3)
        xyz = torch.stack((idx % (n + 1), idx // (n + 1) % (n + 1), idx // (n + 1) ** 2), -1)
        table[layout.offsets[lvl] + idx, 0] = (xyz.double() / n) @ coef
    pts = torch.rand(100, 3, dtype=torch.float64)
    out = hash_grid_encode(pts, table, layout)
    torch.testing.assert_close(out, (pts @ coef)[:, None].expand(-1, 2))


def test_module_shapes_init_and_arguments():
    enc = MultiresolutionHashEncoding(**TINY, n_features_per_level=2, init_scale=1e-3)
    assert enc.table.shape == (enc.layout.n_rows, 2)
    assert float(enc.table.detach().abs().max()) <= 1e-3
    assert enc(torch.rand(2, 5, 3)).shape == (2, 5, 8) == (2, 5, enc.get_output_dim())
    with pytest.raises(ValueError, match="n_features_per_level"):
        MultiresolutionHashEncoding(n_features_per_level=0)
    with pytest.raises(ValueError, match="init_scale"):
        MultiresolutionHashEncoding(**TINY, init_scale=-1.0)
