"""Issue #13's "Done when" check: one scene as a Blender folder and as nerfstudio and COLMAP
captures that are hard in the ways real captures are (off-centre principal point,
fx != fy, RGB only, an arbitrary similarity-transformed world), to train each with default
settings and compare held-out PSNRs.

    python scripts/make_capture_check.py OUT [--scene cow|torus] [--size 64] [--data-dir D]
    python -m nerf_lab.train data=blender data.path=OUT/blender trainer.n_iter=N
    python -m nerf_lab.train data=nerfstudio data.path=OUT/nerfstudio trainer.n_iter=N
    python -m nerf_lab.train data=colmap data.path=OUT/colmap trainer.n_iter=N

The views are the tutorial cow's (``data=cow``: 40 views on a half orbit, 10 held out) or
the procedural torus's; the Blender folder has them with the scene's own FoV cameras and
alpha masks; the captures have the same poses with focal lengths ``1.06 f`` / ``0.94 f``,
the principal point at ``(0.56 W, 0.45 H)``, no masks, expressed in a world rotated, scaled
by 3.7 and moved, with the mesh's vertices (in that world) as the sparse points. nerfstudio
keeps the Blender split; COLMAP holds out every 8th image (its convention).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import torch

from nerf_lab.cameras import PerspectiveCameras, screen_intrinsics, so3_exp_map
from nerf_lab.data import Scene, export_blender, export_colmap, export_nerfstudio
from nerf_lab.data.capture import apply_similarity_to_extrinsics, transform_points_np
from nerf_lab.data.render import render_mesh


def capture_from_scene() -> np.ndarray:
    """The similarity scene -> capture world: rotation, scale 3.7, translation."""
    Q = so3_exp_map(torch.tensor([[0.3, -0.8, 0.5]], dtype=torch.float64))[0].numpy()
    M = np.eye(4)
    M[:3, :3] = 3.7 * Q
    M[:3, 3] = [5.0, -2.0, 9.0]
    return M


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--scene", choices=["cow", "torus"], default="cow")
    parser.add_argument("--size", type=int, default=64, help="image side in pixels")
    parser.add_argument("--data-dir", default=None, help="the cow mesh folder (data.data_dir)")
    args = parser.parse_args()
    size = args.size
    if args.scene == "cow":
        from nerf_lab.data.cow import COW_LIGHT_LOCATION, cow_scene, load_cow_mesh

        scene = cow_scene(args.data_dir, image_size=size)
        mesh = load_cow_mesh(args.data_dir)
        light = COW_LIGHT_LOCATION
    else:
        from nerf_lab.data.procedural import procedural_scene, torus_mesh

        scene = procedural_scene(image_size=size)
        mesh = torus_mesh()
        light = None
    export_blender(scene, args.out / "blender")

    focal, pp = screen_intrinsics(scene.cameras, (size, size))
    focal = focal * torch.tensor([1.06, 0.94])
    pp = pp * 0 + torch.tensor([0.56 * size, 0.45 * size])
    cams = PerspectiveCameras(focal, pp, R=scene.cameras.R, T=scene.cameras.T, in_ndc=False,
                              image_size=((size, size),))  # fmt: skip
    kwargs = {} if light is None else {"light_location": light}
    images, _ = render_mesh(mesh, cams, (size, size), **kwargs)
    M = capture_from_scene()
    R2, T2 = apply_similarity_to_extrinsics(cams.R.double().numpy(), cams.T.double().numpy(), M)
    moved = cams._replace(R=torch.from_numpy(R2).float(), T=torch.from_numpy(T2).float())
    capture = Scene(f"{scene.name}_capture", moved, images, None, scene.splits)
    points = transform_points_np(M, mesh.verts.double().numpy())
    export_nerfstudio(capture, args.out / "nerfstudio", points=points)
    export_colmap(capture, args.out / "colmap", points=points)
    f = focal[0].tolist()
    print(
        f"{args.out}: blender/, nerfstudio/, colmap/ ({len(scene)} views, {size}x{size}; "
        f"captures: fx={f[0]:.2f} fy={f[1]:.2f} cx={pp[0, 0]:.2f} cy={pp[0, 1]:.2f}, scale "
        f"{math.cbrt(np.linalg.det(M[:3, :3])):.2f})"
    )


if __name__ == "__main__":
    main()
