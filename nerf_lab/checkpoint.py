"""Atomic, self-describing checkpoints.

A checkpoint is a dict of plain tensors and Python values (it loads with
``torch.load(weights_only=True)``): the model, optimiser and scheduler states, the step,
the RNG states, the training time so far and the run's resolved config.

Writing is atomic: the checkpoint goes to a temporary file in the same directory, is
fsynced and moved into place with ``os.replace``; only then is the ``latest`` pointer
updated (atomically too) and old checkpoints beyond the last ``keep`` removed. A
truncated or corrupt latest checkpoint makes :func:`load_latest` fall back to the
previous one, with a warning; :func:`resolve_resume` raises when checkpoints exist but
none is readable (a resume must never silently restart from iteration 0).

Failure modes handled here:

* a process killed while writing leaves ``.<name>.<random>.tmp`` files:
  :func:`clean_stale_temporaries` removes them (at start, and after every save);
* retention counts the checkpoint files on disk, so after a save exactly ``keep`` remain;
  files numbered after the one just saved (left by an abandoned timeline: a resume that
  fell back past unreadable checkpoints, or an overwritten run) are removed;
* a full disk (``ENOSPC``/``EDQUOT``, or torch's ``inline_container.cc ... unexpected pos``
  / ``PytorchStreamWriter failed``) is re-raised as :class:`DiskFullError` naming the
  directory and its free space;
* new files get the user's umask (``mkstemp`` alone makes them ``0600``);
* every run has a random ``run_id`` (in each checkpoint and in ``run_dir/run.json``):
  :func:`check_directory_owner` refuses a fresh run in a directory holding another run's
  checkpoints unless it resumes or overwrites;
* :func:`write_json_atomic` never writes NaN or infinity (JSON has neither): they become
  ``null`` and their keys are listed under ``"nonfinite_keys"``.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import math
import os
import re
import secrets
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import torch

from nerf_lab.validate import check_int

log = logging.getLogger(__name__)

LATEST = "latest"
RUN_JSON = "run.json"
_NAME = re.compile(r"^step_(\d+)\.pt$")
# atomic_write_bytes' temporaries: "." + the target's name + "." + mkstemp's 8 random
# characters + ".tmp" (e.g. ".step_00000100.pt.k3j_9x2a.tmp", ".latest.a8d0s1qq.tmp").
_TMP = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")
_DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
_DISK_FULL_TEXT = ("unexpected pos", "PytorchStreamWriter failed", "No space left on device")


class CheckpointError(ValueError):
    """Checkpoints exist but cannot be used (none readable, or another run's)."""


class DiskFullError(OSError):
    """A write failed for lack of space; the message names the directory."""


class RunDirOwnedError(ValueError):
    """A fresh run was pointed at a directory that holds another run's checkpoints."""


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


def current_umask() -> int:
    """The process's umask, read without changing it where ``/proc`` allows."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # fallback: set and restore (not thread-safe for that instant)
    os.umask(mask)
    return mask


def is_disk_full_error(error: BaseException) -> bool:
    """Does ``error`` say the disk (or quota) is full? Also torch's zip-writer messages."""
    if isinstance(error, DiskFullError):
        return True
    if isinstance(error, OSError) and error.errno in _DISK_FULL_ERRNOS:
        return True
    return isinstance(error, RuntimeError) and any(t in str(error) for t in _DISK_FULL_TEXT)


def disk_full_error(directory: Path, error: BaseException) -> DiskFullError:
    """A :class:`DiskFullError` for a failed write into ``directory`` (free space included)."""
    try:
        free = f"{shutil.disk_usage(directory).free / 2**20:.1f} MiB free"
    except OSError:
        free = "free space unknown"
    first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return DiskFullError(
        errno.ENOSPC,
        f"no space left on {directory} ({free}) while writing there: free some space or "
        f"choose another directory (original error: {first_line})",
    )


def atomic_write_bytes(path: Path, write: Callable[[BinaryIO], Any]) -> None:
    """Write a file atomically: ``write(fileobj)`` into a temp file, fsync, ``os.replace``.

    The temp file is ``.<name>.<8 random chars>.tmp`` next to ``path`` (removed on any
    error; after a ``SIGKILL``, :func:`clean_stale_temporaries` removes it). The file gets
    mode ``0o666 & ~umask``, as ``open`` would give it.

    Raises:
        DiskFullError: when the disk or quota is full (also for torch's zip-writer errors).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, Exception) and is_disk_full_error(e) and not isinstance(e, DiskFullError):
            raise disk_full_error(path.parent, e) from e
        raise
    _fsync_dir(path.parent)


def clean_stale_temporaries(directory: str | Path, older_than_s: float = 0.0) -> list[Path]:
    """Remove the temp files :func:`atomic_write_bytes` leaves when a process is killed.

    Only names of that pattern (``.<name>.<8 random chars>.tmp``) are touched. Call it
    at start (holding the run directory's lock, when no other process writes there) and
    after each save. Where another process may be writing in ``directory`` (e.g.
    ``nerf_lab.eval`` writing ``eval.json`` into a run directory), pass ``older_than_s`` so
    that only temporaries older than that are removed.

    Args:
        directory: the folder to clean (not recursive; a missing folder is fine).
        older_than_s: keep temporaries modified less than this many seconds ago.

    Returns:
        The removed files.
    """
    directory = Path(directory)
    removed: list[Path] = []
    try:
        entries = list(os.scandir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return removed
    now = time.time()
    for entry in entries:
        if not _TMP.match(entry.name):
            continue
        try:
            if not entry.is_file(follow_symlinks=False):
                continue
            if older_than_s > 0 and now - entry.stat(follow_symlinks=False).st_mtime < older_than_s:
                continue
            os.unlink(entry.path)
        except FileNotFoundError:
            continue
        removed.append(Path(entry.path))
    if removed:
        log.info("Removed %d stale temporary file(s) in %s.", len(removed), directory)
    return removed


def _sanitize_json(value: Any, path: str, bad: list[str]) -> Any:
    if isinstance(value, bool) or value is None or isinstance(value, (str, int)):
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        bad.append(path or "<root>")
        return None
    if isinstance(value, Mapping):
        return {
            str(k): _sanitize_json(v, f"{path}.{k}" if path else str(k), bad)
            for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [_sanitize_json(v, f"{path}[{i}]", bad) for i, v in enumerate(value)]
    if hasattr(value, "tolist"):  # numpy arrays and scalars, torch tensors
        return _sanitize_json(value.tolist(), path, bad)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{path or '<root>'}: {type(value).__name__} is not JSON serialisable")


def sanitize_json(data: Any) -> tuple[Any, list[str]]:
    """``data`` with NaN/±inf replaced by ``None`` (numpy/torch values as plain ones).

    Returns:
        The sanitised copy and the key paths (``"eval/psnr_per_view[2]"``) that were not finite.
    """
    bad: list[str] = []
    return _sanitize_json(data, "", bad), bad


def write_json_atomic(path: str | Path, data: Any) -> list[str]:
    """Write ``data`` as pretty JSON, atomically; never NaN or infinity.

    Non-finite numbers become ``null``; when ``data`` is a mapping and any were replaced,
    their key paths are added under ``"nonfinite_keys"`` (so a reader can tell a missing
    value from a diverged one; the writer should also set its ``"status"``).

    Returns:
        The key paths that were not finite.
    """
    clean, bad = sanitize_json(data)
    if bad and isinstance(clean, dict):
        clean["nonfinite_keys"] = bad
    text = json.dumps(clean, indent=2, allow_nan=False) + "\n"
    atomic_write_bytes(Path(path), lambda f: f.write(text.encode()))
    return bad


def checkpoint_step(path: str | Path) -> int | None:
    """The step number in a checkpoint's file name (``None`` for other names)."""
    match = _NAME.match(Path(path).name)
    return int(match.group(1)) if match else None


def list_checkpoints(directory: str | Path) -> list[Path]:
    """Checkpoint files in ``directory``, oldest step first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def has_checkpoints(directory: str | Path) -> bool:
    """Does ``directory`` hold any checkpoint file or a ``latest`` pointer?"""
    directory = Path(directory)
    return bool(list_checkpoints(directory)) or (directory / LATEST).exists()


def prune_checkpoints(directory: str | Path, current: Path, keep: int) -> list[Path]:
    """Leave exactly ``current`` and the ``keep - 1`` newest checkpoints before it on disk.

    Checkpoints numbered after ``current`` belong to an abandoned timeline (a resume that
    fell back past unreadable checkpoints, or a run that reused the directory): they are
    removed too, with a warning, so that neither retention nor a later fallback counts them.

    Returns:
        The removed files.
    """
    step = checkpoint_step(current)
    if step is None:
        raise ValueError(f"{current} is not a checkpoint file name (step_<n>.pt).")
    on_disk = [(checkpoint_step(p), p) for p in list_checkpoints(directory)]
    older = [p for s, p in on_disk if s is not None and s < step]
    newer = [p for s, p in on_disk if s is not None and s > step]
    if newer:
        log.warning(
            "Removing %d checkpoint(s) numbered after the one just saved (%s): %s.",
            len(newer), Path(current).name, ", ".join(p.name for p in newer),
        )  # fmt: skip
    doomed = older[: max(0, len(older) - (keep - 1))] + newer
    for old in doomed:
        old.unlink(missing_ok=True)
    return doomed


def save_checkpoint(
    directory: str | Path,
    state: dict[str, Any],
    step: int,
    keep: int = 3,
    run_id: str | None = None,
) -> Path:
    """Atomically save ``state`` as ``step_<step>.pt``, point ``latest`` at it, prune.

    Args:
        directory: the run's ``checkpoints/`` folder (created if needed).
        state: plain tensors and Python values only.
        step: the number of completed optimisation steps.
        keep: how many checkpoints to leave on disk (>= 1), see :func:`prune_checkpoints`.
        run_id: stored in the checkpoint as ``state["run_id"]`` (the caller's dict is not
            changed).

    Returns:
        The checkpoint's path.

    Raises:
        DiskFullError: when the disk is full (no partial file is left behind).
    """
    check_int("keep", keep)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if run_id is not None:
        state = {**state, "run_id": run_id}
    path = directory / checkpoint_name(step)
    atomic_write_bytes(path, lambda f: torch.save(state, f))
    atomic_write_bytes(directory / LATEST, lambda f: f.write(path.name.encode() + b"\n"))
    prune_checkpoints(directory, path, keep)
    clean_stale_temporaries(directory)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load one checkpoint with ``weights_only=True``."""
    return torch.load(path, map_location=map_location, weights_only=True)


def _ordered_candidates(directory: Path) -> list[Path]:
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
    return candidates


def load_latest(
    directory: str | Path,
    map_location: str | torch.device = "cpu",
    strict: bool = False,
    run_id: str | None = None,
) -> tuple[dict[str, Any], Path] | None:
    """The newest readable checkpoint of ``directory`` and its path, or ``None``.

    Tries the file named by ``latest`` first, then every other checkpoint from the newest
    step down; an unreadable one is skipped with a warning.

    Args:
        directory: the ``checkpoints/`` folder.
        map_location: passed to ``torch.load``.
        strict: raise :class:`CheckpointError` instead of returning ``None`` when
            checkpoints exist (files or a ``latest`` pointer) but none is usable.
        run_id: skip (with a warning) checkpoints that carry another ``run_id``
            (checkpoints without one are accepted).
    """
    directory = Path(directory)
    tried: list[str] = []
    for path in _ordered_candidates(directory):
        try:
            state = load_checkpoint(path, map_location)
        except Exception as e:  # truncated, corrupt or foreign file
            log.warning("Checkpoint %s is unreadable (%s); falling back to an older one.", path, e)
            tried.append(f"{path.name}: unreadable ({type(e).__name__})")
            continue
        if not isinstance(state, dict) or "step" not in state or "model" not in state:
            log.warning("Checkpoint %s is incomplete; falling back to an older one.", path)
            tried.append(f"{path.name}: incomplete")
            continue
        other = state.get("run_id")
        if run_id is not None and other is not None and other != run_id:
            log.warning(
                "Checkpoint %s belongs to run %s, not %s; skipping it.", path, other, run_id
            )
            tried.append(f"{path.name}: run {other}")
            continue
        return state, path
    if strict and has_checkpoints(directory):
        detail = "; ".join(tried) if tried else f"'{LATEST}' names a missing file"
        raise CheckpointError(
            f"{directory} holds checkpoints but none can be resumed from ({detail}). Refusing "
            "to restart from iteration 0: restore a checkpoint, or start afresh with "
            "trainer.overwrite=true or another hydra.run.dir."
        )
    return None


def resolve_resume(
    directory: str | Path, run_id: str | None = None, map_location: str | torch.device = "cpu"
) -> tuple[dict[str, Any], Path] | None:
    """What ``trainer.resume=true`` continues from.

    Returns:
        ``(state, path)`` of the newest usable checkpoint, or ``None`` when the directory
        holds no checkpoint at all (a first start: train from scratch).

    Raises:
        CheckpointError: when checkpoints exist but none is readable or of this run.
    """
    return load_latest(directory, map_location, strict=True, run_id=run_id)


# ----------------------------------------------------------------------------- run ids


def new_run_id() -> str:
    """A random run id (16 hex characters)."""
    return secrets.token_hex(8)


def checkpoint_run_id(state: Mapping[str, Any]) -> str | None:
    """The ``run_id`` stored in a checkpoint (``None`` for checkpoints from before run ids)."""
    value = state.get("run_id")
    return value if isinstance(value, str) else None


def read_run_json(run_dir: str | Path) -> dict[str, Any] | None:
    """``run_dir/run.json`` as a dict (``None`` when missing or unreadable)."""
    try:
        data = json.loads((Path(run_dir) / RUN_JSON).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_run_json(run_dir: str | Path, run_id: str, **extra: Any) -> dict[str, Any]:
    """Write ``run_dir/run.json``: the run id, when it was created and who runs it now.

    Keeps ``created`` from an existing file of the same run; ``extra`` keys are added.
    """
    run_dir = Path(run_dir)
    old = read_run_json(run_dir) or {}
    now = time.time()
    data = {
        "run_id": run_id,
        "created": old.get("created", now) if old.get("run_id") == run_id else now,
        "updated": now,
        "pid": os.getpid(),
        "host": socket.gethostname(),
        **extra,
    }
    write_json_atomic(run_dir / RUN_JSON, data)
    return data


def check_directory_owner(
    run_dir: str | Path, run_id: str, resume: bool, overwrite: bool = False
) -> str:
    """Decide whose run ``run_dir`` is, before anything is written; return the run id to use.

    * ``resume``: the directory's own run id (from ``run.json``, else from its newest readable
      checkpoint), or ``run_id`` when it has none (a first start).
    * fresh run, directory without checkpoints (or with this run's ``run.json``): ``run_id``.
    * fresh run, directory with another run's checkpoints: :class:`RunDirOwnedError`, unless
      ``overwrite``, which removes those checkpoints (and the stale ``metrics.json``).

    Args:
        run_dir: the run directory (``checkpoints/`` inside).
        run_id: this process's new run id (:func:`new_run_id`).
        resume: ``trainer.resume``.
        overwrite: ``trainer.overwrite``.
    """
    run_dir = Path(run_dir)
    ckpt_dir = run_dir / "checkpoints"
    info = read_run_json(run_dir) or {}
    existing = info.get("run_id") if isinstance(info.get("run_id"), str) else None
    if resume:
        if existing is not None:
            return existing
        if has_checkpoints(ckpt_dir):
            found = load_latest(ckpt_dir)
            if found is not None and checkpoint_run_id(found[0]) is not None:
                return checkpoint_run_id(found[0])  # type: ignore[return-value]
        return run_id
    if existing == run_id or not has_checkpoints(ckpt_dir):
        return run_id
    owner = f"run {existing}" if existing else "an earlier run"
    if not overwrite:
        raise RunDirOwnedError(
            f"{run_dir} holds checkpoints of {owner} ({len(list_checkpoints(ckpt_dir))} "
            "file(s)). Continue it with trainer.resume=true, replace it with "
            "trainer.overwrite=true, or choose another directory with hydra.run.dir=..."
        )
    removed = [*list_checkpoints(ckpt_dir), ckpt_dir / LATEST, run_dir / "metrics.json"]
    for path in removed:
        path.unlink(missing_ok=True)
    clean_stale_temporaries(ckpt_dir)
    log.warning("trainer.overwrite=true: removed the checkpoints of %s in %s.", owner, run_dir)
    return run_id
