"""The training loop: a loop you can read top to bottom.

``Trainer.fit`` runs: sample cameras → rays → render → targets at the rays' pixels →
named loss terms → backward → step, with logging, previews, evaluation, atomic
checkpoints, exact resume and safe interruption around it. It takes built components
and plain settings (:class:`~nerf_lab.config.TrainerConf`); it never sees a config.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from nerf_lab import hooks
from nerf_lab.camera_paths import forward_facing_spiral, turntable_cameras
from nerf_lab.checkpoint import (
    checkpoint_run_id,
    list_checkpoints,
    resolve_resume,
    save_checkpoint,
    write_json_atomic,
)
from nerf_lab.config import TrainerConf
from nerf_lab.evaluation import evaluate_views
from nerf_lab.loggers import FanOutLogger, Logger, RunInfo, TensorBoardLogger
from nerf_lab.losses import LossTerm, combine_terms
from nerf_lab.memory import peak_rss_mb
from nerf_lab.metrics import mse_to_psnr
from nerf_lab.raysamplers import RayBundle
from nerf_lab.renderer import Renderer, iter_ray_chunks
from nerf_lab.runtime import job_info
from nerf_lab.signals import StopSignals, TrainingInterrupted
from nerf_lab.targets import ray_targets
from nerf_lab.visualize import image_grid, write_turntable

log = logging.getLogger("nerf_lab")

GridSampler = Callable[[int, int], Callable[..., RayBundle]]


class NonFiniteLossError(FloatingPointError):
    """A loss term became NaN or infinite."""


class NonFiniteParametersError(FloatingPointError):
    """Parameters became NaN or infinite (every later step would be skipped)."""


class Trainer:
    """Fits a renderer's field (and resampler) to a scene.

    Args:
        scene: a :class:`nerf_lab.data.Scene` on any device (moved to the renderer's).
        renderer: the field, raymarcher and optional resampler (:class:`Renderer`).
        loss_terms: named terms ``term(render_output, targets) -> () tensor``.
        train_raysampler: ``train_raysampler(cameras=...)`` → training rays.
        grid_raysampler: ``grid_raysampler(height, width)`` → a full-image sampler.
        optimizer, scheduler: built on the renderer's parameter groups; the scheduler is
            stepped once per iteration.
        settings: the trainer settings.
        run_dir: where events, checkpoints, renders and ``metrics.json`` go.
        config: the run's resolved config as a plain dict (saved in every checkpoint).
        hparams: flat dict of hyperparameters for TensorBoard's HParams dashboard.
        extra_state: plain values saved in every checkpoint (e.g. the render setup).
        run_id: saved in every checkpoint; a resume skips checkpoints of other runs.
        resume_from: ``(state, path)`` to continue from (already resolved and checked by
            :func:`nerf_lab.build.prepare_run`); ``None`` with ``settings.resume``: the
            newest usable checkpoint of ``run_dir/checkpoints`` (strict: checkpoints that
            exist but cannot be read are an error).
        logger: where scalars, images and hyperparameters go (:mod:`nerf_lab.loggers`;
            the entry points pass a :class:`FanOutLogger` of the ``logger`` group's
            loggers); ``None``: TensorBoard in ``run_dir``.
    """

    def __init__(
        self,
        *,
        scene: Any,
        renderer: Renderer,
        loss_terms: Mapping[str, LossTerm],
        train_raysampler: Callable[..., RayBundle],
        grid_raysampler: GridSampler,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        settings: TrainerConf,
        run_dir: str | Path,
        config: dict[str, Any] | None = None,
        hparams: dict[str, Any] | None = None,
        extra_state: dict[str, Any] | None = None,
        run_id: str | None = None,
        resume_from: tuple[dict[str, Any], Path] | None = None,
        logger: Logger | None = None,
    ) -> None:
        self.s = settings
        self.run_dir = Path(run_dir)
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.config = config or {}
        self.hparams = hparams or {}
        self.extra_state = extra_state or {}
        self.renderer = renderer
        self.device = next(renderer.parameters(), torch.empty(0)).device
        self.loss_terms = dict(loss_terms)
        self.train_raysampler = train_raysampler
        self.grid_raysampler = grid_raysampler
        self.optimizer = optimizer
        self.scheduler = scheduler

        self.scene = scene
        self.train_views = self._split("train")
        self.test_views = self._split("test" if len(scene.splits.get("test", [])) else "train")
        if settings.batch_size > len(self.train_views[0]):
            raise ValueError(
                f"trainer.batch_size={settings.batch_size}: must be <= the number of training "
                f"views ({len(self.train_views[0])})."
            )
        self.image_hw = tuple(self.train_views[1].shape[1:3])

        self.step = 0
        self.train_seconds = 0.0
        self.nonfinite_steps = 0
        self._saved: tuple[int, Path] | None = None
        self.run_id = run_id
        self._resume_from = resume_from
        self.started = False  # set when the training loop starts (failures after it: metrics)
        logger = TensorBoardLogger() if logger is None else logger
        self.logger = logger if isinstance(logger, FanOutLogger) else FanOutLogger([logger])
        self.signals = StopSignals()

    def _split(self, name: str) -> tuple[Any, torch.Tensor, torch.Tensor | None]:
        cams, images, sils = self.scene.split(name)
        return (
            cams.to(self.device),
            images.to(self.device),
            None if sils is None else sils.to(self.device),
        )

    # -- state ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly: plain tensors and Python values only."""
        state = {
            "step": self.step,
            "model": self.renderer.field.state_dict(),
            "resampler": None
            if self.renderer.resampler is None
            else self.renderer.resampler.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng_cpu": torch.get_rng_state(),
            "train_seconds": self.train_seconds,
            "nonfinite_steps": self.nonfinite_steps,
            "config": self.config,
            **self.extra_state,
        }
        if torch.cuda.is_available():
            state["rng_cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.renderer.field.load_state_dict(state["model"])
        if self.renderer.resampler is not None and state.get("resampler") is not None:
            self.renderer.resampler.load_state_dict(state["resampler"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng_cpu"].cpu())  # (loaded with map_location=device)
        if "rng_cuda" in state and torch.cuda.is_available():
            saved = [s.cpu() for s in state["rng_cuda"]][: torch.cuda.device_count()]
            for i, s in enumerate(saved):
                torch.cuda.set_rng_state(s, i)
        self.step = int(state["step"])
        self.train_seconds = float(state["train_seconds"])
        self.nonfinite_steps = int(state.get("nonfinite_steps", 0))

    def save(self) -> Path:
        """Save a checkpoint of the current step (once per step)."""
        if self._saved is not None and self._saved[0] == self.step:
            return self._saved[1]
        path = save_checkpoint(
            self.ckpt_dir, self.state_dict(), self.step, self.s.keep_checkpoints, self.run_id
        )
        self._saved = (self.step, path)
        log.info("Saved checkpoint %s", path)
        return path

    def maybe_resume(self) -> None:
        """Continue from ``resume_from`` or, with ``trainer.resume``, the newest usable
        checkpoint (:func:`~nerf_lab.checkpoint.resolve_resume`: never a silent restart)."""
        found, self._resume_from = self._resume_from, None
        if found is None and self.s.resume:
            found = resolve_resume(self.ckpt_dir, self.run_id, map_location=self.device)
            if found is None:
                log.warning(
                    "trainer.resume=true but no checkpoint in %s: starting afresh.", self.ckpt_dir
                )
        if found is None:
            return
        state, path = found
        self.load_state_dict(state)
        if self.run_id is None:
            self.run_id = checkpoint_run_id(state)
        self._saved = (self.step, path)
        log.info("Resumed from %s (iteration %d).", path, self.step)

    def latest_checkpoint(self) -> Path | None:
        """The newest checkpoint of this run that exists on disk (``None``: none yet)."""
        if self._saved is not None and self._saved[1].exists():
            return self._saved[1]
        found = list_checkpoints(self.ckpt_dir)
        return found[-1] if found else None

    def _checkpoint_note(self) -> str:
        path = self.latest_checkpoint()
        if path is None:
            return "There is no checkpoint of this run yet."
        return f"The newest checkpoint is {path}."

    def write_status(self, status: str, **extra: Any) -> None:
        """``metrics.json`` with the run's current state (``running``, ``failed``...)."""
        ckpt = self.latest_checkpoint()
        write_json_atomic(
            self.run_dir / "metrics.json",
            {
                "status": status,
                "step": self.step,
                "n_iter": self.s.n_iter,
                "checkpoint": None if ckpt is None else str(ckpt),
                "run_id": self.run_id,
                **job_info(),  # host, pid, SLURM job ids: which process this is
                **extra,
            },
        )

    def check_parameters_finite(self) -> None:
        """Raise :class:`NonFiniteParametersError` if any parameter is NaN or infinite."""
        bad = [
            name
            for name, p in self.renderer.named_parameters()
            if not bool(torch.isfinite(p.detach()).all())
        ]
        if bad:
            shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
            raise NonFiniteParametersError(
                f"Non-finite parameters after iteration {self.step} ({shown}): training cannot "
                f"recover by skipping steps. {self._checkpoint_note()} Lower the learning "
                "rate, or resume from an earlier checkpoint."
            )

    # -- one step ---------------------------------------------------------------------------
    def train_step(self) -> dict[str, float]:
        """One optimisation step (the tutorial's loop body). Returns scalar stats."""
        s, renderer = self.s, self.renderer
        renderer.train()
        hooks.on_train_step(renderer.field, self.step, s.n_iter)
        hooks.on_train_step(renderer.resampler, self.step, s.n_iter)
        self.optimizer.zero_grad(set_to_none=True)

        # A batch of training cameras, random rays of each, the targets at their pixels.
        cams, images, sils = self.train_views
        batch_idx = torch.randperm(len(cams))[: s.batch_size].to(self.device)
        rays = self.train_raysampler(cameras=cams[batch_idx])
        targets = ray_targets(
            images[batch_idx],
            None if sils is None else sils[batch_idx],
            rays.xys.reshape(len(batch_idx), -1, 2),
            s.target_lookup,
        )

        # Render, take the named loss terms (means over rays) and backpropagate, in chunks
        # of rays if asked (gradient accumulation: the same gradient, bounded memory).
        n_rays = rays.lengths[..., 0].numel()
        values: dict[str, float] = {}
        color_se, finite = 0.0, True
        chunks = list(iter_ray_chunks(rays, s.train_chunk_size or None))
        for i, (rows, sub) in enumerate(chunks):
            out = renderer.render(sub)
            sub_targets = {k: None if v is None else v[rows] for k, v in targets.items()}
            share = out.rgb.shape[0] / n_rays
            terms = {
                k: v * share for k, v in combine_terms(self.loss_terms, out, sub_targets).items()
            }
            if i == len(chunks) - 1:  # the components' own terms (e.g. TV), once per step
                terms.update(hooks.loss_terms(renderer.field))
                terms.update(hooks.loss_terms(renderer.resampler))
            for k, v in terms.items():
                values[k] = values.get(k, 0.0) + float(v.detach())
            loss = sum(terms.values())
            color_se += float(((out.rgb.detach()[..., :3] - sub_targets["rgb"]) ** 2).sum())
            if not math.isfinite(float(loss.detach())):
                finite = False
                break
            loss.backward()

        if not finite:
            details = ", ".join(f"{k}={v!r}" for k, v in values.items())
            if not s.skip_nonfinite:
                raise NonFiniteLossError(
                    f"Non-finite loss at iteration {self.step}: {details}. "
                    f"{self._checkpoint_note()} Set trainer.skip_nonfinite=true to skip such "
                    "steps."
                )
            self.nonfinite_steps += 1
            log.warning("Skipping iteration %d with a non-finite loss: %s", self.step, details)
            self.optimizer.zero_grad(set_to_none=True)
            self.check_parameters_finite()
        else:
            self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        return {
            "loss": sum(values.values()),
            **{f"loss/{k}": v for k, v in values.items()},
            "psnr": float(mse_to_psnr(torch.tensor(color_se / (3 * n_rays)))),
            "n_rays": float(n_rays),
        }

    # -- rendering & evaluation ---------------------------------------------------------------
    def render_views(self, cameras: Any, scale: float = 1.0) -> Any:
        """Full renders ``(n_views, H', W')`` of ``cameras`` at ``scale`` x the data size."""
        h, w = (max(1, round(n * scale)) for n in self.image_hw)
        return self.renderer.render_views(
            cameras,
            self.grid_raysampler(h, w),
            self.s.chunk_size,
            lambda: self.signals.stop_requested,
        )

    def evaluate(self, max_views: int | None = None) -> dict[str, Any]:
        """PSNR and SSIM of full renders of the first ``max_views`` held-out views (all for
        ``None`` or 0)."""
        cams, images, _ = self.test_views
        n = min(len(cams), max_views or len(cams))
        metrics, _ = evaluate_views(
            self.renderer,
            self.grid_raysampler(*self.image_hw),
            cams[list(range(n))],
            images[:n],
            self.s.chunk_size,
            lambda: self.signals.stop_requested,
        )
        return metrics

    def log_preview(self) -> None:
        """TensorBoard ``render/heldout``: render | target | error | depth | opacity of a test
        view, labelled."""
        from nerf_lab.run_logs import trainer_depth_range
        from nerf_lab.visualize import labelled_preview

        render = self.render_views(self.test_views[0][[0]], self.s.render_scale)
        panel = labelled_preview(
            render.map(lambda t: t[0]), self.test_views[1][0], trainer_depth_range(self)
        )
        self.logger.log_image("render/heldout", panel, self.step)

    def turntable(self, out_dir: Path | None = None) -> Path | None:
        """The tutorial's rotating render (NeRF's forward-facing spiral for a scene sampled in
        NDC): GIF and PNG grid (and a grid in the loggers)."""
        if self.s.turntable_frames < 1:
            return None
        if self.scene.ndc is None:
            cams = turntable_cameras(
                self.s.turntable_frames, self.train_views[0], self.s.turntable_distance
            )
        else:  # forward-facing (NDC rays): NeRF's spiral; an orbit would look from behind
            cams = forward_facing_spiral(
                self.train_views[0], self.scene.near, self.scene.far, self.s.turntable_frames
            ).to(self.device)
        from nerf_lab.run_outputs import ViewProgress

        h, w = (max(1, round(n * self.s.turntable_scale)) for n in self.image_hw)
        stop = lambda: self.signals.stop_requested  # noqa: E731
        with ViewProgress(len(cams), "turntable", stop, self.s.progress_bar) as progress:
            out = self.renderer.render_views(
                cams, self.grid_raysampler(h, w), self.s.chunk_size, progress
            )
        frames = out.rgb[..., :3].clamp(0, 1)
        gif = write_turntable(frames, out_dir or self.run_dir / "renders")
        if self.logger.active:
            self.logger.log_image("turntable", image_grid(frames).cpu(), self.step)
        return gif

    # -- the loop -------------------------------------------------------------------------------
    def fit(self) -> dict[str, Any]:
        """Train (or continue) to ``n_iter`` iterations; evaluate; render; write metrics."""
        from tqdm.auto import tqdm
        from tqdm.contrib.logging import logging_redirect_tqdm

        from nerf_lab.run_logs import log_eval, log_scalars

        s = self.s
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.maybe_resume()
        show_bar = sys.stderr.isatty() if s.progress_bar is None else s.progress_bar
        window = [0.0, 0.0, 0]  # seconds, rays, steps since the last log line
        stats: dict[str, float] = {}
        outcome = "failed"  # for the loggers' close
        try:
            self._start_logging()
            self.started = True
            self.write_status("running")
            with self.signals.installed(), logging_redirect_tqdm():
                bar = tqdm(total=s.n_iter, initial=self.step, disable=not show_bar, desc="train")
                while self.step < s.n_iter:
                    t0 = time.perf_counter()
                    stats = self.train_step()
                    dt = time.perf_counter() - t0
                    self.train_seconds += dt
                    window = [window[0] + dt, window[1] + stats["n_rays"], window[2] + 1]
                    bar.update(1)
                    bar.set_postfix(loss=f"{stats['loss']:.4f}", psnr=f"{stats['psnr']:.2f}")
                    step = self.step  # iterations completed

                    if s.log_every and (step - 1) % s.log_every == 0:
                        log_scalars(self, stats, *window)
                        window = [0.0, 0.0, 0]
                    if s.render_every and (step - 1) % s.render_every == 0:
                        self._guarded(self.log_preview)
                    if s.eval_every and step % s.eval_every == 0 and step < s.n_iter:
                        self._guarded(lambda: log_eval(self, self.evaluate(s.eval_max_views)))
                    if s.checkpoint_every and step % s.checkpoint_every == 0:
                        self.save()
                        self.write_status("running")
                    if self.signals.checkpoint_requested:
                        self.signals.checkpoint_requested = False
                        self.save()
                        self.write_status("running")
                    if self.signals.stop_requested:
                        self._interrupt()
                bar.close()
                self.save()
                metrics = self._finish(stats)
                outcome = "completed"
        except TrainingInterrupted:
            outcome = "interrupted"
            raise
        finally:
            try:
                self.logger.close(outcome)
            except Exception:  # (already logged) never hides the error being raised
                if outcome == "completed":
                    raise
        return metrics

    def _start_logging(self) -> None:
        """Start the loggers; log the start-up summary and the hyperparameters."""
        from nerf_lab.run_logs import HPARAM_METRICS, startup_summary

        self.logger.start(RunInfo(self.run_dir, self.step, self.run_id, self.config))
        summary = startup_summary(self)
        log.info(summary)
        self.logger.log_text("startup", summary, self.step)
        if self.hparams:
            self.logger.log_hparams(self.hparams, HPARAM_METRICS)

    def _guarded(self, work: Callable[[], Any]) -> None:
        """Run a long render; a stop request during it interrupts right there."""
        from nerf_lab.renderer import RenderInterrupted

        try:
            work()
        except RenderInterrupted:
            self._interrupt()

    def _interrupt(self) -> None:
        signum = self.signals.stop_signal
        assert signum is not None
        path = self.save()
        self.logger.flush()
        resume = (
            "python -m nerf_lab.train <same overrides> "
            f"hydra.run.dir={self.run_dir} trainer.resume=true"
        )
        self.write_status("interrupted", signal=signum, resume=resume)
        log.warning("Stopped after iteration %d. Resume with:\n  %s", self.step, resume)
        self.signals.chain(signum)  # e.g. a cluster launcher's handler that requeues the job
        raise TrainingInterrupted(signum, self.step, path)

    def _finish(self, stats: dict[str, float]) -> dict[str, Any]:
        from nerf_lab.run_logs import final_evaluation, log_eval

        if self.s.render_every and (self.step - 1) % self.s.render_every:
            self._guarded(self.log_preview)  # the final preview, at the last step
        log.info("Final evaluation on all %d held-out views ...", len(self.test_views[0]))
        metrics: dict[str, Any] = {}
        self._guarded(lambda: metrics.update(final_evaluation(self)))
        metrics.pop("protocol", None)
        log_eval(self, metrics)
        self.logger.add_scalar("train_seconds", self.train_seconds, self.step)
        if self.s.turntable_frames:
            log.info("Rendering the turntable (%d frames) ...", self.s.turntable_frames)
        self._guarded(self.turntable)
        if self.s.export_mesh:
            from nerf_lab.run_logs import export_mesh_at_end

            metrics.update(export_mesh_at_end(self))
        rays_per_step = float(stats.get("n_rays", 0.0))
        metrics.update(
            {
                "iterations": self.step,
                "train_seconds": round(self.train_seconds, 3),
                "rays_per_s": round(rays_per_step * self.step / max(self.train_seconds, 1e-9), 1)
                if stats
                else None,
                "final_train_loss": stats.get("loss"),
                "nonfinite_steps": self.nonfinite_steps,
                "peak_rss_mb": peak_rss_mb(),
                "torch_threads": torch.get_num_threads(),
                "checkpoint": str(self.latest_checkpoint()),
                "run_id": self.run_id,
                "status": "completed",
            }
        )
        write_json_atomic(self.run_dir / "metrics.json", metrics)
        log.info(
            "Done: %d iterations in %.1fs; held-out psnr=%.3f ssim=%.4f. Run directory: %s",
            self.step, self.train_seconds, metrics["eval/psnr"], metrics["eval/ssim"], self.run_dir,
        )  # fmt: skip
        return metrics
