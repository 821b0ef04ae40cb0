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

**Render shortcuts** (``nerf_lab.render_shortcuts``: ray skipping, early ray termination).
With ``--render-run`` the trained run's frame (a turntable camera, ``--render-size`` on
the shorter side) is rendered with the shortcuts and without them (the full render), and
``render_trained`` reports for each the fastest of ``--renders`` renders: wall seconds,
CPU seconds of the process (``time.process_time()``: all threads, so up to ``threads`` x
the wall time, and less sensitive to other processes on the machine), the field's and the
resampler's share of the wall time, and the points at which the field was evaluated; then
the largest pixel difference between the two frames and the held-out PSNR of both on the
first ``--psnr-views`` test views (default 3; 0: none) at the data's image size. The
shortcuts are the run's ``raysampler.render_shortcuts`` (as its renders use them), else
``RenderShortcuts()``'s defaults; ``--termination-threshold`` and ``--segment-size``
override them. ``--render-only`` skips the training benchmark of the overrides;
``--threads N`` sets torch's CPU threads (with 2 threads on a loaded machine, waiting
threads spin and inflate the CPU seconds; 1 thread does not)::

    python scripts/bench.py --render-only --render-run DIR --render-size 256 --renders 3

This is a benchmark, not a test: nothing here asserts on time.
"""

from __future__ import annotations

import argparse
import json
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
from nerf_lab.evaluation import evaluate_views
from nerf_lab.memory import peak_rss_mb
from nerf_lab.proposal import ProposalResampler
from nerf_lab.render_shortcuts import RenderShortcuts
from nerf_lab.runs import LoadedRun, load_run


def time_renders(render: Any, cameras: Any, image_hw: tuple[int, int], size: int, n: int,
                 device: torch.device) -> float | None:  # fmt: skip
    """Fastest of ``n`` full renders ``render(cameras, scale)`` at ``size`` pixels."""
    return profile_renders(render, cameras, image_hw, size, n, device)[0]["wall_s"]


class CallTimer:
    """Wall time and evaluated points of a module's calls (forward hooks)."""

    def __init__(self, module: torch.nn.Module | None, count_points: bool = False) -> None:
        self.seconds = 0.0
        self.points = 0
        self._t0 = 0.0
        self._handles = []
        if module is not None:
            self._handles = [
                module.register_forward_pre_hook(self._pre, with_kwargs=True),
                module.register_forward_hook(self._post),
            ]
        self.count_points = count_points

    def _pre(self, module: Any, args: Any, kwargs: Any) -> None:
        self._t0 = time.perf_counter()
        if self.count_points:
            bundle = kwargs.get("ray_bundle", args[0] if args else None)
            self.points += int(bundle.lengths.numel())

    def _post(self, module: Any, args: Any, output: Any) -> None:
        self.seconds += time.perf_counter() - self._t0

    def reset(self) -> None:
        self.seconds, self.points = 0.0, 0

    def remove(self) -> None:
        for h in self._handles:
            h.remove()


def profile_renders(
    render: Any,
    cameras: Any,
    image_hw: tuple[int, int],
    size: int,
    n: int,
    device: torch.device,
    field: torch.nn.Module | None = None,
    resampler: torch.nn.Module | None = None,
) -> tuple[dict[str, Any], Any]:
    """The fastest of ``n`` renders ``render(cameras, scale)`` at ``size`` pixels: wall and
    process CPU seconds, the field's and the resampler's wall seconds and the field's
    points; and that render's output."""
    scale = size / min(image_hw)
    field_t, sampler_t = CallTimer(field, count_points=True), CallTimer(resampler)
    best: dict[str, Any] | None = None
    out = None
    try:
        for _ in range(n):
            field_t.reset()
            sampler_t.reset()
            t0, c0 = time.perf_counter(), time.process_time()
            result = render(cameras, scale)
            if device.type == "cuda":
                torch.cuda.synchronize()
            stats = {
                "wall_s": round(time.perf_counter() - t0, 4),
                "cpu_s": round(time.process_time() - c0, 4),
                "field_s": round(field_t.seconds, 4),
                "resampler_s": round(sampler_t.seconds, 4),
                "field_points": field_t.points,
            }
            if best is None or stats["wall_s"] < best["wall_s"]:
                best, out = stats, result
    finally:
        field_t.remove()
        sampler_t.remove()
    assert best is not None
    return best, out


def bench_shortcuts(run: LoadedRun, args: argparse.Namespace) -> dict[str, Any]:
    """``render_trained``: the run's frame and held-out PSNR with and without shortcuts."""
    configured = run.renderer.shortcuts
    base = configured if configured is not None else RenderShortcuts()
    shortcuts = RenderShortcuts(
        skip_inactive_rays=base.skip_inactive_rays,
        termination_threshold=(
            base.termination_threshold
            if args.termination_threshold is None
            else args.termination_threshold
        ),
        segment_size=base.segment_size if args.segment_size is None else args.segment_size,
    )
    settings = trainer_settings(run.config.trainer)
    cams = turntable_cameras(1, run.camera_like(), settings.turntable_distance)
    field, resampler = run.renderer.field, run.renderer.resampler
    skip = None
    if args.proposal_skip_threshold is not None:
        if not isinstance(resampler, ProposalResampler):
            raise ValueError("--proposal-skip-threshold: the run has no ProposalResampler")
        skip = (resampler.skip_threshold, args.proposal_skip_threshold)
    result: dict[str, Any] = {
        "run": str(run.run_dir),
        "step": run.step,
        "chunk_size": run.renderer.chunk_size,
        "field": type(field).__name__,
        "resampler": None if resampler is None else type(resampler).__name__,
        "shortcuts": {
            "skip_inactive_rays": shortcuts.skip_inactive_rays,
            "termination_threshold": shortcuts.termination_threshold,
            "segment_size": shortcuts.segment_size,
        },
    }
    if isinstance(resampler, ProposalResampler):
        result["shortcuts"]["proposal_skip_threshold"] = (
            resampler.skip_threshold if skip is None else skip[1]
        )

    def use(value: RenderShortcuts | None) -> None:
        run.renderer.shortcuts = value
        if skip is not None and isinstance(resampler, ProposalResampler):
            resampler.skip_threshold = skip[1] if value is not None else skip[0]

    frames = {}
    for name, value in (("with", shortcuts), ("without", None)):
        use(value)
        stats, frames[name] = profile_renders(
            run.render_views, cams, run.image_hw, args.render_size, args.renders, run.device,
            field, resampler,
        )  # fmt: skip
        result[name] = stats
    result["speedup_wall"] = round(result["without"]["wall_s"] / result["with"]["wall_s"], 2)
    result["speedup_cpu"] = round(result["without"]["cpu_s"] / result["with"]["cpu_s"], 2)
    diff = (frames["with"].rgb[..., :3] - frames["without"].rgb[..., :3]).abs()
    result["frame_max_abs_diff"] = float(diff.max())
    result["frame_mean_abs_diff"] = float(diff.mean())
    if args.psnr_views > 0:
        scene = run.scene()
        split = "test" if len(scene.splits.get("test", [])) else "train"
        test_cams, images, _ = scene.split(split)
        n = min(len(test_cams), args.psnr_views)
        h, w = run.image_hw
        for name, value in (("with", shortcuts), ("without", None)):
            use(value)
            metrics, _ = evaluate_views(
                run.renderer, run.grid_raysampler(h, w), test_cams[list(range(n))].to(run.device),
                images[:n].to(run.device),
            )  # fmt: skip
            result[f"psnr_{name}"] = round(metrics["eval/psnr"], 4)
        result["psnr_views"] = n
        result["psnr_diff"] = round(result["psnr_with"] - result["psnr_without"], 4)
    use(None)
    run.renderer.shortcuts = configured
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--render-size", type=int, default=128)
    parser.add_argument("--renders", type=int, default=2, help="0: no render timing")
    parser.add_argument("--render-run", default=None, help="a trained run directory")
    parser.add_argument(
        "--render-only",
        action="store_true",
        help="only the --render-run renders (no training benchmark)",
    )
    parser.add_argument(
        "--psnr-views",
        type=int,
        default=3,
        help="held-out views for the PSNR with/without shortcuts (0: none)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch CPU threads (0: torch's default); 1 gives CPU times "
        "that other processes on the machine inflate the least",
    )
    parser.add_argument(
        "--chunk-size",
        type=int,
        default=None,
        help="rays per render chunk (default: the run's trainer.chunk_size)",
    )
    parser.add_argument("--termination-threshold", type=float, default=None)
    parser.add_argument("--segment-size", type=int, default=None)
    parser.add_argument(
        "--proposal-skip-threshold",
        type=float,
        default=None,
        help="set a ProposalResampler's skip_threshold for the renders with shortcuts",
    )
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. experiment=tutorial")
    args = parser.parse_args()
    for name, low in {"warmup": 0, "iters": 1, "renders": 0, "render_size": 1}.items():
        if getattr(args, name) < low:
            parser.error(f"--{name.replace('_', '-')} must be >= {low}; got {getattr(args, name)}")
    if (args.render_only or args.render_run) and args.renders < 1:
        parser.error("--render-run/--render-only time renders: --renders must be >= 1")

    if args.render_only and args.render_run is None:
        parser.error("--render-only needs --render-run DIR")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    result: dict[str, Any] = {} if args.render_only else bench_training(args)
    if args.render_run is not None:
        run = load_run(args.render_run, chunk_size=args.chunk_size)
        trained = bench_shortcuts(run, args)
        result["render_size"] = args.render_size
        result["render_trained_s"] = trained["with"]["wall_s"]
        result["render_trained"] = trained
        result.setdefault("device", str(run.device))
        result.setdefault("threads", torch.get_num_threads())
    result["peak_rss_mb"] = peak_rss_mb()  # bench never resets the peak: the whole process's
    result["torch"] = torch.__version__
    print(json.dumps(result))


def bench_training(args: argparse.Namespace) -> dict[str, Any]:
    """Training steps and a render of the composed config (the overrides)."""
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
        render_s = (
            time_renders(
                trainer.render_views,
                cams,
                trainer.image_hw,
                args.render_size,
                args.renders,
                trainer.device,
            )
            if args.renders > 0
            else None
        )

    iter_s = statistics.median(times)
    return {
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
    }


if __name__ == "__main__":
    sys.exit(main())
