"""Method presets (``experiment=``), the method study (``+sweep=methods``) and its summary
script ``scripts/method_study.py``."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from torch.utils.tensorboard import SummaryWriter

from nerf_lab.config import check_config
from nerf_lab.train import run
from tests.conftest import CONF, compose_cfg

REPO = CONF.parent
STUDY = REPO / "scripts" / "method_study.py"

#: The method presets: not the tutorial's settings, nor the first-run demo on the torus, nor
#: ``fast``, the alias of the study's best.
METHODS = sorted(
    p.stem
    for p in (CONF / "experiment").glob("*.yaml")
    if p.stem not in ("tutorial", "quick", "fast")
)

#: A tiny procedural scene and a few rays: the presets' own fields, samplers and losses.
TINY_SCENE = [
    "data=procedural",
    "data.image_size=24",
    "data.num_views=8",
    "data.n_test_views=2",
    "raysampler.n_rays_per_image=32",
    "trainer.batch_size=1",
    "trainer.device=cpu",
    "trainer.progress_bar=false",
    "trainer.turntable_frames=0",
    "trainer.render_every=0",
    "trainer.checkpoint_every=0",
    "trainer.chunk_size=1024",
    "trainer.log_every=1",
]


def load_study_module():
    spec = importlib.util.spec_from_file_location("method_study", STUDY)
    module = importlib.util.module_from_spec(spec)
    sys.modules["method_study"] = module
    spec.loader.exec_module(module)
    return module


ms = load_study_module()


def test_the_method_presets_are_there():
    assert {"voxel", "nerf_hierarchical", "ngp", "kplanes"} <= set(METHODS)


def test_fast_is_the_best_method_of_the_study_under_its_own_name():
    """experiment=fast composes exactly as the method it names (docs/methods.md), but for
    the run name."""
    fast, best = compose_cfg(["experiment=fast"]), compose_cfg(["experiment=kplanes"])
    assert fast.name == "fast"
    fast.name = best.name
    assert fast == best


@pytest.mark.parametrize("method", METHODS)
def test_preset_names_itself_and_uses_the_scenes_depth_range(method):
    cfg = compose_cfg([f"experiment={method}"])
    assert cfg.name == method
    assert cfg.raysampler.min_depth == "auto" and cfg.raysampler.max_depth == "auto"
    if method == "voxel":
        # its silhouette term is left out on scenes without masks
        assert cfg.loss.terms.silhouette.required is False
    else:
        # any scene: no silhouette term (scenes without masks have no silhouette targets)
        assert "silhouette" not in cfg.loss.terms
    text = (CONF / "experiment" / f"{method}.yaml").read_text()
    assert text.startswith("# @package _global_") and "Sources:" in text


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_preset_builds_and_trains_a_few_iterations(method, tmp_path):
    cfg = compose_cfg([f"experiment={method}", *TINY_SCENE, "trainer.n_iter=3"])
    psnr = run(cfg, tmp_path)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["status"] == "completed", metrics.get("error")
    assert metrics["iterations"] == 3 and math.isfinite(psnr)
    assert psnr == pytest.approx(metrics["eval/psnr"])


def test_the_study_sweeps_every_method_preset():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["+sweep=methods"], return_hydra_config=True)
    swept = cfg.hydra.sweeper.params.experiment.split(",")
    assert sorted(swept) == METHODS
    assert cfg.name == "sweep_methods" and cfg.trainer.eval_every > 0
    for method in swept:
        check_config(compose_cfg(["+sweep=methods", f"experiment={method}"]))


def test_the_study_settings_come_after_the_preset():
    """+sweep=methods is later in the defaults list than experiment=: it wins, the
    command line wins over both."""
    cfg = compose_cfg(["experiment=ngp", "+sweep=methods"])
    assert cfg.model._target_.endswith("NGPField") and cfg.trainer.turntable_frames == 0
    assert cfg.trainer.n_iter == compose_cfg(["experiment=ngp"]).trainer.n_iter
    cfg = compose_cfg(["experiment=ngp", "+sweep=methods", "trainer.eval_every=7"])
    assert cfg.trainer.eval_every == 7


# ---------------------------------------------------------------- seconds_at_steps


def test_seconds_at_steps_accumulates_the_logged_windows():
    # logs at steps 1, 11, 21: 1 step at 2 s, 10 at 1 s, 10 at 3 s -> 2, 12, 42 s
    logs, rates = [1, 11, 21], [2.0, 1.0, 3.0]
    got = ms.seconds_at_steps(logs, rates, [0, 1, 6, 11, 21], 42.0, 21)
    assert got == pytest.approx([0.0, 2.0, 7.0, 12.0, 42.0])
    # after the last log: its rate (3 s), then scaled so that step 31 is train_seconds
    got = ms.seconds_at_steps(logs, rates, [21, 26, 31], 144.0, 31)
    assert got == pytest.approx([84.0, 114.0, 144.0])


def test_seconds_at_steps_matches_a_step_by_step_sum():
    logs = [1, 4, 9, 17, 30]
    rates = [0.5, 0.25, 1.5, 0.75, 2.0]
    per_step = []  # seconds of each step 1..30, from its window
    prev = 0
    for step, rate in zip(logs, rates, strict=True):
        per_step += [rate] * (step - prev)
        prev = step
    total = sum(per_step)
    queries = list(range(31))
    expected = [sum(per_step[:q]) for q in queries]
    assert ms.seconds_at_steps(logs, rates, queries, total, 30) == pytest.approx(expected)


def test_seconds_at_steps_without_logs_is_proportional_to_the_step():
    assert ms.seconds_at_steps([], [], [0, 5, 10], 20.0, 10) == pytest.approx([0, 10, 20])
    with pytest.raises(ValueError, match="iterations > 0"):
        ms.seconds_at_steps([], [], [0], 0.0, 10)
    with pytest.raises(ValueError, match="differ in length"):
        ms.seconds_at_steps([1], [], [0], 1.0, 10)


# ---------------------------------------------------------------- the script on fake runs


def fake_run(
    root: Path,
    name: str,
    method: str | None,
    metrics: dict | None,
    psnr: list[tuple[int, float]] = (),
    iter_s: list[tuple[int, float]] = (),
) -> Path:
    run_dir = root / name
    (run_dir / ".hydra").mkdir(parents=True)
    overrides = ["+sweep=methods", "data=procedural"] + ([f"experiment={method}"] if method else [])
    (run_dir / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    config = {
        "name": "sweep_methods",
        "model": {"_target_": "nerf_lab.models.NGPField"},
        "raysampler": {
            "train": {"_target_": "nerf_lab.raysamplers.MonteCarloRaysampler"},
            "resampler": {"_target_": "nerf_lab.occupancy_grid.OccupancyResampler"},
        },
    }
    (run_dir / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    if metrics is not None:
        (run_dir / "metrics.json").write_text(json.dumps(metrics))
    if psnr or iter_s:
        writer = SummaryWriter(log_dir=str(run_dir))
        for step, value in iter_s:
            writer.add_scalar("perf/iter_s", value, step)
        for step, value in psnr:
            writer.add_scalar("eval/psnr", value, step)
        writer.close()
    return run_dir


@pytest.fixture
def study_dir(tmp_path) -> Path:
    root = tmp_path / "study"
    done = {"status": "completed", "eval/psnr": 25.5, "eval/ssim": 0.91, "train_seconds": 40.0,
            "iterations": 20, "peak_rss_mb": 812.4}  # fmt: skip
    fake_run(root, "0_experiment=ngp", "ngp", done, psnr=[(10, 20.0), (20, 25.5)],
             iter_s=[(1, 4.0), (11, 2.0)])  # fmt: skip
    fake_run(root, "1_experiment=fast", "fast", {"status": "failed", "error": "ValueError: x"})
    fake_run(root, "2_experiment=kplanes", "kplanes", None)
    return root


def test_study_table_rows(study_dir):
    runs = ms.find_runs(study_dir)
    assert [r.method for r in runs] == ["ngp", "fast", "kplanes"]
    rows = ms.table_rows(runs)
    head = ms.HEADER
    ngp = dict(zip(head, rows[0], strict=True))
    assert ngp["model"] == "NGPField"
    assert ngp["sampler"] == "MonteCarloRaysampler + OccupancyResampler"
    assert (ngp["status"], ngp["PSNR (dB)"], ngp["SSIM"]) == ("completed", "25.50", "0.9100")
    assert (ngp["train s"], ngp["s/iter"], ngp["iters"], ngp["peak MiB"]) == (
        "40.0", "2.000", "20", "812"
    )  # fmt: skip
    fast = dict(zip(head, rows[1], strict=True))
    assert fast["status"] == "failed" and fast["PSNR (dB)"] == ""
    assert dict(zip(head, rows[2], strict=True))["status"] == "running-or-missing"


def test_study_curve_places_eval_points_at_training_seconds(study_dir):
    ngp = ms.find_runs(study_dir)[0]
    # windows: step 1 at 4 s, steps 2-11 at 2 s (24 s at step 11), then 2 s/step: 42 s at
    # step 20, scaled to train_seconds = 40
    scale = 40.0 / 42.0
    assert [t for t, _ in ngp.curve] == pytest.approx([22.0 * scale, 40.0])
    assert [p for _, p in ngp.curve] == [20.0, 25.5]


def test_method_name_falls_back_to_the_run_name_then_the_directory(tmp_path):
    assert ms.method_name(tmp_path, ["+experiment=ngp"], None) == "ngp"
    assert ms.method_name(tmp_path, ["data=cow"], {"name": "fast"}) == "fast"
    assert ms.method_name(tmp_path / "job7", [], None) == "job7"


def test_study_script_prints_the_table_and_saves_the_plot(study_dir, tmp_path):
    out = subprocess.run(
        [sys.executable, str(STUDY), str(study_dir)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("|")]
    assert len(lines) == 2 + 3 and lines[2].startswith("| ngp | NGPField |")
    if importlib.util.find_spec("matplotlib") is not None:
        assert (study_dir / "method_study.png").stat().st_size > 0
    empty = tmp_path / "empty"
    empty.mkdir()
    out = subprocess.run([sys.executable, str(STUDY), str(empty)], capture_output=True,
                         text=True, timeout=120)  # fmt: skip
    assert out.returncode == 1 and "no runs" in out.stderr


@pytest.mark.slow
def test_study_multirun_end_to_end(tmp_path):
    sweep_dir = tmp_path / "sweep"
    out = subprocess.run(
        [sys.executable, "-m", "nerf_lab.train", "-m", "+sweep=methods", *TINY_SCENE,
         "trainer.n_iter=4", "trainer.eval_every=2", "trainer.num_threads=1",
         "experiment=voxel,kplanes", f"hydra.sweep.dir={sweep_dir}"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    runs = ms.find_runs(sweep_dir)
    assert [r.method for r in runs] == ["voxel", "kplanes"]
    for r in runs:
        assert r.status == "completed", r.metrics
        assert len(r.curve) == 2  # evaluations after steps 2 and 4
        assert r.curve[-1][0] == pytest.approx(r.metrics["train_seconds"], rel=1e-6)


def test_single_pass_control_matches_the_hierarchical_preset_but_for_sampling():
    hier = compose_cfg(["experiment=nerf_hierarchical"])
    single = compose_cfg(["experiment=nerf_single"])
    assert single.model == hier.model
    assert single.optimizer == hier.optimizer and single.loss == hier.loss
    # the same schedule over each one's own run (each budgeted for the same ~5 minutes)
    assert OmegaConf.to_container(single.scheduler, resolve=True) == {
        **OmegaConf.to_container(hier.scheduler, resolve=True),
        "step_size": single.trainer.n_iter,
    }
    assert hier.scheduler.step_size == hier.trainer.n_iter
    assert single.raysampler.n_rays_per_image == hier.raysampler.n_rays_per_image
    assert single.raysampler.get("resampler") is None
    # the single pass samples as the coarse pass does (stratified, the scene's near/far);
    # the hierarchical loss is on the fine pass only, whose points are the ones drawn from
    # the coarse weights, so the coarse pass is a forward without autograd
    assert single.raysampler.n_pts_per_ray == hier.raysampler.n_pts_per_ray
    assert single.raysampler.stratified_sampling and hier.raysampler.stratified_sampling
    assert (single.raysampler.min_depth, single.raysampler.max_depth) == ("auto", "auto")
    assert hier.raysampler.resampler.add_input_samples is False
    assert hier.raysampler.resampler.coarse_pass_grad is False
    assert hier.loss.terms.color.passes == "last"
