"""Re-render a run's turntable from its own saved config:
``python -m nerf_lab.render run_dir=DIR``.

Options (``key=value``): ``checkpoint=FILE``, ``frames=N`` (default: the run's
``trainer.turntable_frames``), ``scale=S`` (relative to the data's image size),
``distance=D``, ``device=auto``, ``chunk_size=N``. Writes ``DIR/renders/turntable.gif``
and ``turntable_grid.png``.
"""

from __future__ import annotations

import logging
import sys

from nerf_lab.eval import parse_args

ALLOWED = {"run_dir", "checkpoint", "frames", "scale", "distance", "device", "chunk_size"}


def main(argv: list[str] | None = None) -> str:
    from nerf_lab.train import load_run

    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s] %(message)s")
    args = parse_args(sys.argv[1:] if argv is None else argv, ALLOWED)
    trainer, _ = load_run(
        args["run_dir"],
        args.get("checkpoint"),
        device=args.get("device"),
        chunk_size=args.get("chunk_size"),
        turntable_frames=args.get("frames"),
        turntable_scale=args.get("scale"),
        turntable_distance=args.get("distance"),
    )
    if trainer.s.turntable_frames < 1:
        raise SystemExit("frames must be >= 1.")
    gif = trainer.turntable()
    print(gif)
    return str(gif)


if __name__ == "__main__":
    main()
