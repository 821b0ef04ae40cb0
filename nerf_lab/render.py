"""Render a trained run along a camera path: ``python -m nerf_lab.render run_dir=DIR``.

Options (``key=value``):

* ``path=orbit|spiral|interpolate|file`` (default ``orbit``):
  ``orbit``: a turn about +Y at ``radius`` and ``elevation`` (``elevation=0``: exactly the
  tutorial's turntable); ``spiral``: an orbit whose elevation oscillates by
  ``elevation_amplitude`` degrees and whose radius breathes by 10 %, looping;
  ``interpolate``: a smooth path through the training views ``keyframes=[i,j,...]``
  (default: 4 evenly spaced ones); ``file``: the nerfstudio camera-path JSON ``file=PATH``
  (its size and fps unless given here).
  The cameras are of the run's kind: for a capture (``PerspectiveCameras``) they have the
  first training camera's intrinsics (focal lengths, principal point) scaled to the render
  size; orbits and spirals circle the origin, the centre of a normalised capture, about +Y
  (its mean camera up). A run fitted in NDC (``data=llff data.ndc=true``, forward-facing)
  renders ``spiral`` as the original NeRF's forward-facing spiral in front of its training
  cameras (``radius`` / ``elevation`` do not apply) and refuses ``orbit``.
* ``frames=N`` (default 60), ``fps=F`` (default 25), ``radius=R`` (default: the run's
  ``trainer.turntable_distance``), ``elevation=DEG`` (default 0 for orbit, 15 for spiral),
  ``elevation_amplitude=DEG`` (spiral, default 10).
* Size: ``scale=S`` relative to the data's image size (default: the run's
  ``trainer.turntable_scale``), or ``height=H width=W``.
* ``checkpoint=FILE``, ``device=auto``, ``chunk_size=N``, ``progress=true|false`` (a bar;
  default: on a terminal).

Writes a NEW folder ``DIR/renders/<path>_<time>/`` (never overwriting an earlier one) with
``rgb.gif`` and ``depth.gif`` (and ``rgb.mp4`` / ``depth.mp4`` with imageio-ffmpeg:
``pip install -e '.[video]'``), ``grid.png`` (the frames tiled) and ``camera_path.json``
(the cameras, nerfstudio format: render it again with ``path=file``). Depth colours are
fixed to the run's depth range (Turbo: near dark blue, far dark red). Prints the folder.
Exits 0 on success, 1 with a one-line error, 2 for bad arguments.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from nerf_lab.cli import run_command
from nerf_lab.validate import check_bool, check_choice, check_int, check_number, is_int

PATHS = ("orbit", "spiral", "interpolate", "file")
ALLOWED = {
    "run_dir", "checkpoint", "device", "chunk_size", "path", "frames", "fps", "radius",
    "elevation", "elevation_amplitude", "keyframes", "file", "scale", "height", "width",
    "progress",
}  # fmt: skip


def _int(args: dict[str, Any], key: str, default: int | None) -> int | None:
    v = args.get(key, default)
    return None if v is None else check_int(key, v, style="key")


def _num(args: dict[str, Any], key: str, default: float | None, positive: bool = False) -> Any:
    v = args.get(key, default)
    low = 0 if positive else None
    return None if v is None else check_number(key, v, low, low_open=True, style="key")


def path_cameras(run: Any, args: dict[str, Any]) -> tuple[Any, tuple[int, int] | None, float]:
    """The cameras of the path ``args`` names, the file's image size (``path=file``, else
    None) and the fps.

    Raises:
        ValueError: a bad option, naming it, its value and what is allowed.
    """
    from nerf_lab import camera_paths as cp
    from nerf_lab.config import trainer_settings

    kind = args.get("path", "orbit")
    check_choice("path", kind, PATHS, style="key")
    s = trainer_settings(run.config.trainer)
    frames = _int(args, "frames", 60)
    fps = _num(args, "fps", None, positive=True)
    radius = _num(args, "radius", s.turntable_distance, positive=True)
    if kind != "file" and "file" in args:
        raise ValueError(f"file=... is only used with path=file; got path={kind!r}.")
    if run.ndc is not None and kind in ("orbit", "spiral"):
        return _forward_facing_path(run, args, kind, frames), None, fps or 25.0
    if kind == "orbit":
        cams = cp.orbit(frames, radius, _num(args, "elevation", 0.0), run.camera_like())
    elif kind == "spiral":
        cams = cp.spiral(
            frames, radius, run.camera_like(), elevation_deg=_num(args, "elevation", 15.0),
            elevation_amplitude_deg=_num(args, "elevation_amplitude", 10.0),
        )  # fmt: skip
    elif kind == "interpolate":
        train_cams = run.scene().split("train")[0]
        n = len(train_cams)
        keys = args.get("keyframes")
        if keys is None:
            keys = sorted({round(i * (n - 1) / 3) for i in range(4)}) if n > 1 else [0]
        if (
            not isinstance(keys, list)
            or len(keys) < 2
            or not all(is_int(k) and 0 <= k < n for k in keys)
        ):
            raise ValueError(
                f"keyframes={keys!r}: must be a list of >= 2 training view indices in [0, {n})."
            )
        cams = cp.interpolate(train_cams[keys], max(frames, len(keys)))
    else:
        if "file" not in args:
            raise ValueError("path=file needs file=PATH (a nerfstudio camera-path JSON).")
        if not Path(str(args["file"])).is_file():
            raise ValueError(f"file={args['file']!r}: no such file.")
        loaded = cp.load_camera_path(args["file"])
        return loaded.cameras, loaded.image_size, fps or loaded.fps
    return cams, None, fps or 25.0


def _forward_facing_path(run: Any, args: dict[str, Any], kind: str, frames: int) -> Any:
    """``path=spiral`` of a run fitted in NDC (a forward-facing capture): NeRF's spiral in
    front of the training cameras; ``path=orbit`` is refused (it would look from behind)."""
    from nerf_lab import camera_paths as cp

    if kind == "orbit":
        raise ValueError(
            "path=orbit: this run was fitted in NDC (data.ndc=true, a forward-facing capture), "
            "which only renders cameras looking the way the capture's cameras look; use "
            "path=spiral (NeRF's forward-facing spiral), path=interpolate or path=file."
        )
    ignored = sorted({"radius", "elevation", "elevation_amplitude"} & set(args))
    if ignored:
        raise ValueError(
            f"{', '.join(ignored)}: not used by the forward-facing spiral of an NDC run (its "
            "size comes from the training cameras' spread and the capture's depth bounds)."
        )
    scene = run.scene()
    return cp.forward_facing_spiral(scene.split("train")[0], scene.near, scene.far, frames)


def render_path(args: dict[str, Any]) -> Path:
    """Render the run named by ``args`` along its camera path; returns the new folder."""
    import torch

    from nerf_lab.camera_paths import save_camera_path, to_camera_kind
    from nerf_lab.config import trainer_settings
    from nerf_lab.run_outputs import ViewProgress, depth_range, new_output_dir
    from nerf_lab.runs import load_run
    from nerf_lab.video import colorize_depth, write_image, write_video
    from nerf_lab.visualize import image_grid

    progress = args.get("progress")
    if progress is not None:
        check_bool("progress", progress, style="key")
    run = load_run(args["run_dir"], args.get("checkpoint"), args.get("device"),
                   args.get("chunk_size"))  # fmt: skip
    s = trainer_settings(run.config.trainer)
    cams, file_hw, fps = path_cameras(run, args)
    height, width = _int(args, "height", None), _int(args, "width", None)
    if (height is None) != (width is None):
        raise ValueError(f"height={height!r}, width={width!r}: give both or neither.")
    if height is not None and "scale" in args:
        raise ValueError("give either scale=S or height=H width=W, not both.")
    if height is None and file_hw is not None and "scale" not in args:
        height, width = file_hw
    if height is None:
        scale = _num(args, "scale", s.turntable_scale, positive=True)
        height, width = (max(1, round(n * scale)) for n in run.image_hw)
    cams = to_camera_kind(cams, run.camera_like(), (height, width))
    near, far = depth_range(run.config, run.setup)
    kind = args.get("path", "orbit")
    out_dir = new_output_dir(run.run_dir / "renders", kind)
    sampler = run.grid_raysampler(height, width)
    with ViewProgress(len(cams), f"render {kind}", bar=progress) as bar:
        out = run.renderer.render_views(cams.to(run.device), sampler, None, bar)
    rgb = out.rgb[..., :3].clamp(0, 1).cpu()
    depth = torch.stack(
        [colorize_depth(d, near, far, opacity=a) for d, a in zip(out.depth.cpu(),
                                                                  out.opacity.cpu(), strict=True)]
    )  # fmt: skip
    write_video(out_dir / "rgb", rgb, fps=fps)
    write_video(out_dir / "depth", depth, fps=fps)
    write_image(out_dir / "grid.png", image_grid(rgb))
    save_camera_path(out_dir / "camera_path.json", cams.cpu(), (height, width), fps=fps)
    return out_dir


def main(argv: list[str] | None = None) -> int:
    """Console entry point; exits 0 on success, 1 with a one-line error otherwise."""
    return run_command(argv, ALLOWED, __doc__ or "", render_path, str)


def cli() -> None:
    """``nerf-lab-render``: :func:`main` with its exit status."""
    sys.exit(main())


if __name__ == "__main__":
    cli()
