"""Atomic writes of user-facing files (renders, videos, meshes) with the user's umask.

:func:`nerf_lab.checkpoint.atomic_write_bytes` writes through :func:`tempfile.mkstemp`,
which creates its temporary file with mode ``0o600`` whatever the umask, and
``os.replace`` keeps that mode: a video or mesh written that way is unreadable by the
user's group even where ``umask 022`` (``0o644``) or ``002`` (``0o664``) is expected.
:func:`atomic_write_public` sets the temporary file's mode to ``0o666 & ~umask`` (what
``open(path, "w")`` would give) *before* it is moved into place, so the file never
appears under its final name with other permissions.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from nerf_lab.checkpoint import atomic_write_bytes

_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process umask, read without changing it where possible.

    Linux (>= 4.7) reports it in ``/proc/self/status``; elsewhere it is read by setting
    and restoring it (under a lock, so threads of this module do not race).
    """
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def public_file_mode() -> int:
    """``0o666 & ~umask``: the mode a plain ``open(path, "w")`` would create a file with."""
    return 0o666 & ~current_umask()


def atomic_write_public(path: str | Path, write: Callable[[BinaryIO], object]) -> Path:
    """Write ``path`` atomically with ``write(fileobj)``, mode ``0o666 & ~umask``.

    Same guarantees as :func:`nerf_lab.checkpoint.atomic_write_bytes` (temporary file in the
    same folder, fsync, ``os.replace``, folder fsync, temporary removed on error); the
    temporary file's mode is set before anything is written to it.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    path = Path(path)
    mode = public_file_mode()

    def _write(f: BinaryIO) -> None:
        os.fchmod(f.fileno(), mode)
        write(f)

    atomic_write_bytes(path, _write)
    return path


def atomic_write_data(path: str | Path, data: bytes) -> Path:
    """:func:`atomic_write_public` of a ``bytes`` object."""
    return atomic_write_public(path, lambda f: f.write(data))
