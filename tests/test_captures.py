"""Real captures: COLMAP / nerfstudio / LLFF exported from a rendered scene in an arbitrary
similarity-transformed world, loaded back, and checked against known 3D points."""

from __future__ import annotations

import json
import math
import shutil
import struct
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from PIL import Image

from nerf_lab.cameras import PerspectiveCameras, look_at_view_transform, so3_exp_map
from nerf_lab.data import (
    Scene,
    SceneValidationError,
    export_colmap,
    export_llff,
    export_nerfstudio,
    load_colmap,
    load_llff,
    load_nerfstudio,
)
from nerf_lab.data.bounds import view_depths
from nerf_lab.data.capture import (
    apply_similarity_to_extrinsics,
    camera_centers,
    depth_range_from_points,
    holdout_splits,
    nearest_point_to_lines,
    normalization_transform,
    opencv_w2c_to_p3d,
    p3d_to_opencv_w2c,
    rotation_between,
    transform_points_np,
)
from nerf_lab.data.colmap import qvec_to_rotmat, read_model, rotmat_to_qvec
from nerf_lab.data.llff import llff_to_p3d, p3d_to_llff
from nerf_lab.data.procedural import torus_mesh
from nerf_lab.data.render import render_mesh

cv2 = pytest.importorskip("cv2")

H, W = 24, 32
N_VIEWS = 10


@dataclass
class Capture:
    """A rendered torus: the reference cameras (torus frame) and the same capture expressed in
    an arbitrary similarity-transformed "capture" world."""

    ref_cameras: PerspectiveCameras  # torus frame
    scene: Scene  # capture frame (what is exported)
    verts: np.ndarray  # (m, 3) torus frame
    points: np.ndarray  # (m, 3) capture frame
    capture_from_torus: np.ndarray  # (4, 4)
    silhouettes: torch.Tensor


def _similarity() -> np.ndarray:
    Q = so3_exp_map(torch.tensor([[0.3, -0.8, 0.5]], dtype=torch.float64))[0].numpy()
    M = np.eye(4)
    M[:3, :3] = 3.7 * Q
    M[:3, 3] = [5.0, -2.0, 9.0]
    return M


def _make_capture(focal: torch.Tensor, pp: torch.Tensor) -> Capture:
    R, T = look_at_view_transform(
        dist=2.6,
        elev=torch.linspace(5, 40, N_VIEWS),
        azim=torch.linspace(-180, 144, N_VIEWS),
        at=((0.0, 0.0, 0.0),),
    )
    ref = PerspectiveCameras(focal, pp, R=R, T=T, in_ndc=False, image_size=((H, W),))
    mesh = torus_mesh(n_major=24, n_minor=12, texture_size=32)
    images, sils = render_mesh(mesh, ref, (H, W), light_location=None)
    M = _similarity()
    R2, T2 = apply_similarity_to_extrinsics(R.double().numpy(), T.double().numpy(), M)
    cap = PerspectiveCameras(
        focal,
        pp,
        R=torch.from_numpy(R2).float(),
        T=torch.from_numpy(T2).float(),
        in_ndc=False,
        image_size=((H, W),),
    )
    splits = {"train": torch.arange(8), "test": torch.arange(8, N_VIEWS)}
    verts = mesh.verts.double().numpy()
    scene = Scene("capture", cap, images, sils, splits)
    return Capture(ref, scene, verts, transform_points_np(M, verts), M, sils)


@pytest.fixture(scope="module")
def capture() -> Capture:
    """fx != fy (varying per view), off-centre principal points, non-square images."""
    focal = torch.stack([torch.linspace(29, 31, N_VIEWS), torch.full((N_VIEWS,), 26.5)], 1)
    pp = torch.tensor([[17.3, 11.1]]).expand(N_VIEWS, 2)
    return _make_capture(focal, pp)


@pytest.fixture(scope="module")
def centred_capture() -> Capture:
    """fx == fy and centred principal points (what LLFF and SIMPLE_* models can store)."""
    focal = torch.full((N_VIEWS, 2), 28.0)
    pp = torch.tensor([[W / 2, H / 2]]).expand(N_VIEWS, 2)
    return _make_capture(focal, pp)


def _no_masks(scene: Scene) -> Scene:
    return Scene(scene.name, scene.cameras, scene.images, None, scene.splits)


def _check_projections(cap: Capture, loaded: Scene, atol: float = 2e-3) -> np.ndarray:
    """Known 3D points land on the same pixels; returns the points in the loaded frame."""
    M = loaded.world_transform.numpy()
    pts_norm = transform_points_np(M, cap.points)
    ref = cap.ref_cameras.transform_points_screen(
        torch.from_numpy(cap.verts).float()[None].expand(N_VIEWS, -1, -1)
    )
    got = loaded.cameras.transform_points_screen(
        torch.from_numpy(pts_norm).float()[None].expand(N_VIEWS, -1, -1)
    )
    torch.testing.assert_close(got[..., :2], ref[..., :2], atol=atol, rtol=0)
    return pts_norm


def _check_normalised(loaded: Scene, pts_norm: np.ndarray, percentile: float = 1.0) -> None:
    M = loaded.world_transform.numpy()
    sq = M[:3, :3]
    s2 = (sq.T @ sq)[0, 0]
    np.testing.assert_allclose(sq.T @ sq, s2 * np.eye(3), atol=1e-9)  # a similarity
    assert np.linalg.det(sq) > 0
    lo = np.percentile(pts_norm, percentile, axis=0)
    hi = np.percentile(pts_norm, 100 - percentile, axis=0)
    np.testing.assert_allclose(lo + hi, 0.0, atol=1e-6)  # centred ROI box
    assert max(hi.max(), -lo.min()) == pytest.approx(1.0, abs=1e-6)  # fits [-1, 1]^3 exactly
    up = loaded.cameras.R[:, :, 1].double().mean(0)
    np.testing.assert_allclose((up / up.norm()).numpy(), [0.0, 1.0, 0.0], atol=1e-5)
    depths = view_depths(loaded.cameras.R, loaded.cameras.T, torch.from_numpy(pts_norm).float())
    assert loaded.near <= float(depths.min()) and float(depths.max()) <= loaded.far
    assert loaded.far < 1.3 * float(depths.max())  # and not absurdly loose


# -- pure helpers -------------------------------------------------------------------------------


def test_pose_conversions_round_trip_and_match_hand_derivations():
    R = so3_exp_map(torch.randn(6, 3, dtype=torch.float64)).numpy()
    T = np.random.default_rng(0).normal(size=(6, 3))
    for r, t in zip(R, T, strict=True):
        r_cv, t_cv = p3d_to_opencv_w2c(r, t)
        back = opencv_w2c_to_p3d(r_cv, t_cv)
        np.testing.assert_allclose(back[0], r, atol=1e-12)
        np.testing.assert_allclose(back[1], t, atol=1e-12)
        x = np.array([0.3, -1.2, 2.0])
        x_cv = r_cv @ x + t_cv  # OpenCV: +X right, +Y down
        x_p3d = x @ r + t  # PyTorch3D: +X left, +Y up
        np.testing.assert_allclose(x_p3d, [-x_cv[0], -x_cv[1], x_cv[2]], atol=1e-12)
        q = rotmat_to_qvec(r_cv)
        assert q[0] >= 0 and np.linalg.norm(q) == pytest.approx(1.0)
        np.testing.assert_allclose(qvec_to_rotmat(q), r_cv, atol=1e-12)
        llff = p3d_to_llff(r, t)  # columns: down, right, backwards, centre
        np.testing.assert_allclose(llff[:, 1], -r[:, 0], atol=1e-12)  # right = -left
        np.testing.assert_allclose(llff[:, 3], camera_centers(r[None], t[None])[0], atol=1e-12)
        back = llff_to_p3d(llff)
        np.testing.assert_allclose(back[0], r, atol=1e-12)
        np.testing.assert_allclose(back[1], t, atol=1e-12)
    # A 90 degree turn about z: COLMAP's quaternion (cos 45, 0, 0, sin 45).
    q = rotmat_to_qvec(np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]))
    np.testing.assert_allclose(q, [math.sqrt(0.5), 0, 0, math.sqrt(0.5)], atol=1e-12)


def test_similarity_on_extrinsics_keeps_pixels_and_scales_depths():
    R = so3_exp_map(torch.randn(2, 3, dtype=torch.float64)).numpy()
    T = np.array([[0.1, -0.2, 2.0], [0.3, 0.0, 3.0]])
    M = _similarity()
    R2, T2 = apply_similarity_to_extrinsics(R, T, M)
    x = np.random.default_rng(1).normal(size=(5, 3))
    for i in range(2):  # a plain loop over cameras and points
        for p in x:
            v1 = p @ R[i] + T[i]
            v2 = transform_points_np(M, p[None])[0] @ R2[i] + T2[i]
            np.testing.assert_allclose(v2, 3.7 * v1, atol=1e-10)
    np.testing.assert_allclose(
        camera_centers(R2, T2), transform_points_np(M, camera_centers(R, T)), atol=1e-10
    )


def test_rotation_between_and_nearest_point_to_lines_analytic():
    rng = np.random.default_rng(2)
    for a, b in [(rng.normal(size=3), rng.normal(size=3)), ([0, 0, 1.0], [0, 0, -1.0])]:
        a, b = np.asarray(a) / np.linalg.norm(a), np.asarray(b) / np.linalg.norm(b)
        Q = rotation_between(a, b)
        np.testing.assert_allclose(Q @ a, b, atol=1e-12)
        np.testing.assert_allclose(Q.T @ Q, np.eye(3), atol=1e-12)
        assert np.linalg.det(Q) == pytest.approx(1.0)
    target = np.array([0.5, -1.0, 2.0])
    origins = rng.normal(size=(6, 3)) * 3
    p, cond = nearest_point_to_lines(origins, target - origins)
    np.testing.assert_allclose(p, target, atol=1e-9)
    assert cond > 0.05
    _, cond = nearest_point_to_lines(origins, np.tile([[0.0, 0.0, 1.0]], (6, 1)))
    assert cond < 1e-9  # parallel axes


def test_holdout_splits_every_eighth_by_name():
    names = [f"img_{k:02d}.jpg" for k in (5, 0, 3, 17, 8, 1, 2, 4, 6, 7, 9, 10)]
    splits = holdout_splits(names, 8)
    order = sorted(range(len(names)), key=lambda i: names[i])
    assert splits["test"] == sorted(order[k] for k in range(len(order)) if k % 8 == 0)
    assert sorted(splits["train"] + splits["test"]) == list(range(len(names)))
    assert [names[i] for i in splits["test"]] == ["img_00.jpg", "img_08.jpg"]
    with pytest.raises(ValueError, match="holdout_every"):
        holdout_splits(names, 1)


def test_depth_range_from_points_matches_a_loop():
    R, T = look_at_view_transform(dist=[2.0, 3.5, 2.5], elev=[0, 30, -20], azim=[0, 120, 240])
    R, T = R.double().numpy(), T.double().numpy()
    pts = np.random.default_rng(3).uniform(-0.8, 0.8, size=(200, 3))
    visible = [np.arange(0, 200, 2), None, np.arange(50)]
    near, far = depth_range_from_points(R, T, pts, visible, None, percentile=5.0, margin=0.1)
    nears, fars = [], []
    for i in range(3):
        idx = visible[i] if visible[i] is not None else range(200)
        z = sorted(float(pts[k] @ R[i][:, 2] + T[i][2]) for k in idx)
        nears.append(np.percentile(z, 5.0) * 0.9)
        fars.append(np.percentile(z, 95.0) * 1.1)
    assert (near, far) == pytest.approx((min(nears), max(fars)))
    with pytest.raises(ValueError, match="No camera sees"):
        depth_range_from_points(R, T, pts + [0, 0, 100.0], None, lambda i, v: v[:, 2] < 0)


def test_distortion_model_matches_opencv():
    from nerf_lab.data.distortion import distort_normalized, opencv_camera_matrix, undistort_maps

    coeffs = (-0.12, 0.03, 0.002, -0.004, 0.01)
    xy = np.random.default_rng(4).uniform(-0.6, 0.6, size=(50, 2))
    pts3 = np.concatenate([xy, np.ones((50, 1))], 1)
    K = opencv_camera_matrix(30.0, 27.0, 17.3, 11.1)
    proj, _ = cv2.projectPoints(pts3, np.zeros(3), np.zeros(3), K, np.array(coeffs))
    mine = distort_normalized(xy, coeffs) * [30.0, 27.0] + [16.8, 10.6]
    np.testing.assert_allclose(mine, proj[:, 0], atol=1e-9)
    map_x, map_y = undistort_maps(H, W, (30.0, 27.0, 17.3, 11.1), coeffs)
    ref_x, ref_y = cv2.initUndistortRectifyMap(K, np.array(coeffs), None, K, (W, H), cv2.CV_32FC1)
    np.testing.assert_allclose(map_x, ref_x, atol=1e-3)
    np.testing.assert_allclose(map_y, ref_y, atol=1e-3)


def test_normalization_switches(capture):
    R = capture.scene.cameras.R.double().numpy()
    T = capture.scene.cameras.T.double().numpy()
    half_fov = np.full(len(R), 0.4)
    off = normalization_transform(R, T, half_fov, capture.points, False, False, False)
    np.testing.assert_array_equal(off.world_transform, np.eye(4))
    only_up = normalization_transform(R, T, half_fov, capture.points, True, False, False)
    Q = only_up.world_transform[:3, :3]
    np.testing.assert_allclose(Q.T @ Q, np.eye(3), atol=1e-12)
    np.testing.assert_array_equal(only_up.world_transform[:3, 3], 0.0)
    up = (Q @ R[:, :, 1].T).mean(1)
    np.testing.assert_allclose(up / np.linalg.norm(up), [0, 1, 0], atol=1e-12)
    no_scale = normalization_transform(R, T, half_fov, capture.points, True, True, False)
    assert no_scale.scale == 1.0
    np.testing.assert_allclose(no_scale.world_transform[:3, :3], Q, atol=1e-12)
    no_center = normalization_transform(R, T, half_fov, capture.points, True, False, True)
    np.testing.assert_array_equal(no_center.world_transform[:3, 3], 0.0)
    pts = transform_points_np(no_center.world_transform, capture.points)
    lo, hi = np.percentile(pts, 1.0, axis=0), np.percentile(pts, 99.0, axis=0)
    assert max(np.abs(lo).max(), np.abs(hi).max()) == pytest.approx(1.0)  # fits, not centred
    # From cameras only: the orbit's look-at point (the torus centre) becomes the origin.
    cams = normalization_transform(R, T, half_fov, None)
    assert cams.roi_source == "cameras"
    look_at = capture.capture_from_torus[:3, 3][None]  # the torus frame's origin
    np.testing.assert_allclose(transform_points_np(cams.world_transform, look_at)[0], 0, atol=1e-5)
    # ROI half-size: median camera distance times tan(half fov), scaled to 1.
    dist = 2.6 * 3.7
    assert cams.scale == pytest.approx(1.0 / (dist * math.tan(0.4)), rel=1e-6)


# -- COLMAP -------------------------------------------------------------------------------------


@pytest.mark.parametrize("binary", [False, True])
def test_colmap_round_trip(tmp_path, capture, binary):
    export_colmap(capture.scene, tmp_path / "c", points=capture.points, binary=binary)
    ext = ".bin" if binary else ".txt"
    assert (tmp_path / "c" / "sparse" / "0" / f"points3D{ext}").is_file()
    loaded = load_colmap(tmp_path / "c")
    assert isinstance(loaded.cameras, PerspectiveCameras) and not loaded.cameras.in_ndc()
    assert loaded.image_size == (H, W) and loaded.silhouettes is None
    assert loaded.splits["test"].tolist() == [0, 8]  # frame_00000, frame_00008
    assert loaded.splits["train"].tolist() == [1, 2, 3, 4, 5, 6, 7, 9]
    torch.testing.assert_close(loaded.images, capture.scene.images, atol=0.5 / 255 + 1e-6, rtol=0)
    pts = _check_projections(capture, loaded)
    _check_normalised(loaded, pts)
    # The points' tracks made it into the model: every image observes some points.
    _, images, points = read_model(tmp_path / "c" / "sparse" / "0", [])
    assert len(points.ids) == len(capture.points)
    assert all(len(im.point3d_ids) > 20 for im in images.values())


def test_colmap_binary_and_text_give_the_same_scene(tmp_path, capture):
    export_colmap(capture.scene, tmp_path / "t", points=capture.points)
    export_colmap(capture.scene, tmp_path / "b", points=capture.points, binary=True)
    a, b = load_colmap(tmp_path / "t"), load_colmap(tmp_path / "b")
    assert torch.equal(a.images, b.images)
    torch.testing.assert_close(a.world_transform, b.world_transform, atol=1e-12, rtol=0)
    for f in ("R", "T", "focal_length", "principal_point"):
        torch.testing.assert_close(getattr(a.cameras, f), getattr(b.cameras, f))
    assert (a.near, a.far) == pytest.approx((b.near, b.far))


@pytest.mark.parametrize(
    ("model", "distortion"),
    [
        ("SIMPLE_PINHOLE", ()),
        ("SIMPLE_RADIAL", (-0.35,)),
        ("RADIAL", (-0.35, 0.08)),
        ("OPENCV", (-0.35, 0.08, 0.01, -0.008)),
    ],
)
def test_colmap_camera_models_and_undistortion(tmp_path, centred_capture, model, distortion):
    cap = centred_capture
    # A smooth pattern (the torus texture is too fine to survive two resamplings at 24x32).
    v, u = torch.meshgrid(torch.arange(H) + 0.5, torch.arange(W) + 0.5, indexing="ij")
    phase = torch.arange(N_VIEWS, dtype=torch.float32)[:, None, None]
    pattern = 0.5 + 0.5 * torch.sin(u / 2.5 + phase) * torch.cos(v / 2.0)
    scene = Scene("p", cap.scene.cameras, pattern[..., None].expand(-1, -1, -1, 3).contiguous(),
                  None, cap.scene.splits)  # fmt: skip
    export_colmap(scene, tmp_path / "c", cap.points, camera_model=model, distortion=distortion)
    line = (tmp_path / "c" / "sparse" / "0" / "cameras.txt").read_text().splitlines()[1]
    assert line.split()[1] == model
    stored = np.asarray(Image.open(tmp_path / "c" / "images" / "frame_00003.png"), np.float32)
    loaded = load_colmap(tmp_path / "c")
    _check_projections(cap, loaded)
    inner = (slice(None), slice(4, -4), slice(4, -4))
    err = float((loaded.images - scene.images).abs()[inner].mean())
    stored_err = float(np.abs(stored / 255.0 - scene.images[3].numpy())[4:-4, 4:-4].mean())
    if distortion:  # the stored images are distorted; loading removes the distortion
        assert stored_err > 0.02
        assert err < 0.5 * stored_err
    else:
        assert err < 2e-3


def test_colmap_downscale_from_folder_and_on_the_fly(tmp_path, capture):
    export_colmap(capture.scene, tmp_path / "c", points=capture.points)
    full = load_colmap(tmp_path / "c")
    half = load_colmap(tmp_path / "c", downscale=2)
    assert half.image_size == (H // 2, W // 2)
    torch.testing.assert_close(half.cameras.focal_length, full.cameras.focal_length / 2)
    torch.testing.assert_close(half.cameras.principal_point, full.cameras.principal_point / 2)
    pts = torch.from_numpy(transform_points_np(half.world_transform.numpy(), capture.points))
    a = full.cameras.transform_points_screen(pts.float()[None].expand(N_VIEWS, -1, -1))
    b = half.cameras.transform_points_screen(pts.float()[None].expand(N_VIEWS, -1, -1))
    torch.testing.assert_close(b[..., :2], a[..., :2] / 2, atol=1e-3, rtol=0)
    # A pre-downscaled images_2/ (here: a constant image) is used instead of resizing.
    (tmp_path / "c" / "images_2").mkdir()
    for f in (tmp_path / "c" / "images").iterdir():
        Image.new("RGB", (W // 2, H // 2), (255, 0, 0)).save(tmp_path / "c" / "images_2" / f.name)
    red = load_colmap(tmp_path / "c", downscale=2)
    assert torch.allclose(red.images[..., 0], torch.ones(1)) and red.images[..., 1].max() == 0


def test_colmap_bad_data_lists_every_problem(tmp_path, capture):
    root = tmp_path / "c"
    export_colmap(capture.scene, root)  # no points3D
    sparse = root / "sparse" / "0"
    cams = sparse / "cameras.txt"
    cams.write_text(cams.read_text() + "99 FULL_OPENCV 32 24 1 1 1 1 0 0 0 0 0 0 0 0\n")
    lines = (sparse / "images.txt").read_text().splitlines()
    tok = lines[3].split()  # image 2's header line (after the comment and image 1's 2 lines)
    tok[1:5] = ["0.5", "0.5", "0.5", "0.1"]  # not a unit quaternion
    lines[3] = " ".join(tok)
    (sparse / "images.txt").write_text("\n".join(lines) + "\n")
    (root / "images" / "frame_00004.png").unlink()
    Image.new("RGB", (20, 20)).save(root / "images" / "frame_00005.png")
    with pytest.raises(SceneValidationError) as info:
        load_colmap(root, roi_from="points")
    text = str(info.value)
    for needle in (
        "unsupported camera model FULL_OPENCV",
        "frame_00001.png): quaternion",
        "frame_00004.png does not exist",
        "frame_00005.png is 20x20, but its intrinsics are for 32x24",
        "roi_from='points' but the capture has no sparse points",
    ):
        assert needle in text, text
    assert len(info.value.problems) == 5
    with pytest.raises(SceneValidationError, match="no sparse model"):
        load_colmap(tmp_path)
    with pytest.raises(ValueError, match="roi_from"):
        load_colmap(root, roi_from="sky")


def test_colmap_truncated_binary_is_reported(tmp_path, capture):
    export_colmap(capture.scene, tmp_path / "c", points=capture.points, binary=True)
    f = tmp_path / "c" / "sparse" / "0" / "images.bin"
    f.write_bytes(f.read_bytes()[:-7])
    with pytest.raises(SceneValidationError, match="images.bin: cannot parse"):
        load_colmap(tmp_path / "c")
    f.write_bytes(struct.pack("<Q", 0))
    with pytest.raises(SceneValidationError, match="no registered images"):
        load_colmap(tmp_path / "c")


# -- nerfstudio ---------------------------------------------------------------------------------


def test_nerfstudio_round_trip_with_masks_distortion_and_split_lists(tmp_path, capture):
    dist = (-0.12, 0.03, 0.003, -0.002)
    export_nerfstudio(capture.scene, tmp_path / "n", points=capture.points, distortion=dist)
    meta = json.loads((tmp_path / "n" / "transforms.json").read_text())
    assert meta["camera_model"] == "OPENCV" and "fl_x" in meta["frames"][0]  # per frame
    loaded = load_nerfstudio(tmp_path / "n")
    pts = _check_projections(capture, loaded)
    _check_normalised(loaded, pts)
    assert loaded.splits["train"].tolist() == list(range(8))
    assert loaded.splits["test"].tolist() == [8, 9]
    assert loaded.silhouettes is not None
    assert (loaded.silhouettes != capture.silhouettes).float().mean() < 0.03
    err = (loaded.images - capture.scene.images).abs()[:, 4:-4, 4:-4].mean()
    assert err < 0.02


def test_nerfstudio_instant_ngp_style_and_holdout(tmp_path, centred_capture):
    cap = centred_capture
    export_nerfstudio(_no_masks(cap.scene), tmp_path / "n", write_splits=False)
    meta = json.loads((tmp_path / "n" / "transforms.json").read_text())
    for key in ("camera_model", "fl_x", "fl_y", "cx", "cy"):
        meta.pop(key)
    meta["camera_angle_x"] = 2 * math.atan(W / 2 / 28.0)  # instant-ngp: only the angle
    (tmp_path / "n" / "transforms.json").write_text(json.dumps(meta))
    loaded = load_nerfstudio(tmp_path / "n" / "transforms.json", roi_from="cameras")
    torch.testing.assert_close(loaded.cameras.focal_length, torch.full((N_VIEWS, 2), 28.0))
    assert loaded.splits["test"].tolist() == [0, 8] and loaded.silhouettes is None
    _check_projections(cap, loaded)


def test_nerfstudio_rgba_background(tmp_path, centred_capture):
    export_nerfstudio(_no_masks(centred_capture.scene), tmp_path / "n")
    first = tmp_path / "n" / "images" / "frame_00000.png"
    rgb = np.asarray(Image.open(first))
    alpha = np.zeros(rgb.shape[:2], np.uint8)
    alpha[:, W // 2 :] = 255
    Image.fromarray(np.dstack([rgb, alpha])).save(first)
    loaded = load_nerfstudio(tmp_path / "n", background="white")
    assert loaded.background_color == (1.0, 1.0, 1.0)
    assert torch.equal(loaded.images[0, :, : W // 2], torch.ones(H, W // 2, 3))


def test_nerfstudio_bad_data_lists_every_problem(tmp_path, capture):
    export_nerfstudio(capture.scene, tmp_path / "n")
    jpath = tmp_path / "n" / "transforms.json"
    meta = json.loads(jpath.read_text())
    meta["frames"][1]["transform_matrix"][0][0] = 2.0  # not rigid
    meta["frames"][2]["camera_model"] = "EQUIRECTANGULAR"
    meta["frames"][3]["file_path"] = "images/nope.png"
    meta["frames"][4]["w"] = 40  # disagrees with the image
    meta["test_filenames"].append("images/ghost.png")
    meta["frames"][5]["mask_path"] = "masks/none.png"
    jpath.write_text(json.dumps(meta))
    with pytest.raises(SceneValidationError) as info:
        load_nerfstudio(tmp_path / "n")
    text = str(info.value)
    for needle in (
        "not a rigid transform",
        "unsupported camera_model 'EQUIRECTANGULAR'",
        "nope.png does not exist",
        "is 32x24, but its intrinsics are for 40x24",
        "'images/ghost.png' is not a frame's file_path",
        "none.png does not exist",
    ):
        assert needle in text, text
    jpath.write_text("{not json")
    with pytest.raises(SceneValidationError, match="cannot parse JSON"):
        load_nerfstudio(tmp_path / "n")


# -- LLFF ---------------------------------------------------------------------------------------


def test_llff_round_trip_bounds_and_splits(tmp_path, centred_capture):
    cap = centred_capture
    export_llff(_no_masks(cap.scene), tmp_path / "l", points=cap.points)
    arr = np.load(tmp_path / "l" / "poses_bounds.npy")
    assert arr.shape == (N_VIEWS, 17)
    np.testing.assert_allclose(arr[:, 4], H)
    np.testing.assert_allclose(arr[:, 9], W)
    np.testing.assert_allclose(arr[:, 14], 28.0, rtol=1e-6)
    loaded = load_llff(tmp_path / "l")
    pts = _check_projections(cap, loaded)
    assert loaded.splits["test"].tolist() == [0, 8]
    s = float(np.cbrt(np.linalg.det(loaded.world_transform[:3, :3].numpy())))
    assert loaded.near == pytest.approx(arr[:, 15].min() * s)
    assert loaded.far == pytest.approx(arr[:, 16].max() * s)
    depths = view_depths(loaded.cameras.R, loaded.cameras.T, torch.from_numpy(pts).float())
    # LLFF bounds are the 0.1 / 99.9 percentiles of each view's visible point depths.
    assert (
        loaded.near <= float(depths.quantile(0.01)) and float(depths.quantile(0.99)) <= loaded.far
    )
    assert np.abs(pts).max() < 1.0  # the torus lies inside the normalised frusta box
    up = loaded.cameras.R[:, :, 1].double().mean(0)
    np.testing.assert_allclose((up / up.norm()).numpy(), [0.0, 1.0, 0.0], atol=1e-5)


def test_llff_needs_centred_equal_focal_and_reports_problems(tmp_path, capture, centred_capture):
    with pytest.raises(ValueError, match="fx == fy"):
        export_llff(_no_masks(capture.scene), tmp_path / "x", points=capture.points)
    root = tmp_path / "l"
    export_llff(_no_masks(centred_capture.scene), root, points=centred_capture.points)
    arr = np.load(root / "poses_bounds.npy")
    arr[2, :3] *= 2.0  # a scaled rotation row
    arr[3, 15:] = [5.0, 1.0]  # near > far
    np.save(root / "poses_bounds.npy", arr)
    with pytest.raises(SceneValidationError) as info:
        load_llff(root)
    assert len(info.value.problems) == 2
    assert "pose 2" in str(info.value) and "near=5.0, far=1.0" in str(info.value)
    (root / "images" / "image_00000.png").unlink()
    with pytest.raises(SceneValidationError, match="9 images but poses_bounds.npy has 10"):
        load_llff(root)
    np.save(root / "poses_bounds.npy", arr[:, :15])
    with pytest.raises(SceneValidationError, match=r"expected \(N, 17\)"):
        load_llff(root)


def test_capture_scene_cache_round_trip_keeps_world_transform(tmp_path, capture):
    from nerf_lab.data.cache import load_scene, save_scene

    export_colmap(capture.scene, tmp_path / "c", points=capture.points)
    loaded = load_colmap(tmp_path / "c")
    save_scene(loaded, tmp_path / "s.pt")
    back = load_scene(tmp_path / "s.pt")
    assert torch.equal(back.world_transform, loaded.world_transform)
    assert isinstance(back.cameras, PerspectiveCameras) and not back.cameras.in_ndc()
    torch.testing.assert_close(back.cameras.image_size, loaded.cameras.image_size)
    shutil.rmtree(tmp_path / "c")


def test_blender_export_of_perspective_cameras(tmp_path, capture, centred_capture):
    from nerf_lab.data import export_blender, load_blender

    scene = centred_capture.scene
    export_blender(scene, tmp_path / "b")
    loaded = load_blender(tmp_path / "b")
    pts = torch.from_numpy(centred_capture.points).float()[None].expand(N_VIEWS, -1, -1)
    a = scene.cameras.transform_points_screen(pts)
    b = loaded.cameras.transform_points_screen(pts, image_size=(H, W))
    torch.testing.assert_close(b[..., :2], a[..., :2], atol=2e-3, rtol=0)
    assert torch.equal(loaded.silhouettes, centred_capture.silhouettes)
    with pytest.raises(ValueError, match="fx == fy"):
        export_blender(capture.scene, tmp_path / "x")


@pytest.mark.parametrize("fmt", ["colmap", "nerfstudio", "llff"])
def test_hydra_options_build_the_scene(tmp_path, centred_capture, fmt):
    from pathlib import Path

    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    exporter = {"colmap": export_colmap, "nerfstudio": export_nerfstudio, "llff": export_llff}
    cap = centred_capture
    exporter[fmt](_no_masks(cap.scene), tmp_path / fmt, points=cap.points)
    yaml_path = Path(__file__).resolve().parents[1] / "conf" / "data" / f"{fmt}.yaml"
    for line in yaml_path.read_text().splitlines():  # one comment per key, no schema
        if line and not line.startswith("#"):
            assert "#" in line, line
    assert "defaults" not in yaml_path.read_text()
    cfg = OmegaConf.load(yaml_path)
    cfg.path = str(tmp_path / fmt)
    cfg.downscale = 2
    cfg.background = [1.0, 1.0, 1.0]
    scene = instantiate(cfg)
    assert scene.image_size == (H // 2, W // 2) and scene.background_color == (1.0, 1.0, 1.0)
    got = scene.cameras.transform_points_screen(
        torch.from_numpy(transform_points_np(scene.world_transform.numpy(), cap.points))
        .float()[None]
        .expand(N_VIEWS, -1, -1)
    )
    ref = cap.ref_cameras.transform_points_screen(
        torch.from_numpy(cap.verts).float()[None].expand(N_VIEWS, -1, -1)
    )
    torch.testing.assert_close(got[..., :2], ref[..., :2] / 2, atol=2e-3, rtol=0)
    from hydra.errors import InstantiationException

    with pytest.raises(InstantiationException, match="downscale must be a positive integer; got 0"):
        instantiate(cfg, downscale=0)
