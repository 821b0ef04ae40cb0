"""Sweeps: Hydra multiruns of nerf_lab.train, their HParams, the summary script, the
named studies (``+sweep=...``) and the launcher/sweeper presets."""

from __future__ import annotations

import csv
import importlib.util
import itertools
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.errors import MissingConfigException
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from nerf_lab.config import check_config
from nerf_lab.plugins import plugin_installed
from tests.conftest import CONF, TINY, compose_cfg

REPO = CONF.parent
SUMMARIZE = REPO / "scripts" / "summarize_sweep.py"

# TINY, with no turntable, no previews, one thread per job and 3 iterations.
SWEEP_TINY = [o for o in TINY if not o.startswith("trainer.turntable_frames")] + [
    "trainer.turntable_frames=0",
    "trainer.render_every=0",
    "trainer.num_threads=1",
    "trainer.n_iter=3",
]


def tiny_sweep(sweep_dir: Path, *swept: str) -> list[str]:
    """``-m`` arguments: the swept ``key=a,b`` overrides on top of SWEEP_TINY.

    The fixed settings are left out of the job directory names (with all of them in it, a
    job's directory name would pass the file system's 255-byte limit).
    """
    swept_keys = {s.split("=", 1)[0] for s in swept}
    fixed = [o for o in SWEEP_TINY if o.split("=", 1)[0] not in swept_keys]
    exclude = sorted({o.split("=", 1)[0] for o in fixed} | {"data.path", "data.data_dir"})
    return [
        "-m",
        *fixed,
        *swept,
        f"hydra.sweep.dir={sweep_dir}",
        f"hydra.job.config.override_dirname.exclude_keys=[{','.join(exclude)}]",
    ]


def has_plugin(module: str) -> bool:
    return plugin_installed(module)


def train_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nerf_lab.train", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def summarize(sweep_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SUMMARIZE), str(sweep_dir), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def table_rows(markdown: str) -> list[list[str]]:
    """Body rows of the first Markdown table in ``markdown``."""
    lines = [ln for ln in markdown.splitlines() if ln.startswith("|")]
    return [[c.strip() for c in ln.strip("|").split(" | ")] for ln in lines[2:]]


def hparams_of(run_dir: Path) -> dict[str, object]:
    """The HParams session-start values in the run directory's own event file."""
    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    content = acc.PluginTagToContent("hparams")
    assert "_hparams_/experiment" in content
    data = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    out: dict[str, object] = {}
    for key, value in data.session_start_info.hparams.items():
        kind = value.WhichOneof("kind")
        out[key] = getattr(value, kind) if kind else None
    return out


# ----------------------------------------------------------------------------- multiruns


def test_multirun_2x2_runs_every_combination_with_hparams_and_summary(tmp_path):
    sweep_dir = tmp_path / "sweep"
    proc = train_cli(
        *tiny_sweep(sweep_dir, "model.n_harmonic_functions=2,4", "raysampler.n_rays_per_image=8,16")
    )
    assert proc.returncode == 0, proc.stderr[-3000:]

    jobs = sorted(p for p in sweep_dir.iterdir() if p.is_dir())
    assert [p.name for p in jobs] == [
        "0_model.n_harmonic_functions=2,raysampler.n_rays_per_image=8",
        "1_model.n_harmonic_functions=2,raysampler.n_rays_per_image=16",
        "2_model.n_harmonic_functions=4,raysampler.n_rays_per_image=8",
        "3_model.n_harmonic_functions=4,raysampler.n_rays_per_image=16",
    ]
    for job, (n_harm, n_rays) in zip(jobs, itertools.product((2, 4), (8, 16)), strict=True):
        metrics = json.loads((job / "metrics.json").read_text())
        assert metrics["status"] == "completed" and metrics["iterations"] == 3
        # TensorBoard: one event file per run, in the run's own directory (no sub-runs),
        # holding that run's hparams.
        events = list(job.rglob("events.out.tfevents*"))
        assert events and all(e.parent == job for e in events)
        hp = hparams_of(job)
        assert hp["model.n_harmonic_functions"] == n_harm
        assert hp["raysampler.n_rays_per_image"] == n_rays

    out = summarize(sweep_dir)
    assert out.returncode == 0, out.stderr
    rows = table_rows(out.stdout)
    assert len(rows) == 4
    assert all(r[3] == "completed" and float(r[4]) > 0 for r in rows)
    assert [r[1:3] for r in rows] == [["2", "8"], ["2", "16"], ["4", "8"], ["4", "16"]]
    with (sweep_dir / "summary.csv").open() as f:
        records = list(csv.DictReader(f))
    assert len(records) == 4 and {r["status"] for r in records} == {"completed"}
    assert {r["model.n_harmonic_functions"] for r in records} == {"2", "4"}
    if importlib.util.find_spec("matplotlib") is not None:
        assert (sweep_dir / "summary.png").stat().st_size > 0


def test_a_failed_job_does_not_stop_the_sweep_and_is_summarised(tmp_path):
    sweep_dir = tmp_path / "sweep"
    proc = train_cli(*tiny_sweep(sweep_dir, "raysampler.n_rays_per_image=0,8"))
    assert proc.returncode != 0  # Hydra reports the failure after running every job
    bad = sweep_dir / "0_raysampler.n_rays_per_image=0"
    good = sweep_dir / "1_raysampler.n_rays_per_image=8"
    assert json.loads((good / "metrics.json").read_text())["status"] == "completed"
    assert json.loads((bad / "metrics.json").read_text())["status"] == "failed"

    out = summarize(sweep_dir, "--no-plot")
    assert out.returncode == 0, out.stderr
    rows = {r[0]: r for r in table_rows(out.stdout)}
    assert rows["1"][2] == "completed"
    assert rows["0"][2] == "failed" and "n_rays_per_image" in rows["0"][-1]
    assert "1 completed, 1 failed of 2 jobs" in out.stdout


def test_summary_reads_status_only_from_metrics_json(tmp_path):
    """Every status comes from metrics.json; log text is never read (here it says otherwise)."""
    records = {
        "0_a=1": {"status": "failed", "error": "MemoryError: out of memory"},
        "1_a=2": {"status": "interrupted", "error": "TrainingInterrupted: SIGTERM"},
        # a running job whose process is gone: this test's own, finished, child process
        "2_a=3": {"status": "running", "host": socket.gethostname(), "pid": dead_pid()},
        "3_a=4": None,  # no metrics.json yet
        "4_a=5": {"status": "completed", "eval/psnr": 21.5, "iterations": 3},
    }
    for name, record in records.items():
        (tmp_path / name / ".hydra").mkdir(parents=True)
        (tmp_path / name / ".hydra" / "overrides.yaml").write_text(f"- a={name[-1]}\n")
        (tmp_path / name / "train.log").write_text(
            "Traceback\nValueError: Stopped after iteration\n"
        )
        if record is not None:
            (tmp_path / name / "metrics.json").write_text(json.dumps(record))
    out = summarize(tmp_path, "--no-plot")
    assert out.returncode == 0, out.stderr
    rows = table_rows(out.stdout)
    assert [r[:3] for r in rows] == [
        ["0", "1", "failed"],
        ["1", "2", "interrupted"],
        ["2", "3", "running"],
        ["3", "4", "missing"],
        ["4", "5", "completed"],
    ]
    assert rows[0][-1] == "MemoryError: out of memory"
    assert "that process is gone" in rows[2][-1]
    assert float(rows[4][3]) == 21.5
    assert "1 completed, 1 failed, 1 interrupted, 1 running, 1 missing of 5 jobs" in out.stdout
    assert (tmp_path / "summary.csv").exists() and not (tmp_path / "summary.png").exists()


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], **TEXT)
    return int(proc.stdout)


TEXT = {"capture_output": True, "text": True, "check": True}


def test_summary_console_script_and_wrapper_agree(tmp_path):
    job = tmp_path / "0_a=1"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("- a=1\n")
    (job / "metrics.json").write_text(json.dumps({"status": "completed", "eval/psnr": 20.0}))
    script = Path(sys.executable).parent / "nerf-lab-summarize"
    if not script.exists():
        pytest.skip("nerf-lab-summarize is not installed (pip install -e .)")
    a = subprocess.run([str(script), str(tmp_path), "--no-plot"], **TEXT)
    b = summarize(tmp_path, "--no-plot")
    assert a.stdout == b.stdout and "| 0 | completed | 20.00 |" in a.stdout


def test_summary_of_a_directory_without_jobs_fails_clearly(tmp_path):
    out = summarize(tmp_path, "--no-plot")
    assert out.returncode != 0 and "no Hydra job directories" in out.stderr


# ----------------------------------------------------------------------------- named studies

# (the method study, +sweep=methods, runs the experiment presets: tests/test_methods.py)
STUDIES = sorted(
    p.stem
    for p in (CONF / "sweep").glob("*.yaml")
    if p.stem not in ("optuna_lr_harmonics", "methods")
)


def test_the_three_studies_exist():
    assert {"harmonics", "depth_range", "ray_budget"} <= set(STUDIES)


@pytest.mark.parametrize("study", STUDIES)
def test_every_combination_of_each_study_composes_and_checks(study):
    cfg = compose_cfg([f"+sweep={study}"])
    hydra_cfg = compose_hydra([f"+sweep={study}"])
    params = OmegaConf.to_container(hydra_cfg.hydra.sweeper.params)
    assert params and cfg.name == f"sweep_{study}"
    assert cfg.model._target_.endswith("NeuralRadianceField") and cfg.trainer.n_iter <= 500
    grid = [[f"{k}={v}" for v in str(values).split(",")] for k, values in params.items()]
    for combo in itertools.product(*grid):
        check_config(compose_cfg([f"+sweep={study}", *combo]))


def compose_hydra(overrides: list[str]):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=overrides, return_hydra_config=True)


def test_study_cli_prints_its_sweep_params():
    proc = train_cli("+sweep=harmonics", "--cfg", "hydra", "--package", "hydra.sweeper")
    assert proc.returncode == 0, proc.stderr
    assert "model.n_harmonic_functions: 2,4,6,8,10" in proc.stdout


def test_optuna_study_composes_or_names_the_missing_plugin():
    if has_plugin("hydra_optuna_sweeper"):
        cfg = compose_hydra(["+sweep=optuna_lr_harmonics"])
        assert "optuna" in cfg.hydra.sweeper._target_.lower()
        assert str(cfg.hydra.sweeper.direction).lower().endswith("maximize")
        assert set(cfg.hydra.sweeper.params) == {"optimizer.lr", "model.n_harmonic_functions"}
    else:
        with pytest.raises(MissingConfigException, match="hydra/sweeper/optuna"):
            compose_hydra(["+sweep=optuna_lr_harmonics"])


# ----------------------------------------------------------------------------- launchers


@pytest.mark.skipif(not has_plugin("hydra_joblib_launcher"), reason="hydra-joblib-launcher")
def test_joblib_launcher_composes():
    proc = train_cli("hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "--cfg", "hydra")
    assert proc.returncode == 0, proc.stderr
    assert "JoblibLauncher" in proc.stdout and "n_jobs: 2" in proc.stdout


def test_slurm_launcher_composes_or_names_the_missing_plugin():
    if has_plugin("hydra_submitit_launcher"):
        cfg = compose_hydra(["hydra/launcher=slurm"])
        assert cfg.hydra.launcher._target_.endswith("SlurmLauncher")
        assert cfg.hydra.launcher.gpus_per_node == 1
        assert cfg.hydra.launcher.signal_delay_s > 0
    else:
        with pytest.raises(MissingConfigException, match="hydra/launcher/submitit_slurm"):
            compose_hydra(["hydra/launcher=slurm"])
