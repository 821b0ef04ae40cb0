"""Scene near / far: optional silhouettes, the depth-range helpers and every builder's range."""

from __future__ import annotations

import math

import pytest
import torch
import trimesh

from nerf_lab.cameras import FoVPerspectiveCameras, look_at_view_transform
from nerf_lab.data import Scene, export_blender, load_blender, mesh_scene, procedural_scene
from nerf_lab.data.bounds import (
    NEAR_EPS_FRACTION,
    bounding_radius,
    box_corners,
    box_depth_range,
    orbit_depth_range,
    view_depths,
)
from nerf_lab.data.cache import cache_dir, cached_scene, load_scene, save_scene
from nerf_lab.data.mesh import load_mesh, normalize_mesh
from nerf_lab.data.procedural import torus_mesh
from tests.conftest import COW_DIR

SMALL = {"num_views": 6, "n_test_views": 2, "image_size": 16}


def _surface_points(verts: torch.Tensor, faces: torch.Tensor, n_per_face: int = 3) -> torch.Tensor:
    """Vertices plus random points on every face (ground-truth surface samples), ``(P, 3)``."""
    g = torch.Generator().manual_seed(1)
    w = torch.rand(faces.shape[0], n_per_face, 3, generator=g)
    w = w / w.sum(-1, keepdim=True)
    on_faces = torch.einsum("fkc,fcd->fkd", w, verts[faces]).reshape(-1, 3)
    return torch.cat([verts, on_faces])


def _assert_depths_within(scene: Scene, points: torch.Tensor) -> torch.Tensor:
    depths = view_depths(scene.cameras.R, scene.cameras.T, points)
    assert scene.near is not None and scene.far is not None
    assert 0 < scene.near < scene.far
    assert depths.min() >= scene.near - 1e-5, (float(depths.min()), scene.near)
    assert depths.max() <= scene.far + 1e-5, (float(depths.max()), scene.far)
    return depths


def _tiny_scene(**kwargs) -> Scene:
    n = 4
    base = {
        "name": "tiny",
        "cameras": FoVPerspectiveCameras(R=torch.eye(3).expand(n, 3, 3), T=torch.zeros(n, 3)),
        "images": torch.rand(n, 5, 6, 3),
        "silhouettes": None,
        "splits": {"train": torch.tensor([0, 1, 2]), "test": torch.tensor([3])},
    }
    base.update(kwargs)
    return Scene(**base)


# -- the container ------------------------------------------------------------------------------


def test_scene_without_silhouettes_and_with_depth_range():
    scene = _tiny_scene(near=0.5, far=4)
    assert not scene.has_silhouettes and scene.near == 0.5 and scene.far == 4.0
    assert isinstance(scene.far, float)
    cams, images, sils = scene.split("test")
    assert len(cams) == 1 and images.shape == (1, 5, 6, 3) and sils is None
    moved = scene.to("cpu")
    assert moved.silhouettes is None and (moved.near, moved.far) == (0.5, 4.0)
    assert moved.cameras is not scene.cameras
    text = repr(scene)
    assert "silhouettes=False" in text and "near=0.5" in text and "far=4.0" in text
    with_sil = _tiny_scene(silhouettes=torch.ones(4, 5, 6))
    assert with_sil.has_silhouettes and with_sil.split("train")[2].shape == (3, 5, 6)
    assert with_sil.near is None and with_sil.far is None


@pytest.mark.parametrize(
    ("near", "far", "match"),
    [
        (0.0, 1.0, "near must be > 0"),
        (-1.0, None, "near must be > 0"),
        (2.0, 1.0, "near must be < far"),
        (1.0, 1.0, "near must be < far"),
        (float("nan"), 2.0, "finite"),
        (1.0, float("inf"), "finite"),
        (True, 2.0, "finite"),
        ("1", 2.0, "finite"),
    ],
)
def test_scene_rejects_bad_depth_ranges(near, far, match):
    with pytest.raises(ValueError, match=match):
        _tiny_scene(near=near, far=far)


def test_scene_rejects_bad_silhouettes():
    with pytest.raises(ValueError, match="silhouettes must have shape"):
        _tiny_scene(silhouettes=torch.ones(4, 5, 5))
    with pytest.raises(ValueError, match="float32"):
        _tiny_scene(silhouettes=torch.ones(4, 5, 6, dtype=torch.float64))


def test_cache_round_trip_and_old_format_rebuilt(tmp_path):
    scene = _tiny_scene(near=0.25, far=3.5)
    save_scene(scene, tmp_path / "s.pt")
    back = load_scene(tmp_path / "s.pt")
    assert back.silhouettes is None and (back.near, back.far) == (0.25, 3.5)
    assert torch.equal(back.images, scene.images)
    with_sil = _tiny_scene(silhouettes=(torch.rand(4, 5, 6) > 0.5).float())
    save_scene(with_sil, tmp_path / "t.pt")
    back = load_scene(tmp_path / "t.pt")
    assert torch.equal(back.silhouettes, with_sil.silhouettes) and back.near is None

    # A file of the previous format (no near / far) is rebuilt, not loaded.
    calls = []

    def build() -> Scene:
        calls.append(1)
        return scene

    first = cached_scene("tiny", {"a": 1}, [], build)
    assert len(calls) == 1 and first.near == 0.25
    (path,) = (cache_dir() / "scenes").glob("tiny-*.pt")
    payload = torch.load(path, weights_only=True)
    payload["format"] = 1
    del payload["near"], payload["far"]
    torch.save(payload, path)
    with pytest.raises(ValueError, match="format"):
        load_scene(path)
    again = cached_scene("tiny", {"a": 1}, [], build)
    assert len(calls) == 2 and again.near == 0.25
    assert load_scene(path).far == 3.5  # overwritten in the new format


# -- the helpers --------------------------------------------------------------------------------


def test_bounding_radius_and_orbit_range_analytic():
    torus = torus_mesh()
    assert bounding_radius(torus.verts) == pytest.approx(0.65 + 0.3, abs=1e-6)
    pts = torch.tensor([[1.0, 2.0, 2.0], [0.0, 0.0, 0.5]])
    assert bounding_radius(pts) == pytest.approx(3.0)
    assert bounding_radius(pts, center=(1.0, 2.0, 2.0)) == pytest.approx(math.sqrt(1 + 4 + 2.25))
    assert orbit_depth_range(2.7, 1.0) == pytest.approx((1.7, 3.7))
    assert orbit_depth_range(1.0, 2.0) == pytest.approx((NEAR_EPS_FRACTION, 3.0))
    with pytest.raises(ValueError, match="distance"):
        orbit_depth_range(0.0, 1.0)
    with pytest.raises(ValueError, match="radius"):
        orbit_depth_range(1.0, -0.1)
    with pytest.raises(ValueError, match="points"):
        bounding_radius(torch.zeros(0, 3))


def test_view_depths_match_a_loop_and_the_world_to_view_transform():
    R, T = look_at_view_transform(dist=torch.tensor([2.0, 3.0, 4.0]), elev=[10, 40, -20],
                                  azim=[0, 90, 200], at=((0.1, -0.2, 0.3),))  # fmt: skip
    pts = torch.randn(7, 3)
    got = view_depths(R, T, pts)
    loop = torch.empty(3, 7)
    for v in range(3):
        for p in range(7):
            z = sum(float(pts[p, i]) * float(R[v, i, 2]) for i in range(3))
            loop[v, p] = z + float(T[v, 2])
    assert torch.allclose(got, loop, atol=1e-5)
    cams = FoVPerspectiveCameras(R=R, T=T)
    via_transform = cams.get_world_to_view_transform().transform_points(pts[None].expand(3, 7, 3))
    assert torch.allclose(got, via_transform[..., 2], atol=1e-5)


def test_box_depth_range_analytic_and_against_dense_samples():
    # A camera on the +Z axis at distance d looking at the origin: depths d -/+ 1.5 exactly.
    R, T = look_at_view_transform(dist=4.0, elev=0.0, azim=0.0)
    near, far = box_depth_range(R, T, (-1.5,) * 3, (1.5,) * 3)
    assert (near, far) == pytest.approx((2.5, 5.5))
    # A camera on the diagonal: the nearest / farthest corners are at d -/+ 1.5 sqrt(3).
    eye = torch.tensor([[1.0, 1.0, 1.0]]) * (6.0 / math.sqrt(3))
    R, T = look_at_view_transform(eye=eye)
    assert box_depth_range(R, T, (-1.5,) * 3, (1.5,) * 3) == pytest.approx(
        (6 - 1.5 * math.sqrt(3), 6 + 1.5 * math.sqrt(3)), abs=1e-5
    )
    # Several arbitrary cameras and an off-centre box: the corners bound dense samples of the
    # box (and are among them).
    R, T = look_at_view_transform(dist=[3.0, 5.0, 4.0], elev=[30, -10, 70], azim=[15, 160, 280],
                                  at=((0.2, 0.1, -0.3),))  # fmt: skip
    lo, hi = (-0.5, -1.0, -0.25), (1.0, 0.5, 0.75)
    near, far = box_depth_range(R, T, lo, hi)
    g = torch.linspace(0, 1, 11)
    grid = torch.stack(torch.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3)
    samples = torch.tensor(lo) + grid * (torch.tensor(hi) - torch.tensor(lo))
    d = view_depths(R, T, samples)
    assert float(d.min()) == pytest.approx(near, abs=1e-5)
    assert float(d.max()) == pytest.approx(far, abs=1e-5)
    assert box_corners(lo, hi).shape == (8, 3)
    # A camera inside the box: near is clamped above zero.
    R, T = look_at_view_transform(dist=1.0, elev=0.0, azim=0.0)
    near, far = box_depth_range(R, T, (-1.5,) * 3, (1.5,) * 3)
    assert near == pytest.approx(NEAR_EPS_FRACTION * 1.0) and far == pytest.approx(2.5)
    with pytest.raises(ValueError, match="behind every camera"):
        box_depth_range(R, T, (-0.5, -0.5, 3.0), (0.5, 0.5, 4.0))
    with pytest.raises(ValueError, match="box_min"):
        box_depth_range(R, T, (0, 0, 0), (1, 1, 0))


# -- every builder ------------------------------------------------------------------------------


def test_procedural_scene_depth_range_covers_the_torus():
    scene = procedural_scene(**SMALL, cache=False)
    assert (scene.near, scene.far) == pytest.approx((2.2 - 0.95, 2.2 + 0.95), abs=1e-6)
    torus = torus_mesh()
    depths = _assert_depths_within(scene, _surface_points(torus.verts, torus.faces))
    # Tight: the torus comes within 0.15 of both ends in some view.
    assert depths.min() < scene.near + 0.15 and depths.max() > scene.far - 0.15


def test_mesh_scene_depth_range_covers_the_normalised_mesh(tmp_path):
    box = trimesh.creation.box(extents=(2.0, 0.6, 0.4))
    box.apply_translation((3.0, 1.0, -2.0))
    path = tmp_path / "box.obj"
    box.export(path)
    scene = mesh_scene(path, **SMALL, distance=2.5, cache=False)
    mesh = normalize_mesh(load_mesh(path))
    r = bounding_radius(mesh.verts)
    # The normalised box: half-extents (1, 0.3, 0.2), so the true radius is |(1, .3, .2)|.
    assert r == pytest.approx(math.sqrt(1 + 0.09 + 0.04), abs=1e-5)
    assert (scene.near, scene.far) == pytest.approx((2.5 - r, 2.5 + r), abs=1e-5)
    _assert_depths_within(scene, _surface_points(mesh.verts, mesh.faces))
    # Not normalised: the range follows the file's own coordinates (here far from the origin).
    raw = mesh_scene(path, **SMALL, distance=8.0, normalize=False, cache=False)
    r_raw = bounding_radius(load_mesh(path).verts)
    assert (raw.near, raw.far) == pytest.approx((8.0 - r_raw, 8.0 + r_raw), abs=1e-4)
    _assert_depths_within(raw, load_mesh(path).verts)


@pytest.mark.skipif(not (COW_DIR / "cow.obj").exists(), reason="cow mesh not available")
def test_cow_scene_depth_range_covers_the_cow():
    from nerf_lab.data import cow_scene
    from nerf_lab.data.cow import load_cow_mesh

    scene = cow_scene(data_dir=COW_DIR, num_views=8, n_test_views=2, image_size=16,
                      elevated_test_views=2, cache=False)  # fmt: skip
    cow = load_cow_mesh(COW_DIR)
    r = bounding_radius(cow.verts)
    assert 1.0 <= r <= math.sqrt(3)  # normalised into [-1, 1]^3, some coordinate reaches 1
    assert (scene.near, scene.far) == pytest.approx((2.7 - r, 2.7 + r), abs=1e-5)
    _assert_depths_within(scene, _surface_points(cow.verts, cow.faces, 1))


def test_blender_depth_range_from_the_scene_box(tmp_path):
    scene = procedural_scene(**SMALL, distance=3.0, cache=False)
    export_blender(scene, tmp_path / "b")
    loaded = load_blender(tmp_path / "b")
    R, T = loaded.cameras.R, loaded.cameras.T
    corners = box_corners((-1.5,) * 3, (1.5,) * 3).float()
    d = view_depths(R, T, corners)
    assert loaded.near == pytest.approx(float(d.min()), abs=1e-5)
    assert loaded.far == pytest.approx(float(d.max()), abs=1e-5)
    # Loop over cameras and corners: the same numbers.
    per_cam = [[float((corners[k] @ R[v] + T[v])[2]) for k in range(8)] for v in range(len(R))]
    assert loaded.near == pytest.approx(min(min(c) for c in per_cam), abs=1e-5)
    assert loaded.far == pytest.approx(max(max(c) for c in per_cam), abs=1e-5)
    torus = torus_mesh()
    _assert_depths_within(loaded, _surface_points(torus.verts, torus.faces))
    # The camera clipping planes still come from the file (export writes 1 / 100).
    assert torch.allclose(loaded.cameras.znear, torch.ones(len(loaded)))
    # A custom box, and explicit near / far overriding everything.
    small = load_blender(tmp_path / "b", scene_box=(-1, -1, -1, 1, 1, 1))
    assert small.near > loaded.near and small.far < loaded.far
    fixed = load_blender(tmp_path / "b", near=0.5, far=9.0)
    assert (fixed.near, fixed.far) == (0.5, 9.0)
    assert torch.allclose(fixed.cameras.zfar, torch.full((len(fixed),), 9.0))
    with pytest.raises(ValueError, match="scene_box"):
        load_blender(tmp_path / "b", scene_box=(0, 0, 0, 1, 1))
    with pytest.raises(ValueError, match="scene_box"):
        load_blender(tmp_path / "b", scene_box=(0, 0, 0, 1, -1, 1))
    with pytest.raises(ValueError, match="near must be < far"):
        load_blender(tmp_path / "b", near=3.0, far=2.0)


def test_blender_rgb_only_folder_has_no_silhouettes(tmp_path):
    scene = procedural_scene(**SMALL, cache=False)
    no_masks = Scene(scene.name, scene.cameras, scene.images, None, scene.splits,
                     near=scene.near, far=scene.far)  # fmt: skip
    export_blender(no_masks, tmp_path / "rgb")
    loaded = load_blender(tmp_path / "rgb")
    assert loaded.silhouettes is None
    assert torch.allclose(loaded.images, scene.images, atol=0.5 / 255 + 1e-6)
