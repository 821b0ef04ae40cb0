"""A run directory belongs to one process at a time; default run names never collide.

* :class:`RunDirLock` takes an exclusive ``flock`` on ``<run_dir>/.lock`` for a run's
  lifetime and writes the holder's PID and host into it. A second process (or a second
  lock in the same process) gets :class:`RunDirLockedError` naming the holder. The kernel
  drops the lock when the holder exits, however it exits (``SIGKILL`` included), so a
  stale ``.lock`` file never blocks a later run. The file itself is never deleted:
  deleting it would let two processes lock two different files of the same name.
* :func:`unique_run_name` and the ``nerf_lab.uid`` resolver give run directories that
  differ even for runs started in the same second (on one host or many sharing a disk).
* :func:`absolute_paths` makes a config's data paths absolute before it is saved, so a run
  directory can be evaluated from any working directory.

``flock`` locks are advisory and local-host exact; on NFS, Linux emulates them with
byte-range locks, which work between hosts where the server supports locking.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import fcntl
import os
import secrets
import socket
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

LOCK_NAME = ".lock"
UID_RESOLVER = "nerf_lab.uid"
#: The run directory pattern proposed for ``conf/config.yaml``'s ``hydra.run.dir``.
RUN_DIR_PATTERN = "outputs/${name}/${now:%Y-%m-%d_%H-%M-%S}_${nerf_lab.uid:}"

_PROCESS_UID: str | None = None


class RunDirLockedError(RuntimeError):
    """Another process (or another lock in this one) holds the run directory."""

    def __init__(self, run_dir: Path, pid: int | None, host: str | None) -> None:
        self.run_dir = run_dir
        self.pid = pid
        self.host = host
        holder = f"PID {pid}" if pid is not None else "a process that has not written its PID"
        if host:
            holder += f" on {host}"
        super().__init__(
            f"Run directory {str(run_dir)!r} is in use by {holder} (lock file "
            f"{run_dir / LOCK_NAME}). Wait for it to finish, stop it, or choose another "
            "directory with hydra.run.dir=..."
        )


def read_lock_holder(run_dir: str | Path) -> tuple[int | None, str | None]:
    """The ``(pid, host)`` last written into ``run_dir/.lock`` (``None`` where unknown).

    The holder may have exited: only a failed :class:`RunDirLock` says the lock is held.
    """
    try:
        text = (Path(run_dir) / LOCK_NAME).read_text(errors="replace")
    except OSError:
        return None, None
    fields = dict(line.split("=", 1) for line in text.splitlines() if "=" in line and line.strip())
    pid_text = fields.get("pid", "").strip()
    pid = int(pid_text) if pid_text.isdigit() else None
    host = fields.get("host", "").strip() or None
    return pid, host


class RunDirLock:
    """Exclusive lock on a run directory, held from ``__enter__`` (or :meth:`acquire`) to
    ``__exit__`` (or :meth:`release`).

    Args:
        run_dir: the run directory (created if needed).
        wait_for_holder_s: when the lock is taken, how long to wait for the holder to have
            written its PID (it writes right after locking) before reporting it unknown.

    Raises:
        RunDirLockedError: from ``__enter__`` / :meth:`acquire` when the lock is held.

    The lock's file descriptor is not inherited by ``exec``-ed children (Python opens it
    non-inheritable); a ``fork``-ed child shares it, so the lock lasts until both exit.
    """

    def __init__(self, run_dir: str | Path, wait_for_holder_s: float = 1.0) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self.wait_for_holder_s = wait_for_holder_s
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> RunDirLock:
        if self._fd is not None:
            raise RuntimeError(f"{self.path} is already held by this RunDirLock.")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise self._locked_error() from None
        try:
            info = f"pid={os.getpid()}\nhost={socket.gethostname()}\nsince={time.time():.3f}\n"
            os.ftruncate(fd, 0)
            os.pwrite(fd, info.encode(), 0)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return self

    def _locked_error(self) -> RunDirLockedError:
        deadline = time.monotonic() + self.wait_for_holder_s
        pid, host = read_lock_holder(self.run_dir)
        while pid is None and time.monotonic() < deadline:
            time.sleep(0.02)
            pid, host = read_lock_holder(self.run_dir)
        return RunDirLockedError(self.run_dir, pid, host)

    def release(self) -> None:
        """Release the lock (the file stays; its contents are cleared)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def __enter__(self) -> RunDirLock:
        return self.acquire()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


# ----------------------------------------------------------------------------- names


def new_uid(n_bytes: int = 4) -> str:
    """A random hex id (``2 * n_bytes`` characters) from the OS's CSPRNG."""
    return secrets.token_hex(n_bytes)


def process_uid() -> str:
    """This process's run id: random, drawn once, the same at every call."""
    global _PROCESS_UID
    if _PROCESS_UID is None:
        _PROCESS_UID = new_uid()
    return _PROCESS_UID


def unique_run_name(now: _dt.datetime | None = None, uid: str | None = None) -> str:
    """``YYYY-mm-dd_HH-MM-SS_<8 hex>``: sorts by start time, unique within a second.

    Args:
        now: the start time (default: now, local time as Hydra's ``${now:...}``).
        uid: the suffix (default: a fresh random one; 32 bits make a collision between two
            runs started in the same second about one in four billion).
    """
    now = now or _dt.datetime.now()
    return f"{now:%Y-%m-%d_%H-%M-%S}_{uid or new_uid()}"


def _uid_resolver(key: str | None = None) -> str:
    return process_uid()


def register_resolvers() -> None:
    """Register ``${nerf_lab.uid:}`` with OmegaConf (idempotent).

    It returns :func:`process_uid`: one random id per process, the same each time Hydra
    resolves ``hydra.run.dir`` (which it does more than once). Use it as
    ``hydra.run.dir: outputs/${name}/${now:%Y-%m-%d_%H-%M-%S}_${nerf_lab.uid:}``
    (:data:`RUN_DIR_PATTERN`). Must run before Hydra composes (i.e. at import of the entry
    point, next to the other resolvers).
    """
    from omegaconf import OmegaConf

    OmegaConf.register_new_resolver(UID_RESOLVER, _uid_resolver, replace=True)


def absolute_paths(
    config: Mapping[str, Any],
    keys: Sequence[str] = ("data.path", "data.data_dir"),
    base: str | Path | None = None,
) -> dict[str, Any]:
    """A copy of ``config`` (plain nested dicts) with the dotted ``keys`` made absolute.

    ``~`` is expanded; relative paths are taken relative to ``base`` (default: the current
    working directory, where Hydra 1.3 leaves the process). Missing keys, ``None`` and
    ``"???"`` are left alone. Symlinks are not resolved (the user's path is kept).

    Args:
        config: the resolved config as plain containers.
        keys: dotted keys holding paths.
        base: the directory relative paths are relative to.
    """
    import copy

    out: dict[str, Any] = copy.deepcopy(dict(config))
    root = Path(base) if base is not None else Path.cwd()
    for key in keys:
        *parents, leaf = key.split(".")
        node: Any = out
        for p in parents:
            node = node.get(p) if isinstance(node, dict) else None
        if not isinstance(node, dict):
            continue
        value = node.get(leaf)
        if not isinstance(value, str) or value in ("", "???"):
            continue
        path = Path(value).expanduser()
        node[leaf] = os.path.normpath(path if path.is_absolute() else root / path)
    return out
