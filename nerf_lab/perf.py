"""Process-level performance settings."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_tuned = False


def tune_malloc(mmap_threshold: int = 1 << 30, trim_threshold: int = 1 << 34) -> bool:
    """Make glibc reuse freed memory for large tensors instead of fresh ``mmap`` calls.

    By default glibc serves every allocation above ~32 MiB with a new ``mmap`` and
    returns it to the OS on free, so each large activation tensor costs page faults on
    first touch: with NeRF's big per-point tensors, that allocation churn is a large
    share of the CPU time (system time). Raising the mmap and trim thresholds keeps
    the memory in the heap for reuse. Peak memory is unchanged; the process may hold
    on to its peak after it falls. A no-op (returning False) off glibc.
    """
    global _tuned
    if _tuned:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    ok_mmap = (
        mallopt(_M_MMAP_THRESHOLD, mmap_threshold) == 1 or mallopt(_M_MMAP_THRESHOLD, 1 << 25) == 1
    )
    ok_trim = mallopt(_M_TRIM_THRESHOLD, trim_threshold) == 1
    _tuned = ok_mmap and ok_trim
    if not _tuned:
        log.debug("mallopt tuning not applied (mmap=%s, trim=%s)", ok_mmap, ok_trim)
    return _tuned
