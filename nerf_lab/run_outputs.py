"""Small helpers shared by the entry points that write a run's outputs (eval, render, export,
the end of training): fresh output folders, the run's depth range, progress over views."""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger("nerf_lab")


def new_output_dir(parent: str | Path, prefix: str) -> Path:
    """Create and return a folder ``parent/<prefix>_<YYYYmmdd-HHMMSS>`` that did not exist.

    Two calls in the same second get ``..._2``, ``..._3``, ...: an earlier output is never
    overwritten (the folder is created with ``exist_ok=False``, so this holds across
    processes too).
    """
    if not prefix or "/" in prefix or "\\" in prefix:
        raise ValueError(f"prefix must be a non-empty name without slashes; got {prefix!r}.")
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    stem = f"{prefix}_{time.strftime('%Y%m%d-%H%M%S')}"
    for i in range(1, 10_000):
        path = parent / (stem if i == 1 else f"{stem}_{i}")
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return path
    raise OSError(f"could not create a new folder {parent / stem}_N (10000 exist).")


def depth_range(config: Mapping[str, Any], setup: Mapping[str, Any]) -> tuple[float, float]:
    """The run's sample depth range ``(near, far)``: the render setup's resolved depths (for
    ``auto``), else the raysampler's ``min_depth`` / ``max_depth``.

    Args:
        config: the run's resolved config (a plain dict or a DictConfig).
        setup: the render setup saved with the run (``setup["depths"]``).
    """
    depths = dict(setup.get("depths") or {})
    rs = config["raysampler"]
    near = float(depths.get("min_depth", rs["min_depth"]))
    far = float(depths.get("max_depth", rs["max_depth"]))
    if not (math.isfinite(near) and math.isfinite(far) and near < far):
        raise ValueError(f"the run's depth range must be finite with near < far; got {near, far}.")
    return near, far


class ViewProgress:
    """Progress over a multi-view render, passed as the renderer's ``should_stop``.

    :meth:`nerf_lab.renderer.Renderer.render_views` calls ``should_stop()`` once before each
    view; each call after the first means one more view is done. Shows a tqdm bar where
    ``bar`` is true (default: on a terminal), else logs at 25 %, 50 %, 75 % (for 4 or more
    views). Use as a context manager; :meth:`close` logs the time taken.

    Args:
        total: number of views.
        desc: what is rendered (bar label and log lines).
        should_stop: an outer stop check (e.g. a signal handler's), forwarded.
        bar: show a tqdm bar; ``None``: only when stderr is a terminal.
    """

    def __init__(
        self,
        total: int,
        desc: str,
        should_stop: Callable[[], bool] | None = None,
        bar: bool | None = None,
    ) -> None:
        from tqdm.auto import tqdm

        self.total, self.desc, self.should_stop = int(total), desc, should_stop
        self.calls = 0
        self.t0 = time.perf_counter()
        show = sys.stderr.isatty() if bar is None else bar
        self.bar = tqdm(total=self.total, desc=desc, disable=not show, leave=False)
        self._logged: set[int] = set()

    @property
    def done(self) -> int:
        """Views finished so far."""
        return max(0, self.calls - 1)

    def __call__(self) -> bool:
        if self.calls:
            self.bar.update(1)
            self._log(self.done)
        self.calls += 1
        return bool(self.should_stop is not None and self.should_stop())

    def _log(self, done: int) -> None:
        if not self.bar.disable or self.total < 4:
            return
        quarter = 4 * done // self.total
        if 0 < quarter < 4 and quarter not in self._logged:
            self._logged.add(quarter)
            log.info("%s: %d/%d views (%.0fs)", self.desc, done, self.total,
                     time.perf_counter() - self.t0)  # fmt: skip

    def close(self, finished: bool = True) -> float:
        """Close the bar; returns (and logs) the seconds since the start."""
        if finished and self.calls:
            self.bar.update(self.total - self.done)
            self.calls = self.total + 1
        self.bar.close()
        seconds = time.perf_counter() - self.t0
        log.info("%s: %d views in %.1fs", self.desc, self.total, seconds)
        return seconds

    def __enter__(self) -> ViewProgress:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self.close(finished=exc_type is None)
