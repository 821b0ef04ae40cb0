"""Rendering shortcuts (ray skipping, early ray termination) in the one render path: exact
segment boundaries, vectorised vs a plain loop, the threshold bound against the full
render, the skipping contract, and the configs that turn them on."""

from __future__ import annotations

import pytest
import torch

from nerf_lab import EmissionAbsorptionRaymarcher, NeuralRadianceField, RayBundle, Renderer
from nerf_lab.models.nerf import sample_spacing
from nerf_lab.occupancy_grid import OccupancyGrid, OccupancyResampler
from nerf_lab.render_shortcuts import (
    ACTIVE_RAYS,
    RenderShortcuts,
    evaluate_in_segments,
    march_active_rays,
    march_in_segments,
    segment_bounds,
)
from nerf_lab.renderer import Resampler, render_rays
from nerf_lab.resume_diff import is_mutable


def _bundle(n_rays=40, n_pts=23, seed=0, spread=2.0):
    g = torch.Generator().manual_seed(seed)
    origins = torch.randn(n_rays, 3, generator=g) * 0.1 + torch.tensor([0.0, 0.0, -2.5])
    directions = torch.randn(n_rays, 3, generator=g) * 0.15 + torch.tensor([0.0, 0.0, 1.0])
    lengths = torch.sort(torch.rand(n_rays, n_pts, generator=g) * spread + 1.5, dim=-1).values
    return RayBundle(origins, directions, lengths, torch.zeros(n_rays, 2))


class BallField(torch.nn.Module):
    """A ball of density ``scale`` and radius 0.6 at the origin (opacity over the spacing
    to the next sample, the last reusing the one before); colour from the position.
    Counts the points and rays it is called with."""

    def __init__(self, scale: float = 30.0):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(scale))
        self.points = 0
        self.rays = 0

    def forward(self, ray_bundle, **kwargs):
        self.points += ray_bundle.lengths.numel()
        self.rays += ray_bundle.lengths[..., 0].numel()
        pts = ray_bundle.origins[..., None, :] + (
            ray_bundle.lengths[..., :, None] * ray_bundle.directions[..., None, :]
        )
        sigma = self.scale * torch.sigmoid((0.6 - pts.norm(dim=-1)) * 20.0)
        alpha = 1.0 - torch.exp(-sigma * sample_spacing(ray_bundle.lengths, ray_bundle.directions))
        return alpha[..., None], torch.sigmoid(3.0 * pts)


class TutorialSpacingField(torch.nn.Module):
    """The tutorial's convention: spacing to the next sample, 1e10 for the last one."""

    def forward(self, ray_bundle, **kwargs):
        pts = ray_bundle.origins[..., None, :] + (
            ray_bundle.lengths[..., :, None] * ray_bundle.directions[..., None, :]
        )
        deltas = ray_bundle.lengths[..., 1:] - ray_bundle.lengths[..., :-1]
        deltas = torch.cat((deltas, torch.full_like(deltas[..., :1], 1e10)), dim=-1)
        sigma = 0.3 * torch.exp(-pts.pow(2).sum(-1))
        return (1.0 - torch.exp(-sigma * deltas))[..., None], torch.sigmoid(pts)


# ------------------------------------------------------------------------- segments


def test_segment_bounds_cover_the_ray_without_single_point_tails():
    assert segment_bounds(10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert segment_bounds(9, 4) == [(0, 4), (4, 9)]  # a 1-point tail is merged
    assert segment_bounds(5, 1) == [(0, 1), (1, 2), (2, 3), (3, 5)]
    assert segment_bounds(1, 4) == [(0, 1)]
    assert segment_bounds(8, 16) == [(0, 8)]
    for n in range(1, 30):
        for k in range(1, 12):
            b = segment_bounds(n, k)
            assert b[0][0] == 0 and b[-1][1] == n
            assert all(b[i][1] == b[i + 1][0] for i in range(len(b) - 1))
            assert n == 1 or all(stop - start >= 2 or stop < n for start, stop in b)


@pytest.mark.parametrize(
    "field",
    [
        NeuralRadianceField(6, 16, density_scaling="spacing"),
        NeuralRadianceField(6, 16),  # the tutorial's density_scaling=none
        TutorialSpacingField(),
        BallField(3.0),
    ],
    ids=["nerf_spacing", "nerf_tutorial", "spacing_1e10", "ball"],
)
def test_segmented_densities_equal_unsegmented(field):
    """threshold 0 evaluates every segment: densities and colours equal the full call."""
    torch.manual_seed(0)
    bundle = _bundle()
    with torch.no_grad():
        d0, c0 = field(ray_bundle=bundle)
        for k in (1, 2, 3, 7, 22, 23, 50):
            d, c, n_eval = evaluate_in_segments(bundle, field, 0.0, k)
            torch.testing.assert_close(d, d0, atol=1e-6, rtol=0)
            torch.testing.assert_close(c, c0, atol=1e-6, rtol=0)
            n_seg = len(segment_bounds(23, k))
            assert n_eval == 40 * (23 + n_seg - 1)  # every point + one look-ahead per segment


def test_without_look_ahead_segment_ends_would_differ():
    """The look-ahead point matters: a segment evaluated alone gets its last spacing wrong."""
    bundle = _bundle()
    field = TutorialSpacingField()
    with torch.no_grad():
        d0, _ = field(ray_bundle=bundle)
        alone, _ = field(ray_bundle=bundle._replace(lengths=bundle.lengths[:, :8]))
    assert not torch.allclose(alone[:, 7], d0[:, 7], atol=1e-3)


def _loop_reference(bundle, field, threshold, k):
    """One ray at a time, one segment at a time, stopping once T <= threshold."""
    n_rays, n_pts = bundle.lengths.shape
    dens = torch.zeros(n_rays, n_pts, 1)
    cols = torch.zeros(n_rays, n_pts, 3)
    for r in range(n_rays):
        t = 1.0
        for start, stop in segment_bounds(n_pts, k):
            end = min(stop + 1, n_pts)
            ray = RayBundle(
                bundle.origins[r : r + 1],
                bundle.directions[r : r + 1],
                bundle.lengths[r : r + 1, start:end],
                bundle.xys[r : r + 1],
            )
            d, c = field(ray_bundle=ray)
            dens[r, start:stop] = d[0, : stop - start]
            cols[r, start:stop] = c[0, : stop - start]
            for a in d[0, : stop - start, 0].tolist():
                t *= 1.0 - a
            if t <= threshold:
                break
    return dens, cols


@pytest.mark.parametrize("k", [1, 4, 8])
def test_vectorised_segments_match_a_loop(k):
    bundle = _bundle(n_rays=12, n_pts=19)
    field = BallField(20.0)
    with torch.no_grad():
        d, c, _ = evaluate_in_segments(bundle, field, 1e-3, k)
        d_ref, c_ref = _loop_reference(bundle, field, 1e-3, k)
    torch.testing.assert_close(d, d_ref, atol=1e-6, rtol=0)
    torch.testing.assert_close(c, c_ref, atol=1e-6, rtol=0)
    assert (d == 0).any()  # some rays did stop early


@pytest.mark.parametrize("background", [None, (1.0, 1.0, 1.0)])
@pytest.mark.parametrize("threshold", [1e-2, 1e-4])
def test_early_termination_is_within_the_threshold_of_the_full_render(threshold, background):
    bundle = _bundle(n_rays=200, n_pts=64, seed=1)
    raymarcher = EmissionAbsorptionRaymarcher(background_color=background)
    field = BallField(30.0)
    with torch.no_grad():
        full = raymarcher.march(*field(ray_bundle=bundle), bundle)
        field.points = 0
        seg = march_in_segments(bundle, field, raymarcher, threshold, 8)
    assert (full.opacity > 1 - threshold).any()  # some rays are opaque ...
    assert field.points < 0.8 * 200 * 64  # ... and stopped early: points were saved
    assert (seg.rgb - full.rgb).abs().max() <= threshold + 1e-6
    assert (seg.opacity - full.opacity).abs().max() <= threshold + 1e-6
    assert (seg.weights.sum(-1) - full.weights.sum(-1)).abs().max() <= threshold + 1e-6
    # Before the stop the weights are the same numbers.
    evaluated = seg.weights > 0
    torch.testing.assert_close(seg.weights[evaluated], full.weights[evaluated])


# ------------------------------------------------------------------------- render path


class MarkEveryOther(Resampler):
    """Keeps the depths; marks every other ray inactive."""

    needs_field_weights = False

    def forward(self, input_ray_bundle, ray_weights=None, **kwargs):
        lead = input_ray_bundle.lengths.shape[:-1]
        active = (torch.arange(lead.numel()) % 2 == 0).reshape(*lead, 1)
        return input_ray_bundle, {self.ACTIVE_RAYS: active}


def test_the_active_rays_key_is_the_base_contract():
    assert Resampler.ACTIVE_RAYS == ACTIVE_RAYS == "active_rays"


def test_inactive_rays_are_not_evaluated_and_render_empty():
    bundle = _bundle(n_rays=30, n_pts=16)
    field = BallField(10.0)
    raymarcher = EmissionAbsorptionRaymarcher(background_color=(0.2, 0.4, 0.6))
    shortcuts = RenderShortcuts(skip_inactive_rays=True, termination_threshold=0.0)
    with torch.no_grad():
        full = render_rays(bundle, field, raymarcher, MarkEveryOther())
        field.rays = 0
        out = render_rays(bundle, field, raymarcher, MarkEveryOther(), shortcuts)
    assert field.rays == 15  # only the active rays
    on = torch.arange(30) % 2 == 0
    torch.testing.assert_close(out.rgb[on], full.rgb[on])
    torch.testing.assert_close(out.weights[on], full.weights[on])
    assert (full.opacity[~on] > 0.01).any()  # the field is not empty there ...
    assert (out.opacity[~on] == 0).all() and (out.weights[~on] == 0).all()  # ... the render is
    torch.testing.assert_close(out.rgb[~on], torch.tensor([0.2, 0.4, 0.6]).expand(15, 3))
    torch.testing.assert_close(out.lengths, full.lengths)
    assert out.aux[ACTIVE_RAYS].shape == (30, 1)


def test_all_inactive_and_all_active_chunks():
    bundle = _bundle(n_rays=6, n_pts=8)
    field = BallField(10.0)
    raymarcher = EmissionAbsorptionRaymarcher()
    flat_march = lambda b: raymarcher.march(*field(ray_bundle=b), b)  # noqa: E731
    with torch.no_grad():
        field.rays = 0
        none = march_active_rays(bundle, torch.zeros(6, 1, dtype=torch.bool), flat_march,
                                 raymarcher)  # fmt: skip
        assert field.rays == 0 and none.rgb.shape == (6, 3) and (none.opacity == 0).all()
        every = march_active_rays(bundle, torch.ones(6, 1), flat_march, raymarcher)
        torch.testing.assert_close(every.rgb, flat_march(bundle).rgb)


def test_shortcuts_are_off_with_autograd_and_match_through_the_renderer():
    """Training (autograd on) renders in full, with the same gradient; without autograd the
    renderer's chunks, skipping and termination agree with the full render."""
    bundle = _bundle(n_rays=24, n_pts=32, seed=3)
    bundle = bundle._replace(
        origins=bundle.origins.reshape(2, 12, 3),
        directions=bundle.directions.reshape(2, 12, 3),
        lengths=bundle.lengths.reshape(2, 12, 32),
        xys=bundle.xys.reshape(2, 12, 2),
    )
    field = BallField(30.0)
    shortcuts = RenderShortcuts(termination_threshold=1e-3, segment_size=4)
    fast = Renderer(field, EmissionAbsorptionRaymarcher(), MarkEveryOther(), shortcuts=shortcuts)
    exact = Renderer(field, EmissionAbsorptionRaymarcher(), MarkEveryOther())
    # (chunks of an even size: MarkEveryOther's marks follow the global ray index)
    out_fast = fast.render(bundle, chunk_size=6)
    out_exact = exact.render(bundle, chunk_size=6)
    torch.testing.assert_close(out_fast.rgb, out_exact.rgb, rtol=0, atol=0)
    (g_fast,) = torch.autograd.grad(out_fast.rgb.sum(), field.scale)
    (g_exact,) = torch.autograd.grad(out_exact.rgb.sum(), field.scale)
    assert torch.isfinite(g_fast) and g_fast == g_exact
    with torch.no_grad():
        field.points = 0
        fast_ng = fast.render(bundle, chunk_size=6)
        n_fast = field.points
        field.points = 0
        exact_ng = exact.render(bundle, chunk_size=6)
    assert fast_ng.rgb.shape == (2, 12, 3)
    assert n_fast < field.points / 2
    on = (torch.arange(24) % 2 == 0).reshape(2, 12)
    assert (fast_ng.rgb[on] - exact_ng.rgb[on]).abs().max() <= 1e-3 + 1e-6
    assert (fast_ng.opacity[~on] == 0).all()


def test_render_shortcuts_validate_their_arguments():
    with pytest.raises(ValueError, match="termination_threshold"):
        RenderShortcuts(termination_threshold=1.0)
    with pytest.raises(ValueError, match="termination_threshold"):
        RenderShortcuts(termination_threshold=-1e-4)
    with pytest.raises(ValueError, match="segment_size"):
        RenderShortcuts(segment_size=0)
    with pytest.raises(ValueError, match="skip_inactive_rays"):
        RenderShortcuts(skip_inactive_rays="yes")
    with pytest.raises(ValueError, match="shortcuts"):
        Renderer(BallField(), EmissionAbsorptionRaymarcher(), shortcuts={"segment_size": 4})
    assert not RenderShortcuts(termination_threshold=0.0).terminates


# ------------------------------------------------------------------------- occupancy


def test_occupancy_resampler_marks_rays_that_cross_no_occupied_cell():
    grid = OccupancyGrid(resolution=8)
    binaries = torch.zeros(8, 8, 8, dtype=torch.bool)
    binaries[3:5, 3:5, 3:5] = True  # a cube of side 0.5 at the centre
    grid.binaries = binaries
    sampler = OccupancyResampler(grid, n_pts_per_ray=16).eval()
    x = torch.linspace(-0.9, 0.9, 10)
    origins = torch.stack((x, torch.zeros(10), torch.full((10,), -3.0)), dim=-1)
    directions = torch.tensor([0.0, 0.0, 1.0]).expand(10, 3)
    lengths = torch.tensor([1.0, 5.0]).expand(10, 2)
    bundle = RayBundle(origins, directions, lengths, torch.zeros(10, 2))
    out, aux = sampler(input_ray_bundle=bundle)
    hit = aux[ACTIVE_RAYS][:, 0]
    assert hit.dtype == torch.bool
    assert torch.equal(hit, x.abs() < 0.25)
    assert torch.equal(hit.float(), aux["occupancy_hit"][:, 0])

    field = BallField(30.0)
    raymarcher = EmissionAbsorptionRaymarcher(background_color=(1.0, 1.0, 1.0))
    shortcuts = RenderShortcuts(termination_threshold=1e-4, segment_size=4)
    with torch.no_grad():
        fast = render_rays(bundle, field, raymarcher, sampler, shortcuts)
        exact = render_rays(bundle, field, raymarcher, sampler)
    assert (fast.rgb[hit] - exact.rgb[hit]).abs().max() <= 1e-4 + 1e-6
    torch.testing.assert_close(fast.rgb[~hit], torch.ones(int((~hit).sum()), 3))


# ------------------------------------------------------------------------- configs


def _compose(*overrides):
    from hydra import compose, initialize_config_dir

    from nerf_lab.config import CONF_DIR

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


@pytest.mark.parametrize(
    ("overrides", "threshold"),
    [
        ((), 0.0),
        (("experiment=tutorial",), 0.0),
        (("raysampler=occupancy",), 1e-4),
        (("raysampler=proposal",), 1e-4),
        (("raysampler=hierarchical",), 1e-4),
        (("experiment=ngp",), 1e-4),
        (("experiment=kplanes",), 1e-4),
        (("experiment=nerf_hierarchical",), 1e-4),
        (("raysampler=occupancy", "raysampler.render_shortcuts=null"), None),
    ],
)
def test_configs_turn_the_shortcuts_on_where_exact_up_to_the_threshold(overrides, threshold):
    from nerf_lab.build import build_render_shortcuts

    shortcuts = build_render_shortcuts(_compose(*overrides))
    if threshold is None:
        assert shortcuts is None
    else:
        assert isinstance(shortcuts, RenderShortcuts)
        assert shortcuts.termination_threshold == threshold
        assert shortcuts.skip_inactive_rays


def test_a_bad_shortcut_value_names_its_key():
    from nerf_lab.build import build_render_shortcuts

    cfg = _compose("raysampler.render_shortcuts.segment_size=0")
    with pytest.raises(ValueError, match="raysampler.render_shortcuts: segment_size"):
        build_render_shortcuts(cfg)


def test_a_resume_may_change_the_render_shortcuts():
    assert is_mutable("raysampler.render_shortcuts.termination_threshold")
    assert is_mutable("raysampler.render_shortcuts")
    assert not is_mutable("raysampler.n_pts_per_ray")


# ------------------------------------------------------------------------- proposal


def test_proposal_resampler_marks_rays_of_low_proposal_opacity():
    from nerf_lab.proposal import ProposalOutputs, ProposalResampler

    torch.manual_seed(0)
    bundle = _bundle(n_rays=50, n_pts=16, seed=4)
    plain = ProposalResampler(n_proposal_samples=[16], n_pts_per_ray=8).eval()
    with torch.no_grad():
        plain.fields[0].raw.copy_(torch.randn_like(plain.fields[0].raw) * 3.0)
    _, aux = plain(input_ray_bundle=bundle)
    assert ACTIVE_RAYS not in aux  # skip_threshold 0: no ray marked
    opacity = ProposalOutputs.from_aux(aux).weights[-1].detach().sum(-1, keepdim=True)
    threshold = float(opacity.median())
    marking = ProposalResampler(n_proposal_samples=[16], n_pts_per_ray=8,
                                skip_threshold=threshold).eval()  # fmt: skip
    marking.load_state_dict(plain.state_dict())
    out, aux = marking(input_ray_bundle=bundle)
    assert torch.equal(aux[ACTIVE_RAYS], opacity > threshold)
    assert 0 < int(aux[ACTIVE_RAYS].sum()) < 50
    with pytest.raises(ValueError, match="skip_threshold"):
        ProposalResampler(skip_threshold=1.0)


@pytest.mark.parametrize("name", ["NGPField", "KPlanesField"])
def test_hybrid_fields_take_segments_with_no_point_in_their_box(name):
    """A late segment of rays that have left the box holds no point inside it: the
    fields return zeros instead of failing on an empty encoding."""
    from nerf_lab import models

    field = getattr(models, name)()
    bundle = RayBundle(torch.full((3, 3), 5.0), torch.ones(3, 3),
                       torch.linspace(1.0, 2.0, 4).expand(3, 4), torch.zeros(3, 2))  # fmt: skip
    with torch.no_grad():
        densities, colors = field(ray_bundle=bundle)
    assert densities.shape == (3, 4, 1) and colors.shape == (3, 4, 3)
    assert (densities == 0).all() and (colors == 0).all()


def test_hierarchical_render_terminates_only_the_fine_pass():
    from nerf_lab.resamplers import ProbabilisticRaysampler

    bundle = _bundle(n_rays=30, n_pts=24, seed=5)
    field = BallField(30.0)
    raymarcher = EmissionAbsorptionRaymarcher()
    fine = ProbabilisticRaysampler(32, stratified=False, stratified_test=False).eval()
    shortcuts = RenderShortcuts(termination_threshold=1e-4, segment_size=8)
    with torch.no_grad():
        exact = render_rays(bundle, field, raymarcher, fine)
        fast = render_rays(bundle, field, raymarcher, fine, shortcuts)
    assert ((fast.weights == 0) & (exact.weights > 0)).any()  # the fine pass stopped early
    torch.testing.assert_close(fast.passes[0].weights, exact.passes[0].weights, rtol=0, atol=0)
    torch.testing.assert_close(fast.lengths, exact.lengths, rtol=0, atol=0)
    assert (fast.rgb - exact.rgb).abs().max() <= 1e-4 + 1e-6
    assert (fast.opacity - exact.opacity).abs().max() <= 1e-4 + 1e-6
