"""Config schemas (registered in Hydra's ConfigStore) and up-front value checks.

Every YAML option of every group extends one of the dataclasses below, so a misspelt
key or a value of the wrong type fails at start with Hydra's own message. Value ranges
and relations that a type cannot express are checked by :func:`check_config`, which
reports every problem at once, each naming the key, the value and what is allowed,
before any data is generated.

Only the entry points (``train``, ``eval``, ``render``) see a ``DictConfig``.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

# --------------------------------------------------------------------------- data


@dataclass
class CowDataConf:
    _target_: str = "nerf_lab.data.cow_scene"
    _convert_: str = "all"
    data_dir: str | None = None
    num_views: int = 40
    azimuth_range: float = 180.0
    image_size: int = 128
    n_test_views: int = 10
    train_on_all_views: bool = False
    elevated_test_views: int = 0
    elevation_test: float = 30.0
    silhouette: str = "pytorch3d"
    cache: bool = True


@dataclass
class ProceduralDataConf:
    _target_: str = "nerf_lab.data.procedural_scene"
    _convert_: str = "all"
    num_views: int = 40
    n_test_views: int = 10
    image_size: int = 64
    azimuth_range: float = 180.0
    elevation_range: list[float] = field(default_factory=lambda: [10.0, 40.0])
    distance: float = 2.2
    fov: float = 60.0
    light_location: list[float] | None = None
    background: Any = "black"
    silhouette: str = "pytorch3d"
    cache: bool = True


@dataclass
class MeshDataConf:
    _target_: str = "nerf_lab.data.mesh_scene"
    _convert_: str = "all"
    path: str = MISSING
    num_views: int = 40
    n_test_views: int = 10
    azimuth_range: float = 180.0
    elevation_range: list[float] = field(default_factory=lambda: [0.0, 30.0])
    distance: float = 2.7
    image_size: int = 128
    fov: float = 60.0
    light_location: list[float] | None = None
    background: Any = "black"
    normalize: bool = True
    silhouette: str = "pytorch3d"
    cache: bool = True


@dataclass
class BlenderDataConf:
    _target_: str = "nerf_lab.data.blender_scene"
    _convert_: str = "all"
    path: str = MISSING
    background: Any = "black"
    downscale: int = 1
    splits: list[str] = field(default_factory=lambda: ["train", "val", "test"])


# --------------------------------------------------------------------------- rays


@dataclass
class TrainRaysamplerConf:
    _target_: str = "nerf_lab.raysamplers.MonteCarloRaysampler"
    # None: the image's NDC extent ([-1, 1] for square images)
    min_x: float | None = None
    max_x: float | None = None
    min_y: float | None = None
    max_y: float | None = None
    n_rays_per_image: int = "${..n_rays_per_image}"  # type: ignore[assignment]
    n_pts_per_ray: int = "${..n_pts_per_ray}"  # type: ignore[assignment]
    min_depth: float = "${..min_depth}"  # type: ignore[assignment]
    max_depth: float = "${..max_depth}"  # type: ignore[assignment]
    stratified_sampling: bool = "${..stratified_sampling}"  # type: ignore[assignment]


@dataclass
class RenderRaysamplerConf:
    """Full-image sampler; the trainer passes ``image_height``/``image_width``."""

    _target_: str = "nerf_lab.raysamplers.NDCMultinomialRaysampler"
    _partial_: bool = True
    n_pts_per_ray: int = "${..n_pts_per_ray}"  # type: ignore[assignment]
    min_depth: float = "${..min_depth}"  # type: ignore[assignment]
    max_depth: float = "${..max_depth}"  # type: ignore[assignment]


@dataclass
class RaysamplerConf:
    n_rays_per_image: int = 512
    n_pts_per_ray: int = 64
    min_depth: float = 1.0
    max_depth: float = 4.0
    stratified_sampling: bool = True
    train: TrainRaysamplerConf = field(default_factory=TrainRaysamplerConf)
    render: RenderRaysamplerConf = field(default_factory=RenderRaysamplerConf)


@dataclass
class RaymarcherConf:
    _target_: str = "nerf_lab.raymarchers.EmissionAbsorptionRaymarcher"
    surface_thickness: int = 1
    # "auto": the scene's background colour (None, i.e. nothing composited, when black).
    background_color: Any = "auto"


# --------------------------------------------------------------------------- model


@dataclass
class NeRFModelConf:
    _target_: str = "nerf_lab.models.NeuralRadianceField"
    n_harmonic_functions: int = 60
    n_hidden_neurons: int = 256
    omega0: float = 0.1
    density_scaling: str = "none"
    render_color_threshold: float = 0.0


@dataclass
class FastModelConf:
    _target_: str = "nerf_lab.models.FastRadianceField"
    resolution: int = 128
    n_features: int = 3
    n_hidden_neurons: int = 0
    n_harmonic_functions_dir: int = 2
    bbox: float = 1.0
    density_init: float = 0.02
    occupancy_threshold: float = 1e-2
    termination_threshold: float = 1e-4
    color_threshold: float = 1e-5
    grid_lr_scale: float = 100.0
    tv_weight: float = 0.0
    tv_feature_weight: float = 0.0
    tv_feature_samples: int = 0


# --------------------------------------------------------------------------- loss


@dataclass
class HuberLossConf:
    _target_: str = "nerf_lab.losses.HuberLoss"
    scaling: float = 0.1
    color_weight: float = 1.0
    silhouette_weight: float = 1.0


@dataclass
class MSELossConf:
    _target_: str = "nerf_lab.losses.MSELoss"
    color_weight: float = 1.0
    silhouette_weight: float = 1.0


# --------------------------------------------------------------------------- optimiser


@dataclass
class AdamConf:
    _target_: str = "torch.optim.Adam"
    _partial_: bool = True
    lr: float = "${..lr}"  # type: ignore[assignment]
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    weight_decay: float = 0.0
    fused: bool | None = None


@dataclass
class StepDecayConf:
    _target_: str = "nerf_lab.optim.step_decay_scheduler"
    _partial_: bool = True
    n_iter: int = "${trainer.n_iter}"  # type: ignore[assignment]
    decay_at: list[float] = "${..decay_at}"  # type: ignore[assignment]
    gamma: float = "${..gamma}"  # type: ignore[assignment]


@dataclass
class OptimizerConf:
    lr: float = 3e-3
    # The schedule: lr x gamma at each fraction of trainer.n_iter in decay_at.
    decay_at: list[float] = field(default_factory=lambda: [0.75])
    gamma: float = 0.1
    # The tutorial re-creates Adam at the decay, which also resets its moments.
    reset_state_at_decay: bool = False
    optim: AdamConf = field(default_factory=AdamConf)
    scheduler: StepDecayConf = field(default_factory=StepDecayConf)


# --------------------------------------------------------------------------- trainer


@dataclass
class TrainerConf:
    n_iter: int = 1200
    batch_size: int = 6
    device: str = "auto"
    seed: int = 0
    resume: bool = False
    precision: str = "fp32"
    log_every: int = 10
    render_every: int = 100
    eval_every: int = 0
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    chunk_size: int = 2048
    train_chunk_size: int = 0
    render_scale: float = 1.0
    eval_max_views: int = 0
    turntable_frames: int = 20
    turntable_scale: float = 1.0
    turntable_distance: float = 2.7
    target_lookup: str = "pixel"
    skip_nonfinite: bool = False
    progress_bar: bool | None = None
    num_threads: int = 0
    tune_malloc: bool = True


@dataclass
class Config:
    data: Any = MISSING
    raysampler: RaysamplerConf = MISSING
    raymarcher: RaymarcherConf = field(default_factory=RaymarcherConf)
    model: Any = MISSING
    loss: Any = MISSING
    optimizer: OptimizerConf = MISSING
    trainer: TrainerConf = MISSING
    name: str = "nerf"


def job_dirname(override_dirname: str, max_len: int = 120) -> str:
    """A file-system-safe job directory name from Hydra's ``override_dirname``.

    Slashes are replaced; names longer than ``max_len`` are cut and end in a short hash of
    the full name, so long command lines cannot exceed the 255-byte file name limit.
    """
    name = re.sub(r"[/\\\x00]", "_", str(override_dirname))
    if len(name) > max_len:
        name = f"{name[: max_len - 9]}-{hashlib.sha1(name.encode()).hexdigest()[:8]}"
    return name


def register_configs() -> None:
    """Register every schema in Hydra's ConfigStore and the config resolvers (idempotent)."""
    OmegaConf.register_new_resolver("nerf_lab.dirname", job_dirname, replace=True)
    cs = ConfigStore.instance()
    cs.store(name="config_schema", node=Config)
    cs.store(group="data", name="cow_schema", node=CowDataConf)
    cs.store(group="data", name="procedural_schema", node=ProceduralDataConf)
    cs.store(group="data", name="mesh_schema", node=MeshDataConf)
    cs.store(group="data", name="blender_schema", node=BlenderDataConf)
    cs.store(group="raysampler", name="raysampler_schema", node=RaysamplerConf)
    cs.store(group="model", name="nerf_schema", node=NeRFModelConf)
    cs.store(group="model", name="fast_schema", node=FastModelConf)
    cs.store(group="loss", name="huber_schema", node=HuberLossConf)
    cs.store(group="loss", name="mse_schema", node=MSELossConf)
    cs.store(group="optimizer", name="adam_schema", node=OptimizerConf)
    cs.store(group="trainer", name="trainer_schema", node=TrainerConf)


# --------------------------------------------------------------------------- checks


class ConfigValueError(ValueError):
    """One or more config values are out of range; the message lists every problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"Invalid configuration ({len(problems)} problem(s)):\n{lines}")


def _get(cfg: DictConfig, key: str) -> Any:
    return OmegaConf.select(cfg, key, default=None, throw_on_missing=False)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def check_config(cfg: DictConfig) -> None:
    """Check value ranges and relations of a composed config.

    Raises:
        ConfigValueError: listing every problem (key, value received, what is allowed).
    """
    problems: list[str] = []

    def need(key: str, ok: bool, allowed: str) -> None:
        if not ok:
            problems.append(f"{key}={_get(cfg, key)!r}: must be {allowed}")

    def positive_int(key: str) -> None:
        v = _get(cfg, key)
        if v is not None:
            need(key, _is_int(v) and v >= 1, "an integer >= 1")

    def nonneg_int(key: str) -> None:
        v = _get(cfg, key)
        if v is not None:
            need(key, _is_int(v) and v >= 0, "an integer >= 0")

    def positive_num(key: str) -> None:
        v = _get(cfg, key)
        if v is not None:
            need(key, _is_num(v) and v > 0, "a finite number > 0")

    def one_of(key: str, options: tuple[Any, ...]) -> None:
        v = _get(cfg, key)
        if v is not None:
            need(key, v in options, f"one of {list(options)}")

    # rays
    for k in ("n_rays_per_image", "n_pts_per_ray"):
        positive_int(f"raysampler.{k}")
    positive_num("raysampler.min_depth")
    positive_num("raysampler.max_depth")
    lo, hi = _get(cfg, "raysampler.min_depth"), _get(cfg, "raysampler.max_depth")
    if _is_num(lo) and _is_num(hi) and lo >= hi:
        problems.append(
            f"raysampler.min_depth={lo!r} and raysampler.max_depth={hi!r}: "
            "min_depth must be smaller than max_depth"
        )
    for a, b in (("min_x", "max_x"), ("min_y", "max_y")):
        va, vb = _get(cfg, f"raysampler.train.{a}"), _get(cfg, f"raysampler.train.{b}")
        if _is_num(va) and _is_num(vb) and va >= vb:
            problems.append(
                f"raysampler.train.{a}={va!r} and raysampler.train.{b}={vb!r}: "
                f"{a} must be smaller than {b}"
            )
    positive_int("raymarcher.surface_thickness")
    bg = _get(cfg, "raymarcher.background_color")
    if bg is not None and bg != "auto":
        ok = OmegaConf.is_list(bg) and len(bg) == 3 and all(_is_num(c) for c in bg)
        need("raymarcher.background_color", ok, "'auto', null or a list of 3 numbers")

    # model (keys present in the chosen option only)
    # (other models validate their own arguments when built, which is still before data)
    if str(_get(cfg, "model._target_")).endswith("NeuralRadianceField"):
        for k in ("n_harmonic_functions", "n_hidden_neurons"):
            positive_int(f"model.{k}")
        positive_num("model.omega0")
        one_of("model.density_scaling", ("none", "spacing"))
        v = _get(cfg, "model.render_color_threshold")
        if v is not None:
            need("model.render_color_threshold", _is_num(v) and 0 <= v < 1, "a number in [0, 1)")

    # loss
    positive_num("loss.scaling")
    for k in ("color_weight", "silhouette_weight"):
        v = _get(cfg, f"loss.{k}")
        if v is not None:
            need(f"loss.{k}", _is_num(v) and v >= 0, "a finite number >= 0")
    cw, sw = _get(cfg, "loss.color_weight"), _get(cfg, "loss.silhouette_weight")
    if _is_num(cw) and _is_num(sw) and cw == 0 and sw == 0:
        problems.append(
            "loss.color_weight=0 and loss.silhouette_weight=0: at least one must be > 0"
        )

    # optimiser
    positive_num("optimizer.lr")
    g = _get(cfg, "optimizer.gamma")
    if g is not None:
        need("optimizer.gamma", _is_num(g) and g > 0, "a finite number > 0")
    decay = _get(cfg, "optimizer.decay_at")
    if decay is not None:
        ok = OmegaConf.is_list(decay) and all(_is_num(f) and 0 <= f <= 1 for f in decay)
        need("optimizer.decay_at", ok, "a list of fractions in [0, 1]")

    # data
    for k in ("num_views", "image_size"):
        positive_int(f"data.{k}")
    nonneg_int("data.n_test_views")
    nonneg_int("data.elevated_test_views")
    positive_int("data.downscale")
    positive_num("data.distance")
    fov = _get(cfg, "data.fov")
    if fov is not None:
        need("data.fov", _is_num(fov) and 0 < fov < 180, "a number of degrees in (0, 180)")
    bgd = _get(cfg, "data.background")
    if bgd is not None:
        ok = bgd in ("black", "white") or (
            OmegaConf.is_list(bgd) and len(bgd) == 3 and all(_is_num(c) for c in bgd)
        )
        need("data.background", ok, "'black', 'white' or a list of 3 numbers in [0, 1]")
    one_of("data.silhouette", ("pytorch3d", "hard"))
    for key in ("data.path", "data.data_dir"):
        p = _get(cfg, key)
        if p is not None and not Path(os.path.expanduser(str(p))).exists():
            problems.append(f"{key}={p!r}: path does not exist")

    # trainer
    for k in ("n_iter", "batch_size", "chunk_size", "keep_checkpoints"):
        positive_int(f"trainer.{k}")
    for k in (
        "log_every",
        "render_every",
        "eval_every",
        "checkpoint_every",
        "eval_max_views",
        "train_chunk_size",
    ):
        nonneg_int(f"trainer.{k}")
    nonneg_int("trainer.turntable_frames")
    nonneg_int("trainer.num_threads")
    for k in ("render_scale", "turntable_scale", "turntable_distance"):
        positive_num(f"trainer.{k}")
    one_of("trainer.precision", ("fp32", "bf16", "fp16"))
    one_of("trainer.target_lookup", ("pixel", "tutorial"))
    dev = _get(cfg, "trainer.device")
    if dev is not None:
        ok = isinstance(dev, str) and (dev in ("auto", "cpu") or dev.startswith("cuda"))
        need("trainer.device", ok, "'auto', 'cpu', 'cuda' or 'cuda:N'")
    if problems:
        raise ConfigValueError(problems)


def check_writable(directory: str | Path) -> None:
    """Raise ``ValueError`` unless files can be created in ``directory``."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".write_test_"):
            pass
    except OSError as e:
        raise ValueError(
            f"Output directory {str(directory)!r} cannot be written ({e.strerror or e}). "
            "Choose another with hydra.run.dir=... (or hydra.sweep.dir=... for multirun)."
        ) from e
