"""Which ``_target_`` s a config may instantiate: an allow-list, checked before any call.

A run directory holds the run's resolved config (in every checkpoint and in ``.hydra/``);
``nerf_lab.eval``, ``nerf_lab.render`` and ``trainer.resume`` rebuild components from it
with ``hydra.utils.instantiate``. Without a check, a config is code: ``_target_:
os.system`` runs a shell command. :func:`check_targets` refuses every target that is not

* defined in ``nerf_lab`` (pattern ``nerf_lab.*``), except its entry points and the
  helpers that write or delete files (:data:`NOT_COMPONENT_MODULES`, :data:`NOT_COMPONENTS`),
* an optimiser or LR-scheduler *class* of ``torch.optim`` (pattern ``torch.optim.*``),
* or matched by a pattern the user names (``allow_targets=[my_pkg.*]``, fnmatch syntax),

and reports all of them at once, each with its key path, before anything is called.

Resolving a target imports nothing outside the allow-list: a module is imported only when
its name matches an allowed pattern or is a package on an allowed pattern's literal path
(``my_pkg`` and ``my_pkg.models`` for ``my_pkg.models.*``; importing a package runs its
``__init__``). Modules that are already imported are looked up, not imported. A target
that matches a wildcard pattern by name must also be *defined* under an allowed pattern
(``obj.__module__ + "." + obj.__qualname__``), so ``nerf_lab.checkpoint.os.system`` (``os.system``
reached through a module attribute) is refused; a wildcard-free user pattern names one
object exactly and needs no such check.
"""

from __future__ import annotations

import fnmatch
import importlib
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import ModuleType
from typing import Any

TARGET_KEY = "_target_"

NERF_LAB_PATTERN = "nerf_lab.*"
TORCH_OPTIM_PATTERN = "torch.optim.*"
#: Always allowed: nerf_lab's own components and torch.optim's optimiser / scheduler classes.
DEFAULT_ALLOW: tuple[str, ...] = (NERF_LAB_PATTERN, TORCH_OPTIM_PATTERN)

_WILDCARDS = frozenset("*?[")

#: nerf_lab modules that hold no config components: entry points, the trainer loop and the
#: helpers that write, move or delete files. Their objects are refused under ``nerf_lab.*``
#: (a run directory must not be able to call e.g. ``write_json_atomic`` on ``~/.bashrc``).
NOT_COMPONENT_MODULES: tuple[str, ...] = (
    "nerf_lab.checkpoint",
    "nerf_lab.rundir",
    "nerf_lab.safety",
    "nerf_lab.memory",
    "nerf_lab.train",
    "nerf_lab.eval",
    "nerf_lab.render",
    "nerf_lab.trainer",
    "nerf_lab.plugins",
    "nerf_lab.perf",
    "nerf_lab.data.cache",
)
#: Single nerf_lab objects that write files although their module holds components.
NOT_COMPONENTS: frozenset[str] = frozenset(
    {
        "nerf_lab.data.blender.export_blender",
        "nerf_lab.data.cow.download_cow_mesh",
    }
)


class DisallowedTargetError(ValueError):
    """A config names ``_target_`` s outside the allow-list; ``problems`` lists each one."""

    def __init__(self, problems: list[tuple[str, str, str]], allow: Sequence[str]) -> None:
        self.problems = problems
        lines = "\n".join(f"  - {path} = {target!r}: {why}" for path, target, why in problems)
        super().__init__(
            f"Refusing to instantiate {len(problems)} target(s) (nothing was called):\n{lines}\n"
            f"Allowed: {', '.join(allow)} (torch.optim.*: optimiser and LR-scheduler classes "
            "only). If you trust a target, name it explicitly, e.g. "
            "allow_targets=['my_pkg.*'] or allow_targets=['my_pkg.MyField']."
        )


# ----------------------------------------------------------------------------- finding


def _as_container(config: Any) -> Any:
    """A ``DictConfig`` / ``ListConfig`` → plain containers (interpolations resolved)."""
    try:
        from omegaconf import OmegaConf
    except ImportError:  # pragma: no cover - omegaconf is a dependency
        return config
    if OmegaConf.is_config(config):
        return OmegaConf.to_container(config, resolve=True, throw_on_missing=False)
    return config


def find_targets(config: Any) -> list[tuple[str, Any]]:
    """Every ``_target_`` in a nested config, with its key path, in document order.

    Walks dicts (any ``Mapping``, including ``DictConfig``, whose interpolations are
    resolved first) and lists/tuples at any depth; ``_partial_`` nodes, positional
    ``_args_`` and nodes inside lists are all included.

    Args:
        config: a (nested) mapping, e.g. a run's saved config.

    Returns:
        ``[(key_path, target), ...]``, e.g. ``("optimizer.optim._target_", "torch.optim.Adam")``;
        list items appear as ``name[i]``. ``target`` is returned as found (normally a ``str``).
    """
    found: list[tuple[str, Any]] = []

    def join(prefix: str, key: Any) -> str:
        return f"{prefix}.{key}" if prefix else str(key)

    def walk(node: Any, path: str) -> None:
        if isinstance(node, Mapping):
            for key, value in node.items():
                sub = join(path, key)
                if key == TARGET_KEY:
                    found.append((sub, value))
                else:
                    walk(value, sub)
        elif isinstance(node, (list, tuple)):
            for i, value in enumerate(node):
                walk(value, f"{path}[{i}]")

    walk(_as_container(config), "")
    return found


# ----------------------------------------------------------------------------- resolving


def _literal_parts(pattern: str) -> list[str]:
    """The dotted parts of ``pattern`` before its first wildcard (``a.b.*`` → ``[a, b]``)."""
    parts = []
    for part in pattern.split("."):
        if _WILDCARDS & set(part):
            break
        parts.append(part)
    return parts


def module_importable(name: str, allow: Sequence[str]) -> bool:
    """May ``name`` be imported to resolve a target? (See the module docstring.)"""
    parts = name.split(".")
    for pattern in allow:
        if fnmatch.fnmatchcase(name, pattern):
            return True
        literal = _literal_parts(pattern)
        if len(parts) <= len(literal) and literal[: len(parts)] == parts:
            return True
    return False


def resolve_target(target: str, allow: Sequence[str]) -> Any:
    """The object ``target`` names, as Hydra's ``_locate`` finds it, importing only allowed
    modules (already-imported modules are looked up).

    Raises:
        ImportError: when a module outside the allow-list would have to be imported, or the
            name does not exist.
    """
    parts = target.split(".")
    if not target or any(not p.isidentifier() for p in parts):
        raise ImportError(f"{target!r} is not a dotted Python name")

    def load(module_name: str) -> ModuleType:
        if module_name in sys.modules:
            return sys.modules[module_name]
        if not module_importable(module_name, allow):
            raise ImportError(f"module {module_name!r} is not imported and not allowed")
        return importlib.import_module(module_name)

    obj: Any = load(parts[0])
    for i in range(1, len(parts)):
        try:
            obj = getattr(obj, parts[i])
            continue
        except AttributeError:
            if not isinstance(obj, ModuleType):
                raise ImportError(
                    f"{'.'.join(parts[:i])!r} has no attribute {parts[i]!r}"
                ) from None
        try:
            obj = load(".".join(parts[: i + 1]))
        except ModuleNotFoundError as e:
            raise ImportError(f"cannot find {'.'.join(parts[: i + 1])!r} ({e})") from None
    return obj


def defined_name(obj: Any) -> str | None:
    """``module.qualname`` where ``obj`` is defined (``None`` for objects without one)."""
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(qualname, str):
        return None
    return f"{module}.{qualname}"


def _is_optim_class(obj: Any) -> bool:
    import torch.optim
    import torch.optim.lr_scheduler as sched

    bases: list[type] = [torch.optim.Optimizer]
    for name in ("LRScheduler", "_LRScheduler", "ReduceLROnPlateau"):
        base = getattr(sched, name, None)
        if isinstance(base, type):
            bases.append(base)
    return isinstance(obj, type) and issubclass(obj, tuple(bases))


# ----------------------------------------------------------------------------- checking


def target_problem(target: Any, allow: Sequence[str] = ()) -> str | None:
    """Why ``target`` may not be instantiated, or ``None`` when it may.

    Args:
        target: a ``_target_`` value.
        allow: user patterns (fnmatch) on top of :data:`DEFAULT_ALLOW`.
    """
    patterns = [*DEFAULT_ALLOW, *allow]
    if not isinstance(target, str):
        return f"not a dotted name (a {type(target).__name__})"
    name_hits = [p for p in patterns if fnmatch.fnmatchcase(target, p)]
    if not name_hits:
        return "not in the allow-list"
    try:
        obj = resolve_target(target, patterns)
    except ImportError as e:
        return f"cannot be resolved within the allow-list ({e})"
    if any(not (_WILDCARDS & set(p)) for p in name_hits):
        return None  # the user named exactly this object
    where = defined_name(obj)
    if where is None:
        return f"resolves to a {type(obj).__name__} without a defining module"
    where_hits = {p for p in patterns if fnmatch.fnmatchcase(where, p)}
    if not where_hits:
        return f"resolves to {where}, which is defined outside the allow-list"
    if where_hits == {NERF_LAB_PATTERN} and _not_a_component(where):
        return (
            f"resolves to {where}, which is not a config component (nerf_lab's entry points, "
            "checkpoint, run-directory and file-writing helpers are never instantiated)"
        )
    if where_hits == {TORCH_OPTIM_PATTERN} and not _is_optim_class(obj):
        return (
            f"resolves to {where}, which is not an optimiser or LR-scheduler class "
            "(torch.optim.* allows only those)"
        )
    return None


def _not_a_component(where: str) -> bool:
    return where in NOT_COMPONENTS or any(where.startswith(m + ".") for m in NOT_COMPONENT_MODULES)


def check_targets(config: Any, allow: Sequence[str] = ()) -> None:
    """Refuse a config with any ``_target_`` outside the allow-list, before any call.

    Args:
        config: a (nested) mapping or ``DictConfig`` (e.g. a checkpoint's ``"config"``).
        allow: user patterns (fnmatch, e.g. ``"my_pkg.*"``) on top of :data:`DEFAULT_ALLOW`.

    Raises:
        DisallowedTargetError (a ``ValueError``): listing every disallowed target with its key
            path and the reason.
    """
    allow = _check_patterns(allow)
    problems = []
    for path, target in find_targets(config):
        why = target_problem(target, allow)
        if why is not None:
            problems.append((path, str(target), why))
    if problems:
        raise DisallowedTargetError(problems, [*DEFAULT_ALLOW, *allow])


def _check_patterns(allow: Iterable[str] | str | None) -> list[str]:
    if allow is None:
        return []
    if isinstance(allow, str):
        allow = [allow]
    out = []
    for p in allow:
        if not isinstance(p, str) or not p or p.strip() != p:
            raise ValueError(
                f"allow_targets: {p!r} is not a pattern; expected non-empty strings such as "
                "'my_pkg.*' or 'my_pkg.MyField'."
            )
        out.append(p)
    return out


def safe_instantiate(config: Any, allow: Sequence[str] = (), **kwargs: Any) -> Any:
    """``hydra.utils.instantiate(config, **kwargs)`` after :func:`check_targets`.

    ``kwargs`` may not contain nodes with a ``_target_`` of their own that escape the check:
    they are checked too.
    """
    from hydra.utils import instantiate

    check_targets(config, allow)
    check_targets(kwargs, allow)
    return instantiate(config, **kwargs)


def guarded(build: Callable[..., Any], allow: Sequence[str] = ()) -> Callable[..., Any]:
    """Wrap an ``instantiate``-like ``build(node, **kwargs)`` so it checks its node first."""

    def wrapper(node: Any, **kwargs: Any) -> Any:
        check_targets(node, allow)
        check_targets(kwargs, allow)
        return build(node, **kwargs)

    return wrapper
