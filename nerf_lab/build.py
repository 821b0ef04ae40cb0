"""Building a run's components from its config (the entry points' shared step).

Order: every check that needs no work first (the keys of every node against its target,
cross-group relations, the trainer's settings), then the cheap components (field,
resampler, loss terms, raymarcher, optimiser, scheduler, raysamplers), and only then the
data, so a bad value fails in seconds. The raysamplers are built once more after the
data when their depth range is ``auto`` (the scene's near/far).

Before anything is built, :func:`prepare_run` decides whose run directory it is and what a
resume continues from (``nerf_lab.checkpoint``: run ids, ``resolve_resume``), checks the
checkpoint's targets against the allow-list (``nerf_lab.safety``) and its settings against
the composed ones (``nerf_lab.resume_diff``). Before the data, :func:`check_limits` checks
the data's ranges, the render sizes and the memory of a step and of a render
(``nerf_lab.limits``).

A fresh run's targets are not allow-list checked: its config is composed from the user's
own files and command line, which are as trusted as the user's Python. What comes from a
run directory (a checkpoint's config, for a resume, eval or render) is data and is checked.
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
from nerf_lab.checkpoint import (
    RunDirOwnedError,
    atomic_write_bytes,
    check_directory_owner,
    new_run_id,
    read_run_json,
    resolve_resume,
    write_run_json,
)
from nerf_lab.config import (
    ConfigValueError,
    TrainerConf,
    check_config,
    check_writable,
    trainer_settings,
)
from nerf_lab.device import resolve_device
from nerf_lab.limits import (
    check_memory,
    data_range_problems,
    estimate_memory,
    known_image_hw,
    render_size_problems,
    scene_bytes_from_config,
)
from nerf_lab.losses import SilhouetteLoss
from nerf_lab.ndc import NDCRaysampler, ndc_box_problems
from nerf_lab.perf import tune_malloc
from nerf_lab.raysamplers import RayBundle, ndc_extent
from nerf_lab.render_shortcuts import RenderShortcuts
from nerf_lab.renderer import Renderer, Resampler
from nerf_lab.resume_diff import derived_keys, resume_changes
from nerf_lab.rundir import absolute_paths
from nerf_lab.safety import check_targets
from nerf_lab.validate import is_number

log = logging.getLogger("nerf_lab")

#: Depths used to validate raysamplers whose depth range is ``auto`` before the data exist.
_PROBE_DEPTHS = {"min_depth": 1.0, "max_depth": 2.0}
#: ``auto`` depths of NDC rays (scenes with ``ndc``): the NDC parameter, near plane to infinity.
_NDC_DEPTHS = {"min_depth": 0.0, "max_depth": 1.0}


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
    (taken from the scene's ``near``/``far``; for a scene sampled in NDC, ``0`` and ``1``);
    ``{}`` when both are numbers (in NDC they must lie in ``[0, 1]``)."""
    out = {}
    ndc = scene is not None and scene.ndc is not None
    for key, attr in (("min_depth", "near"), ("max_depth", "far")):
        value = node.get(key)
        if ndc and value != "auto":
            if not is_number(value) or not 0 <= value <= 1:
                raise ValueError(
                    f"raysampler.{key}={value!r}: scene {scene.name!r} is sampled in NDC "
                    "(data.ndc=true), where depths are the NDC parameter in [0, 1] (0: the near "
                    "plane, 1: infinity): use auto (0 and 1) or a value in [0, 1]."
                )
        elif ndc:
            out[key] = _NDC_DEPTHS[key]
        elif value == "auto":
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
    renderer = Renderer(field, raymarcher, resampler, settings.precision, settings.chunk_size,
                        build_render_shortcuts(cfg))  # fmt: skip
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


def build_render_shortcuts(cfg: DictConfig) -> RenderShortcuts | None:
    """``raysampler.render_shortcuts`` (``None`` when absent or null: full renders)."""
    node = cfg.raysampler.get("render_shortcuts")
    return None if node is None else build(node, "raysampler.render_shortcuts")


def check_component_relations(resampler: Any, loss_terms: dict[str, Any]) -> None:
    """Relations between the raysampler and the loss terms: proposal sampling is trained
    only by the interlevel term, which needs proposal levels; a coarse pass rendered
    without autograd (``coarse_pass_grad: false``) cannot be in a term's ``passes``; a
    separate coarse field needs a term on the coarse pass."""
    from nerf_lab.losses import InterlevelLoss, PenaltyTerm
    from nerf_lab.proposal import ProposalResampler

    on_coarse = sorted(
        k for k, t in loss_terms.items() if isinstance(t, PenaltyTerm) and t.passes == "all"
    )
    separate = isinstance(resampler, Resampler) and resampler.coarse_pass_field() is not None
    if separate and not on_coarse:
        raise ConfigValueError([
            "raysampler.resampler.coarse_field: a separate coarse field learns only from "
            "loss terms on the coarse pass; set passes: all on one (e.g. "
            "loss.terms.color.passes=all)"
        ])  # fmt: skip
    if isinstance(resampler, Resampler) and not resampler.coarse_pass_grad and on_coarse:
        raise ConfigValueError([
            f"loss.terms.{k}.passes=all: raysampler.resampler.coarse_pass_grad=false "
            "renders the coarse pass without gradients; set passes: last or "
            "coarse_pass_grad: true" for k in on_coarse
        ])  # fmt: skip

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
    ``auto`` depths taken from ``scene`` and a ``null`` NDC extent from ``image_hw``; for a
    scene sampled in NDC (``scene.ndc``) both give NDC rays (:class:`NDCRaysampler`)."""
    depths = resolve_depths(cfg.raysampler, scene)
    train = build(
        cfg.raysampler.train, "raysampler.train", **_raysampler_extent(cfg, image_hw), **depths
    )
    render = build(cfg.raysampler.render, "raysampler.render", **depths)
    ndc = None if scene is None else scene.ndc
    if ndc is not None:
        train = NDCRaysampler(train, ndc, image_hw)
    return train, grid_sampler(render, ndc)


def grid_sampler(
    render: Callable[..., Any], ndc: Any = None
) -> Callable[[int, int], Callable[..., RayBundle]]:
    """``grid(height, width)`` → a full-image raysampler from a partial one (the
    ``raysampler.render`` node), giving NDC rays when ``ndc`` (an
    :class:`~nerf_lab.ndc.NDCSpace`) is not None."""

    def grid(height: int, width: int) -> Callable[..., RayBundle]:
        sampler = render(image_height=height, image_width=width)
        return sampler if ndc is None else NDCRaysampler(sampler, ndc, (height, width))

    return grid


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


def check_ndc_boxes(cfg: DictConfig, scene: Any) -> None:
    """A scene sampled in NDC is fitted in the NDC cube: the model's and the raysampler's
    boxes must cover it (:func:`~nerf_lab.ndc.ndc_box_problems`), before training."""
    if scene.ndc is not None:
        groups = {g: OmegaConf.to_container(cfg[g], resolve=True) for g in ("model", "raysampler")}
        problems = ndc_box_problems(groups, scene.name)
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
        "ndc": None if scene.ndc is None else scene.ndc.to_state(),
    }


@dataclass
class RunStart:
    """What :func:`prepare_run` decided before anything is built.

    Attributes:
        run_id: the run's id (this run's new one, or the resumed run's).
        resume: ``(state, path)`` of the checkpoint a resume continues from, or ``None``.
        changes: ``(key, checkpoint's value, new value)`` that a resume applies.
        config: the composed config as plain containers, resolved, data paths absolute
            (what every checkpoint saves).
        overwrite: another run's checkpoints are to be removed (``trainer.overwrite=true``)
            once every check has passed (:func:`take_over`).
    """

    run_id: str
    resume: tuple[dict[str, Any], Path] | None
    changes: list[tuple[str, Any, Any]]
    config: dict[str, Any]
    overwrite: bool = False


def allow_patterns(cfg: DictConfig) -> list[str]:
    """The user's ``allow_targets`` (top-level key; a list of fnmatch patterns)."""
    value = cfg.get("allow_targets")
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]


def prepare_run(cfg: DictConfig, run_dir: Path) -> RunStart:
    """Decide whose ``run_dir`` it is and what a resume continues from; nothing is built.

    * a fresh run refuses a directory holding another run's checkpoints unless
      ``trainer.overwrite=true`` (:func:`~nerf_lab.checkpoint.check_directory_owner`);
    * ``trainer.resume=true`` continues from the newest usable checkpoint; checkpoints that
      exist but cannot be read are an error, not a silent restart
      (:func:`~nerf_lab.checkpoint.resolve_resume`);
    * the checkpoint's config is data: its ``_target_`` s must be allow-listed
      (``nerf_lab.*``, ``torch.optim`` classes, the user's ``allow_targets``) before any is
      imported or called;
    * the composed settings are compared with the checkpoint's
      (:func:`~nerf_lab.resume_diff.resume_changes`).

    Raises:
        ValueError: (``RunDirOwnedError``, ``CheckpointError``, ``DisallowedTargetError``,
            ``ResumeConfigError``) naming what is wrong and what to do.
    """
    settings = trainer_settings(cfg.trainer)
    config = absolute_paths(OmegaConf.to_container(cfg, resolve=True))  # type: ignore[arg-type]
    overwrite = False
    try:
        run_id = check_directory_owner(run_dir, new_run_id(), settings.resume)
    except RunDirOwnedError:
        if not settings.overwrite:
            raise
        run_id, overwrite = new_run_id(), True  # removed by take_over, after the checks
    found, changes = None, []
    if settings.resume:
        found = resolve_resume(run_dir / "checkpoints", run_id)
        if found is None:
            log.warning(
                "trainer.resume=true: no checkpoint in %s yet; starting from iteration 0.",
                run_dir / "checkpoints",
            )
        else:
            state, path = found
            saved = state.get("config") or {}
            check_targets(saved, allow_patterns(cfg))
            step = int(state["step"])
            derived = derived_keys(OmegaConf.to_container(cfg, resolve=False))  # type: ignore[arg-type]
            changes = resume_changes(saved, config, step, str(path), derived)
            for key, old, new in changes:
                log.info("Resume changes %s: %r -> %r", key, old, new)
            if step == settings.n_iter:
                log.warning(
                    "The checkpoint %s is already at trainer.n_iter=%d: nothing to train; "
                    "evaluating and rendering again.", path, step,
                )  # fmt: skip
    return RunStart(run_id, found, changes, config, overwrite)


def take_over(run_dir: Path, start: RunStart) -> None:
    """``trainer.overwrite=true``: remove the other run's checkpoints (and metrics)."""
    if start.overwrite:
        check_directory_owner(run_dir, start.run_id, resume=False, overwrite=True)


def record_start(run_dir: Path, start: RunStart, overrides: list[str]) -> None:
    """Write what a run started with: ``run.json`` (id, host, PID, the first start's
    overrides), ``config_resolved.yaml`` (the first start's config: Hydra rewrites
    ``.hydra/`` at every start) and, for a resume, ``.hydra/overrides_resume_<n>.yaml``
    (this start's overrides and the changes it applied)."""
    old = read_run_json(run_dir) or {}
    first = old.get("overrides") if old.get("run_id") == start.run_id else None
    write_run_json(run_dir, start.run_id, overrides=first if first is not None else overrides)
    resolved = run_dir / "config_resolved.yaml"
    if start.resume is not None:
        saved = start.resume[0].get("config") or {}
        if not resolved.exists():
            _write_yaml(resolved, saved)
        hydra_dir = run_dir / ".hydra"
        n = 1
        while (hydra_dir / f"overrides_resume_{n}.yaml").exists():
            n += 1
        _write_yaml(
            hydra_dir / f"overrides_resume_{n}.yaml",
            {
                "overrides": list(overrides),
                "checkpoint": str(start.resume[1]),
                "step": int(start.resume[0]["step"]),
                "changes": {k: {"from": a, "to": b} for k, a, b in start.changes},
            },
        )
    elif not resolved.exists() or old.get("run_id") != start.run_id:
        _write_yaml(resolved, start.config)


def _write_yaml(path: Path, data: Any) -> None:
    text = OmegaConf.to_yaml(OmegaConf.create(data))
    atomic_write_bytes(path, lambda f: f.write(text.encode()))


def _n_pts_per_ray(cfg: DictConfig) -> int | None:
    n = OmegaConf.select(cfg, "raysampler.train.n_pts_per_ray", default=None)
    extra = OmegaConf.select(cfg, "raysampler.resampler.n_pts_per_ray", default=None)
    if not isinstance(n, int):
        return None
    return n + (extra if isinstance(extra, int) else 0)


def check_limits(
    cfg: DictConfig,
    components: Components,
    image_hw: tuple[int, int] | None = None,
    available: int | None = None,
) -> None:
    """The data's ranges, render sizes and memory, from the config (before the data when
    ``image_hw`` is ``None``: the image size is then taken from ``data.image_size`` where
    the data option has one).

    Raises:
        ConfigValueError: for ranges and render sizes (every problem listed).
        ValueError: when a training step or a render would not fit in memory (both numbers).
    """
    s = components.settings
    data = OmegaConf.to_container(cfg.data, resolve=True)
    assert isinstance(data, dict)
    hw = image_hw if image_hw is not None else known_image_hw(data)
    problems = data_range_problems(data, s.batch_size) if image_hw is None else []
    problems += render_size_problems(hw, s)
    if problems:
        raise ConfigValueError(problems)
    n_pts = _n_pts_per_ray(cfg)
    per_image = OmegaConf.select(cfg, "raysampler.train.n_rays_per_image", default=None)
    if n_pts is None or not isinstance(per_image, int):
        return  # a raysampler without these keys: nothing to estimate from
    n_rays = s.batch_size * per_image
    field = components.renderer.field
    n_eval = data.get("n_test_views") if isinstance(data.get("n_test_views"), int) else 1
    train, render = estimate_memory(
        field_class=type(field).__name__,
        model=OmegaConf.to_container(cfg.model, resolve=True),  # type: ignore[arg-type]
        n_rays=n_rays,
        n_pts_per_ray=n_pts,
        param_count=sum(p.numel() for p in components.renderer.parameters()),
        settings=s,
        image_hw=hw,
        n_eval_views=max(1, n_eval),
        scene_bytes=scene_bytes_from_config(data),
        optimizer_slots=1 if type(components.optimizer).__name__ == "SGD" else 2,
    )
    check_memory(train, render, n_rays, n_pts, components.device.type, available)


def build_loggers(cfg: DictConfig) -> Any:
    """The loggers of ``cfg.logger`` (one named node per option: ``logger=[tensorboard,csv]``
    composes ``{tensorboard: {...}, csv: {...}}``; a ``null`` node is left out; no
    ``logger`` key: none) as one :class:`~nerf_lab.loggers.FanOutLogger`. Keys are checked
    against each target first; a logger's missing package is an error here, before the
    data are loaded.

    Raises:
        ConfigValueError: for unknown keys or a node that is not a logger.
        ValueError: a logger's own check, or its extra not installed (naming it).
    """
    from nerf_lab.config import node_key_problems
    from nerf_lab.loggers import FanOutLogger, Logger

    node = cfg.get("logger")
    if node is None:
        return FanOutLogger([])
    if not isinstance(node, DictConfig):
        raise ConfigValueError([
            f"logger: must hold named logger nodes (logger=[tensorboard,csv]), got {node!r}"
        ])  # fmt: skip
    problems = node_key_problems(node, "logger")
    if problems:
        raise ConfigValueError(problems)
    loggers = []
    for name, sub in node.items():
        if sub is None:
            continue
        if not isinstance(sub, DictConfig) or "_target_" not in sub:
            raise ConfigValueError([f"logger.{name}: must be a node with a _target_, got {sub!r}"])
        built = build(sub, f"logger.{name}")
        if not isinstance(built, Logger):
            raise ConfigValueError([
                f"logger.{name}: {type(built).__name__} is not a nerf_lab.loggers.Logger"
            ])  # fmt: skip
        loggers.append(built)
    return FanOutLogger(loggers)


def build_trainer(cfg: DictConfig, run_dir: Path, overrides: list[str] | None = None) -> Any:
    """Check ``cfg``, decide the run's start (:func:`prepare_run`), build every component
    (cheap ones first, limits checked, data last) and the trainer; record the start."""
    from nerf_lab.hparams import flat_hparams
    from nerf_lab.trainer import Trainer

    run_dir = Path(run_dir)
    check_writable(run_dir)
    start = prepare_run(cfg, run_dir)
    components = build_components(cfg)
    loggers = build_loggers(cfg)
    check_limits(cfg, components)
    take_over(run_dir, start)
    s = components.settings
    if s.num_threads:
        torch.set_num_threads(s.num_threads)
    if s.tune_malloc:
        tune_malloc()
    scene = build_scene(cfg)
    check_scene(components, scene)
    check_ndc_boxes(cfg, scene)
    check_limits(cfg, components, tuple(scene.image_size))
    train_raysampler, grid = build_raysamplers(cfg, scene, scene.image_size)
    if isinstance(train_raysampler, torch.nn.Module):
        train_raysampler.to(components.device)  # (its buffers, e.g. a pixel grid)
    components.renderer.raymarcher = build(
        cfg.raymarcher, "raymarcher", background_color=scene_background(cfg, scene)
    )
    trainer = Trainer(
        scene=scene,
        renderer=components.renderer,
        loss_terms=components.loss_terms,
        train_raysampler=train_raysampler,
        grid_raysampler=grid,
        optimizer=components.optimizer,
        scheduler=components.scheduler,
        settings=s,
        run_dir=run_dir,
        config=start.config,
        hparams=flat_hparams(cfg, overrides or []),
        extra_state={"render_setup": render_setup(cfg, scene)},
        run_id=start.run_id,
        resume_from=start.resume,
        logger=loggers,
    )
    record_start(run_dir, start, list(overrides or []))
    return trainer
