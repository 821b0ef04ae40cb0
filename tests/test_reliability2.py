"""Issue #16, round 2: each problem reproduced, and now handled.

Allow-list for run directories, resume settings diff, run-directory lock, metrics.json
status, stale temporaries, silent restarts, limits up front, signals inside renders, NaN
parameters, absolute data paths, full disks and small checks.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from nerf_lab.build import build_trainer
from nerf_lab.checkpoint import (
    CheckpointError,
    DiskFullError,
    RunDirOwnedError,
    list_checkpoints,
    load_latest,
)
from nerf_lab.config import ConfigValueError
from nerf_lab.resume_diff import ResumeConfigError, resume_changes
from nerf_lab.rundir import RUN_DIR_PATTERN, RunDirLockedError
from nerf_lab.runs import allowed_targets, load_run
from nerf_lab.safety import DisallowedTargetError
from nerf_lab.signals import TrainingInterrupted
from nerf_lab.train import check_run_dir_setting, run
from nerf_lab.trainer import NonFiniteLossError, NonFiniteParametersError
from tests.conftest import CONF, TINY, compose_cfg
from tests.test_reliability import NaNAfter

REPO = Path(__file__).resolve().parents[1]
QUICK = TINY + [
    "trainer.n_iter=4",
    "trainer.checkpoint_every=2",
    "trainer.render_every=0",
    "trainer.log_every=0",
    "trainer.turntable_frames=0",
    "trainer.num_threads=1",
]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def _quick_run(run_dir: Path, extra: list[str] = ()) -> dict:
    run(compose_cfg(QUICK + list(extra)), run_dir)
    return json.loads((run_dir / "metrics.json").read_text())


def _tamper(run_dir: Path, edit) -> Path:
    """Edit the config saved in the run's newest checkpoint (as an attacker could)."""
    state, path = load_latest(run_dir / "checkpoints")
    edit(state["config"])
    torch.save(state, path)
    return path


@pytest.fixture(scope="module")
def done_run(tmp_path_factory) -> Path:
    """A completed tiny run (4 iterations, checkpoints at 2 and 4); copy before changing."""
    run_dir = tmp_path_factory.mktemp("done") / "run"
    assert _quick_run(run_dir)["status"] == "completed"
    return run_dir


def _copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


# ------------------------------------------------------------------ 1. allow-list


def test_load_run_refuses_a_foreign_target_before_any_call(done_run, tmp_path):
    run_dir = _copy(done_run, tmp_path / "run")
    marker = tmp_path / "pwned"

    def edit(cfg):
        cfg["model"] = {"_target_": "os.system", "command": f"touch {marker}"}

    _tamper(run_dir, edit)
    with pytest.raises(DisallowedTargetError, match=r"model._target_ = 'os.system'"):
        load_run(run_dir)
    assert not marker.exists()
    # the user's explicit allow-list is the only way in
    _tamper(run_dir, lambda cfg: cfg.update(model={"_target_": "torch.nn.Identity"}))
    with pytest.raises(DisallowedTargetError, match="torch.nn.Identity"):
        load_run(run_dir)
    with allowed_targets(["torch.nn.Identity"]), pytest.raises(RuntimeError, match="state_dict"):
        load_run(run_dir)  # built (an Identity has no weights to load): past the allow-list


def test_run_dir_cannot_allow_its_own_targets(done_run, tmp_path):
    run_dir = _copy(done_run, tmp_path / "run")

    def edit(cfg):
        cfg["allow_targets"] = ["os.*"]
        cfg["loss"]["terms"]["color"]["_target_"] = "os.remove"

    _tamper(run_dir, edit)
    with pytest.raises(DisallowedTargetError, match="os.remove"):
        load_run(run_dir)


def test_eval_cli_takes_allow_targets(done_run, tmp_path):
    from nerf_lab.eval import main

    run_dir = _copy(done_run, tmp_path / "run")
    _tamper(run_dir, lambda cfg: cfg["model"].update(_target_="os.getcwd"))
    eval_json = run_dir / "eval.json"  # (the end of training may have written one)
    before = eval_json.read_bytes() if eval_json.exists() else None
    assert main([f"run_dir={run_dir}"]) == 1
    assert (eval_json.read_bytes() if eval_json.exists() else None) == before  # nothing ran
    assert main([f"run_dir={run_dir}", "allow_targets=[42]"]) == 1


def test_resume_refuses_a_foreign_target_in_the_checkpoint(done_run, tmp_path):
    run_dir = _copy(done_run, tmp_path / "run")

    def edit(cfg):
        cfg["raymarcher"]["_target_"] = "shutil.rmtree"

    _tamper(run_dir, edit)
    cfg = compose_cfg(QUICK + ["trainer.resume=true", "trainer.n_iter=6"])
    with pytest.raises(DisallowedTargetError, match="raymarcher._target_ = 'shutil.rmtree'"):
        build_trainer(cfg, run_dir)
    # the user's config may allow more patterns for a resume, but not the run's own
    cfg = compose_cfg(QUICK + ["trainer.resume=true", "trainer.n_iter=6", "allow_targets=[x.*]"])
    with pytest.raises(DisallowedTargetError):
        build_trainer(cfg, run_dir)


# ------------------------------------------------------------------ 2. resume diff


def test_resume_changes_pure():
    saved = {"model": {"a": 1}, "trainer": {"n_iter": 10, "seed": 0, "log_every": 5}, "name": "x"}
    new = {"model": {"a": 2}, "trainer": {"n_iter": 20, "seed": 1, "log_every": 1}, "name": "y"}
    with pytest.raises(ResumeConfigError) as e:
        resume_changes(saved, new, step=4)
    msg = str(e.value)
    assert "model.a: 1 -> 2" in msg and "trainer.seed: 0 -> 1" in msg and "2 key(s)" in msg
    ok = {**new, "model": {"a": 1}, "trainer": {**new["trainer"], "seed": 0}}
    assert resume_changes(saved, ok, step=4) == [
        ("name", "x", "y"),
        ("trainer.log_every", 5, 1),
        ("trainer.n_iter", 10, 20),
    ]
    # a key added or removed is a change too; n_iter may not fall below the step
    with pytest.raises(ResumeConfigError, match=r"model.b: '<missing>' -> 3"):
        resume_changes(saved, {**saved, "model": {"a": 1, "b": 3}}, step=4)
    low = {**saved, "trainer": {**saved["trainer"], "n_iter": 3}}
    with pytest.raises(ResumeConfigError, match="already at iteration 4, past trainer.n_iter"):
        resume_changes(saved, low, step=4)


def test_resume_refuses_changed_settings_and_applies_run_settings(done_run, tmp_path, caplog):
    run_dir = _copy(done_run, tmp_path / "run")
    before = (run_dir / "metrics.json").read_text()
    bad = QUICK + ["trainer.resume=true", "model.n_hidden_neurons=32", "optimizer.lr=0.1"]
    with pytest.raises(ResumeConfigError) as e:
        run(compose_cfg(bad), run_dir)
    assert "model.n_hidden_neurons: 16 -> 32" in str(e.value)
    assert "optimizer.lr" in str(e.value)
    # a failure before training: the completed run's metrics stay, the error goes beside them
    assert (run_dir / "metrics.json").read_text() == before
    assert "ResumeConfigError" in json.loads((run_dir / "error.json").read_text())["error"]

    with pytest.raises(ResumeConfigError, match="past trainer.n_iter"):
        run(compose_cfg(QUICK + ["trainer.resume=true", "trainer.n_iter=3"]), run_dir)

    caplog.set_level(logging.INFO, logger="nerf_lab")
    good = ["trainer.resume=true", "trainer.n_iter=6", "trainer.log_every=1"]
    run(compose_cfg(QUICK + good), run_dir, good)
    assert "Resume changes trainer.n_iter: 4 -> 6" in caplog.text
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["iterations"] == 6
    first = yaml.safe_load((run_dir / "config_resolved.yaml").read_text())
    assert first["trainer"]["n_iter"] == 4  # the first start's settings are kept
    record = yaml.safe_load((run_dir / ".hydra" / "overrides_resume_1.yaml").read_text())
    assert record["overrides"] == good and record["step"] == 4
    assert record["changes"]["trainer.n_iter"] == {"from": 4, "to": 6}
    state, _ = load_latest(run_dir / "checkpoints")
    assert state["config"]["trainer"]["n_iter"] == 6


# ------------------------------------------------------------------ 3. lock


def _hold_lock(run_dir: Path) -> subprocess.Popen:
    code = (
        "import sys, time; from nerf_lab.rundir import RunDirLock; "
        f"RunDirLock({str(run_dir)!r}).acquire(); print('locked', flush=True); time.sleep(120)"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], env=ENV, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_second_process_is_refused_naming_the_holder(tmp_path):
    run_dir = tmp_path / "run"
    holder = _hold_lock(run_dir)
    try:
        with pytest.raises(RunDirLockedError, match=f"PID {holder.pid}"):
            run(compose_cfg(QUICK), run_dir)
        assert not (run_dir / "metrics.json").exists() and not (run_dir / "error.json").exists()
        proc = subprocess.run(
            [sys.executable, "-m", "nerf_lab.train", *QUICK, f"hydra.run.dir={run_dir}"],
            env=ENV, cwd=tmp_path, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert proc.returncode == 1
        assert f"in use by PID {holder.pid}" in proc.stderr + proc.stdout
        assert "Traceback" not in proc.stderr
    finally:
        holder.kill()
        holder.wait()
    assert _quick_run(run_dir)["status"] == "completed"  # free once the holder is gone


def test_default_run_dir_is_unique_per_process():
    from omegaconf import OmegaConf

    from nerf_lab.config import register_configs

    conf = yaml.safe_load((CONF / "config.yaml").read_text())
    assert conf["hydra"]["run"]["dir"] == RUN_DIR_PATTERN
    register_configs()
    node = OmegaConf.create({"a": "${nerf_lab.uid:}", "b": "${nerf_lab.uid:}"})
    assert node.a == node.b and len(node.a) == 8
    other = subprocess.run(
        [sys.executable, "-c", "from nerf_lab.rundir import process_uid; print(process_uid())"],
        env=ENV, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    assert len(other) == 8 and other != node.a


# ------------------------------------------------------------------ 4. metrics.json


def test_metrics_say_running_during_training_and_failed_after_it_started(tmp_path):
    t = build_trainer(compose_cfg(QUICK + ["trainer.n_iter=6"]), tmp_path)
    seen = []
    step = t.train_step

    def watched():
        seen.append(json.loads((tmp_path / "metrics.json").read_text()))
        if t.step == 5:
            raise RuntimeError("boom at 5")
        return step()

    t.train_step = watched
    with pytest.raises(RuntimeError, match="boom"):
        t.fit()
    assert [m["status"] for m in seen] == ["running"] * 6
    assert seen[0]["step"] == 0 and seen[0]["checkpoint"] is None
    assert seen[3]["step"] == 2 and seen[3]["checkpoint"].endswith("step_00000002.pt")
    assert seen[5]["step"] == 4 and seen[5]["checkpoint"].endswith("step_00000004.pt")

    from nerf_lab.train import record_failure

    record_failure(tmp_path, RuntimeError("boom at 5"), t)
    failed = json.loads((tmp_path / "metrics.json").read_text())
    assert failed["status"] == "failed" and failed["step"] == 5
    assert failed["checkpoint"].endswith("step_00000004.pt") and "boom" in failed["error"]


# ------------------------------------------------------------------ 5./6. temporaries, restarts


def test_stale_temporaries_are_removed_at_start(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    stale = [
        run_dir / "checkpoints" / ".step_00000002.pt.k3j_9x2a.tmp",
        run_dir / ".metrics.json.a8d0s1qq.tmp",
    ]
    for p in stale:
        p.write_bytes(b"partial")
    assert _quick_run(run_dir, ["trainer.resume=true"])["status"] == "completed"
    assert not any(p.exists() for p in stale)
    assert not list(run_dir.rglob("*.tmp"))


def test_resume_with_only_unreadable_checkpoints_is_an_error(done_run, tmp_path):
    run_dir = _copy(done_run, tmp_path / "run")
    for p in list_checkpoints(run_dir / "checkpoints"):
        p.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="Refusing to restart from iteration 0"):
        run(compose_cfg(QUICK + ["trainer.resume=true"]), run_dir)
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "completed"


def test_fresh_run_refuses_another_runs_directory_unless_overwrite(done_run, tmp_path):
    run_dir = _copy(done_run, tmp_path / "run")
    with pytest.raises(RunDirOwnedError, match="trainer.overwrite=true"):
        run(compose_cfg(QUICK), run_dir)
    # a bad value with overwrite: nothing is removed before the checks pass
    with pytest.raises(ConfigValueError):
        run(compose_cfg(QUICK + ["trainer.overwrite=true", "trainer.chunk_size=0"]), run_dir)
    assert len(list_checkpoints(run_dir / "checkpoints")) == 2
    old_id = json.loads((run_dir / "run.json").read_text())["run_id"]
    assert _quick_run(run_dir, ["trainer.overwrite=true"])["status"] == "completed"
    new_id = json.loads((run_dir / "run.json").read_text())["run_id"]
    state, _ = load_latest(run_dir / "checkpoints")
    assert new_id != old_id and state["run_id"] == new_id


# ------------------------------------------------------------------ 7. limits up front


@pytest.mark.parametrize(
    "override,needle",
    [
        ("raysampler.n_rays_per_image=100000000", "Not enough memory for a training step"),
        ("trainer.render_scale=100", "trainer.render_scale=100: renders 6400 x 6400 images"),
        ("trainer.turntable_frames=10000000", "Not enough memory for rendering full images"),
        ("data.azimuth_range=400", "data.azimuth_range=400: must be a number in [0, 180]"),
        ("data.elevation_range=[10,95]", "data.elevation_range=[10, 95]: must be"),
        ("trainer.batch_size=7", "trainer.batch_size=7: must be <= the number of training"),
        ("+trainer.foo=1", "trainer.foo: unknown key"),
    ],
)
def test_limits_are_refused_before_data(tmp_path, override, needle, monkeypatch):
    import nerf_lab.data.procedural as procedural

    def boom(*a, **k):
        raise AssertionError("data generation started before the limits were checked")

    monkeypatch.setattr(procedural, "render_orbit_scene", boom)
    cfg = compose_cfg(QUICK + ["data.num_views=6", "data.image_size=64", override])
    with pytest.raises(ValueError) as e:
        run(cfg, tmp_path)
    assert needle in str(e.value), str(e.value)


def test_memory_message_gives_both_numbers(tmp_path):
    from nerf_lab.build import build_components, check_limits

    cfg = compose_cfg(QUICK)
    components = build_components(cfg)
    check_limits(cfg, components, available=2**34)
    with pytest.raises(ValueError) as e:
        check_limits(cfg, components, available=2**20)
    msg = str(e.value)
    assert "needs an estimated" in msg and "only 1.0 MiB is available" in msg
    assert "a training step (128 rays x 16 points)" in msg


# ------------------------------------------------------------------ 8. signals


def test_sighup_during_a_long_render_stops_there_with_a_checkpoint(tmp_path):
    # as from a terminal: under nohup SIGHUP starts ignored and stays so (the next test)
    saved = signal.signal(signal.SIGHUP, signal.SIG_DFL)
    try:
        cfg = compose_cfg(QUICK + ["trainer.turntable_frames=30"])
        t = build_trainer(cfg, tmp_path)
        field, calls = t.renderer.field, []
        in_turntable = []
        turntable = t.turntable

        def counting_forward(*args, **kwargs):
            if in_turntable:
                calls.append(1)
                if len(calls) == 1:
                    os.kill(os.getpid(), signal.SIGHUP)
            return field.__class__.forward(field, *args, **kwargs)

        def watched(*a, **k):
            in_turntable.append(1)
            return turntable(*a, **k)

        field.forward = counting_forward
        t.turntable = watched
        with pytest.raises(TrainingInterrupted) as e:
            t.fit()
        assert e.value.signum == signal.SIGHUP and e.value.step == 4
        status = json.loads((tmp_path / "metrics.json").read_text())
        assert status["status"] == "interrupted" and status["signal"] == signal.SIGHUP
        assert status["checkpoint"].endswith("step_00000004.pt")
        assert len(calls) < 30  # stopped after the view being rendered, not after 30 views
        assert not (tmp_path / "renders" / "turntable.gif").exists()
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_DFL  # handlers restored
    finally:
        signal.signal(signal.SIGHUP, saved)


def test_a_run_started_under_nohup_keeps_ignoring_sighup():
    from nerf_lab.signals import StopSignals

    old = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        stops = StopSignals()
        with stops.installed():
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
            assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
            os.kill(os.getpid(), signal.SIGHUP)
            assert not stops.stop_requested
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, old)


# ------------------------------------------------------------------ 9. NaN


def _nan_trainer(tmp_path, extra):
    cfg = compose_cfg(TINY + ["trainer.n_iter=8", "trainer.turntable_frames=0", *extra])
    t = build_trainer(cfg, tmp_path)
    t.renderer.field = NaNAfter(3)
    t.optimizer = torch.optim.Adam(t.renderer.parameters())
    t.scheduler = torch.optim.lr_scheduler.LambdaLR(t.optimizer, lambda s: 1.0)
    return t


def test_nonfinite_parameters_stop_and_name_the_real_checkpoint(tmp_path):
    t = _nan_trainer(tmp_path / "a", ["trainer.skip_nonfinite=true", "trainer.checkpoint_every=2"])
    step = t.train_step

    def poisoned():
        if t.step == 4:
            with torch.no_grad():
                t.renderer.field.w.fill_(float("nan"))
        return step()

    t.train_step = poisoned
    with pytest.raises(NonFiniteParametersError) as e:
        t.fit()
    msg = str(e.value)
    assert "after iteration 4 (field.w)" in msg
    assert f"newest checkpoint is {tmp_path / 'a' / 'checkpoints' / 'step_00000004.pt'}" in msg

    t = _nan_trainer(tmp_path / "b", ["trainer.checkpoint_every=0"])
    with pytest.raises(NonFiniteLossError, match="There is no checkpoint of this run yet"):
        t.fit()


# ------------------------------------------------------------------ 10. absolute paths


def test_saved_config_has_absolute_data_paths(tmp_path, mesh_file, monkeypatch):
    monkeypatch.chdir(mesh_file.parent)
    no_data = [o for o in QUICK if not o.startswith("data")]
    data = ["data=mesh", f"data.path={mesh_file.name}", "data.image_size=16", "data.num_views=4",
            "data.n_test_views=1"]  # fmt: skip
    run(compose_cfg(no_data + data), tmp_path / "run")
    state, _ = load_latest(tmp_path / "run" / "checkpoints")
    assert state["config"]["data"]["path"] == str(mesh_file)
    assert yaml.safe_load((tmp_path / "run" / "config_resolved.yaml").read_text())["data"][
        "path"
    ] == str(mesh_file)
    monkeypatch.chdir("/")
    assert load_run(tmp_path / "run").scene().image_size == (16, 16)


# ------------------------------------------------------------------ 11. small things


def test_full_disk_is_one_line_naming_the_directory(tmp_path, monkeypatch):
    import nerf_lab.checkpoint as checkpoint

    def full(*a, **k):
        raise RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 64 vs 0")

    monkeypatch.setattr(checkpoint.torch, "save", full)
    with pytest.raises(DiskFullError) as e:
        run(compose_cfg(QUICK + ["data.cache=false"]), tmp_path)
    msg = str(e.value)
    assert f"no space left on {tmp_path / 'checkpoints'}" in msg and "\n" not in msg


def test_empty_run_dir_is_refused(tmp_path):
    with pytest.raises(ValueError, match="hydra.run.dir=''"):
        check_run_dir_setting("")
    check_run_dir_setting("outputs/x")
    proc = subprocess.run(
        [sys.executable, "-m", "nerf_lab.train", *QUICK, "hydra.run.dir=''"],
        env=ENV, cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 1 and "must name a directory" in proc.stderr + proc.stdout
    # nothing of a run in the working directory (Hydra writes .hydra/ and its log first)
    assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "metrics.json").exists()


def test_final_checkpoint_is_saved_once(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="nerf_lab")
    _quick_run(tmp_path)
    assert caplog.text.count("Saved checkpoint") == 2  # steps 2 and 4, not 4 twice


def test_resume_of_a_finished_run_says_nothing_is_left(done_run, tmp_path, caplog):
    run_dir = _copy(done_run, tmp_path / "run")
    caplog.set_level(logging.INFO, logger="nerf_lab")
    run(compose_cfg(QUICK + ["trainer.resume=true"]), run_dir)
    assert "already at trainer.n_iter=4: nothing to train" in caplog.text
    assert json.loads((run_dir / "metrics.json").read_text())["iterations"] == 4
