"""What a training run writes to TensorBoard and to its log while it trains."""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("nerf_lab")


def log_scalars(
    trainer: Any, stats: dict[str, float], window_s: float, window_rays: float, n: int
) -> None:
    """``train/loss``, ``train/loss/<term>``, ``train/psnr``, ``opt/lr[/<group>]``,
    ``perf/iter_s``, ``perf/rays_per_s``, and one log line."""
    w, step = trainer.writer, trainer.step
    for k, v in stats.items():
        if k.startswith("loss/"):
            w.add_scalar(f"train/{k}", v, step)
    w.add_scalar("train/loss", stats["loss"], step)
    w.add_scalar("train/psnr", stats["psnr"], step)
    groups = trainer.optimizer.param_groups
    w.add_scalar("opt/lr", groups[0]["lr"], step)
    if len(groups) > 1:
        for i, g in enumerate(groups):
            w.add_scalar(f"opt/lr/{g.get('name', i)}", g["lr"], step)
    iter_s = window_s / max(n, 1)
    rays_per_s = window_rays / max(window_s, 1e-9)
    w.add_scalar("perf/iter_s", iter_s, step)
    w.add_scalar("perf/rays_per_s", rays_per_s, step)
    if trainer.nonfinite_steps:
        w.add_scalar("train/nonfinite_steps", trainer.nonfinite_steps, step)
    terms = " ".join(f"{k[5:]}={v:.5f}" for k, v in stats.items() if k.startswith("loss/"))
    eta = iter_s * (trainer.s.n_iter - step)
    log.info(
        "iter %d/%d loss=%.5f (%s) psnr=%.2f lr=%.2e %.3fs/iter %.0f rays/s eta %s",
        step, trainer.s.n_iter, stats["loss"], terms, stats["psnr"], groups[0]["lr"],
        iter_s, rays_per_s, format_seconds(eta),
    )  # fmt: skip


def format_seconds(seconds: float) -> str:
    """``h:mm:ss`` (or ``m:ss``)."""
    seconds = max(0, round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def log_eval(trainer: Any, metrics: dict[str, Any]) -> None:
    """``eval/psnr`` and ``eval/ssim`` at the trainer's step, and a log line."""
    trainer.writer.add_scalar("eval/psnr", metrics["eval/psnr"], trainer.step)
    trainer.writer.add_scalar("eval/ssim", metrics["eval/ssim"], trainer.step)
    log.info(
        "eval at iter %d: psnr=%.3f ssim=%.4f on %d held-out views",
        trainer.step, metrics["eval/psnr"], metrics["eval/ssim"], metrics["eval/n_views"],
    )  # fmt: skip


def write_hparams(writer: Any, hparams: dict[str, Any]) -> None:
    """Hyperparameters into the run's own event file (not a sub-run) for HParams."""
    if not hparams:
        return
    from torch.utils.tensorboard.summary import hparams as hparams_summary

    exp, ssi, sei = hparams_summary(
        hparams, {"eval/psnr": 0.0, "eval/ssim": 0.0, "train_seconds": 0.0}
    )
    fw = writer._get_file_writer()
    for summary in (exp, ssi, sei):
        fw.add_summary(summary)
