"""K-Planes' multi-scale planes: sampling vs grid_sample and a loop, regularisers, gradients."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from nerf_lab.encodings_planes import (
    PLANE_AXES,
    plane_corners,
    plane_features,
    plane_l1,
    plane_layout,
    plane_total_variation,
    plane_views,
    sample_planes,
)

LAYOUT = plane_layout(5, [1, 2])  # resolutions 5 and 10


def test_layout():
    assert LAYOUT.resolutions == (5, 10)
    assert LAYOUT.offsets == ((0, 25, 50), (75, 175, 275))
    assert LAYOUT.n_rows == 375
    for bad in ({"resolution": 1}, {"multiscale": []}, {"multiscale": [0]}, {"multiscale": 2}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            plane_layout(**{"resolution": 4, "multiscale": [1], **bad})


def test_sampling_equals_grid_sample_on_kplanes_tensors():
    table = torch.randn(LAYOUT.n_rows, 3, dtype=torch.float64)
    points = torch.rand(40, 3, dtype=torch.float64)
    points[0] = torch.tensor([0.0, 1.0, 1.0])
    out = sample_planes(points, table, LAYOUT)  # (S, 3, M, C)
    assert out.shape == (2, 3, 40, 3)
    views = plane_views(table, LAYOUT)
    for s in range(2):
        for p, (a, b) in enumerate(PLANE_AXES):
            grid = views[3 * s + p].permute(2, 0, 1)[None]  # K-Planes' (1, C, R, R)
            coords = (points[:, [a, b]] * 2 - 1)[None, :, None]  # [-1, 1], (1, M, 1, 2)
            ref = F.grid_sample(grid, coords, mode="bilinear", align_corners=True)
            torch.testing.assert_close(out[s, p], ref[0, :, :, 0].T)


def test_sampling_matches_a_loop():
    table = torch.randn(LAYOUT.n_rows, 2, dtype=torch.float64)
    points = torch.rand(15, 3, dtype=torch.float64)
    out = sample_planes(points, table, LAYOUT)
    for s, r in enumerate(LAYOUT.resolutions):
        for p, (a, b) in enumerate(PLANE_AXES):
            for m in range(15):
                u, v = float(points[m, a]) * (r - 1), float(points[m, b]) * (r - 1)
                iu, iv = min(math.floor(u), r - 2), min(math.floor(v), r - 2)
                fu, fv = u - iu, v - iv
                acc = torch.zeros(2, dtype=torch.float64)
                for dv in (0, 1):
                    for du in (0, 1):
                        w = (fu if du else 1 - fu) * (fv if dv else 1 - fv)
                        acc += w * table[LAYOUT.offsets[s][p] + (iv + dv) * r + iu + du]
                torch.testing.assert_close(out[s, p, m], acc)


def test_features_are_the_hadamard_product_concatenated_or_summed():
    table = torch.rand(LAYOUT.n_rows, 4, dtype=torch.float64)
    points = torch.rand(9, 3, dtype=torch.float64)
    planes = sample_planes(points, table, LAYOUT)
    prod = planes[:, 0] * planes[:, 1] * planes[:, 2]  # (S, M, C)
    cat = plane_features(points, table, LAYOUT, concat=True)
    assert cat.shape == (9, 8)
    torch.testing.assert_close(cat[:, :4], prod[0])
    torch.testing.assert_close(cat[:, 4:], prod[1])
    torch.testing.assert_close(plane_features(points, table, LAYOUT, concat=False), prod.sum(0))


def test_gradcheck_planes_and_points():
    layout = plane_layout(3, [1, 2])
    table = torch.randn(layout.n_rows, 2, dtype=torch.float64, requires_grad=True)
    points = (torch.rand(5, 3, dtype=torch.float64) * 0.8 + 0.1).requires_grad_(True)
    torch.autograd.gradcheck(lambda t, p: plane_features(p, t, layout), (table, points))


def test_corner_weights_sum_to_one_and_rows_stay_in_their_plane():
    rows, weights = plane_corners(torch.rand(50, 3), LAYOUT)
    assert rows.shape == weights.shape == (4, 2, 3, 50)
    torch.testing.assert_close(weights.sum(0), torch.ones(2, 3, 50))
    for s, r in enumerate(LAYOUT.resolutions):
        for p in range(3):
            lo = LAYOUT.offsets[s][p]
            assert int(rows[:, s, p].min()) >= lo and int(rows[:, s, p].max()) < lo + r * r


def test_total_variation_and_l1_match_loops():
    table = torch.randn(LAYOUT.n_rows, 2, dtype=torch.float64)
    tv_ref, l1_ref = 0.0, 0.0
    n_planes = 0
    for s, r in enumerate(LAYOUT.resolutions):
        for p in range(3):
            o = LAYOUT.offsets[s][p]
            t = [[table[o + v * r + u] for u in range(r)] for v in range(r)]
            dw = sum(float((t[v][u + 1] - t[v][u]).square().sum()) for v in range(r)
                     for u in range(r - 1)) / (r * (r - 1) * 2)  # fmt: skip
            dh = sum(float((t[v + 1][u] - t[v][u]).square().sum()) for v in range(r - 1)
                     for u in range(r)) / (r * (r - 1) * 2)  # fmt: skip
            tv_ref += 0.5 * (dw + dh)
            l1_ref += float(table[o : o + r * r].abs().mean())
            n_planes += 1
    assert float(plane_total_variation(table, LAYOUT)) == pytest.approx(tv_ref / n_planes)
    assert float(plane_l1(table, LAYOUT)) == pytest.approx(l1_ref / n_planes)
    assert float(plane_total_variation(torch.ones(LAYOUT.n_rows, 2), LAYOUT)) == 0.0


def test_regularisers_have_gradients():
    table = torch.randn(LAYOUT.n_rows, 2, dtype=torch.float64, requires_grad=True)
    torch.autograd.gradcheck(lambda t: plane_total_variation(t, LAYOUT), (table,))
