"""Process-level performance settings."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys
from collections.abc import Callable

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_INT_MAX = 2**31 - 1  # mallopt takes a C int: larger values wrap around
_tuned = False


def _glibc_function(name: str) -> Callable[..., int] | None:
    """The C library's function ``name`` on Linux (``None`` elsewhere or where missing)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return getattr(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6"), name)
    except (OSError, AttributeError):
        return None


def tune_malloc(trim_threshold: int = _INT_MAX) -> bool:
    """Make glibc reuse freed memory for large tensors instead of fresh ``mmap`` calls.

    By default glibc serves every allocation above its mmap threshold (at most 32 MiB,
    however it is set) with a new ``mmap`` and unmaps it on free, so each large
    activation tensor costs a page fault per 4 KiB page on first touch: with NeRF's
    per-point tensors (hundreds of MB each) that churn is a large share of the CPU time
    (system time), and it slows every kernel that writes a fresh output. Setting
    ``M_MMAP_MAX`` to 0 serves all allocations from the heap, and a high trim threshold
    keeps freed memory there for reuse. Peak memory is unchanged; the process holds on
    to its peak after it falls. Call it before the first large allocation. A no-op
    (returning False) off glibc.
    """
    global _tuned
    if not 0 <= trim_threshold <= _INT_MAX:
        raise ValueError(f"trim_threshold must be in [0, {_INT_MAX}]; got {trim_threshold!r}.")
    if _tuned:
        return True
    mallopt = _glibc_function("mallopt")
    if mallopt is None:
        return False
    ok_mmap = mallopt(_M_MMAP_MAX, 0) == 1
    ok_trim = mallopt(_M_TRIM_THRESHOLD, trim_threshold) == 1
    _tuned = ok_mmap and ok_trim
    if not _tuned:
        log.debug("mallopt tuning not applied (mmap_max=%s, trim=%s)", ok_mmap, ok_trim)
    return _tuned


def release_free_memory() -> bool:
    """Return the heap's free memory to the system (glibc ``malloc_trim(0)``).

    With :func:`tune_malloc` the process keeps freed memory for reuse; a run that starts
    after another in the same process (a local Hydra multirun) calls this first, so its
    resident memory, and the peak measured from there, are its own. False off glibc.
    """
    malloc_trim = _glibc_function("malloc_trim")
    return malloc_trim is not None and bool(malloc_trim(0))
