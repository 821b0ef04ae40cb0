"""nerfstudio / instant-ngp ``transforms.json`` captures, read as a Scene and written from one.

Format (``DIR/transforms.json``, paths relative to ``DIR``):

* intrinsics at the top level or per frame (frame values win): ``fl_x``, ``fl_y`` (or
  instant-ngp's ``camera_angle_x`` / ``camera_angle_y``), ``cx``, ``cy`` (pixels, the image's
  top-left corner at (0, 0); default the image centre), ``w``, ``h``; ``camera_model``
  ``PINHOLE`` / ``SIMPLE_PINHOLE`` / ``OPENCV`` (default ``OPENCV``) with distortion
  ``k1 k2 p1 p2`` (and ``k3``), undistorted once at load (OpenCV);
* ``frames``: ``file_path``, ``transform_matrix`` (4x4 camera-to-world, OpenGL camera axes:
  +X right, +Y up, looking along -Z; converted exactly with
  :func:`nerf_lab.data.blender.c2w_to_p3d`), optional ``mask_path`` (white = object: becomes
  the scene's silhouettes; note that nerfstudio itself uses masks to *ignore* pixels);
* splits: ``train_filenames`` / ``val_filenames`` / ``test_filenames`` (file paths as in the
  frames) when present, else every ``holdout_every``-th image by file name is ``"test"``;
* optional ``ply_file_path``: sparse points (what ``ns-process-data`` writes from COLMAP), used
  for the normalisation and the depth range.

``downscale``: images (and masks) come from ``images_<d>/`` (``masks_<d>/``) next to the
original folder with the same file name when present (nerfstudio's layout), else are
area-downscaled at load.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import trimesh
from PIL import Image

from nerf_lab.data.blender import _check_matrix, c2w_to_p3d, p3d_to_c2w
from nerf_lab.data.capture import (
    CaptureOptions,
    CaptureView,
    build_capture_scene,
    export_arrays,
    holdout_splits,
)
from nerf_lab.data.distortion import DISTORTION_KEYS, distort_image, has_distortion
from nerf_lab.data.scene import Scene, SceneValidationError
from nerf_lab.validate import is_number

CAMERA_MODELS = ("PINHOLE", "SIMPLE_PINHOLE", "OPENCV")
_INTRINSIC_KEYS = ("fl_x", "fl_y", "cx", "cy", "w", "h", "camera_angle_x", "camera_angle_y")


def _frame_intrinsics(
    meta: dict[str, Any], frame: dict[str, Any], where: str, problems: list[str]
) -> tuple[float, float, float, float, int, int, tuple[float, ...]] | None:
    """``(fx, fy, cx, cy, w, h, distortion)`` of a frame (frame keys over file keys)."""

    def get(key: str, default: Any = None) -> Any:
        return frame.get(key, meta.get(key, default))

    model = get("camera_model", "OPENCV")
    if model not in CAMERA_MODELS:
        problems.append(
            f"{where}: unsupported camera_model {model!r} (supported: {', '.join(CAMERA_MODELS)})"
        )
        return None
    w, h = get("w"), get("h")
    bad = [k for k, v in (("w", w), ("h", h)) if not (is_number(v) and v >= 1 and v == int(v))]
    if bad:
        problems.append(f"{where}: image size {bad} missing or not a positive integer")
        return None
    w, h = int(w), int(h)
    fx, fy = get("fl_x"), get("fl_y")
    if fx is None and is_number(get("camera_angle_x")):
        fx = 0.5 * w / math.tan(0.5 * get("camera_angle_x"))
    if fy is None and is_number(get("camera_angle_y")):
        fy = 0.5 * h / math.tan(0.5 * get("camera_angle_y"))
    if fy is None:
        fy = fx
    if fx is None:
        fx = fy
    cx, cy = get("cx", w / 2.0), get("cy", h / 2.0)
    values = {"fl_x": fx, "fl_y": fy, "cx": cx, "cy": cy}
    bad = [k for k, v in values.items() if not is_number(v)]
    if bad:
        problems.append(f"{where}: intrinsics {bad} missing or not numbers")
        return None
    if fx <= 0 or fy <= 0:
        problems.append(f"{where}: focal lengths must be > 0; got fl_x={fx}, fl_y={fy}")
        return None
    dist: tuple[float, ...] = ()
    if model == "OPENCV":
        coeffs = [get(k, 0.0) for k in DISTORTION_KEYS]
        bad = [k for k, v in zip(DISTORTION_KEYS, coeffs, strict=True) if not is_number(v)]
        if bad:
            problems.append(f"{where}: distortion {bad} not numbers")
            return None
        dist = tuple(float(c) for c in coeffs)
    return float(fx), float(fy), float(cx), float(cy), w, h, dist


def _read_ply_points(path: Path, problems: list[str]) -> np.ndarray | None:
    try:
        cloud = trimesh.load(path, process=False)
        pts = np.asarray(cloud.vertices, dtype=np.float64).reshape(-1, 3)
    except Exception as e:  # trimesh raises many types on bad files
        problems.append(f"{path}: cannot read the point cloud ({e})")
        return None
    return pts


def load_nerfstudio(
    path: str | Path,
    downscale: int = 1,
    holdout_every: int = 8,
    background: str | Sequence[float] = "black",
    orient_up: bool = True,
    recenter: bool = True,
    rescale: bool = True,
    roi_from: str = "auto",
    roi_percentile: float = 1.0,
    depth_percentile: float = 1.0,
    depth_margin: float = 0.1,
    transforms_file: str = "transforms.json",
    name: str | None = None,
) -> Scene:
    """Load a nerfstudio / instant-ngp capture as a :class:`Scene` (normalised, see
    :mod:`nerf_lab.data.capture`).

    Args:
        path: the folder holding ``transforms_file`` (or the JSON file itself).
        downscale: integer factor (``images_<d>/`` when present, else area-downscaled).
        holdout_every: without split lists, every n-th image by file name is ``"test"``.
        background: the scene's background colour (RGBA images are composited over it).
        orient_up, recenter, rescale, roi_from, roi_percentile, depth_percentile,
            depth_margin: normalisation and depth range (:func:`build_capture_scene`).
        transforms_file: the JSON's file name.
        name: scene name (default: the folder name).

    Also the Hydra builder ``data=nerfstudio`` (``nerfstudio_scene``): the YAML's keys are these
    arguments.

    Raises:
        SceneValidationError: every problem at once (bad JSON, unknown camera models,
            non-rigid transforms, missing images or masks, image sizes disagreeing with
            ``w`` / ``h``, unknown split file names, ...).
    """
    options = CaptureOptions.pick(locals())
    p = Path(path).expanduser()
    jpath = p if p.is_file() else p / transforms_file
    root = jpath.parent
    what = f"nerfstudio capture {jpath}"
    if not jpath.is_file():
        raise SceneValidationError([f"{jpath} does not exist"], what)
    try:
        meta = json.loads(jpath.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SceneValidationError([f"cannot parse JSON ({e})"], what) from e
    if not isinstance(meta, dict) or not isinstance(meta.get("frames"), list):
        raise SceneValidationError(["'frames' is missing or not a list"], what)
    problems: list[str] = []
    frames = [f for f in meta["frames"] if isinstance(f, dict)]
    if len(frames) != len(meta["frames"]):
        problems.append("some frames are not JSON objects")
    if not frames:
        problems.append("'frames' is empty")
    frames.sort(key=lambda f: str(f.get("file_path", "")))
    views: list[CaptureView] = []
    for i, frame in enumerate(frames):
        fp = frame.get("file_path")
        where = f"frame {fp!r}" if isinstance(fp, str) else f"frame {i}"
        if not isinstance(fp, str) or not fp:
            problems.append(f"{where}: 'file_path' is missing or not a string")
            continue
        m = _check_matrix(frame.get("transform_matrix"), where, problems)
        k = _frame_intrinsics(meta, frame, where, problems)
        mask = frame.get("mask_path")
        if mask is not None and not isinstance(mask, str):
            problems.append(f"{where}: 'mask_path' is not a string")
            continue
        if m is None or k is None:
            continue
        R, T = c2w_to_p3d(m)
        fx, fy, cx, cy, w, h, dist = k
        views.append(
            CaptureView(
                name=fp,
                image_path=root / fp,
                R=R,
                T=T,
                fx=fx,
                fy=fy,
                cx=cx,
                cy=cy,
                width=w,
                height=h,
                distortion=dist,
                mask_path=None if mask is None else root / mask,
            )
        )

    names = [v.name for v in views]
    lists = {s: meta.get(f"{s}_filenames") for s in ("train", "val", "test")}
    if any(v is not None for v in lists.values()):
        index = {Path(n).as_posix().removeprefix("./"): i for i, n in enumerate(names)}
        splits: dict[str, list[int]] = {}
        for split, files in lists.items():
            if files is None:
                continue
            if not isinstance(files, list):
                problems.append(f"{split}_filenames is not a list")
                continue
            idx = []
            for f in files:
                key = Path(str(f)).as_posix().removeprefix("./")
                if key not in index:
                    problems.append(f"{split}_filenames: {f!r} is not a frame's file_path")
                else:
                    idx.append(index[key])
            splits[split] = sorted(idx)
        if "test" not in splits and "val" in splits:
            splits["test"] = splits["val"]
    else:
        splits = holdout_splits(names, holdout_every) if views else {}

    points = None
    ply = meta.get("ply_file_path")
    if isinstance(ply, str):
        if not (root / ply).is_file():
            problems.append(f"ply_file_path {root / ply} does not exist")
        else:
            points = _read_ply_points(root / ply, problems)

    def downscaled(view: CaptureView, file: Path, factor: int) -> Path | None:
        cand = file.parent.parent / f"{file.parent.name}_{factor}" / file.name
        return cand if cand.is_file() else None

    return build_capture_scene(
        name if name is not None else root.name,
        views,
        splits,
        problems,
        what,
        points=points,
        downscaled_path=downscaled,
        options=options,
    )


# The Hydra builder (``data=nerfstudio``): the loader itself, its keyword arguments are the YAML's
# keys.
nerfstudio_scene = load_nerfstudio


def export_nerfstudio(
    scene: Scene,
    out_dir: str | Path,
    points: torch.Tensor | np.ndarray | None = None,
    distortion: Sequence[float] = (),
    write_splits: bool = True,
    per_frame_intrinsics: bool | None = None,
) -> Path:
    """Write a scene as a nerfstudio capture: ``transforms.json``, ``images/frame_XXXXX.png``,
    ``masks/`` (from silhouettes, if any) and ``sparse_pc.ply`` (if ``points``).

    Args:
        scene: the scene (any camera type).
        out_dir: output folder (created).
        points: ``(m, 3)`` world points written as ``sparse_pc.ply`` (``ply_file_path``).
        distortion: ``(k1, k2, p1, p2[, k3])``: images (and masks) are *distorted* with it and
            ``camera_model`` is ``OPENCV``; loading undistorts them back.
        write_splits: write ``train_filenames`` / ``val_filenames`` / ``test_filenames``
            from the scene's splits (else loaders use the every-n-th hold-out).
        per_frame_intrinsics: intrinsics in every frame (default: only when they differ).

    Returns:
        ``out_dir``.
    """
    out = Path(out_dir).expanduser()
    arrays = export_arrays(scene)
    H, W = arrays.height, arrays.width
    k = np.concatenate([arrays.focal, arrays.principal_point], 1)
    if per_frame_intrinsics is None:
        per_frame_intrinsics = not np.allclose(k, k[:1])
    distorted = has_distortion(distortion)
    meta: dict[str, Any] = {
        "camera_model": "OPENCV" if distorted else "PINHOLE",
        "w": W,
        "h": H,
    }
    if distorted:
        meta.update({key: float(v) for key, v in zip(DISTORTION_KEYS, distortion, strict=False)})
    if not per_frame_intrinsics:
        meta.update({"fl_x": k[0, 0], "fl_y": k[0, 1], "cx": k[0, 2], "cy": k[0, 3]})
    (out / "images").mkdir(parents=True, exist_ok=True)
    if scene.silhouettes is not None:
        (out / "masks").mkdir(parents=True, exist_ok=True)
    frames = []
    for i in range(len(scene)):
        rel = f"images/frame_{i:05d}.png"
        img = arrays.images[i]
        if distorted:
            img = distort_image(img, k[i], distortion)
        Image.fromarray(img).save(out / rel)
        c2w = p3d_to_c2w(arrays.R[i], arrays.T[i])
        frame: dict[str, Any] = {"file_path": rel, "transform_matrix": c2w.tolist()}
        if per_frame_intrinsics:
            frame.update({"fl_x": k[i, 0], "fl_y": k[i, 1], "cx": k[i, 2], "cy": k[i, 3]})
        if scene.silhouettes is not None:
            mrel = f"masks/frame_{i:05d}.png"
            mask = (scene.silhouettes[i].detach().cpu().numpy() > 0.5).astype(np.uint8) * 255
            if distorted:
                mask = distort_image(mask, k[i], distortion, nearest=True)
            Image.fromarray(mask).save(out / mrel)
            frame["mask_path"] = mrel
        frames.append(frame)
    meta["frames"] = frames
    if write_splits:
        for split, idx in scene.splits.items():
            if split in ("train", "val", "test"):
                meta[f"{split}_filenames"] = [frames[i]["file_path"] for i in idx.tolist()]
    if points is not None:
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        trimesh.PointCloud(pts).export(out / "sparse_pc.ply")
        meta["ply_file_path"] = "sparse_pc.ply"
    (out / "transforms.json").write_text(json.dumps(meta, indent=2))
    return out
