"""NeRFFullField, NGPField and KPlanesField: shapes, bounds, references, hooks, configs."""

from __future__ import annotations

import inspect
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import OmegaConf

from nerf_lab import hooks
from nerf_lab.models import KPlanesField, NeRFFullField, NGPField, RadianceField
from nerf_lab.models.hybrid import DensityColorDecoder, trunc_exp
from nerf_lab.raysamplers import RayBundle
from nerf_lab.renderer import chunked_volumetric_function

CONF = Path(__file__).resolve().parents[1] / "conf" / "model"

SMALL = {
    "nerf_full": lambda: NeRFFullField(
        n_harmonic_functions_xyz=4, n_harmonic_functions_dir=2, n_hidden_neurons_xyz=32,
        n_hidden_neurons_dir=16, n_layers_xyz=4, append_xyz=(2,),
    ),
    "ngp": lambda: NGPField(n_levels=4, log2_hashmap_size=10, base_resolution=4,
                            max_resolution=32, hash_init_scale=0.1),
    "kplanes": lambda: KPlanesField(resolution=8, multiscale=(1, 2), n_features=4),
}  # fmt: skip


def random_bundle(lead=(2, 3), n_pts=12, dtype=torch.float32, origin_scale=0.3):
    origins = torch.randn(*lead, 3, dtype=dtype) * origin_scale
    directions = torch.randn(*lead, 3, dtype=dtype)
    lengths = torch.sort(torch.rand(*lead, n_pts, dtype=dtype) * 2.0 + 0.1, dim=-1).values
    return RayBundle(origins, directions, lengths, torch.zeros(*lead, 2, dtype=dtype))


# --------------------------------------------------------------------------- all fields
@pytest.mark.parametrize("name", list(SMALL))
@pytest.mark.parametrize("lead", [(5,), (2, 3), (1, 2, 2)])
def test_shapes_and_bounds(name, lead):
    model = SMALL[name]()
    assert isinstance(model, RadianceField)
    densities, colors = model(random_bundle(lead))
    assert densities.shape == (*lead, 12, 1) and colors.shape == (*lead, 12, 3)
    for t in (densities.detach(), colors.detach()):
        assert bool(torch.isfinite(t).all()) and float(t.min()) >= 0 and float(t.max()) <= 1


@pytest.mark.parametrize("name", list(SMALL))
def test_gradients_are_finite_and_reach_every_parameter(name):
    model = SMALL[name]()
    densities, colors = model(random_bundle((64,), n_pts=16))
    (densities.sum() + colors.sum()).backward()
    for pname, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and bool(torch.isfinite(p.grad).all()), pname
            assert float(p.grad.abs().sum()) > 0, pname


@pytest.mark.parametrize("name", list(SMALL))
def test_chunked_evaluation_equals_one_call(name):
    model = SMALL[name]().eval()
    bundle = random_bundle((4, 5))
    with torch.no_grad():
        d0, c0 = model(bundle)
        d1, c1 = chunked_volumetric_function(model, bundle, 3)
    torch.testing.assert_close(d0, d1)
    torch.testing.assert_close(c0, c1)


@pytest.mark.parametrize("name", list(SMALL))
def test_param_groups_cover_every_parameter_once(name):
    model = SMALL[name]()
    groups = hooks.param_groups(model)
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids))
    assert set(ids) == {id(p) for p in model.parameters() if p.requires_grad}
    assert all(g["lr_scale"] > 0 for g in groups)
    torch.optim.Adam([{"params": g["params"], "lr": 1e-3 * g["lr_scale"]} for g in groups])


@pytest.mark.parametrize("name", ["nerf_full", "ngp", "kplanes"])
def test_yaml_builds_the_field_with_its_defaults(name):
    cfg = OmegaConf.load(CONF / f"{name}.yaml")
    assert "defaults" not in cfg
    model = instantiate(cfg)
    assert isinstance(model, RadianceField)
    # YAML and constructor agree: the same keys, the same defaults.
    params = inspect.signature(type(model)).parameters
    values = OmegaConf.to_container(cfg)
    values.pop("_target_")
    assert set(values) == set(params)
    for key, value in values.items():
        default = params[key].default
        assert (list(default) if isinstance(default, tuple) else default) == value, key
    text = (CONF / f"{name}.yaml").read_text().splitlines()
    keys = [line for line in text if line and not line.startswith((" ", "#", "_target_"))]
    assert keys and all("#" in line for line in keys), keys


# --------------------------------------------------------------------------- hybrid fields
@pytest.mark.parametrize("name", ["ngp", "kplanes"])
def test_points_outside_the_box_are_empty(name):
    model = SMALL[name]()
    bundle = random_bundle((50,), n_pts=16, origin_scale=1.0)
    points = (
        bundle.origins[..., None, :] + bundle.lengths[..., None] * bundle.directions[..., None, :]
    )
    outside = (points.abs() > 1.0).any(-1)
    assert bool(outside.any()) and bool((~outside).any())
    densities, colors = model(bundle)
    assert bool((densities[..., 0][outside] == 0).all())
    assert bool((densities[..., 0][~outside] > 0).all())
    assert bool((colors[outside] == 0).all())


@pytest.mark.parametrize("name", ["ngp", "kplanes"])
def test_opacity_is_one_minus_exp_of_density_times_world_spacing(name):
    model = SMALL[name]().double()
    bundle = random_bundle((6,), n_pts=10, dtype=torch.float64, origin_scale=0.1)
    # Directions of length 0.8 (not 1: the spacing must include it), inside the box.
    directions = 0.8 * F.normalize(bundle.directions, dim=-1)
    bundle = bundle._replace(lengths=bundle.lengths * 0.3, directions=directions)
    points = (
        bundle.origins[..., None, :] + bundle.lengths[..., None] * bundle.directions[..., None, :]
    )
    assert bool((points.abs() < 1).all())
    sigma = model.densities(points.reshape(-1, 3)).reshape(6, 10)
    deltas = bundle.lengths.diff(dim=-1)
    deltas = torch.cat((deltas, deltas[:, -1:]), -1) * bundle.directions.norm(dim=-1, keepdim=True)
    densities, _ = model(bundle)
    torch.testing.assert_close(densities[..., 0], 1 - torch.exp(-sigma * deltas))


def test_decoder_matches_a_plain_concatenation_mlp():
    dec = DensityColorDecoder(7, direction_encoding="sh").double()
    feats = torch.randn(20, 7, dtype=torch.float64)
    dirs = torch.randn(20, 3, dtype=torch.float64)
    sigma, geo = dec.density(feats)
    lin1, lin2 = dec.density_mlp[0], dec.density_mlp[2]
    raw = F.linear(F.relu(F.linear(feats, lin1.weight, lin1.bias)), lin2.weight, lin2.bias)
    torch.testing.assert_close(sigma, torch.exp(raw[:, 0] - 1.0))
    torch.testing.assert_close(geo, raw[:, 1:])
    rgb = dec.color(geo, dec.per_ray(dirs))
    sh = dec.dir_encoder(dirs)
    first = dec.color_first
    h = F.relu(F.linear(torch.cat((geo, sh), -1), first.weight, first.bias))
    m = dec.color_mlp[1]
    h = F.relu(F.linear(h, m[0].weight, m[0].bias))
    torch.testing.assert_close(rgb, torch.sigmoid(F.linear(h, m[2].weight, m[2].bias)))


def test_trunc_exp_value_and_clamped_gradient():
    x = torch.tensor([-2.0, 0.0, 3.0, 20.0], dtype=torch.float64, requires_grad=True)
    y = trunc_exp(x)
    torch.testing.assert_close(y, x.detach().exp())
    y.sum().backward()
    torch.testing.assert_close(x.grad, torch.exp(x.detach().clamp(max=15.0)))


def test_ngp_param_groups_and_l2_loss_term():
    model = NGPField(n_levels=2, log2_hashmap_size=8, base_resolution=4, max_resolution=8,
                     table_lr_scale=20.0, mlp_l2_weight=1e-3)  # fmt: skip
    groups = {g["name"]: g for g in model.param_groups()}
    assert groups["hash_table"]["params"] == [model.encoding.table]
    assert groups["hash_table"]["lr_scale"] == 20.0 and groups["mlp"]["lr_scale"] == 1.0
    terms = model.loss_terms()
    expected = sum(p.square().sum() for n, p in model.decoder.named_parameters()
                   if n.endswith("weight") and p.requires_grad)  # fmt: skip
    torch.testing.assert_close(terms["mlp_l2"], 1e-3 * expected)
    assert NGPField(n_levels=2, log2_hashmap_size=8, base_resolution=4,
                    max_resolution=8).loss_terms() == {}  # fmt: skip


def test_kplanes_param_groups_and_loss_terms():
    model = KPlanesField(resolution=6, multiscale=(1,), n_features=2, plane_lr_scale=5.0,
                         tv_weight=0.5, l1_weight=0.25)  # fmt: skip
    groups = {g["name"]: g for g in model.param_groups()}
    assert groups["planes"]["params"] == [model.planes] and groups["planes"]["lr_scale"] == 5.0
    terms = model.loss_terms()
    grids = model.plane_grids()
    assert len(grids) == 3 and grids[0].shape == (1, 2, 6, 6)
    tv = (
        sum(
            0.5
            * (
                (g[..., 1:] - g[..., :-1]).square().mean()
                + (g[..., 1:, :] - g[..., :-1, :]).square().mean()
            )
            for g in grids
        )
        / 3
    )
    l1 = sum(g.abs().mean() for g in grids) / 3  # fmt: skip
    torch.testing.assert_close(terms["plane_tv"], 0.5 * tv)
    torch.testing.assert_close(terms["plane_l1"], 0.25 * l1)
    terms["plane_tv"].backward()
    assert float(model.planes.grad.abs().sum()) > 0
    assert KPlanesField(resolution=6, multiscale=(1,), n_features=2).loss_terms() == {}


@pytest.mark.parametrize(
    ("cls", "kwargs", "word"),
    [
        (NGPField, {"aabb": [1, 1, 1, 0, 0, 0]}, "aabb"),
        (NGPField, {"aabb": [0, 0, 1]}, "aabb"),
        (NGPField, {"table_lr_scale": 0.0}, "table_lr_scale"),
        (NGPField, {"mlp_l2_weight": -1.0}, "mlp_l2_weight"),
        (NGPField, {"direction_encoding": "fourier"}, "direction_encoding"),
        (NGPField, {"density_activation": "sigmoid"}, "density_activation"),
        (NGPField, {"log2_hashmap_size": 30}, "log2_hashmap_size"),
        (NGPField, {"n_color_layers": 0}, "n_color_layers"),
        (KPlanesField, {"resolution": 1}, "resolution"),
        (KPlanesField, {"multiscale": [1, 0]}, "multiscale"),
        (KPlanesField, {"n_features": 0}, "n_features"),
        (KPlanesField, {"init_low": 1.0, "init_high": 0.5}, "init_low"),
        (KPlanesField, {"tv_weight": -0.1}, "tv_weight"),
        (KPlanesField, {"concat_features": "yes"}, "concat_features"),
        (NeRFFullField, {"append_xyz": [8]}, "append_xyz"),
        (NeRFFullField, {"n_layers_xyz": 0}, "n_layers_xyz"),
        (NeRFFullField, {"density_noise_std": -1.0}, "density_noise_std"),
        (NeRFFullField, {"last_spacing": "inf"}, "last_spacing"),
    ],
)
def test_bad_arguments_raise_naming_the_key(cls, kwargs, word):
    with pytest.raises(ValueError, match=word):
        cls(**kwargs)


def reversed_rays(bundle: RayBundle) -> RayBundle:
    """The same sample points, visited in reverse order along the opposite direction."""
    span = bundle.lengths[..., :1] + bundle.lengths[..., -1:]
    lengths = span - bundle.lengths.flip(-1)
    return RayBundle(bundle.origins + span * bundle.directions, -bundle.directions, lengths,
                     bundle.xys)  # fmt: skip


@pytest.mark.parametrize(("encoding", "view_dependent"),
                         [("sh", True), ("harmonic", True), ("none", False)])  # fmt: skip
def test_hybrid_direction_encodings(encoding, view_dependent):
    model = NGPField(n_levels=2, log2_hashmap_size=8, base_resolution=4, max_resolution=8,
                     direction_encoding=encoding, hash_init_scale=0.1).double()  # fmt: skip
    bundle = random_bundle((8,), dtype=torch.float64, origin_scale=0.1)
    bundle = bundle._replace(lengths=bundle.lengths * 0.3)  # inside the box
    c1 = model(bundle)[1]
    c2 = model(reversed_rays(bundle))[1].flip(-2)
    assert c1.shape == (8, 12, 3)
    if view_dependent:
        assert float((c1 - c2).detach().abs().max()) > 1e-6
    else:
        torch.testing.assert_close(c1, c2)


# --------------------------------------------------------------------------- NeRFFullField
def reference_nerf(model: NeRFFullField, bundle: RayBundle, noise=None, last="far") -> tuple:
    """PyTorch3D projects/nerf's forward, written out with plain tensor ops."""
    pts = (
        bundle.origins[..., None, :]
        + bundle.lengths[..., :, None] * bundle.directions[..., None, :]
    )

    def embed(x, n):
        sins, coss = [], []
        for i in range(3):
            for k in range(n):
                sins.append(torch.sin(x[..., i] * 2.0**k))
                coss.append(torch.cos(x[..., i] * 2.0**k))
        return torch.stack(sins + coss + [x[..., 0], x[..., 1], x[..., 2]], dim=-1)

    n_xyz = model.harmonic_embedding_xyz.n_harmonic_functions
    n_dir = model.harmonic_embedding_dir.n_harmonic_functions
    e = embed(pts, n_xyz)
    h = e
    for li, layer in enumerate(model.mlp_xyz.mlp):
        if li in model.mlp_xyz._input_skips:
            h = torch.cat((h, e), dim=-1)
        h = torch.relu(h @ layer[0].weight.T + layer[0].bias)
    raw = h @ model.density_layer.weight.T + model.density_layer.bias
    if noise is not None:
        raw = raw + noise
    lengths = bundle.lengths
    steps = lengths[..., 1:] - lengths[..., :-1]
    final = torch.full_like(lengths[..., :1], 1e10) if last == "far" else steps[..., -1:]
    deltas = torch.cat((steps, final), -1)
    unit = bundle.directions / bundle.directions.norm(dim=-1, keepdim=True)
    deltas = deltas * bundle.directions.norm(dim=-1, keepdim=True)  # unit-direction lengths
    densities = 1 - torch.exp(-deltas[..., None] * torch.relu(raw))
    inter = h @ model.intermediate_linear.weight.T + model.intermediate_linear.bias
    d = embed(unit, n_dir)[..., None, :].expand(*inter.shape[:-1], -1)
    first = model.color_layer[0]
    c = torch.relu(torch.cat((inter, d), -1) @ first.weight.T + first.bias)
    last = model.color_layer[2]
    return densities, torch.sigmoid(c @ last.weight.T + last.bias)


def test_nerf_full_matches_an_independent_reference():
    model = NeRFFullField(n_harmonic_functions_xyz=5, n_harmonic_functions_dir=3,
                          n_hidden_neurons_xyz=24, n_hidden_neurons_dir=12, n_layers_xyz=5,
                          append_xyz=(2, 4)).double()  # fmt: skip
    bundle = random_bundle((3, 4), n_pts=9, dtype=torch.float64)
    d, c = model(bundle)
    rd, rc = reference_nerf(model, bundle)
    torch.testing.assert_close(d, rd)
    torch.testing.assert_close(c, rc)


def test_nerf_full_default_architecture():
    model = NeRFFullField()
    layers = [m[0] for m in model.mlp_xyz.mlp]
    assert len(layers) == 8
    assert layers[0].in_features == 63 and layers[5].in_features == 256 + 63
    assert all(layer.out_features == 256 for layer in layers)
    assert model.color_layer[0].weight.shape == (128, 256 + 27)
    assert float(model.density_layer.bias.detach().abs().sum()) == 0.0
    # Xavier-uniform bound: sqrt(6 / (fan_in + fan_out)).
    assert float(layers[1].weight.detach().abs().max()) <= math.sqrt(6 / 512)


def test_nerf_full_density_noise_in_training_only():
    model = NeRFFullField(n_harmonic_functions_xyz=3, n_hidden_neurons_xyz=16,
                          n_hidden_neurons_dir=8, n_layers_xyz=2, append_xyz=(1,),
                          density_noise_std=1.0).double()  # fmt: skip
    bundle = random_bundle((5,), n_pts=6, dtype=torch.float64)
    model.eval()
    d_eval, c_eval = model(bundle)
    torch.testing.assert_close(d_eval, reference_nerf(model, bundle)[0])
    model.train()
    torch.manual_seed(3)
    d_train, c_train = model(bundle)
    torch.manual_seed(3)
    noise = torch.randn(5, 6, 1, dtype=torch.float64)
    torch.testing.assert_close(d_train, reference_nerf(model, bundle, noise)[0])
    torch.testing.assert_close(c_train, c_eval)  # colours do not see the noise
    # The forward keyword overrides (PyTorch3D's API).
    torch.testing.assert_close(model(bundle, density_noise_std=0.0)[0], d_eval)


def test_nerf_full_last_spacing_repeat():
    model = NeRFFullField(n_harmonic_functions_xyz=3, n_hidden_neurons_xyz=16,
                          n_hidden_neurons_dir=8, n_layers_xyz=2, append_xyz=(1,),
                          last_spacing="repeat").double()  # fmt: skip
    bundle = random_bundle((4,), n_pts=5, dtype=torch.float64)
    torch.testing.assert_close(model(bundle)[0], reference_nerf(model, bundle, last="repeat")[0])
    model.last_spacing = "far"
    torch.testing.assert_close(model(bundle)[0], reference_nerf(model, bundle, last="far")[0])


@pytest.mark.parametrize("name", ["ngp", "kplanes"])
def test_hybrid_fields_under_bf16_autocast(name):
    model = SMALL[name]()
    bundle = random_bundle((16,), origin_scale=0.1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        densities, colors = model(bundle)
        sigma = model.densities(bundle.origins)
    assert sigma.dtype == torch.float32  # the density activation runs in fp32
    assert bool(torch.isfinite(densities).all()) and bool(torch.isfinite(colors).all())
    ref_d, ref_c = model(bundle)
    assert float((densities.float() - ref_d).detach().abs().max()) < 0.05
    assert float((colors.float() - ref_c).detach().abs().max()) < 0.05


@pytest.mark.parametrize("name", ["ngp", "kplanes"])
def test_hybrid_render_color_threshold_skips_only_invisible_points(name):
    """Without autograd, colours are decoded only where the compositing weight exceeds
    ``render_color_threshold`` (weights by a plain loop here); densities stay exact, the
    composited colour moves by at most ``n_pts * threshold``; with autograd every point
    is decoded."""
    torch.manual_seed(0)
    exact = SMALL[name]()
    exact.render_color_threshold = 0.0
    with torch.no_grad():  # nearly transparent to nearly opaque points
        exact.decoder.density_mlp[-1].bias[0] += 4.0
    n_pts = 16
    bundle = random_bundle((40,), n_pts=n_pts)
    with torch.no_grad():
        d_ref, c_ref = exact(bundle)
    alphas = d_ref[..., 0]
    weights = torch.zeros_like(alphas)
    for r in range(alphas.shape[0]):
        light = 1.0
        for i in range(n_pts):
            weights[r, i] = alphas[r, i] * light
            light *= 1.0 - float(alphas[r, i])
    # Half the points with a weight show, half do not (points outside the box weigh 0): a
    # threshold halfway between two neighbouring weights, so that rounding cannot put a
    # point on the other side.
    ranked = weights[weights > 0].sort().values
    k = ranked.numel() // 2
    assert k >= 50 and float(ranked[k] - ranked[k - 1]) > 1e-7
    t = float(0.5 * (ranked[k - 1] + ranked[k]))
    assert t > 0
    fast = SMALL[name]()
    fast.load_state_dict(exact.state_dict())
    fast.render_color_threshold = t
    with torch.no_grad():
        d, c = fast(bundle)
    torch.testing.assert_close(d, d_ref, rtol=0, atol=0)
    visible = weights > t
    assert 0 < visible.sum() < (weights > 0).sum()  # both decoded and skipped points
    torch.testing.assert_close(c[visible], c_ref[visible])
    assert (c[~visible] == 0).all()
    rgb, rgb_ref = (weights[..., None] * c).sum(-2), (weights[..., None] * c_ref).sum(-2)
    assert float((rgb - rgb_ref).abs().max()) <= n_pts * t
    d_g, c_g = fast(bundle)
    torch.testing.assert_close(c_g.detach(), c_ref)
    with pytest.raises(ValueError, match="render_color_threshold"):
        type(exact)(render_color_threshold=1.5)
