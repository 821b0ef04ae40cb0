"""Open composition: every option of every group composes and builds; the user's own
components (from their own folder, through hydra.searchpath) train without touching the
package; the wheel ships the configs."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from nerf_lab.build import build_components, build_raysamplers, build_scene
from nerf_lab.config import ConfigValueError, check_config, trainer_settings
from nerf_lab.train import run
from tests.conftest import (
    CAPTURE_FORMATS,
    CONF,
    TINY,
    TINY_RUN,
    compose_cfg,
    group_options,
)

REPO = CONF.parent

# Options whose data are not in the repository get their inputs from fixtures.
GROUPS = ["raysampler", "model", "loss", "optimizer", "scheduler", "trainer"]
OPTIONS = [(g, o) for g in GROUPS for o in group_options(g)]


def test_every_group_has_real_choices():
    assert {"uniform", "stratified"} <= set(group_options("raysampler"))
    assert {"adam", "adamw", "sgd"} <= set(group_options("optimizer"))
    assert {"step", "exponential", "cosine", "none"} <= set(group_options("scheduler"))
    assert {"default", "debug"} <= set(group_options("trainer"))
    assert {"huber", "mse"} <= set(group_options("loss"))


@pytest.mark.parametrize("group,option", OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_option_composes_and_builds(group, option):
    extra = ["+loss/terms@loss.terms.interlevel=interlevel"] if option == "proposal" else []
    cfg = compose_cfg([*(TINY_RUN if group == "model" else TINY), f"{group}={option}", *extra])
    components = build_components(cfg)
    assert components.optimizer.param_groups and components.loss_terms
    s = components.settings
    assert s.n_iter >= 1
    # the raysamplers build for a 16x12 image and sample rays
    train, grid = build_raysamplers(cfg, None, (16, 12))
    cams = build_scene(compose_cfg(TINY)).cameras[[0, 1]]
    assert train(cameras=cams).lengths.shape[:2] == (2, cfg.raysampler.n_rays_per_image)
    assert grid(16, 12)(cameras=cams).lengths.shape[:3] == (2, 16, 12)


def _data_overrides(option, mesh_file, blender_dir, cow_dir, capture_dirs):
    if option in CAPTURE_FORMATS:
        return [f"data={option}", f"data.path={capture_dirs[option]}"]
    small = ["data.num_views=4", "data.n_test_views=2", "data.image_size=24"]
    if option == "cow":
        return [
            "data=cow",
            f"data.data_dir={cow_dir}",
            "data.num_views=6",
            "data.n_test_views=2",
            "data.image_size=24",
        ]
    if option == "mesh":
        return ["data=mesh", f"data.path={mesh_file}", *small]
    if option == "blender":
        return ["data=blender", f"data.path={blender_dir}"]
    return [f"data={option}", *small]


@pytest.mark.parametrize("option", group_options("data"))
def test_data_option_composes_and_builds(option, mesh_file, blender_dir, request):
    cow_dir = request.getfixturevalue("cow_dir") if option == "cow" else None
    captures = request.getfixturevalue("capture_dirs") if option in CAPTURE_FORMATS else None
    cfg = compose_cfg(_data_overrides(option, mesh_file, blender_dir, cow_dir, captures))
    check_config(cfg)
    scene = build_scene(cfg)
    assert scene.images.ndim == 4 and len(scene.splits["train"]) and len(scene.splits["test"])


@pytest.mark.parametrize("option", group_options("experiment"))
def test_experiment_presets_compose_and_build(option):
    cfg = compose_cfg([f"experiment={option}"])
    build_components(cfg)


def test_tutorial_preset_is_the_tutorial():
    t = compose_cfg(["experiment=tutorial"])
    assert t.model.n_harmonic_functions == 60 and t.model.n_hidden_neurons == 256
    assert t.model.omega0 == 0.1
    assert t.raysampler.n_rays_per_image == 750 and t.raysampler.n_pts_per_ray == 128
    assert (t.raysampler.min_depth, t.raysampler.max_depth) == (0.1, 3.0)
    assert not t.raysampler.stratified_sampling and t.raysampler.resampler is None
    assert t.trainer.n_iter == 3000 and t.trainer.batch_size == 6
    assert t.optimizer._target_ == "torch.optim.Adam" and t.optimizer.lr == 1e-3
    assert t.scheduler._target_.endswith("step_decay") and list(t.scheduler.decay_at) == [0.75]
    assert t.scheduler.gamma == 0.1 and t.scheduler.reset_state_at_decay
    assert set(t.loss.terms) == {"color", "silhouette"}
    for term in t.loss.terms.values():
        assert term.kind == "huber" and term.scaling == 0.1 and term.weight == 1.0
    assert t.trainer.log_every == 10 and t.trainer.render_every == 100


def test_misspelt_keys_fail_naming_group_and_key():
    cfg = compose_cfg([*TINY, "+model.n_hiden_neurons=3", "+optimizer.momentun=0.9"])
    with pytest.raises(ConfigValueError) as e:
        check_config(cfg)
    msg = str(e.value)
    assert "model.n_hiden_neurons: unknown key for nerf_lab.models.NeuralRadianceField" in msg
    assert "optimizer.momentun: unknown key for torch.optim.Adam" in msg
    with pytest.raises(ConfigValueError, match="trainer.n_iterr: unknown key"):
        trainer_settings({"n_iterr": 3})
    with pytest.raises(ConfigValueError, match="loss.terms: must hold at least one"):
        check_config(compose_cfg([*TINY, "loss.terms.color=null", "loss.terms.silhouette=null"]))


def test_proposal_sampling_needs_its_interlevel_term():
    with pytest.raises(ConfigValueError, match="learn only from the interlevel loss"):
        build_components(compose_cfg([*TINY, "raysampler=proposal"]))
    with pytest.raises(ConfigValueError, match="needs raysampler=proposal"):
        build_components(compose_cfg([*TINY, "+loss/terms@loss.terms.interlevel=interlevel"]))


def test_a_coarse_pass_without_autograd_cannot_be_in_the_loss():
    grad_off = [*TINY, "raysampler=hierarchical", "raysampler.resampler.coarse_pass_grad=false"]
    with pytest.raises(ConfigValueError) as e:
        build_components(compose_cfg(grad_off))  # the default terms: passes all
    assert "loss.terms.color.passes=all: raysampler.resampler.coarse_pass_grad=false" in str(
        e.value
    )
    assert "loss.terms.silhouette.passes=all" in str(e.value)
    build_components(compose_cfg([*grad_off, "loss.terms.color.passes=last",
                                  "loss.terms.silhouette.passes=last"]))  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("sampler", ["hierarchical", "proposal", "occupancy"])
def test_each_resampler_trains_end_to_end(sampler, tmp_path):
    """A debug run with each later-pass sampler: loss terms on every pass, the sampler's
    own state in the checkpoint, eval rebuilding it."""
    r = "raysampler.resampler"
    extra = [f"{r}.n_pts_per_ray=8"] + {
        "hierarchical": [],
        "proposal": ["+loss/terms@loss.terms.interlevel=interlevel",
                     "+loss/terms@loss.terms.distortion=distortion", f"{r}.resolutions=[8]"],
        "occupancy": [f"{r}.grid.resolution=8", f"{r}.grid.update_every=1"],
    }[sampler]  # fmt: skip
    from nerf_lab import eval as nl_eval

    cfg = compose_cfg([*TINY, "trainer=debug", f"raysampler={sampler}", *extra])
    metrics = run(cfg, tmp_path)
    assert math.isfinite(metrics)
    state = torch.load(tmp_path / "checkpoints" / "step_00000004.pt", weights_only=True)
    assert state["resampler"] is not None
    assert nl_eval.main([f"run_dir={tmp_path}"]) == 0
    again = json.loads((tmp_path / "eval.json").read_text())["eval/psnr"]
    final = json.loads((tmp_path / "metrics.json").read_text())["eval/psnr"]
    assert again == pytest.approx(final, abs=1e-4)


def test_a_separate_coarse_field_trains_is_saved_and_rebuilt(tmp_path):
    """``raysampler.resampler.coarse_field='${model}'``: PyTorch3D's two networks, the
    coarse one built like the model, trained by the terms on the coarse pass."""
    from nerf_lab import eval as nl_eval

    two = [
        *TINY,
        "trainer=debug",
        "raysampler=hierarchical",
        "raysampler.n_pts_per_ray=8",
        "raysampler.resampler.n_pts_per_ray=8",
        "raysampler.resampler.coarse_field=${model}",
    ]
    cfg = compose_cfg(two)
    built = build_components(cfg)
    coarse = built.renderer.resampler.coarse_field
    assert type(coarse) is type(built.renderer.field) and coarse is not built.renderer.field
    names = [g["name"] for g in built.optimizer.param_groups]
    assert names == ["field/params", "resampler/coarse_field/params"]
    init = {k: v.clone() for k, v in coarse.state_dict().items()}
    assert math.isfinite(run(cfg, tmp_path))
    state = torch.load(tmp_path / "checkpoints" / "step_00000004.pt", weights_only=True)
    trained = {k.removeprefix("coarse_field."): v for k, v in state["resampler"].items()}
    assert trained.keys() == init.keys()
    assert any(not torch.equal(trained[k], init[k]) for k in init)  # it learned
    assert nl_eval.main([f"run_dir={tmp_path}"]) == 0
    again = json.loads((tmp_path / "eval.json").read_text())["eval/psnr"]
    assert again == pytest.approx(json.loads((tmp_path / "metrics.json").read_text())["eval/psnr"],
                                  abs=1e-4)  # fmt: skip
    # no term on the coarse pass: the coarse field could not learn
    with pytest.raises(ConfigValueError, match="a separate coarse field learns only from"):
        build_components(compose_cfg([*two, "loss.terms.color.passes=last",
                                      "loss.terms.silhouette.passes=last"]))  # fmt: skip


def test_a_new_option_with_new_keys_needs_no_schema(tmp_path):
    """An optimizer option with keys Adam lacks (momentum) and a raysampler key the shipped
    ones lack compose: no schema restates or restricts the keys."""
    cfg = compose_cfg([*TINY, "optimizer=sgd", "optimizer.momentum=0.5"])
    opt = build_components(cfg).optimizer
    assert isinstance(opt, torch.optim.SGD) and opt.param_groups[0]["momentum"] == 0.5


def test_loss_terms_can_be_added_by_override():
    cfg = compose_cfg(
        [*TINY, "+loss/terms@loss.terms.color_l1=color", "loss.terms.color_l1.kind=l1"]
    )
    terms = build_components(cfg).loss_terms
    assert set(terms) == {"color", "silhouette", "color_l1"} and terms["color_l1"].kind == "l1"


def test_param_groups_get_their_lr_scale():
    voxel = [
        "model=voxel",
        "model.resolution=8",
        "model.grid_lr_scale=10",
        "model.n_hidden_neurons=8",
    ]
    cfg = compose_cfg([*TINY_RUN, *voxel, "optimizer=adamw", "optimizer.lr=2e-3"])
    groups = build_components(cfg).optimizer.param_groups
    # (the schedule's base lr: its warm-up starts each group at 1 % of it)
    assert {g["name"]: g["initial_lr"] for g in groups} == pytest.approx(
        {"field/grids": 2e-2, "field/mlp": 2e-3}
    )
    assert {g["name"]: g["lr"] for g in groups} == pytest.approx(
        {"field/grids": 2e-4, "field/mlp": 2e-5}
    )


def test_auto_depth_range_comes_from_the_scene():
    cfg = compose_cfg([*TINY, "raysampler.min_depth=auto", "raysampler.max_depth=auto"])
    scene = build_scene(cfg)
    train, grid = build_raysamplers(cfg, scene, scene.image_size)
    assert train._min_depth == pytest.approx(scene.near) and train._max_depth == pytest.approx(
        scene.far
    )
    full = grid(4, 4)
    assert full._min_depth == pytest.approx(scene.near)


# ------------------------------------------------------------------ the user's own folder

USER_FIELD = '''
import torch

class TinyField(torch.nn.Module):
    """A plain module with the tutorial's contract: no nerf_lab base class."""

    def __init__(self, width: int = 16):
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(3, width), torch.nn.ReLU(), torch.nn.Linear(width, 4)
        )

    def forward(self, ray_bundle, **kwargs):
        pts = ray_bundle.origins[..., None, :] + (
            ray_bundle.lengths[..., :, None] * ray_bundle.directions[..., None, :]
        )
        out = self.net(pts)
        densities = 1 - torch.exp(-torch.relu(out[..., :1]))
        return densities, torch.sigmoid(out[..., 1:])
'''


def _user_folder(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    pkg = tmp_path / "user_code"
    pkg.mkdir()
    (pkg / "my_fields.py").write_text(textwrap.dedent(USER_FIELD))
    conf = tmp_path / "user_conf"
    for group, name, text in (
        ("model", "tiny", "_target_: my_fields.TinyField\nwidth: 8  # hidden units\n"),
        ("optimizer", "rmsprop",
         "_target_: torch.optim.RMSprop\n_partial_: true\nlr: 1.0e-3\nalpha: 0.9\n"),
        ("scheduler", "linear",
         "_target_: torch.optim.lr_scheduler.LinearLR\n_partial_: true\n"
         "start_factor: 1.0\nend_factor: 0.5\ntotal_iters: ${trainer.n_iter}\n"),
    ):  # fmt: skip
        (conf / group).mkdir(parents=True, exist_ok=True)
        (conf / group / f"{name}.yaml").write_text(text)
    env = {**os.environ, "PYTHONPATH": f"{pkg}{os.pathsep}{REPO}"}
    return conf, env


@pytest.mark.slow
def test_user_components_from_their_own_folder_train_together(tmp_path):
    conf, env = _user_folder(tmp_path)
    run_dir = tmp_path / "run"
    cmd = [
        sys.executable, "-m", "nerf_lab.train", *TINY_RUN, "trainer=debug", "trainer.device=cpu",
        f"hydra.searchpath=[file://{conf}]", "model=tiny", "optimizer=rmsprop",
        "scheduler=linear", f"hydra.run.dir={run_dir}",
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "completed"
    state = torch.load(run_dir / "checkpoints" / "step_00000004.pt", weights_only=True)
    cfg = state["config"]
    assert cfg["model"]["_target_"] == "my_fields.TinyField"
    assert cfg["optimizer"]["_target_"] == "torch.optim.RMSprop"
    assert cfg["scheduler"]["_target_"] == "torch.optim.lr_scheduler.LinearLR"
    assert "square_avg" in next(iter(state["optimizer"]["state"].values()))  # RMSprop's state
    assert state["scheduler"]["end_factor"] == 0.5

    # eval rebuilds the user's field from the run directory, once the user allows it (a run
    # directory is data: its targets outside nerf_lab and torch.optim are refused)
    def eval_folders() -> int:  # each evaluation writes a new eval/step_* folder
        return len(list((run_dir / "eval").glob("step_*")))

    trained = eval_folders()  # (the end of training evaluated once)
    eval_cmd = [sys.executable, "-m", "nerf_lab.eval", f"run_dir={run_dir}"]
    proc = subprocess.run(eval_cmd, env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert proc.returncode == 1 and "model._target_ = 'my_fields.TinyField'" in proc.stderr
    assert eval_folders() == trained  # refused before anything ran
    proc = subprocess.run(
        [*eval_cmd, "allow_targets=[my_fields.*]"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert eval_folders() == trained + 1
    assert json.loads((run_dir / "eval.json").read_text())["eval/psnr"] == pytest.approx(
        metrics["eval/psnr"], abs=1e-5
    )


@pytest.mark.slow
def test_wheel_ships_the_configs_and_runs_outside_the_checkout(tmp_path):
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(dist), str(REPO)],
        check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    wheel = next(dist.glob("nerf_lab-*.whl"))
    import zipfile

    names = zipfile.ZipFile(wheel).namelist()
    for yaml in ("config.yaml", "model/small.yaml", "scheduler/step.yaml", "loss/terms/color.yaml"):
        assert f"nerf_lab/conf/{yaml}" in names, yaml
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target),
         str(wheel)],
        check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target)}
    code = "import nerf_lab, sys; print(nerf_lab.__file__)"
    where = subprocess.run([sys.executable, "-c", code], env=env, cwd=elsewhere,
                           capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert where.startswith(str(target)), where
    proc = subprocess.run(
        [sys.executable, "-m", "nerf_lab.train", *TINY, "trainer=debug",
         f"hydra.run.dir={elsewhere / 'run'}"],
        env=env, cwd=elsewhere, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads((elsewhere / "run" / "metrics.json").read_text())["status"] == "completed"


def test_instantiating_a_loss_term_node_directly():
    term = instantiate(compose_cfg(TINY).loss.terms.color)
    assert term.kind == "huber" and term.weight == 1.0
