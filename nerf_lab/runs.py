"""Loading a finished (or interrupted) run from its directory, for evaluation and renders.

Only what is needed is rebuilt: the field, the resampler, the raymarcher and the renderer
from the run's own saved config, and the checkpoint's weights. No optimiser is built; the
data are built only when asked (:meth:`LoadedRun.scene`, for evaluation).

A run directory is data, not code: before anything is imported or called, every
``_target_`` of the checkpoint's config must be allow-listed (``nerf_lab``'s components,
``torch.optim`` classes, and the patterns the caller names: ``allow_targets=[my_pkg.*]`` on
the command line of ``nerf_lab.eval`` / ``nerf_lab.render``). The run's own saved
``allow_targets`` is never used (a run directory cannot allow itself).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from nerf_lab.build import build, build_render_shortcuts, build_scene, grid_sampler
from nerf_lab.cameras import cameras_from_state
from nerf_lab.checkpoint import load_checkpoint, load_latest
from nerf_lab.config import check_config, trainer_settings
from nerf_lab.device import resolve_device
from nerf_lab.ndc import NDCSpace
from nerf_lab.renderer import Renderer
from nerf_lab.safety import check_targets

#: The caller's allow-list for :func:`load_run` when it is not passed (set by the command
#: line front, :func:`nerf_lab.cli.run_command`, from its ``allow_targets=`` argument).
_ALLOW: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar(
    "nerf_lab_allow_targets", default=()
)


@contextlib.contextmanager
def allowed_targets(patterns: Sequence[str]) -> Iterator[None]:
    """Within ``with``, :func:`load_run` also allows ``patterns`` (fnmatch, e.g.
    ``"my_pkg.*"``) unless it is given ``allow_targets`` itself."""
    token = _ALLOW.set(tuple(patterns))
    try:
        yield
    finally:
        _ALLOW.reset(token)


@dataclass
class LoadedRun:
    """A run rebuilt from its directory.

    Attributes:
        run_dir: the run directory.
        checkpoint: the checkpoint file the weights came from.
        step: the iterations that checkpoint had completed.
        config: the run's resolved config.
        renderer: the field (and resampler) with the checkpoint's weights, in eval mode.
        setup: the render setup saved with the checkpoint (image size, depths, camera).
    """

    run_dir: Path
    checkpoint: Path
    step: int
    config: DictConfig
    renderer: Renderer
    setup: dict[str, Any]
    device: torch.device

    @property
    def image_hw(self) -> tuple[int, int]:
        h, w = self.setup["image_size"]
        return int(h), int(w)

    @property
    def ndc(self) -> NDCSpace | None:
        """The NDC space the run was fitted in (``data.ndc=true``), else None."""
        state = self.setup.get("ndc")
        return None if state is None else NDCSpace.from_state(state)

    def grid_raysampler(self, height: int, width: int) -> Any:
        """A full-image raysampler of ``height`` x ``width`` with the run's depth range (NDC
        rays for a run fitted in NDC)."""
        node = self.config.raysampler.render
        render = build(node, "raysampler.render", **self.setup["depths"])
        return grid_sampler(render, self.ndc)(height, width)

    def camera_like(self) -> Any:
        """A camera (of the scene's type) with the intrinsics of the run's first training
        camera, and its pose."""
        return cameras_from_state(self.setup["camera"], self.device)

    def scene(self) -> Any:
        """The run's data (rebuilt from its config; usually from the scene cache)."""
        return build_scene(self.config)

    def render_views(self, cameras: Any, scale: float = 1.0, chunk_size: int | None = None) -> Any:
        """Full renders ``(n_views, H', W')`` at ``scale`` x the data's image size."""
        h, w = (max(1, round(n * scale)) for n in self.image_hw)
        sampler: Any = self.grid_raysampler(h, w)
        return self.renderer.render_views(cameras.to(self.device), sampler, chunk_size)


def load_run(
    run_dir: str | Path,
    checkpoint: str | Path | None = None,
    device: str | None = None,
    chunk_size: int | None = None,
    allow_targets: Sequence[str] | None = None,
) -> LoadedRun:
    """Rebuild a run's renderer from its own saved config and a checkpoint.

    Args:
        run_dir: the run directory (with ``checkpoints/``).
        checkpoint: a checkpoint file; default: the latest readable one.
        device: ``auto``, ``cpu``, ``cuda``...; default: the run's own setting.
        chunk_size: rays per evaluation; default: the run's own setting.
        allow_targets: extra ``_target_`` patterns the run's config may use (fnmatch);
            default: those of :func:`allowed_targets` (none outside it).

    Raises:
        ValueError: no readable checkpoint; ``DisallowedTargetError`` naming each target
            outside the allow-list (nothing was imported or called).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ValueError(f"run_dir={str(run_dir)!r} is not a directory.")
    if checkpoint is not None:
        path = Path(checkpoint)
        if not path.is_file():
            raise ValueError(f"checkpoint={str(checkpoint)!r} is not a file.")
        state = load_checkpoint(path)
    else:
        found = load_latest(run_dir / "checkpoints")
        if found is None:
            raise ValueError(f"No readable checkpoint in {run_dir / 'checkpoints'}.")
        state, path = found
    if "render_setup" not in state:
        raise ValueError(f"{path}: a checkpoint without a render setup (an older format).")
    allow = list(_ALLOW.get() if allow_targets is None else allow_targets)
    check_targets(state["config"], allow)  # before check_config, which imports the targets
    cfg = OmegaConf.create(state["config"])
    check_config(cfg)
    settings = trainer_settings(cfg.trainer)
    dev = resolve_device(device or settings.device)
    setup = state["render_setup"]
    field = build(cfg.model, "model")
    resampler = (
        build(cfg.raysampler.resampler, "raysampler.resampler")
        if cfg.raysampler.get("resampler") is not None
        else None
    )
    raymarcher = build(cfg.raymarcher, "raymarcher", background_color=setup["background_color"])
    renderer = Renderer(
        field,
        raymarcher,
        resampler,
        settings.precision,
        chunk_size if chunk_size is not None else settings.chunk_size,
        build_render_shortcuts(cfg),
    )
    field.load_state_dict(state["model"])
    if resampler is not None and state.get("resampler") is not None:
        resampler.load_state_dict(state["resampler"])
    renderer.to(dev).eval()
    return LoadedRun(run_dir, path, int(state["step"]), cfg, renderer, setup, dev)
