"""Atomic, self-describing checkpoints.

A checkpoint is a dict of plain tensors and Python values (it loads with
``torch.load(weights_only=True)``): the model, optimiser and scheduler states, the step,
the RNG states, the training time so far and the run's resolved config.

Writing is atomic: the checkpoint goes to a temporary file in the same directory, is
fsynced and moved into place with ``os.replace``; only then is the ``latest`` pointer
updated (atomically too) and old checkpoints beyond the last ``keep`` removed. A
truncated or corrupt latest checkpoint makes :func:`load_latest` fall back to the
previous one, with a warning.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

LATEST = "latest"
_NAME = re.compile(r"^step_(\d+)\.pt$")


def checkpoint_name(step: int) -> str:
    return f"step_{step:08d}.pt"


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, write: Any) -> None:
    """Write a file atomically: ``write(fileobj)`` into a temp file, fsync, ``os.replace``.

    The file gets mode ``0o666 & ~umask`` (as ``open(path, "w")`` would; ``mkstemp``'s
    own ``0o600`` is replaced before anything is written).
    """
    from nerf_lab.fileio import public_file_mode

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, public_file_mode())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def list_checkpoints(directory: str | Path) -> list[Path]:
    """Checkpoint files in ``directory``, oldest step first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def save_checkpoint(directory: str | Path, state: dict[str, Any], step: int, keep: int = 3) -> Path:
    """Atomically save ``state`` as ``step_<step>.pt``, point ``latest`` at it, prune.

    Args:
        directory: the run's ``checkpoints/`` folder (created if needed).
        state: plain tensors and Python values only.
        step: the number of completed optimisation steps.
        keep: how many of the newest checkpoints to keep (>= 1).

    Returns:
        The checkpoint's path.
    """
    if keep < 1:
        raise ValueError(f"keep must be >= 1; got {keep!r}.")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / checkpoint_name(step)
    atomic_write_bytes(path, lambda f: torch.save(state, f))
    atomic_write_bytes(directory / LATEST, lambda f: f.write(path.name.encode() + b"\n"))
    for old in list_checkpoints(directory)[:-keep]:
        if old != path:
            old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load one checkpoint with ``weights_only=True``."""
    return torch.load(path, map_location=map_location, weights_only=True)


def load_latest(
    directory: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[dict[str, Any], Path] | None:
    """The newest readable checkpoint of ``directory`` and its path, or ``None``.

    Tries the file named by ``latest`` first, then every other checkpoint from the newest
    step down; an unreadable one is skipped with a warning.
    """
    directory = Path(directory)
    candidates = list(reversed(list_checkpoints(directory)))
    pointer = directory / LATEST
    if pointer.exists():
        try:
            named = directory / pointer.read_text().strip()
        except OSError:
            named = None
        if named is not None and named in candidates:
            candidates.remove(named)
            candidates.insert(0, named)
    for path in candidates:
        try:
            state = load_checkpoint(path, map_location)
        except Exception as e:  # truncated, corrupt or foreign file
            log.warning("Checkpoint %s is unreadable (%s); falling back to an older one.", path, e)
            continue
        if not isinstance(state, dict) or "step" not in state or "model" not in state:
            log.warning("Checkpoint %s is incomplete; falling back to an older one.", path)
            continue
        return state, path
    return None


def _json_safe(value: Any) -> Any:
    """NaN and infinities → ``None`` (JSON has no such numbers), recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def write_json_atomic(path: str | Path, data: dict[str, Any]) -> None:
    """Write ``data`` as pretty, valid JSON (non-finite numbers become ``null``), atomically."""
    text = json.dumps(_json_safe(data), indent=2, allow_nan=False)
    atomic_write_bytes(Path(path), lambda f: f.write(text.encode() + b"\n"))
