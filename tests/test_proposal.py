"""Proposal sampling: the density grid, the weights, the resampler and its training."""

from __future__ import annotations

import math

import pytest
import torch

from nerf_lab.hooks import param_groups
from nerf_lab.proposal import (
    DensityGrid,
    ProposalOutputs,
    ProposalResampler,
    anneal_exponent,
    pdf_resample,
    weights_from_sigma,
)
from nerf_lab.raysamplers import RayBundle
from nerf_lab.regularizers import interlevel_loss
from nerf_lab.resamplers import lengths_to_edges


def trilinear_loop(raw: torch.Tensor, aabb, p: torch.Tensor) -> torch.Tensor:
    """Trilinear interpolation of ``raw[z, y, x]`` at one point, corner by corner."""
    r = raw.shape[0]
    coords = [(float(p[a]) - aabb[a]) / (aabb[a + 3] - aabb[a]) * (r - 1) for a in range(3)]
    base = [min(int(math.floor(c)), r - 2) for c in coords]
    frac = [c - b for c, b in zip(coords, base, strict=True)]
    value = 0.0
    for dx in (0, 1):
        for dy in (0, 1):
            for dz in (0, 1):
                wgt = (
                    (frac[0] if dx else 1 - frac[0])
                    * (frac[1] if dy else 1 - frac[1])
                    * (frac[2] if dz else 1 - frac[2])
                )
                value += wgt * float(raw[base[2] + dz, base[1] + dy, base[0] + dx])
    return torch.tensor(value, dtype=raw.dtype)


def test_density_grid_is_trilinear_inside_and_zero_outside():
    aabb = (-1.0, -0.5, 0.0, 1.0, 1.5, 1.0)
    grid = DensityGrid(resolution=5, aabb=aabb, density_init=0.5).double()
    with torch.no_grad():
        grid.raw.normal_()
    lo, hi = torch.tensor(aabb[:3]), torch.tensor(aabb[3:])
    pts = (lo + torch.rand(40, 3) * (hi - lo)).double()
    sigma = grid(pts)
    expected = torch.stack([trilinear_loop(grid.raw.detach(), aabb, p) for p in pts])
    torch.testing.assert_close(sigma, torch.exp(expected + math.log(0.5)))
    outside = torch.tensor([[1.01, 0.0, 0.5], [0.0, -0.6, 0.5], [0.0, 0.0, 1.2]]).double()
    assert (grid(outside) == 0).all()
    fresh = DensityGrid(resolution=3, aabb=aabb, density_init=0.5)
    torch.testing.assert_close(fresh(pts.float()[None]), torch.full((1, 40), 0.5))


def test_density_grid_gradients():
    grid = DensityGrid(resolution=3).double()
    pts = torch.rand(7, 3, dtype=torch.float64) * 1.8 - 0.9
    raw = (0.1 * torch.randn(3, 3, 3, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda r: torch.func.functional_call(grid, {"raw": r}, (pts,)), (raw,)
    )


def test_weights_from_constant_density_are_analytic():
    sigma, n = 0.7, 10
    edges = torch.linspace(1.0, 3.0, n + 1, dtype=torch.float64)[None]
    norms = torch.tensor([[2.0]], dtype=torch.float64)  # one unit of depth is 2 world units
    w = weights_from_sigma(torch.full((1, n), sigma, dtype=torch.float64), edges, norms)
    delta = 0.2 * 2.0
    i = torch.arange(n, dtype=torch.float64)
    torch.testing.assert_close(w[0], torch.exp(-sigma * delta * i) * (1 - math.exp(-sigma * delta)))
    torch.testing.assert_close(w.sum(), torch.tensor(1 - math.exp(-sigma * 4.0), dtype=w.dtype))


def test_anneal_exponent():
    assert anneal_exponent(0, 10.0, 1000) == 0.0
    assert anneal_exponent(1000, 10.0, 1000) == 1.0 and anneal_exponent(5000, 10.0, 1000) == 1.0
    assert anneal_exponent(500, 10.0, 1000) == pytest.approx(10 * 0.5 / (9 * 0.5 + 1))
    assert anneal_exponent(0, 10.0, 0) == 1.0


def test_pdf_resample_puts_samples_where_the_weight_is():
    edges = torch.linspace(0.0, 1.0, 11).expand(5, 11)
    weights = torch.zeros(5, 10)
    weights[:, 6] = 1.0
    for stratified in (True, False):
        out = pdf_resample(edges, weights, 32, stratified, histogram_padding=1e-7)
        assert out.shape == (5, 32) and (out[..., 1:] >= out[..., :-1]).all()
        assert ((out >= 0.6) & (out <= 0.7)).all()
    even = pdf_resample(edges, torch.zeros(5, 10), 10, False)  # all-zero: evenly spread
    torch.testing.assert_close(even, torch.linspace(0.05, 0.95, 10).expand(5, 10))


def rays(n: int, n_pts: int) -> tuple[RayBundle, torch.Tensor]:
    """Rays along +z from z = -3 through x, y in [-0.5, 0.5], and the depth of a sphere of
    radius 0.8 at the origin along each."""
    xy = torch.rand(n, 2) - 0.5
    origins = torch.cat((xy, torch.full((n, 1), -3.0)), dim=-1)
    directions = torch.tensor([0.0, 0.0, 1.0]).expand(n, 3)
    lengths = torch.linspace(1.0, 5.0, n_pts).expand(n, n_pts).contiguous()
    surface = 3.0 - torch.sqrt(0.64 - (xy**2).sum(-1))
    return RayBundle(origins, directions, lengths, torch.zeros(n, 2)), surface


def test_forward_shapes_aux_and_levels():
    resampler = ProposalResampler(n_proposal_samples=(24, 12), n_pts_per_ray=9,
                                  resolutions=(8, 16))  # fmt: skip
    bundle, _ = rays(6, 24)
    out, aux = resampler(bundle, None)
    assert out.lengths.shape == (6, 9) and (out.lengths[:, 1:] >= out.lengths[:, :-1]).all()
    assert out.origins is bundle.origins and out.xys is bundle.xys
    p = ProposalOutputs.from_aux(aux)
    assert [e.shape for e in p.edges] == [(6, 25), (6, 13)]
    assert [w.shape for w in p.weights] == [(6, 24), (6, 12)]
    torch.testing.assert_close(p.edges[0], lengths_to_edges(bundle.lengths))
    assert all(w.requires_grad for w in p.weights) and not out.lengths.requires_grad
    assert set(aux) == {"proposal_edges/0", "proposal_weights/0", "proposal_edges/1",
                        "proposal_weights/1"}  # fmt: skip
    # level 1 was drawn from level 0: its depths lie in level 0's span
    assert (p.edges[1][:, :-1] >= p.edges[0][:, :1]).all()
    assert (p.edges[1][:, :-1] <= p.edges[0][:, -1:]).all()
    with pytest.raises(ValueError, match="n_proposal_samples\\[0\\]=24"):
        resampler(rays(2, 10)[0], None)
    with pytest.raises(ValueError, match="no proposal levels"):
        ProposalOutputs.from_aux({})


def test_no_samples_outside_the_box():
    resampler = ProposalResampler(n_proposal_samples=(32,), n_pts_per_ray=16, resolutions=(8,),
                                  histogram_padding=1e-9).eval()  # fmt: skip
    bundle, _ = rays(20, 32)
    out, _ = resampler(bundle, None)
    z = bundle.origins[:, 2:3] + out.lengths  # world z of the samples
    # the box ends at z = 1; the last level-0 interval containing it may start before
    assert (z <= 1.0 + 4.0 / 31 + 1e-5).all() and (z >= -1.0 - 4.0 / 31 - 1e-5).all()


def test_eval_is_deterministic_and_training_is_stratified():
    resampler = ProposalResampler(n_proposal_samples=(16,), n_pts_per_ray=8, resolutions=(8,))
    bundle, _ = rays(4, 16)
    a, b = resampler(bundle)[0].lengths, resampler(bundle)[0].lengths
    assert not torch.equal(a, b)
    resampler.eval()
    assert torch.equal(resampler(bundle)[0].lengths, resampler(bundle)[0].lengths)


def test_hooks_param_groups_tv_and_anneal():
    resampler = ProposalResampler(n_proposal_samples=(16, 8), resolutions=(4, 6), lr_scale=3.0,
                                  tv_weight=0.5, anneal_max_num_iters=100)  # fmt: skip
    (group,) = param_groups(resampler, prefix="resampler")
    assert group["name"] == "resampler/proposal" and group["lr_scale"] == 3.0
    assert {id(p) for p in group["params"]} == {id(f.raw) for f in resampler.fields}
    assert resampler.loss_terms()["proposal_tv"].item() == 0.0
    with torch.no_grad():
        resampler.fields[0].raw[0, 0, 0] = 1.0
    tv = resampler.loss_terms()["proposal_tv"]
    # one vertex differs by 1 from 3 neighbours: 1 pair per axis over 3 * 4 * 4 pairs each
    torch.testing.assert_close(tv, torch.tensor(0.5 * 3 * (1 / 48)))
    resampler.on_train_step(50, 200)
    assert resampler._anneal == pytest.approx(anneal_exponent(50, 10.0, 100))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n_proposal_samples": []}, "n_proposal_samples must be a non-empty list"),
        ({"n_proposal_samples": (64, 1)}, "integers >= 2"),
        ({"resolutions": (8, 8)}, "resolutions must have one entry per proposal level \\(1\\)"),
        ({"histogram_padding": 0.0}, "histogram_padding must be a finite number > 0; got 0.0"),
        ({"anneal_max_num_iters": -1}, "anneal_max_num_iters must be an integer >= 0"),
        ({"aabb": [0, 0, 0, 1, 1]}, "aabb must be 6 finite numbers"),
        ({"aabb": [0, 0, 0, 1, -1, 1]}, "each min < max"),
        ({"stratified": None}, "stratified must be true or false"),
        ({"density_init": 0}, "density_init must be a finite number > 0"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ProposalResampler(**kwargs)


def test_the_proposal_loss_trains_the_grid_to_find_the_surface():
    torch.manual_seed(0)
    resampler = ProposalResampler(n_proposal_samples=(32,), n_pts_per_ray=16, resolutions=(16,),
                                  anneal_max_num_iters=0)  # fmt: skip
    # the target: all weight in the interval of a fine grid of depths that holds the surface
    fine_edges = torch.linspace(1.0, 5.0, 257)

    def target(surface):
        w = torch.zeros(surface.shape[0], 256)
        w[torch.arange(surface.shape[0]), torch.searchsorted(fine_edges, surface) - 1] = 1.0
        return fine_edges.expand(surface.shape[0], 257), w

    def near_surface_fraction():
        resampler.eval()
        bundle, surface = rays(256, 32)
        with torch.no_grad():
            out, _ = resampler(bundle)
        resampler.train()
        return float(((out.lengths - surface[:, None]).abs() < 0.15).float().mean())

    before = near_surface_fraction()
    opt = torch.optim.Adam(resampler.parameters(), lr=0.2)
    for _ in range(40):
        bundle, surface = rays(64, 32)
        _, aux = resampler(bundle)
        p = ProposalOutputs.from_aux(aux)
        loss = interlevel_loss(p.edges, p.weights, *target(surface))
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = near_surface_fraction()
    assert before < 0.3 and after > 0.6, (before, after)
