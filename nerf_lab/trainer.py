"""The tutorial's fit as a trainer: a loop you can read top to bottom.

``Trainer.fit`` runs: sample cameras → Monte Carlo rays → render → look up the targets
at the rays' pixels → named losses → backward → step, with logging, previews,
evaluation, atomic checkpoints, exact resume and safe interruption around it. It takes
built components and plain settings (a :class:`~nerf_lab.config.TrainerConf`); it never
sees a ``DictConfig``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from nerf_lab.cameras import FoVPerspectiveCameras, so3_exp_map
from nerf_lab.checkpoint import atomic_write_bytes, load_latest, save_checkpoint
from nerf_lab.config import TrainerConf
from nerf_lab.metrics import mse_to_psnr, psnr, ssim
from nerf_lab.optim import decay_milestones
from nerf_lab.raysamplers import RayBundle, ndc_extent
from nerf_lab.renderer import (
    ImplicitRenderer,
    flatten_ray_bundle,
    render_ray_bundle,
    slice_ray_bundle,
)

log = logging.getLogger("nerf_lab")

HANDLED_SIGNALS = tuple(
    getattr(signal, name)
    for name in ("SIGINT", "SIGTERM", "SIGUSR1", "SIGUSR2")
    if hasattr(signal, name)
)


class TrainingInterrupted(RuntimeError):
    """Raised after a signal: the current step finished and a checkpoint was saved."""

    def __init__(self, signum: int, step: int, checkpoint: Path | None) -> None:
        self.signum = signum
        self.step = step
        self.checkpoint = checkpoint
        super().__init__(
            f"Interrupted by {signal.Signals(signum).name} after iteration {step}; "
            f"checkpoint: {checkpoint}"
        )


class NonFiniteLossError(FloatingPointError):
    """A loss term became NaN or infinite."""


# ----------------------------------------------------------------------------- pure helpers


def sample_images_at_rays(
    images: torch.Tensor, xys: torch.Tensor, lookup: str = "pixel"
) -> torch.Tensor:
    """Target values at the rays' NDC positions.

    ``"pixel"`` returns the pixel each ray went through (PyTorch3D's NDC: +X left, +Y up,
    pixel centres, non-square images supported). ``"tutorial"`` reproduces the
    tutorial's ``sample_images_at_mc_locs``: bilinear ``grid_sample`` at ``-xys`` with
    ``align_corners=True``, which is off by half a pixel.

    Args:
        images: ``(batch, H, W, C)``.
        xys: ``(batch, n_rays, 2)`` (or ``(batch, *spatial, 2)``).

    Returns:
        ``(batch, n_rays, C)`` (``(batch, *spatial, C)``).
    """
    batch, height, width, channels = images.shape
    spatial = xys.shape[1:-1]
    xy = xys.reshape(batch, -1, 2)
    if lookup == "tutorial":
        sampled = F.grid_sample(
            images.permute(0, 3, 1, 2), -xy.view(batch, -1, 1, 2), align_corners=True
        )
        return sampled.permute(0, 2, 3, 1).reshape(batch, *spatial, channels)
    if lookup != "pixel":
        raise ValueError(f"lookup must be 'pixel' or 'tutorial'; got {lookup!r}.")
    range_x, range_y = ndc_extent(height, width)
    col = ((range_x - xy[..., 0]) * (width / (2 * range_x))).floor().long().clamp(0, width - 1)
    row = ((range_y - xy[..., 1]) * (height / (2 * range_y))).floor().long().clamp(0, height - 1)
    flat = images.reshape(batch, height * width, channels)
    idx = (row * width + col)[..., None].expand(-1, -1, channels)
    return torch.gather(flat, 1, idx).reshape(batch, *spatial, channels)


def turntable_cameras(
    n_frames: int, like: FoVPerspectiveCameras, distance: float = 2.7
) -> FoVPerspectiveCameras:
    """The tutorial's rotating cameras: a turn about +Y at ``distance`` from the origin.

    Intrinsics (znear, zfar, aspect ratio, fov) are taken from ``like[0]``.
    """
    log_rots = torch.zeros(n_frames, 3)
    log_rots[:, 1] = torch.linspace(-3.14, 3.14, n_frames)
    Rs = so3_exp_map(log_rots)
    Ts = torch.zeros(n_frames, 3)
    Ts[:, 2] = distance
    return FoVPerspectiveCameras(
        R=Rs,
        T=Ts,
        znear=like.znear[0].item(),
        zfar=like.zfar[0].item(),
        aspect_ratio=like.aspect_ratio[0].item(),
        fov=like.fov[0].item(),
        degrees=like.degrees,
        device=like.device,
    )


def image_grid(images: torch.Tensor, n_cols: int | None = None) -> torch.Tensor:
    """Tile ``(n_images, H, W, C)`` images into one ``(rows * H, n_cols * W, C)`` image."""
    n, h, w, c = images.shape
    n_cols = n_cols or math.ceil(math.sqrt(n))
    n_rows = math.ceil(n / n_cols)
    canvas = images.new_zeros(n_rows * n_cols, h, w, c)
    canvas[:n] = images
    return (
        canvas.view(n_rows, n_cols, h, w, c)
        .permute(0, 2, 1, 3, 4)
        .reshape(n_rows * h, n_cols * w, c)
    )


def to_uint8(image: torch.Tensor) -> Any:
    """``(..., C)`` float image in [0, 1] → numpy uint8 array."""
    return (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()


def resolve_device(device: str) -> torch.device:
    """``"auto"`` → CUDA if available, else CPU; anything else as given."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"trainer.device={device!r}, but CUDA is not available here.")
    return dev


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` as pretty JSON, atomically."""
    atomic_write_bytes(path, lambda f: f.write(json.dumps(data, indent=2).encode() + b"\n"))


# ----------------------------------------------------------------------------- rendering


class FieldWithDepth:
    """Wraps a field for rendering: autocast, fp32 outputs, depth as an extra feature.

    Called like the field, it returns densities ``(..., n_pts_per_ray, 1)`` and features
    ``(..., n_pts_per_ray, 3 [+ 1])``; with ``with_depth`` the last channel is the sample
    depth, so the raymarcher composites the expected depth along with the colour.
    """

    def __init__(
        self, model: torch.nn.Module, autocast: Callable[[], Any], with_depth: bool
    ) -> None:
        self.model = model
        self.autocast = autocast
        self.with_depth = with_depth

    def __call__(self, ray_bundle: RayBundle, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        with self.autocast():
            densities, colors = self.model(ray_bundle=ray_bundle)
        densities, colors = densities.float(), colors.float()
        if self.with_depth:
            colors = torch.cat((colors, ray_bundle.lengths[..., None].to(colors.dtype)), dim=-1)
        return densities, colors


@dataclass
class FullRender:
    """One rendered view: ``rgb (H, W, 3)``, ``silhouette (H, W, 1)``, ``depth (H, W, 1)``."""

    rgb: torch.Tensor
    silhouette: torch.Tensor
    depth: torch.Tensor


# ----------------------------------------------------------------------------- trainer


class Trainer:
    """Fits a radiance field to a scene.

    Args:
        scene: a :class:`nerf_lab.data.Scene` (cameras, images, silhouettes, splits).
        model: the radiance field, ``model(ray_bundle) → (densities, colors)``.
        loss_fn: ``loss_fn(colors, target_colors, silhouettes, target_silhouettes)`` →
            dict of named terms.
        train_raysampler: Monte Carlo sampler used for training.
        render_raysampler: ``render_raysampler(image_height=..., image_width=...)`` → a
            full-image sampler (a ``functools.partial``).
        raymarcher: the raymarcher.
        optimizer: ``optimizer(params)`` → ``torch.optim.Optimizer`` (a partial).
        scheduler: ``scheduler(optimizer)`` → lr scheduler stepped once per iteration.
        settings: the trainer settings.
        run_dir: where events, checkpoints, renders and ``metrics.json`` go.
        config: the run's resolved config as a plain dict (saved in every checkpoint).
        hparams: flat dict of hyperparameters for TensorBoard's HParams dashboard.
        decay_at, reset_state_at_decay: with ``reset_state_at_decay`` the optimiser's state
            is cleared at each decay milestone (the tutorial re-creates Adam there).
    """

    def __init__(
        self,
        *,
        scene: Any,
        model: torch.nn.Module,
        loss_fn: Callable[..., dict[str, torch.Tensor]],
        train_raysampler: torch.nn.Module,
        render_raysampler: Callable[..., torch.nn.Module],
        raymarcher: torch.nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any],
        settings: TrainerConf,
        run_dir: str | Path,
        config: dict[str, Any] | None = None,
        hparams: dict[str, Any] | None = None,
        decay_at: tuple[float, ...] = (),
        reset_state_at_decay: bool = False,
    ) -> None:
        self.s = settings
        self.run_dir = Path(run_dir)
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.renders_dir = self.run_dir / "renders"
        self.config = config or {}
        self.hparams = hparams or {}
        self.device = resolve_device(settings.device)

        self.scene = scene
        self.train_cameras, self.train_images, self.train_silhouettes = self._split("train")
        self.test_cameras, self.test_images, self.test_silhouettes = self._split("test")
        n_train = len(self.train_cameras)
        if settings.batch_size > n_train:
            raise ValueError(
                f"trainer.batch_size={settings.batch_size}: must be <= the number of training "
                f"views ({n_train})."
            )
        self.image_hw = tuple(self.train_images.shape[1:3])

        self.model = model.to(self.device)
        self.loss_fn = loss_fn
        self.train_raysampler = train_raysampler
        self.raymarcher = raymarcher
        self.render_raysampler = render_raysampler
        params: Any = model.parameters()
        if hasattr(model, "param_groups"):
            # Models with parts that want their own learning rates (e.g. grids vs an MLP).
            params = model.param_groups(getattr(optimizer, "keywords", {}).get("lr", 1e-3))
        self.optimizer = optimizer(params)
        self.scheduler = scheduler(self.optimizer)
        self.reset_milestones = (
            set(decay_milestones(settings.n_iter, decay_at)) if reset_state_at_decay else set()
        )

        self.step = 0
        self.train_seconds = 0.0
        self.nonfinite_steps = 0
        self.writer: Any = None
        self._stop_signal: int | None = None
        self._checkpoint_requested = False
        self._old_handlers: dict[int, Any] = {}

    # -- setup helpers -------------------------------------------------------------------
    def _split(self, name: str) -> tuple[FoVPerspectiveCameras, torch.Tensor, torch.Tensor]:
        if name == "test" and len(self.scene.splits.get("test", [])) == 0:
            name = "train"
        cams, images, sils = self.scene.split(name)
        return cams.to(self.device), images.to(self.device), sils.to(self.device)

    def _autocast(self) -> Any:
        if self.s.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.s.precision == "bf16" else torch.float16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    # -- state ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly: plain tensors and Python values only."""
        state = {
            "step": self.step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng_cpu": torch.get_rng_state(),
            "train_seconds": self.train_seconds,
            "nonfinite_steps": self.nonfinite_steps,
            "config": self.config,
        }
        if torch.cuda.is_available():
            state["rng_cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng_cpu"])
        if "rng_cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng_cuda"])
        self.step = int(state["step"])
        self.train_seconds = float(state["train_seconds"])
        self.nonfinite_steps = int(state.get("nonfinite_steps", 0))

    def save(self) -> Path:
        path = save_checkpoint(self.ckpt_dir, self.state_dict(), self.step, self.s.keep_checkpoints)
        log.info("Saved checkpoint %s", path)
        return path

    def maybe_resume(self) -> None:
        if not self.s.resume:
            return
        found = load_latest(self.ckpt_dir, map_location=self.device)
        if found is None:
            log.warning(
                "trainer.resume=true but no checkpoint in %s: starting from scratch.", self.ckpt_dir
            )
            return
        state, path = found
        self.load_state_dict(state)
        log.info("Resumed from %s (iteration %d).", path, self.step)

    # -- signals --------------------------------------------------------------------------
    def _on_signal(self, signum: int, frame: Any) -> None:
        if self._stop_signal is not None and signum == signal.SIGINT:
            # A second Ctrl-C: exit at once.
            raise KeyboardInterrupt
        old = self._old_handlers.get(signum)
        if signum == signal.SIGTERM and callable(old) and old is not signal.default_int_handler:
            # Under a cluster launcher (e.g. submitit), SIGTERM announces pre-emption and the
            # launcher's own handler decides; its requeue signal (SIGUSR2) follows. Save a
            # checkpoint after this iteration and go on.
            old(signum, frame)
            self._checkpoint_requested = True
            log.warning("Received SIGTERM under a launcher: saving a checkpoint after this step.")
            return
        self._stop_signal = signum
        log.warning(
            "Received %s: finishing the current iteration, then saving a checkpoint "
            "(press Ctrl-C again to exit at once).",
            signal.Signals(signum).name,
        )

    @contextlib.contextmanager
    def _signal_handlers(self) -> Iterator[None]:
        import threading

        if threading.current_thread() is not threading.main_thread():
            yield
            return
        for sig in HANDLED_SIGNALS:
            self._old_handlers[sig] = signal.signal(sig, self._on_signal)
        try:
            yield
        finally:
            for sig, old in self._old_handlers.items():
                signal.signal(sig, old)

    # -- one step ---------------------------------------------------------------------------
    def train_step(self) -> dict[str, float]:
        """One optimisation step (the tutorial's loop body). Returns scalar stats."""
        model, s = self.model, self.s
        model.train()
        if hasattr(model, "on_train_step"):
            model.on_train_step(self.step, s.n_iter)
        if self.step in self.reset_milestones:
            self.optimizer.state.clear()  # the tutorial re-creates Adam at the lr drop
        self.optimizer.zero_grad(set_to_none=True)

        # Sample a batch of training cameras and random rays of each.
        batch_idx = torch.randperm(len(self.train_cameras))[: s.batch_size].to(self.device)
        batch_cameras = self.train_cameras[batch_idx]
        rays = flatten_ray_bundle(self.train_raysampler(cameras=batch_cameras))

        # Look up the target colour and silhouette at each ray's pixel.
        xys = rays.xys.view(len(batch_idx), -1, 2)
        target_colors = sample_images_at_rays(self.train_images[batch_idx], xys, s.target_lookup)
        target_silhouettes = sample_images_at_rays(
            self.train_silhouettes[batch_idx, ..., None], xys, s.target_lookup
        )
        target_colors, target_silhouettes = (
            target_colors.reshape(-1, 3),
            target_silhouettes.reshape(-1, 1),
        )

        # Render, take the named loss terms (means over rays) and backpropagate, in chunks
        # of rays if asked (gradient accumulation: the same gradient, bounded memory).
        field = FieldWithDepth(model, self._autocast, with_depth=False)
        n_rays = rays.lengths.shape[0]
        chunk = s.train_chunk_size or n_rays
        values: dict[str, float] = {}
        color_se = 0.0
        finite = True
        for start in range(0, n_rays, chunk):
            sub = slice_ray_bundle(rays, start, start + chunk)
            rendered = render_ray_bundle(sub, field, self.raymarcher)
            colors, silhouettes = rendered.split([3, 1], dim=-1)
            tc = target_colors[start : start + chunk]
            ts = target_silhouettes[start : start + chunk]
            weight = colors.shape[0] / n_rays
            terms = {k: v * weight for k, v in self.loss_fn(colors, tc, silhouettes, ts).items()}
            if start + chunk >= n_rays and hasattr(model, "extra_losses"):
                terms.update(model.extra_losses())
            for k, v in terms.items():
                values[k] = values.get(k, 0.0) + float(v.detach())
            loss = sum(terms.values())
            color_se += float(((colors.detach() - tc) ** 2).sum())
            if not math.isfinite(float(loss.detach())):
                finite = False
                break
            loss.backward()

        loss_value = sum(values.values())
        if not finite:
            details = ", ".join(f"{k}={v!r}" for k, v in values.items())
            if not s.skip_nonfinite:
                raise NonFiniteLossError(
                    f"Non-finite loss at iteration {self.step}: {details}. The last good "
                    f"checkpoint is kept in {self.ckpt_dir}; set trainer.skip_nonfinite=true "
                    "to skip such steps instead."
                )
            self.nonfinite_steps += 1
            log.warning("Skipping iteration %d with a non-finite loss: %s", self.step, details)
            self.optimizer.zero_grad(set_to_none=True)
        else:
            self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        return {
            "loss": loss_value,
            **{f"loss/{k}": v for k, v in values.items()},
            "psnr": float(mse_to_psnr(torch.tensor(color_se / (3 * n_rays)))),
            "n_rays": float(n_rays),
        }

    # -- rendering & evaluation ---------------------------------------------------------------
    @torch.no_grad()
    def render_views(
        self, cameras: FoVPerspectiveCameras, scale: float = 1.0, with_depth: bool = True
    ) -> FullRender:
        """Full-image renders of ``cameras`` (batched one camera at a time, chunked rays).

        Returns:
            rgb ``(n_views, H', W', 3)``, silhouette and depth ``(n_views, H', W', 1)`` with
            ``H' = round(H * scale)``.
        """
        self.model.eval()
        height = max(1, round(self.image_hw[0] * scale))
        width = max(1, round(self.image_hw[1] * scale))
        renderer = ImplicitRenderer(
            self.render_raysampler(image_height=height, image_width=width),
            self.raymarcher,
            chunk_size=self.s.chunk_size,
        )
        field = FieldWithDepth(self.model, self._autocast, with_depth=with_depth)
        outs = [
            renderer(cameras=cameras[[i]], volumetric_function=field)[0]
            for i in range(len(cameras))
        ]
        out = torch.cat(outs, dim=0)
        if with_depth:
            return FullRender(out[..., :3], out[..., 4:5], out[..., 3:4])
        return FullRender(out[..., :3], out[..., 3:4], torch.zeros_like(out[..., 3:4]))

    @torch.no_grad()
    def evaluate(self) -> dict[str, Any]:
        """PSNR and SSIM of full renders of the held-out views against their images."""
        n = len(self.test_cameras)
        if self.s.eval_max_views:
            n = min(n, self.s.eval_max_views)
        idx = list(range(n))
        renders = self.render_views(self.test_cameras[idx], with_depth=False)
        targets = self.test_images[idx]
        psnrs = psnr(renders.rgb, targets)
        ssims = ssim(renders.rgb, targets)
        return {
            "eval/psnr": float(psnrs.mean()),
            "eval/ssim": float(ssims.mean()),
            "eval/psnr_per_view": [round(float(v), 4) for v in psnrs],
            "eval/ssim_per_view": [round(float(v), 5) for v in ssims],
            "eval/n_views": n,
        }

    def log_preview(self) -> None:
        """TensorBoard: rendered image | silhouette | depth | target of a held-out view."""
        r = self.render_views(self.test_cameras[[0]], scale=self.s.render_scale)
        h, w = r.rgb.shape[1:3]
        target = self.test_images[:1].permute(0, 3, 1, 2)
        target = F.interpolate(target, size=(h, w), mode="nearest").permute(0, 2, 3, 1)
        max_depth = float(r.depth.max().clamp_min(1e-6))
        panel = torch.cat(
            [
                r.rgb[0],
                r.silhouette[0].expand(h, w, 3),
                (r.depth[0] / max_depth).expand(h, w, 3),
                target[0],
            ],
            dim=1,
        )
        self.writer.add_image(
            "render/heldout", panel.clamp(0, 1).cpu(), self.step, dataformats="HWC"
        )

    def turntable(self) -> Path | None:
        """The tutorial's rotating render: GIF and PNG grid in ``renders/``, grid in TensorBoard."""
        if self.s.turntable_frames < 1:
            return None
        import imageio.v3 as iio

        cams = turntable_cameras(
            self.s.turntable_frames, self.train_cameras, self.s.turntable_distance
        )
        frames = self.render_views(cams, scale=self.s.turntable_scale, with_depth=False).rgb
        self.renders_dir.mkdir(parents=True, exist_ok=True)
        gif = self.renders_dir / "turntable.gif"
        frames_u8 = to_uint8(frames)
        atomic_write_bytes(
            gif,
            lambda f: f.write(
                iio.imwrite("<bytes>", frames_u8, extension=".gif", duration=80, loop=0)
            ),
        )
        grid = image_grid(frames)
        grid_u8 = to_uint8(grid)
        atomic_write_bytes(
            self.renders_dir / "turntable_grid.png",
            lambda f: f.write(iio.imwrite("<bytes>", grid_u8, extension=".png")),
        )
        if self.writer is not None:
            self.writer.add_image("turntable", grid.clamp(0, 1).cpu(), self.step, dataformats="HWC")
        return gif

    # -- the loop -------------------------------------------------------------------------------
    def fit(self) -> dict[str, Any]:
        """Train (or continue) to ``n_iter`` iterations; evaluate; render; write metrics."""
        from torch.utils.tensorboard import SummaryWriter
        from tqdm.auto import tqdm
        from tqdm.contrib.logging import logging_redirect_tqdm

        s = self.s
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.maybe_resume()
        self.writer = SummaryWriter(log_dir=str(self.run_dir), purge_step=self.step or None)
        log.info("TensorBoard: tensorboard --logdir %s", self.run_dir)
        self._write_hparams()

        show_bar = sys.stderr.isatty() if s.progress_bar is None else s.progress_bar
        window_t, window_rays, window_n = 0.0, 0.0, 0
        stats: dict[str, float] = {}
        try:
            with self._signal_handlers(), logging_redirect_tqdm():
                bar = tqdm(
                    total=s.n_iter,
                    initial=self.step,
                    disable=not show_bar,
                    dynamic_ncols=True,
                    desc="train",
                )
                while self.step < s.n_iter:
                    t0 = time.perf_counter()
                    stats = self.train_step()
                    dt = time.perf_counter() - t0
                    self.train_seconds += dt
                    window_t, window_rays, window_n = (
                        window_t + dt,
                        window_rays + stats["n_rays"],
                        window_n + 1,
                    )
                    bar.update(1)
                    bar.set_postfix(loss=f"{stats['loss']:.4f}", psnr=f"{stats['psnr']:.2f}")
                    step = self.step  # iterations completed

                    if s.log_every and (step - 1) % s.log_every == 0:
                        self._log_scalars(stats, window_t, window_rays, window_n)
                        window_t, window_rays, window_n = 0.0, 0.0, 0
                    if s.render_every and (step - 1) % s.render_every == 0:
                        self.log_preview()
                    if s.eval_every and step % s.eval_every == 0 and step < s.n_iter:
                        self._log_eval(self.evaluate())
                    if s.checkpoint_every and step % s.checkpoint_every == 0:
                        self.save()
                    if self._checkpoint_requested:
                        self._checkpoint_requested = False
                        self.save()
                    if self._stop_signal is not None:
                        self._interrupt()
                bar.close()
            self.save()
            metrics = self._finish(stats)
        finally:
            if self.writer is not None:
                self.writer.flush()
                self.writer.close()
        return metrics

    def _interrupt(self) -> None:
        signum = self._stop_signal
        assert signum is not None
        path = self.save()
        self.writer.flush()
        log.warning(
            "Stopped after iteration %d. Resume with:\n  python -m nerf_lab.train <same overrides> "
            "hydra.run.dir=%s trainer.resume=true",
            self.step,
            self.run_dir,
        )
        old = self._old_handlers.get(signum)
        if callable(old) and old not in (signal.default_int_handler,):
            # e.g. a cluster launcher's handler that requeues the job
            old(signum, None)
        raise TrainingInterrupted(signum, self.step, path)

    def _log_scalars(
        self, stats: dict[str, float], window_t: float, window_rays: float, n: int
    ) -> None:
        w, step = self.writer, self.step
        for k, v in stats.items():
            if k.startswith("loss/"):
                w.add_scalar(f"train/{k}", v, step)
        w.add_scalar("train/loss", stats["loss"], step)
        w.add_scalar("train/psnr", stats["psnr"], step)
        w.add_scalar("opt/lr", self.optimizer.param_groups[0]["lr"], step)
        iter_s = window_t / max(n, 1)
        rays_per_s = window_rays / max(window_t, 1e-9)
        w.add_scalar("perf/iter_s", iter_s, step)
        w.add_scalar("perf/rays_per_s", rays_per_s, step)
        if self.nonfinite_steps:
            w.add_scalar("train/nonfinite_steps", self.nonfinite_steps, step)
        terms = " ".join(f"{k[5:]}={v:.5f}" for k, v in stats.items() if k.startswith("loss/"))
        log.info(
            "iter %d/%d loss=%.5f (%s) psnr=%.2f lr=%.2e %.3fs/iter %.0f rays/s",
            step, self.s.n_iter, stats["loss"], terms, stats["psnr"],
            self.optimizer.param_groups[0]["lr"], iter_s, rays_per_s,
        )  # fmt: skip

    def _log_eval(self, metrics: dict[str, Any]) -> None:
        self.writer.add_scalar("eval/psnr", metrics["eval/psnr"], self.step)
        self.writer.add_scalar("eval/ssim", metrics["eval/ssim"], self.step)
        log.info(
            "eval at iter %d: psnr=%.3f ssim=%.4f on %d held-out views",
            self.step, metrics["eval/psnr"], metrics["eval/ssim"], metrics["eval/n_views"],
        )  # fmt: skip

    def _write_hparams(self) -> None:
        """Hyperparameters into this run's own event file (not a sub-run) for HParams."""
        if not self.hparams:
            return
        from torch.utils.tensorboard.summary import hparams

        exp, ssi, sei = hparams(
            self.hparams, {"eval/psnr": 0.0, "eval/ssim": 0.0, "train_seconds": 0.0}
        )
        fw = self.writer._get_file_writer()
        for summary in (exp, ssi, sei):
            fw.add_summary(summary)

    def _finish(self, stats: dict[str, float]) -> dict[str, Any]:
        metrics = self.evaluate()
        self._log_eval(metrics)
        self.writer.add_scalar("train_seconds", self.train_seconds, self.step)
        self.turntable()
        metrics.update(
            {
                "iterations": self.step,
                "train_seconds": round(self.train_seconds, 3),
                "rays_per_s": round(
                    self.step
                    * self.s.batch_size
                    * self._rays_per_image()
                    / max(self.train_seconds, 1e-9),
                    1,
                ),
                "final_train_loss": stats.get("loss"),
                "nonfinite_steps": self.nonfinite_steps,
                "status": "completed",
            }
        )
        write_json_atomic(self.run_dir / "metrics.json", metrics)
        log.info(
            "Done: %d iterations in %.1fs; held-out psnr=%.3f ssim=%.4f. Run directory: %s",
            self.step, self.train_seconds, metrics["eval/psnr"], metrics["eval/ssim"], self.run_dir,
        )  # fmt: skip
        return metrics

    def _rays_per_image(self) -> int:
        return int(getattr(self.train_raysampler, "_n_rays_per_image", 0))
