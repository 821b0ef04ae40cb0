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
from nerf_lab.checkpoint import write_json_atomic
from nerf_lab.config import CONF_DIR, register_configs
from nerf_lab.plugins import missing_plugin_message
from nerf_lab.runtime import job_status, set_job_threads
from nerf_lab.signals import TrainingInterrupted

log = logging.getLogger("nerf_lab")

register_configs()


def run(cfg: DictConfig, run_dir: Path, overrides: list[str] | None = None) -> float:
    """Train one configuration in ``run_dir``; returns the final held-out PSNR."""
    try:
        trainer = build_trainer(cfg, run_dir, overrides)
        metrics = trainer.fit()
    except TrainingInterrupted:
        raise
    except Exception as e:
        # Leave the error in the run's own directory (a sweep's other jobs go on).
        with contextlib.suppress(OSError):
            write_json_atomic(
                run_dir / "metrics.json",
                {
                    "status": "failed",
                    "error": f"{type(e).__name__}: {e}",
                    "traceback": traceback.format_exc(),
                },
            )
        raise
    return float(metrics["eval/psnr"])


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def _hydra_main(cfg: DictConfig) -> float:
    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    try:
        with job_status(run_dir):  # metrics.json: running, then completed/failed/interrupted
            set_job_threads(hc.launcher)  # parallel jobs share the cores
            return run(cfg, run_dir, list(hc.overrides.task))
    except TrainingInterrupted as e:
        sys.exit(128 + int(e.signum) if e.signum != signal.SIGINT else 130)
    except (ValueError, OSError) as e:
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
