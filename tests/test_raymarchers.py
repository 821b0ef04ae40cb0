import pytest
import torch

from nerf_lab import EmissionAbsorptionRaymarcher
from nerf_lab.raymarchers import emission_absorption


def _loop_reference(densities, features, surface_thickness=1, eps=1e-10):
    """An obvious per-ray, per-point loop of PyTorch3D's emission-absorption formula."""
    n_rays, n_pts = densities.shape
    out = torch.zeros(n_rays, features.shape[-1] + 1, dtype=torch.float64)
    for r in range(n_rays):
        for i in range(n_pts):
            t = 1.0
            for j in range(i - surface_thickness + 1):
                t *= 1.0 + eps - float(densities[r, j])
            out[r, :-1] += float(densities[r, i]) * t * features[r, i].double()
        prod = 1.0
        for i in range(n_pts):
            prod *= 1.0 - float(densities[r, i])
        out[r, -1] = 1.0 - prod
    return out.float()


@pytest.mark.parametrize("surface_thickness", [1, 3])
def test_vectorised_matches_loop(surface_thickness):
    d = torch.rand(7, 12)
    f = torch.rand(7, 12, 4)
    out = EmissionAbsorptionRaymarcher(surface_thickness)(d[..., None], f)
    torch.testing.assert_close(out, _loop_reference(d, f, surface_thickness), atol=1e-5, rtol=1e-5)


def test_step_density_surface_gives_known_opacity_and_depth():
    # An opaque step at point k: everything before it is empty, it is fully opaque.
    n_pts, k = 32, 11
    lengths = torch.linspace(0.5, 3.5, n_pts)
    d = torch.zeros(1, n_pts)
    d[:, k:] = 1.0
    colour = torch.tensor([0.2, 0.5, 0.9]).expand(1, n_pts, 3)
    feats = torch.cat([colour, lengths.view(1, n_pts, 1)], -1)
    out = EmissionAbsorptionRaymarcher()(d[..., None], feats)
    torch.testing.assert_close(out[0, :3], torch.tensor([0.2, 0.5, 0.9]), atol=1e-6, rtol=0)
    assert out[0, 3].item() == pytest.approx(float(lengths[k]), abs=1e-5)  # expected depth
    assert out[0, 4].item() == pytest.approx(1.0, abs=1e-6)  # opacity
    # A semi-transparent uniform medium: opacity 1 - (1 - a)^n
    a = 0.1
    out = EmissionAbsorptionRaymarcher()(torch.full((1, 10, 1), a), torch.ones(1, 10, 1))
    assert out[0, 1].item() == pytest.approx(1 - (1 - a) ** 10, abs=1e-6)
    assert out[0, 0].item() == pytest.approx(1 - (1 - a) ** 10, abs=1e-6)


def test_background_color_composited_behind():
    d = torch.zeros(2, 5, 1)
    d[1, 2] = 1.0
    f = torch.full((2, 5, 3), 0.25)
    out = EmissionAbsorptionRaymarcher(background_color=(1.0, 1.0, 1.0))(d, f)
    torch.testing.assert_close(out[0], torch.tensor([1.0, 1.0, 1.0, 0.0]))
    torch.testing.assert_close(out[1], torch.tensor([0.25, 0.25, 0.25, 1.0]))


def test_raymarcher_gradients_finite_and_correct():
    d = torch.rand(3, 6, dtype=torch.float64, requires_grad=True)
    f = torch.rand(3, 6, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: torch.cat(emission_absorption(a, b), -1), (d, f))


@pytest.mark.parametrize(
    "densities,features,match",
    [
        (
            torch.rand(4, 8, 2),
            torch.rand(4, 8, 3),
            r"rays_densities must have shape \(\.\.\., n_pts_per_ray, 1\); got \(4, 8, 2\)",
        ),
        (torch.rand(4, 8, 1), torch.rand(4, 7, 3), r"got \(4, 7, 3\)"),
        (torch.rand(4, 8, 1) + 1.0, torch.rand(4, 8, 3), r"range \[0, 1\]"),
        (-torch.rand(4, 8, 1) - 0.1, torch.rand(4, 8, 3), r"range \[0, 1\]"),
    ],
)
def test_bad_raymarcher_inputs(densities, features, match):
    with pytest.raises(ValueError, match=match):
        EmissionAbsorptionRaymarcher()(densities, features)


def test_bad_raymarcher_args():
    with pytest.raises(ValueError, match="surface_thickness must be a positive integer; got 0"):
        EmissionAbsorptionRaymarcher(0)
    with pytest.raises(ValueError, match="background_color has 4 values"):
        EmissionAbsorptionRaymarcher(background_color=(0, 0, 0, 0))(
            torch.rand(2, 3, 1), torch.rand(2, 3, 3)
        )


@pytest.mark.parametrize("background", [None, (0.2, 0.5, 1.0), (0.3,)])
def test_march_empty_equals_march_of_zero_densities(background):
    """The empty rays' result built directly equals marching zeros, for the
    emission-absorption raymarcher and (through the default) for a plain one."""
    from nerf_lab.raymarchers import Raymarcher, march_empty
    from nerf_lab.raysamplers import RayBundle

    torch.manual_seed(0)
    n, p, c = 7, 5, 4
    lengths = torch.rand(n, p).sort(dim=-1).values + 0.5
    lengths[:3] -= 1.2  # (the clipped expected depth of zero weights, not the first depth)
    bundle = RayBundle(torch.randn(n, 3), torch.randn(n, 3), lengths, torch.zeros(n, 2))
    rm = EmissionAbsorptionRaymarcher(background_color=background)
    expected = rm.march(torch.zeros(n, p, 1), torch.zeros(n, p, c), bundle)
    for got in (rm.march_empty(bundle, c), march_empty(rm, bundle, c),
                Raymarcher.march_empty(rm, bundle, c)):  # fmt: skip
        for name in ("rgb", "opacity", "depth", "weights", "lengths"):
            torch.testing.assert_close(getattr(got, name), getattr(expected, name),
                                       rtol=0, atol=0)  # fmt: skip

    class Plain:  # any object with march: marched on zeros
        def march(self, densities, features, ray_bundle):
            return rm.march(densities + 0.5, features + 1.0, ray_bundle)

    plain = march_empty(Plain(), bundle, c)
    torch.testing.assert_close(plain.opacity, 1 - 0.5**p * torch.ones(n, 1))
