"""Clear messages for Hydra plugins that a command line asks for but are not installed."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

# (config group, option) -> (plugin module under hydra_plugins, nerf_lab extra)
PLUGINS: dict[tuple[str, str], tuple[str, str]] = {
    ("hydra/launcher", "joblib"): ("hydra_joblib_launcher", "joblib"),
    ("hydra/launcher", "submitit_slurm"): ("hydra_submitit_launcher", "submitit"),
    ("hydra/launcher", "submitit_local"): ("hydra_submitit_launcher", "submitit"),
    ("hydra/launcher", "slurm"): ("hydra_submitit_launcher", "submitit"),
    ("hydra/sweeper", "optuna"): ("hydra_optuna_sweeper", "optuna"),
}
_OVERRIDE = re.compile(r"override\s+/?(hydra/(?:launcher|sweeper))\s*:\s*([\w-]+)")


def plugin_installed(module: str) -> bool:
    """Whether ``hydra_plugins.<module>`` can be imported (False without any plugin)."""
    try:
        return importlib.util.find_spec(f"hydra_plugins.{module}") is not None
    except ModuleNotFoundError:  # no hydra_plugins namespace at all
        return False


def missing_plugin_message(argv: list[str], conf_dir: str | Path) -> str | None:
    """The message for the first plugin that ``argv`` needs (directly, or through a
    ``+sweep=...`` study's defaults list) and that is not installed; None if all are."""
    wanted: list[tuple[str, str]] = []
    for arg in argv:
        key, _, value = arg.lstrip("+~").partition("=")
        if key in ("hydra/launcher", "hydra/sweeper"):
            wanted.append((key, value))
        elif key == "sweep":
            path = Path(conf_dir) / "sweep" / f"{value}.yaml"
            if path.is_file():
                wanted += _OVERRIDE.findall(path.read_text())
    for group, option in wanted:
        module, extra = PLUGINS.get((group, option), (None, None))
        if module and not plugin_installed(module):
            return (
                f"{group}={option} needs the Hydra plugin 'hydra_plugins.{module}', which is not "
                f"installed. Install it with:  pip install 'nerf_lab[{extra}]'  "
                f"(in a checkout: pip install -e '.[{extra}]')"
            )
    return None
