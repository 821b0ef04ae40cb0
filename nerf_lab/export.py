"""Export a trained run's geometry: ``python -m nerf_lab.export run_dir=DIR what=mesh``.

``what=``

* ``depth``: each held-out view's rendered depth (view-space z) as a 16-bit PNG
  (``value = round(depth * 1000)``, 0 = no depth; read back with ``imread(...) / 1000``)
  and an exact float32 ``.npy``; pixels with opacity below ``opacity_threshold`` get 0 /
  NaN.
* ``pointcloud``: a coloured PLY point cloud: every held-out view's rendered depth
  unprojected where the opacity is at least ``opacity_threshold``.
* ``mesh``: marching cubes on the field's opacity over ``bbox`` at ``resolution`` per axis
  and iso-level ``level``, vertex colours seen head-on (``color_mode=normal|average|none``),
  as ``mesh.ply`` and ``mesh.obj``. For scenes that know their true surface (``cow``,
  ``procedural``, ``mesh``) also the Chamfer distance and F-scores against it
  (``geometry.json``, and ``geometry/*`` keys merged into ``DIR/eval.json``).

Points and meshes are mapped back to a capture's original frame with the inverse of the
run's ``world_transform`` (when the scene has one), and depths to the capture's units
(divided by the transform's scale; ``depth.json`` says which); geometry metrics are
computed before, in the scene's frame. A run fitted in NDC (``data=llff data.ndc=true``) renders NDC
depths and its field lives in the NDC cube: depths, points and mesh vertices are mapped back
to the world first (the default ``bbox`` 1 is the whole NDC cube; its far side ``Z -> 1`` is
infinitely far: ``bbox=[[-1,-1,-1],[1,1,0.9]]`` leaves the far background out).

Options: ``bbox=B`` (half-size of the cube ``[-B, B]^3``, or ``[[x0,y0,z0],[x1,y1,z1]]``;
default: the run's ``model.bbox`` if its config has one, else 1), ``resolution=128``,
``level=0.5``, ``color_mode=normal``, ``opacity_threshold=0.5``, ``split=test|train``,
``scale=1`` (depth / point cloud render size), ``metrics=true``, ``geometry_points=30000``
(surface samples for the metrics), ``checkpoint=FILE``,
``device=auto``, ``chunk_size=N``, ``progress=true|false``.

Writes a NEW folder ``DIR/exports/<what>_<time>/`` and prints it. Exits 0 on success, 1
with a one-line error (e.g. scikit-image missing: ``pip install -e '.[export]'``), 2 for
bad arguments.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from nerf_lab.cli import run_command
from nerf_lab.ndc import NDCSpace
from nerf_lab.validate import check_bool, check_choice, check_int, check_number, is_number

log = logging.getLogger("nerf_lab")

WHATS = ("depth", "pointcloud", "mesh")
COLOR_MODES = ("normal", "average", "none")
ALLOWED = {
    "run_dir", "checkpoint", "device", "chunk_size", "what", "bbox", "resolution", "level",
    "color_mode", "opacity_threshold", "split", "scale", "metrics", "geometry_points", "progress",
}  # fmt: skip
#: F-score distances (scene units; the scenes with a known surface fit in [-1, 1]^3).
FSCORE_THRESHOLDS = (0.01, 0.02, 0.05)
DEPTH_PNG_SCALE = 1000.0


# ---------------------------------------------------------------------------------------
# Pure helpers
# ---------------------------------------------------------------------------------------
def default_bbox(config: Mapping[str, Any]) -> Any:
    """The run config's ``model.bbox`` when it has one, else 1 (the cube ``[-1, 1]^3``)."""
    model = config.get("model") or {}
    bbox = model.get("bbox") if hasattr(model, "get") else None
    return 1.0 if bbox is None else bbox


def check_bbox(bbox: Any) -> float | list[list[float]]:
    """A half-size ``b > 0`` or ``[[xmin, ymin, zmin], [xmax, ymax, zmax]]`` with min < max.

    Raises:
        ValueError: naming ``bbox``, the value and what is allowed.
    """
    if is_number(bbox):
        if bbox > 0:
            return float(bbox)
    elif isinstance(bbox, list | tuple) and len(bbox) == 2:
        try:
            lo, hi = (torch.as_tensor(list(b), dtype=torch.float64) for b in bbox)
        except (TypeError, ValueError):
            lo = hi = None
        if lo is not None and lo.shape == (3,) and hi.shape == (3,) and bool((lo < hi).all()):
            return [lo.tolist(), hi.tolist()]
    raise ValueError(
        f"bbox={bbox!r}: must be a half-size > 0 or [[xmin, ymin, zmin], [xmax, ymax, zmax]] "
        "with min < max."
    )


def inverse_world_transform(setup: Mapping[str, Any]) -> torch.Tensor | None:
    """``(4, 4)`` float64 map from the scene's (normalised) frame back to the capture's
    original frame: the inverse of ``setup["world_transform"]``; None without one."""
    m = setup.get("world_transform")
    if m is None:
        return None
    return torch.linalg.inv(torch.as_tensor(m, dtype=torch.float64))


def world_scale(setup: Mapping[str, Any]) -> float:
    """The uniform scale ``s`` of the run's ``world_transform`` (capture -> scene units:
    view-space depths in the scene are ``s`` times the capture's); 1 without one."""
    m = setup.get("world_transform")
    if m is None:
        return 1.0
    linear = torch.as_tensor(m, dtype=torch.float64)[:3, :3]
    return float(torch.linalg.det(linear).abs() ** (1.0 / 3.0))


def transform_points(points: torch.Tensor, matrix: torch.Tensor | None) -> torch.Tensor:
    """``points (n, 3)`` mapped by a 4x4 affine ``matrix`` (column vectors); None: as is."""
    if matrix is None:
        return points
    m = matrix.to(torch.float64)
    return (points.double() @ m[:3, :3].T + m[:3, 3]).to(points.dtype)


def true_surface(data: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The true surface ``(verts (V, 3), faces (F, 3))`` of a scene, in the scene's frame,
    for the scenes rendered from a known mesh; None for the others (captures, Blender).

    Args:
        data: the run config's ``data`` node (its ``_target_`` and keys).
    """
    target = str(data.get("_target_", ""))
    if target == "nerf_lab.data.procedural_scene":
        from nerf_lab.data.procedural import torus_mesh

        mesh = torus_mesh()
    elif target == "nerf_lab.data.cow_scene":
        from nerf_lab.data.cow import load_cow_mesh

        mesh = load_cow_mesh(data.get("data_dir"))
    elif target == "nerf_lab.data.mesh_scene":
        from nerf_lab.data.mesh import load_mesh, normalize_mesh

        mesh = load_mesh(Path(str(data["path"])).expanduser())
        if data.get("normalize", True):
            mesh = normalize_mesh(mesh)
    else:
        return None
    return mesh.verts.float(), mesh.faces.long()


def geometry_metrics(
    pred: Any, true: tuple[torch.Tensor, torch.Tensor], n_points: int = 30000
) -> dict[str, float]:
    """``geometry/chamfer``, ``geometry/accuracy``, ``geometry/completeness`` and
    ``geometry/{precision,recall,fscore}@t`` for :data:`FSCORE_THRESHOLDS`, from
    ``n_points`` samples of each surface."""
    from nerf_lab.geometry_metrics import mesh_metrics

    values = mesh_metrics(pred, true, n_points=n_points, threshold=list(FSCORE_THRESHOLDS))
    return {f"geometry/{k}": v for k, v in values.items()}


# ---------------------------------------------------------------------------------------
# Exports (library functions: also called at the end of training)
# ---------------------------------------------------------------------------------------
def export_mesh(
    field: torch.nn.Module,
    out_dir: Path,
    bbox: Any,
    data: Mapping[str, Any] | None = None,
    setup: Mapping[str, Any] | None = None,
    resolution: int = 128,
    level: float = 0.5,
    color_mode: str = "normal",
    chunk: int = 65536,
    metrics: bool = True,
    geometry_points: int = 30000,
) -> dict[str, Any]:
    """Marching-cubes mesh of ``field`` as ``out_dir/mesh.ply`` and ``mesh.obj``; geometry
    metrics against the scene's true surface when ``data`` names one.

    Returns:
        ``{"mesh_ply", "mesh_obj", "n_vertices", "n_faces"}`` and the ``geometry/*``
        metrics (when computed), also written to ``out_dir/geometry.json``.
    """
    from nerf_lab.checkpoint import write_json_atomic
    from nerf_lab.export_utils import extract_mesh, transform_mesh, write_obj, write_ply

    check_choice("color_mode", color_mode, COLOR_MODES, style="key")
    mesh = extract_mesh(
        field, check_bbox(bbox), resolution, level, chunk,
        color_mode=None if color_mode == "none" else color_mode,
    )  # fmt: skip
    out: dict[str, Any] = {"n_vertices": len(mesh.verts), "n_faces": len(mesh.faces)}
    true = true_surface(data) if (metrics and data is not None) else None
    if true is not None:
        out.update(geometry_metrics(mesh, true, geometry_points))
        write_json_atomic(out_dir / "geometry.json", out)
    if (setup or {}).get("ndc") is not None:
        mesh = ndc_mesh_to_world(mesh, NDCSpace.from_state(setup["ndc"]))  # type: ignore[index]
        out.update(n_vertices=len(mesh.verts), n_faces=len(mesh.faces))
    inv = inverse_world_transform(setup or {})
    saved = mesh if inv is None else transform_mesh(mesh, inv)
    out["mesh_ply"] = str(write_ply(out_dir / "mesh.ply", saved.verts, saved.faces,
                                    saved.vertex_colors, saved.vertex_normals))  # fmt: skip
    out["mesh_obj"] = str(write_obj(out_dir / "mesh.obj", saved.verts, saved.faces,
                                    saved.vertex_colors))  # fmt: skip
    return out


def ndc_mesh_to_world(mesh: Any, space: NDCSpace) -> Any:
    """A mesh extracted in a run's NDC cube, mapped to the scene's world frame.

    Vertices go through :meth:`~nerf_lab.ndc.NDCSpace.to_world`; faces touching a vertex at
    ``Z >= 1`` (infinitely far) are dropped, with the vertices only they used; normals are
    recomputed from the mapped faces (the map is projective, not affine; it keeps the faces'
    orientation: its Jacobian has a positive determinant).
    """
    from nerf_lab.export_utils import Mesh, vertex_normals

    verts = space.to_world(mesh.verts.double())
    finite = torch.isfinite(verts).all(-1) & (mesh.verts[:, 2] < 1.0)
    faces = mesh.faces[finite[mesh.faces].all(-1)]
    used = torch.zeros(len(verts), dtype=torch.bool)
    used[faces.reshape(-1)] = True
    new_index = torch.cumsum(used.long(), 0) - 1
    verts = verts[used].float()
    faces = new_index[faces]
    colors = None if mesh.vertex_colors is None else mesh.vertex_colors[used]
    normals = None if mesh.vertex_normals is None else vertex_normals(verts, faces)
    return Mesh(verts, faces, colors, normals)


def _render_split(run: Any, args: dict[str, Any]) -> tuple[Any, Any]:
    from nerf_lab.run_outputs import ViewProgress

    split = args.get("split", "test")
    scene = run.scene()
    if split not in ("test", "train") or not len(scene.splits.get(split, [])):
        raise ValueError(f"split={split!r}: must be 'test' or 'train' and hold views.")
    cams = scene.split(split)[0].to(run.device)
    scale = check_number("scale", args.get("scale", 1.0), 0, low_open=True, style="key")
    h, w = (max(1, round(n * scale)) for n in run.image_hw)
    with ViewProgress(len(cams), f"render {split} views", bar=args.get("progress")) as bar:
        out = run.renderer.render_views(cams, run.grid_raysampler(h, w), None, bar)
    return cams, out


def ndc_depth_points(run: Any, cams: Any, depth: torch.Tensor) -> torch.Tensor:
    """World points ``(n_views, H, W, 3)`` (the scene's frame) of depths rendered by a run
    fitted in NDC: ``depth (n_views, H, W, 1)`` is the NDC ray parameter ``t`` of each pixel's
    NDC ray ``o + t d``, mapped back with :meth:`~nerf_lab.ndc.NDCSpace.to_world` (``t = 1``,
    infinity, gives non-finite points)."""
    space = run.ndc
    h, w = depth.shape[1:3]
    sampler = run.grid_raysampler(h, w)
    out = []
    for i in range(len(cams)):
        rays = sampler(cameras=cams[[i]])
        p = rays.origins[0] + depth[i].to(rays.origins) * rays.directions[0]
        out.append(space.to_world(p.double()).to(depth.dtype))
    return torch.stack(out)


def _threshold(args: dict[str, Any]) -> float:
    t = args.get("opacity_threshold", 0.5)
    return check_number("opacity_threshold", t, 0, 1, high_open=True, style="key")


def export_run(args: dict[str, Any]) -> Path:
    """Export what ``args`` names from the run; returns the new folder."""
    from nerf_lab.checkpoint import write_json_atomic
    from nerf_lab.export_utils import depth_to_pointcloud, write_depth_npy, write_depth_png16
    from nerf_lab.export_utils import write_ply as _write_ply
    from nerf_lab.run_outputs import new_output_dir
    from nerf_lab.runs import load_run

    what = args.get("what")
    check_choice("what", what, WHATS, style="key")
    for key in ("metrics", "progress"):
        if key in args:
            check_bool(key, args[key], style="key")
    threshold = _threshold(args)
    run = load_run(args["run_dir"], args.get("checkpoint"), args.get("device"),
                   args.get("chunk_size"))  # fmt: skip
    if what == "mesh":
        bbox = check_bbox(args.get("bbox", default_bbox(run.config)))
        resolution = check_int("resolution", args.get("resolution", 128), 2, style="key")
        from nerf_lab.export_utils import marching_cubes_available

        ok, reason = marching_cubes_available()
        if not ok:
            raise ValueError(reason)
        points = check_int("geometry_points", args.get("geometry_points", 30000), style="key")
        out_dir = new_output_dir(run.run_dir / "exports", what)
        result = export_mesh(
            run.renderer.field, out_dir, bbox, run.config.data, run.setup, resolution,
            args.get("level", 0.5), args.get("color_mode", "normal"),
            metrics=args.get("metrics", True), geometry_points=points,
        )  # fmt: skip
        geometry = {k: v for k, v in result.items() if k.startswith("geometry/")}
        if geometry:
            merge_eval_json(run.run_dir / "eval.json", {**geometry, "geometry/mesh": str(out_dir)})
            log.info("Geometry: %s", ", ".join(f"{k}={v:.4g}" for k, v in geometry.items()))
        return out_dir
    cams, out = _render_split(run, args)
    out_dir = new_output_dir(run.run_dir / "exports", what)
    mask = out.opacity[..., 0] >= threshold
    depth, ndc_points = out.depth, None
    if run.ndc is not None:  # rendered depths are the NDC parameter: back to the world
        ndc_points = ndc_depth_points(run, cams, out.depth)
        depth = (ndc_points @ cams.R[:, None] + cams.T[:, None, None])[..., 2:]
        mask = mask & torch.isfinite(depth[..., 0])
    if what == "depth":
        scale = world_scale(run.setup)  # scene units per capture unit
        units = "scene units" if run.setup.get("world_transform") is None else "capture units"
        for i in range(len(cams)):
            d = depth[i, ..., 0].cpu() / scale
            m = mask[i].cpu()
            write_depth_png16(out_dir / f"view_{i:03d}_depth.png", d * m, DEPTH_PNG_SCALE)
            write_depth_npy(out_dir / f"view_{i:03d}_depth.npy",
                            torch.where(m, d, torch.full_like(d, float("nan"))))  # fmt: skip
        write_json_atomic(out_dir / "depth.json", {
            "png_scale": DEPTH_PNG_SCALE, "units": f"view-space z-depth ({units})",
            "scene_units_per_capture_unit": scale,
            "opacity_threshold": threshold, "split": args.get("split", "test"),
            "n_views": len(cams),
        })  # fmt: skip
        return out_dir
    points, colors = [], []
    for i in range(len(cams)):
        rgb = out.rgb[i, ..., :3].clamp(0, 1)
        if ndc_points is not None:
            p, c = ndc_points[i][mask[i]], rgb[mask[i]]
        else:
            p, c = depth_to_pointcloud(out.depth[i], rgb, cams[[i]], mask[i])
        points.append(p.cpu())
        colors.append(c.cpu())
    pts = transform_points(torch.cat(points), inverse_world_transform(run.setup))
    if not len(pts):
        raise ValueError(f"no pixel has opacity >= opacity_threshold={threshold}: empty cloud.")
    _write_ply(out_dir / "pointcloud.ply", pts, colors=torch.cat(colors))
    return out_dir


def merge_eval_json(path: Path, values: Mapping[str, Any]) -> None:
    """Add ``values`` to the JSON object in ``path`` (created if missing), atomically."""
    import json

    from nerf_lab.checkpoint import write_json_atomic

    data: dict[str, Any] = {}
    if path.is_file():
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError:
            log.warning("%s is not valid JSON: rewriting it with the geometry only.", path)
    write_json_atomic(path, {**data, **values})


def main(argv: list[str] | None = None) -> int:
    """Console entry point; exits 0 on success, 1 with a one-line error otherwise."""
    return run_command(argv, ALLOWED, __doc__ or "", export_run, str)


def cli() -> None:
    """``nerf-lab-export``: :func:`main` with its exit status."""
    sys.exit(main())


if __name__ == "__main__":
    cli()
