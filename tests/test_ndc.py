"""NeRF's NDC rays for forward-facing captures (``data=llff data.ndc=true``): the pure ray
transform against analytic values and NeRF's own formula, the NDC space of an LLFF capture,
the forward-facing check, the wiring (depths 0..1, boxes, the saved setup), a short fit, and
renders / exports of an NDC run mapped back to the capture's frame."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from nerf_lab import camera_paths as cp
from nerf_lab.cameras import PerspectiveCameras, look_at_view_transform, so3_exp_map
from nerf_lab.data import Scene, SceneValidationError, export_llff, load_llff
from nerf_lab.data.capture import apply_similarity_to_extrinsics, transform_points_np
from nerf_lab.data.procedural import torus_mesh
from nerf_lab.data.render import render_mesh
from nerf_lab.ndc import (
    NDC_NEAR_FACTOR,
    NDCRaysampler,
    NDCSpace,
    mean_pose,
    ndc_box_problems,
    ndc_rays,
    ndc_to_view,
    view_to_ndc,
)
from nerf_lab.raysamplers import NDCMultinomialRaysampler
from tests.conftest import TINY_RUN, compose_cfg

H, W = 24, 32
FOCAL = 28.0


def _rand_rays(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    o = torch.randn(n, 3, generator=g, dtype=torch.float64) * 0.3
    d = torch.randn(n, 3, generator=g, dtype=torch.float64) * 0.3
    d[:, 2] = 0.5 + torch.rand(n, generator=g, dtype=torch.float64)  # forward
    return o, d


def _nerf_ndc_rays(H, W, focal, near, rays_o, rays_d):
    """NeRF's ``ndc_rays`` (run_nerf_helpers.py), OpenGL camera axes, as published."""
    t = -(near + rays_o[..., 2]) / rays_d[..., 2]
    rays_o = rays_o + t[..., None] * rays_d
    o0 = -1.0 / (W / (2.0 * focal)) * rays_o[..., 0] / rays_o[..., 2]
    o1 = -1.0 / (H / (2.0 * focal)) * rays_o[..., 1] / rays_o[..., 2]
    o2 = 1.0 + 2.0 * near / rays_o[..., 2]
    d0 = (
        -1.0
        / (W / (2.0 * focal))
        * (rays_d[..., 0] / rays_d[..., 2] - rays_o[..., 0] / rays_o[..., 2])
    )  # noqa: E501
    d1 = (
        -1.0
        / (H / (2.0 * focal))
        * (rays_d[..., 1] / rays_d[..., 2] - rays_o[..., 1] / rays_o[..., 2])
    )  # noqa: E501
    d2 = -2.0 * near / rays_o[..., 2]
    return torch.stack([o0, o1, o2], -1), torch.stack([d0, d1, d2], -1)


# -- the pure transform ---------------------------------------------------------------------------
def test_ndc_rays_is_nerfs_formula_with_pytorch3d_axes():
    o, d = _rand_rays(50)
    gl = torch.tensor([-1.0, 1.0, -1.0], dtype=torch.float64)  # PyTorch3D view <-> OpenGL
    o_n, d_n = _nerf_ndc_rays(H, W, FOCAL, 1.0, o * gl, d * gl)
    o_p, d_p = ndc_rays(H, W, FOCAL, 1.0, o, d)
    mirror = torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64)  # NDC +X: right -> left
    torch.testing.assert_close(o_p, o_n * mirror)
    torch.testing.assert_close(d_p, d_n * mirror)


def test_principal_ray_stays_on_the_axis_and_near_far_map_to_minus_one_and_one():
    pp = (19.0, 9.5)  # off-centre
    o = torch.zeros(1, 3, dtype=torch.float64)
    d = torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64)  # through the principal point
    o2, d2 = ndc_rays(H, W, (FOCAL, 25.0), 0.7, o, d, pp)
    bx, by = 1 - 2 * pp[0] / W, 1 - 2 * pp[1] / H
    torch.testing.assert_close(o2, torch.tensor([[bx, by, -1.0]], dtype=torch.float64))
    torch.testing.assert_close(d2, torch.tensor([[0.0, 0.0, 2.0]], dtype=torch.float64))
    # any forward ray: t = 0 on the near plane (Z = -1), t = 1 at infinity (Z = +1)
    o, d = _rand_rays(20, seed=1)
    o2, d2 = ndc_rays(H, W, FOCAL, 0.7, o, d, pp)
    torch.testing.assert_close(o2[:, 2], torch.full((20,), -1.0, dtype=torch.float64))
    torch.testing.assert_close((o2 + d2)[:, 2], torch.ones(20, dtype=torch.float64))
    z = torch.tensor([0.7, 1.4, 7.0, 1e9], dtype=torch.float64)
    pts = torch.stack([0.1 * z, -0.2 * z, z], -1)
    ndc = view_to_ndc(pts, H, W, FOCAL, 0.7, pp)
    torch.testing.assert_close(ndc[:, 2], torch.tensor([-1.0, 0.0, 0.8, 1.0], dtype=torch.float64))
    torch.testing.assert_close(ndc_to_view(ndc[:3], H, W, FOCAL, 0.7, pp), pts[:3])


def test_ndc_rays_vectorised_equals_a_loop():
    o, d = _rand_rays(12, seed=2)
    o = o.reshape(3, 4, 3)
    d = d.reshape(3, 4, 3)
    bo, bd = ndc_rays(H, W, (30.0, 27.0), 0.9, o, d, (15.0, 13.0))
    for i in range(3):
        for j in range(4):
            lo, ld = ndc_rays(H, W, (30.0, 27.0), 0.9, o[i, j], d[i, j], (15.0, 13.0))
            torch.testing.assert_close(bo[i, j], lo)
            torch.testing.assert_close(bd[i, j], ld)


def test_ndc_is_the_cameras_projection_and_rays_pass_through_their_points():
    """NDC X, Y of a point = 1 - 2 u / W, 1 - 2 v / H for the pixel (u, v) it projects to; the
    NDC image of every point of a world ray lies on the NDC ray at t = 1 - near / z."""
    R, T = look_at_view_transform(dist=3.0, elev=15.0, azim=-20.0)
    cam = PerspectiveCameras(((30.0, 27.0),), ((18.0, 10.5),), R=R, T=T, in_ndc=False,
                             image_size=((H, W),))  # fmt: skip
    space = NDCSpace(cam, near=1.5)
    pts = torch.randn(40, 3) * 0.5
    uv = cam.transform_points_screen(pts[None])[0, :, :2].double()
    ndc = space.from_world(pts.double())
    torch.testing.assert_close(ndc[:, 0], 1 - 2 * uv[:, 0] / W, atol=1e-5, rtol=0)
    torch.testing.assert_close(ndc[:, 1], 1 - 2 * uv[:, 1] / H, atol=1e-5, rtol=0)
    torch.testing.assert_close(space.to_world(ndc).float(), pts, atol=1e-5, rtol=0)
    # a world ray from another camera position, and points along it
    origin = cam.get_camera_center()[0].double() + torch.tensor([0.2, -0.1, 0.05]).double()
    direction = (pts[0].double() - origin) * 0.8
    o2, d2 = space.rays(origin[None], direction[None])
    s = torch.tensor([0.6, 0.9, 1.25, 3.0, 20.0], dtype=torch.float64)
    world = origin + s[:, None] * direction
    on_ray = space.from_world(world)
    t = (on_ray[:, 2] + 1) / 2
    torch.testing.assert_close(o2 + t[:, None] * d2, on_ray)
    z = space.world_to_view(world)[:, 2]
    torch.testing.assert_close(t, 1 - 1.5 / z)


def test_mean_pose_of_symmetric_cameras_and_the_space_state():
    R, T = look_at_view_transform(dist=2.0, elev=[10.0, -10.0, 10.0, -10.0],
                                  azim=[15.0, 15.0, -15.0, -15.0])  # fmt: skip
    R_m, T_m = mean_pose(R, T)
    ref_R, ref_T = look_at_view_transform(dist=2.0 * math.cos(math.radians(10)) * math.cos(
        math.radians(15)), elev=0.0, azim=0.0)  # fmt: skip
    torch.testing.assert_close(R_m[0].float(), ref_R[0], atol=1e-6, rtol=0)
    torch.testing.assert_close(T_m[0].float(), ref_T[0], atol=1e-5, rtol=0)
    cams = PerspectiveCameras(FOCAL, ((16.0, 12.0),), R=R, T=T, in_ndc=False, image_size=((H, W),))
    space = NDCSpace.from_cameras(cams, 0.8)
    back = NDCSpace.from_state(space.to_state())
    torch.testing.assert_close(back.camera.R, space.camera.R)
    assert back.near == 0.8 and back.image_size == (H, W)
    with pytest.raises(ValueError, match="near"):
        NDCSpace(cams[[0]], near=0.0)
    with pytest.raises(ValueError, match="one screen-space"):
        NDCSpace(cams, near=1.0)
    R2, T2 = look_at_view_transform(dist=2.0, azim=[0.0, 90.0, 180.0, 270.0])  # all around
    with pytest.raises(ValueError, match="cancel out"):
        mean_pose(R2, T2)


def test_forward_facing_check_names_cameras_looking_away():
    R, T = look_at_view_transform(dist=3.0, elev=[0.0, 5.0, 0.0, 0.0], azim=[0.0, 5.0, 40.0, 180.0])
    cams = PerspectiveCameras(FOCAL, ((16.0, 12.0),), R=R, T=T, in_ndc=False, image_size=((H, W),))
    space = NDCSpace(cams[[0]], near=1.0)
    problems = space.camera_problems(cams, (H, W), ["a", "b", "c", "d"])
    assert len(problems) == 2
    assert problems[0].startswith("c looks outside")
    assert problems[1].startswith("d: a corner ray")
    assert space.camera_problems(cams[[0, 1]], (H, W)) == []
    sampler = NDCRaysampler(
        NDCMultinomialRaysampler(image_width=W, image_height=H, n_pts_per_ray=4, min_depth=0.0,
                                 max_depth=1.0), space, (H, W))  # fmt: skip
    with pytest.raises(ValueError, match="cannot be rendered in the run's NDC space"):
        sampler(cams)
    rays = sampler(cams[[0, 1]])
    torch.testing.assert_close(rays.origins[..., 2], torch.full((2, H, W), -1.0))
    outside = NDCRaysampler(
        NDCMultinomialRaysampler(image_width=W, image_height=H, n_pts_per_ray=4, min_depth=0.5,
                                 max_depth=2.0), space, (H, W))  # fmt: skip
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        outside(cams[[0]])


def test_box_check_of_the_config_groups():
    ok = {"model": {"bbox": 1.0}, "raysampler": {"resampler": {"aabb": [-1, -1, -1, 1, 1, 1.5]}}}
    assert ndc_box_problems(ok) == []
    bad = {"model": {"aabb": [-1, -1, -1, 1, 1, 0.5]}, "raysampler": {"x": {"grid": {"aabb":
           [[-0.5, -1, -1], [1, 1, 1]]}}}}  # fmt: skip
    problems = ndc_box_problems(bad)
    assert [p.split(":")[0] for p in problems] == ["model.aabb", "raysampler.x.grid.aabb"]


# -- a forward-facing LLFF capture ----------------------------------------------------------------
def forward_facing_capture(n_side: int = 3) -> tuple[Scene, np.ndarray, np.ndarray]:
    """The torus seen by a grid of nearly parallel cameras (LLFF-like), in an arbitrary
    similarity-transformed capture frame. Returns the scene, the capture-frame torus vertices
    and the capture-from-torus transform."""
    g = torch.linspace(-0.3, 0.3, n_side)
    xs, ys = torch.meshgrid(g, 0.7 * g, indexing="ij")
    eye = torch.stack([xs.reshape(-1), ys.reshape(-1), torch.full((n_side**2,), 3.0)], -1)
    R, T = look_at_view_transform(eye=eye, at=eye * torch.tensor([0.6, 0.6, 0.0]))
    ref = PerspectiveCameras(FOCAL, ((W / 2, H / 2),), R=R, T=T, in_ndc=False,
                             image_size=((H, W),))  # fmt: skip
    mesh = torus_mesh(n_major=24, n_minor=12, texture_size=32)
    images, _ = render_mesh(mesh, ref, (H, W), light_location=None)
    Q = so3_exp_map(torch.tensor([[0.4, 0.2, -0.7]], dtype=torch.float64))[0].numpy()
    M = np.eye(4)
    M[:3, :3] = 2.5 * Q
    M[:3, 3] = [-3.0, 1.0, 4.0]
    R2, T2 = apply_similarity_to_extrinsics(R.double().numpy(), T.double().numpy(), M)
    cams = ref._replace(R=torch.from_numpy(R2).float(), T=torch.from_numpy(T2).float())
    n = n_side**2
    scene = Scene(
        "ff", cams, images, None, {"train": torch.arange(1, n), "test": torch.tensor([0])}
    )
    return scene, transform_points_np(M, mesh.verts.double().numpy()), M


@pytest.fixture(scope="module")
def ff_capture(tmp_path_factory) -> tuple[Path, Scene]:
    scene, points, _ = forward_facing_capture()
    return export_llff(scene, tmp_path_factory.mktemp("ff") / "llff", points=points), scene


def test_llff_ndc_space_is_the_mean_camera_with_nerfs_near_plane(
    ff_capture, capture_dirs, tmp_path
):
    path, cap = ff_capture
    world = load_llff(path)
    assert world.ndc is None
    scene = load_llff(path, ndc=True)
    assert scene.ndc is not None and scene.near == pytest.approx(world.near)
    assert scene.ndc.near == pytest.approx(NDC_NEAR_FACTOR * scene.near)
    # the grid's mean pose is its centre camera (index 4), here in the normalised frame
    centre = scene.cameras[[4]]
    torch.testing.assert_close(scene.ndc.camera.R, centre.R, atol=1e-5, rtol=0)
    torch.testing.assert_close(scene.ndc.camera.get_camera_center(), centre.get_camera_center(),
                               atol=1e-5, rtol=0)  # fmt: skip
    # the scene file (cache) and Scene.to keep the space
    from nerf_lab.data.cache import load_scene, save_scene

    save_scene(scene, tmp_path / "s.pt")
    for again in (load_scene(tmp_path / "s.pt").ndc, scene.to("cpu").ndc):
        torch.testing.assert_close(again.camera.R, scene.ndc.camera.R)
        assert again.near == scene.ndc.near
    # the cameras around the torus (an orbit) are refused, naming the images
    with pytest.raises(SceneValidationError, match="forward-facing") as err:
        load_llff(capture_dirs["llff"], ndc=True)
    assert "image_00004.png" in str(err.value)
    with pytest.raises(ValueError, match="ndc must be true or false"):
        load_llff(path, ndc="yes")


def _ndc_overrides(path: Path) -> list[str]:
    return [
        *[o for o in TINY_RUN if not o.startswith("data")],
        "data=llff", f"data.path={path}", "data.ndc=true", "model=small",
        "model.n_hidden_neurons=32", "model.n_harmonic_functions=6",
        "raysampler.n_rays_per_image=128", "raysampler.n_pts_per_ray=24",
        "trainer.eval_every=0", "trainer.render_every=0", "trainer.checkpoint_every=0",
        "trainer.log_every=0",
    ]  # fmt: skip


def test_ndc_runs_sample_ndc_rays_with_depths_0_to_1_and_check_boxes(ff_capture, tmp_path):
    from nerf_lab.build import build_trainer

    path, _ = ff_capture
    trainer = build_trainer(compose_cfg(_ndc_overrides(path)), tmp_path / "a")
    cams = trainer.train_views[0][[0, 1]]
    rays = trainer.train_raysampler(cameras=cams)
    assert float(rays.lengths.min()) >= 0.0 and float(rays.lengths.max()) <= 1.0
    torch.testing.assert_close(rays.origins[..., 2], torch.full_like(rays.origins[..., 2], -1.0))
    grid = trainer.grid_raysampler(H, W)(cams)
    assert grid.lengths[..., 0].max() == 0.0 and grid.lengths[..., -1].min() == 1.0
    setup = trainer.extra_state["render_setup"]
    assert setup["depths"] == {"min_depth": 0.0, "max_depth": 1.0}
    assert NDCSpace.from_state(setup["ndc"]).near == pytest.approx(trainer.scene.ndc.near)
    with pytest.raises(ValueError, match=r"max_depth=3.0: .* NDC"):
        build_trainer(compose_cfg([*_ndc_overrides(path), "raysampler.max_depth=3.0"]),
                      tmp_path / "b")  # fmt: skip
    with pytest.raises(ValueError, match=r"model.bbox: .* NDC cube"):
        fast = [o for o in _ndc_overrides(path) if not o.startswith("model")]
        build_trainer(compose_cfg([*fast, "model=voxel", "model.bbox=0.5"]),
                      tmp_path / "c")  # fmt: skip


def test_forward_facing_spiral_looks_at_its_focus_from_around_the_mean_camera():
    scene, _, _ = forward_facing_capture()
    cams = scene.cameras
    near, far = 1.5, 5.0
    path = cp.forward_facing_spiral(cams, near, far, 8)
    assert isinstance(path, PerspectiveCameras) and len(path) == 8
    torch.testing.assert_close(path.focal_length, cams.focal_length[[0] * 8])
    R_m, T_m = mean_pose(cams.R, cams.T)
    centre = (-T_m[0] @ R_m[0].T).float()
    forward = R_m[0][:, 2].float()
    focus = 1.0 / (0.25 / (0.9 * near) + 0.75 / (5.0 * far))
    target = centre + focus * forward
    # every frame looks at the focus point (it projects onto the principal point)
    px = path.transform_points_screen(target[None, None].expand(8, 1, 3))[:, 0, :2]
    torch.testing.assert_close(px, torch.tensor([[W / 2, H / 2]]).expand(8, 2), atol=1e-3, rtol=0)
    offsets = (path.get_camera_center() - centre) @ R_m[0].float()
    spread = (cams.get_camera_center() - centre) @ R_m[0].float()
    assert (offsets.abs().max(0).values <= spread.abs().max(0).values + 1e-4).all()
    assert offsets[:, 0].abs().max() > 0.5 * spread[:, 0].abs().max()


@pytest.fixture(scope="module")
def ndc_run(ff_capture, tmp_path_factory):
    """An NDC run (30 iterations) with the held-out PSNR before training."""
    from nerf_lab.build import build_trainer

    path, _ = ff_capture
    run_dir = tmp_path_factory.mktemp("ndc_run")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NERF_LAB_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        torch.manual_seed(0)
        # (30 steps: no lr warm-up, which would take the whole run)
        cfg = compose_cfg([*_ndc_overrides(path), "trainer.n_iter=30", "trainer.batch_size=4",
                           "optimizer.lr=0.005", "scheduler.warmup=0"])  # fmt: skip
        trainer = build_trainer(cfg, run_dir)
        before = trainer.evaluate()["eval/psnr"]
        metrics = trainer.fit()
        yield run_dir, before, metrics


def test_short_ndc_fit_raises_psnr_and_eval_rebuilds_the_ndc_setup(ndc_run):
    from nerf_lab import eval as nl_eval
    from nerf_lab.runs import load_run

    run_dir, before, metrics = ndc_run
    assert metrics["eval/psnr"] > before + 3.0, (before, metrics["eval/psnr"])
    run = load_run(run_dir)
    assert run.ndc is not None
    assert nl_eval.main([f"run_dir={run_dir}"]) == 0
    again = json.loads((run_dir / "eval.json").read_text())["eval/psnr"]
    assert again == pytest.approx(metrics["eval/psnr"], abs=1e-4)
    assert (run_dir / "renders" / "turntable.gif").is_file()  # NeRF's spiral, not an orbit


def test_renders_and_exports_of_an_ndc_run(ndc_run, ff_capture):
    pytest.importorskip("skimage")
    import trimesh

    from nerf_lab import export as nl_export
    from nerf_lab import render as nl_render
    from nerf_lab.export_utils import extract_mesh, grid_points, query_density
    from nerf_lab.runs import load_run

    run_dir, _, _ = ndc_run
    _, cap = ff_capture
    for argv in (["path=spiral", "frames=3"], ["path=interpolate", "frames=3"]):
        assert nl_render.main([f"run_dir={run_dir}", *argv]) == 0, argv
    assert nl_render.main([f"run_dir={run_dir}", "path=orbit", "frames=3"]) == 1
    assert nl_render.main([f"run_dir={run_dir}", "path=spiral", "radius=2"]) == 1

    # point cloud: each point projects, with the capture's own camera, onto its pixel
    assert nl_export.main([f"run_dir={run_dir}", "what=pointcloud", "opacity_threshold=0.2"]) == 0
    cloud = trimesh.load(next((run_dir / "exports").glob("pointcloud_*")) / "pointcloud.ply")
    assert nl_export.main([f"run_dir={run_dir}", "what=depth", "opacity_threshold=0.2"]) == 0
    folder = next((run_dir / "exports").glob("depth_*"))
    depths = [np.load(folder / f"view_{i:03d}_depth.npy") for i in (0, 1)]  # images 0 and 8
    assert len(cloud.vertices) == sum(np.isfinite(d).sum() for d in depths)
    depth = depths[0]
    valid = np.isfinite(depth)
    assert valid.sum() > 0
    pts = torch.as_tensor(np.asarray(cloud.vertices)[: valid.sum()], dtype=torch.float32)
    cam = cap.cameras[[0]]  # the first test view
    px = cam.transform_points_screen(pts[None])[0, :, :2].numpy()
    jj, ii = np.meshgrid(np.arange(W) + 0.5, np.arange(H) + 0.5)
    np.testing.assert_allclose(px[:, 0], jj[valid], atol=5e-3)
    np.testing.assert_allclose(px[:, 1], ii[valid], atol=5e-3)
    z = (pts @ cam.R[0] + cam.T[0])[:, 2].numpy()
    np.testing.assert_allclose(z, depth[valid], rtol=1e-3)

    # mesh: extracted in the NDC cube, vertices mapped to the world, then to the capture
    run = load_run(run_dir)
    field = run.renderer.field
    grid, step = grid_points([[-1.0, -1.0, -1.0], [1.0, 1.0, 0.9]], (10, 10, 10))
    opac = query_density(field, grid, min(step))
    level = float(0.5 * (opac.min() + opac.max()))
    bbox = "bbox=[[-1,-1,-1],[1,1,0.9]]"
    argv = [f"run_dir={run_dir}", "what=mesh", "resolution=10", f"level={level}", bbox,
            "color_mode=none"]  # fmt: skip
    assert nl_export.main(argv) == 0
    saved = trimesh.load(next((run_dir / "exports").glob("mesh_*")) / "mesh.ply", process=False)
    mesh = extract_mesh(field, [[-1.0, -1.0, -1.0], [1.0, 1.0, 0.9]], 10, level, color_mode=None)
    world = run.ndc.to_world(mesh.verts.double()).numpy()
    M = np.asarray(run.setup["world_transform"], dtype=np.float64)
    expect = transform_points_np(np.linalg.inv(M), world)
    assert len(saved.vertices) == len(expect)
    np.testing.assert_allclose(np.asarray(saved.vertices), expect, rtol=1e-4, atol=1e-4)
