"""Occupancy grid: ray/grid segments, sampling in occupied cells, EMA updates from a field."""

from __future__ import annotations

import math

import pytest
import torch

from nerf_lab.models.nerf import NeuralRadianceField
from nerf_lab.occupancy_grid import (
    OccupancyGrid,
    OccupancyResampler,
    ema_update,
    occupied_segments,
    query_density,
    ray_aabb_interval,
    ray_grid_edges,
    ray_grid_edges_in_box,
)
from nerf_lab.raysamplers import RayBundle

AABB = (-1.0, -1.0, -1.0, 1.0, 1.0, 1.0)


class BallField(torch.nn.Module):
    """Density ``sigma`` inside a ball of radius ``radius`` at the origin, 0 outside; the
    opacity scales with the world-space sample spacing (as ``density_scaling=spacing``)."""

    def __init__(self, sigma: float = 50.0, radius: float = 0.5) -> None:
        super().__init__()
        self.sigma, self.radius = sigma, radius
        self.n_points = 0
        self.calls = 0

    def forward(self, ray_bundle: RayBundle, **kwargs):
        o, d, t = ray_bundle.origins, ray_bundle.directions, ray_bundle.lengths
        pts = o[..., None, :] + t[..., :, None] * d[..., None, :]
        delta = torch.cat((t[..., 1:] - t[..., :-1], t[..., -1:] - t[..., -2:-1]), dim=-1)
        delta = delta * d.norm(dim=-1, keepdim=True)
        sigma = torch.where(pts.norm(dim=-1) < self.radius, self.sigma, 0.0)
        self.n_points += t.shape[0]
        self.calls += 1
        alpha = 1.0 - torch.exp(-sigma * delta)
        return alpha[..., None], torch.zeros(*alpha.shape, 3)


def random_rays(n: int, axis_parallel: bool = False):
    origins = torch.nn.functional.normalize(torch.randn(n, 3), dim=-1) * 3.0
    targets = torch.rand(n, 3) * 1.6 - 0.8
    directions = (targets - origins) * (0.5 + torch.rand(n, 1))  # not unit length
    if axis_parallel:
        directions[: n // 2, 0] = 0.0
        origins[: n // 2, 0] = 0.3
    return origins, directions


def cell_of(points: torch.Tensor, res: tuple[int, int, int]) -> torch.Tensor:
    r = torch.tensor(res)
    return torch.floor((points + 1.0) / 2.0 * r).long()


def test_ray_grid_edges_cut_rays_into_single_cell_segments():
    res = (4, 5, 3)
    o, d = random_rays(30, axis_parallel=True)
    near, far = torch.full((30,), 0.5), torch.full((30,), 6.0)
    edges = ray_grid_edges(o, d, near, far, AABB, res)
    assert edges.shape == (30, sum(res) + 5)
    assert (edges[:, 1:] >= edges[:, :-1]).all()
    assert (edges[:, 0] == near).all() and (edges[:, -1] == far).all()
    s, e = edges[:, :-1], edges[:, 1:]
    long_enough = (e - s) > 1e-4
    cells = [
        cell_of(o[:, None] + (s + f * (e - s))[..., None] * d[:, None], res)
        for f in (0.01, 0.5, 0.99)
    ]
    same = (cells[0] == cells[1]).all(-1) & (cells[1] == cells[2]).all(-1)
    in_box = ((cells[1] >= 0) & (cells[1] < torch.tensor(res))).all(-1)  # outside: no planes
    assert same[long_enough & in_box].all() and (long_enough & in_box).sum() > 100


def test_occupied_segments_equal_a_plain_loop():
    res = (3, 4, 5)
    binaries = torch.rand(res) < 0.4
    o, d = random_rays(8)
    edges = ray_grid_edges(o, d, torch.full((8,), 0.5), torch.full((8,), 6.0), AABB, res)
    got = occupied_segments(o, d, edges, binaries, AABB)
    for r in range(8):
        for j in range(edges.shape[1] - 1):
            p = o[r] + 0.5 * (edges[r, j] + edges[r, j + 1]) * d[r]
            ijk = [math.floor((float(p[a]) + 1.0) / 2.0 * res[a]) for a in range(3)]
            inside = all(0 <= ijk[a] < res[a] for a in range(3))
            assert bool(got[r, j]) == (inside and bool(binaries[ijk[0], ijk[1], ijk[2]]))


def test_occupied_segments_of_a_grid_too_large_for_float_indices():
    """(4100 + 2) * 66 * 66 cells with the border exceed float32's exact integers (2**24):
    the flat index is then accumulated in int64; the same as the per-axis formula."""
    res = (4100, 64, 64)
    binaries = torch.rand(res) < 0.5
    o, d = random_rays(6)
    edges = ray_grid_edges(o, d, torch.full((6,), 0.5), torch.full((6,), 6.0), AABB, res)
    got = occupied_segments(o, d, edges, binaries, AABB)
    mids = 0.5 * (edges[:, 1:] + edges[:, :-1]).double()
    ijk = cell_of(o.double()[:, None] + mids[..., None] * d.double()[:, None], res)
    inside = ((ijk >= 0) & (ijk < torch.tensor(res))).all(-1)
    ijk = ijk.clamp(min=0).minimum(torch.tensor(res) - 1)
    expected = inside & binaries[ijk[..., 0], ijk[..., 1], ijk[..., 2]]
    long_enough = (edges[:, 1:] - edges[:, :-1]) > 1e-5
    assert int(long_enough.sum()) > 1000
    assert torch.equal(got[long_enough], expected[long_enough])


@pytest.mark.parametrize("training", [True, False])
def test_one_occupied_cell_holds_every_sample_of_the_rays_through_it(training):
    grid = OccupancyGrid(resolution=4, aabb=AABB)
    grid.binaries.zero_()
    grid.binaries[1, 2, 3] = True  # x in [-0.5, 0], y in [0, 0.5], z in [0.5, 1]
    lo, hi = torch.tensor([-0.5, 0.0, 0.5]), torch.tensor([0.0, 0.5, 1.0])
    n = 40
    origins = torch.nn.functional.normalize(torch.randn(n, 3), dim=-1) * 3.0
    targets = lo + torch.rand(n, 3) * (hi - lo)
    directions = targets - origins
    directions[n // 2 :] = -directions[n // 2 :]  # these point away: they miss the box
    lengths = torch.linspace(0.2, 2.0, 8).expand(n, 8)
    bundle = RayBundle(origins, directions, lengths, torch.zeros(n, 2))
    resampler = OccupancyResampler(grid, n_pts_per_ray=32).train(training)
    out, aux = resampler(bundle)
    assert out.lengths.shape == (n, 32) and (out.lengths[:, 1:] >= out.lengths[:, :-1]).all()
    hit = aux["occupancy_hit"]
    assert hit.shape == (n, 1)
    assert (hit[: n // 2] == 1).all() and (hit[n // 2 :] == 0).all()
    pts = origins[: n // 2, None] + out.lengths[: n // 2, :, None] * directions[: n // 2, None]
    assert ((pts >= lo - 1e-5) & (pts <= hi + 1e-5)).all()
    if not training:  # a missing ray: stratum centres over [near, far]
        expected = 0.2 + (torch.arange(32) + 0.5) / 32 * 1.8
        torch.testing.assert_close(out.lengths[n // 2 :], expected.expand(n - n // 2, 32))


def test_before_the_first_update_every_cell_is_occupied():
    grid = OccupancyGrid(resolution=4)
    assert grid.binaries.all() and grid.occupied_fraction() == 1.0
    o, d = random_rays(10)
    bundle = RayBundle(o, d, torch.linspace(0.1, 2.0, 4).expand(10, 4), torch.zeros(10, 2))
    out, aux = OccupancyResampler(grid, n_pts_per_ray=16)(bundle)
    assert (aux["occupancy_hit"] == 1).all()
    pts = o[:, None] + out.lengths[..., None] * d[:, None]
    assert (pts.abs() <= 1.0 + 1e-5).all()  # only inside the box


def test_ema_update_equals_a_loop():
    occs = torch.rand(20)
    indices = torch.tensor([3, 7, 3, 19, 0, 7, 7])
    values = torch.rand(7)
    got = ema_update(occs, indices, values, 0.9)
    expected = occs.clone()
    for c in set(indices.tolist()):
        new = max(float(values[j]) for j in range(7) if int(indices[j]) == c)
        expected[c] = max(float(occs[c]) * 0.9, new)
    torch.testing.assert_close(got, expected)
    assert torch.equal(occs, occs.clone())  # input untouched


def test_warmup_update_marks_the_ball():
    field = BallField(sigma=50.0, radius=0.5)
    grid = OccupancyGrid(resolution=8, aabb=AABB, warmup_steps=10)
    grid.bind_field(field)
    grid.update(step=0)
    assert field.n_points == 8**3
    centres = grid.cell_indices_to_points(torch.arange(8**3), jitter=False)
    half = 0.125 * math.sqrt(3)  # half the cell diagonal
    dist = centres.norm(dim=-1)
    occupied = grid.binaries.reshape(-1)
    assert occupied[dist + half < 0.5].all()
    assert not occupied[dist - half > 0.5].any()
    # the stored values are the opacities of a step of one cell size
    inside = dist + half < 0.5
    torch.testing.assert_close(grid.occs[inside], torch.full((int(inside.sum()),),
                                                             1 - math.exp(-50 * 0.25)))  # fmt: skip


def test_after_warmup_a_quarter_random_plus_occupied_cells():
    field = BallField()
    grid = OccupancyGrid(resolution=8, warmup_steps=0)
    grid.bind_field(field)
    grid.binaries.zero_()
    grid.binaries[0, 0, :5] = True
    grid.update(step=3)
    assert field.n_points == 128 + 5
    grid.binaries.fill_(True)
    field.n_points = 0
    grid.update(step=4)
    assert field.n_points == 128 + 128


def test_on_train_step_updates_every_n_steps_and_state():
    field = BallField()
    resampler = OccupancyResampler(OccupancyGrid(resolution=4, update_every=3), n_pts_per_ray=8)
    with pytest.raises(RuntimeError, match="bind_field"):
        resampler.on_train_step(0, 10)
    resampler.bind_field(field)
    for step in range(7):
        resampler.on_train_step(step, 10)
    assert field.calls == 3  # steps 0, 3, 6
    assert set(resampler.state_dict()) == {"grid.occs", "grid.binaries"}
    assert list(resampler.parameters()) == []
    real = NeuralRadianceField(n_harmonic_functions=2, n_hidden_neurons=8)
    resampler.bind_field(real)
    assert set(resampler.state_dict()) == {"grid.occs", "grid.binaries"}
    assert list(resampler.parameters()) == []


def test_query_density_is_sigma_delta_consistent_for_a_spacing_field():
    torch.manual_seed(0)
    field = NeuralRadianceField(n_harmonic_functions=4, n_hidden_neurons=16,
                                density_scaling="spacing").double()  # fmt: skip
    with torch.no_grad():
        field.density_layer[0].bias.fill_(0.5)
    pts = torch.rand(50, 3, dtype=torch.float64) * 2 - 1
    a1 = query_density(field, pts, 0.01, chunk_size=16)
    a2 = query_density(field, pts, 0.03, chunk_size=50)
    assert a1.shape == (50,) and (a1 > 0).all() and (a1 < 1).all()
    torch.testing.assert_close(-torch.log1p(-a1) / 0.01, -torch.log1p(-a2) / 0.03)
    ball = query_density(BallField(sigma=2.0), torch.zeros(1, 3), 0.1)
    torch.testing.assert_close(ball, torch.tensor([1 - math.exp(-0.2)]))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"resolution": 0}, "resolution must be an integer >= 1 or 3 of them"),
        ({"resolution": [4, 4]}, "resolution must be"),
        ({"ema_decay": 1.5}, "ema_decay must be a number in \\[0, 1\\]; got 1.5"),
        ({"threshold": 1.0}, "threshold must be a number in \\[0, 1\\)"),
        ({"update_every": 0}, "update_every must be a positive integer; got 0"),
        ({"warmup_steps": -1}, "warmup_steps must be an integer >= 0"),
        ({"spacing": 0.0}, "spacing must be a finite number > 0 or null"),
        ({"aabb": [1, 1, 1, 0, 0, 0]}, "aabb must be 6 finite numbers"),
    ],
)
def test_bad_grid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        OccupancyGrid(**kwargs)


def test_bad_resampler_arguments():
    with pytest.raises(ValueError, match="grid must be an OccupancyGrid"):
        OccupancyResampler(grid=None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="n_pts_per_ray must be a positive integer"):
        OccupancyResampler(OccupancyGrid(resolution=2), n_pts_per_ray=0)


def _reference_resample(resampler, bundle):
    """The resampler's first implementation: every plane of every axis, every ray."""
    from nerf_lab.sample_pdf import invert_cdf, stratified_quantiles

    lengths = bundle.lengths
    grid = resampler.grid
    edges = ray_grid_edges(bundle.origins, bundle.directions, lengths[..., 0], lengths[..., -1],
                           grid.aabb, grid.resolution)  # fmt: skip
    seg_len = edges[..., 1:] - edges[..., :-1]
    occupied = occupied_segments(bundle.origins, bundle.directions, edges, grid.binaries,
                                 grid.aabb)  # fmt: skip
    weights = torch.where(occupied, seg_len, torch.zeros_like(seg_len))
    hit = (weights > 0).any(dim=-1, keepdim=True)
    weights = torch.where(hit, weights, seg_len)
    u = stratified_quantiles(lengths.shape[:-1], resampler.n_pts_per_ray, False)
    u = u.clamp(min=torch.finfo(u.dtype).eps)
    samples = invert_cdf(edges, weights, u, eps=0.0, exact_cumsum=False)
    return torch.sort(samples, dim=-1).values, hit


@pytest.mark.parametrize("res", [4, (5, 3, 8), 16])
def test_resampler_equals_its_first_implementation(res):
    """Box-restricted edges and early outs give the same samples as cutting every ray at
    every plane (rays inside, outside, through and along the box, axis-parallel ones)."""
    torch.manual_seed(1)
    grid = OccupancyGrid(resolution=res, aabb=AABB)
    grid.binaries = torch.rand(grid.resolution) < 0.15
    o, d = random_rays(60, axis_parallel=True)
    o = torch.cat((o, torch.rand(20, 3) * 1.6 - 0.8))  # 20 rays start inside the box
    d = torch.cat((d, torch.randn(20, 3)))
    n = o.shape[0]
    lengths = torch.stack((torch.rand(n) * 0.5 + 0.01, torch.rand(n) * 4 + 1.0), dim=-1)
    bundle = RayBundle(o, d, lengths, torch.zeros(n, 2))
    resampler = OccupancyResampler(grid, n_pts_per_ray=24).eval()
    out, aux = resampler(bundle)
    expected, hit = _reference_resample(resampler, bundle)
    assert 5 < int(hit.sum()) < n  # some rays hit, some do not
    torch.testing.assert_close(aux["occupancy_hit"], hit.float())
    torch.testing.assert_close(out.lengths, expected, atol=2e-5, rtol=1e-5)


def test_edges_in_the_box_are_the_crossings_inside_it():
    res = (4, 5, 3)
    o, d = random_rays(30, axis_parallel=True)
    near, far = torch.full((30,), 0.5), torch.full((30,), 6.0)
    full = ray_grid_edges(o, d, near, far, AABB, res)
    boxed = ray_grid_edges_in_box(o, d, near, far, AABB, res)
    assert (boxed[:, 1:] >= boxed[:, :-1]).all()
    assert (boxed[:, 0] == near).all() and (boxed[:, -1] == far).all()
    t_in, t_out = ray_aabb_interval(o, d, AABB)
    n_inside = 0
    for r in range(30):
        lo, hi = float(t_in[r]) + 1e-5, float(t_out[r]) - 1e-5
        a, b = full[r][(full[r] > lo) & (full[r] < hi)], boxed[r][(boxed[r] > lo) & (boxed[r] < hi)]
        torch.testing.assert_close(torch.unique(a), torch.unique(b))
        n_inside += a.numel()
    assert n_inside > 30


def test_culling_grids_follow_every_change_of_the_grid():
    """The cached box and coarse grid equal fresh ones after an update (a new tensor), an
    in-place write, and load_state_dict; and the resampler's samples follow the grid."""
    from nerf_lab.occupancy_grid import coarse_occupancy, occupied_bounds

    torch.manual_seed(2)
    grid = OccupancyGrid(resolution=8, aabb=AABB)
    o, d = random_rays(40)
    bundle = RayBundle(o, d, torch.tensor([0.5, 6.0]).expand(40, 2), torch.zeros(40, 2))
    resampler = OccupancyResampler(grid, n_pts_per_ray=8, coarse_factor=2).eval()

    def check() -> None:
        bounds, coarse, coarse_aabb = grid.culling_grids(2)
        assert bounds == occupied_bounds(grid.binaries, grid.aabb)
        fresh, fresh_aabb = coarse_occupancy(grid.binaries, grid.aabb, 2)
        assert torch.equal(coarse, fresh) and coarse_aabb == fresh_aabb

    check()
    before = resampler(bundle)[0].lengths
    grid.update(0, BallField(radius=0.3))  # a new binaries tensor
    check()
    after = resampler(bundle)[0].lengths
    assert not torch.equal(before, after)
    grid.binaries[:4] = False  # in place
    check()
    on = grid.binaries.nonzero()[0]
    grid.binaries[tuple(on)] = False  # in place, the same number of occupied cells
    grid.binaries[0, 0, 0] = True
    check()
    state = {k: v.clone() for k, v in grid.state_dict().items()}
    state["binaries"][:] = False
    state["binaries"][6, 6, 6] = True
    grid.load_state_dict(state)
    check()
    assert grid.culling_grids(2)[0] == occupied_bounds(state["binaries"], grid.aabb)
