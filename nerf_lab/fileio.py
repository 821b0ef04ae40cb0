"""Atomic writes of user-facing files (renders, videos, meshes) with the user's umask.

:func:`nerf_lab.checkpoint.atomic_write_bytes` writes a temporary file in the same folder,
fsyncs it and moves it into place; the file gets mode ``0o666 & ~umask`` (what
``open(path, "w")`` would give, not ``mkstemp``'s ``0o600``), so labmates on a shared
cluster can read renders, metrics and checkpoints under the usual ``umask 022``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from nerf_lab.checkpoint import atomic_write_bytes, current_umask

__all__ = ["atomic_write_data", "atomic_write_public", "current_umask", "public_file_mode"]


def public_file_mode() -> int:
    """``0o666 & ~umask``: the mode a plain ``open(path, "w")`` would create a file with."""
    return 0o666 & ~current_umask()


def atomic_write_public(path: str | Path, write: Callable[[BinaryIO], object]) -> Path:
    """Write ``path`` atomically with ``write(fileobj)`` (mode ``0o666 & ~umask``).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    path = Path(path)
    atomic_write_bytes(path, write)
    return path


def atomic_write_data(path: str | Path, data: bytes) -> Path:
    """:func:`atomic_write_public` of a ``bytes`` object."""
    return atomic_write_public(path, lambda f: f.write(data))
