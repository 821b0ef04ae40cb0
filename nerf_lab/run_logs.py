"""What a training run writes to its loggers (:mod:`nerf_lab.loggers`: TensorBoard by
default) and to its log while it trains."""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("nerf_lab")

#: The metrics shown beside the hyperparameters (TensorBoard's HParams dashboard).
HPARAM_METRICS = {"eval/psnr": 0.0, "eval/ssim": 0.0, "train_seconds": 0.0}


def log_scalars(
    trainer: Any, stats: dict[str, float], window_s: float, window_rays: float, n: int
) -> None:
    """``train/loss``, ``train/loss/<term>``, ``train/psnr``, ``opt/lr[/<group>]``,
    ``perf/iter_s``, ``perf/rays_per_s``, and one log line."""
    step = trainer.step
    out = {f"train/{k}": v for k, v in stats.items() if k.startswith("loss/")}
    out["train/loss"] = stats["loss"]
    out["train/psnr"] = stats["psnr"]
    groups = trainer.optimizer.param_groups
    out["opt/lr"] = groups[0]["lr"]
    if len(groups) > 1:
        for i, g in enumerate(groups):
            out[f"opt/lr/{g.get('name', i)}"] = g["lr"]
    iter_s = window_s / max(n, 1)
    rays_per_s = window_rays / max(window_s, 1e-9)
    out["perf/iter_s"] = iter_s
    out["perf/rays_per_s"] = rays_per_s
    if trainer.nonfinite_steps:
        out["train/nonfinite_steps"] = trainer.nonfinite_steps
    trainer.logger.log_scalars(out, step)
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
    out = {"eval/psnr": metrics["eval/psnr"], "eval/ssim": metrics["eval/ssim"]}
    if metrics.get("eval/lpips") is not None:
        out["eval/lpips"] = metrics["eval/lpips"]
    trainer.logger.log_scalars(out, trainer.step)
    log.info(
        "eval at iter %d: psnr=%.3f ssim=%.4f on %d held-out views",
        trainer.step, metrics["eval/psnr"], metrics["eval/ssim"], metrics["eval/n_views"],
    )  # fmt: skip


def trainer_depth_range(trainer: Any) -> tuple[float, float] | None:
    """The run's sample depth range (for depth colours), or None if the trainer has no
    config / render setup (e.g. built by hand)."""
    from nerf_lab.run_outputs import depth_range

    setup = trainer.extra_state.get("render_setup")
    if setup is None or "raysampler" not in trainer.config:
        return None
    return depth_range(trainer.config, setup)


def startup_summary(trainer: Any) -> str:
    """One line: device, threads, precision, views, image size, parameters, ray budget."""
    import torch

    s = trainer.s
    n_params = sum(p.numel() for p in trainer.renderer.parameters())
    rs = trainer.config.get("raysampler", {})
    rays = s.batch_size * int(rs.get("n_rays_per_image", 0) or 0)
    pts = int(rs.get("n_pts_per_ray", 0) or 0)
    h, w = trainer.image_hw
    return (
        f"start: device={trainer.device} threads={torch.get_num_threads()} "
        f"precision={s.precision} train_views={len(trainer.train_views[0])} "
        f"test_views={len(trainer.test_views[0])} image={h}x{w} parameters={n_params:,} "
        f"rays/step={s.batch_size}x{rays // max(s.batch_size, 1)}={rays} x {pts} points "
        f"(+ resampler passes) n_iter={s.n_iter} from step {trainer.step}"
        + (" rays=NDC (depths 0..1)" if trainer.scene.ndc is not None else "")
    )


def final_evaluation(trainer: Any) -> dict[str, Any]:
    """The end-of-training evaluation on every held-out view, with files.

    Writes the renders, targets, error and depth maps, ``views.csv`` and ``eval.json`` into
    a new ``run_dir/eval/step_<step>_<time>/`` and copies ``eval.json`` to ``run_dir``;
    reports progress per view. A stop request during it raises
    :class:`~nerf_lab.renderer.RenderInterrupted`.

    Returns:
        The metrics (:func:`nerf_lab.evaluation.evaluate_and_save`).
    """
    from nerf_lab.checkpoint import write_json_atomic
    from nerf_lab.evaluation import evaluate_and_save
    from nerf_lab.run_outputs import ViewProgress, new_output_dir

    cams, images, _ = trainer.test_views
    out_dir = new_output_dir(trainer.run_dir / "eval", f"step_{trainer.step:08d}")
    near_far = trainer_depth_range(trainer) or (0.0, float(trainer.s.turntable_distance) * 2)
    stop = lambda: trainer.signals.stop_requested  # noqa: E731
    with ViewProgress(len(cams), "final evaluation", stop, trainer.s.progress_bar) as progress:
        metrics = evaluate_and_save(
            trainer.renderer, trainer.grid_raysampler(*trainer.image_hw), cams, images,
            out_dir, near_far, trainer.s.chunk_size, progress, extra={"iterations": trainer.step},
        )  # fmt: skip
    write_json_atomic(trainer.run_dir / "eval.json", metrics)
    log.info("Held-out views, error maps and per-view table: %s", out_dir)
    return metrics


def export_mesh_at_end(trainer: Any) -> dict[str, Any]:
    """``trainer.export_mesh``: the marching-cubes mesh into a new ``run_dir/exports/mesh_*``
    and, for scenes with a known surface, ``geometry/*`` metrics into the loggers and
    ``run_dir/eval.json`` (:func:`nerf_lab.export.export_mesh`).

    Returns:
        The ``geometry/*`` metrics (empty for scenes without a known surface). A field with
        no surface at the iso-level is logged as a warning, not an error.
    """
    from nerf_lab.export import default_bbox, export_mesh, merge_eval_json
    from nerf_lab.run_outputs import new_output_dir

    log.info("Exporting the mesh (marching cubes) ...")
    out_dir = new_output_dir(trainer.run_dir / "exports", "mesh")
    try:
        result = export_mesh(
            trainer.renderer.field, out_dir, default_bbox(trainer.config),
            trainer.config.get("data"), trainer.extra_state.get("render_setup"),
        )  # fmt: skip
    except (ValueError, ImportError) as e:
        log.warning("No mesh exported: %s", e)
        return {}
    geometry = {k: v for k, v in result.items() if k.startswith("geometry/")}
    if geometry:
        trainer.logger.log_scalars(geometry, trainer.step)
        merge_eval_json(trainer.run_dir / "eval.json", {**geometry, "geometry/mesh": str(out_dir)})
    log.info("Mesh: %s (%d vertices) %s", result.get("mesh_ply"), result.get("n_vertices", 0),
             " ".join(f"{k}={v:.4g}" for k, v in geometry.items()))  # fmt: skip
    return geometry
