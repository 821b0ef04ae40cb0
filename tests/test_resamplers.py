"""ProbabilisticRaysampler (PyTorch3D projects/nerf) and the intervals of point samples."""

from __future__ import annotations

import pytest
import torch

from nerf_lab.raysamplers import RayBundle
from nerf_lab.resamplers import (
    ProbabilisticRaysampler,
    lengths_to_edges,
    lengths_to_intervals,
    split_resampler_output,
)
from nerf_lab.sample_pdf import sample_pdf


def bundle(lengths: torch.Tensor) -> RayBundle:
    lead = lengths.shape[:-1]
    return RayBundle(
        origins=torch.randn(*lead, 3),
        directions=torch.randn(*lead, 3),
        lengths=lengths,
        xys=torch.randn(*lead, 2),
    )


def coarse_lengths(*lead: int, n: int = 16) -> torch.Tensor:
    return torch.linspace(1.0, 4.0, n).expand(*lead, n).contiguous()


@pytest.mark.parametrize("training", [True, False])
def test_all_weight_in_one_interval_puts_the_new_samples_in_it(training):
    n_in, n_rays = 16, 20
    z = coarse_lengths(2, n_rays, n=n_in)
    j = torch.randint(1, n_in - 1, (2, n_rays))  # the point holding all the weight
    weights = torch.zeros_like(z)
    weights.scatter_(-1, j[..., None], 1.0)
    sampler = ProbabilisticRaysampler(32, stratified=True, stratified_test=False,
                                      add_input_samples=False)  # fmt: skip
    sampler.train(training)
    out = sampler(bundle(z), weights).lengths
    mids = 0.5 * (z[..., 1:] + z[..., :-1])
    lo = torch.gather(mids, -1, (j - 1)[..., None])  # bin j - 1 of weights[..., 1:-1]
    hi = torch.gather(mids, -1, j[..., None])
    inside = (out >= lo) & (out <= hi)
    if training:  # random quantiles in (0, 1): all inside
        assert inside.all()
    else:  # evenly spaced quantiles 0..1: the ends go to the first and last midpoints
        assert inside[..., 1:-1].all()


def test_output_is_sorted_with_input_samples_and_shapes():
    z = coarse_lengths(2, 7, n=12)
    weights = torch.rand(2, 7, 12)
    b = bundle(z)
    sampler = ProbabilisticRaysampler(20, stratified=True, stratified_test=True)
    out = sampler(b, weights)
    assert out.lengths.shape == (2, 7, 32)
    assert (out.lengths[..., 1:] >= out.lengths[..., :-1]).all()
    # the input depths are all kept
    for d in z[0, 0]:
        assert (out.lengths[0, 0] == d).any()
    assert out.origins is b.origins and out.directions is b.directions and out.xys is b.xys
    grid = bundle(coarse_lengths(1, 4, 5, n=12))
    assert sampler(grid, torch.rand(1, 4, 5, 12)).lengths.shape == (1, 4, 5, 32)


def test_pytorch3d_numbers_bins_are_midpoints_and_weights_drop_the_ends():
    z = torch.sort(torch.rand(3, 5, 10) * 3 + 1, dim=-1).values
    weights = torch.rand(3, 5, 10)
    sampler = ProbabilisticRaysampler(8, stratified=False, stratified_test=False)
    out = sampler(bundle(z), weights).lengths
    mids = 0.5 * (z[..., 1:] + z[..., :-1])
    for r in range(3):  # PyTorch3D: bins (n_rays, n - 1), weights[..., 1:-1], det=True
        new = sample_pdf(mids[r], weights[r, :, 1:-1], 8, det=True)
        expected = torch.sort(torch.cat((z[r], new), dim=-1), dim=-1).values
        assert torch.equal(out[r], expected)


def test_uniform_weights_on_uniform_depths_give_evenly_spaced_samples():
    z = torch.arange(10.0).expand(4, 10)
    sampler = ProbabilisticRaysampler(9, False, False, add_input_samples=False).eval()
    out = sampler(bundle(z), torch.ones(4, 10)).lengths
    torch.testing.assert_close(out, torch.linspace(0.5, 8.5, 9).expand(4, 9), atol=1e-4, rtol=0)


def test_stratified_in_training_deterministic_in_evaluation():
    z, w = coarse_lengths(3, 6), torch.rand(3, 6, 16)
    sampler = ProbabilisticRaysampler(10, stratified=True, stratified_test=False)
    a, b = sampler(bundle(z), w).lengths, sampler(bundle(z), w).lengths
    assert not torch.equal(a, b)
    sampler.eval()
    a, b = sampler(bundle(z), w).lengths, sampler(bundle(z), w).lengths
    assert torch.equal(a, b)


def cdf_at(samples: torch.Tensor, bins: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """The normalised CDF of piecewise-constant densities at each sample (a plain loop)."""
    out = torch.empty_like(samples)
    for r in range(samples.shape[0]):
        total = float(weights[r].sum())
        for k, t in enumerate(samples[r].tolist()):
            acc = 0.0
            for i in range(weights.shape[-1]):
                lo, hi = float(bins[r, i]), float(bins[r, i + 1])
                if t >= hi:
                    acc += float(weights[r, i])
                elif t > lo:
                    acc += float(weights[r, i]) * (t - lo) / (hi - lo)
            out[r, k] = acc / total
    return out


@pytest.mark.parametrize("training", [True, False])
def test_stratified_quantiles_put_one_sample_in_each_stratum_of_the_cdf(training):
    torch.manual_seed(0)
    z = torch.sort(torch.rand(6, 12) * 3 + 1, dim=-1).values
    w = torch.rand(6, 12) + 0.05
    n = 8
    sampler = ProbabilisticRaysampler(n, True, False, add_input_samples=False,
                                      stratified_quantiles=True).train(training)  # fmt: skip
    out = sampler(bundle(z), w).lengths
    mids = 0.5 * (z[..., 1:] + z[..., :-1])
    u = cdf_at(out, mids, w[..., 1:-1])
    k = torch.arange(n, dtype=torch.float32)
    if training:  # one random quantile in each stratum [k/n, (k+1)/n)
        assert ((u >= k / n - 1e-5) & (u <= (k + 1) / n + 1e-5)).all()
    else:  # the stratum centres
        torch.testing.assert_close(u, ((k + 0.5) / n).expand(6, n), atol=2e-5, rtol=0)


def test_stratified_quantiles_on_a_uniform_pdf_are_the_stratum_centres():
    z = torch.arange(10.0).expand(4, 10)  # midpoints 0.5 .. 8.5: 8 bins of width 1
    sampler = ProbabilisticRaysampler(8, False, False, add_input_samples=False,
                                      stratified_quantiles=True).eval()  # fmt: skip
    out = sampler(bundle(z), torch.ones(4, 10)).lengths
    torch.testing.assert_close(out, torch.arange(8.0).add(1.0).expand(4, 8), atol=1e-4, rtol=0)


def test_histogram_padding_keeps_samples_in_bins_the_coarse_pass_found_empty():
    n_in, n = 16, 64
    z = coarse_lengths(3, n=n_in)
    weights = torch.zeros(3, n_in)
    weights[:, 8] = 1.0  # all weight in bin 7 of weights[..., 1:-1]
    mids = 0.5 * (z[..., 1:] + z[..., :-1])
    lo, hi = mids[:, 7:8], mids[:, 8:9]

    def outside(padding: float) -> torch.Tensor:
        sampler = ProbabilisticRaysampler(n, False, False, add_input_samples=False,
                                          stratified_quantiles=True,
                                          histogram_padding=padding).eval()  # fmt: skip
        out = sampler(bundle(z), weights).lengths
        return ((out < lo) | (out > hi)).sum(-1)

    assert (outside(0.0) == 0).all()  # a one-bin pdf: every sample in that bin
    # padding p on each of the 14 bins: a share 13 p / (1 + 14 p) of the mass lies outside
    p = 0.05
    expected = n * 13 * p / (1 + 14 * p)
    assert ((outside(p) - expected).abs() <= 1).all()


def test_no_gradient_through_the_new_depths():
    z = coarse_lengths(2, n=16)
    w = torch.rand(2, 16, requires_grad=True)
    out = ProbabilisticRaysampler(4, True, False)(bundle(z), w)
    assert not out.lengths.requires_grad


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n_pts_per_ray": 0}, "n_pts_per_ray must be a positive integer; got 0"),
        ({"stratified": "yes"}, "stratified must be true or false; got 'yes'"),
        ({"add_input_samples": 1}, "add_input_samples must be true or false; got 1"),
        ({"stratified_quantiles": "no"}, "stratified_quantiles must be true or false"),
        ({"histogram_padding": -0.1}, "histogram_padding"),
        ({"coarse_field": "nerf"}, "coarse_field must be a field"),
        (
            {"coarse_field": torch.nn.Linear(2, 2), "coarse_pass_grad": False},
            "learns only from a loss on the coarse pass",
        ),
    ],
)
def test_bad_arguments(kwargs, match):
    args = {"n_pts_per_ray": 4, "stratified": True, "stratified_test": False, **kwargs}
    with pytest.raises(ValueError, match=match):
        ProbabilisticRaysampler(**args)


def test_bad_inputs():
    sampler = ProbabilisticRaysampler(4, True, False)
    with pytest.raises(ValueError, match="ray_weights must have the shape"):
        sampler(bundle(coarse_lengths(2, n=16)), torch.rand(2, 15))
    with pytest.raises(ValueError, match=">= 3 input points"):
        sampler(bundle(coarse_lengths(2, n=2)), torch.rand(2, 2))


def test_lengths_to_edges_follows_the_fields_spacing():
    z = torch.tensor([[1.0, 1.5, 2.5, 3.0]])
    assert lengths_to_edges(z).tolist() == [[1.0, 1.5, 2.5, 3.0, 3.5]]
    starts, ends = lengths_to_intervals(z)
    assert starts.tolist() == [[1.0, 1.5, 2.5, 3.0]] and ends.tolist() == [[1.5, 2.5, 3.0, 3.5]]
    with pytest.raises(ValueError, match=">= 2 points"):
        lengths_to_edges(torch.ones(3, 1))


@pytest.mark.parametrize("option", ["hierarchical", "proposal", "occupancy"])
def test_raysampler_yaml_resampler_instantiates_and_fits_its_ray_generators(option):
    from hydra.utils import instantiate

    from tests.conftest import compose_cfg

    cfg = compose_cfg([f"raysampler={option}"]).raysampler
    assert set(cfg) >= {"train", "render", "resampler"}
    resampler = instantiate(cfg.resampler)
    n_in = cfg.n_pts_per_ray
    assert (cfg.min_depth, cfg.max_depth) == ("auto", "auto")  # the scene's near/far
    z = torch.linspace(1.0, 4.0, n_in).expand(3, 5, n_in).contiguous()
    weights = torch.rand(3, 5, n_in) if resampler.needs_field_weights else None
    result = resampler(input_ray_bundle=bundle(z), ray_weights=weights)
    out, aux = split_resampler_output(result)
    assert all(v.shape[:2] == (3, 5) for v in aux.values())  # per-ray tensors
    n_out = cfg.resampler.n_pts_per_ray + (n_in if cfg.resampler.get("add_input_samples") else 0)
    assert out.lengths.shape == (3, 5, n_out)


def test_split_resampler_output_tells_a_bundle_from_a_pair():
    b = bundle(coarse_lengths(2, n=4))
    assert split_resampler_output(b) == (b, {})
    aux = {"x": torch.ones(2, 1)}
    out, got = split_resampler_output((b, aux))
    assert out is b and got == aux
    with pytest.raises(TypeError, match="must return a RayBundle"):
        split_resampler_output((b.lengths, aux))


def test_a_coarse_fields_hooks_are_the_resamplers():
    from nerf_lab import hooks
    from nerf_lab.models import RadianceField

    class Coarse(RadianceField):
        def __init__(self) -> None:
            super().__init__()
            self.grid = torch.nn.Parameter(torch.ones(3))
            self.mlp = torch.nn.Linear(2, 2)
            self.steps: list[int] = []

        def param_groups(self):
            return [
                {"name": "grid", "params": [self.grid], "lr_scale": 10.0},
                {"name": "mlp", "params": list(self.mlp.parameters()), "lr_scale": 1.0},
            ]

        def loss_terms(self):
            return {"tv": self.grid.sum()}

        def on_train_step(self, step: int, n_iter: int) -> None:
            self.steps.append(step)

    coarse = Coarse()
    sampler = ProbabilisticRaysampler(4, True, False, coarse_field=coarse)
    assert sampler.coarse_pass_field() is coarse
    groups = hooks.param_groups(sampler, "resampler")
    assert [(g["name"], g["lr_scale"]) for g in groups] == [
        ("resampler/coarse_field/grid", 10.0),
        ("resampler/coarse_field/mlp", 1.0),
    ]
    assert list(hooks.loss_terms(sampler)) == ["coarse_tv"]
    hooks.on_train_step(sampler, 7, 10)
    assert coarse.steps == [7]
    plain = ProbabilisticRaysampler(4, True, False)
    assert plain.coarse_pass_field() is None and hooks.param_groups(plain) == []
    assert hooks.loss_terms(plain) == {}
