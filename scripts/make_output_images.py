"""Pictures of a finished run for the README: ``python scripts/make_output_images.py RUN_DIR
OUT_DIR [--prefix quick]``.

Writes ``<prefix>_turntable.gif`` (the run's own turntable), ``<prefix>_test_views.png``
(labelled render | target | error | depth of three held-out views, from the run's final
evaluation folder) and ``<prefix>_mesh.png`` (the mesh exported by ``nerf_lab.export``,
rasterised with its vertex colours from three sides).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import imageio.v3 as iio
import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--prefix", default="quick")
    ap.add_argument("--resolution", type=int, default=128)
    ap.add_argument("--level", type=float, default=0.05, help="opacity iso-level of the mesh")
    args = ap.parse_args()

    from nerf_lab import export as nl_export
    from nerf_lab.camera_paths import orbit
    from nerf_lab.data.mesh import TexturedMesh
    from nerf_lab.data.render import render_mesh
    from nerf_lab.runs import load_run
    from nerf_lab.video import labelled_panel, write_image

    out = args.out_dir
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(
        args.run_dir / "renders" / "turntable.gif", out / f"{args.prefix}_turntable.gif"
    )

    folder = sorted((args.run_dir / "eval").glob("step_*"))[-1]
    rows = []
    for i in (0, 3, 6):
        if not (folder / f"view_{i:03d}_render.png").exists():
            continue
        tiles = {k: iio.imread(folder / f"view_{i:03d}_{k}.png")
                 for k in ("render", "target", "error", "depth")}  # fmt: skip
        rows.append(labelled_panel(tiles))
    write_image(out / f"{args.prefix}_test_views.png", torch.cat(rows, dim=0))

    argv = [f"run_dir={args.run_dir}", "what=mesh", f"resolution={args.resolution}",
            f"level={args.level}"]  # fmt: skip
    if nl_export.main(argv) != 0:
        raise SystemExit("mesh export failed (see above)")
    mesh_dir = sorted((args.run_dir / "exports").glob("mesh_*"))[-1]
    import trimesh

    m = trimesh.load(mesh_dir / "mesh.ply", process=False)
    colors = torch.as_tensor(m.visual.vertex_colors[:, :3] / 255.0, dtype=torch.float32)
    mesh = TexturedMesh(
        torch.as_tensor(m.vertices, dtype=torch.float32),
        torch.as_tensor(m.faces, dtype=torch.int64),
        verts_colors=colors,
    )
    run = load_run(args.run_dir)
    cams = orbit(3, 2.4, 25.0, run.camera_like(), azimuth_deg=[0.0, 120.0, 240.0])
    images, _ = render_mesh(mesh, cams, 192, light_location=None)
    panel = labelled_panel({f"mesh, azimuth {a}": im for a, im in zip((0, 120, 240), images,
                                                                       strict=True)})  # fmt: skip
    write_image(out / f"{args.prefix}_mesh.png", panel)
    print(out)


if __name__ == "__main__":
    main()
