"""Hydra entry point: ``python -m nerf_lab.train [overrides]`` (also ``nerf-lab-train``).

Composes the config groups, checks every value up front, builds each component
(:mod:`nerf_lab.build`) and hands them to :class:`nerf_lab.trainer.Trainer`. Returns the
final held-out PSNR, so Hydra sweepers (e.g. Optuna) can optimise it.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import traceback
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from nerf_lab.build import build_trainer
from nerf_lab.checkpoint import clean_stale_temporaries, write_json_atomic
from nerf_lab.config import CONF_DIR, check_writable, register_configs
from nerf_lab.memory import reset_peak_rss
from nerf_lab.perf import release_free_memory
from nerf_lab.plugins import missing_plugin_message
from nerf_lab.rundir import RunDirLock, RunDirLockedError
from nerf_lab.runtime import set_job_threads
from nerf_lab.signals import TrainingInterrupted

log = logging.getLogger("nerf_lab")

register_configs()


def check_run_dir_setting(value: Any) -> None:
    """Refuse an empty ``hydra.run.dir`` (Hydra would write into the working directory)."""
    if value is None or not str(value).strip():
        raise ValueError(
            f"hydra.run.dir={value!r}: must name a directory (e.g. hydra.run.dir=outputs/my_run); "
            "an empty value would write the run into the current directory."
        )


def run(cfg: DictConfig, run_dir: Path, overrides: list[str] | None = None) -> float:
    """Train one configuration in ``run_dir``; returns the final held-out PSNR.

    The run holds ``run_dir``'s lock (:class:`~nerf_lab.rundir.RunDirLock`) from start to
    end: a second process gets :class:`~nerf_lab.rundir.RunDirLockedError` naming the
    holder's PID, and writes nothing. Stale temporaries of killed writers are removed at
    start. A failure is recorded in ``run_dir``: after training started, as
    ``metrics.json`` ``"failed"`` (with the step and the newest checkpoint); before, as
    ``error.json`` (and ``metrics.json`` only where there is none: a completed or
    interrupted run's metrics are never overwritten by a start that failed).
    """
    run_dir = Path(run_dir)
    check_writable(run_dir)
    # metrics.json's peak_rss_mb is this run's own, also when a local multirun (the method
    # study) trains several runs in one process: hand the earlier runs' freed memory back,
    # then start a new peak
    release_free_memory()
    reset_peak_rss()
    with RunDirLock(run_dir):
        clean_stale_temporaries(run_dir)
        clean_stale_temporaries(run_dir / "checkpoints")
        trainer = None
        try:
            trainer = build_trainer(cfg, run_dir, overrides)
            metrics = trainer.fit()
        except TrainingInterrupted:
            raise
        except Exception as e:
            # Leave the error in the run's own directory (a sweep's other jobs go on).
            with contextlib.suppress(OSError):
                record_failure(run_dir, e, trainer)
            raise
    return float(metrics["eval/psnr"])


def record_failure(run_dir: Path, error: BaseException, trainer: Any = None) -> Path:
    """Write ``error`` into ``run_dir`` (see :func:`run`); returns the file written."""
    info = {
        "error": f"{type(error).__name__}: {error}",
        "traceback": "".join(traceback.format_exception(error)),
    }
    if trainer is not None and trainer.started:
        trainer.write_status("failed", **info)
        return run_dir / "metrics.json"
    info = {"status": "failed", **info, "stage": "start-up (before training)"}
    write_json_atomic(run_dir / "error.json", info)
    if not (run_dir / "metrics.json").exists():
        write_json_atomic(run_dir / "metrics.json", info)
    return run_dir / "error.json"


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def _hydra_main(cfg: DictConfig) -> float:
    hc = HydraConfig.get()
    try:
        if hc.mode == RunMode.RUN:
            check_run_dir_setting(hc.run.dir)
        set_job_threads(hc.launcher)  # parallel jobs share the cores
        # (metrics.json says running / interrupted / completed, from the trainer; failed,
        # or error.json when a finished run's metrics must be kept, from run())
        return run(cfg, Path(hc.runtime.output_dir), list(hc.overrides.task))
    except TrainingInterrupted as e:
        sys.exit(128 + int(e.signum) if e.signum != signal.SIGINT else 130)
    except (ValueError, OSError, RunDirLockedError, FloatingPointError) as e:
        if hc.mode != RunMode.RUN:
            raise  # multirun: Hydra records the failure and the other jobs go on
        # A single run: the message says what is wrong; a traceback would only hide it.
        log.error("%s: %s", type(e).__name__, e)
        sys.exit(1)


def main() -> Any:
    """Console entry point: a clear message for missing Hydra plugins, then Hydra."""
    msg = missing_plugin_message(sys.argv[1:], CONF_DIR)
    if msg:
        sys.exit(msg)
    _hydra_main()
    return 0


if __name__ == "__main__":
    main()
