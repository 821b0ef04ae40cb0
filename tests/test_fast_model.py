"""FastRadianceField: shapes, bounds, equivalence of its fast paths with a plain reference."""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch
import torch.nn.functional as F

from nerf_lab import (
    EmissionAbsorptionRaymarcher,
    FoVPerspectiveCameras,
    ImplicitRenderer,
    MonteCarloRaysampler,
    NDCMultinomialRaysampler,
    RayBundle,
    look_at_view_transform,
    ray_bundle_to_ray_points,
)
from nerf_lab.build import make_optimizer
from nerf_lab.hooks import param_groups
from nerf_lab.models.fast import FastRadianceField
from nerf_lab.models.grid import (
    sampled_total_variation,
    total_variation,
    trilinear_corners,
    trilinear_interpolate,
    voxel_cells,
    world_to_voxel,
)
from nerf_lab.models.nerf import sample_spacing
from nerf_lab.raymarchers import transmittance

SMALL = dict(resolution=12, n_features=5, n_hidden_neurons=8, density_init=0.1)


def _cams(n: int = 2) -> FoVPerspectiveCameras:
    R, T = look_at_view_transform(2.7, 10.0, torch.linspace(0, 200, n))
    return FoVPerspectiveCameras(R=R, T=T)


def _bundle(n_cams: int = 2, n_rays: int = 64, n_pts: int = 24) -> RayBundle:
    sampler = MonteCarloRaysampler(-1, 1, -1, 1, n_rays, n_pts, 1.2, 4.2)
    return sampler(_cams(n_cams))


def _blob_model(**kwargs: float) -> FastRadianceField:
    """A model whose density grid is a dense ball (radius 0.6) in strongly empty space."""
    model = FastRadianceField(**{**SMALL, **kwargs})
    r = model.resolution
    axis = torch.linspace(-1, 1, r)
    z, y, x = torch.meshgrid(axis, axis, axis, indexing="ij")
    dist = (x**2 + y**2 + z**2).sqrt()
    raw = torch.where(dist < 0.6, 6.0, -4.0) + 0.5 * torch.randn(r, r, r)
    with torch.no_grad():
        model.density.copy_(raw.reshape(-1, 1))
        model.features.normal_()
    return model


def _reference(model: FastRadianceField, bundle: RayBundle) -> tuple[torch.Tensor, torch.Tensor]:
    """The field evaluated naively everywhere, with ``F.grid_sample`` and no skipping."""
    r, b = model.resolution, model.bbox
    pts = ray_bundle_to_ray_points(bundle)
    grid = (pts / b).reshape(1, -1, 1, 1, 3)
    dens = model.density.view(1, 1, r, r, r)
    feats = model.features.t().reshape(1, -1, r, r, r)
    raw = F.grid_sample(dens, grid, align_corners=True).reshape(*pts.shape[:-1])
    f = F.grid_sample(feats, grid, align_corners=True).reshape(model.n_features, -1).t()
    inside = (pts.abs() <= b).all(-1)
    sigma = torch.exp(raw + model.shift) * inside
    alpha = 1 - torch.exp(-sigma * sample_spacing(bundle.lengths, bundle.directions))
    dirs = F.normalize(bundle.directions, dim=-1)
    emb = model.dir_embedding(dirs)[..., None, :].expand(*pts.shape[:-1], -1)
    rgb = torch.sigmoid(model.color_mlp(torch.cat((f.reshape(*pts.shape[:-1], -1), emb), -1)))
    return alpha[..., None], rgb


@pytest.mark.parametrize("lead", [(7,), (2, 5), (2, 3, 4), (1, 4, 1)])
def test_shapes_and_bounds(lead):
    n_pts = 9
    origins = torch.randn(*lead, 3) * 0.05 + torch.tensor([0.0, 0.0, -2.5])
    directions = torch.randn(*lead, 3) * 0.05 + torch.tensor([0.0, 0.0, 1.0])
    lengths = torch.linspace(0.5, 4.0, n_pts).expand(*lead, n_pts)
    bundle = RayBundle(origins, directions, lengths, torch.zeros(*lead, 2))
    dens, cols = _blob_model()(bundle)
    assert dens.shape == (*lead, n_pts, 1)
    assert cols.shape == (*lead, n_pts, 3)
    assert bool((dens >= 0).all() and (dens <= 1).all())
    assert bool((cols >= 0).all() and (cols <= 1).all())
    assert float(dens.detach().max()) > 0.5  # the rays go through the ball


def test_single_point_per_ray_and_empty_bundle():
    model = _blob_model()
    bundle = _bundle(1, 8, 1)
    dens, cols = model(bundle)
    assert dens.shape == (1, 8, 1, 1) and cols.shape == (1, 8, 1, 3)
    empty = RayBundle(torch.zeros(0, 3), torch.ones(0, 3), torch.zeros(0, 5), torch.zeros(0, 2))
    dens, cols = model(empty)
    assert dens.shape == (0, 5, 1) and cols.shape == (0, 5, 3)


def test_interpolation_equals_grid_sample():
    r, c = 7, 4
    table = torch.randn(r**3, c, dtype=torch.float64)
    pts = torch.rand(500, 3, dtype=torch.float64) * 2.2 - 1.1  # some outside: clamped
    rows, w = trilinear_corners(world_to_voxel(pts, 1.0, r), r)
    ours = trilinear_interpolate(table, rows, w)
    ref = (
        F.grid_sample(
            table.t().reshape(1, c, r, r, r),
            pts.clamp(-1, 1).reshape(1, -1, 1, 1, 3),
            align_corners=True,
        )
        .reshape(c, -1)
        .t()
    )
    torch.testing.assert_close(ours, ref)
    assert torch.allclose(w.sum(-1), torch.ones(500, dtype=torch.float64))


def test_voxel_cells_equal_a_plain_loop_on_and_off_the_grid():
    r = 5
    values = torch.tensor([-0.5, -1e-7, 0.0, 0.3, 1.0, 2.5, 3.0, 3.9999, 4.0, 4.0001, 7.0])
    vx, vy, vz = torch.meshgrid(values, values[[0, 2, 5, 8]], values[[2, 9]], indexing="ij")
    inside, cells = voxel_cells([vx.reshape(-1), vy.reshape(-1), vz.reshape(-1)], r)
    for m, point in enumerate(zip(vx.reshape(-1), vy.reshape(-1), vz.reshape(-1), strict=True)):
        coords = [float(c) for c in point]
        assert bool(inside[m]) == all(0.0 <= c <= r - 1 for c in coords)
        for axis, c in enumerate(coords):
            assert float(cells[axis][m]) == min(max(math.floor(c), 0), r - 2)


def test_interpolation_gradient():
    r = 5
    table = torch.randn(r**3, 3, dtype=torch.float64, requires_grad=True)
    rows, w = trilinear_corners(torch.rand(40, 3, dtype=torch.float64) * (r - 1), r)
    assert torch.autograd.gradcheck(lambda t: trilinear_interpolate(t, rows, w), (table,))


def test_matches_plain_reference_without_skipping():
    model = _blob_model(occupancy_threshold=0.0, termination_threshold=0.0, color_threshold=0.0)
    bundle = _bundle()
    dens, cols = model(bundle)
    ref_dens, ref_cols = _reference(model, bundle)
    torch.testing.assert_close(dens, ref_dens, atol=1e-6, rtol=1e-5)
    # Colours are decoded wherever light arrives (T > 0 in float32) at a non-empty point.
    trans = transmittance(dens[..., 0])
    live = (trans > 0) & (dens[..., 0] > 0)
    assert int(live.sum()) > 1000
    torch.testing.assert_close(cols[live], ref_cols[live], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("render_block", [FastRadianceField.RENDER_BLOCK, 3 * 16])
def test_bundles_entirely_in_occupied_cells_match_the_reference(render_block, monkeypatch):
    """Every point in an occupied cell (the occupancy sampler's bundles): the path that
    gathers nothing, with and without autograd, in one call and in blocks of 3 rays."""
    monkeypatch.setattr(FastRadianceField, "RENDER_BLOCK", render_block)
    model = _blob_model(occupancy_threshold=0.0, termination_threshold=0.0, color_threshold=0.0)
    n_rays, n_pts = 40, 16
    origins = torch.rand(n_rays, 3) * 0.4 - 0.2
    directions = F.normalize(torch.randn(n_rays, 3), dim=-1) * 1.3
    lengths = torch.sort(torch.rand(n_rays, n_pts) * 0.5, dim=-1).values
    bundle = RayBundle(origins, directions, lengths, torch.zeros(n_rays, 2))
    ref_dens, ref_cols = _reference(model, bundle)
    for grad in (True, False):
        with torch.set_grad_enabled(grad):
            dens, cols = model(bundle)
        assert model.last_counts["occupied"] == model.last_counts["points"] == n_rays * n_pts
        assert model.last_counts["colored"] == n_rays * n_pts
        torch.testing.assert_close(dens, ref_dens, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(cols, ref_cols, atol=1e-6, rtol=1e-5)


def test_occupancy_skipping_only_drops_points_below_threshold():
    thr = 0.05
    model = _blob_model(occupancy_threshold=thr, termination_threshold=0.0, color_threshold=0.0)
    assert 0.0 < model.occupied_fraction() < 0.5
    bundle = _bundle(n_rays=200, n_pts=40)
    dens, _ = model(bundle)
    ref, _ = _reference(model, bundle)
    assert model.last_counts["occupied"] < 0.5 * model.last_counts["points"]
    changed = (dens == 0) & (ref > 0)
    assert bool(changed.any())  # some points were skipped ...
    assert bool((dens[changed] == 0).all())  # ... by setting them to 0 ...
    spacing = sample_spacing(bundle.lengths, bundle.directions)[..., None]
    alpha_thr = 1 - torch.exp(-thr * spacing)
    assert bool((ref[changed] < alpha_thr[changed]).all())  # ... only where sigma < thr.
    kept = ~changed
    torch.testing.assert_close(dens[kept], ref[kept], atol=1e-6, rtol=1e-5)


def test_early_termination_bounds_the_rendered_error():
    eps_t, eps_c = 1e-3, 1e-4
    fast = _blob_model(termination_threshold=eps_t, color_threshold=eps_c)
    plain = FastRadianceField(
        **SMALL,
        occupancy_threshold=fast.occupancy_threshold,
        termination_threshold=0.0,
        color_threshold=0.0,
    )
    plain.load_state_dict(fast.state_dict())
    bundle = _bundle(n_rays=300, n_pts=48)
    d_fast, c_fast = fast(bundle)
    d_plain, c_plain = plain(bundle)
    assert torch.equal(d_fast, d_plain)  # densities are always exact
    assert fast.last_counts["colored"] < plain.last_counts["colored"]
    raymarcher = EmissionAbsorptionRaymarcher()
    img_fast = raymarcher(d_fast, c_fast)
    img_plain = raymarcher(d_plain, c_plain)
    bound = eps_t + bundle.lengths.shape[-1] * eps_c
    assert float((img_fast - img_plain).detach().abs().max()) <= bound
    torch.testing.assert_close(img_fast[..., 3], img_plain[..., 3])


@pytest.mark.parametrize("render_block", [FastRadianceField.RENDER_BLOCK, 5 * 24, 1])
def test_training_path_equals_eval_path(render_block, monkeypatch):
    """Autograd on (one call) and off (blocks of ``render_block // n_pts_per_ray`` whole
    rays, at least one: 5 rays of 24 points leave a partial last block of the 128 rays)
    give the same densities, colours and point counts."""
    monkeypatch.setattr(FastRadianceField, "RENDER_BLOCK", render_block)
    model = _blob_model()
    bundle = _bundle()
    with torch.no_grad():
        d0, c0 = model(bundle)
    counts = dict(model.last_counts)
    assert counts["colored"] > 0
    d1, c1 = model(bundle)
    assert d1.requires_grad and c1.requires_grad
    assert model.last_counts == counts
    torch.testing.assert_close(d1, d0, atol=1e-7, rtol=0)
    torch.testing.assert_close(c1, c0, atol=1e-7, rtol=0)


@pytest.mark.parametrize("grad", [True, False])
def test_decoding_every_occupied_point_equals_decoding_the_coloured_ones(grad, monkeypatch):
    """The two ways to the colours (decode all occupied points and zero the uncoloured
    ones, or gather the coloured ones) give the same values and gradients."""
    model = _blob_model(termination_threshold=1e-2, color_threshold=1e-3)
    bundle = _bundle()
    outs = []
    for fraction in (0.0, 1.01):  # always decode all / always gather
        monkeypatch.setattr(FastRadianceField, "DECODE_ALL_FRACTION", fraction)
        model.zero_grad()
        with torch.set_grad_enabled(grad):
            d, c = model(bundle)
        counts = model.last_counts
        assert 0 < counts["colored"] < counts["occupied"]
        if grad:
            (c * torch.arange(3.0)).sum().backward()
            outs.append((d.detach(), c.detach(), model.features.grad.clone()))
        else:
            outs.append((d, c))
    for a, b in zip(*outs, strict=True):
        torch.testing.assert_close(a, b, atol=1e-7, rtol=0)


def test_chunked_render_equals_unchunked():
    model = _blob_model().eval()
    sampler = NDCMultinomialRaysampler(
        image_width=20, image_height=16, n_pts_per_ray=32, min_depth=1.2, max_depth=4.2
    )
    cams = _cams(2)
    with torch.no_grad():
        full, _ = ImplicitRenderer(sampler, EmissionAbsorptionRaymarcher())(cams, model)
        chunked, _ = ImplicitRenderer(sampler, EmissionAbsorptionRaymarcher(), chunk_size=37)(
            cams, model
        )
    assert full.shape == (2, 16, 20, 4)
    torch.testing.assert_close(chunked, full, atol=1e-6, rtol=0)
    assert float(full[..., 3].max()) > 0.9


def test_gradients_are_finite_and_reach_all_parameters():
    model = _blob_model(density_init=0.1)
    with torch.no_grad():
        model.density.mul_(0.1)  # a soft ball: light reaches most points
    renderer = ImplicitRenderer(
        MonteCarloRaysampler(-1, 1, -1, 1, 128, 32, 1.2, 4.2), EmissionAbsorptionRaymarcher()
    )
    out, _ = renderer(_cams(2), model)
    loss = out.square().mean() + sum(model.loss_terms().values(), torch.zeros(()))
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert bool(torch.isfinite(p.grad).all()), name
        assert float(p.grad.abs().sum()) > 0, name


def test_occupancy_cache_follows_parameter_updates():
    model = _blob_model(occupancy_threshold=0.05)
    before = model.occupancy().clone()
    # Fused Adam does not bump the version counter: the cache must notice anyway.
    opt = make_optimizer(partial(torch.optim.Adam, lr=1e-3, fused=True), param_groups(model))
    model.density.grad = -torch.ones_like(model.density)  # pushes every density up
    for _ in range(20):
        opt.step()  # raw += grid lr everywhere
    after = model.occupancy()
    assert int(after.sum()) > int(before.sum())
    fresh = FastRadianceField(**SMALL, occupancy_threshold=0.05)
    fresh.load_state_dict(model.state_dict())
    assert torch.equal(fresh.occupancy(), after)
    # So do writes through .data, and load_state_dict into an existing model.
    model.density.data.fill_(-100.0)
    assert not bool(model.occupancy().any())
    model.density.data.fill_(100.0)
    assert bool(model.occupancy().all())
    model2 = _blob_model(occupancy_threshold=0.05)
    assert not bool(model2.occupancy().all())
    model2.load_state_dict(model.state_dict())
    assert bool(model2.occupancy().all())


def test_points_outside_the_box_are_empty():
    model = FastRadianceField(**{**SMALL, "density_init": 5.0, "bbox": 0.5})
    origins = torch.tensor([[0.0, 0.0, -3.0]])
    directions = torch.tensor([[0.0, 0.0, 1.0]])
    lengths = torch.linspace(0.1, 6.0, 60)[None]
    dens, _ = model(RayBundle(origins, directions, lengths, torch.zeros(1, 2)))
    z = -3.0 + lengths[0]
    assert bool((dens[0, z.abs() > 0.5, 0] == 0).all())
    assert bool((dens[0, z.abs() < 0.45, 0] > 0).all())


def test_param_groups_and_loss_terms():
    model = FastRadianceField(**SMALL, grid_lr_scale=50.0, tv_weight=0.5)
    groups = make_optimizer(partial(torch.optim.Adam, lr=2e-3), param_groups(model)).param_groups
    ids = [id(p) for g in groups for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in model.parameters())
    assert [g["name"] for g in groups] == ["grids", "mlp"]
    assert groups[0]["lr"] == pytest.approx(0.1) and groups[1]["lr"] == pytest.approx(2e-3)
    assert set(model.loss_terms()) == {"tv"}
    assert FastRadianceField(**SMALL).loss_terms() == {}
    both = FastRadianceField(**SMALL, tv_weight=0.5, tv_feature_weight=2.0)
    losses = both.loss_terms()
    assert set(losses) == {"tv", "tv_feature"}
    # Against an obvious loop over neighbouring vertex pairs.
    r, c = both.resolution, both.n_features
    g = both.features.detach().view(r, r, r, c)
    total = 0.0
    for axis in range(3):
        n_pairs = 0
        acc = 0.0
        for i in range(r - 1):
            a = g.narrow(axis, i, 1)
            b = g.narrow(axis, i + 1, 1)
            acc += float((b - a).pow(2).sum())
            n_pairs += a.numel()
        total += acc / n_pairs
    assert float(losses["tv_feature"].detach()) == pytest.approx(2.0 * total, rel=1e-5)
    direct = FastRadianceField(resolution=8, n_features=3, n_hidden_neurons=0)
    assert len(direct.param_groups()) == 1
    _, cols = direct(_bundle(1, 16, 8))
    assert torch.allclose(cols[cols > 0], torch.full_like(cols[cols > 0], 0.5), atol=0.03)


@pytest.mark.parametrize(
    "kwargs, word",
    [
        (dict(resolution=1), "resolution"),
        (dict(resolution=16.0), "resolution"),
        (dict(resolution=True), "resolution"),
        (dict(n_features=0), "n_features"),
        (dict(n_hidden_neurons=-1), "n_hidden_neurons"),
        (dict(n_hidden_neurons=0, n_features=2), "n_features"),
        (dict(n_harmonic_functions_dir=-1), "n_harmonic_functions_dir"),
        (dict(bbox=0.0), "bbox"),
        (dict(bbox="1"), "bbox"),
        (dict(bbox=math.inf), "bbox"),
        (dict(density_init=0.0), "density_init"),
        (dict(occupancy_threshold=-1e-3), "occupancy_threshold"),
        (dict(occupancy_threshold=math.nan), "occupancy_threshold"),
        (dict(termination_threshold=1.0), "termination_threshold"),
        (dict(color_threshold=-0.1), "color_threshold"),
        (dict(grid_lr_scale=0.0), "grid_lr_scale"),
        (dict(tv_weight=-1.0), "tv_weight"),
    ],
)
def test_bad_kwargs_raise(kwargs, word):
    with pytest.raises(ValueError, match=word):
        FastRadianceField(**{"resolution": 8, **kwargs})


def test_sampled_total_variation_is_unbiased_and_sparse():
    torch.manual_seed(0)
    grid = torch.randn(5, 6, 7, 3)
    # Its expectation, by an obvious loop: each base vertex (z, y, x) < (D-1, H-1, W-1)
    # with its 3 forward neighbours, averaged over vertices and channels.
    d, h, w, _ = grid.shape
    expect = 0.0
    n = 0
    for z in range(d - 1):
        for y in range(h - 1):
            for x in range(w - 1):
                v = grid[z, y, x]
                for nb in (grid[z + 1, y, x], grid[z, y + 1, x], grid[z, y, x + 1]):
                    expect += float((nb - v).pow(2).mean())
                n += 1
    expect /= n
    table = grid.reshape(-1, 3)
    estimates = torch.stack([sampled_total_variation(table, (d, h, w), 4096) for _ in range(200)])
    assert float(estimates.mean()) == pytest.approx(expect, rel=0.01)
    assert float(total_variation(grid)) == pytest.approx(expect, rel=0.1)  # boundary only
    # The gradient touches only the sampled vertices and their neighbours.
    g = table.clone().requires_grad_(True)
    sampled_total_variation(g, (d, h, w), 3).backward()
    assert g.grad.is_sparse
    assert 0 < int((g.grad.to_dense().abs().sum(-1) > 0).sum()) <= 3 * 4
    # Its gradient is the estimate's: compare with autograd through plain indexing.
    torch.manual_seed(5)
    g1 = table.clone().requires_grad_(True)
    sampled_total_variation(g1, (d, h, w), 64).backward()
    torch.manual_seed(5)
    z, y, x = (torch.randint(0, n - 1, (64,)) for n in (d, h, w))
    g2 = table.clone().requires_grad_(True)
    flat = g2
    base = (z * h + y) * w + x
    ref = sum((flat[base + o] - flat[base]).pow(2).mean() for o in (h * w, w, 1))
    ref.backward()
    torch.testing.assert_close(g1.grad.to_dense(), g2.grad)


def test_feature_tv_gives_the_optimizer_a_dense_gradient():
    model = FastRadianceField(**SMALL, tv_feature_weight=0.1, tv_feature_samples=50)
    d, c = model(_bundle(2, 16, 8))
    (c.sum() + d.sum() + sum(model.loss_terms().values())).backward()
    assert not model.features.grad.is_sparse
    torch.optim.Adam(model.parameters()).step()
