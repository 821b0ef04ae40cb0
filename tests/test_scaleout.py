"""Scaling out for real: SLURM sweeps on a local one-node cluster (scripts/local_slurm.sh),
pre-emption and requeue, a failing job, an Optuna study in SQLite (and resumed), and parallel
joblib jobs that share the cores.

The SLURM tests start the cluster once per session (``local_slurm.sh up``: root and apt-get;
they skip with the reason otherwise, or when ``NERF_LAB_NO_SLURM=1``) and leave it running;
``bash scripts/local_slurm.sh down`` stops it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from nerf_lab.plugins import plugin_installed
from nerf_lab.runtime import available_cores, job_threads, read_status
from tests.test_sweeps import SWEEP_TINY, hparams_of, summarize, table_rows

REPO = Path(__file__).resolve().parents[1]
LOCAL_SLURM = REPO / "scripts" / "local_slurm.sh"
JOBLIB = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"


def sweep_args(sweep_dir: Path, fixed: list[str], *swept: str) -> list[str]:
    """``-m`` arguments: ``fixed`` (kept out of the job directory names) and ``swept``."""
    swept_keys = {s.split("=", 1)[0] for s in swept}
    fixed = [o for o in fixed if o.split("=", 1)[0] not in swept_keys]
    exclude = sorted({o.split("=", 1)[0].lstrip("+") for o in fixed} | {"sweep"})
    return [
        "-m",
        *fixed,
        *swept,
        f"hydra.sweep.dir={sweep_dir}",
        f"hydra.job.config.override_dirname.exclude_keys=[{','.join(exclude)}]",
    ]


def train_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "nerf_lab.train", *args]


def wait_for(what: str, check: Callable[[], Any], timeout: float, proc=None) -> Any:
    """Poll ``check()`` until it returns something truthy (or fail, saying what)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the sweep ended before {what}: {proc.stdout.read()[-4000:]}")
        time.sleep(0.25)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")


def job_dirs(sweep_dir: Path) -> list[Path]:
    return sorted((p for p in sweep_dir.iterdir() if (p / ".hydra").is_dir()), key=lambda p: p.name)


def metrics(job: Path) -> dict[str, Any]:
    return json.loads((job / "metrics.json").read_text())


# ----------------------------------------------------------------------------- SLURM


@pytest.fixture(scope="session")
def slurm_cluster() -> str:
    """A running local SLURM cluster; returns its SLURM_CONF."""
    if os.environ.get("NERF_LAB_NO_SLURM"):
        pytest.skip("NERF_LAB_NO_SLURM is set")
    if not plugin_installed("hydra_submitit_launcher"):
        pytest.skip("hydra-submitit-launcher is not installed: pip install -e '.[submitit]'")
    if shutil.which("bash") is None:
        pytest.skip("no bash")
    proc = subprocess.run(
        ["bash", str(LOCAL_SLURM), "up"], capture_output=True, text=True, timeout=900
    )
    if proc.returncode in (3, 4, 5):  # not root, no apt-get, the cluster did not come up
        reason = [ln for ln in proc.stderr.splitlines() if "error" in ln] or [proc.stderr]
        pytest.skip(f"no local SLURM cluster: {reason[-1].strip()}")
    assert proc.returncode == 0, proc.stderr
    conf = re.search(r"^SLURM_CONF=(.+)$", proc.stdout, re.MULTILINE)
    assert conf, proc.stdout
    return conf[1]


@pytest.fixture
def slurm_env(slurm_cluster, monkeypatch):
    """Environment for sbatch/squeue (the sweep passes it on to its jobs); a unique job name,
    whose jobs are cancelled after the test whatever happened."""
    monkeypatch.setenv("SLURM_CONF", slurm_cluster)
    name = f"nerf_lab_test_{uuid.uuid4().hex[:8]}"
    yield name
    subprocess.run(["scancel", f"--name={name}"], capture_output=True, timeout=60)


def slurm_launcher(name: str, *extra: str) -> list[str]:
    """Our preset, sized for a 2-core test node: one CPU and 1 GB per job."""
    return [
        "hydra/launcher=slurm",
        f"hydra.launcher.name={name}",
        "hydra.launcher.cpus_per_task=1",
        "hydra.launcher.mem_gb=1",
        "hydra.launcher.timeout_min=20",
        *extra,
    ]


def submission_scripts(sweep_dir: Path) -> str:
    return "\n".join(p.read_text() for p in (sweep_dir / ".submitit").rglob("*_submission.sh"))


@pytest.mark.slurm
@pytest.mark.slow
def test_slurm_2x2_sweep_on_a_cpu_only_cluster(tmp_path, slurm_env):
    sweep_dir = tmp_path / "sweep"
    args = sweep_args(
        sweep_dir, SWEEP_TINY, "model.n_harmonic_functions=2,4", "raysampler.n_rays_per_image=8,16"
    )
    # gpus_per_node=0: a CPU-only cluster has no GPUs to give (the preset asks for 1).
    launcher = slurm_launcher(slurm_env, "hydra.launcher.gpus_per_node=0")
    proc = subprocess.run(
        train_cmd(*args, *launcher), cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-4000:]

    script = submission_scripts(sweep_dir)
    assert "#SBATCH --array=0-3%" in script and "#SBATCH --gpus-per-node=0" in script
    assert "#SBATCH --cpus-per-task=1" in script and "#SBATCH --signal=USR2@" in script
    jobs = job_dirs(sweep_dir)
    assert [p.name for p in jobs] == [
        "0_model.n_harmonic_functions=2,raysampler.n_rays_per_image=8",
        "1_model.n_harmonic_functions=2,raysampler.n_rays_per_image=16",
        "2_model.n_harmonic_functions=4,raysampler.n_rays_per_image=8",
        "3_model.n_harmonic_functions=4,raysampler.n_rays_per_image=16",
    ]
    for job, (n_harm, n_rays) in zip(jobs, [(2, 8), (2, 16), (4, 8), (4, 16)], strict=True):
        m = metrics(job)
        assert m["status"] == "completed" and m["iterations"] == 3 and m["eval/psnr"] > 0
        hp = hparams_of(job)
        assert hp["model.n_harmonic_functions"] == n_harm
        assert hp["raysampler.n_rays_per_image"] == n_rays
        # the job ran under SLURM, with the threads of its allocation
        assert re.search(r"torch threads: 1 \(SlurmLauncher", (job / "train.log").read_text())

    out = summarize(sweep_dir, "--no-plot")
    assert out.returncode == 0, out.stderr
    rows = table_rows(out.stdout)
    assert [r[1:4] for r in rows] == [
        ["2", "8", "completed"],
        ["2", "16", "completed"],
        ["4", "8", "completed"],
        ["4", "16", "completed"],
    ]
    for row, job in zip(rows, jobs, strict=True):
        assert float(row[4]) == pytest.approx(metrics(job)["eval/psnr"], abs=0.005)
    assert "4 completed of 4 jobs" in out.stdout


@pytest.mark.slurm
@pytest.mark.slow
def test_slurm_job_with_a_bad_value_fails_and_the_others_finish(tmp_path, slurm_env):
    sweep_dir = tmp_path / "sweep"
    args = sweep_args(sweep_dir, SWEEP_TINY, "raysampler.n_rays_per_image=0,8")
    launcher = slurm_launcher(slurm_env, "hydra.launcher.gpus_per_node=null")
    proc = subprocess.run(
        train_cmd(*args, *launcher), cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode != 0  # Hydra reports the failure once every job has ended
    assert "gpus-per-node" not in submission_scripts(sweep_dir)
    bad, good = job_dirs(sweep_dir)
    assert metrics(good)["status"] == "completed"
    assert metrics(bad)["status"] == "failed" and "n_rays_per_image" in metrics(bad)["error"]

    out = summarize(sweep_dir, "--no-plot")
    assert out.returncode == 0, out.stderr
    rows = {r[0]: r for r in table_rows(out.stdout)}
    assert rows["0"][2] == "failed" and "n_rays_per_image" in rows["0"][-1]
    assert rows["1"][2] == "completed"
    assert "1 completed, 1 failed of 2 jobs" in out.stdout


def squeue_state(job_id: str) -> str:
    out = subprocess.run(
        ["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True, timeout=60
    )
    return out.stdout.strip()


def start_requeued_now(job_id: str) -> None:
    """SLURM holds a requeued job back for about two minutes (its begin time); a test need
    not wait: once it is pending again, let it start now."""

    def pending_and_released() -> bool:
        if squeue_state(job_id) != "PENDING":
            return False
        update = ["scontrol", "update", f"JobId={job_id}", "StartTime=now"]
        return subprocess.run(update, capture_output=True, timeout=60).returncode == 0

    wait_for(f"job {job_id} to be pending again", pending_and_released, timeout=180)


def running_record(job: Path) -> dict[str, Any] | None:
    """The job's ``running`` record, once it has a checkpoint to resume from."""
    if not (job / "checkpoints" / "latest").exists():
        return None
    try:
        record = metrics(job)
    except (OSError, ValueError):
        return None
    return record if record.get("status") == "running" and "slurm_job_id" in record else None


def resumed_at(job: Path) -> int:
    found = re.findall(
        r"Resumed from (\S+)/step_(\d+)\.pt \(iteration (\d+)\)", (job / "train.log").read_text()
    )
    assert len(found) == 1, (job / "train.log").read_text()[-3000:]
    ckpt_dir, step, iteration = found[0]
    assert Path(ckpt_dir) == job / "checkpoints" and int(step) == int(iteration)
    return int(iteration)


@pytest.mark.slurm
@pytest.mark.slow
def test_slurm_preempted_jobs_resume_and_match_an_uninterrupted_run(tmp_path, slurm_env):
    """Three identical runs (keep_checkpoints does not change the result):
    job 0 is requeued by the operator (``scontrol requeue``: SIGTERM, then SIGKILL after
    KillWait), job 1 gets SLURM's pre-emption/time-limit signal (SIGUSR2: the trainer saves a
    checkpoint and submitit requeues the job), job 2 runs uninterrupted. Both requeued jobs
    start again in their own directories, resume from their last checkpoint and end with
    job 2's held-out PSNR."""
    n_iter = 1000
    sweep_dir = tmp_path / "sweep"
    fixed = [o for o in SWEEP_TINY if not o.startswith("trainer.n_iter")] + [
        f"trainer.n_iter={n_iter}",
        "trainer.checkpoint_every=50",
        "trainer.log_every=100",
        "trainer.resume=true",
    ]
    args = sweep_args(sweep_dir, fixed, "trainer.keep_checkpoints=2,3,4")
    launcher = slurm_launcher(slurm_env, "hydra.launcher.gpus_per_node=null")
    proc = subprocess.Popen(
        train_cmd(*args, *launcher),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        requeued = sweep_dir / "0_trainer.keep_checkpoints=2"
        signalled = sweep_dir / "1_trainer.keep_checkpoints=3"
        reference = sweep_dir / "2_trainer.keep_checkpoints=4"
        rec0 = wait_for("job 0's first checkpoint", lambda: running_record(requeued), 300, proc)
        rec1 = wait_for("job 1's first checkpoint", lambda: running_record(signalled), 300, proc)
        id0, id1 = rec0["slurm_job_id"], rec1["slurm_job_id"]
        subprocess.run(["scontrol", "requeue", id0], check=True, timeout=60)
        subprocess.run(["scancel", "--signal=USR2", id1], check=True, timeout=60)
        # USR2: checkpoint after the current step, then submitit requeues and exits.
        wait_for("job 1 to stop", lambda: read_status(signalled) == "interrupted", 120, proc)
        start_requeued_now(id0)
        start_requeued_now(id1)
        out, _ = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, out[-4000:]

    ref = metrics(reference)
    assert ref["status"] == "completed" and ref["iterations"] == n_iter
    for job, job_id in ((requeued, id0), (signalled, id1)):
        m = metrics(job)
        assert m["status"] == "completed" and m["iterations"] == n_iter
        assert 50 <= resumed_at(job) < n_iter
        assert m["eval/psnr"] == pytest.approx(ref["eval/psnr"], abs=1e-3)
        assert m["eval/ssim"] == pytest.approx(ref["eval/ssim"], abs=1e-5)
        show = subprocess.run(
            ["scontrol", "show", "job", job_id], capture_output=True, text=True, timeout=60
        )
        assert "Restarts=1" in show.stdout, show.stdout  # SLURM ran it a second time
    assert "Received SIGTERM under a launcher" in (requeued / "train.log").read_text()
    log1 = (signalled / "train.log").read_text()
    assert "Received SIGUSR2" in log1 and "this job is preempted" in log1
    assert "Resumed from" not in (reference / "train.log").read_text()

    out = summarize(sweep_dir, "--no-plot")
    assert out.returncode == 0 and "3 completed of 3 jobs" in out.stdout, out.stdout


# ----------------------------------------------------------------------------- Optuna


def optuna_sweep(sweep_dir: Path, storage: str, n_trials: int) -> subprocess.CompletedProcess:
    fixed = [o for o in SWEEP_TINY if not o.startswith("model.n_harmonic_functions")]
    args = sweep_args(
        sweep_dir,
        [
            "+sweep=optuna_lr_harmonics",
            *fixed,
            f"hydra.sweeper.n_trials={n_trials}",
            f"hydra.sweeper.storage={storage}",
        ],
    )
    return subprocess.run(train_cmd(*args), cwd=REPO, capture_output=True, text=True, timeout=600)


@pytest.mark.optuna
@pytest.mark.slow
# SQLAlchemy 1.4 warns about Optuna 2.10's models (harmless; the extra pins sqlalchemy<2)
@pytest.mark.filterwarnings("ignore:Deprecated API features detected")
def test_optuna_study_in_sqlite_returns_heldout_psnr_and_resumes(tmp_path):
    if not plugin_installed("hydra_optuna_sweeper"):
        pytest.skip("hydra-optuna-sweeper is not installed: pip install -e '.[optuna]'")
    import optuna

    db = tmp_path / "optuna.db"
    storage = f"sqlite:///{db}"
    first, second = tmp_path / "first", tmp_path / "second"

    proc = optuna_sweep(first, storage, n_trials=3)
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = yaml.safe_load((first / "optimization_results.yaml").read_text())
    assert results["name"] == "optuna"
    assert set(results["best_params"]) == {"optimizer.lr", "model.n_harmonic_functions"}
    jobs = job_dirs(first)
    assert len(jobs) == 3
    psnrs = [metrics(j)["eval/psnr"] for j in jobs]
    assert results["best_value"] == pytest.approx(max(psnrs))

    # Resume: the same study, two more trials (a new sweep directory).
    proc = optuna_sweep(second, storage, n_trials=2)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert len(job_dirs(second)) == 2
    study = optuna.load_study(study_name="lr_harmonics", storage=storage)
    trials = sorted(study.trials, key=lambda t: t.number)
    assert len(trials) == 5 and all(t.state.name == "COMPLETE" for t in trials)

    # Every trial returned its job's held-out PSNR, with its job's parameters.
    for trial, job in zip(trials, jobs + job_dirs(second), strict=True):
        m = metrics(job)
        assert m["status"] == "completed"
        assert trial.value == pytest.approx(m["eval/psnr"], abs=1e-9)
        items = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
        overrides = dict(str(o).split("=", 1) for o in items)
        n_harm = trial.params["model.n_harmonic_functions"]
        assert int(overrides["model.n_harmonic_functions"]) == n_harm
        assert float(overrides["optimizer.lr"]) == pytest.approx(trial.params["optimizer.lr"])
    out = summarize(first, "--no-plot")
    assert out.returncode == 0 and "Optuna best:" in out.stdout, out.stdout


# ----------------------------------------------------------------------------- joblib


@pytest.mark.slow
@pytest.mark.skipif(not plugin_installed("hydra_joblib_launcher"), reason="hydra-joblib-launcher")
def test_parallel_joblib_jobs_share_the_cores(tmp_path):
    n_jobs = 2
    cores = available_cores()
    expected = job_threads({"_target_": JOBLIB, "n_jobs": n_jobs}, cores)
    assert expected is not None and n_jobs * expected <= max(cores, n_jobs)
    sweep_dir = tmp_path / "sweep"
    fixed = [o for o in SWEEP_TINY if not o.startswith("trainer.num_threads")]  # torch default
    args = sweep_args(sweep_dir, fixed, "model.n_harmonic_functions=2,4")
    proc = subprocess.run(
        train_cmd(*args, "hydra/launcher=joblib", f"hydra.launcher.n_jobs={n_jobs}"),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    jobs = job_dirs(sweep_dir)
    assert len(jobs) == 2
    pids = set()
    for job in jobs:
        assert metrics(job)["status"] == "completed"
        found = re.findall(
            r"torch threads: (\d+) \(JoblibLauncher on (\d+) cores\)",
            (job / "train.log").read_text(),
        )
        assert found == [(str(expected), str(cores))]
        # the TensorBoard file name ends in the writing process's pid: one worker per job
        (event,) = job.glob("events.out.tfevents.*")
        pids.add(event.name.split(".")[-2])
    assert len(pids) == 2


# ----------------------------------------------------------------------------- local_slurm.sh


def local_slurm(*args: str, env: dict[str, str] | None = None, prefix: tuple[str, ...] = ()):
    return subprocess.run(
        [*(prefix or ("bash",)), str(LOCAL_SLURM), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def test_local_slurm_usage():
    proc = local_slurm("sideways")
    assert proc.returncode == 2 and "usage:" in proc.stderr


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root")
def test_local_slurm_refuses_to_run_without_root(tmp_path):
    env = {**os.environ, "NERF_LAB_SLURM_DIR": str(tmp_path / "slurm")}
    nobody = ("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "bash")
    proc = local_slurm("up", env=env, prefix=nobody)
    assert proc.returncode == 3 and "must run as root" in proc.stderr
    assert not (tmp_path / "slurm").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
def test_local_slurm_says_when_it_cannot_install(tmp_path):
    """No SLURM on the PATH and no apt-get: a clear error, nothing started."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "id", "hostname", "mkdir", "dirname", "flock", "chmod", "cat", "rm"):
        found = shutil.which(tool)
        assert found, tool
        (bin_dir / tool).symlink_to(found)
    env = {"PATH": str(bin_dir), "NERF_LAB_SLURM_DIR": str(tmp_path / "slurm")}
    proc = local_slurm("up", env=env, prefix=(str(bin_dir / "bash"),))
    assert proc.returncode == 4, proc.stderr
    assert "no apt-get to install them" in proc.stderr and "slurmctld" in proc.stderr
