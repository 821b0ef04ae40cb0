"""A job's runtime: how many CPU threads it may use, and its status in ``metrics.json``.

Pure functions (``job_threads``, ``job_info``) plus two thin helpers that the Hydra entry point
calls (``set_job_threads``, ``job_status``). Library code never needs them.

``metrics.json`` is the one place a run's status lives (``nerf-lab-summarize`` reads nothing
else): ``running`` from the moment the job starts, then ``completed`` (the trainer's final
metrics), ``failed`` (``nerf_lab.train.run``: the error) or ``interrupted`` (a signal or an
exit stopped it; a checkpoint was saved when the trainer could). A job killed outright
(``SIGKILL``, a node failure) stays ``running``, with the host and pid that ran it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from nerf_lab.validate import check_choice, check_int, invalid, is_int

log = logging.getLogger("nerf_lab")

STATUSES = ("completed", "failed", "interrupted", "running")

# Launchers by their ``_target_``'s class name.
_JOBLIB = "JoblibLauncher"
_SUBMITIT = ("SlurmLauncher", "LocalLauncher")  # hydra-submitit-launcher


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask; all cores where there is none)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def joblib_parallelism(n_jobs: Any, n_cores: int) -> int:
    """How many jobs joblib runs at once for ``n_jobs`` on ``n_cores`` cores.

    joblib's rule: ``None`` is 1, a negative ``n`` is ``n_cores + 1 + n`` (``-1``: every core;
    at least 1), a positive ``n`` is ``n``; 0 is an error.

    Raises:
        ValueError: ``n_jobs`` is 0 or not an integer.
    """
    if n_jobs is None:
        return 1
    if not is_int(n_jobs) or n_jobs == 0:
        raise ValueError(
            f"hydra.launcher.n_jobs={n_jobs!r}: must be a non-zero integer "
            "(n > 0: n jobs at once; -1: one per core; -2: all cores but one, ...)."
        )
    return n_jobs if n_jobs > 0 else max(n_cores + 1 + n_jobs, 1)


def job_threads(launcher: Mapping[str, Any], n_cores: int) -> int | None:
    """Torch CPU threads for one job of a sweep, so that parallel jobs share the cores.

    * ``hydra/launcher=joblib``: ``P`` jobs at once (``hydra.launcher.n_jobs``, joblib's
      rule) get ``max(1, n_cores // P)`` threads each, so ``P × threads <= n_cores`` whenever
      ``P <= n_cores`` (with more jobs than cores, each gets 1 thread).
    * submitit (``hydra/launcher=slurm|submitit_slurm|submitit_local``): the job's own
      allocation, ``hydra.launcher.cpus_per_task``, when set.
    * Anything else (Hydra's basic launcher runs one job at a time): ``None``, torch's default.

    Args:
        launcher: the composed ``hydra.launcher`` node (any mapping with ``_target_``).
        n_cores: cores available to the sweep (:func:`available_cores`).

    Returns:
        The thread count, or ``None`` to leave torch's default.

    Raises:
        ValueError: ``n_cores < 1``, a bad ``n_jobs`` or a bad ``cpus_per_task``.
    """
    check_int("n_cores", n_cores, style="key")
    target = str(launcher.get("_target_", "") or "")
    name = target.rsplit(".", 1)[-1]
    if name == _JOBLIB:
        parallel = joblib_parallelism(launcher.get("n_jobs", -1), n_cores)
        return max(1, n_cores // parallel)
    if name in _SUBMITIT and "hydra_submitit_launcher" in target:
        cpus = launcher.get("cpus_per_task")
        if cpus is None:
            return None
        if not is_int(cpus) or cpus < 1:
            raise invalid(
                "hydra.launcher.cpus_per_task", cpus, "a positive integer or null", style="key"
            )
        return cpus
    return None


def set_job_threads(launcher: Mapping[str, Any], n_cores: int | None = None) -> int:
    """Apply :func:`job_threads` to torch (where it gives a number); returns the thread count
    torch now uses. ``trainer.num_threads``, when set, is applied later and wins."""
    import torch

    cores = available_cores() if n_cores is None else n_cores
    threads = job_threads(launcher, cores)
    if threads is not None:
        torch.set_num_threads(threads)
    log.info(
        "torch threads: %d (%s on %d cores)",
        torch.get_num_threads(),
        str(launcher.get("_target_", "?")).rsplit(".", 1)[-1],
        cores,
    )
    return torch.get_num_threads()


def job_info(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Where this job runs: host, pid, and SLURM's job/array ids and restart count if any."""
    env = os.environ if environ is None else environ
    info: dict[str, Any] = {"host": socket.gethostname(), "pid": os.getpid()}
    for key, name in (
        ("SLURM_JOB_ID", "slurm_job_id"),
        ("SLURM_ARRAY_JOB_ID", "slurm_array_job_id"),
        ("SLURM_ARRAY_TASK_ID", "slurm_array_task_id"),
        ("SLURM_RESTART_COUNT", "slurm_restart_count"),
    ):
        if env.get(key):
            info[name] = env[key]
    return info


def read_status(run_dir: Path) -> str | None:
    """The ``status`` in ``run_dir/metrics.json`` (``None`` without a readable file)."""
    try:
        return str(json.loads((Path(run_dir) / "metrics.json").read_text()).get("status"))
    except (OSError, ValueError, AttributeError):
        return None


def write_status(run_dir: Path, status: str, **fields: Any) -> None:
    """Replace ``run_dir/metrics.json`` (atomically) by ``{"status": status, **fields}``."""
    from nerf_lab.checkpoint import atomic_write_bytes

    check_choice("status", status, STATUSES, style="key")
    record = {"status": status, **fields}
    data = json.dumps(record, indent=2, default=str).encode()
    atomic_write_bytes(Path(run_dir) / "metrics.json", lambda f: f.write(data))


@contextlib.contextmanager
def job_status(run_dir: Path) -> Iterator[None]:
    """``metrics.json`` says ``running`` while the body runs; if the body is left by an
    exception and nothing wrote a final status, ``interrupted`` (a signal, ``SystemExit``,
    ``KeyboardInterrupt``, :class:`~nerf_lab.trainer.TrainingInterrupted`) or ``failed``.

    Status files are best effort: an unwritable run directory is the trainer's error to report.
    """
    from nerf_lab.signals import TrainingInterrupted

    run_dir = Path(run_dir)
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    with contextlib.suppress(OSError):
        run_dir.mkdir(parents=True, exist_ok=True)
        write_status(run_dir, "running", started=started, **job_info())
    try:
        yield
    except BaseException as e:
        if read_status(run_dir) == "running":
            stopped = isinstance(e, (TrainingInterrupted, KeyboardInterrupt, SystemExit))
            with contextlib.suppress(OSError):
                write_status(
                    run_dir,
                    "interrupted" if stopped else "failed",
                    error=f"{type(e).__name__}: {e}",
                    started=started,
                    **job_info(),
                )
        raise
