"""Benchmark training and rendering of a config: ``python scripts/bench.py [overrides...]``.

Runs warm-up iterations, then timed training iterations of the composed config (the
same components ``python -m nerf_lab.train`` builds), then times full-frame renders.
Prints one JSON line: iter_s_median, rays_per_s, points_per_s, peak_rss_mb, render_s,
device, and the settings measured. Extra options (not Hydra keys, put them first):
``--warmup N`` (default 2), ``--iters N`` (default 5), ``--render-size S`` (default 128),
``--renders N`` (default 2), ``--render-run DIR``: also time full-frame renders of the
trained model in a run directory (``render_trained_s``; rendering shortcuts such as
``model.render_color_threshold`` only pay off on a trained field, not on the freshly
initialised one the main timing renders). ``peak_rss_mb`` is the whole process's peak,
``--render-run`` renders included.

This is a benchmark, not a test: nothing here asserts on time.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from hydra import compose, initialize_config_dir

from nerf_lab.build import build_trainer
from nerf_lab.camera_paths import turntable_cameras
from nerf_lab.config import CONF_DIR, trainer_settings
from nerf_lab.runs import load_run


def time_renders(render: Any, cameras: Any, image_hw: tuple[int, int], size: int, n: int,
                 device: torch.device) -> float | None:  # fmt: skip
    """Fastest of ``n`` full renders ``render(cameras, scale)`` at ``size`` pixels."""
    scale = size / min(image_hw)
    best = None
    for _ in range(n):
        t0 = time.perf_counter()
        render(cameras, scale)
        if device.type == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        best = dt if best is None else min(best, dt)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--render-size", type=int, default=128)
    parser.add_argument("--renders", type=int, default=2)
    parser.add_argument("--render-run", default=None, help="a trained run directory")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. experiment=tutorial")
    args = parser.parse_args()

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="config", overrides=args.overrides)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = build_trainer(cfg, Path(tmp))
        n_pts = cfg.raysampler.n_pts_per_ray

        times = []
        n_rays = 0.0
        for i in range(args.warmup + args.iters):
            t0 = time.perf_counter()
            stats = trainer.train_step()
            if trainer.device.type == "cuda":
                torch.cuda.synchronize()
            dt = time.perf_counter() - t0
            if i >= args.warmup:
                times.append(dt)
                n_rays = stats["n_rays"]

        cams = trainer.test_views[0][[0]]
        render_s = time_renders(
            trainer.render_views, cams, trainer.image_hw, args.render_size, args.renders,
            trainer.device,
        )  # fmt: skip

    render_trained_s = None
    if args.render_run is not None:
        run = load_run(args.render_run)
        settings = trainer_settings(run.config.trainer)
        cams = turntable_cameras(1, run.camera_like(), settings.turntable_distance)
        render_trained_s = time_renders(run.render_views, cams, run.image_hw, args.render_size,
                                        args.renders, run.device)  # fmt: skip

    iter_s = statistics.median(times)
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = {
        "overrides": args.overrides,
        "device": str(trainer.device)
        + (f" ({torch.cuda.get_device_name()})" if trainer.device.type == "cuda" else ""),
        "threads": torch.get_num_threads(),
        "precision": trainer.s.precision,
        "iter_s_median": round(iter_s, 4),
        "iter_s_all": [round(t, 4) for t in times],
        "rays_per_iter": int(n_rays),
        "rays_per_s": round(n_rays / iter_s, 1),
        "points_per_s": round(n_rays * n_pts / iter_s, 1),
        "render_size": args.render_size,
        "render_s": round(render_s, 4) if render_s is not None else None,
        "render_trained_s": round(render_trained_s, 4) if render_trained_s is not None else None,
        "peak_rss_mb": round(peak_kb / 1024, 1),
        "torch": torch.__version__,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    sys.exit(main())
