"""Re-evaluate a run from its own saved config: ``python -m nerf_lab.eval run_dir=DIR``.

Options (``key=value``): ``checkpoint=FILE`` (default: the latest), ``device=auto``,
``chunk_size=N``, ``eval_max_views=N``. Prints the metrics as JSON and writes them to
``DIR/eval.json``.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

from omegaconf import OmegaConf

from nerf_lab.checkpoint import write_json_atomic

ALLOWED = {"run_dir", "checkpoint", "device", "chunk_size", "eval_max_views"}


def parse_args(argv: list[str], allowed: set[str], doc: str) -> dict[str, Any]:
    """``key=value`` arguments (Hydra's override syntax, without composition).

    ``--help``/``-h`` prints ``doc`` and exits 0; a bad argument exits 2 with a message.
    """
    if any(a in ("-h", "--help") for a in argv):
        print(doc.strip())
        raise SystemExit(0)
    bad = [a for a in argv if "=" not in a]
    if bad:
        print(f"Arguments must be key=value; got {bad}. Allowed keys: {sorted(allowed)}",
              file=sys.stderr)  # fmt: skip
        raise SystemExit(2)
    args = OmegaConf.to_container(OmegaConf.from_dotlist(argv))
    unknown = sorted(set(args) - allowed)
    if unknown:
        print(f"Unknown argument(s) {unknown}. Allowed keys: {sorted(allowed)}", file=sys.stderr)
        raise SystemExit(2)
    if "run_dir" not in args:
        print("Missing run_dir=DIR (a finished or interrupted training run).", file=sys.stderr)
        raise SystemExit(2)
    return args


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
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s] %(message)s")
    args = parse_args(sys.argv[1:] if argv is None else argv, ALLOWED, __doc__ or "")
    try:
        metrics = evaluate_run(args)
    except (ValueError, OSError) as e:
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print(json.dumps(metrics, indent=2))
    return 0


def cli() -> None:
    """``nerf-lab-eval``: :func:`main` with its exit status."""
    sys.exit(main())


if __name__ == "__main__":
    cli()
