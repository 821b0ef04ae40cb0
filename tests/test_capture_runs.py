"""Runs trained on real-capture formats: renders along camera paths and exports of runs whose
cameras are ``PerspectiveCameras`` (off-centre principal point, fx != fy, a capture in an
arbitrary similarity-transformed world), and the camera-path helpers for that camera kind.
"""

from __future__ import annotations

import json
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from nerf_lab import camera_paths as cp
from nerf_lab.cameras import (
    FoVPerspectiveCameras,
    PerspectiveCameras,
    look_at_view_transform,
    so3_exp_map,
)
from nerf_lab.data import Scene, export_nerfstudio
from nerf_lab.data.capture import apply_similarity_to_extrinsics, transform_points_np
from nerf_lab.data.procedural import torus_mesh
from nerf_lab.data.render import render_mesh
from nerf_lab.export_utils import depth_to_pointcloud
from nerf_lab.raysamplers import NDCMultinomialRaysampler
from tests.conftest import TINY_RUN, compose_cfg, group_options

H, W = 24, 32
N_VIEWS = 10


def capture_from_torus() -> np.ndarray:
    """An arbitrary similarity (rotation, scale 3.7, translation): torus -> capture frame."""
    Q = so3_exp_map(torch.tensor([[0.3, -0.8, 0.5]], dtype=torch.float64))[0].numpy()
    M = np.eye(4)
    M[:3, :3] = 3.7 * Q
    M[:3, 3] = [5.0, -2.0, 9.0]
    return M


def perspective_capture(n_views: int = N_VIEWS) -> tuple[Scene, np.ndarray]:
    """The torus seen by cameras with fx != fy and an off-centre principal point, expressed in
    the capture frame; and the capture-frame torus vertices."""
    R, T = look_at_view_transform(
        dist=2.6, elev=torch.linspace(5, 40, n_views), azim=torch.linspace(-180, 144, n_views)
    )
    focal = torch.tensor([[30.0, 26.5]]).expand(n_views, 2)
    pp = torch.tensor([[17.3, 11.1]]).expand(n_views, 2)
    ref = PerspectiveCameras(focal, pp, R=R, T=T, in_ndc=False, image_size=((H, W),))
    mesh = torus_mesh(n_major=24, n_minor=12, texture_size=32)
    images, _ = render_mesh(mesh, ref, (H, W), light_location=None)
    M = capture_from_torus()
    R2, T2 = apply_similarity_to_extrinsics(R.double().numpy(), T.double().numpy(), M)
    cams = ref._replace(R=torch.from_numpy(R2).float(), T=torch.from_numpy(T2).float())
    test = torch.arange(0, n_views, 5)
    train = torch.tensor([i for i in range(n_views) if i % 5])
    scene = Scene("capture", cams, images, None, {"train": train, "test": test})
    return scene, transform_points_np(M, mesh.verts.double().numpy())


@pytest.fixture(scope="module")
def capture(tmp_path_factory) -> tuple[Path, Scene]:
    scene, points = perspective_capture()
    return export_nerfstudio(scene, tmp_path_factory.mktemp("ns") / "cap", points=points), scene


@pytest.fixture(scope="module")
def capture_run(capture, tmp_path_factory):
    """A tiny run (6 iterations) on the nerfstudio capture, default data settings."""
    from nerf_lab.train import run

    path, _ = capture
    run_dir = tmp_path_factory.mktemp("run")
    overrides = [
        *[o for o in TINY_RUN if not o.startswith("data")],
        "data=nerfstudio", f"data.path={path}", "model=small", "model.n_hidden_neurons=16",
        "model.n_harmonic_functions=4", "trainer.n_iter=6", "trainer.eval_every=0",
        "trainer.render_every=0", "trainer.checkpoint_every=0",
    ]  # fmt: skip
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NERF_LAB_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        torch.manual_seed(0)
        run(compose_cfg(overrides), run_dir)
        yield run_dir


# -- camera paths of PerspectiveCameras ------------------------------------------------------
def _like() -> PerspectiveCameras:
    return PerspectiveCameras(((30.0, 26.5),), ((17.3, 11.1),), in_ndc=False, image_size=((H, W),))


def test_orbit_and_spiral_keep_the_kind_and_intrinsics_of_like_cameras():
    like = _like()
    for cams in (cp.orbit(5, 2.5, 20.0, like), cp.spiral(6, 2.5, like)):
        assert isinstance(cams, PerspectiveCameras) and not cams.in_ndc()
        torch.testing.assert_close(cams.focal_length, like.focal_length.expand(len(cams), 2))
        torch.testing.assert_close(cams.principal_point, like.principal_point.expand(len(cams), 2))
        # the centre looked at projects onto the principal point (not the image centre)
        px = cams.transform_points_screen(torch.zeros(len(cams), 1, 3))[:, 0, :2]
        torch.testing.assert_close(px, torch.tensor([[17.3, 11.1]]).expand_as(px), atol=1e-3,
                                   rtol=0)  # fmt: skip
    fov = cp.orbit(4, 2.5, 0.0, FoVPerspectiveCameras(fov=40.0, znear=0.3))
    assert isinstance(fov, FoVPerspectiveCameras) and float(fov.znear[0]) == pytest.approx(0.3)
    with pytest.raises(ValueError, match="like_cameras"):
        cp.orbit(3, 2.0, 0.0, "not cameras")


def test_interpolate_perspective_keyframes_exactly_and_lerps_intrinsics():
    R, T = look_at_view_transform(dist=3.0, elev=[0.0, 30.0, 10.0], azim=[0.0, 60.0, 120.0])
    keys = PerspectiveCameras(
        torch.tensor([[30.0, 26.0], [40.0, 36.0], [30.0, 30.0]]),
        torch.tensor([[16.0, 12.0], [18.0, 10.0], [16.0, 12.0]]),
        R=R, T=T, in_ndc=False, image_size=((H, W),),
    )  # fmt: skip
    path = cp.interpolate(keys, 5)  # keyframes are frames 0, 2 and 4
    assert isinstance(path, PerspectiveCameras)
    for f, k in ((0, 0), (2, 1), (4, 2)):
        torch.testing.assert_close(path.R[f], keys.R[k])
        torch.testing.assert_close(path.focal_length[f], keys.focal_length[k])
    torch.testing.assert_close(path.focal_length[1], torch.tensor([35.0, 31.0]))
    torch.testing.assert_close(path.principal_point[1], torch.tensor([17.0, 11.0]))
    assert path.image_size.tolist() == [[H, W]] * 5
    other = keys._replace(image_size=torch.tensor([[H, W], [H, W], [12, 16]]))
    with pytest.raises(ValueError, match="image_size"):
        cp.interpolate(other, 5)


def test_resize_cameras_scales_pixels_and_keeps_what_pixels_see():
    like = _like()
    R, T = look_at_view_transform(dist=3.0, elev=20.0, azim=30.0)
    cams = like._replace(R=R, T=T)
    pts = torch.randn(1, 50, 3) * 0.5
    small = cp.resize_cameras(cams, (12, 16))
    torch.testing.assert_close(small.focal_length, torch.tensor([[15.0, 13.25]]))
    before = cams.transform_points_screen(pts)[..., :2]
    after = small.transform_points_screen(pts)[..., :2]
    torch.testing.assert_close(after, before / 2.0, atol=1e-4, rtol=0)
    fov = FoVPerspectiveCameras(fov=40.0)
    assert cp.resize_cameras(fov, (5, 7)) is fov
    # FoV cameras as screen-space perspective cameras: the same projections
    conv = cp.to_camera_kind(fov._replace(R=R, T=T), like, (12, 16))
    assert isinstance(conv, PerspectiveCameras) and conv.image_size.tolist() == [[12, 16]]
    torch.testing.assert_close(conv.transform_points_ndc(pts)[..., :2],
                               fov._replace(R=R, T=T).transform_points_ndc(pts)[..., :2],
                               atol=1e-4, rtol=0)  # fmt: skip
    with pytest.raises(ValueError, match="image_size"):
        cp.resize_cameras(cams, (0, 3))


def test_camera_path_json_round_trip_of_perspective_cameras(tmp_path):
    cams = cp.spiral(4, 2.5, _like())
    path = cp.save_camera_path(tmp_path / "p.json", cams, (H, W), fps=10)
    frame = json.loads(path.read_text())["camera_path"][0]
    assert frame["fl_x"] == pytest.approx(30.0) and frame["cy"] == pytest.approx(11.1)
    assert frame["fov"] == pytest.approx(np.degrees(2 * np.arctan(H / 2 / 26.5)), abs=1e-4)
    loaded = cp.load_camera_path(path)
    assert isinstance(loaded.cameras, PerspectiveCameras) and loaded.image_size == (H, W)
    pts = torch.randn(1, 20, 3) * 0.5
    torch.testing.assert_close(loaded.cameras.transform_points_screen(pts),
                               cams.transform_points_screen(pts), atol=1e-3, rtol=0)  # fmt: skip
    meta = json.loads(path.read_text())
    del meta["camera_path"][1]["fl_x"]
    (tmp_path / "bad.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="fl_x"):
        cp.load_camera_path(tmp_path / "bad.json")


def test_depth_to_pointcloud_of_screen_space_cameras_is_on_the_rays():
    """Every point of a depth map lies on its pixel's ray, at its depth (any camera kind)."""
    R, T = look_at_view_transform(dist=3.0, elev=20.0, azim=30.0)
    for cam in (_like()._replace(R=R, T=T), FoVPerspectiveCameras(fov=50.0, R=R, T=T)):
        h, w = (H, W) if isinstance(cam, PerspectiveCameras) else (H, H)
        depth = 2.0 + torch.rand(h, w)
        pts, _ = depth_to_pointcloud(depth, None, cam)
        rays = NDCMultinomialRaysampler(
            image_width=w, image_height=h, n_pts_per_ray=1, min_depth=1.0, max_depth=2.0
        )(cam)
        expect = rays.origins + depth[None, ..., None] * rays.directions
        torch.testing.assert_close(pts, expect.reshape(-1, 3), atol=1e-4, rtol=0)


# -- a run on a capture: renders and exports -------------------------------------------------
def test_render_paths_of_a_capture_run(capture_run):
    from nerf_lab import render as nl_render

    for argv in (["path=orbit", "frames=3"], ["path=spiral", "frames=3", "height=12",
                                              "width=16"],
                 ["path=interpolate", "frames=4"]):  # fmt: skip
        assert nl_render.main([f"run_dir={capture_run}", "progress=false", *argv]) == 0, argv
    renders = capture_run / "renders"
    spiral = next(renders.glob("spiral_*"))
    assert iio.imread(spiral / "rgb.gif", index=0).shape == (12, 16, 3)
    meta = json.loads((spiral / "camera_path.json").read_text())
    frame = meta["camera_path"][0]
    # the first training camera's intrinsics (in the scene: fx 30, fy 26.5, cx 17.3, cy 11.1)
    # scaled to the 12 x 16 render
    assert (frame["fl_x"], frame["fl_y"]) == pytest.approx((15.0, 13.25), abs=1e-3)
    assert (frame["cx"], frame["cy"]) == pytest.approx((8.65, 5.55), abs=1e-3)
    interp = next(renders.glob("interpolate_*"))
    assert len(json.loads((interp / "camera_path.json").read_text())["camera_path"]) == 4
    again = [f"run_dir={capture_run}", "path=file", f"file={spiral / 'camera_path.json'}"]
    assert nl_render.main(again) == 0
    file_render = next(renders.glob("file_*"))
    a = iio.imread(spiral / "rgb.gif", index=None).astype(float)
    b = iio.imread(file_render / "rgb.gif", index=None).astype(float)
    assert a.shape == b.shape and np.abs(a - b).mean() < 2.0


def test_exports_of_a_capture_run_are_in_the_capture_frame(capture_run, capture):
    import trimesh

    from nerf_lab import export as nl_export
    from nerf_lab.runs import load_run

    _, cap_scene = capture
    run = load_run(capture_run)
    M = torch.as_tensor(run.setup["world_transform"], dtype=torch.float64)
    s = float(torch.linalg.det(M[:3, :3]) ** (1 / 3))
    scene = run.scene()
    test_idx = scene.splits["test"]
    out = run.render_views(scene.split("test")[0])

    # depth: the rendered z-depths in the capture's units
    assert nl_export.main([f"run_dir={capture_run}", "what=depth", "opacity_threshold=0"]) == 0
    folder = next((capture_run / "exports").glob("depth_*"))
    npy = np.load(folder / "view_000_depth.npy")
    np.testing.assert_allclose(npy, out.depth[0, ..., 0].numpy() / s, rtol=1e-4)
    info = json.loads((folder / "depth.json").read_text())
    assert info["scene_units_per_capture_unit"] == pytest.approx(s)
    assert "capture units" in info["units"]

    # point cloud: every point projects, with the capture's own cameras, onto its pixel and
    # lies at its exported depth
    assert nl_export.main([f"run_dir={capture_run}", "what=pointcloud", "opacity_threshold=0"]) == 0
    cloud = trimesh.load(next((capture_run / "exports").glob("pointcloud_*")) / "pointcloud.ply")
    pts = torch.as_tensor(np.asarray(cloud.vertices), dtype=torch.float32)
    assert len(pts) == len(test_idx) * H * W
    cam = cap_scene.cameras[[int(test_idx[0])]]
    first = pts[: H * W]
    px = cam.transform_points_screen(first[None])[0, :, :2]
    jj, ii = np.meshgrid(np.arange(W) + 0.5, np.arange(H) + 0.5)
    np.testing.assert_allclose(px[:, 0].numpy(), jj.reshape(-1), atol=2e-3)
    np.testing.assert_allclose(px[:, 1].numpy(), ii.reshape(-1), atol=2e-3)
    z = (first @ cam.R[0] + cam.T[0])[:, 2]
    np.testing.assert_allclose(z.numpy(), npy.reshape(-1), rtol=1e-3)


def test_mesh_export_of_a_capture_run_maps_back_to_the_capture_frame(capture_run):
    pytest.importorskip("skimage")
    import trimesh

    from nerf_lab import export as nl_export
    from nerf_lab.export_utils import extract_mesh, grid_points, query_density
    from nerf_lab.runs import load_run

    run = load_run(capture_run)
    field = run.renderer.field
    pts, step = grid_points(1.0, (12, 12, 12))
    opac = query_density(field, pts, min(step))
    level = float(0.5 * (opac.min() + opac.max()))
    argv = [f"run_dir={capture_run}", "what=mesh", "resolution=12", f"level={level}",
            "color_mode=none"]  # fmt: skip
    assert nl_export.main(argv) == 0
    folder = next((capture_run / "exports").glob("mesh_*"))
    assert not (folder / "geometry.json").exists()  # no true surface for a capture
    saved = trimesh.load(folder / "mesh.ply", process=False)
    mesh = extract_mesh(field, 1.0, 12, level, color_mode=None)
    M = np.asarray(run.setup["world_transform"], dtype=np.float64)
    expect = transform_points_np(np.linalg.inv(M), mesh.verts.double().numpy())
    np.testing.assert_allclose(np.asarray(saved.vertices), expect, atol=1e-4)


# -- every method preset on a capture ---------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("method", [m for m in group_options("experiment") if m != "tutorial"])
def test_every_preset_trains_and_evaluates_on_a_non_square_capture(method, capture, tmp_path):
    """The presets carry no per-scene numbers: on a 24 x 32 capture with fx != fy, an
    off-centre principal point, elevated views and a world scaled by 3.7 (depth range auto,
    the scene's own bounds), each trains, evaluates and renders its held-out views."""
    from nerf_lab.train import run

    path, _ = capture
    overrides = [
        f"experiment={method}", "data=nerfstudio", f"data.path={path}",
        "raysampler.n_rays_per_image=32", "trainer.batch_size=1", "trainer.device=cpu",
        "trainer.progress_bar=false", "trainer.turntable_frames=0", "trainer.render_every=0",
        "trainer.checkpoint_every=0", "trainer.eval_every=0", "trainer.chunk_size=1024",
        "trainer.n_iter=3",
    ]  # fmt: skip
    psnr = run(compose_cfg(overrides), tmp_path)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["status"] == "completed", metrics.get("error")
    assert metrics["iterations"] == 3 and np.isfinite(psnr)
