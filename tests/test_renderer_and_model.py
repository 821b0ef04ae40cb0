import pytest
import torch

from nerf_lab import (
    EmissionAbsorptionRaymarcher,
    FoVPerspectiveCameras,
    HarmonicEmbedding,
    ImplicitRenderer,
    MonteCarloRaysampler,
    NDCMultinomialRaysampler,
    NeuralRadianceField,
    RayBundle,
    look_at_view_transform,
    ray_bundle_to_ray_points,
)


def _cams(n=2):
    R, T = look_at_view_transform(2.7, 0.0, torch.linspace(0, 200, n))
    return FoVPerspectiveCameras(R=R, T=T)


class TutorialHarmonicEmbedding(torch.nn.Module):
    """Verbatim from the tutorial."""

    def __init__(self, n_harmonic_functions=60, omega0=0.1):
        super().__init__()
        self.register_buffer("frequencies", omega0 * (2.0 ** torch.arange(n_harmonic_functions)))

    def forward(self, x):
        embed = (x[..., None] * self.frequencies).view(*x.shape[:-1], -1)
        return torch.cat((embed.sin(), embed.cos()), dim=-1)


class TutorialNeRF(torch.nn.Module):
    """The tutorial's NeuralRadianceField, verbatim (plain concatenation in the colour head)."""

    def __init__(self, n_harmonic_functions=60, n_hidden_neurons=256):
        super().__init__()
        self.harmonic_embedding = TutorialHarmonicEmbedding(n_harmonic_functions)
        embedding_dim = n_harmonic_functions * 2 * 3
        self.mlp = torch.nn.Sequential(
            torch.nn.Linear(embedding_dim, n_hidden_neurons),
            torch.nn.Softplus(beta=10.0),
            torch.nn.Linear(n_hidden_neurons, n_hidden_neurons),
            torch.nn.Softplus(beta=10.0),
        )
        self.color_layer = torch.nn.Sequential(
            torch.nn.Linear(n_hidden_neurons + embedding_dim, n_hidden_neurons),
            torch.nn.Softplus(beta=10.0),
            torch.nn.Linear(n_hidden_neurons, 3),
            torch.nn.Sigmoid(),
        )
        self.density_layer = torch.nn.Sequential(
            torch.nn.Linear(n_hidden_neurons, 1), torch.nn.Softplus(beta=10.0)
        )
        self.density_layer[0].bias.data[0] = -1.5

    def forward(self, ray_bundle, **kwargs):
        pts = ray_bundle_to_ray_points(ray_bundle)
        features = self.mlp(self.harmonic_embedding(pts))
        densities = 1 - (-self.density_layer(features)).exp()
        spatial_size = features.shape[:-1]
        dirs = torch.nn.functional.normalize(ray_bundle.directions, dim=-1)
        emb = self.harmonic_embedding(dirs)
        emb = emb[..., None, :].expand(*spatial_size, emb.shape[-1])
        colors = self.color_layer(torch.cat((features, emb), dim=-1))
        return densities, colors


def test_harmonic_embedding_matches_tutorial_and_formula():
    x = torch.randn(4, 5, 3)
    ours = HarmonicEmbedding(6, 0.1)(x)
    torch.testing.assert_close(ours, TutorialHarmonicEmbedding(6, 0.1)(x))
    assert ours.shape == (4, 5, 36)
    # ordering: sin block then cos block; coordinate-major, frequency-minor
    assert ours[0, 0, 1 * 6 + 2].item() == pytest.approx(
        torch.sin(x[0, 0, 1] * 0.1 * 4).item(), abs=1e-6
    )
    assert ours[0, 0, 18 + 2 * 6 + 5].item() == pytest.approx(
        torch.cos(x[0, 0, 2] * 0.1 * 32).item(), abs=1e-5
    )
    assert HarmonicEmbedding(3, append_input=True)(x).shape == (4, 5, 21)
    with pytest.raises(ValueError, match="n_harmonic_functions must be a positive integer; got 0"):
        HarmonicEmbedding(0)


@pytest.mark.parametrize("n_harm,n_hidden", [(60, 256), (8, 32)])
def test_nerf_same_init_and_function_as_tutorial(n_harm, n_hidden):
    torch.manual_seed(42)
    ours = NeuralRadianceField(n_harm, n_hidden)
    torch.manual_seed(42)
    ref = TutorialNeRF(n_harm, n_hidden)
    ref_state = ref.state_dict()
    for k, v in ours.state_dict().items():
        torch.testing.assert_close(v, ref_state[k], rtol=0, atol=0)
    rb = MonteCarloRaysampler(-1, 1, -1, 1, 50, 16, 0.1, 3.0)(_cams())
    d, c = ours(rb)
    d_ref, c_ref = ref(rb)
    assert d.shape == (2, 50, 16, 1) and c.shape == (2, 50, 16, 3)
    torch.testing.assert_close(d, d_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(c, c_ref, atol=1e-5, rtol=1e-5)
    # and the same gradients
    (d.sum() + c.sum()).backward()
    (d_ref.sum() + c_ref.sum()).backward()
    for (name, p), p_ref in zip(ours.named_parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p.grad, p_ref.grad, atol=1e-4, rtol=1e-4, msg=name)


def test_batched_forward_equals_forward():
    model = NeuralRadianceField(4, 16)
    rb = NDCMultinomialRaysampler(
        image_height=6, image_width=5, n_pts_per_ray=7, min_depth=0.1, max_depth=3
    )(_cams())
    d, c = model(rb)
    d2, c2 = model.batched_forward(rb, n_batches=4)
    torch.testing.assert_close(d, d2)
    torch.testing.assert_close(c, c2)


def test_density_spacing_option():
    model = NeuralRadianceField(4, 16, density_scaling="spacing")
    rb = MonteCarloRaysampler(-1, 1, -1, 1, 10, 8, 0.5, 2.0)(_cams())
    d, _ = model(rb)
    assert d.shape == (2, 10, 8, 1) and (d >= 0).all() and (d <= 1).all()
    # opacity == 1 - exp(-sigma * delta) with delta the world-space spacing
    feats = model.mlp(model.harmonic_embedding(ray_bundle_to_ray_points(rb)))
    sigma = model.density_layer(feats)[..., 0]
    delta = (rb.lengths[..., 1] - rb.lengths[..., 0])[..., None] * rb.directions.norm(
        dim=-1, keepdim=True
    )
    torch.testing.assert_close(d[..., 0], 1 - torch.exp(-sigma * delta), atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError, match="density_scaling must be one of"):
        NeuralRadianceField(4, 16, density_scaling="bogus")


def test_chunked_render_equals_unchunked_and_bounds_rays():
    model = NeuralRadianceField(6, 32)
    sampler = NDCMultinomialRaysampler(
        image_height=9, image_width=7, n_pts_per_ray=12, min_depth=0.5, max_depth=4.0
    )
    marcher = EmissionAbsorptionRaymarcher()
    seen = []

    def counting(ray_bundle, **kw):
        seen.append(ray_bundle.lengths[..., 0].numel())
        return model(ray_bundle)

    full, rb = ImplicitRenderer(sampler, marcher)(cameras=_cams(), volumetric_function=model)
    chunked, rb2 = ImplicitRenderer(sampler, marcher, chunk_size=20)(
        cameras=_cams(), volumetric_function=counting
    )
    assert full.shape == (2, 9, 7, 4)
    torch.testing.assert_close(full, chunked, atol=1e-6, rtol=1e-5)
    assert max(seen) <= 20 and sum(seen) == 2 * 9 * 7
    # per-call override
    seen.clear()
    ImplicitRenderer(sampler, marcher)(cameras=_cams(), volumetric_function=counting, chunk_size=50)
    assert max(seen) <= 50


def test_gradients_flow_through_whole_renderer():
    torch.manual_seed(1)
    model = NeuralRadianceField(8, 32)
    renderer = ImplicitRenderer(
        MonteCarloRaysampler(-1, 1, -1, 1, 64, 16, 0.1, 3.0), EmissionAbsorptionRaymarcher()
    )
    images, rb = renderer(cameras=_cams(), volumetric_function=model)
    assert images.shape == (2, 64, 4)
    images.pow(2).mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert sum(p.grad.abs().sum() for p in model.parameters()) > 0


def test_finite_difference_gradient_of_render():
    torch.manual_seed(2)
    model = NeuralRadianceField(2, 8).double()
    renderer = ImplicitRenderer(
        NDCMultinomialRaysampler(
            image_height=3, image_width=3, n_pts_per_ray=6, min_depth=0.5, max_depth=4.0
        ),
        EmissionAbsorptionRaymarcher(),
    )
    cams = _cams(1)

    def volfn(ray_bundle, **kw):
        rb = RayBundle(*(t.double() for t in ray_bundle))
        return model(rb)

    bias = model.density_layer[0].bias
    bias.data.fill_(2.0)  # make the density active
    out, _ = renderer(cameras=cams, volumetric_function=volfn)
    loss = out.sum()
    loss.backward()
    g = bias.grad.item()
    h = 1e-6
    with torch.no_grad():
        bias.data += h
        up = renderer(cameras=cams, volumetric_function=volfn)[0].sum().item()
        bias.data -= 2 * h
        down = renderer(cameras=cams, volumetric_function=volfn)[0].sum().item()
    assert g == pytest.approx((up - down) / (2 * h), rel=1e-4, abs=1e-7)


def test_bad_renderer_inputs():
    sampler = NDCMultinomialRaysampler(
        image_height=2, image_width=2, n_pts_per_ray=2, min_depth=1, max_depth=2
    )
    with pytest.raises(ValueError, match="chunk_size must be a positive integer or None; got 0"):
        ImplicitRenderer(sampler, EmissionAbsorptionRaymarcher(), chunk_size=0)
    with pytest.raises(ValueError, match="Callable"):
        ImplicitRenderer(sampler, EmissionAbsorptionRaymarcher())(
            cameras=_cams(), volumetric_function=3
        )


def test_harmonic_embedding_with_and_without_grad_agree():
    x = torch.randn(5, 7, 3)
    no_grad = HarmonicEmbedding(6)(x)
    xg = x.clone().requires_grad_()
    with_grad = HarmonicEmbedding(6)(xg)
    torch.testing.assert_close(no_grad, with_grad.detach(), rtol=0, atol=0)
    with_grad.sum().backward()
    assert torch.isfinite(xg.grad).all()
    assert HarmonicEmbedding(4)(torch.zeros(0, 3)).shape == (0, 24)


def test_bf16_autocast_keeps_density_gradients():
    # Under bf16 the tutorial's initial densities (~3e-8) would round to 0 and freeze the
    # density head; the model keeps that head in fp32.
    torch.manual_seed(0)
    model = NeuralRadianceField(6, 32)
    rb = MonteCarloRaysampler(-1, 1, -1, 1, 64, 16, 1.0, 4.0)(_cams())
    grads = []
    for enabled in (False, True):
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled):
            d, c = model(rb)
        EmissionAbsorptionRaymarcher()(d.float(), c.float()).square().mean().backward()
        grads.append(model.density_layer[0].bias.grad.clone())
    assert grads[1].abs().item() > 0
    torch.testing.assert_close(grads[1], grads[0], rtol=0.05, atol=0)


def _opaque_nerf(**kwargs):
    """A small NeRF whose densities vary from nearly transparent to nearly opaque."""
    torch.manual_seed(3)
    model = NeuralRadianceField(4, 16, **kwargs)
    with torch.no_grad():
        model.density_layer[0].bias.fill_(0.05)
        model.density_layer[0].weight.mul_(20.0)
    return model


def test_render_color_threshold_skips_only_invisible_points():
    t = 1e-3
    exact, fast = _opaque_nerf(), _opaque_nerf(render_color_threshold=t)
    rb = NDCMultinomialRaysampler(
        image_height=8, image_width=6, n_pts_per_ray=24, min_depth=1.0, max_depth=4.0
    )(_cams())
    with torch.no_grad():
        d_ref, c_ref = exact(rb)
        d, c = fast(rb)
    torch.testing.assert_close(d, d_ref, rtol=0, atol=0)
    # Compositing weights by an obvious loop over the points of each ray.
    alphas = d_ref[..., 0].reshape(-1, 24)
    weights = torch.zeros_like(alphas)
    for r in range(alphas.shape[0]):
        light = 1.0
        for i in range(24):
            weights[r, i] = alphas[r, i] * light
            light *= 1.0 - float(alphas[r, i])
    visible = (weights > t).reshape(c.shape[:-1])
    assert 0 < visible.sum() < visible.numel()  # the test exercises both cases
    torch.testing.assert_close(c[visible], c_ref[visible], atol=1e-6, rtol=1e-5)
    assert (c[~visible] == 0).all()
    marcher = EmissionAbsorptionRaymarcher()
    img = marcher(rays_densities=d, rays_features=c, ray_bundle=rb)
    img_ref = marcher(rays_densities=d_ref, rays_features=c_ref, ray_bundle=rb)
    assert (img - img_ref).abs().max() <= 24 * t
    # With autograd on (training), every point is decoded: the exact function.
    d_g, c_g = fast(rb)
    torch.testing.assert_close(c_g, c_ref)
    with pytest.raises(ValueError, match="render_color_threshold"):
        NeuralRadianceField(4, 16, render_color_threshold=1.5)
