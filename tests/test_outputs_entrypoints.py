"""Issue #15 round 2: what a researcher looks at, wired into train / eval / render / export.

One tiny procedural run (module fixture) is trained once; the entry points are run on it.
"""

from __future__ import annotations

import csv
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from nerf_lab.train import run
from tests.conftest import REPO_ROOT, TINY, compose_cfg

N_ITER = 6
OVERRIDES = [
    f"trainer.n_iter={N_ITER}",
    "trainer.log_every=2",
    "trainer.render_every=4",  # previews at 1 and 5; the final one at 6
    "trainer.eval_every=2",
    "trainer.eval_max_views=1",
    "trainer.checkpoint_every=0",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished tiny run, trained under umask 022."""
    run_dir = tmp_path_factory.mktemp("run")
    old = os.umask(0o022)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NERF_LAB_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        torch.manual_seed(0)
        try:
            run(compose_cfg(TINY + OVERRIDES), run_dir)
        finally:
            os.umask(old)
        yield run_dir


@pytest.fixture
def run_dir(trained, monkeypatch):
    monkeypatch.setenv("NERF_LAB_CACHE_DIR", str(trained.parent / "cache_eval"))
    return trained


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def psnr_u8(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) / 255 - b.astype(np.float64) / 255) ** 2)
    return float(10 * np.log10(1 / mse))


# ---------------------------------------------------------------------------------------- item 1
def test_default_periodic_evaluation_gives_a_curve_at_bounded_cost():
    s = compose_cfg([]).trainer
    assert s.eval_every > 0 and 0 < s.eval_max_views <= 5
    n_iter = 300
    points = [k for k in range(1, n_iter + 1) if k % s.eval_every == 0 and k < n_iter] + [n_iter]
    assert len(points) >= 3


def test_training_eval_curve_final_preview_and_labelled_panel(trained):
    acc = EventAccumulator(str(trained), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    assert [e.step for e in acc.Scalars("eval/psnr")] == [2, 4, 6]
    previews = acc.Images("render/heldout")
    assert [e.step for e in previews] == [1, 5, 6]  # the final preview at the last step
    h = w = 24  # TINY's image size, render_scale 1
    assert (previews[-1].height, previews[-1].width) == (16 + h, 5 * w + 8)


def test_training_saves_per_view_images_table_and_eval_json(trained):
    folders = sorted((trained / "eval").glob(f"step_{N_ITER:08d}_*"))
    assert len(folders) == 1
    folder = folders[0]
    metrics = json.loads((folder / "eval.json").read_text())
    assert json.loads((trained / "eval.json").read_text()) == metrics
    final = json.loads((trained / "metrics.json").read_text())
    assert metrics["psnr"] == pytest.approx(final["eval/psnr"])
    assert metrics["eval/n_views"] == 2  # all held-out views, not eval_max_views
    from nerf_lab.metrics_lpips import lpips_available

    ok, reason = lpips_available()
    if not ok:
        assert metrics["lpips"] is None and metrics["lpips_reason"] == reason
    assert "11x11 Gaussian" in metrics["protocol"]["ssim"]
    rows = list(csv.DictReader((folder / "views.csv").open()))
    assert [int(r["view"]) for r in rows] == [0, 1]
    for r, p, s in zip(rows, metrics["eval/psnr_per_view"], metrics["eval/ssim_per_view"],
                       strict=True):  # fmt: skip
        assert float(r["psnr"]) == pytest.approx(p) and float(r["ssim"]) == pytest.approx(s)
        render = iio.imread(folder / r["render"])
        target = iio.imread(folder / r["target"])
        assert render.shape == target.shape == (24, 24, 3)
        # the saved 8-bit images give (nearly) the reported PSNR
        assert psnr_u8(render, target) == pytest.approx(p, abs=0.3)
        for k in ("error", "depth"):
            assert iio.imread(folder / r[k]).shape == (24, 24, 3)
    for path in [*folder.iterdir(), trained / "metrics.json", trained / "eval.json"]:
        assert mode(path) == 0o644, path
    assert mode(next((trained / "checkpoints").glob("step_*.pt"))) == 0o644


def test_startup_summary_line(trained, caplog, tmp_path):
    caplog.set_level("INFO", logger="nerf_lab")
    run(compose_cfg(TINY + ["trainer.n_iter=1", "trainer.turntable_frames=0"]), tmp_path)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("start:")]
    assert len(lines) == 1
    for part in ("device=cpu", "threads=", "precision=fp32", "train_views=8", "test_views=2",
                 "image=24x24", "parameters=", "rays/step=2x64=128 x 16 points"):  # fmt: skip
        assert part in lines[0], (part, lines[0])


def test_eval_cli_writes_a_new_folder_each_call(run_dir):
    from nerf_lab import eval as nl_eval

    assert nl_eval.main([f"run_dir={run_dir}", "progress=false"]) == 0
    assert nl_eval.main([f"run_dir={run_dir}", "eval_max_views=1"]) == 0
    folders = sorted((run_dir / "eval").glob(f"step_{N_ITER:08d}_*"))
    assert len(folders) == 3  # training's + 2 calls, none overwritten
    first = json.loads((folders[0] / "eval.json").read_text())
    latest = json.loads((run_dir / "eval.json").read_text())
    assert latest["eval/n_views"] == 1
    assert latest["eval/psnr_per_view"][0] == pytest.approx(first["eval/psnr_per_view"][0],
                                                            abs=1e-4)  # fmt: skip
    assert nl_eval.main([f"run_dir={run_dir}", "eval_max_views=-1"]) == 1


# ---------------------------------------------------------------------------------------- item 2
def n_frames(path: Path) -> int:
    return iio.imread(path, index=None).shape[0]


def test_render_paths_write_new_folders_with_rgb_and_depth_videos(run_dir):
    from nerf_lab import render as nl_render
    from nerf_lab.video import mp4_available

    assert nl_render.main([f"run_dir={run_dir}", "frames=3", "progress=false"]) == 0
    assert nl_render.main([f"run_dir={run_dir}", "frames=3", "elevation=20"]) == 0
    orbits = sorted((run_dir / "renders").glob("orbit_*"))
    assert len(orbits) == 2
    for name in ("rgb", "depth"):
        assert n_frames(orbits[0] / f"{name}.gif") >= 1  # Pillow merges identical frames
        if mp4_available()[0]:
            assert n_frames(orbits[0] / f"{name}.mp4") == 3
        else:
            assert not (orbits[0] / f"{name}.mp4").exists()
    assert len(json.loads((orbits[0] / "camera_path.json").read_text())["camera_path"]) == 3
    assert iio.imread(orbits[0] / "grid.png").shape == (2 * 24, 2 * 24, 3)
    assert mode(orbits[0] / "rgb.gif") & 0o777 == 0o666 & ~_umask()
    # height/width; spiral; interpolate through training views; a camera-path file
    argv = [f"run_dir={run_dir}", "path=spiral", "frames=4", "height=16", "width=20"]
    assert nl_render.main(argv) == 0
    spiral = next((run_dir / "renders").glob("spiral_*"))
    assert iio.imread(spiral / "rgb.gif", index=0).shape == (16, 20, 3)
    argv = [f"run_dir={run_dir}", "path=interpolate", "frames=5", "keyframes=[0,3,5]"]
    assert nl_render.main(argv) == 0
    path_json = orbits[0] / "camera_path.json"
    assert nl_render.main([f"run_dir={run_dir}", "path=file", f"file={path_json}"]) == 0
    again = next((run_dir / "renders").glob("file_*"))
    a = iio.imread(orbits[0] / "rgb.gif", index=None).astype(float)
    b = iio.imread(again / "rgb.gif", index=None).astype(float)
    assert a.shape == b.shape and np.abs(a - b).mean() < 2.0  # the same cameras again
    for bad in (["path=zigzag"], ["frames=0"], ["height=16"], ["path=file"],
                ["path=interpolate", "keyframes=[0]"]):  # fmt: skip
        assert nl_render.main([f"run_dir={run_dir}", *bad]) == 1, bad


def _umask() -> int:
    from nerf_lab.fileio import current_umask

    return current_umask()


def test_orbit_depth_video_uses_the_run_depth_range(run_dir):
    """Depth colours: Turbo over the run's fixed (min_depth, max_depth)."""
    from nerf_lab.run_outputs import depth_range
    from nerf_lab.runs import load_run

    run_ = load_run(run_dir)
    near, far = depth_range(run_.config, run_.setup)
    rs = run_.config.raysampler
    if rs.min_depth == "auto":  # the default: the scene's own near/far, saved with the run
        scene = run_.scene()
        assert (near, far) == pytest.approx((scene.near, scene.far))
    else:
        assert (near, far) == (rs.min_depth, rs.max_depth)
    assert depth_range({"raysampler": {"min_depth": 0.5, "max_depth": 2.0}}, {}) == (0.5, 2.0)


@pytest.mark.parametrize("module", ["train", "eval", "render", "export"])
def test_help_exits_zero(module):
    proc = subprocess.run([sys.executable, "-m", f"nerf_lab.{module}", "--help"],
                          capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip()


@pytest.mark.parametrize("script", ["nerf-lab-eval", "nerf-lab-render", "nerf-lab-export"])
def test_console_scripts_exist_and_help_exits_zero(script):
    exe = Path(sys.executable).parent / script
    if not exe.exists():
        pytest.skip(f"{exe} not installed (pip install -e .)")
    proc = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


# ---------------------------------------------------------------------------------------- item 3
def test_export_depth_png16_and_npy(run_dir):
    from nerf_lab import export as nl_export

    assert nl_export.main([f"run_dir={run_dir}", "what=depth", "opacity_threshold=0"]) == 0
    folder = next((run_dir / "exports").glob("depth_*"))
    for i in range(2):
        png = iio.imread(folder / f"view_{i:03d}_depth.png")
        npy = np.load(folder / f"view_{i:03d}_depth.npy")
        assert png.dtype == np.uint16 and png.shape == npy.shape == (24, 24)
        valid = np.isfinite(npy) & (npy > 0)
        assert valid.any()
        np.testing.assert_allclose(png[valid] / 1000.0, npy[valid], atol=0.0005 + 1e-6)
        assert mode(folder / f"view_{i:03d}_depth.png") == 0o666 & ~_umask()
    assert json.loads((folder / "depth.json").read_text())["png_scale"] == 1000.0


def test_export_pointcloud_counts_the_opaque_pixels(run_dir):
    import trimesh

    from nerf_lab import export as nl_export
    from nerf_lab.runs import load_run

    run_ = load_run(run_dir)
    cams = run_.scene().split("test")[0]
    out = run_.render_views(cams)
    t = float(out.opacity.median())  # about half of the pixels
    argv = [f"run_dir={run_dir}", "what=pointcloud", f"opacity_threshold={t!r}"]
    assert nl_export.main(argv) == 0
    folder = next((run_dir / "exports").glob("pointcloud_*"))
    cloud = trimesh.load(folder / "pointcloud.ply")
    assert 0 < len(cloud.vertices) == int((out.opacity >= t).sum()) < out.opacity.numel()
    assert cloud.colors.shape[0] == len(cloud.vertices)
    assert nl_export.main([f"run_dir={run_dir}", "what=volume"]) == 1
    assert nl_export.main([f"run_dir={run_dir}", "what=depth", "opacity_threshold=1.5"]) == 1


def test_export_mesh_cli_with_geometry_metrics(run_dir):
    pytest.importorskip("skimage")
    from nerf_lab import export as nl_export
    from nerf_lab.export_utils import grid_points, query_density
    from nerf_lab.runs import load_run

    field = load_run(run_dir).renderer.field
    pts, step = grid_points(1.0, (12, 12, 12))
    opac = query_density(field, pts, min(step))
    level = float(0.5 * (opac.min() + opac.max()))
    argv = [f"run_dir={run_dir}", "what=mesh", "resolution=12", f"level={level}",
            "geometry_points=2000"]  # fmt: skip
    assert nl_export.main(argv) == 0
    folder = next((run_dir / "exports").glob("mesh_*"))
    assert (folder / "mesh.ply").stat().st_size > 0 and (folder / "mesh.obj").stat().st_size > 0
    geometry = json.loads((folder / "geometry.json").read_text())
    evals = json.loads((run_dir / "eval.json").read_text())
    assert geometry["geometry/chamfer"] > 0
    assert evals["geometry/chamfer"] == geometry["geometry/chamfer"]
    assert 0 <= evals["geometry/fscore@0.05"] <= 1
    assert "eval/psnr" in evals  # merged, not replaced
    assert nl_export.main([f"run_dir={run_dir}", "what=mesh", "level=0.9999999"]) == 1
    assert nl_export.main([f"run_dir={run_dir}", "what=mesh", "bbox=-1"]) == 1
