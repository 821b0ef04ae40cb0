"""The library side of issue #15 round 2: output folders, depth range, progress, labelled
previews, umask-respecting atomic writes, mesh export with geometry metrics."""

from __future__ import annotations

import json
import os
import stat

import numpy as np
import pytest
import torch

from nerf_lab.raymarchers import RenderOutput
from nerf_lab.raysamplers import ray_bundle_to_ray_points


def test_new_output_dir_never_reuses_a_folder(tmp_path):
    from nerf_lab.run_outputs import new_output_dir

    made = [new_output_dir(tmp_path / "renders", "orbit") for _ in range(3)]
    assert len(set(made)) == 3 and all(p.is_dir() and p.name.startswith("orbit_") for p in made)
    with pytest.raises(ValueError, match="prefix"):
        new_output_dir(tmp_path, "a/b")


def test_depth_range_prefers_the_resolved_auto_depths():
    from nerf_lab.run_outputs import depth_range

    cfg = {"raysampler": {"min_depth": "auto", "max_depth": 4.0}}
    assert depth_range(cfg, {"depths": {"min_depth": 1.5}}) == (1.5, 4.0)
    assert depth_range({"raysampler": {"min_depth": 1, "max_depth": 3}}, {"depths": {}}) == (1, 3)
    with pytest.raises(ValueError, match="near < far"):
        depth_range({"raysampler": {"min_depth": 3, "max_depth": 1}}, {})


def test_view_progress_counts_views_and_forwards_the_stop_check():
    from nerf_lab.run_outputs import ViewProgress

    calls = []
    with ViewProgress(5, "test", lambda: len(calls) > 10, bar=False) as p:
        for i in range(5):
            calls.append(i)
            assert p() is False
            assert p.done == i
    assert p.done == 5  # the last view, once the render returned
    assert ViewProgress(1, "stop", lambda: True, bar=False)() is True


def test_labelled_preview_tiles_and_labels():
    from nerf_lab.visualize import labelled_preview

    h, w = 10, 12
    rgb = torch.rand(h, w, 3)
    out = RenderOutput(rgb, torch.ones(h, w, 1), torch.full((h, w, 1), 2.0),
                       torch.zeros(h, w, 4), torch.zeros(h, w, 4))  # fmt: skip
    panel = labelled_preview(out, rgb, (1.0, 3.0))
    assert panel.shape == (16 + h, 5 * w + 8, 3)
    tiles = [panel[16:, i * (w + 2) : i * (w + 2) + w] for i in range(5)]
    torch.testing.assert_close(tiles[0], tiles[1], atol=1 / 255, rtol=0)  # render == target
    from nerf_lab.video import apply_colormap

    torch.testing.assert_close(tiles[2][0, 0], apply_colormap(torch.tensor(0.0)), atol=1 / 255,
                               rtol=0)  # zero error  # fmt: skip
    torch.testing.assert_close(tiles[3][0, 0], apply_colormap(torch.tensor(0.5)), atol=1 / 255,
                               rtol=0)  # depth 2 in (1, 3)  # fmt: skip
    assert panel[:16].max() > 0.5  # the labels are written


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o002])
def test_checkpoints_and_json_follow_the_umask(tmp_path, umask):
    from nerf_lab.checkpoint import save_checkpoint, write_json_atomic

    old = os.umask(umask)
    try:
        path = save_checkpoint(tmp_path / "ckpt", {"step": 1, "model": {}}, 1)
        write_json_atomic(tmp_path / "m.json", {"a": 1})
    finally:
        os.umask(old)
    for p in (path, tmp_path / "ckpt" / "latest", tmp_path / "m.json"):
        assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~umask, p


def test_bbox_checks_and_default_from_the_run_config():
    from nerf_lab.export import check_bbox, default_bbox

    assert default_bbox({"model": {"bbox": 1.3}}) == 1.3
    assert default_bbox({"model": {"n_hidden_neurons": 3}}) == 1.0
    assert check_bbox([[-1, -2, -3], [1, 2, 3]]) == [[-1, -2, -3], [1, 2, 3]]
    for bad in (0, -1, True, [[0, 0, 0], [0, 1, 1]], [[0, 0], [1, 1]], "big"):
        with pytest.raises(ValueError, match="bbox="):
            check_bbox(bad)


def test_inverse_world_transform_round_trip():
    from nerf_lab.export import inverse_world_transform, transform_points

    angle = torch.tensor(0.7)
    c, s = torch.cos(angle), torch.sin(angle)
    m = torch.eye(4, dtype=torch.float64)
    m[:3, :3] = 2.5 * torch.tensor([[c, 0, s], [0, 1, 0], [-s, 0, c]], dtype=torch.float64)
    m[:3, 3] = torch.tensor([0.1, -0.3, 2.0])
    original = torch.randn(50, 3, dtype=torch.float64)
    normalised = transform_points(original, m)
    back = transform_points(normalised, inverse_world_transform({"world_transform": m}))
    torch.testing.assert_close(back, original)
    assert inverse_world_transform({"world_transform": None}) is None


class SphereField(torch.nn.Module):
    """Opacity 1 - exp(-sigma * delta) of a solid sphere (sigma 50 inside radius r);
    colour = (x + 1) / 2 of the point (a gradient, to check vertex colours)."""

    def __init__(self, radius: float = 0.6) -> None:
        super().__init__()
        self.radius = radius

    def forward(self, ray_bundle, **kwargs):
        pts = ray_bundle_to_ray_points(ray_bundle)
        delta = ray_bundle.lengths[..., 1:2] - ray_bundle.lengths[..., 0:1]
        sigma = 50.0 * (pts.norm(dim=-1, keepdim=True) < self.radius).float()
        dens = 1 - torch.exp(-sigma * delta[..., None])  # unit directions: delta is world
        colors = ((pts + 1) / 2).clamp(0, 1)
        return dens, colors


def test_export_mesh_sphere_metrics_and_original_frame(tmp_path):
    pytest.importorskip("skimage")
    import trimesh

    from nerf_lab.export import export_mesh

    r = 0.6
    true = trimesh.creation.icosphere(subdivisions=4, radius=r)
    true.export(tmp_path / "sphere.ply")
    data = {"_target_": "nerf_lab.data.mesh_scene", "path": str(tmp_path / "sphere.ply"),
            "normalize": False}  # fmt: skip
    wt = torch.eye(4, dtype=torch.float64)
    wt[:3, :3] *= 0.5  # capture -> scene: scale 0.5, shift (0.2, 0, 0)
    wt[0, 3] = 0.2
    out_dir = tmp_path / "mesh"
    out_dir.mkdir()
    res = export_mesh(SphereField(r), out_dir, 1.0, data, {"world_transform": wt},
                      resolution=48, level=0.5)  # fmt: skip
    step = 2.0 / 47
    assert res["geometry/chamfer"] < step  # marching cubes is within a voxel
    assert res["geometry/fscore@0.05"] > 0.99
    saved = json.loads((out_dir / "geometry.json").read_text())
    assert saved["geometry/chamfer"] == res["geometry/chamfer"]
    mesh = trimesh.load(out_dir / "mesh.ply")
    # saved in the capture's frame: centre (0 - 0.2) / 0.5 = -0.4, radius r / 0.5
    centre = mesh.vertices.mean(0)
    np.testing.assert_allclose(centre, [-0.4, 0, 0], atol=0.02)
    radii = np.linalg.norm(mesh.vertices - centre, axis=1)
    assert abs(radii.mean() - r / 0.5) < 2 * step / 0.5
    # the colours are the field's (x + 1) / 2 at the scene-frame vertex
    x_scene = mesh.vertices[:, 0] * 0.5 + 0.2
    colors = mesh.visual.vertex_colors[:, 0] / 255.0
    assert np.abs(colors - (x_scene + 1) / 2).mean() < 0.03
    obj = (out_dir / "mesh.obj").read_text().splitlines()
    assert sum(line.startswith("f ") for line in obj) == res["n_faces"]


def test_true_surface_of_the_procedural_scene_is_its_torus():
    from nerf_lab.data.procedural import torus_mesh
    from nerf_lab.export import true_surface

    verts, faces = true_surface({"_target_": "nerf_lab.data.procedural_scene"})
    torch.testing.assert_close(verts, torus_mesh().verts.float())
    assert faces.shape[-1] == 3
    assert true_surface({"_target_": "nerf_lab.data.blender_scene"}) is None


def test_sweep_dirname_puts_the_swept_keys_first():
    from nerf_lab.sweep_names import order_overrides, swept_keys

    argv = ["-m", "data=procedural", "trainer.n_iter=300", "optimizer.lr=1e-3,1e-2",
            "model.n_harmonic_functions=range(4,9,4)"]  # fmt: skip
    keys = swept_keys(argv, ["+raysampler.n_pts_per_ray"])
    assert keys == ["optimizer.lr", "model.n_harmonic_functions", "raysampler.n_pts_per_ray"]
    task = ["data=procedural", "trainer.n_iter=300", "optimizer.lr=0.01",
            "model.n_harmonic_functions=8", "trainer.device=cpu"]  # fmt: skip
    assert order_overrides(task, keys, ["trainer.device"]) == [
        "optimizer.lr=0.01", "model.n_harmonic_functions=8",
        "data=procedural", "trainer.n_iter=300",
    ]  # fmt: skip
    # no sweep: Hydra's own (sorted) order
    assert order_overrides(task[:2], [], []) == ["data=procedural", "trainer.n_iter=300"]


@pytest.mark.slow
def test_multirun_job_folders_start_with_the_swept_key(tmp_path):
    from tests.test_sweeps import tiny_sweep, train_cli

    sweep_dir = tmp_path / "sweep"
    args = tiny_sweep(sweep_dir, "model.n_harmonic_functions=2", "optimizer.lr=0.001,0.002")
    proc = train_cli(*args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    names = sorted(p.name for p in sweep_dir.iterdir() if p.is_dir())
    assert names[:2] == [
        "0_optimizer.lr=0.001,model.n_harmonic_functions=2",
        "1_optimizer.lr=0.002,model.n_harmonic_functions=2",
    ]
