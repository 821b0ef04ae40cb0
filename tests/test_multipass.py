"""The resamplers in a two-pass render as the renderer's protocol runs them (field → weights →
resampler → field), with the regularisers on top: shapes and where the gradients go."""

from __future__ import annotations

import pytest
import torch

from nerf_lab.models.nerf import NeuralRadianceField
from nerf_lab.occupancy_grid import OccupancyGrid, OccupancyResampler
from nerf_lab.proposal import ProposalOutputs, ProposalResampler
from nerf_lab.raymarchers import transmittance
from nerf_lab.raysamplers import RayBundle
from nerf_lab.regularizers import distortion_loss, interlevel_loss, opacity_loss
from nerf_lab.resamplers import (
    ProbabilisticRaysampler,
    lengths_to_edges,
    lengths_to_intervals,
    split_resampler_output,
)


def small_field() -> NeuralRadianceField:
    return NeuralRadianceField(n_harmonic_functions=3, n_hidden_neurons=16,
                               density_scaling="spacing")  # fmt: skip


def rays(*lead: int) -> RayBundle:
    """Rays of leading shape ``lead`` from ``(0, 0, -3)`` towards +z, 16 depths in [1, 5]."""
    origins = torch.tensor([0.0, 0.0, -3.0]).expand(*lead, 3)
    directions = torch.nn.functional.pad(torch.rand(*lead, 2) * 0.4 - 0.2, (0, 1), value=1.0)
    lengths = torch.linspace(1.0, 5.0, 16).expand(*lead, 16).contiguous()
    return RayBundle(origins, directions, lengths, torch.zeros(*lead, 2))


def march(field, bundle):
    densities, colors = field(ray_bundle=bundle)
    alpha = densities[..., 0]
    weights = alpha * transmittance(alpha)
    return (weights[..., None] * colors).sum(-2), weights.sum(-1), weights


def render(field, resampler, bundle):
    """The renderer's multi-pass protocol (nerf_lab.renderer.render_rays)."""
    weights = None
    if resampler.needs_field_weights:
        weights = march(field, bundle)[2]
    fine, aux = split_resampler_output(resampler(input_ray_bundle=bundle, ray_weights=weights))
    rgb, opacity, w = march(field, fine)
    return rgb, opacity, w, fine, aux


def make_resampler(kind: str):
    if kind == "hierarchical":
        return ProbabilisticRaysampler(8, stratified=True, stratified_test=False)
    if kind == "proposal":
        return ProposalResampler(n_proposal_samples=(16, 12), n_pts_per_ray=8, resolutions=(8, 8))
    return OccupancyResampler(OccupancyGrid(resolution=8, update_every=1), n_pts_per_ray=8)


@pytest.mark.parametrize("kind", ["hierarchical", "proposal", "occupancy"])
def test_two_pass_render_and_losses(kind):
    field = small_field()
    resampler = make_resampler(kind)
    if kind == "occupancy":
        resampler.bind_field(field)
        resampler.on_train_step(0, 10)
    n_rays = 12
    bundle = rays(2, n_rays)
    rgb, opacity, w, fine, aux = render(field, resampler, bundle)
    n_fine = 24 if kind == "hierarchical" else 8
    assert rgb.shape == (2, n_rays, 3) and fine.lengths.shape == (2, n_rays, n_fine)
    loss = (rgb - 0.5).pow(2).mean()
    loss = loss + 0.01 * distortion_loss(w, *lengths_to_intervals(fine.lengths)).mean()
    loss = loss + 0.01 * opacity_loss(opacity).mean()
    if kind == "proposal":
        p = ProposalOutputs.from_aux(aux)
        prop = interlevel_loss(p.edges, p.weights, lengths_to_edges(fine.lengths), w)
        # the field's losses reach no proposal grid; the proposal loss reaches no field weight
        grads = torch.autograd.grad(loss, list(resampler.parameters()), allow_unused=True)
        assert all(g is None for g in grads)
        grads = torch.autograd.grad(prop, list(field.parameters()), allow_unused=True)
        assert all(g is None for g in grads)
        loss = loss + prop
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in field.parameters())
    if kind == "proposal":
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in resampler.parameters())


def test_coarse_pass_without_autograd_gives_the_same_fine_pass_and_gradients():
    """``coarse_pass_grad=False``: the coarse pass records no graph, the fine pass and the
    gradients of a loss on it are those of the render with a recorded coarse pass."""
    from nerf_lab.raymarchers import EmissionAbsorptionRaymarcher
    from nerf_lab.renderer import render_rays

    field = small_field()
    n_rays = 10
    bundle = rays(n_rays)
    results = []
    for grad in (True, False):
        sampler = ProbabilisticRaysampler(8, True, False, add_input_samples=False,
                                          stratified_quantiles=True, histogram_padding=0.01,
                                          coarse_pass_grad=grad)  # fmt: skip
        field.zero_grad()
        torch.manual_seed(3)
        out = render_rays(bundle, field, EmissionAbsorptionRaymarcher(), sampler)
        assert out.passes[0].weights.requires_grad is grad and out.rgb.requires_grad
        (out.rgb - 0.5).pow(2).mean().backward()
        results.append((out.rgb.detach(), [p.grad.clone() for p in field.parameters()]))
    (rgb_a, grads_a), (rgb_b, grads_b) = results
    assert torch.equal(rgb_a, rgb_b)
    for a, b in zip(grads_a, grads_b, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-9)


def test_a_separate_coarse_field_renders_the_coarse_pass_and_learns_from_it_alone():
    """PyTorch3D projects/nerf's two networks: the coarse field makes the coarse pass (whose
    weights place the fine samples), the renderer's field the fine pass; a loss on the fine
    pass reaches only the fine field, one on the coarse pass only the coarse field."""
    from nerf_lab.raymarchers import EmissionAbsorptionRaymarcher
    from nerf_lab.renderer import Renderer

    fine_field, coarse_field = small_field(), small_field()
    sampler = ProbabilisticRaysampler(8, False, False, coarse_field=coarse_field)
    renderer = Renderer(fine_field, EmissionAbsorptionRaymarcher(), sampler)
    n_rays = 10
    bundle = rays(n_rays)
    out = renderer.render(bundle)
    raymarcher = EmissionAbsorptionRaymarcher()
    coarse = raymarcher.march(*coarse_field(ray_bundle=bundle), bundle)
    torch.testing.assert_close(out.passes[0].rgb, coarse.rgb)
    fine_bundle = sampler(bundle, coarse.weights.detach())
    torch.testing.assert_close(out.lengths, fine_bundle.lengths)
    torch.testing.assert_close(out.rgb, raymarcher.march(*fine_field(ray_bundle=fine_bundle),
                                                         fine_bundle).rgb)  # fmt: skip
    for loss, reached, untouched in (
        (out.rgb.sum(), fine_field, coarse_field),
        (out.passes[0].rgb.sum(), coarse_field, fine_field),
    ):
        grads = torch.autograd.grad(loss, [*reached.parameters(), *untouched.parameters()],
                                    allow_unused=True, retain_graph=True)  # fmt: skip
        n = len(list(reached.parameters()))
        assert all(g is not None and torch.isfinite(g).all() for g in grads[:n])
        assert all(g is None for g in grads[n:])
    # the renderer's modules hold both networks (checkpoints, devices)
    assert any(k.startswith("resampler.coarse_field.") for k in renderer.state_dict())
