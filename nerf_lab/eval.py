"""Re-evaluate a run from its own saved config: ``python -m nerf_lab.eval run_dir=DIR``.

Options (``key=value``): ``checkpoint=FILE`` (default: the latest), ``device=auto``,
``chunk_size=N``, ``eval_max_views=N``. Prints the metrics as JSON and writes them to
``DIR/eval.json``.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from nerf_lab.checkpoint import write_json_atomic
from nerf_lab.cli import run_command

ALLOWED = {"run_dir", "checkpoint", "device", "chunk_size", "eval_max_views"}


def evaluate_run(args: dict[str, Any]) -> dict[str, Any]:
    """Evaluate the run named by ``args`` on its held-out views; write ``eval.json``."""
    from nerf_lab.evaluation import evaluate_views
    from nerf_lab.runs import load_run

    run = load_run(args["run_dir"], args.get("checkpoint"), args.get("device"),
                   args.get("chunk_size"))  # fmt: skip
    scene = run.scene()
    name = "test" if len(scene.splits.get("test", [])) else "train"
    cams, images, _ = scene.split(name)
    n = min(len(cams), args.get("eval_max_views") or len(cams))
    h, w = run.image_hw
    metrics, _ = evaluate_views(
        run.renderer, run.grid_raysampler(h, w), cams[list(range(n))].to(run.device),
        images[:n].to(run.device),
    )  # fmt: skip
    metrics["checkpoint"] = str(run.checkpoint)
    metrics["iterations"] = run.step
    write_json_atomic(run.run_dir / "eval.json", metrics)
    return metrics


def main(argv: list[str] | None = None) -> int:
    """Console entry point; exits 0 on success, 1 with a one-line error otherwise."""
    return run_command(
        argv, ALLOWED, __doc__ or "", evaluate_run, lambda m: json.dumps(m, indent=2)
    )


def cli() -> None:
    """``nerf-lab-eval``: :func:`main` with its exit status."""
    sys.exit(main())


if __name__ == "__main__":
    cli()
