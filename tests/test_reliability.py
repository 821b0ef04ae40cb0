"""Fault injection: kills, corrupt checkpoints, NaNs, unwritable output, bad values."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from nerf_lab.build import build_trainer
from nerf_lab.checkpoint import load_latest, save_checkpoint
from nerf_lab.hooks import TrainingHooks
from nerf_lab.train import run
from nerf_lab.trainer import NonFiniteLossError
from tests.conftest import TINY, compose_cfg

REPO = Path(__file__).resolve().parents[1]
RESUME = TINY + [
    "trainer.n_iter=40",
    "trainer.checkpoint_every=5",
    "trainer.log_every=5",
    "trainer.render_every=0",
    "trainer.turntable_frames=0",
    "trainer.num_threads=1",
]


def _train_cmd(run_dir: Path, extra: list[str]) -> list[str]:
    return [sys.executable, "-m", "nerf_lab.train", *RESUME, f"hydra.run.dir={run_dir}", *extra]


def test_sigterm_then_resume_matches_uninterrupted_run(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    # uninterrupted reference
    ref_dir = tmp_path / "ref"
    subprocess.run(_train_cmd(ref_dir, []), check=True, env=env, cwd=REPO, capture_output=True)
    ref = json.loads((ref_dir / "metrics.json").read_text())

    # the same run, killed with SIGTERM once it has saved a checkpoint, then resumed
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(
        _train_cmd(run_dir, []),
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.time() + 120
    while not (run_dir / "checkpoints" / "latest").exists():
        assert proc.poll() is None, proc.stdout.read()
        assert time.time() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, out
    assert "trainer.resume=true" in out
    status = json.loads((run_dir / "metrics.json").read_text())
    assert status["status"] == "interrupted" and status["signal"] == signal.SIGTERM
    assert status["step"] >= 5 and "trainer.resume=true" in status["resume"]
    state, _ = load_latest(run_dir / "checkpoints")
    assert 0 < state["step"] < 40

    subprocess.run(
        _train_cmd(run_dir, ["trainer.resume=true"]),
        check=True,
        env=env,
        cwd=REPO,
        capture_output=True,
    )
    resumed = json.loads((run_dir / "metrics.json").read_text())
    assert resumed["iterations"] == 40
    assert resumed["eval/psnr"] == pytest.approx(ref["eval/psnr"], abs=1e-3)
    assert resumed["eval/ssim"] == pytest.approx(ref["eval/ssim"], abs=1e-5)


def test_resume_in_process_is_exact(tmp_path):
    full = build_trainer(compose_cfg(RESUME), tmp_path / "full").fit()
    part_dir = tmp_path / "part"
    t = build_trainer(compose_cfg(RESUME), part_dir)
    for _ in range(13):
        t.train_step()
    t.save()
    resumed = build_trainer(compose_cfg(RESUME + ["trainer.resume=true"]), part_dir).fit()
    assert resumed["iterations"] == 40
    assert resumed["eval/psnr"] == pytest.approx(full["eval/psnr"], abs=1e-3)


def test_corrupt_latest_checkpoint_falls_back_with_warning(tmp_path, caplog):
    d = tmp_path / "checkpoints"
    for step in (1, 2, 3):
        save_checkpoint(
            d, {"step": step, "model": {"w": torch.full((2,), float(step))}}, step, keep=5
        )
    latest = d / "step_00000003.pt"
    latest.write_bytes(latest.read_bytes()[:40])  # truncated
    state, path = load_latest(d)
    assert state["step"] == 2 and path.name == "step_00000002.pt"
    assert "unreadable" in caplog.text
    # keep-K pruning
    for step in (4, 5, 6):
        save_checkpoint(d, {"step": step, "model": {}}, step, keep=2)
    assert sorted(p.name for p in d.glob("step_*.pt")) == ["step_00000005.pt", "step_00000006.pt"]


class NaNAfter(TrainingHooks, torch.nn.Module):
    """A test field that returns NaN colours from the given iteration on."""

    def __init__(self, nan_from: int = 3):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(0.0))
        self.nan_from = nan_from
        self.step = 0

    def on_train_step(self, step: int, n_iter: int) -> None:
        self.step = step

    def forward(self, ray_bundle, **kwargs):
        shape = ray_bundle.lengths.shape
        d = torch.sigmoid(self.w).expand(*shape, 1)
        c = torch.sigmoid(self.w).expand(*shape, 3)
        if self.training and self.step >= self.nan_from:
            c = c * float("nan")
        return d, c


def test_nonfinite_loss_stops_with_named_terms_and_keeps_checkpoint(tmp_path):
    cfg = compose_cfg(
        TINY + ["trainer.n_iter=10", "trainer.checkpoint_every=2", "trainer.turntable_frames=0"]
    )
    t = build_trainer(cfg, tmp_path)
    t.renderer.field = NaNAfter(3)
    t.optimizer = torch.optim.Adam(t.renderer.parameters())
    t.scheduler = torch.optim.lr_scheduler.LambdaLR(t.optimizer, lambda s: 1.0)
    with pytest.raises(NonFiniteLossError, match=r"iteration 3: color=nan, silhouette="):
        t.fit()
    state, _ = load_latest(tmp_path / "checkpoints")
    assert state["step"] == 2 and torch.isfinite(state["model"]["w"])

    cfg = compose_cfg(
        TINY
        + [
            "trainer.n_iter=6",
            "trainer.skip_nonfinite=true",
            "trainer.turntable_frames=0",
            "trainer.log_every=1",
        ]
    )
    t = build_trainer(cfg, tmp_path / "skip")
    t.renderer.field = NaNAfter(3)
    t.optimizer = torch.optim.Adam(t.renderer.parameters())
    t.scheduler = torch.optim.lr_scheduler.LambdaLR(t.optimizer, lambda s: 1.0)
    metrics = t.fit()
    assert metrics["nonfinite_steps"] == 3


def test_unwritable_output_dir_fails_before_work(tmp_path):
    if os.geteuid() == 0:
        target = Path("/proc/nerf_lab_cannot_write_here")
    else:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        target = ro / "run"
    with pytest.raises(ValueError, match="cannot be written"):
        run(compose_cfg(TINY), target)


@pytest.mark.parametrize(
    "override,needle",
    [
        ("raysampler.n_rays_per_image=0", "raysampler.train: n_rays_per_image must be a positive"),
        ("raysampler.n_pts_per_ray=-3", "n_pts_per_ray must be a positive integer; got -3"),
        ("raysampler.min_depth=-1", "min_depth must be >= 0; got -1"),
        ("raysampler.max_depth=0.05", "min_depth must be smaller than max_depth"),
        ("optimizer.lr=-1", "optimizer: Invalid learning rate: -1"),
        ("trainer.batch_size=0", "trainer.batch_size=0: must be a positive integer"),
        ("trainer.chunk_size=0", "trainer.chunk_size=0"),
        ("data.image_size=0", "data: image_size must be a positive integer; got 0"),
        ("data.fov=0", "data: fov must be a number in (0, 180); got 0"),
        ("trainer.precision=fp8", "trainer.precision='fp8': must be one of"),
        ("trainer.device=tpu", "trainer.device='tpu'"),
        ("data.num_views=0", "data: num_views must be a positive integer; got 0"),
        ("model.n_hidden_neurons=0", "model: n_hidden_neurons must be a positive integer; got 0"),
        ("scheduler.gamma=0", "scheduler: gamma must be a finite number > 0; got 0"),
        ("loss.terms.color.kind=l3", "loss.terms.color: kind must be one of"),
        (
            "+model.n_layers=3",
            "model.n_layers: unknown key for nerf_lab.models.NeuralRadianceField",
        ),
        ("+trainer.n_iterz=3", "trainer.n_iterz: unknown key"),
    ],
)
def test_each_bad_value_is_reported_before_data(tmp_path, override, needle, monkeypatch):
    import nerf_lab.data.procedural as procedural

    def boom(*a, **k):
        raise AssertionError("data generation started before validation")

    monkeypatch.setattr(procedural, "render_orbit_scene", boom)
    with pytest.raises(ValueError, match=re.escape(needle)):
        run(compose_cfg(TINY + [override]), tmp_path)


def test_batch_size_larger_than_training_views(tmp_path):
    with pytest.raises(
        ValueError, match=r"trainer.batch_size=9: must be <= the number of training views \(8\)"
    ):
        run(compose_cfg(TINY + ["trainer.batch_size=9"]), tmp_path)
    assert json.loads((tmp_path / "metrics.json").read_text())["status"] == "failed"


def test_scene_validation_errors_reach_the_user_through_train(tmp_path):
    from nerf_lab.data import SceneValidationError

    bad = tmp_path / "bad_blender"
    bad.mkdir()
    (bad / "transforms_train.json").write_text("{not json")
    (bad / "transforms_test.json").write_text(
        json.dumps({"camera_angle_x": 7.0, "frames": [{"file_path": "./missing"}]})
    )
    with pytest.raises(SceneValidationError) as e:
        no_data = [o for o in TINY if not o.startswith("data")]
        run(compose_cfg(no_data + ["data=blender", f"data.path={bad}"]), tmp_path / "run")
    msg = str(e.value)
    assert "transforms_train.json" in msg and "camera_angle_x" in msg and "missing" in msg, msg
    status = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert status["status"] == "failed" and "SceneValidationError" in status["error"]


def test_background_accepts_names_and_rgb_lists(tmp_path):
    from nerf_lab.build import build_scene

    scene = build_scene(compose_cfg(TINY + ["data.background=[1.0,1.0,1.0]"]))
    assert scene.background_color == (1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="pink"):
        build_scene(compose_cfg(TINY + ["data.background=pink"]))
