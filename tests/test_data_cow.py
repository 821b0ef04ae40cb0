"""The tutorial's cow: generate_cow_renders, cow_scene, download and caching."""

from __future__ import annotations

import io
import time
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import nerf_lab.data.cow as cow_module
from nerf_lab.cameras import look_at_view_transform
from nerf_lab.data import (
    CowMeshUnavailableError,
    SceneValidationError,
    cow_scene,
    generate_cow_renders,
)
from nerf_lab.data.mesh import load_obj_mesh

COW_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "cow_mesh"

pytestmark = pytest.mark.skipif(
    not (COW_DIR / "cow.obj").is_file(), reason=f"cow mesh not found at {COW_DIR}"
)


@pytest.fixture(scope="module")
def cow_renders():
    return generate_cow_renders(num_views=40, data_dir=COW_DIR)


def test_obj_reader_keeps_the_files_vertex_list():
    lines = (COW_DIR / "cow.obj").read_text().splitlines()
    v = np.array([[float(t) for t in ln.split()[1:4]] for ln in lines if ln.startswith("v ")])
    n_vt = sum(ln.startswith("vt ") for ln in lines)
    n_f = sum(ln.startswith("f ") for ln in lines)
    mesh = load_obj_mesh(COW_DIR / "cow.obj")
    assert mesh.verts.shape == (len(v), 3) == (2930, 3)  # no splitting at UV seams
    assert mesh.faces.shape == (n_f, 3) and mesh.faces_uvs.shape == (n_f, 3)
    assert mesh.verts_uvs.shape == (n_vt, 2)
    assert mesh.texture.shape == (1024, 1024, 3)
    assert np.allclose(mesh.verts.numpy(), v, atol=1e-6)
    first_face = next(ln for ln in lines if ln.startswith("f ")).split()[1:]
    assert mesh.faces[0].tolist() == [int(c.split("/")[0]) - 1 for c in first_face]
    assert mesh.faces_uvs[0].tolist() == [int(c.split("/")[1]) - 1 for c in first_face]


def test_shapes_dtypes_ranges(cow_renders):
    cameras, images, silhouettes = cow_renders
    assert len(cameras) == 40
    assert images.shape == (40, 128, 128, 3) and images.dtype == torch.float32
    assert silhouettes.shape == (40, 128, 128) and silhouettes.dtype == torch.float32
    assert images.min() >= 0 and images.max() <= 1
    assert set(silhouettes.unique().tolist()) == {0.0, 1.0}


def test_cameras_are_the_tutorials(cow_renders):
    cameras = cow_renders[0]
    R, T = look_at_view_transform(
        dist=2.7, elev=torch.linspace(0, 0, 40), azim=torch.linspace(-180, 180, 40) + 180.0
    )
    assert torch.equal(cameras.R, R) and torch.equal(cameras.T, T)
    assert torch.all(cameras.fov == 60) and torch.all(cameras.znear == 1)
    assert torch.all(cameras.zfar == 100) and torch.all(cameras.aspect_ratio == 1)


def test_origin_projects_to_image_centre(cow_renders):
    ndc = cow_renders[0].transform_points(torch.zeros(1, 3))
    assert ndc.shape == (40, 1, 3)
    assert torch.allclose(ndc[:, 0, :2], torch.zeros(40, 2), atol=1e-5)


def test_silhouettes_cover_the_object(cow_renders):
    cameras, images, silhouettes = cow_renders
    non_black = images.amax(-1) > 0
    assert not (non_black & (silhouettes == 0)).any()
    area = silhouettes.mean((1, 2))
    assert (area > 0.1).all() and (area < 0.5).all()
    # PyTorch3D's silhouette is the hard coverage dilated by about 2 px (blur radius 9.2e-4 on
    # squared NDC distances = 1.94 px at 128 px): it contains the coverage, lies within a 2-px
    # dilation of it, and is larger.
    idx = torch.tensor([0, 13, 20, 31])
    mesh = cow_module.load_cow_mesh(COW_DIR)
    imgs_hard, hard = cow_module.render_mesh(
        mesh, cameras[idx], 128, light_location=(0.0, 0.0, -3.0), silhouette="hard"
    )
    assert torch.equal(imgs_hard, images[idx])  # views render independently of their batch
    sil = silhouettes[idx]
    dilated = F.max_pool2d(hard[:, None], 5, stride=1, padding=2)[:, 0]
    assert not ((hard == 1) & (sil == 0)).any()
    assert not ((sil == 1) & (dilated == 0)).any()
    assert (sil.sum((1, 2)) > hard.sum((1, 2)) * 1.1).all()


def test_hard_silhouette_option():
    cameras, images, hard = generate_cow_renders(
        num_views=3, data_dir=COW_DIR, image_size=48, silhouette="hard"
    )
    _, _, soft = generate_cow_renders(num_views=3, data_dir=COW_DIR, image_size=48)
    assert not ((images.amax(-1) > 0) & (hard == 0)).any()
    assert not ((hard == 1) & (soft == 0)).any() and soft.sum() > hard.sum()
    with pytest.raises(ValueError, match="silhouette"):
        generate_cow_renders(num_views=3, data_dir=COW_DIR, silhouette="soft")


def test_lighting_from_the_front(cow_renders):
    # The light sits at (0, 0, -3), in front of the cow (it faces -Z): the view from -Z
    # (azimuth 180, index ~20) is brighter than the view from behind (azimuth 0, index 0).
    _, images, silhouettes = cow_renders
    mean = (images.sum(-1) * silhouettes).sum((1, 2)) / silhouettes.sum((1, 2))
    assert mean[20] > mean[0] * 1.3


def test_azimuth_range():
    cameras, _, _ = generate_cow_renders(num_views=5, data_dir=COW_DIR, azimuth_range=30)
    R, T = look_at_view_transform(2.7, 0.0, torch.linspace(-30, 30, 5) + 180.0)
    assert torch.equal(cameras.R, R) and torch.equal(cameras.T, T)


def test_cow_scene_default_splits():
    scene = cow_scene(data_dir=COW_DIR, image_size=32)
    assert len(scene) == 40 and scene.image_size == (32, 32)
    train, test = scene.splits["train"], scene.splits["test"]
    assert len(train) == 30 and len(test) == 10
    assert set(train.tolist()) | set(test.tolist()) == set(range(40))
    assert 0 not in test.tolist() and 39 not in test.tolist()
    assert (test.diff() > 1).all()  # never adjacent: each test view has two training neighbours
    azim = torch.linspace(-180, 180, 40) + 180.0
    assert torch.allclose(azim[test], 0.5 * (azim[test - 1] + azim[test + 1]))
    cams, images, sils = scene.split("test")
    assert len(cams) == 10 and images.shape == (10, 32, 32, 3) and sils.shape == (10, 32, 32)


def test_cow_scene_train_on_all_views_matches_tutorial(cow_renders, monkeypatch):
    cameras, images, silhouettes = cow_renders
    scene = cow_scene(
        data_dir=COW_DIR, train_on_all_views=True, n_test_views=5, elevated_test_views=3
    )
    train_cams, train_images, train_sils = scene.split("train")
    assert torch.equal(train_cams.R, cameras.R) and torch.equal(train_cams.T, cameras.T)
    assert torch.equal(train_images, images) and torch.equal(train_sils, silhouettes)
    # Test views: rendered half-way between consecutive training azimuths, elevation 0.
    test_cams = scene.split("test")[0]
    centers = test_cams.get_camera_center()
    assert torch.allclose(centers[:, 1], torch.zeros(5), atol=1e-5)
    train_az = torch.rad2deg(
        torch.atan2(cameras.get_camera_center()[:, 0], cameras.get_camera_center()[:, 2])
    )
    test_az = torch.rad2deg(torch.atan2(centers[:, 0], centers[:, 2]))
    gaps = (test_az[:, None] - train_az[None]).remainder(360)
    gaps = torch.minimum(gaps, 360 - gaps).min(1).values
    step = 360 / 39
    assert torch.allclose(gaps, torch.full_like(gaps, step / 2), atol=1e-3)
    # Elevated views at 30 degrees.
    elev_c = scene.split("test_elevated")[0].get_camera_center()
    assert torch.allclose(
        torch.rad2deg(torch.asin(elev_c[:, 1] / 2.7)), torch.tensor(30.0), atol=1e-3
    )

    # Cache hit: the renderer is not called and the tensors are identical.
    def boom(*args, **kwargs):
        raise AssertionError("renderer called on a cache hit")

    monkeypatch.setattr(cow_module, "render_mesh", boom)
    t0 = time.perf_counter()
    again = cow_scene(
        data_dir=COW_DIR, train_on_all_views=True, n_test_views=5, elevated_test_views=3
    )
    assert time.perf_counter() - t0 < 5.0
    assert torch.equal(again.images, scene.images)
    assert torch.equal(again.silhouettes, scene.silhouettes)
    assert torch.equal(again.cameras.R, scene.cameras.R) and torch.equal(
        again.cameras.T, scene.cameras.T
    )
    assert {k: v.tolist() for k, v in again.splits.items()} == {
        k: v.tolist() for k, v in scene.splits.items()
    }
    # Different parameters are a different cache entry (and would render).
    with pytest.raises(AssertionError, match="renderer called"):
        cow_scene(data_dir=COW_DIR, train_on_all_views=True, n_test_views=4)


def test_cow_scene_bad_arguments():
    with pytest.raises(ValueError, match="n_test_views"):
        cow_scene(data_dir=COW_DIR, n_test_views=30)
    with pytest.raises(ValueError, match="num_views"):
        cow_scene(data_dir=COW_DIR, num_views=0)
    with pytest.raises(ValueError, match="elevation_test"):
        cow_scene(data_dir=COW_DIR, elevated_test_views=2, elevation_test=95.0)


def test_missing_files_in_data_dir_are_all_listed(tmp_path):
    (tmp_path / "cow.mtl").write_text("newmtl m\n")
    with pytest.raises(SceneValidationError) as info:
        generate_cow_renders(data_dir=tmp_path)
    assert len(info.value.problems) == 2
    assert "cow.obj" in str(info.value) and "cow_texture.png" in str(info.value)


def test_offline_download_error(monkeypatch, tmp_path):
    monkeypatch.setenv("NERF_LAB_CACHE_DIR", str(tmp_path / "cache"))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(cow_module.urllib.request, "urlopen", offline)
    with pytest.raises(CowMeshUnavailableError) as info:
        cow_scene(num_views=4, n_test_views=1)
    msg = str(info.value)
    assert "https://dl.fbaipublicfiles.com/pytorch3d/data/cow_mesh/cow.obj" in msg
    assert str(tmp_path / "cache" / "cow_mesh") in msg and "data_dir" in msg


def test_download_verifies_checksums(monkeypatch, tmp_path):
    monkeypatch.setenv("NERF_LAB_CACHE_DIR", str(tmp_path / "cache"))
    requested = []

    def fake_urlopen(url, timeout=None):
        requested.append(url)
        return io.BytesIO((COW_DIR / url.rsplit("/", 1)[1]).read_bytes())

    monkeypatch.setattr(cow_module.urllib.request, "urlopen", fake_urlopen)
    folder = cow_module.cow_mesh_dir(None)
    assert folder == tmp_path / "cache" / "cow_mesh" and len(requested) == 3
    for name in ("cow.obj", "cow.mtl", "cow_texture.png"):
        assert (folder / name).read_bytes() == (COW_DIR / name).read_bytes()
    assert not list(folder.glob("*.tmp")) and not list(folder.glob(".*"))
    assert cow_module.cow_mesh_dir(None) == folder and len(requested) == 3  # no re-download

    (folder / "cow.mtl").unlink()
    monkeypatch.setattr(
        cow_module.urllib.request, "urlopen", lambda url, timeout=None: io.BytesIO(b"x")
    )
    with pytest.raises(SceneValidationError, match="SHA-256"):
        cow_module.cow_mesh_dir(None)
    assert not (folder / "cow.mtl").exists()
