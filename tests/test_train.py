"""Config composition, the trainer smoke test, TensorBoard tags, checkpoints, eval/render."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from nerf_lab.config import ConfigValueError, check_config
from nerf_lab.train import CONF_DIR, build_trainer, run
from tests.conftest import CAPTURE_FORMATS

CONF = Path(CONF_DIR)

# A tiny, fast scene and run: 32 px procedural object, 8 + 2 views, a few iterations.
TINY = [
    "data=procedural",
    "data.image_size=24",
    "data.num_views=8",
    "data.n_test_views=2",
    "model=small",
    "model.n_hidden_neurons=16",
    "model.n_harmonic_functions=4",
    "raysampler.n_rays_per_image=64",
    "raysampler.n_pts_per_ray=16",
    "trainer.batch_size=2",
    "trainer.device=cpu",
    "trainer.progress_bar=false",
    "trainer.turntable_frames=2",
    "trainer.chunk_size=512",
]


def compose_cfg(overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def group_options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def scalar_tags(run_dir: Path) -> dict[str, list]:
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return {t: acc.Scalars(t) for t in acc.Tags()["scalars"]}, acc.Tags()["images"]


@pytest.fixture
def mesh_file(tmp_path):
    import trimesh

    path = tmp_path / "box.ply"
    trimesh.creation.box(extents=(1.0, 0.6, 0.8)).export(path)
    return path


@pytest.fixture
def blender_dir(tmp_path):
    from nerf_lab.data import export_blender, procedural_scene

    out = tmp_path / "blender"
    export_blender(procedural_scene(num_views=6, n_test_views=2, image_size=24), out)
    return out


def _data_overrides(
    option: str,
    mesh_file: Path,
    blender_dir: Path,
    cow_dir: Path | None,
    capture_dirs: dict[str, Path] | None = None,
) -> list[str]:
    if option == "cow":
        if cow_dir is None:
            pytest.skip("cow mesh not available")
        return [
            "data=cow",
            f"data.data_dir={cow_dir}",
            "data.num_views=6",
            "data.n_test_views=2",
            "data.image_size=32",
        ]
    if option == "mesh":
        return [
            "data=mesh",
            f"data.path={mesh_file}",
            "data.num_views=4",
            "data.n_test_views=2",
            "data.image_size=24",
        ]
    if option == "blender":
        return ["data=blender", f"data.path={blender_dir}"]
    if option in CAPTURE_FORMATS:
        return [f"data={option}", f"data.path={capture_dirs[option]}"]
    return [f"data={option}", "data.num_views=4", "data.n_test_views=2", "data.image_size=24"]


def test_every_option_of_every_group_composes_and_instantiates(mesh_file, blender_dir, request):
    cow = (
        request.getfixturevalue("cow_dir")
        if (Path(CONF_DIR).parent.parent / "shared").exists()
        else None
    )
    groups = ["raysampler", "model", "loss", "optimizer", "trainer"]
    for group in groups:
        for option in group_options(group):
            cfg = compose_cfg([f"{group}={option}"])
            check_config(cfg)
            instantiate(cfg.raysampler.train, min_x=-1.0, max_x=1.0, min_y=-1.0, max_y=1.0)
            instantiate(cfg.raysampler.render)(image_height=8, image_width=8)
            model = instantiate(cfg.model)
            opt = instantiate(cfg.optimizer.optim)(model.parameters())
            instantiate(cfg.optimizer.scheduler)(opt)
            instantiate(cfg.loss)
            instantiate(cfg.raymarcher, background_color=None)
            OmegaConf.to_object(cfg.trainer)
    for option in group_options("data"):
        captures = request.getfixturevalue("capture_dirs") if option in CAPTURE_FORMATS else None
        cfg = compose_cfg(_data_overrides(option, mesh_file, blender_dir, cow, captures))
        check_config(cfg)
        scene = instantiate(cfg.data)
        assert (
            scene.images.ndim == 4
            and len(scene.splits["train"]) > 0
            and len(scene.splits["test"]) > 0
        )
    for option in group_options("experiment"):
        cfg = compose_cfg([f"experiment={option}"])
        check_config(cfg)
        instantiate(cfg.model)
    tutorial = compose_cfg(["experiment=tutorial"])
    assert tutorial.model.n_harmonic_functions == 60 and tutorial.model.n_hidden_neurons == 256
    assert tutorial.raysampler.n_rays_per_image == 750 and tutorial.raysampler.n_pts_per_ray == 128
    assert (tutorial.raysampler.min_depth, tutorial.raysampler.max_depth) == (0.1, 3.0)
    assert tutorial.trainer.n_iter == 3000 and tutorial.trainer.batch_size == 6
    assert tutorial.optimizer.lr == 1e-3 and list(tutorial.optimizer.decay_at) == [0.75]
    assert (
        tutorial.loss.scaling == 0.1
        and tutorial.trainer.log_every == 10
        and tutorial.trainer.render_every == 100
    )


def test_bad_key_and_bad_values_fail_clearly():
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException, match="n_iterr"):
        compose_cfg(["trainer.n_iterr=5"])
    with pytest.raises(ConfigCompositionException, match="n_hidden_neurons"):
        compose_cfg(["model.n_hidden_neurons=abc"])
    with pytest.raises(ConfigCompositionException):
        compose_cfg(["model=bogus"])
    cfg = compose_cfg(
        [
            "raysampler.min_depth=3.5",
            "raysampler.max_depth=2.0",
            "optimizer.lr=-1",
            "trainer.n_iter=0",
            "data=procedural",
            "data.fov=180",
            "model.render_color_threshold=1.0",
        ]
    )
    with pytest.raises(ConfigValueError) as e:
        check_config(cfg)
    msg = str(e.value)
    for needle in (
        "raysampler.min_depth=3.5 and raysampler.max_depth=2.0",
        "optimizer.lr=-1",
        "trainer.n_iter=0: must be an integer >= 1",
        "data.fov=180",
        "model.render_color_threshold=1.0: must be a number in [0, 1)",
    ):
        assert needle in msg, msg


def test_smoke_training_writes_tags_checkpoint_metrics_and_renders(tmp_path):
    cfg = compose_cfg(
        TINY
        + [
            "trainer.n_iter=6",
            "trainer.log_every=2",
            "trainer.render_every=3",
            "trainer.eval_every=3",
            "trainer.checkpoint_every=3",
        ]
    )
    psnr = run(cfg, tmp_path)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["iterations"] == 6
    for key in ("eval/psnr", "eval/ssim", "train_seconds", "iterations"):
        assert key in metrics
    assert psnr == pytest.approx(metrics["eval/psnr"])
    scalars, images = scalar_tags(tmp_path)
    for tag in (
        "train/loss/color",
        "train/loss/silhouette",
        "train/loss",
        "train/psnr",
        "opt/lr",
        "perf/rays_per_s",
        "perf/iter_s",
        "eval/psnr",
        "eval/ssim",
    ):
        assert tag in scalars, (tag, sorted(scalars))
    assert [e.step for e in scalars["train/loss"]] == [1, 3, 5]
    assert [e.step for e in scalars["eval/psnr"]] == [3, 6]
    assert "render/heldout" in images and "turntable" in images
    ckpts = sorted(p.name for p in (tmp_path / "checkpoints").glob("step_*.pt"))
    assert ckpts == ["step_00000003.pt", "step_00000006.pt"]
    assert (tmp_path / "checkpoints" / "latest").read_text().strip() == "step_00000006.pt"
    state = torch.load(tmp_path / "checkpoints" / "step_00000006.pt", weights_only=True)
    assert state["step"] == 6 and state["config"]["trainer"]["n_iter"] == 6
    assert (tmp_path / "renders" / "turntable.gif").stat().st_size > 0
    assert (tmp_path / "renders" / "turntable_grid.png").stat().st_size > 0


def test_short_fit_raises_psnr(tmp_path):
    cfg = compose_cfg(
        TINY
        + [
            "raysampler.n_pts_per_ray=32",
            "trainer.n_iter=150",
            "trainer.log_every=0",
            "trainer.render_every=0",
            "trainer.turntable_frames=0",
            "optimizer.lr=3e-3",
            "trainer.checkpoint_every=0",
        ]
    )
    trainer = build_trainer(cfg, tmp_path)
    before = trainer.evaluate()["eval/psnr"]
    after = trainer.fit()["eval/psnr"]
    assert after > before + 2.0, (before, after)


def test_eval_and_render_rebuild_from_run_dir(tmp_path):
    from nerf_lab import eval as nl_eval
    from nerf_lab import render as nl_render

    cfg = compose_cfg(TINY + ["trainer.n_iter=4", "trainer.turntable_frames=0"])
    run(cfg, tmp_path)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    again = nl_eval.main([f"run_dir={tmp_path}"])
    assert again["eval/psnr"] == pytest.approx(metrics["eval/psnr"], abs=1e-6)
    assert json.loads((tmp_path / "eval.json").read_text())["iterations"] == 4
    gif = nl_render.main([f"run_dir={tmp_path}", "frames=3"])
    assert Path(gif).exists()
    with pytest.raises(SystemExit, match="Unknown argument"):
        nl_eval.main([f"run_dir={tmp_path}", "bogus=1"])


def test_pixel_lookup_returns_the_pixel_each_ray_went_through():
    from nerf_lab.raysamplers import ndc_pixel_grid
    from nerf_lab.trainer import sample_images_at_rays

    for h, w in ((5, 5), (4, 7), (6, 3)):
        images = torch.arange(2 * h * w, dtype=torch.float32).view(2, h, w, 1)
        grid = ndc_pixel_grid(h, w).reshape(1, -1, 2).expand(2, -1, -1)
        # jitter inside the pixel: still the same pixel
        jitter = (torch.rand_like(grid) - 0.5) * (0.9 / min(h, w))
        out = sample_images_at_rays(images, grid + jitter, "pixel")
        torch.testing.assert_close(out, images.reshape(2, -1, 1))
    # the tutorial lookup is half a pixel off: at the centre of the top-left pixel it
    # blends in the neighbours
    images = torch.zeros(1, 4, 4, 1)
    images[0, 0, 0] = 1.0
    centre = ndc_pixel_grid(4, 4)[0, 0].view(1, 1, 2)
    assert sample_images_at_rays(images, centre, "pixel").item() == 1.0
    assert sample_images_at_rays(images, centre, "tutorial").item() < 1.0


def test_bench_script_prints_one_json_line(tmp_path):
    import subprocess
    import sys

    run(compose_cfg(TINY + ["trainer.n_iter=2", "trainer.turntable_frames=0"]), tmp_path)
    repo = CONF.parent
    out = (
        subprocess.run(
            [
                sys.executable,
                str(repo / "scripts" / "bench.py"),
                "--warmup",
                "1",
                "--iters",
                "1",
                "--renders",
                "1",
                "--render-size",
                "16",
                "--render-run",
                str(tmp_path),
                *TINY,
            ],
            check=True,
            capture_output=True,
            text=True,
            cwd=repo,
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    result = json.loads(out)
    for key in ("iter_s_median", "rays_per_s", "points_per_s", "peak_rss_mb", "device", "render_s"):
        assert key in result
    assert result["rays_per_iter"] == 2 * 64 and result["device"] == "cpu"
    assert result["render_trained_s"] > 0


def test_bf16_precision_trains_and_stays_close_to_fp32(tmp_path):
    base = TINY + [
        "trainer.n_iter=2",
        "trainer.turntable_frames=0",
        "trainer.log_every=0",
        "trainer.render_every=0",
    ]
    fp32 = build_trainer(compose_cfg(base), tmp_path / "a")
    bf16 = build_trainer(compose_cfg(base + ["trainer.precision=bf16"]), tmp_path / "b")
    r32 = fp32.render_views(fp32.test_cameras[[0]], with_depth=False).rgb
    r16 = bf16.render_views(bf16.test_cameras[[0]], with_depth=False).rgb
    assert r16.dtype == torch.float32
    assert (r32 - r16).abs().max() < 0.05
    stats = bf16.train_step()
    assert all(torch.isfinite(p).all() for p in bf16.model.parameters())
    assert all(p.dtype == torch.float32 for p in bf16.model.parameters())  # fp32 master weights
    assert stats["loss"] > 0


def test_chunked_training_step_gives_the_same_gradient(tmp_path):
    base = TINY + ["trainer.n_iter=2", "trainer.turntable_frames=0"]
    t = build_trainer(compose_cfg(base + ["trainer.target_lookup=tutorial"]), tmp_path / "tut")
    assert t.train_step()["loss"] > 0  # the tutorial's lookup trains too
    grads = []
    for extra in ([], ["trainer.train_chunk_size=37"]):
        t = build_trainer(compose_cfg(base + extra), tmp_path / str(len(extra)))
        torch.manual_seed(5)
        stats = t.train_step()
        grads.append(({n: p.grad.clone() for n, p in t.model.named_parameters()}, stats))
    (g0, s0), (g1, s1) = grads
    for name in g0:
        torch.testing.assert_close(g1[name], g0[name], rtol=1e-4, atol=1e-7, msg=name)
    assert s1["loss"] == pytest.approx(s0["loss"], rel=1e-5)
    assert s1["psnr"] == pytest.approx(s0["psnr"], rel=1e-5)


def test_job_dirname_is_filesystem_safe_and_bounded():
    from nerf_lab.config import job_dirname

    assert job_dirname("model.n_harmonic_functions=4,raysampler.max_depth=2.5") == (
        "model.n_harmonic_functions=4,raysampler.max_depth=2.5"
    )
    long = job_dirname("data.path=/a/b," + "x=1," * 100)
    assert "/" not in long and len(long) <= 120
    assert long != job_dirname("data.path=/a/b," + "x=2," * 100)


def test_missing_plugin_gives_a_clear_message():
    from nerf_lab.plugins import missing_plugin_message, plugin_installed

    msg = missing_plugin_message(["hydra/sweeper=optuna"], CONF)
    if not plugin_installed("hydra_optuna_sweeper"):
        assert "pip install 'nerf_lab[optuna]'" in msg
    assert missing_plugin_message(["model=small"], CONF) is None
