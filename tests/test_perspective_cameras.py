"""PerspectiveCameras (NDC and screen), the NDC / screen API shared with FoVPerspectiveCameras,
and rays of both camera types."""

from __future__ import annotations

import math

import pytest
import torch

from nerf_lab import (
    FoVPerspectiveCameras,
    MonteCarloRaysampler,
    NDCMultinomialRaysampler,
    PerspectiveCameras,
    look_at_view_transform,
    ray_bundle_to_ray_points,
)
from nerf_lab.cameras import (
    Transform3d,
    cameras_from_state,
    cameras_to_state,
    get_ndc_to_screen_transform,
    get_screen_to_ndc_transform,
    screen_intrinsics,
)
from nerf_lab.data.procedural import torus_mesh
from nerf_lab.data.render import render_mesh
from nerf_lab.data.scene import concat_cameras
from nerf_lab.raysamplers import ndc_extent


def _pose(n=3, dist=3.0):
    return look_at_view_transform(
        dist=dist, elev=torch.linspace(-20, 35, n), azim=torch.linspace(10, 250, n)
    )


def _screen_cams(n=3, hw=(16, 24)):
    R, T = _pose(n)
    focal = torch.stack([torch.linspace(18, 26, n), torch.linspace(30, 22, n)], 1)
    pp = torch.stack([torch.linspace(9.5, 14.0, n), torch.linspace(7.25, 9.0, n)], 1)
    return PerspectiveCameras(
        focal_length=focal, principal_point=pp, R=R, T=T, in_ndc=False, image_size=(hw,)
    )


def _ndc_cams(n=3):
    R, T = _pose(n)
    focal = torch.stack([torch.linspace(1.5, 2.5, n), torch.linspace(2.2, 1.8, n)], 1)
    pp = torch.stack([torch.linspace(-0.2, 0.1, n), torch.linspace(0.15, -0.05, n)], 1)
    return PerspectiveCameras(focal_length=focal, principal_point=pp, R=R, T=T)


# -- hand-derived projections -------------------------------------------------------------------


def test_screen_camera_hand_derived_projections():
    fx, fy, px, py, H, W = 20.0, 30.0, 9.5, 7.25, 16, 24
    cams = PerspectiveCameras(((fx, fy),), ((px, py),), in_ndc=False, image_size=((H, W),))
    assert not cams.in_ndc() and cams.is_perspective() and len(cams) == 1
    # View == world (identity pose). On the optical axis: the principal point, at any depth.
    axis = torch.tensor([[0.0, 0.0, 2.0], [0.0, 0.0, 7.0]])
    scr = cams.transform_points_screen(axis)
    torch.testing.assert_close(scr[:, :2], torch.tensor([[px, py], [px, py]]))
    torch.testing.assert_close(scr[:, 2], torch.tensor([0.5, 1 / 7]))  # 1 / Z, as PyTorch3D
    # +X is left, +Y up: a point left of and above the axis lands left of / above pp.
    pts = torch.tensor([[1.0, 0.0, 2.0], [0.0, 1.0, 4.0], [-0.5, -0.25, 1.0]])
    expected = torch.tensor([[px - fx / 2, py], [px, py - fy / 4], [px + fx / 2, py + fy / 4]])
    torch.testing.assert_close(cams.transform_points_screen(pts)[:, :2], expected)
    # transform_points: PyTorch3D's unflipped intermediate (fx X / Z + px, fy Y / Z + py).
    raw = cams.transform_points(pts)
    torch.testing.assert_close(raw[:, 0], fx * pts[:, 0] / pts[:, 2] + px)
    torch.testing.assert_close(raw[:, 1], fy * pts[:, 1] / pts[:, 2] + py)
    # NDC: the shorter side (H = 16) spans [-1, 1]: ndc = (size / 2 - pixel) / (16 / 2).
    ndc = cams.transform_points_ndc(pts)
    torch.testing.assert_close(ndc[:, 0], (W / 2 - expected[:, 0]) / (H / 2))
    torch.testing.assert_close(ndc[:, 1], (H / 2 - expected[:, 1]) / (H / 2))
    torch.testing.assert_close(cams.get_principal_point(), torch.tensor([[px, py]]))


@pytest.mark.parametrize("hw", [(16, 24), (24, 16), (10, 10)])
def test_image_corners_and_pixel_centres_in_ndc_and_screen(hw):
    """PyTorch3D's rule: NDC has +X left, +Y up and the shorter side spanning [-1, 1]."""
    H, W = hw
    cams = _screen_cams(1, hw)
    # The ray through the top-left corner of the image and through pixel (i, j)'s centre.
    u = torch.tensor([0.0, 0.5, W - 0.5, W, 3.5])
    v = torch.tensor([0.0, 0.5, H - 0.5, H, 2.5])
    fx, fy = cams.focal_length[0]
    px, py = cams.principal_point[0]
    z = torch.tensor([1.0, 2.0, 3.0, 1.5, 2.5])
    view = torch.stack([(px - u) / fx * z, (py - v) / fy * z, z], -1)
    world = (view - cams.T) @ cams.R[0].T
    scr = cams.transform_points_screen(world)
    torch.testing.assert_close(scr[:, :2], torch.stack([u, v], -1), atol=1e-4, rtol=0)
    ndc = cams.transform_points_ndc(world)
    rx, ry = ndc_extent(H, W)
    s = min(H, W)
    assert ndc[0, :2].tolist() == pytest.approx([rx, ry], abs=1e-5)  # top-left corner
    assert ndc[3, :2].tolist() == pytest.approx([-rx, -ry], abs=1e-5)  # bottom-right corner
    assert ndc[1, :2].tolist() == pytest.approx([rx - 1 / s, ry - 1 / s], abs=1e-5)
    assert max(rx, ry) == max(H, W) / s and min(rx, ry) == 1.0


def test_ndc_camera_hand_derived_and_ndc_screen_transforms():
    cams = PerspectiveCameras(focal_length=2.0, principal_point=((0.1, -0.2),))
    assert cams.in_ndc() and cams.focal_length.shape == (1, 2)
    pts = torch.tensor([[0.0, 0.0, 3.0], [1.0, 0.5, 2.0]])
    ndc = cams.transform_points(pts)
    torch.testing.assert_close(ndc[:, :2], torch.tensor([[0.1, -0.2], [1.1, 0.3]]))
    torch.testing.assert_close(cams.transform_points_ndc(pts), ndc)
    assert torch.equal(cams.get_ndc_camera_transform().get_matrix(), torch.eye(4)[None])
    # Screen from NDC (H=10, W=20, s=5): x = W/2 - 5 x_ndc, y = H/2 - 5 y_ndc.
    scr = cams.transform_points_screen(pts, image_size=(10, 20))
    torch.testing.assert_close(scr[:, :2], torch.tensor([[9.5, 6.0], [4.5, 3.5]]))
    with pytest.raises(ValueError, match="image_size"):
        cams.transform_points_screen(pts)
    # The two helper transforms are inverses; with_xyflip flips x and y.
    n2s = get_ndc_to_screen_transform(cams, with_xyflip=True, image_size=(10, 20))
    s2n = get_screen_to_ndc_transform(cams, with_xyflip=True, image_size=(10, 20))
    torch.testing.assert_close(n2s.compose(s2n).get_matrix(), torch.eye(4)[None])
    torch.testing.assert_close(n2s.transform_points(ndc)[:, :2], scr[:, :2])


def test_fov_cameras_share_the_ndc_and_screen_api():
    R, T = _pose(2)
    fov = FoVPerspectiveCameras(fov=50.0, R=R, T=T)
    assert fov.in_ndc() and fov.get_image_size() is None
    pts = torch.randn(2, 5, 3) * 0.3
    torch.testing.assert_close(fov.transform_points_ndc(pts), fov.transform_points(pts))
    assert torch.equal(fov.get_ndc_camera_transform().get_matrix(), torch.eye(4)[None])
    scr = fov.transform_points_screen(pts, image_size=(12, 20))
    ndc = fov.transform_points(pts)
    torch.testing.assert_close(scr[..., 0], 10 - 6 * ndc[..., 0])
    torch.testing.assert_close(scr[..., 1], 6 - 6 * ndc[..., 1])
    # unproject accepts from_ndc (its xy are NDC anyway).
    xyz = torch.cat([ndc[..., :2], torch.full_like(ndc[..., :1], 2.0)], -1)
    torch.testing.assert_close(
        fov.unproject_points(xyz, from_ndc=True), fov.unproject_points(xyz), atol=0, rtol=0
    )
    assert Transform3d().get_matrix().shape == (1, 4, 4)


# -- round trips and equivalences ---------------------------------------------------------------


@pytest.mark.parametrize("kind", ["screen", "ndc"])
def test_project_unproject_round_trip(kind):
    cams = _screen_cams() if kind == "screen" else _ndc_cams()
    pts = torch.randn(3, 20, 3) * 0.5
    view = cams.get_world_to_view_transform().transform_points(pts)
    depth = view[..., 2:]
    own = cams.transform_points(pts)
    back = cams.unproject_points(torch.cat([own[..., :2], depth], -1))
    torch.testing.assert_close(back, pts, atol=1e-4, rtol=0)
    back_view = cams.unproject_points(torch.cat([own[..., :2], depth], -1), world_coordinates=False)
    torch.testing.assert_close(back_view, view, atol=1e-4, rtol=0)
    ndc = cams.transform_points_ndc(pts)
    back_ndc = cams.unproject_points(torch.cat([ndc[..., :2], depth], -1), from_ndc=True)
    torch.testing.assert_close(back_ndc, pts, atol=1e-4, rtol=0)
    # (P, 3) input is the same points for every camera.
    one = cams.unproject_points(torch.tensor([[0.0, 0.0, 1.0]]), from_ndc=True)
    assert one.shape == (3, 1, 3)


def test_unproject_matches_the_inverse_of_the_full_projection():
    """PyTorch3D unprojects with the inverse of its 4x4 transforms and (x, y, 1 / depth)."""
    for cams in (_screen_cams(), _ndc_cams()):
        xy = torch.rand(3, 6, 2) * 10
        depth = torch.rand(3, 6, 1) + 1.0
        ref = (
            cams.get_full_projection_transform()
            .inverse()
            .transform_points(torch.cat([xy, 1.0 / depth], -1))
        )
        ours = cams.unproject_points(torch.cat([xy, depth], -1))
        torch.testing.assert_close(ours, ref, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("aspect", [1.0, 1.3])
def test_equivalent_to_fov_cameras(aspect):
    R, T = _pose(3)
    fov_deg = torch.tensor([40.0, 60.0, 75.0])
    fov = FoVPerspectiveCameras(fov=fov_deg, aspect_ratio=aspect, R=R, T=T)
    t = torch.tan(torch.deg2rad(fov_deg) / 2)
    ndc = PerspectiveCameras(focal_length=torch.stack([1 / (t * aspect), 1 / t], 1), R=R, T=T)
    hw = (12, 20)
    focal, pp = screen_intrinsics(fov, hw)
    torch.testing.assert_close(focal[:, 1], 6.0 / t)
    torch.testing.assert_close(pp, torch.tensor([[10.0, 6.0]]).expand(3, 2))
    scr = PerspectiveCameras(focal, pp, R=R, T=T, in_ndc=False, image_size=(hw,))
    pts = torch.randn(3, 10, 3) * 0.5
    ref = fov.transform_points(pts)[..., :2]
    for cams in (ndc, scr):
        torch.testing.assert_close(cams.transform_points_ndc(pts)[..., :2], ref, atol=1e-5, rtol=0)
        torch.testing.assert_close(
            cams.transform_points_screen(pts, image_size=hw)[..., :2],
            fov.transform_points_screen(pts, image_size=hw)[..., :2],
            atol=1e-4,
            rtol=0,
        )
    for other in (fov, ndc):  # intrinsics of NDC cameras are the screen camera's
        f2, p2 = screen_intrinsics(other, hw)
        torch.testing.assert_close(f2, focal)
        torch.testing.assert_close(p2, pp)
    # Rays of all three camera batches are the same.
    sampler = NDCMultinomialRaysampler(
        image_width=20, image_height=12, n_pts_per_ray=4, min_depth=1.0, max_depth=5.0
    )
    rays = [sampler(c) for c in (fov, ndc, scr)]
    for rb in rays[1:]:
        torch.testing.assert_close(rb.directions, rays[0].directions, atol=1e-5, rtol=0)
        torch.testing.assert_close(rb.origins, rays[0].origins, atol=1e-5, rtol=0)


# -- rays ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("hw", [(8, 13), (13, 8)])
@pytest.mark.parametrize("kind", ["screen", "ndc"])
def test_grid_rays_go_through_pixel_centres(hw, kind):
    H, W = hw
    cams = _screen_cams(2, hw) if kind == "screen" else _ndc_cams(2)
    sampler = NDCMultinomialRaysampler(
        image_width=W, image_height=H, n_pts_per_ray=5, min_depth=0.5, max_depth=4.0
    )
    rb = sampler(cams)
    assert rb.directions.shape == (2, H, W, 3)
    pts = ray_bundle_to_ray_points(rb).reshape(2, -1, 3)
    scr = cams.transform_points_screen(pts, image_size=hw).reshape(2, H, W, 5, 3)
    jj, ii = torch.meshgrid(torch.arange(W) + 0.5, torch.arange(H) + 0.5, indexing="xy")
    centres = torch.stack([jj, ii], -1)[None, :, :, None].expand(2, H, W, 5, 2)
    torch.testing.assert_close(scr[..., :2], centres, atol=2e-4, rtol=0)
    view = cams.get_world_to_view_transform().transform_points(pts).reshape(2, H, W, 5, 3)
    torch.testing.assert_close(view[..., 2], rb.lengths, atol=1e-5, rtol=0)
    if kind == "screen":  # the pinhole formula, pixel by pixel in a plain loop
        for c in range(2):
            fx, fy = cams.focal_length[c].tolist()
            px, py = cams.principal_point[c].tolist()
            for i in range(H):
                for j in range(W):
                    d_view = torch.tensor([(px - j - 0.5) / fx, (py - i - 0.5) / fy, 1.0])
                    torch.testing.assert_close(
                        rb.directions[c, i, j], d_view @ cams.R[c].T, atol=1e-5, rtol=0
                    )


def test_directions_match_pytorch3d_unprojection_at_depths_one_and_two():
    """PyTorch3D builds rays by unprojecting each NDC point at depths 1 and 2 (from_ndc)."""
    for cams in (_screen_cams(), _ndc_cams()):
        xy = torch.rand(3, 7, 2) * 2 - 1
        ones = torch.ones(3, 7, 1)
        p1 = cams.unproject_points(torch.cat([xy, ones], -1), from_ndc=True)
        p2 = cams.unproject_points(torch.cat([xy, 2 * ones], -1), from_ndc=True)
        dirs = cams.get_ray_directions_view(xy) @ cams.R.transpose(1, 2)
        torch.testing.assert_close(p2 - p1, dirs, atol=1e-5, rtol=0)
        torch.testing.assert_close(p1 - dirs, cams.get_camera_center()[:, None].expand_as(p1))


def test_monte_carlo_rays_reproject_for_screen_cameras():
    cams = _screen_cams(2, (10, 16))
    sampler = MonteCarloRaysampler(-1.6, 1.6, -1.0, 1.0, 50, 6, 0.5, 4.0)
    rb = sampler(cams)
    pts = ray_bundle_to_ray_points(rb).reshape(2, -1, 3)
    ndc = cams.transform_points_ndc(pts).reshape(2, 50, 6, 3)
    torch.testing.assert_close(
        ndc[..., :2], rb.xys[:, :, None].expand(2, 50, 6, 2), atol=1e-4, rtol=0
    )


def test_gradients_in_float64():
    cams = _screen_cams(2)
    xy = (torch.rand(2, 4, 2, dtype=torch.float64) * 2 - 1).requires_grad_()
    assert torch.autograd.gradcheck(cams.get_ray_directions_view, (xy,))
    pts = (torch.randn(2, 4, 3, dtype=torch.float64) * 0.3).requires_grad_()
    assert torch.autograd.gradcheck(lambda p: cams.transform_points_screen(p), (pts,))
    xyz = torch.cat([torch.rand(2, 4, 2) * 10, torch.rand(2, 4, 1) + 1], -1).double()
    assert torch.autograd.gradcheck(cams.unproject_points, (xyz.requires_grad_(),))


# -- batches ------------------------------------------------------------------------------------


def test_batching_indexing_clone_concat_and_state():
    cams = _screen_cams(4)
    assert len(cams) == 4 and cams.image_size.shape == (4, 2)
    sub = cams[torch.tensor([3, 1])]
    assert isinstance(sub, PerspectiveCameras) and not sub.in_ndc()
    torch.testing.assert_close(sub.focal_length, cams.focal_length[[3, 1]])
    torch.testing.assert_close(sub.principal_point, cams.principal_point[[3, 1]])
    mask = torch.tensor([True, False, False, True])
    torch.testing.assert_close(cams[mask].R, cams.R[mask])
    assert len(cams[2]) == 1 and len(cams[[0, 1, 2]]) == 3
    with pytest.raises(IndexError):
        cams[[4]]
    twin = cams.clone()
    twin.focal_length[0, 0] = 99.0
    assert cams.focal_length[0, 0] != 99.0
    assert cams.to("cpu") is cams
    both = concat_cameras([cams[[0, 1]], cams[[2, 3]]])
    torch.testing.assert_close(both.focal_length, cams.focal_length)
    torch.testing.assert_close(both.image_size, cams.image_size)
    torch.testing.assert_close(both.get_camera_center(), cams.get_camera_center())
    with pytest.raises(ValueError, match="one type"):
        concat_cameras([cams, FoVPerspectiveCameras()])
    with pytest.raises(ValueError, match="disagree"):
        concat_cameras([cams, _ndc_cams(1)])
    ndc = _ndc_cams(2)
    assert ndc.image_size is None and ndc[[1]].image_size is None
    for c in (cams, ndc, FoVPerspectiveCameras(fov=[30.0, 50.0], degrees=True)):
        back = cameras_from_state(cameras_to_state(c))
        assert type(back) is type(c) and back._shared_kwargs() == c._shared_kwargs()
        pts = torch.randn(len(c), 3, 3)
        torch.testing.assert_close(
            back.transform_points_ndc(pts, image_size=(16, 24)),
            c.transform_points_ndc(pts, image_size=(16, 24)),
        )


def test_bad_perspective_camera_inputs():
    with pytest.raises(ValueError, match="custom K"):
        PerspectiveCameras(K=torch.eye(4)[None])
    with pytest.raises(ValueError, match="focal_length"):
        PerspectiveCameras(focal_length=torch.ones(2, 3))
    with pytest.raises(ValueError, match="focal_length must be finite"):
        PerspectiveCameras(focal_length=0.0)
    with pytest.raises(ValueError, match="principal_point"):
        PerspectiveCameras(principal_point=torch.zeros(1, 3))
    with pytest.raises(ValueError, match="image_size"):
        PerspectiveCameras(image_size=((0, 10),))
    with pytest.raises(ValueError, match="non-broadcastable"):
        PerspectiveCameras(focal_length=torch.ones(3), R=torch.eye(3).expand(2, 3, 3))
    screen = PerspectiveCameras(10.0, ((5.0, 5.0),), in_ndc=False)  # no image size
    assert screen.transform_points(torch.tensor([[0.0, 0.0, 1.0]])).shape == (1, 3)
    with pytest.raises(ValueError, match="image_size"):
        screen.transform_points_ndc(torch.tensor([[0.0, 0.0, 1.0]]))
    with pytest.raises(ValueError, match="image_size"):
        screen.get_ray_directions_view(torch.zeros(1, 2, 2))


def test_rasteriser_renders_screen_cameras_like_equivalent_fov_cameras():
    R, T = look_at_view_transform(dist=2.5, elev=[20.0, -10.0], azim=[30.0, 200.0])
    fov = FoVPerspectiveCameras(fov=55.0, R=R, T=T)
    hw = (12, 20)
    focal, pp = screen_intrinsics(fov, hw)
    scr = PerspectiveCameras(focal, pp, R=R, T=T, in_ndc=False, image_size=(hw,))
    mesh = torus_mesh(n_major=24, n_minor=12, texture_size=32)
    img_a, sil_a = render_mesh(mesh, fov, hw, light_location=None)
    img_b, sil_b = render_mesh(mesh, scr, hw, light_location=None)
    assert sil_a.sum() > 20
    assert (sil_a != sil_b).sum() <= 2  # pixels exactly on an edge may flip
    same = (sil_a == 1) & (sil_b == 1)
    assert (img_a[same] - img_b[same]).abs().max() < 0.05
    # An off-centre principal point shifts the image: move it 3 px right, the object follows.
    shifted = PerspectiveCameras(focal, pp + torch.tensor([3.0, 0.0]), R=R, T=T, in_ndc=False,
                                 image_size=(hw,))  # fmt: skip
    _, sil_c = render_mesh(mesh, shifted, hw, light_location=None)
    assert torch.equal(sil_c[:, :, 3:], sil_b[:, :, :-3]) or (
        (sil_c[:, :, 3:] != sil_b[:, :, :-3]).sum() <= 2
    )
    assert math.isclose(float(sil_c.sum()), float(sil_b.sum()), abs_tol=8)
