"""Hydra entry point: ``python -m nerf_lab.train [overrides]`` (also ``nerf-lab-train``).

Composes the config groups, checks every value up front, builds each component with
``hydra.utils.instantiate`` and hands them to :class:`nerf_lab.trainer.Trainer`. Returns
the final held-out PSNR, so Hydra sweepers (e.g. Optuna) can optimise it.
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
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from nerf_lab.checkpoint import load_checkpoint, load_latest
from nerf_lab.config import TrainerConf, check_config, check_writable, register_configs
from nerf_lab.perf import tune_malloc
from nerf_lab.plugins import missing_plugin_message
from nerf_lab.raysamplers import ndc_extent
from nerf_lab.runtime import job_status, set_job_threads
from nerf_lab.trainer import Trainer, TrainingInterrupted, write_json_atomic

log = logging.getLogger("nerf_lab")

CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")
register_configs()

HPARAM_KEYS = (
    "model._target_", "model.n_harmonic_functions", "model.n_hidden_neurons",
    "raysampler.n_rays_per_image", "raysampler.n_pts_per_ray", "raysampler.min_depth",
    "raysampler.max_depth", "raysampler.stratified_sampling", "optimizer.lr",
    "loss._target_", "trainer.n_iter", "trainer.batch_size", "trainer.precision",
    "trainer.seed", "data._target_",
)  # fmt: skip


def flat_hparams(cfg: DictConfig, overrides: list[str]) -> dict[str, Any]:
    """The main settings plus every overridden key, flattened to TensorBoard-able values."""
    keys = list(HPARAM_KEYS)
    for o in overrides:
        key = o.split("=", 1)[0].lstrip("+~")
        if key.startswith("hydra") or "=" not in o:
            continue
        if OmegaConf.select(cfg, key, default=None) is not None and key not in keys:
            keys.append(key)
    out: dict[str, Any] = {}
    for key in keys:
        v = OmegaConf.select(cfg, key, default=None)
        if v is None:
            continue
        if OmegaConf.is_config(v):
            v = str(OmegaConf.to_container(v))
        out[key] = v if isinstance(v, (bool, int, float, str)) else str(v)
    return out


def build(node: DictConfig, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate``, re-raising a component's own ``ValueError`` unwrapped
    (so a bad dataset or value reads as the component worded it)."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as e:
        cause = e.__cause__
        if isinstance(cause, (ValueError, OSError)):
            raise cause from None
        raise


def build_trainer(cfg: DictConfig, run_dir: Path, overrides: list[str] | None = None) -> Trainer:
    """Check ``cfg``, then build every component (cheap ones first, data last) and the trainer."""
    check_config(cfg)
    check_writable(run_dir)
    settings = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(TrainerConf), cfg.trainer))
    if settings.num_threads:
        torch.set_num_threads(settings.num_threads)
    if settings.tune_malloc:
        tune_malloc()

    torch.manual_seed(settings.seed)
    model = build(cfg.model)
    loss_fn = build(cfg.loss)
    optimizer = build(cfg.optimizer.optim)
    scheduler = build(cfg.optimizer.scheduler)
    render_raysampler = build(cfg.raysampler.render)
    with torch.random.fork_rng(devices=[]):  # data generation must not shift the training RNG
        scene = build(cfg.data)

    height, width = scene.images.shape[1:3]
    rx, ry = ndc_extent(height, width)
    auto = {"min_x": -rx, "max_x": rx, "min_y": -ry, "max_y": ry}
    extent = {k: v for k, v in auto.items() if cfg.raysampler.train[k] is None}
    train_raysampler = build(cfg.raysampler.train, **extent)

    bg = cfg.raymarcher.background_color
    if bg == "auto":
        bg = None if not any(scene.background_color) else list(scene.background_color)
    raymarcher = build(cfg.raymarcher, background_color=bg)

    return Trainer(
        scene=scene,
        model=model,
        loss_fn=loss_fn,
        train_raysampler=train_raysampler,
        render_raysampler=render_raysampler,
        raymarcher=raymarcher,
        optimizer=optimizer,
        scheduler=scheduler,
        settings=settings,
        run_dir=run_dir,
        config=OmegaConf.to_container(cfg, resolve=True),
        hparams=flat_hparams(cfg, overrides or []),
        decay_at=tuple(cfg.optimizer.decay_at),
        reset_state_at_decay=cfg.optimizer.reset_state_at_decay,
    )


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


def load_run(
    run_dir: str | Path, checkpoint: str | None = None, **trainer_overrides: Any
) -> tuple[Trainer, Path]:
    """Rebuild a finished (or interrupted) run from its own saved, resolved config.

    Args:
        run_dir: the run directory (with ``checkpoints/``).
        checkpoint: a checkpoint file; default: the latest readable one.
        **trainer_overrides: trainer settings to change (e.g. ``device``, ``chunk_size``).

    Returns:
        The trainer with the checkpoint's weights loaded, and the checkpoint's path.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ValueError(f"run_dir={str(run_dir)!r} is not a directory.")
    if checkpoint is not None:
        path = Path(checkpoint)
        state = load_checkpoint(path)
    else:
        found = load_latest(run_dir / "checkpoints")
        if found is None:
            raise ValueError(f"No readable checkpoint in {run_dir / 'checkpoints'}.")
        state, path = found
    cfg = OmegaConf.create(state["config"])
    for key, value in trainer_overrides.items():
        if value is not None:
            OmegaConf.update(cfg, f"trainer.{key}", value)
    cfg.trainer.resume = False
    trainer = build_trainer(cfg, run_dir)
    trainer.load_state_dict(state)
    return trainer, path


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
    return _hydra_main()


if __name__ == "__main__":
    main()
