"""LLFF captures (``poses_bounds.npy`` + ``images/``), read as a Scene and written from one.

Format (LLFF's ``imgs2poses.py``, used by the original NeRF): ``poses_bounds.npy`` is an
``(N, 17)`` float array, one row per image in sorted file-name order of ``images/``: a 3x5
matrix (row-major) ``[c2w (3x4) | (H, W, focal)]`` and two depths ``(near, far)`` bounding the
points that image sees. The 3x4 camera-to-world matrix's rotation columns are the camera's
*down*, *right* and *backwards* axes in world coordinates (the camera looks along -column 2);
so PyTorch3D's view axes (+X left, +Y up, +Z forward) are ``-col1, -col0, -col2``:
``R = [-c1 | -c0 | -c2]`` and ``T = -R^T C``. ``(H, W, focal)`` refer to the full-resolution
images; the principal point is the image centre (LLFF stores none). ``downscale`` reads
``images_<d>/`` when present (LLFF's ``images_4``, ``images_8``), else area-downscales.

The per-image bounds give the scene's depth range (times the normalisation's scale); the
region of interest for the normalisation is the part of every view frustum between its
bounds (no sparse points are stored).

``ndc=True`` (``data=llff data.ndc=true``): the original NeRF's NDC rays for forward-facing
captures. The scene keeps its (normalised) world frame and its bounds as ``near`` / ``far``,
and gets an :class:`~nerf_lab.ndc.NDCSpace` (``Scene.ndc``): the mean camera pose with the
first camera's intrinsics, and a near plane at :data:`~nerf_lab.ndc.NDC_NEAR_FACTOR` (0.75,
NeRF's ``bd_factor``) times the nearest bound. Runs on it sample rays in NDC (depths 0..1);
cameras that are not forward-facing for that space
(:meth:`~nerf_lab.ndc.NDCSpace.camera_problems`) are an error at load.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from nerf_lab.data.capture import (
    IMAGE_SUFFIXES,
    CaptureOptions,
    CaptureView,
    build_capture_scene,
    export_arrays,
    holdout_splits,
    project_view_points,
    rotation_problem,
)
from nerf_lab.data.scene import Scene, SceneValidationError
from nerf_lab.ndc import NDC_NEAR_FACTOR, NDCSpace


def llff_to_p3d(c2w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """LLFF ``(3, 4)`` camera-to-world ([down, right, backwards | centre]) -> PyTorch3D R, T."""
    R = np.stack([-c2w[:, 1], -c2w[:, 0], -c2w[:, 2]], axis=1)
    return R, -R.T @ c2w[:, 3]


def p3d_to_llff(R: np.ndarray, T: np.ndarray) -> np.ndarray:
    """The inverse of :func:`llff_to_p3d`: a ``(3, 4)`` LLFF camera-to-world matrix."""
    center = -R @ T
    return np.stack([-R[:, 1], -R[:, 0], -R[:, 2], center], axis=1)


def frustum_points(
    R: np.ndarray, T: np.ndarray, K: np.ndarray, width: int, height: int, depths: np.ndarray
) -> np.ndarray:
    """World points at the image corners and centre of every camera at two depths each.

    Args:
        R: ``(n, 3, 3)``; T: ``(n, 3)``: PyTorch3D extrinsics.
        K: ``(n, 4)`` ``fx, fy, cx, cy`` in pixels.
        width, height: image size.
        depths: ``(n, 2)`` z-depths.

    Returns:
        ``(n * 10, 3)``.
    """
    u = np.array([0.0, width, 0.0, width, width / 2.0])
    v = np.array([0.0, 0.0, height, height, height / 2.0])
    out = []
    for i in range(len(R)):
        fx, fy, cx, cy = K[i]
        for z in depths[i]:
            view = np.stack([(cx - u) / fx * z, (cy - v) / fy * z, np.full(5, z)], -1)
            out.append((view - T[i]) @ R[i].T)
    return np.concatenate(out)


def _list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def load_llff(
    path: str | Path,
    downscale: int = 1,
    holdout_every: int = 8,
    background: str | Sequence[float] = "black",
    orient_up: bool = True,
    recenter: bool = True,
    rescale: bool = True,
    roi_percentile: float = 0.0,
    name: str | None = None,
    ndc: bool = False,
) -> Scene:
    """Load an LLFF capture as a :class:`Scene` (normalised, see :mod:`nerf_lab.data.capture`).

    Args:
        path: the folder holding ``poses_bounds.npy`` and ``images/``.
        downscale: integer factor (``images_<d>/`` when present, else area-downscaled).
        holdout_every: every n-th image by file name is ``"test"``.
        background: the scene's background colour.
        orient_up, recenter, rescale, roi_percentile: normalisation; the ROI is the part of
            the view frusta between the bounds.
        name: scene name (default: the folder name).
        ndc: sample rays in NeRF's NDC space of the mean camera (forward-facing captures;
            see the module docstring).

    Also the Hydra builder ``data=llff`` (``llff_scene``): the YAML's keys are these
    arguments.

    Raises:
        SceneValidationError: every problem at once (a bad ``poses_bounds.npy``, image count
            not matching the poses, non-rotations, bad bounds, image sizes disagreeing with
            ``H, W``, ...); with ``ndc=True``, every camera that is not forward-facing.
    """
    options = CaptureOptions.pick(locals(), roi_from="points")
    if not isinstance(ndc, bool):
        raise ValueError(f"ndc must be true or false; got {ndc!r}.")
    root = Path(path).expanduser()
    what = f"LLFF capture {root}"
    npy = root / "poses_bounds.npy"
    if not npy.is_file():
        raise SceneValidationError([f"{npy} does not exist"], what)
    try:
        arr = np.load(npy, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise SceneValidationError([f"{npy}: cannot read ({e})"], what) from e
    if arr.ndim != 2 or arr.shape[1] != 17 or not np.issubdtype(arr.dtype, np.number):
        raise SceneValidationError([f"{npy} has shape {arr.shape}, expected (N, 17)"], what)
    arr = arr.astype(np.float64)
    problems: list[str] = []
    img_dir = root / "images"
    files = _list_images(img_dir) if img_dir.is_dir() else []
    if not img_dir.is_dir():
        problems.append(f"{img_dir} does not exist")
    elif len(files) != len(arr):
        problems.append(
            f"{img_dir} has {len(files)} images but poses_bounds.npy has {len(arr)} poses"
        )
    views: list[CaptureView] = []
    for i, row in enumerate(arr):
        file = files[i] if i < len(files) else img_dir / f"<missing image {i}>"
        where = f"pose {i} ({file.name})"
        pose = row[:15].reshape(3, 5)
        near, far = row[15], row[16]
        h, w, f = pose[:, 4]
        bad = rotation_problem(pose[:, :3])
        if bad or not np.isfinite(pose).all():
            problems.append(f"{where}: rotation is {bad or 'not finite'}")
            continue
        if not (np.isfinite([near, far]).all() and 0 < near < far):
            problems.append(f"{where}: bounds near={near}, far={far} must satisfy 0 < near < far")
            continue
        if not (h >= 1 and w >= 1 and f > 0 and h == int(h) and w == int(w)):
            problems.append(f"{where}: (H, W, focal) = {(h, w, f)} invalid")
            continue
        R, T = llff_to_p3d(pose[:, :4])
        views.append(
            CaptureView(
                name=file.name,
                image_path=file,
                R=R,
                T=T,
                fx=float(f),
                fy=float(f),
                cx=w / 2.0,
                cy=h / 2.0,
                width=int(w),
                height=int(h),
                bounds=(float(near), float(far)),
            )
        )
    if len(files) != len(arr):
        views = []  # which image belongs to which pose is unknown
    points = None
    if views:
        R = np.stack([v.R for v in views])
        T = np.stack([v.T for v in views])
        K = np.array([[v.fx, v.fy, v.cx, v.cy] for v in views])
        depths = np.array([v.bounds for v in views])
        points = frustum_points(R, T, K, views[0].width, views[0].height, depths)
    splits = holdout_splits([v.name for v in views], holdout_every) if views else {}

    def downscaled(view: CaptureView, file: Path, factor: int) -> Path | None:
        cand = root / f"images_{factor}" / file.name
        if cand.is_file():
            return cand
        same_stem = sorted((root / f"images_{factor}").glob(file.stem + ".*"))
        return same_stem[0] if same_stem else None

    scene = build_capture_scene(
        name if name is not None else root.name,
        views,
        splits,
        problems,
        what,
        points=points,
        downscaled_path=downscaled,
        options=options,
    )
    if ndc:
        assert scene.near is not None
        space = NDCSpace.from_cameras(scene.cameras, NDC_NEAR_FACTOR * scene.near)
        bad = space.camera_problems(scene.cameras, scene.image_size, [v.name for v in views])
        if bad:
            raise SceneValidationError(
                bad,
                f"{what} with data.ndc=true (NDC rays need a forward-facing capture: every "
                "camera looking into the mean camera's image, every ray pointing forward)",
            )
        scene.ndc = space
    return scene


# The Hydra builder (``data=llff``): the loader itself, its keyword arguments are the YAML's keys.
llff_scene = load_llff


def export_llff(
    scene: Scene,
    out_dir: str | Path,
    points: torch.Tensor | np.ndarray | None = None,
    bounds_percentiles: tuple[float, float] = (0.1, 99.9),
) -> Path:
    """Write a scene as an LLFF capture: ``images/image_XXXXX.png`` and ``poses_bounds.npy``.

    LLFF stores one focal length per image and no principal point, so every camera must have
    ``fx == fy`` and its principal point at the image centre (``ValueError`` otherwise).

    Args:
        scene: the scene (any camera type).
        out_dir: output folder (created).
        points: ``(m, 3)`` world points: each image's bounds are the ``bounds_percentiles`` of
            the depths of the points in front of it that project into it (as LLFF's
            ``imgs2poses``); default: the scene's ``near`` / ``far`` for every image.
        bounds_percentiles: see ``points``.

    Returns:
        ``out_dir``.
    """
    out = Path(out_dir).expanduser()
    arrays = export_arrays(scene)
    H, W, focal, pp = arrays.height, arrays.width, arrays.focal, arrays.principal_point
    if not np.allclose(focal[:, 0], focal[:, 1], rtol=1e-5):
        raise ValueError(f"LLFF needs fx == fy for every camera; got {focal.tolist()}.")
    if not np.allclose(pp, [[W / 2.0, H / 2.0]], atol=1e-3):
        raise ValueError(
            f"LLFF needs principal points at the image centre {(W / 2.0, H / 2.0)}; "
            f"got {pp.tolist()}."
        )
    R, T = arrays.R, arrays.T
    if points is None and (scene.near is None or scene.far is None):
        raise ValueError("export_llff needs points or a scene with near / far for the bounds.")
    pts = None if points is None else np.asarray(points, dtype=np.float64).reshape(-1, 3)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(len(scene)):
        Image.fromarray(arrays.images[i]).save(out / "images" / f"image_{i:05d}.png")
        c2w = p3d_to_llff(R[i], T[i])
        if pts is not None:
            view = pts @ R[i] + T[i]
            z = view[:, 2]
            seen = project_view_points(view, (*focal[i], *pp[i]), W, H)[2]
            if not seen.any():
                raise ValueError(f"view {i} sees none of the points: no bounds.")
            near, far = np.percentile(z[seen], bounds_percentiles)
        else:
            near, far = scene.near, scene.far
        pose = np.concatenate([c2w, np.array([[H], [W], [focal[i, 0]]])], axis=1)
        rows.append(np.concatenate([pose.reshape(-1), [near, far]]))
    np.save(out / "poses_bounds.npy", np.stack(rows))
    return out
