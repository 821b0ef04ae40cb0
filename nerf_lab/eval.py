"""Re-evaluate a run from its own saved config: ``python -m nerf_lab.eval run_dir=DIR``.

Options (``key=value``): ``checkpoint=FILE`` (default: the latest), ``device=auto``,
``chunk_size=N``, ``eval_max_views=N`` (default 0: every held-out view),
``progress=true|false`` (default: on a terminal).

Writes a new folder ``DIR/eval/step_<N>_<time>/`` with each view's render, target, error
map and depth (PNG), ``views.csv`` (PSNR, SSIM, LPIPS per view) and ``eval.json``, copies
``eval.json`` to ``DIR/eval.json`` and prints the metrics as JSON. Protocol: images in
[0, 1]; SSIM with an 11x11 Gaussian window, sigma 1.5; LPIPS (AlexNet) only when the
``lpips`` package and its weights are installed locally, else ``"lpips": null`` and
``"lpips_reason"``. Exits 0 on success, 1 with a one-line error, 2 for bad arguments.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from nerf_lab.checkpoint import write_json_atomic
from nerf_lab.cli import run_command
from nerf_lab.validate import check_bool, check_int

ALLOWED = {"run_dir", "checkpoint", "device", "chunk_size", "eval_max_views", "progress"}


def evaluate_run(args: dict[str, Any]) -> dict[str, Any]:
    """Evaluate the run named by ``args`` on its held-out views; write the files above."""
    from nerf_lab.evaluation import evaluate_and_save
    from nerf_lab.run_outputs import ViewProgress, depth_range, new_output_dir
    from nerf_lab.runs import load_run

    max_views = check_int("eval_max_views", args.get("eval_max_views", 0), 0, style="key")
    progress = args.get("progress")
    if progress is not None:
        check_bool("progress", progress, style="key")
    run = load_run(args["run_dir"], args.get("checkpoint"), args.get("device"),
                   args.get("chunk_size"))  # fmt: skip
    scene = run.scene()
    name = "test" if len(scene.splits.get("test", [])) else "train"
    cams, images, _ = scene.split(name)
    n = min(len(cams), max_views or len(cams))
    h, w = run.image_hw
    out_dir = new_output_dir(run.run_dir / "eval", f"step_{run.step:08d}")
    with ViewProgress(n, "evaluation", bar=progress) as bar:
        metrics = evaluate_and_save(
            run.renderer, run.grid_raysampler(h, w), cams[list(range(n))].to(run.device),
            images[:n].to(run.device), out_dir, depth_range(run.config, run.setup),
            should_stop=bar,
            extra={"split": name, "checkpoint": str(run.checkpoint), "iterations": run.step},
        )  # fmt: skip
    write_json_atomic(run.run_dir / "eval.json", metrics)
    return metrics


def _show(metrics: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in metrics.items() if k != "protocol"}, indent=2)


def main(argv: list[str] | None = None) -> int:
    """Console entry point; exits 0 on success, 1 with a one-line error otherwise."""
    return run_command(argv, ALLOWED, __doc__ or "", evaluate_run, _show)


def cli() -> None:
    """``nerf-lab-eval``: :func:`main` with its exit status."""
    sys.exit(main())


if __name__ == "__main__":
    cli()
