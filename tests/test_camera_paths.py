import json
import math
import os
import stat

import pytest
import torch

from nerf_lab.camera_paths import (
    CameraPath,
    interpolate,
    load_camera_path,
    matrix_to_quaternion,
    orbit,
    quaternion_to_matrix,
    save_camera_path,
    slerp_quaternions,
    spiral,
)
from nerf_lab.cameras import FoVPerspectiveCameras, look_at_view_transform, so3_exp_map

LIKE = FoVPerspectiveCameras(znear=0.1, zfar=10.0, fov=50.0, aspect_ratio=1.0)


def _ndc_of(cams: FoVPerspectiveCameras, point) -> torch.Tensor:
    p = torch.as_tensor(point, dtype=torch.float32).view(1, 1, 3).expand(len(cams), 1, 3)
    return cams.transform_points(p)[:, 0]


def _view_of(cams: FoVPerspectiveCameras, point) -> torch.Tensor:
    p = torch.as_tensor(point, dtype=torch.float32).view(1, 1, 3).expand(len(cams), 1, 3)
    return cams.get_world_to_view_transform().transform_points(p)[:, 0]


def _random_rotations(n: int, gen: torch.Generator) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(n, 3, 3, generator=gen, dtype=torch.float64))
    return q * torch.linalg.det(q).sign()[:, None, None]


# ----------------------------------------------------------------------------- orbit
def test_orbit_at_elevation_zero_is_the_tutorial_turntable():
    # The tutorial: R = so3_exp_map([0, phi, 0]), T = (0, 0, d), phi = linspace(-3.14, 3.14, n).
    n, d = 17, 2.7
    log_rots = torch.zeros(n, 3)
    log_rots[:, 1] = torch.linspace(-3.14, 3.14, n)
    cams = orbit(n, d, 0.0, LIKE)
    torch.testing.assert_close(cams.R, so3_exp_map(log_rots), atol=2e-6, rtol=0)
    expected_T = torch.tensor([[0.0, 0.0, d]]).expand(n, 3)
    torch.testing.assert_close(cams.T, expected_T, atol=2e-6, rtol=0)
    for f in ("znear", "zfar", "fov", "aspect_ratio"):
        torch.testing.assert_close(getattr(cams, f), getattr(LIKE, f).expand(n))


@pytest.mark.parametrize(
    "center, up, elev",
    [((0, 0, 0), (0, 1, 0), 0.0), ((0.3, -0.2, 0.5), (0, 1, 0), 35.0),
     ((1.0, 2.0, -1.0), (0, 0, 1), -20.0), ((0.1, 0.2, 0.3), (1, 1, 0), 60.0)],
)  # fmt: skip
def test_orbit_frames_are_at_the_radius_and_look_at_the_centre(center, up, elev):
    radius = 3.5
    cams = orbit(12, radius, elev, LIKE, center=center, up=up)
    dist = (cams.get_camera_center() - torch.tensor(center, dtype=torch.float32)).norm(dim=-1)
    torch.testing.assert_close(dist, torch.full((12,), radius), atol=1e-5, rtol=0)
    # The centre projects to the image centre, at view depth = radius.
    ndc = _ndc_of(cams, center)
    torch.testing.assert_close(ndc[:, :2], torch.zeros(12, 2), atol=1e-5, rtol=0)
    view = _view_of(cams, center)
    torch.testing.assert_close(view[:, 2], torch.full((12,), radius), atol=1e-5, rtol=0)
    # Elevation: the angle of (C - center) above the plane perpendicular to up.
    u = torch.tensor(up, dtype=torch.float32) / torch.tensor(up, dtype=torch.float32).norm()
    offset = cams.get_camera_center() - torch.tensor(center, dtype=torch.float32)
    got = torch.rad2deg(torch.asin((offset @ u) / offset.norm(dim=-1)))
    torch.testing.assert_close(got, torch.full((12,), elev), atol=1e-3, rtol=0)
    # Rotations are proper.
    eye = torch.eye(3).expand(12, 3, 3)
    torch.testing.assert_close(cams.R @ cams.R.transpose(1, 2), eye, atol=1e-5, rtol=0)


def test_orbit_matches_look_at_view_transform_for_y_up():
    az = [10.0, 100.0, 250.0]
    cams = orbit(3, 2.0, 25.0, LIKE, center=(0.2, 0.1, -0.3), azimuth_deg=az)
    R, T = look_at_view_transform(2.0, 25.0, az, at=((0.2, 0.1, -0.3),))
    torch.testing.assert_close(cams.R, R, atol=1e-6, rtol=0)
    torch.testing.assert_close(cams.T, T, atol=1e-5, rtol=0)


@pytest.mark.parametrize("up", [(0, 1, 0), (0, 0, 1)])
def test_positive_elevation_is_above_looking_down(up):
    up_t = torch.tensor(up, dtype=torch.float32)
    above = orbit(6, 3.0, 30.0, LIKE, up=up)
    below = orbit(6, 3.0, -30.0, LIKE, up=up)
    assert (above.get_camera_center() @ up_t > 1.4).all()  # 3 sin(30) = 1.5
    assert (below.get_camera_center() @ up_t < -1.4).all()
    # Looking down: the view direction (+Z of view space, in world) has a negative up part.
    fwd_above = above.R[:, :, 2]  # world direction of view +Z (columns of R)
    assert (fwd_above @ up_t < 0).all()
    assert (below.R[:, :, 2] @ up_t > 0).all()
    # A point above the centre is above the image centre (NDC +Y is up) in both.
    for cams in (above, below):
        assert (_ndc_of(cams, 0.2 * up_t)[:, 1] > 0).all()
        assert _ndc_of(cams, 0.2 * up_t)[:, 0].abs().max() < 1e-5


def test_orbit_rejects_bad_arguments():
    with pytest.raises(ValueError, match="elevation_deg"):
        orbit(4, 2.0, 90.0, LIKE)
    with pytest.raises(ValueError, match="radius"):
        orbit(4, 0.0, 0.0, LIKE)
    with pytest.raises(ValueError, match="n_frames"):
        orbit(0, 2.0, 0.0, LIKE)
    with pytest.raises(ValueError, match="azimuth_deg"):
        orbit(4, 2.0, 0.0, LIKE, azimuth_deg=[0.0, 1.0])
    with pytest.raises(ValueError, match="up"):
        orbit(4, 2.0, 0.0, LIKE, up=(0, 0, 0))


# ----------------------------------------------------------------------------- spiral
def test_spiral_follows_its_formulas_and_looks_at_the_centre():
    n, r, e0, amp, ra, k = 24, 3.0, 10.0, 15.0, 0.2, 2
    center = torch.tensor([0.1, -0.2, 0.3])
    cams = spiral(n, r, LIKE, elevation_deg=e0, elevation_amplitude_deg=amp,
                  radius_amplitude=ra, n_oscillations=k, center=tuple(center.tolist()))  # fmt: skip
    s = torch.arange(n, dtype=torch.float64) / n
    offset = (cams.get_camera_center() - center).double()
    radius = offset.norm(dim=-1)
    expected_r = r * (1 + ra * torch.cos(2 * math.pi * k * s))
    torch.testing.assert_close(radius, expected_r, atol=1e-5, rtol=0)
    elev = torch.rad2deg(torch.asin(offset[:, 1] / radius))
    torch.testing.assert_close(elev, e0 + amp * torch.sin(2 * math.pi * k * s), atol=1e-3, rtol=0)
    azim = torch.rad2deg(torch.atan2(offset[:, 0], offset[:, 2])) % 360
    torch.testing.assert_close(azim, (360 * s) % 360, atol=1e-3, rtol=0)
    torch.testing.assert_close(_ndc_of(cams, center)[:, :2], torch.zeros(n, 2), atol=1e-5, rtol=0)


def test_spiral_without_oscillation_is_an_orbit():
    n = 10
    a = spiral(n, 2.5, LIKE, elevation_deg=20.0, elevation_amplitude_deg=0.0,
               radius_amplitude=0.0, start_azimuth_deg=5.0)  # fmt: skip
    b = orbit(n, 2.5, 20.0, LIKE, azimuth_deg=5.0 + 360.0 * torch.arange(n) / n)
    torch.testing.assert_close(a.R, b.R)
    torch.testing.assert_close(a.T, b.T)


def test_spiral_rejects_bad_arguments():
    with pytest.raises(ValueError, match="elevation_amplitude_deg"):
        spiral(8, 2.0, LIKE, elevation_deg=80.0, elevation_amplitude_deg=15.0)
    with pytest.raises(ValueError, match="radius_amplitude"):
        spiral(8, 2.0, LIKE, radius_amplitude=1.0)
    with pytest.raises(ValueError, match="n_oscillations"):
        spiral(8, 2.0, LIKE, n_oscillations=1.5)


# ----------------------------------------------------------------------------- rotations
def test_quaternion_round_trip_including_half_turns():
    gen = torch.Generator().manual_seed(0)
    R = _random_rotations(200, gen)
    # Rotations by exactly 180 degrees and near it, about random axes.
    axes = torch.nn.functional.normalize(torch.randn(20, 3, generator=gen, dtype=torch.float64))
    half = so3_exp_map((axes * math.pi).float()).double()
    near = so3_exp_map((axes * (math.pi - 1e-4)).float()).double()
    for mats in (R, half, near, torch.eye(3, dtype=torch.float64)[None]):
        q = matrix_to_quaternion(mats)
        torch.testing.assert_close(q.norm(dim=-1), torch.ones(len(mats), dtype=torch.float64))
        assert (q[:, 0] >= 0).all()
        torch.testing.assert_close(quaternion_to_matrix(q), mats, atol=1e-6, rtol=0)


def _geodesic_loop(R0: torch.Tensor, R1: torch.Tensor, t: float) -> torch.Tensor:
    """R0 exp(t log(R0^T R1)) in plain Python (angle and axis of the relative rotation)."""
    rel = (R0.T @ R1).tolist()
    trace = rel[0][0] + rel[1][1] + rel[2][2]
    angle = math.acos(max(-1.0, min(1.0, (trace - 1) / 2)))
    axis = [rel[2][1] - rel[1][2], rel[0][2] - rel[2][0], rel[1][0] - rel[0][1]]
    norm = math.sqrt(sum(a * a for a in axis))
    axis = [a / norm for a in axis]
    x, y, z = (a * angle * t for a in axis)
    th = math.sqrt(x * x + y * y + z * z)
    K = [[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]]
    K2 = [[sum(K[i][k] * K[k][j] for k in range(3)) for j in range(3)] for i in range(3)]
    a = math.sin(th) / th if th > 0 else 1.0
    b = (1 - math.cos(th)) / (th * th) if th > 0 else 0.5
    E = [[(i == j) + a * K[i][j] + b * K2[i][j] for j in range(3)] for i in range(3)]
    return R0 @ torch.tensor(E, dtype=torch.float64)


def test_slerp_is_the_geodesic_computed_in_a_loop():
    gen = torch.Generator().manual_seed(1)
    R0, R1 = _random_rotations(8, gen), _random_rotations(8, gen)
    t = torch.rand(8, generator=gen, dtype=torch.float64)
    q = slerp_quaternions(matrix_to_quaternion(R0), matrix_to_quaternion(R1), t)
    got = quaternion_to_matrix(q)
    for i in range(8):
        expected = _geodesic_loop(R0[i], R1[i], float(t[i]))
        torch.testing.assert_close(got[i], expected, atol=1e-9, rtol=0)


def test_slerp_gradients_are_finite_and_match_finite_differences():
    gen = torch.Generator().manual_seed(2)
    q0 = matrix_to_quaternion(_random_rotations(3, gen)).requires_grad_(True)
    q1 = matrix_to_quaternion(_random_rotations(3, gen)).requires_grad_(True)
    t = torch.tensor([0.2, 0.5, 0.9], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(slerp_quaternions, (q0, q1, t))


# ----------------------------------------------------------------------------- interpolate
def _keyframes() -> FoVPerspectiveCameras:
    R, T = look_at_view_transform(
        dist=torch.tensor([2.0, 3.0, 2.5, 4.0]),
        elev=torch.tensor([0.0, 30.0, -10.0, 50.0]),
        azim=torch.tensor([0.0, 80.0, 200.0, 300.0]),
        at=((0.1, 0.0, -0.2),),
    )
    return FoVPerspectiveCameras(R=R, T=T, fov=torch.tensor([40.0, 50.0, 60.0, 45.0]), znear=0.1)


def test_interpolate_hits_the_keyframes_exactly():
    keys = _keyframes()
    for n_frames, key_index in ((10, [0, 3, 6, 9]), (12, [0, 4, 8, 11]), (4, [0, 1, 2, 3])):
        path = interpolate(keys, n_frames)
        assert len(path) == n_frames
        for k, i in enumerate(key_index):
            assert torch.equal(path.R[i], keys.R[k])
            assert torch.equal(path.T[i], keys.T[k])
            assert torch.equal(path.fov[i], keys.fov[k])


def test_interpolate_lerps_centres_and_slerps_rotations():
    keys = _keyframes()
    path = interpolate(keys, 10)  # 3 steps per segment
    C = keys.get_camera_center().double()
    for seg in range(3):
        for j in range(1, 3):
            i, t = 3 * seg + j, j / 3
            torch.testing.assert_close(
                path.get_camera_center()[i].double(), C[seg] + t * (C[seg + 1] - C[seg]),
                atol=1e-5, rtol=0)  # fmt: skip
            expected = _geodesic_loop(
                keys.R[seg].double().T, keys.R[seg + 1].double().T, t
            ).T  # world-to-view R = (camera-to-world)^T
            torch.testing.assert_close(path.R[i].double(), expected, atol=1e-6, rtol=0)
            torch.testing.assert_close(
                path.fov[i], keys.fov[seg] + t * (keys.fov[seg + 1] - keys.fov[seg])
            )
    # Constant angular speed within a segment.
    rel = [path.R[i].double().T @ path.R[i + 1].double() for i in range(3)]
    angles = [math.acos(min(1.0, (float(torch.trace(r)) - 1) / 2)) for r in rel]
    assert max(angles) - min(angles) < 1e-4


def test_interpolate_rejects_too_few_frames():
    with pytest.raises(ValueError, match="n_frames"):
        interpolate(_keyframes(), 3)
    with pytest.raises(ValueError, match="at least 2"):
        interpolate(_keyframes()[0], 5)


# ----------------------------------------------------------------------------- JSON
@pytest.mark.parametrize("image_size", [(120, 160), (160, 120)])
def test_camera_path_json_round_trip(tmp_path, image_size):
    cams = interpolate(_keyframes(), 9)
    f = save_camera_path(tmp_path / "path.json", cams, image_size, fps=24.0)
    back = load_camera_path(f)
    assert isinstance(back, CameraPath)
    assert back.image_size == image_size
    assert back.fps == 24.0 and back.seconds == pytest.approx(9 / 24)
    torch.testing.assert_close(back.cameras.R, cams.R, atol=1e-6, rtol=0)
    torch.testing.assert_close(back.cameras.T, cams.T, atol=1e-5, rtol=0)
    torch.testing.assert_close(back.cameras.fov, cams.fov, atol=1e-4, rtol=0)
    torch.testing.assert_close(back.cameras.znear, cams.znear)
    meta = json.loads(f.read_text())
    H, W = image_size
    # nerfstudio's fov is vertical: tan(fov_v / 2) = tan(fov / 2) * H / min(H, W).
    fov_v = math.radians(meta["camera_path"][0]["fov"])
    half = math.tan(math.radians(float(cams.fov[0])) / 2) * H / min(H, W)
    assert math.tan(fov_v / 2) == pytest.approx(half, rel=1e-6)
    assert meta["camera_path"][0]["aspect"] == pytest.approx(W / H)
    assert len(meta["camera_path"][0]["camera_to_world"]) == 16


def test_load_nerfstudio_camera_path(tmp_path):
    # An OpenGL camera at (0, 0, 3) with identity rotation looks along -Z at the origin.
    c2w = [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 0, 0, 0, 1]
    meta = {
        "keyframes": [],
        "camera_type": "perspective",
        "render_height": 480,
        "render_width": 640,
        "camera_path": [{"camera_to_world": c2w, "fov": 50, "aspect": 4 / 3}] * 3,
        "fps": 24,
        "seconds": 0.125,
        "smoothness_value": 0.5,
        "is_cycle": False,
    }
    (tmp_path / "p.json").write_text(json.dumps(meta))
    path = load_camera_path(tmp_path / "p.json", znear=0.5, zfar=5.0)
    assert path.image_size == (480, 640) and len(path.cameras) == 3
    torch.testing.assert_close(path.cameras.get_camera_center()[0], torch.tensor([0.0, 0.0, 3.0]))
    view = _view_of(path.cameras, (0.0, 0.0, 0.0))
    torch.testing.assert_close(view, torch.tensor([[0.0, 0.0, 3.0]] * 3))
    # World +X (OpenGL camera right) is on the right of the image: NDC x < 0 (+X is left).
    assert (_ndc_of(path.cameras, (0.5, 0.0, 0.0))[:, 0] < 0).all()
    assert float(path.cameras.fov[0]) == pytest.approx(50.0)  # landscape: vertical = shorter side
    assert float(path.cameras.znear[0]) == 0.5


def test_load_camera_path_reports_bad_content(tmp_path):
    f = tmp_path / "bad.json"
    f.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_camera_path(f)
    good = {"camera_to_world": [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 0, 0, 0, 1], "fov": 50}
    for change, match in (
        ({"render_height": 0}, "render_height"),
        ({"camera_path": []}, "camera_path"),
        ({"camera_path": [{**good, "fov": 190}]}, "fov"),
        ({"camera_path": [{**good, "camera_to_world": [2] + good["camera_to_world"][1:]}]},
         "rigid"),
        ({"camera_type": "fisheye"}, "camera_type"),
        ({"fps": -1}, "fps"),
    ):  # fmt: skip
        meta = {"render_height": 10, "render_width": 10, "camera_path": [good], **change}
        f.write_text(json.dumps(meta))
        with pytest.raises(ValueError, match=match):
            load_camera_path(f)


def test_saved_files_follow_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        f = save_camera_path(tmp_path / "p.json", orbit(3, 2.0, 0.0, LIKE), (8, 8))
    finally:
        os.umask(old)
    assert stat.S_IMODE(f.stat().st_mode) == 0o640
    assert not list(tmp_path.glob(".*tmp"))
