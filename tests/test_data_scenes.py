"""Scene container, procedural scene, mesh files as scenes, and the scene cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import trimesh

import nerf_lab.data.procedural as procedural_module
from nerf_lab.cameras import FoVPerspectiveCameras
from nerf_lab.data import Scene, SceneValidationError, mesh_scene, procedural_scene
from nerf_lab.data.cache import cache_dir, scene_cache_key
from nerf_lab.data.mesh import load_mesh
from nerf_lab.data.views import orbit_layout

SMALL = {"num_views": 8, "n_test_views": 2, "image_size": 32}


def _tiny_scene() -> Scene:
    n = 4
    return Scene(
        name="tiny",
        cameras=FoVPerspectiveCameras(R=torch.eye(3).expand(n, 3, 3), T=torch.zeros(n, 3)),
        images=torch.rand(n, 5, 6, 3),
        silhouettes=torch.ones(n, 5, 6),
        splits={"train": torch.tensor([0, 1, 2]), "test": torch.tensor([3])},
    )


def test_scene_container():
    scene = _tiny_scene()
    assert len(scene) == 4 and scene.image_size == (5, 6)
    cams, images, sils = scene.split("train")
    assert len(cams) == 3 and images.shape == (3, 5, 6, 3) and sils.shape == (3, 5, 6)
    with pytest.raises(KeyError, match=r"available splits: \['train', 'test'\]"):
        scene.split("val")
    moved = scene.to("cpu")
    assert torch.equal(moved.images, scene.images) and moved.splits["test"].tolist() == [3]
    with pytest.raises(ValueError, match="missing"):
        Scene("x", scene.cameras, scene.images, scene.silhouettes, {"train": torch.arange(4)})
    with pytest.raises(ValueError, match="outside"):
        Scene("x", scene.cameras, scene.images, scene.silhouettes,
              {"train": torch.arange(4), "test": torch.tensor([4])})  # fmt: skip
    with pytest.raises(ValueError, match="cameras"):
        Scene("x", scene.cameras[[0, 1]], scene.images, scene.silhouettes, scene.splits)


def test_orbit_layout_test_views_between_training_views():
    azim, elev, t_azim, t_elev = orbit_layout(8, 3, 180.0, (0.0, 28.0))
    assert torch.allclose(azim, torch.arange(8) * 45.0 - 180.0)
    assert torch.allclose(elev, torch.arange(8) * 4.0)
    assert torch.allclose(t_azim % 45.0, torch.full((3,), 22.5))
    assert torch.allclose(t_elev % 4.0, torch.full((3,), 2.0))
    with pytest.raises(ValueError, match="azimuth_range"):
        orbit_layout(8, 3, 200.0, (0.0, 10.0))


def test_procedural_scene(monkeypatch):
    scene = procedural_scene(**SMALL)
    assert scene.name == "procedural" and len(scene) == 10
    assert scene.images.shape == (10, 32, 32, 3) and scene.silhouettes.shape == (10, 32, 32)
    assert scene.splits["train"].tolist() == list(range(8))
    assert scene.splits["test"].tolist() == [8, 9]
    sil = scene.silhouettes
    assert ((sil == 0) | (sil == 1)).all() and 0.05 < sil.mean() < 0.8
    assert not ((scene.images.amax(-1) > 0) & (sil == 0)).any()
    assert scene.images.max() > 0.7  # lit, textured, with highlights
    # Several distinct colours of the procedural texture are visible.
    colours = (scene.images[sil > 0] * 4).round().unique(dim=0)
    assert len(colours) > 10

    # Cache hit: the renderer is not called, tensors identical.
    monkeypatch.setattr(procedural_module, "render_mesh", _no_render)
    again = procedural_scene(**SMALL)
    assert torch.equal(again.images, scene.images) and torch.equal(again.cameras.R, scene.cameras.R)
    assert len(list((cache_dir() / "scenes").glob("procedural-*.pt"))) == 1
    with pytest.raises(AssertionError):
        procedural_scene(**SMALL, background="white")


def _no_render(*args, **kwargs):
    raise AssertionError("renderer called on a cache hit")


def test_procedural_white_background_and_no_cache(tmp_path, monkeypatch):
    scene = procedural_scene(**SMALL, background="white", cache=False)
    assert scene.background_color == (1.0, 1.0, 1.0)
    assert torch.equal(
        scene.images[scene.silhouettes == 0], torch.ones_like(scene.images[scene.silhouettes == 0])
    )
    assert not (cache_dir() / "scenes").exists()
    with pytest.raises(ValueError, match="background"):
        procedural_scene(**SMALL, background="purple")


def test_cache_key_depends_on_params_and_files(tmp_path):
    f = tmp_path / "a.txt"
    f.write_text("one")
    k1 = scene_cache_key("mesh", {"a": 1, "b": [1.0, 2.0]}, [f])
    assert k1 == scene_cache_key("mesh", {"b": [1, 2], "a": 1.0}, [f])
    assert k1 != scene_cache_key("mesh", {"a": 2, "b": [1.0, 2.0]}, [f])
    f.write_text("two")
    assert k1 != scene_cache_key("mesh", {"a": 1, "b": [1.0, 2.0]}, [f])


def test_mesh_scene_ply_vertex_colours(tmp_path):
    sphere = trimesh.creation.icosphere(subdivisions=2, radius=1.0)
    colors = np.zeros((len(sphere.vertices), 4), dtype=np.uint8)
    colors[:] = (230, 20, 20, 255)
    sphere.visual.vertex_colors = colors
    path = tmp_path / "red_sphere.ply"
    sphere.export(path)
    scene = mesh_scene(path, num_views=6, n_test_views=2, image_size=32, elevation_range=(0, 20))
    assert scene.name == "red_sphere" and scene.images.shape == (8, 32, 32, 3)
    obj = scene.images[scene.silhouettes.bool() & (scene.images.amax(-1) > 0)]
    assert (obj[:, 0] > obj[:, 1] + 0.2).float().mean() > 0.95  # red
    # The sphere fills the same area from every direction.
    area = scene.silhouettes.mean((1, 2))
    assert (area.max() - area.min()) < 0.02


def test_mesh_scene_obj_and_glb(tmp_path):
    box = trimesh.creation.box(extents=(1.0, 0.6, 0.4))
    obj_path = tmp_path / "box.obj"
    box.export(obj_path)
    grey = mesh_scene(obj_path, num_views=4, n_test_views=1, image_size=24, cache=False)
    obj = grey.images[grey.silhouettes.bool() & (grey.images.amax(-1) > 0)]
    assert torch.allclose(obj[:, 0], obj[:, 1]) and torch.allclose(obj[:, 1], obj[:, 2])  # grey
    box.visual.vertex_colors = np.tile(np.array([[20, 40, 220, 255]], dtype=np.uint8), (8, 1))
    glb_path = tmp_path / "box.glb"
    box.export(glb_path)
    blue = mesh_scene(glb_path, num_views=4, n_test_views=1, image_size=24, cache=False)
    obj = blue.images[blue.silhouettes.bool() & (blue.images.amax(-1) > 0)]
    assert (obj[:, 2] > obj[:, 0] + 0.2).float().mean() > 0.95
    assert torch.equal(blue.silhouettes, grey.silhouettes)  # same geometry and cameras


def test_mesh_scene_bad_files(tmp_path):
    with pytest.raises(SceneValidationError, match="does not exist"):
        mesh_scene(tmp_path / "nope.ply")
    bad = tmp_path / "bad.obj"
    bad.write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 7\nv a b c\n")
    with pytest.raises(SceneValidationError) as info:
        load_mesh(bad)
    assert len(info.value.problems) == 2  # the bad 'v' line and the out-of-range face
    with pytest.raises(ValueError, match="fov"):
        mesh_scene(tmp_path / "nope.ply", fov=0.0)
