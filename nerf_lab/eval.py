"""Re-evaluate a run from its own saved config: ``python -m nerf_lab.eval run_dir=DIR``.

Options (``key=value``): ``checkpoint=FILE`` (default: the latest), ``device=auto``,
``chunk_size=N``, ``eval_max_views=N``. Prints the metrics as JSON and writes them to
``DIR/eval.json``.
"""

from __future__ import annotations

import json
import logging
import sys

from omegaconf import OmegaConf

from nerf_lab.trainer import write_json_atomic

ALLOWED = {"run_dir", "checkpoint", "device", "chunk_size", "eval_max_views"}


def parse_args(argv: list[str], allowed: set[str]) -> dict:
    """``key=value`` arguments (Hydra's override syntax, without composition)."""
    bad = [a for a in argv if "=" not in a]
    if bad:
        raise SystemExit(f"Arguments must be key=value; got {bad}. Allowed keys: {sorted(allowed)}")
    args = OmegaConf.to_container(OmegaConf.from_dotlist(argv))
    unknown = sorted(set(args) - allowed)
    if unknown:
        raise SystemExit(f"Unknown argument(s) {unknown}. Allowed keys: {sorted(allowed)}")
    if "run_dir" not in args:
        raise SystemExit("Missing run_dir=DIR (a finished or interrupted training run).")
    return args


def main(argv: list[str] | None = None) -> dict:
    from nerf_lab.train import load_run

    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s] %(message)s")
    args = parse_args(sys.argv[1:] if argv is None else argv, ALLOWED)
    trainer, path = load_run(
        args["run_dir"],
        args.get("checkpoint"),
        device=args.get("device"),
        chunk_size=args.get("chunk_size"),
        eval_max_views=args.get("eval_max_views"),
    )
    metrics = trainer.evaluate()
    metrics["checkpoint"] = str(path)
    metrics["iterations"] = trainer.step
    write_json_atomic(trainer.run_dir / "eval.json", metrics)
    print(json.dumps(metrics, indent=2))
    return metrics


if __name__ == "__main__":
    main()
