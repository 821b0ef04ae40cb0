import math

import pytest
import torch

from nerf_lab import FoVPerspectiveCameras, look_at_view_transform, so3_exp_map
from nerf_lab.cameras import hat


def _cams(n=5, **kw):
    R, T = look_at_view_transform(
        dist=2.7, elev=torch.linspace(-30, 40, n), azim=torch.linspace(-170, 160, n)
    )
    return FoVPerspectiveCameras(R=R, T=T, **kw)


def test_look_at_camera_center_on_sphere():
    dist, elev, azim = 2.7, torch.tensor([0.0, 30.0, -45.0]), torch.tensor([0.0, 90.0, 200.0])
    R, T = look_at_view_transform(dist, elev, azim)
    C = FoVPerspectiveCameras(R=R, T=T).get_camera_center()
    e, a = torch.deg2rad(elev), torch.deg2rad(azim)
    expected = torch.stack([dist * e.cos() * a.sin(), dist * e.sin(), dist * e.cos() * a.cos()], -1)
    torch.testing.assert_close(C, expected, atol=1e-5, rtol=0)
    # azim=0, elev=0 puts the camera on +Z looking at the origin; view +X is world -X (left).
    torch.testing.assert_close(R[0], torch.diag(torch.tensor([-1.0, 1.0, -1.0])), atol=1e-6, rtol=0)
    torch.testing.assert_close(T[0], torch.tensor([0.0, 0.0, 2.7]), atol=1e-6, rtol=0)


def test_rotations_are_orthonormal_and_at_point_is_on_axis():
    at = torch.tensor([[0.3, -0.2, 0.5]])
    R, T = look_at_view_transform(3.0, 20.0, 75.0, at=at)
    torch.testing.assert_close(R[0] @ R[0].T, torch.eye(3), atol=1e-6, rtol=0)
    assert torch.det(R[0]) == pytest.approx(1.0, abs=1e-6)
    cams = FoVPerspectiveCameras(R=R, T=T)
    view = cams.get_world_to_view_transform().transform_points(at)
    torch.testing.assert_close(view[0], torch.tensor([0.0, 0.0, 3.0]), atol=1e-5, rtol=0)


def test_optical_axis_projects_to_ndc_origin():
    cams = _cams()
    C = cams.get_camera_center()
    axis = cams.R[:, :, 2]  # view +Z in world coordinates
    for depth, ndc_z in ((1.0, 0.0), (100.0, 1.0)):
        pts = (C + depth * axis)[:, None, :]
        ndc = cams.transform_points(pts)
        torch.testing.assert_close(ndc[..., :2], torch.zeros_like(ndc[..., :2]), atol=1e-5, rtol=0)
        torch.testing.assert_close(
            ndc[..., 2], torch.full_like(ndc[..., 2], ndc_z), atol=1e-4, rtol=0
        )


def test_fov_edge_projects_to_ndc_one_and_left_is_positive_x():
    cams = FoVPerspectiveCameras(fov=60.0)  # identity pose: view == world
    t = math.tan(math.radians(30.0))
    pts = torch.tensor([[t * 2.0, 0.0, 2.0], [0.0, t * 2.0, 2.0], [-t, -t, 1.0]])
    ndc = cams.transform_points(pts)
    torch.testing.assert_close(
        ndc[:, :2], torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]]), atol=1e-5, rtol=0
    )
    # radians and aspect ratio
    cams2 = FoVPerspectiveCameras(fov=math.radians(60.0), degrees=False, aspect_ratio=2.0)
    ndc2 = cams2.transform_points(pts)
    torch.testing.assert_close(ndc2[:, 0], ndc[:, 0] / 2, atol=1e-5, rtol=0)


def test_projection_matrix_matches_formula():
    cams = FoVPerspectiveCameras(znear=0.5, zfar=10.0, fov=45.0, aspect_ratio=1.5)
    K = cams.compute_projection_matrix(cams.znear, cams.zfar, cams.fov, cams.aspect_ratio, True)[0]
    f = 1 / math.tan(math.radians(22.5))
    expected = torch.tensor(
        [[f / 1.5, 0, 0, 0], [0, f, 0, 0], [0, 0, 10 / 9.5, -5 / 9.5], [0, 0, 1, 0]],
        dtype=torch.float32,
    )
    torch.testing.assert_close(K, expected, atol=1e-6, rtol=1e-6)


def test_unproject_inverts_transform_points():
    cams = _cams(znear=0.1, zfar=20.0)
    pts = torch.randn(len(cams), 50, 3) * 0.5
    ndc = cams.transform_points(pts)
    view = cams.get_world_to_view_transform().transform_points(pts)
    xy_depth = torch.cat([ndc[..., :2], view[..., 2:]], -1)
    torch.testing.assert_close(cams.unproject_points(xy_depth), pts, atol=1e-4, rtol=0)
    torch.testing.assert_close(
        cams.unproject_points(ndc, scaled_depth_input=True), pts, atol=1e-3, rtol=0
    )


def test_batching_indexing_and_to():
    cams = _cams(n=6, fov=torch.linspace(30, 80, 6))
    assert len(cams) == 6
    for field in ("znear", "zfar", "aspect_ratio", "fov"):
        assert getattr(cams, field).shape == (6,)
    sub = cams[torch.tensor([4, 1])]
    assert len(sub) == 2
    torch.testing.assert_close(sub.R, cams.R[[4, 1]])
    torch.testing.assert_close(sub.fov, cams.fov[[4, 1]])
    assert len(cams[[0, 2, 3]]) == 3 and len(cams[2]) == 1
    mask = torch.tensor([True, False, True, False, False, True])
    torch.testing.assert_close(cams[mask].T, cams.T[mask])
    moved = cams.to("cpu")
    assert moved.R.device.type == "cpu" and len(moved) == 6
    with pytest.raises(IndexError):
        cams[[7]]


def test_bad_camera_inputs():
    with pytest.raises(ValueError, match="R must have shape"):
        FoVPerspectiveCameras(R=torch.eye(4)[None])
    with pytest.raises(ValueError, match="non-broadcastable"):
        FoVPerspectiveCameras(R=torch.eye(3).expand(3, 3, 3), T=torch.zeros(2, 3))


def _rodrigues_loop(w):
    out = []
    for v in w.double():
        theta = v.norm()
        if theta < 1e-12:
            out.append(torch.eye(3, dtype=torch.float64))
            continue
        k = v / theta
        K = torch.tensor(
            [[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]], dtype=torch.float64
        )
        out.append(torch.eye(3, dtype=torch.float64) + theta.sin() * K + (1 - theta.cos()) * K @ K)
    return torch.stack(out).float()


def test_so3_exp_map_against_rodrigues_and_rotations():
    w = torch.randn(20, 3) * 1.5
    R = so3_exp_map(w)
    torch.testing.assert_close(R, _rodrigues_loop(w), atol=1e-5, rtol=0)
    torch.testing.assert_close(
        R @ R.transpose(1, 2), torch.eye(3).expand(20, 3, 3), atol=1e-5, rtol=0
    )
    # rotation about +Y by 90 degrees maps +Z to +X (column-vector convention of the matrix)
    Ry = so3_exp_map(torch.tensor([[0.0, math.pi / 2, 0.0]]))[0]
    torch.testing.assert_close(
        Ry @ torch.tensor([0.0, 0.0, 1.0]), torch.tensor([1.0, 0.0, 0.0]), atol=1e-6, rtol=0
    )
    # hat(v) @ u == v x u
    u = torch.randn(20, 3)
    torch.testing.assert_close(
        (hat(w) @ u[..., None])[..., 0], torch.cross(w, u, dim=1), atol=1e-5, rtol=0
    )


def test_so3_exp_map_gradient_finite_at_zero():
    w = torch.zeros(3, 3, requires_grad=True)
    so3_exp_map(w).sum().backward()
    assert torch.isfinite(w.grad).all()
    w64 = (torch.randn(4, 3, dtype=torch.float64) * 0.7).requires_grad_()
    assert torch.autograd.gradcheck(so3_exp_map, (w64,))
    with pytest.raises(ValueError, match="Nx3"):
        so3_exp_map(torch.zeros(3))


def test_pytorch3d_conveniences():
    cams = _cams(n=3)
    # float64 inputs are cast to float32 as PyTorch3D does
    c64 = FoVPerspectiveCameras(R=cams.R.double(), T=cams.T.double())
    torch.testing.assert_close(
        c64.transform_points(torch.zeros(1, 3)), cams.transform_points(torch.zeros(1, 3))
    )
    # keyword overrides and (P, 3) unprojection broadcast over cameras
    torch.testing.assert_close(cams.get_camera_center(T=torch.zeros(3, 3)), torch.zeros(3, 3))
    out = cams.unproject_points(torch.tensor([[0.0, 0.0, 1.0], [0.5, 0.5, 2.0]]))
    assert out.shape == (3, 2, 3)
    # .to moves in place and returns self
    assert cams.to("cpu") is cams
