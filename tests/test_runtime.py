"""nerf_lab.runtime: threads per parallel job, and a job's status in metrics.json."""

from __future__ import annotations

import json
import signal

import pytest

from nerf_lab.runtime import (
    available_cores,
    job_info,
    job_status,
    job_threads,
    joblib_parallelism,
    read_status,
    write_status,
)
from nerf_lab.signals import TrainingInterrupted

JOBLIB = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
SLURM = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
LOCAL = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher"
BASIC = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"


def parallel_by_loop(n_jobs: int | None, n_cores: int) -> int:
    """joblib's effective job count, by its documented rule, one case at a time."""
    if n_jobs is None:
        return 1
    if n_jobs > 0:
        return n_jobs
    count = n_cores
    for _ in range(-n_jobs - 1):  # -1: all cores, -2: all but one, ...
        count -= 1
    return max(count, 1)


@pytest.mark.parametrize("n_cores", [1, 2, 3, 8, 16])
def test_joblib_threads_never_oversubscribe(n_cores):
    for n_jobs in [None, *range(1, 2 * n_cores + 2), *range(-1, -n_cores - 3, -1)]:
        parallel = joblib_parallelism(n_jobs, n_cores)
        assert parallel == parallel_by_loop(n_jobs, n_cores), n_jobs
        threads = job_threads({"_target_": JOBLIB, "n_jobs": n_jobs}, n_cores)
        assert threads is not None and threads >= 1
        if parallel <= n_cores:
            assert parallel * threads <= n_cores, (n_jobs, threads)
            # and no core is left idle that a whole extra thread per job could use
            assert parallel * (threads + 1) > n_cores, (n_jobs, threads)
        else:
            assert threads == 1


def test_job_threads_known_values():
    assert job_threads({"_target_": JOBLIB, "n_jobs": 2}, 2) == 1
    assert job_threads({"_target_": JOBLIB, "n_jobs": 2}, 16) == 8
    assert job_threads({"_target_": JOBLIB, "n_jobs": -1}, 16) == 1
    assert job_threads({"_target_": JOBLIB, "n_jobs": 3}, 16) == 5
    assert job_threads({"_target_": JOBLIB}, 4) == 1  # the plugin's default n_jobs=-1
    assert job_threads({"_target_": SLURM, "cpus_per_task": 8}, 2) == 8
    assert job_threads({"_target_": LOCAL, "cpus_per_task": 3}, 16) == 3
    assert job_threads({"_target_": SLURM, "cpus_per_task": None}, 16) is None
    assert job_threads({"_target_": BASIC}, 16) is None
    assert job_threads({}, 16) is None


@pytest.mark.parametrize(
    ("launcher", "n_cores", "needle"),
    [
        ({"_target_": JOBLIB, "n_jobs": 0}, 4, "hydra.launcher.n_jobs=0"),
        ({"_target_": JOBLIB, "n_jobs": 1.5}, 4, "hydra.launcher.n_jobs=1.5"),
        ({"_target_": SLURM, "cpus_per_task": 0}, 4, "hydra.launcher.cpus_per_task=0"),
        ({"_target_": JOBLIB, "n_jobs": 2}, 0, "n_cores=0"),
    ],
)
def test_job_threads_rejects_bad_values(launcher, n_cores, needle):
    with pytest.raises(ValueError, match=needle.replace(".", r"\.")):
        job_threads(launcher, n_cores)


def test_available_cores_is_positive():
    assert available_cores() >= 1


def test_job_info_reads_slurm_ids():
    info = job_info({"SLURM_JOB_ID": "12", "SLURM_ARRAY_JOB_ID": "11", "SLURM_RESTART_COUNT": "1"})
    assert info["slurm_job_id"] == "12" and info["slurm_array_job_id"] == "11"
    assert info["slurm_restart_count"] == "1" and "slurm_array_task_id" not in info
    assert isinstance(info["pid"], int) and info["host"]


def test_job_status_running_then_the_final_status(tmp_path):
    with job_status(tmp_path):
        record = json.loads((tmp_path / "metrics.json").read_text())
        assert record["status"] == "running" and record["pid"] > 0 and record["started"]
        write_status(tmp_path, "completed")  # the trainer's final metrics
    assert read_status(tmp_path) == "completed"


@pytest.mark.parametrize(
    ("exc", "status"),
    [
        (TrainingInterrupted(signal.SIGTERM, 3, None), "interrupted"),
        (SystemExit(-1), "interrupted"),  # e.g. submitit's handler after a requeue
        (KeyboardInterrupt(), "interrupted"),
        (RuntimeError("boom"), "failed"),
    ],
)
def test_job_status_when_the_body_is_left_by_an_exception(tmp_path, exc, status):
    with pytest.raises(type(exc)), job_status(tmp_path):
        raise exc
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert record["status"] == status and type(exc).__name__ in record["error"]


def test_job_status_keeps_a_status_written_inside(tmp_path):
    with pytest.raises(ValueError), job_status(tmp_path):
        write_status(tmp_path, "failed", error="ValueError: the trainer's own words")
        raise ValueError("x")
    assert json.loads((tmp_path / "metrics.json").read_text())["error"].endswith("own words")


def test_write_status_rejects_unknown_statuses(tmp_path):
    with pytest.raises(ValueError, match="status='done'"):
        write_status(tmp_path, "done")
    assert read_status(tmp_path) is None
