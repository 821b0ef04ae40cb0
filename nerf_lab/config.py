"""Config: the trainer's typed settings and the checks that span several groups.

Every component validates its own arguments when it is built (a ``ValueError`` naming the
key, the value and what is allowed), and every config node's keys are checked against
its ``_target_``'s signature before anything is built (:func:`check_component_keys`), so
a misspelt key fails at start, naming the group and the key. :func:`check_config` keeps
only what no single component can see: relations across groups, paths and the output
directory. YAML files and constructor signatures are the single source of defaults.

Only the entry points (``train``, ``eval``, ``render``) see a ``DictConfig``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from nerf_lab.validate import check_choice, check_int, check_number, collect

#: The configs: ``conf/`` of a checkout, shipped in the wheel as ``nerf_lab.conf``.
CONF_DIR = str(Path(__file__).resolve().parent / "conf")
if not Path(CONF_DIR, "config.yaml").is_file():  # a checkout without an editable install
    CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")

# --------------------------------------------------------------------------- trainer

PRECISIONS = ("fp32", "bf16", "fp16")
TARGET_LOOKUPS = ("pixel", "tutorial")


@dataclass
class TrainerConf:
    """The trainer's settings (``conf/trainer/*.yaml``; each key is commented there).

    Raises:
        ValueError: on construction, for any value out of range (naming the key).
    """

    n_iter: int = 1200
    batch_size: int = 6
    device: str = "auto"
    seed: int = 0
    resume: bool = False
    overwrite: bool = False
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
    export_mesh: bool = False

    def __post_init__(self) -> None:
        problems: list[str] = []

        def need(check: Any, key: str, *args: Any, **kwargs: Any) -> None:
            collect(problems, check, f"trainer.{key}", getattr(self, key), *args, **kwargs)

        for k in ("n_iter", "batch_size", "chunk_size", "keep_checkpoints"):
            need(check_int, k)
        nonneg = (
            "log_every", "render_every", "eval_every", "checkpoint_every", "eval_max_views",
            "train_chunk_size", "turntable_frames", "num_threads",
        )  # fmt: skip
        for k in nonneg:
            need(check_int, k, 0)
        for k in ("render_scale", "turntable_scale", "turntable_distance"):
            need(check_number, k, 0, low_open=True)
        need(check_int, "seed", None)
        need(check_choice, "precision", PRECISIONS)
        need(check_choice, "target_lookup", TARGET_LOOKUPS)
        dev = self.device
        if not (isinstance(dev, str) and (dev in ("auto", "cpu") or dev.startswith("cuda"))):
            problems.append(f"trainer.device={dev!r}: must be 'auto', 'cpu', 'cuda' or 'cuda:N'")
        if problems:
            raise ConfigValueError(problems)


def trainer_settings(node: Mapping[str, Any]) -> TrainerConf:
    """:class:`TrainerConf` from the ``trainer`` node; unknown keys and bad values raise
    :class:`ConfigValueError` naming them."""
    values = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
    fields = {f.name for f in dataclasses.fields(TrainerConf)}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ConfigValueError(
            [f"trainer.{k}: unknown key (allowed: {', '.join(sorted(fields))})" for k in unknown]
        )
    return TrainerConf(**values)


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
    """Register nerf_lab's config resolvers (idempotent): ``nerf_lab.dirname`` and
    ``nerf_lab.uid`` (one random id per process, for unique run directories)."""
    from nerf_lab.rundir import register_resolvers

    OmegaConf.register_new_resolver("nerf_lab.dirname", job_dirname, replace=True)
    register_resolvers()
    from nerf_lab.sweep_names import sweep_dirname

    OmegaConf.register_new_resolver("nerf_lab.sweep_dirname", sweep_dirname, replace=True)


# --------------------------------------------------------------------------- checks


class ConfigValueError(ValueError):
    """One or more config values are wrong; the message lists every problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"Invalid configuration ({len(problems)} problem(s)):\n{lines}")


#: Hydra's own keys of an instantiable node.
HYDRA_KEYS = {"_target_", "_partial_", "_convert_", "_recursive_", "_args_"}


def _locate(target: str) -> Any:
    from hydra.utils import get_object

    return get_object(target)


def node_key_problems(node: Any, where: str, extra: set[str] = frozenset()) -> list[str]:
    """Keys of ``node`` (and of its nested nodes) that its ``_target_`` does not accept.

    A node is a mapping with a ``_target_``; its other keys must be parameters of the
    target (unless it takes ``**kwargs``). Nested mappings and lists are checked the same
    way. ``extra``: keys the caller passes itself (e.g. ``image_height``).

    Returns:
        One problem line per bad key (``group.key: unknown key for target (allowed: ...)``).
    """
    problems: list[str] = []
    if isinstance(node, DictConfig | dict):
        items = node.items_ex(resolve=False) if isinstance(node, DictConfig) else node.items()
        items = list(items)
        target = node.get("_target_") if "_target_" in node else None
        if target is not None:
            try:
                obj = _locate(str(target))
            except Exception as e:  # an import error names the module
                return [f"{where}._target_={target!r}: cannot be imported ({e})"]
            try:
                sig = inspect.signature(obj)
            except (TypeError, ValueError):
                sig = None
            if sig is not None and not any(
                p.kind == p.VAR_KEYWORD for p in sig.parameters.values()
            ):
                allowed = (
                    {n for n, p in sig.parameters.items() if p.kind != p.VAR_POSITIONAL}
                    | HYDRA_KEYS
                    | set(extra)
                )
                for key, _ in items:
                    if key not in allowed:
                        problems.append(
                            f"{where}.{key}: unknown key for {target} (allowed: "
                            f"{', '.join(sorted(allowed - HYDRA_KEYS))})"
                        )
        for key, value in items:
            if key not in HYDRA_KEYS and isinstance(value, DictConfig | dict | ListConfig | list):
                problems += node_key_problems(value, f"{where}.{key}")
    elif isinstance(node, ListConfig | list):
        for i, value in enumerate(node):
            problems += node_key_problems(value, f"{where}[{i}]")
    return problems


def check_paths(cfg: DictConfig) -> list[str]:
    """Problems with data paths given in the config (they must exist)."""
    problems = []
    for key in ("data.path", "data.data_dir"):
        p = OmegaConf.select(cfg, key, default=None, throw_on_missing=False)
        if p is not None and not Path(os.path.expanduser(str(p))).exists():
            problems.append(f"{key}={p!r}: path does not exist")
    return problems


def check_config(cfg: DictConfig) -> None:
    """Check what no single component can: every node's keys against its ``_target_``,
    the loss has terms, data paths exist.

    Raises:
        ConfigValueError: listing every problem (key, value received, what is allowed).
    """
    problems: list[str] = []
    for group in ("data", "model", "raysampler", "raymarcher", "loss", "optimizer", "scheduler"):
        node = cfg.get(group)
        if node is None:
            problems.append(f"{group}: missing (choose an option: {group}=...)")
            continue
        problems += node_key_problems(node, group)
    for key in ("train", "render"):
        if OmegaConf.select(cfg, f"raysampler.{key}", default=None) is None:
            problems.append(f"raysampler.{key}: missing (a ray generator node with a _target_)")
    terms = OmegaConf.select(cfg, "loss.terms", default=None)
    if not isinstance(terms, DictConfig) or not any(v is not None for v in terms.values()):
        problems.append("loss.terms: must hold at least one named term (e.g. loss=huber)")
    problems += check_paths(cfg)
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
