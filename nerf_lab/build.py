"""Building a run's components from its config (the entry points' shared step).

Order: every check that needs no work first (the keys of every node against its target,
cross-group relations, the trainer's settings), then the cheap components (field,
resampler, loss terms, raymarcher, optimiser, scheduler, raysamplers), and only then the
data, so a bad value fails in seconds. The raysamplers are built once more after the
data when their depth range is ``auto`` (the scene's near/far).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from nerf_lab import hooks
from nerf_lab.cameras import cameras_to_state
from nerf_lab.config import (
    ConfigValueError,
    TrainerConf,
    check_config,
    check_writable,
    trainer_settings,
)
from nerf_lab.device import resolve_device
from nerf_lab.losses import SilhouetteLoss
from nerf_lab.perf import tune_malloc
from nerf_lab.raysamplers import RayBundle, ndc_extent
from nerf_lab.renderer import Renderer

log = logging.getLogger("nerf_lab")

#: Depths used to validate raysamplers whose depth range is ``auto`` before the data exist.
_PROBE_DEPTHS = {"min_depth": 1.0, "max_depth": 2.0}


def build(node: Any, where: str, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate``; a component's own ``ValueError`` (or ``OSError``) is
    re-raised unwrapped, prefixed with the config group it came from."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as e:
        _reraise(e.__cause__, where)
        raise


def _reraise(cause: BaseException | None, where: str) -> None:
    if type(cause) in (ValueError, TypeError):  # a component's own check: name the group
        raise ValueError(f"{where}: {cause}") from None
    if isinstance(cause, ValueError | OSError):  # already says where (e.g. bad scene data)
        raise cause from None


def call(fn: Callable[..., Any], where: str, *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` (e.g. a partial from the config), naming ``where`` in the
    message of a ``ValueError``/``TypeError`` it raises."""
    try:
        return fn(*args, **kwargs)
    except (ValueError, TypeError) as e:
        _reraise(e, where)
        raise


def make_optimizer(
    factory: Callable[..., torch.optim.Optimizer], groups: list[hooks.ParamGroup]
) -> torch.optim.Optimizer:
    """Call ``factory`` (a partial of a ``torch.optim`` class) with named parameter groups
    and set each group's learning rate to the optimiser's ``lr`` times its ``lr_scale``."""
    if not groups:
        raise ValueError("The model (and resampler) have no trainable parameters.")
    optimizer = factory([dict(g) for g in groups])
    for g in optimizer.param_groups:
        g["lr"] = g["lr"] * float(g.get("lr_scale", 1.0))
    return optimizer


def resolve_depths(node: DictConfig, scene: Any) -> dict[str, float]:
    """``min_depth``/``max_depth`` overrides for a raysampler node whose values are ``auto``
    (taken from the scene's ``near``/``far``); ``{}`` when both are numbers."""
    out = {}
    for key, attr in (("min_depth", "near"), ("max_depth", "far")):
        if node.get(key) == "auto":
            value = None if scene is None else getattr(scene, attr, None)
            if scene is not None and value is None:
                raise ValueError(
                    f"raysampler.{key}=auto, but scene {scene.name!r} has no {attr} depth: "
                    f"set raysampler.{key} to a number."
                )
            out[key] = _PROBE_DEPTHS[key] if scene is None else float(value)
    return out


@dataclass
class Components:
    """What a run is made of, built from its config (everything but the data)."""

    settings: TrainerConf
    renderer: Renderer
    loss_terms: dict[str, Any]
    optimizer: torch.optim.Optimizer
    scheduler: Any
    device: torch.device


def build_components(cfg: DictConfig) -> Components:
    """Check the config and build every component except the data and the raysamplers."""
    check_config(cfg)
    settings = trainer_settings(cfg.trainer)
    device = resolve_device(settings.device)
    torch.manual_seed(settings.seed)
    field = build(cfg.model, "model")
    resampler = (
        build(cfg.raysampler.resampler, "raysampler.resampler")
        if cfg.raysampler.get("resampler") is not None
        else None
    )
    loss_terms = {
        name: build(node, f"loss.terms.{name}")
        for name, node in cfg.loss.terms.items()
        if node is not None
    }
    check_component_relations(resampler, loss_terms)
    bg = cfg.raymarcher.get("background_color")
    raymarcher = build(cfg.raymarcher, "raymarcher", background_color=None if bg == "auto" else bg)
    renderer = Renderer(field, raymarcher, resampler, settings.precision, settings.chunk_size)
    renderer.to(device)
    groups = hooks.param_groups(field, "field")
    if resampler is not None:
        groups += hooks.param_groups(resampler, "resampler")
    optimizer = call(make_optimizer, "optimizer", build(cfg.optimizer, "optimizer"), groups)
    scheduler = call(build(cfg.scheduler, "scheduler"), "scheduler", optimizer)
    # Validate the raysamplers now (with probe depths where they are auto).
    build(cfg.raysampler.train, "raysampler.train", **_raysampler_extent(cfg, None),
          **resolve_depths(cfg.raysampler, None))  # fmt: skip
    render = build(
        cfg.raysampler.render, "raysampler.render", **resolve_depths(cfg.raysampler, None)
    )
    call(render, "raysampler.render", image_height=2, image_width=2)
    return Components(settings, renderer, loss_terms, optimizer, scheduler, device)


def check_component_relations(resampler: Any, loss_terms: dict[str, Any]) -> None:
    """Relations between the raysampler and the loss terms: proposal sampling is trained
    only by the interlevel term, which needs proposal levels."""
    from nerf_lab.losses import InterlevelLoss
    from nerf_lab.proposal import ProposalResampler

    has_interlevel = any(isinstance(t, InterlevelLoss) for t in loss_terms.values())
    if isinstance(resampler, ProposalResampler) and not has_interlevel:
        raise ConfigValueError([
            "raysampler=proposal: its proposal grids learn only from the interlevel loss "
            "term; add it: +loss/terms@loss.terms.interlevel=interlevel"
        ])  # fmt: skip
    if has_interlevel and not isinstance(resampler, ProposalResampler):
        raise ConfigValueError([
            "loss.terms: the interlevel term needs raysampler=proposal (proposal levels)"
        ])  # fmt: skip


def _raysampler_extent(cfg: DictConfig, image_hw: tuple[int, int] | None) -> dict[str, float]:
    rx, ry = ndc_extent(*image_hw) if image_hw is not None else (1.0, 1.0)
    auto = {"min_x": -rx, "max_x": rx, "min_y": -ry, "max_y": ry}
    return {k: v for k, v in auto.items() if cfg.raysampler.train.get(k, 0.0) is None}


def build_raysamplers(
    cfg: DictConfig, scene: Any, image_hw: tuple[int, int]
) -> tuple[Callable[..., RayBundle], Callable[[int, int], Callable[..., RayBundle]]]:
    """The training raysampler and ``grid(height, width)`` → a full-image raysampler, with
    ``auto`` depths taken from ``scene`` and a ``null`` NDC extent from ``image_hw``."""
    depths = resolve_depths(cfg.raysampler, scene)
    train = build(
        cfg.raysampler.train, "raysampler.train", **_raysampler_extent(cfg, image_hw), **depths
    )
    render = build(cfg.raysampler.render, "raysampler.render", **depths)

    def grid(height: int, width: int) -> Callable[..., RayBundle]:
        return render(image_height=height, image_width=width)

    return train, grid


def scene_background(cfg: DictConfig, scene: Any) -> list[float] | None:
    """The raymarcher's background colour: the scene's for ``auto`` (None for black)."""
    bg = cfg.raymarcher.get("background_color")
    if bg == "auto":
        return None if not any(scene.background_color) else list(scene.background_color)
    return None if bg is None else list(bg)


def build_scene(cfg: DictConfig) -> Any:
    """The data (without shifting the training RNG)."""
    with torch.random.fork_rng(devices=[]):
        return build(cfg.data, "data")


def check_scene(components: Components, scene: Any) -> None:
    """Relations between the data and the other groups (before any training): silhouette
    terms on a scene without masks are left out (``required=false``, logged) or refused."""
    problems = []
    if scene.silhouettes is None:
        for name, term in list(components.loss_terms.items()):
            if not isinstance(term, SilhouetteLoss):
                continue
            if term.required:
                problems.append(
                    f"loss.terms.{name}: a required silhouette term, but scene {scene.name!r} "
                    f"has no silhouettes (masks): remove it (~loss.terms.{name}) or set "
                    f"loss.terms.{name}.required=false"
                )
            else:
                del components.loss_terms[name]
                log.info("Scene %r has no masks: loss term %r left out.", scene.name, name)
    if not components.loss_terms:
        problems.append("loss.terms: no term is left for this scene (it has no masks)")
    if problems:
        raise ConfigValueError(problems)


def render_setup(cfg: DictConfig, scene: Any) -> dict[str, Any]:
    """What rendering needs besides the weights (saved with every checkpoint, so renders
    rebuild without the data): image size, depth range, background, a camera's
    intrinsics."""
    return {
        "image_size": list(scene.image_size),
        "depths": resolve_depths(cfg.raysampler, scene),
        "background_color": scene_background(cfg, scene),
        "camera": cameras_to_state(scene.cameras[[0]]),
        "world_transform": None
        if scene.world_transform is None
        else scene.world_transform.detach().cpu(),
    }


def build_trainer(cfg: DictConfig, run_dir: Path, overrides: list[str] | None = None) -> Any:
    """Check ``cfg``, build every component (cheap ones first, data last) and the trainer."""
    from nerf_lab.hparams import flat_hparams
    from nerf_lab.trainer import Trainer

    check_writable(run_dir)
    components = build_components(cfg)
    s = components.settings
    if s.num_threads:
        torch.set_num_threads(s.num_threads)
    if s.tune_malloc:
        tune_malloc()
    scene = build_scene(cfg)
    check_scene(components, scene)
    train_raysampler, grid = build_raysamplers(cfg, scene, scene.image_size)
    if isinstance(train_raysampler, torch.nn.Module):
        train_raysampler.to(components.device)  # (its buffers, e.g. a pixel grid)
    components.renderer.raymarcher = build(
        cfg.raymarcher, "raymarcher", background_color=scene_background(cfg, scene)
    )
    config = OmegaConf.to_container(cfg, resolve=True)
    return Trainer(
        scene=scene,
        renderer=components.renderer,
        loss_terms=components.loss_terms,
        train_raysampler=train_raysampler,
        grid_raysampler=grid,
        optimizer=components.optimizer,
        scheduler=components.scheduler,
        settings=s,
        run_dir=run_dir,
        config=config,
        hparams=flat_hparams(cfg, overrides or []),
        extra_state={"render_setup": render_setup(cfg, scene)},
    )
