"""The render contract (structured outputs with weights, multi-pass, one chunking), the loss
terms, the schedulers and PSNR: against closed forms, plain loops and torch's own."""

from __future__ import annotations

import math

import pytest
import torch

from nerf_lab import (
    EmissionAbsorptionRaymarcher,
    FoVPerspectiveCameras,
    ImplicitRenderer,
    MonteCarloRaysampler,
    NDCMultinomialRaysampler,
    RayBundle,
    Renderer,
    Resampler,
    look_at_view_transform,
)
from nerf_lab.losses import ColorLoss, SilhouetteLoss, huber
from nerf_lab.metrics import mse_to_psnr, psnr
from nerf_lab.raymarchers import RenderOutput, expected_depth
from nerf_lab.renderer import map_ray_chunks, render_rays
from nerf_lab.schedulers import constant, exponential_decay, step_decay, warmup_cosine


def _bundle(n_rays=5, n_pts=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.sort(torch.rand(n_rays, n_pts, generator=g) * 3 + 1, dim=-1).values
    return RayBundle(
        torch.randn(n_rays, 3, generator=g),
        torch.randn(n_rays, 3, generator=g),
        lengths,
        torch.zeros(n_rays, 2),
    )


class BlobField(torch.nn.Module):
    """Density falling off with the distance from the origin; colour from the position."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(2.0))

    def forward(self, ray_bundle, **kwargs):
        pts = ray_bundle.origins[..., None, :] + (
            ray_bundle.lengths[..., :, None] * ray_bundle.directions[..., None, :]
        )
        sigma = self.scale * torch.exp(-pts.pow(2).sum(-1, keepdim=True))
        return 1 - torch.exp(-sigma), torch.sigmoid(pts)


# ------------------------------------------------------------------------------ raymarcher


def test_march_matches_forward_and_a_plain_loop():
    d = torch.rand(4, 6, 1) * 0.6
    f = torch.rand(4, 6, 3)
    bundle = _bundle(4, 6)
    rm = EmissionAbsorptionRaymarcher(background_color=[0.2, 0.4, 0.6])
    out = rm.march(d, f, bundle)
    torch.testing.assert_close(torch.cat((out.rgb, out.opacity), -1), rm(d, f))
    for r in range(4):
        t, wsum, dsum = 1.0, 0.0, 0.0
        for i in range(6):
            w = float(d[r, i, 0]) * t
            assert float(out.weights[r, i]) == pytest.approx(w, abs=1e-6)
            wsum, dsum = wsum + w, dsum + w * float(bundle.lengths[r, i])
            t *= 1 + 1e-10 - float(d[r, i, 0])
        assert float(out.depth[r, 0]) == pytest.approx(dsum / wsum, rel=1e-5)
        assert float(out.opacity[r, 0]) == pytest.approx(wsum, abs=1e-6)


def test_depth_of_an_opaque_point_is_its_depth():
    lengths = torch.linspace(1.0, 3.0, 5)[None]
    d = torch.zeros(1, 5, 1)
    d[0, 3, 0] = 1.0
    out = EmissionAbsorptionRaymarcher().march(d, torch.ones(1, 5, 3), RayBundle(
        torch.zeros(1, 3), torch.tensor([[0.0, 0.0, 1.0]]), lengths, torch.zeros(1, 2)
    ))  # fmt: skip
    assert float(out.depth) == pytest.approx(2.5) and float(out.opacity) == pytest.approx(1.0)
    # an empty ray's depth stays within its samples
    empty = expected_depth(torch.zeros(1, 5), lengths)
    assert 1.0 <= float(empty) <= 3.0


def test_chunked_render_equals_one_pass_and_gradients_agree():
    field = BlobField()
    bundle = _bundle(23, 9)
    renderer = Renderer(field, EmissionAbsorptionRaymarcher())
    full = renderer.render(bundle)
    chunked = renderer.render(bundle, chunk_size=5)
    for a, b in ((full.rgb, chunked.rgb), (full.weights, chunked.weights),
                 (full.depth, chunked.depth), (full.opacity, chunked.opacity)):  # fmt: skip
        torch.testing.assert_close(a, b)
    g_full = torch.autograd.grad(full.rgb.sum(), field.scale)[0]
    g_chunk = torch.autograd.grad(renderer.render(bundle, chunk_size=4).rgb.sum(), field.scale)[0]
    torch.testing.assert_close(g_full, g_chunk)
    assert torch.isfinite(g_full)


def test_map_ray_chunks_keeps_leading_shapes():
    b = _bundle(12, 4)
    grid = RayBundle(b.origins.view(3, 4, 3), b.directions.view(3, 4, 3),
                     b.lengths.view(3, 4, 4), b.xys.view(3, 4, 2))  # fmt: skip
    out = map_ray_chunks(lambda sub: sub.lengths.sum(-1, keepdim=True), grid, 5)
    torch.testing.assert_close(out, grid.lengths.sum(-1, keepdim=True))


class Midpoints(torch.nn.Module):
    """A plain (PyTorch3D-protocol) resampler: one sample between each pair, by weight."""

    def forward(self, input_ray_bundle, ray_weights, **kwargs):
        lengths = input_ray_bundle.lengths
        mids = 0.5 * (lengths[..., 1:] + lengths[..., :-1])
        merged = torch.sort(torch.cat((lengths, mids), -1), -1).values
        self.seen = ray_weights
        return input_ray_bundle._replace(lengths=merged)


class Fixed(Resampler):
    needs_field_weights = False

    def forward(self, input_ray_bundle, ray_weights, **kwargs):
        assert ray_weights is None
        return input_ray_bundle, {"tag": torch.ones(input_ray_bundle.lengths.shape[0], 1)}


def test_two_pass_render_passes_weights_and_keeps_both_passes():
    field, resampler = BlobField(), Midpoints()
    bundle = _bundle(6, 5)
    out = render_rays(bundle, field, EmissionAbsorptionRaymarcher(), resampler)
    assert len(out.passes) == 1 and out.weights.shape == (6, 9)
    torch.testing.assert_close(resampler.seen, out.passes[0].weights)
    single = render_rays(bundle, field, EmissionAbsorptionRaymarcher())
    torch.testing.assert_close(out.passes[0].rgb, single.rgb)
    # a resampler that needs no field pass: one field evaluation, its aux reaches the output
    aux = Renderer(field, EmissionAbsorptionRaymarcher(), Fixed()).render(bundle, chunk_size=4)
    assert aux.passes == [] and aux.aux["tag"].shape == (6, 1)
    # loss terms see every pass ("all") or the last one
    targets = {"rgb": torch.rand(6, 3), "silhouette": torch.rand(6, 1)}
    both = ColorLoss(passes="all")(out, targets)
    last = ColorLoss(passes="last")(out, targets)
    first = huber(out.passes[0].rgb, targets["rgb"]).mean()
    assert float(both.detach()) == pytest.approx(float((last + first).detach()), rel=1e-6)


def test_implicit_renderer_keeps_pytorch3d_output():
    R, T = look_at_view_transform(2.7, 0.0, torch.tensor([0.0, 90.0]))
    cams = FoVPerspectiveCameras(R=R, T=T)
    field = BlobField()
    sampler = NDCMultinomialRaysampler(image_width=6, image_height=5, n_pts_per_ray=8,
                                       min_depth=1.0, max_depth=4.0)  # fmt: skip
    images, bundle = ImplicitRenderer(sampler, EmissionAbsorptionRaymarcher())(cams, field)
    chunked, _ = ImplicitRenderer(sampler, EmissionAbsorptionRaymarcher(), chunk_size=7)(
        cams, field
    )
    assert images.shape == (2, 5, 6, 4)
    torch.testing.assert_close(images, chunked)
    structured = Renderer(field, EmissionAbsorptionRaymarcher()).render(bundle)
    torch.testing.assert_close(torch.cat((structured.rgb, structured.opacity), -1), images)
    mc = MonteCarloRaysampler(-1, 1, -1, 1, 10, 8, 1.0, 4.0)
    out, b = ImplicitRenderer(mc, EmissionAbsorptionRaymarcher())(cams, field)
    assert out.shape == (2, 10, 4) and b.lengths.shape == (2, 10, 8)


# ------------------------------------------------------------------------------ loss terms


def _out(rgb, opacity):
    n = rgb.shape[0]
    return RenderOutput(rgb, opacity, torch.zeros(n, 1), torch.zeros(n, 2), torch.zeros(n, 2))


@pytest.mark.parametrize("kind", ["huber", "mse", "l1"])
def test_penalty_terms_against_closed_forms(kind):
    rgb, tgt = torch.rand(8, 3), torch.rand(8, 3)
    op, sil = torch.rand(8, 1), torch.rand(8, 1)
    diff = rgb - tgt
    expected = {
        "huber": 0.1 * (torch.sqrt(1 + diff**2 / 0.01) - 1),
        "mse": diff**2,
        "l1": diff.abs(),
    }[kind].mean()
    value = ColorLoss(kind=kind, weight=2.5)(_out(rgb, op), {"rgb": tgt, "silhouette": sil})
    assert float(value) == pytest.approx(2.5 * float(expected), rel=1e-6)
    s = SilhouetteLoss(kind=kind)(_out(rgb, op), {"rgb": tgt, "silhouette": sil})
    ds = op - sil
    exp_s = {"huber": 0.1 * (torch.sqrt(1 + ds**2 / 0.01) - 1), "mse": ds**2, "l1": ds.abs()}
    assert float(s) == pytest.approx(float(exp_s[kind].mean()), rel=1e-6)


def test_loss_terms_validate_and_need_their_targets():
    with pytest.raises(ValueError, match="kind must be one of"):
        ColorLoss(kind="l3")
    with pytest.raises(ValueError, match="weight must be a finite number >= 0"):
        ColorLoss(weight=-1)
    with pytest.raises(ValueError, match="passes must be one of"):
        ColorLoss(passes="coarse")
    with pytest.raises(ValueError, match="needs 'silhouette' targets"):
        SilhouetteLoss()(_out(torch.rand(2, 3), torch.rand(2, 1)), {"rgb": torch.rand(2, 3)})


# ------------------------------------------------------------------------------ schedulers


def _opt(lr=1.0):
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)


def _lrs(scheduler, n):
    out = []
    for _ in range(n):
        out.append(scheduler.optimizer.param_groups[0]["lr"])
        scheduler.optimizer.step()
        scheduler.step()
    return out


def test_step_decay_equals_torch_multistep():
    ours = _lrs(step_decay(_opt(), n_iter=20, decay_at=[0.25, 0.75], gamma=0.5, warmup=0), 20)
    ref_opt = _opt()
    ref = _lrs(torch.optim.lr_scheduler.MultiStepLR(ref_opt, [5, 15], gamma=0.5), 20)
    assert ours == pytest.approx(ref)
    # the tutorial's milestone: iteration round(3000 * 0.75) = 2250 runs at lr x 0.1
    lrs = _lrs(step_decay(_opt(), n_iter=3000, decay_at=[0.75], gamma=0.1, warmup=0), 2252)
    assert lrs[2249] == 1.0 and lrs[2250] == pytest.approx(0.1)


def test_step_decay_warmup_closed_form():
    # the default: 50 iterations of linear warm-up from 0.01, then the step schedule
    lrs = _lrs(step_decay(_opt(), n_iter=200, decay_at=[0.75], gamma=0.1), 200)
    assert lrs[:50] == pytest.approx([0.01 + 0.99 * i / 50 for i in range(50)])
    assert lrs[50:150] == pytest.approx([1.0] * 100) and lrs[150:] == pytest.approx([0.1] * 50)
    # a milestone inside the warm-up multiplies it
    sched = step_decay(_opt(), n_iter=10, decay_at=[0.2], gamma=0.5, warmup=4, warmup_start=0.5)
    assert _lrs(sched, 6) == pytest.approx([0.5, 0.625, 0.375, 0.4375, 0.5, 0.5])
    # a run shorter than the warm-up stays in it
    sched = step_decay(_opt(), n_iter=4, decay_at=[], warmup=8, warmup_start=0.2)
    assert _lrs(sched, 4) == pytest.approx([0.2, 0.3, 0.4, 0.5])
    with pytest.raises(ValueError, match="warmup must be an integer"):
        step_decay(_opt(), n_iter=5, warmup=-1)
    with pytest.raises(ValueError, match="warmup_start"):
        step_decay(_opt(), n_iter=5, warmup_start=1.5)


def test_step_decay_resets_the_optimizer_state_at_the_milestone():
    p = torch.nn.Parameter(torch.ones(2))
    opt = torch.optim.Adam([p], lr=0.1)
    sched = step_decay(opt, n_iter=4, decay_at=[0.5], gamma=0.1, reset_state_at_decay=True)
    for i in range(4):
        p.grad = torch.ones(2)
        opt.step()
        sched.step()
        # the state is cleared exactly when the next iteration is the milestone (2)
        if i == 1:
            assert len(opt.state) == 0
        else:
            assert int(opt.state[p]["step"]) == (i + 1 if i < 1 else i - 1)
    state = sched.state_dict()
    assert state["reset_state"] is True


def test_exponential_cosine_constant_closed_forms():
    assert _lrs(exponential_decay(_opt(), gamma=0.1, step_size=4), 9) == pytest.approx(
        [0.1 ** (i / 4) for i in range(9)]
    )
    n, warm, lo, start = 10, 3, 0.1, 0.2
    lrs = _lrs(warmup_cosine(_opt(), n_iter=n, warmup=warm, min_factor=lo, warmup_start=start), 12)
    expected = [start + (1 - start) * i / warm for i in range(warm)] + [
        lo + (1 - lo) * 0.5 * (1 + math.cos(math.pi * min(i - warm, n - warm) / (n - warm)))
        for i in range(warm, 12)
    ]
    assert lrs == pytest.approx(expected)
    assert lrs[n] == pytest.approx(lo) and lrs[-1] == pytest.approx(lo)
    assert _lrs(constant(_opt(0.3)), 5) == pytest.approx([0.3] * 5)
    with pytest.raises(ValueError, match="warmup must be an integer in"):
        warmup_cosine(_opt(), n_iter=5, warmup=6)
    with pytest.raises(ValueError, match="decay_at must be a list of fractions"):
        step_decay(_opt(), n_iter=5, decay_at=[1.5])


def test_scheduler_state_round_trips_through_weights_only_load(tmp_path):
    # (mid warm-up: a resume restores the optimiser's lr with its state, then the schedule)
    sched = step_decay(_opt(), n_iter=10, decay_at=[0.5], reset_state_at_decay=True, warmup=4)
    _lrs(sched, 3)
    path = tmp_path / "s.pt"
    torch.save({"s": sched.state_dict(), "o": sched.optimizer.state_dict()}, path)
    fresh = step_decay(_opt(), n_iter=10, decay_at=[0.5], reset_state_at_decay=True, warmup=4)
    state = torch.load(path, weights_only=True)
    fresh.optimizer.load_state_dict(state["o"])
    fresh.load_state_dict(state["s"])
    assert fresh.last_epoch == 3 and _lrs(fresh, 4) == _lrs(sched, 4)


# ------------------------------------------------------------------------------ metrics


def test_psnr_closed_form():
    a = torch.zeros(2, 4, 4, 3)
    b = torch.full((2, 4, 4, 3), 0.1)
    torch.testing.assert_close(psnr(a, b), torch.full((2,), 20.0))
    assert float(mse_to_psnr(torch.tensor(1e-3))) == pytest.approx(30.0)


def test_a_stop_request_interrupts_a_render_between_chunks():
    from nerf_lab.renderer import RenderInterrupted

    calls = []

    def stop_after_two() -> bool:
        calls.append(1)
        return len(calls) > 2

    renderer = Renderer(BlobField(), EmissionAbsorptionRaymarcher())
    with pytest.raises(RenderInterrupted):
        renderer.render(_bundle(40, 4), chunk_size=5, should_stop=stop_after_two)
    assert len(calls) == 3  # two chunks rendered, the third never started
    sampler = NDCMultinomialRaysampler(image_width=8, image_height=8, n_pts_per_ray=4,
                                       min_depth=1.0, max_depth=4.0)  # fmt: skip
    R, T = look_at_view_transform(2.7, 0.0, torch.tensor([0.0]))
    calls.clear()
    with pytest.raises(RenderInterrupted):  # inside the first (and only) view
        renderer.render_views(FoVPerspectiveCameras(R=R, T=T), sampler, 16, stop_after_two)
