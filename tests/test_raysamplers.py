import pytest
import torch

from nerf_lab import (
    FoVPerspectiveCameras,
    MonteCarloRaysampler,
    NDCMultinomialRaysampler,
    look_at_view_transform,
    ray_bundle_to_ray_points,
)
from nerf_lab.raysamplers import jiggle_within_stratas, ndc_pixel_grid


def _cams(n=3):
    R, T = look_at_view_transform(2.7, torch.linspace(-20, 30, n), torch.linspace(0, 250, n))
    return FoVPerspectiveCameras(R=R, T=T)


@pytest.mark.parametrize("h,w", [(6, 6), (4, 7), (9, 5)])
def test_grid_shapes_pixel_centres_and_reprojection(h, w):
    cams = _cams()
    sampler = NDCMultinomialRaysampler(
        image_height=h, image_width=w, n_pts_per_ray=8, min_depth=0.5, max_depth=4.0
    )
    rb = sampler(cams)
    assert rb.origins.shape == (3, h, w, 3) and rb.directions.shape == (3, h, w, 3)
    assert rb.lengths.shape == (3, h, w, 8) and rb.xys.shape == (3, h, w, 2)
    # pixel centres: top-left pixel has the largest x (+X left) and the largest y (+Y up)
    s = min(h, w)
    x0, y0 = rb.xys[0, 0, 0]
    assert x0 == pytest.approx(w / s - 1 / s, abs=1e-6) and y0 == pytest.approx(
        h / s - 1 / s, abs=1e-6
    )
    assert rb.xys[0, -1, -1, 0] == pytest.approx(-(w / s - 1 / s), abs=1e-6)
    # each sample projects back to its pixel, at view depth == length
    pts = ray_bundle_to_ray_points(rb)
    ndc = cams.transform_points(pts.reshape(3, -1, 3)).reshape(3, h, w, 8, 3)
    torch.testing.assert_close(
        ndc[..., :2], rb.xys[..., None, :].expand_as(ndc[..., :2]), atol=1e-5, rtol=0
    )
    view = (
        cams.get_world_to_view_transform()
        .transform_points(pts.reshape(3, -1, 3))
        .reshape(3, h, w, 8, 3)
    )
    torch.testing.assert_close(view[..., 2], rb.lengths, atol=1e-5, rtol=0)
    torch.testing.assert_close(
        rb.origins, cams.get_camera_center()[:, None, None].expand_as(rb.origins)
    )


def test_grid_matches_obvious_loop():
    h, w = 3, 5
    grid = ndc_pixel_grid(h, w)
    for i in range(h):
        for j in range(w):
            # PyTorch3D: shorter side spans [-1, 1], pixel centres, +X left, +Y up.
            x = (w / h) * (1 - (2 * j + 1) / w)
            y = 1 - (2 * i + 1) / h
            assert grid[i, j].tolist() == pytest.approx([x, y], abs=1e-6)


def test_directions_have_view_z_one():
    cams = _cams()
    rb = NDCMultinomialRaysampler(
        image_height=4, image_width=4, n_pts_per_ray=2, min_depth=1, max_depth=2
    )(cams)
    d_view = rb.directions.reshape(3, -1, 3) @ cams.R
    torch.testing.assert_close(d_view[..., 2], torch.ones_like(d_view[..., 2]), atol=1e-5, rtol=0)


def test_monte_carlo_shapes_range_and_reprojection():
    cams = _cams()
    sampler = MonteCarloRaysampler(
        -0.5, 1.0, -1.0, 0.25, n_rays_per_image=100, n_pts_per_ray=16, min_depth=0.1, max_depth=3.0
    )
    rb = sampler(cams)
    assert (
        rb.origins.shape == (3, 100, 3)
        and rb.lengths.shape == (3, 100, 16)
        and rb.xys.shape == (3, 100, 2)
    )
    assert rb.xys[..., 0].min() >= -0.5 and rb.xys[..., 0].max() <= 1.0
    assert rb.xys[..., 1].min() >= -1.0 and rb.xys[..., 1].max() <= 0.25
    pts = ray_bundle_to_ray_points(rb)
    ndc = cams.transform_points(pts.reshape(3, -1, 3)).reshape(3, 100, 16, 3)
    torch.testing.assert_close(
        ndc[..., :2], rb.xys[:, :, None].expand_as(ndc[..., :2]), atol=1e-5, rtol=0
    )
    torch.testing.assert_close(rb.lengths[0, 0], torch.linspace(0.1, 3.0, 16))


def test_monte_carlo_random_draws_follow_pytorch3d_order():
    cams = _cams(2)
    torch.manual_seed(3)
    rb = MonteCarloRaysampler(-1, 1, -1, 1, 10, 4, 0.1, 3.0)(cams)
    torch.manual_seed(3)
    x = torch.rand(2, 10, 1) * 2 - 1
    y = torch.rand(2, 10, 1) * 2 - 1
    torch.testing.assert_close(rb.xys, torch.cat([x, y], -1))


def test_stratified_sampling_stays_in_strata():
    cams = _cams()
    rb = NDCMultinomialRaysampler(
        image_height=5,
        image_width=5,
        n_pts_per_ray=10,
        min_depth=0.5,
        max_depth=5.0,
        stratified_sampling=True,
    )(cams)
    centres = torch.linspace(0.5, 5.0, 10)
    mids = (centres[1:] + centres[:-1]) / 2
    lower = torch.cat([centres[:1], mids])
    upper = torch.cat([mids, centres[-1:]])
    assert (rb.lengths >= lower).all() and (rb.lengths <= upper).all()
    assert not torch.allclose(rb.lengths, centres.expand_as(rb.lengths))
    assert (rb.lengths.diff(dim=-1) >= 0).all()
    j = jiggle_within_stratas(centres.expand(1000, 10))
    torch.testing.assert_close(j.mean(0), (lower + upper) / 2, atol=0.05, rtol=0)


def test_subsampled_grid_and_mask():
    cams = _cams(2)
    mask = torch.zeros(2, 4, 4)
    mask[:, 1, 2] = 1
    mask[:, 3, 0] = 1
    sampler = NDCMultinomialRaysampler(
        image_height=4, image_width=4, n_pts_per_ray=3, min_depth=1, max_depth=2
    )
    rb = sampler(cams, mask=mask)
    assert rb.xys.shape == (2, 2, 1, 2)
    grid = ndc_pixel_grid(4, 4)
    allowed = {tuple(grid[1, 2].tolist()), tuple(grid[3, 0].tolist())}
    assert {tuple(v) for v in rb.xys.reshape(-1, 2).tolist()} <= allowed
    assert sampler(cams, n_rays_per_image=5).xys.shape == (2, 5, 1, 2)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(min_depth=3.0, max_depth=1.0), "min_depth must be smaller"),
        (dict(min_depth=-0.5, max_depth=1.0), "min_depth must be >= 0"),  # 0: NDC rays
        (dict(n_pts_per_ray=0), "n_pts_per_ray must be a positive integer; got 0"),
        (dict(image_width=-2), "image_width must be a positive integer; got -2"),
    ],
)
def test_bad_raysampler_args(kwargs, match):
    base = dict(image_height=4, image_width=4, n_pts_per_ray=3, min_depth=0.1, max_depth=3.0)
    base.update(kwargs)
    with pytest.raises(ValueError, match=match):
        NDCMultinomialRaysampler(**base)


def test_bad_monte_carlo_args():
    with pytest.raises(ValueError, match="n_rays_per_image must be a positive integer; got 0"):
        MonteCarloRaysampler(-1, 1, -1, 1, 0, 4, 0.1, 3.0)
    with pytest.raises(ValueError, match="min_x < max_x"):
        MonteCarloRaysampler(1, -1, -1, 1, 5, 4, 0.1, 3.0)
    with pytest.raises(ValueError, match="min_depth must be smaller"):
        MonteCarloRaysampler(-1, 1, -1, 1, 5, 4, 3.0, 3.0)


def test_origins_are_real_tensors_and_sparse_mask_resamples_inside():
    cams = _cams(2)
    rb = MonteCarloRaysampler(-1, 1, -1, 1, 5, 3, 0.1, 3.0)(cams)
    assert rb.origins.view(-1, 3).shape == (10, 3)  # the tutorial's batched_forward does this
    mask = torch.zeros(2, 4, 4)
    mask[:, 0, 0] = 1
    sampler = NDCMultinomialRaysampler(
        image_height=4, image_width=4, n_pts_per_ray=3, min_depth=1, max_depth=2
    )
    rb = sampler(cams, mask=mask, n_rays_per_image=3)
    torch.testing.assert_close(rb.xys.reshape(-1, 2), ndc_pixel_grid(4, 4)[0, 0].expand(6, 2))
    with pytest.raises(ValueError, match="mask must have shape"):
        sampler(cams, mask=torch.ones(2, 3, 3))
