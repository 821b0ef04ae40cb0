"""Re-render a run's turntable from its own saved config:
``python -m nerf_lab.render run_dir=DIR``.

Options (``key=value``): ``checkpoint=FILE``, ``frames=N`` (default: the run's
``trainer.turntable_frames``), ``scale=S`` (relative to the data's image size),
``distance=D``, ``device=auto``, ``chunk_size=N``. Writes ``turntable.gif`` and
``turntable_grid.png`` into ``DIR/renders/``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from nerf_lab.cli import run_command

ALLOWED = {"run_dir", "checkpoint", "frames", "scale", "distance", "device", "chunk_size"}


def render_run(args: dict[str, Any]) -> Path:
    """Render the turntable of the run named by ``args``; returns the GIF's path."""
    from nerf_lab.camera_paths import turntable_cameras
    from nerf_lab.config import trainer_settings
    from nerf_lab.runs import load_run
    from nerf_lab.visualize import write_turntable

    run = load_run(args["run_dir"], args.get("checkpoint"), args.get("device"),
                   args.get("chunk_size"))  # fmt: skip
    s = trainer_settings(run.config.trainer)
    frames = args.get("frames", s.turntable_frames)
    if not isinstance(frames, int) or isinstance(frames, bool) or frames < 1:
        raise ValueError(f"frames={frames!r}: must be an integer >= 1.")
    cams = turntable_cameras(frames, run.camera_like(), args.get("distance", s.turntable_distance))
    out = run.render_views(cams, args.get("scale", s.turntable_scale))
    return write_turntable(out.rgb[..., :3].clamp(0, 1), run.run_dir / "renders")


def main(argv: list[str] | None = None) -> int:
    """Console entry point; exits 0 on success, 1 with a one-line error otherwise."""
    return run_command(argv, ALLOWED, __doc__ or "", render_run, str)


def cli() -> None:
    """``nerf-lab-render``: :func:`main` with its exit status."""
    sys.exit(main())


if __name__ == "__main__":
    cli()
