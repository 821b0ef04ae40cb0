"""COLMAP sparse models (text and binary), read as a Scene and written from one.

Layout: ``DIR/images/`` (``images_2/``, ``images_4/``, ... for ``downscale``) and the model in
``DIR/sparse/0/`` or ``DIR/sparse/``: ``cameras``, ``images``, ``points3D`` as ``.txt`` or
``.bin`` (COLMAP's formats, https://colmap.github.io/format.html).

Conventions: ``images`` store world-to-camera poses ``X_cam = R(q) X + t`` in OpenCV camera
axes (+X right, +Y down, +Z forward), ``q = (qw, qx, qy, qz)``; camera parameters are in
pixels with the image's top-left corner at (0, 0) (pixel centres at +0.5). Supported camera
models: ``SIMPLE_PINHOLE (f, cx, cy)``, ``PINHOLE (fx, fy, cx, cy)``,
``SIMPLE_RADIAL (f, cx, cy, k)``, ``RADIAL (f, cx, cy, k1, k2)``,
``OPENCV (fx, fy, cx, cy, k1, k2, p1, p2)``; distorted images are undistorted once at load.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image

from nerf_lab.data.capture import (
    CaptureOptions,
    CaptureView,
    build_capture_scene,
    export_arrays,
    holdout_splits,
    opencv_w2c_to_p3d,
    p3d_to_opencv_w2c,
    project_view_points,
    rotation_problem,
)
from nerf_lab.data.distortion import distort_image, has_distortion
from nerf_lab.data.scene import Scene, SceneValidationError
from nerf_lab.validate import check_choice

# name -> (model id, parameter names)
CAMERA_MODELS: dict[str, tuple[int, tuple[str, ...]]] = {
    "SIMPLE_PINHOLE": (0, ("f", "cx", "cy")),
    "PINHOLE": (1, ("fx", "fy", "cx", "cy")),
    "SIMPLE_RADIAL": (2, ("f", "cx", "cy", "k")),
    "RADIAL": (3, ("f", "cx", "cy", "k1", "k2")),
    "OPENCV": (4, ("fx", "fy", "cx", "cy", "k1", "k2", "p1", "p2")),
}
# COLMAP's other models (known so that binary files can be parsed and named in errors).
OTHER_MODELS: dict[int, tuple[str, int]] = {
    5: ("OPENCV_FISHEYE", 8),
    6: ("FULL_OPENCV", 12),
    7: ("FOV", 5),
    8: ("SIMPLE_RADIAL_FISHEYE", 4),
    9: ("RADIAL_FISHEYE", 5),
    10: ("THIN_PRISM_FISHEYE", 12),
}
MODEL_BY_ID = {mid: (name, len(params)) for name, (mid, params) in CAMERA_MODELS.items()}
MODEL_BY_ID.update(OTHER_MODELS)


@dataclass
class ColmapCamera:
    """A COLMAP camera: model name, image size and parameters (as in the file)."""

    camera_id: int
    model: str
    width: int
    height: int
    params: tuple[float, ...]


@dataclass
class ColmapImage:
    """A registered image: world-to-camera pose (OpenCV axes) and its 2D observations."""

    image_id: int
    qvec: np.ndarray  # (4,) qw qx qy qz
    tvec: np.ndarray  # (3,)
    camera_id: int
    name: str
    point3d_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    xys: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))


@dataclass
class ColmapPoints:
    """Sparse points: ids, ``(m, 3)`` xyz, ``(m, 3)`` uint8 colours."""

    ids: np.ndarray
    xyz: np.ndarray
    rgb: np.ndarray


def qvec_to_rotmat(q: np.ndarray) -> np.ndarray:
    """COLMAP's (w, x, y, z) unit quaternion -> 3x3 rotation."""
    w, x, y, z = q
    return np.array(
        [
            [1 - 2 * y * y - 2 * z * z, 2 * x * y - 2 * w * z, 2 * z * x + 2 * w * y],
            [2 * x * y + 2 * w * z, 1 - 2 * x * x - 2 * z * z, 2 * y * z - 2 * w * x],
            [2 * z * x - 2 * w * y, 2 * y * z + 2 * w * x, 1 - 2 * x * x - 2 * y * y],
        ]
    )


def rotmat_to_qvec(R: np.ndarray) -> np.ndarray:
    """3x3 rotation -> COLMAP's (w, x, y, z) unit quaternion with w >= 0 (the eigenvector
    method of COLMAP's ``read_write_model.py``)."""
    m = np.asarray(R, dtype=np.float64)
    K = (
        np.array(
            [
                [m[0, 0] - m[1, 1] - m[2, 2], 0.0, 0.0, 0.0],
                [m[0, 1] + m[1, 0], m[1, 1] - m[0, 0] - m[2, 2], 0.0, 0.0],
                [m[0, 2] + m[2, 0], m[1, 2] + m[2, 1], m[2, 2] - m[0, 0] - m[1, 1], 0.0],
                [m[2, 1] - m[1, 2], m[0, 2] - m[2, 0], m[1, 0] - m[0, 1], np.trace(m)],
            ]
        )
        / 3.0
    )
    vals, vecs = np.linalg.eigh(K)  # reads the lower triangle
    q = vecs[[3, 0, 1, 2], np.argmax(vals)]
    return -q if q[0] < 0 else q


# -- reading -------------------------------------------------------------------------------


def _data_lines(path: Path) -> list[str]:
    return [ln for ln in path.read_text().splitlines() if not ln.lstrip().startswith("#")]


def read_cameras_text(path: Path, problems: list[str]) -> dict[int, ColmapCamera]:
    cams = {}
    for ln in _data_lines(path):
        tok = ln.split()
        if not tok:
            continue
        try:
            cam = ColmapCamera(
                int(tok[0]), tok[1], int(tok[2]), int(tok[3]), tuple(float(t) for t in tok[4:])
            )
        except (IndexError, ValueError):
            problems.append(f"{path}: bad camera line {ln!r}")
            continue
        cams[cam.camera_id] = cam
    return cams


def read_images_text(path: Path, problems: list[str]) -> dict[int, ColmapImage]:
    lines = path.read_text().splitlines()
    images = {}
    i = 0
    while i < len(lines):
        ln = lines[i]
        i += 1
        if ln.lstrip().startswith("#") or not ln.strip():
            continue
        points_line = lines[i] if i < len(lines) else ""
        i += 1
        tok = ln.split()
        try:
            img = ColmapImage(
                image_id=int(tok[0]),
                qvec=np.array([float(t) for t in tok[1:5]]),
                tvec=np.array([float(t) for t in tok[5:8]]),
                camera_id=int(tok[8]),
                name=" ".join(tok[9:]),
            )
            if len(tok) < 10:
                raise ValueError
            pts = points_line.split()
            if len(pts) % 3:
                raise ValueError
            arr = np.array([float(t) for t in pts]).reshape(-1, 3)
            img.xys = arr[:, :2]
            img.point3d_ids = arr[:, 2].astype(np.int64)
        except (IndexError, ValueError):
            problems.append(f"{path}: bad image entry {ln!r}")
            continue
        images[img.image_id] = img
    return images


def read_points3d_text(path: Path, problems: list[str]) -> ColmapPoints:
    ids, xyz, rgb = [], [], []
    for ln in _data_lines(path):
        tok = ln.split()
        if not tok:
            continue
        try:
            pid, p, c = int(tok[0]), [float(t) for t in tok[1:4]], [int(t) for t in tok[4:7]]
            if len(p) != 3 or len(c) != 3:
                raise ValueError
        except (IndexError, ValueError):
            problems.append(f"{path}: bad point line {ln!r}")
            continue
        ids.append(pid)
        xyz.append(p)
        rgb.append(c)
    return ColmapPoints(
        np.array(ids, dtype=np.int64),
        np.array(xyz, dtype=np.float64).reshape(-1, 3),
        np.array(rgb, dtype=np.uint8).reshape(-1, 3),
    )


def _read(f: BinaryIO, fmt: str) -> tuple:
    size = struct.calcsize(fmt)
    data = f.read(size)
    if len(data) != size:
        raise EOFError("unexpected end of file")
    return struct.unpack(fmt, data)


def _read_records(path: Path, problems: list[str], read_one: Callable[[BinaryIO], None]) -> None:
    """Call ``read_one(f)`` for each of the records of a COLMAP binary file (a uint64 count,
    then the records); a file that cannot be parsed is recorded in ``problems``."""
    try:
        with open(path, "rb") as f:
            (n,) = _read(f, "<Q")
            for _ in range(n):
                read_one(f)
    except (OSError, EOFError, ValueError, struct.error) as e:  # incl. UnicodeDecodeError
        problems.append(f"{path}: cannot parse ({e})")


def read_cameras_binary(path: Path, problems: list[str]) -> dict[int, ColmapCamera]:
    cams = {}

    def read_one(f: BinaryIO) -> None:
        cam_id, model_id, width, height = _read(f, "<iiQQ")
        if model_id not in MODEL_BY_ID:
            raise ValueError(f"unknown camera model id {model_id}")
        model, n_params = MODEL_BY_ID[model_id]
        params = _read(f, f"<{n_params}d")
        cams[cam_id] = ColmapCamera(cam_id, model, width, height, tuple(params))

    _read_records(path, problems, read_one)
    return cams


def read_images_binary(path: Path, problems: list[str]) -> dict[int, ColmapImage]:
    images = {}

    def read_one(f: BinaryIO) -> None:
        props = _read(f, "<idddddddi")
        name = b""
        while True:
            c = f.read(1)
            if c in (b"\x00", b""):
                break
            name += c
        (n_pts,) = _read(f, "<Q")
        data = _read(f, "<" + "ddq" * n_pts) if n_pts else ()
        arr = np.array(data, dtype=np.float64).reshape(-1, 3)
        images[props[0]] = ColmapImage(
            image_id=props[0],
            qvec=np.array(props[1:5]),
            tvec=np.array(props[5:8]),
            camera_id=props[8],
            name=name.decode("utf-8"),
            point3d_ids=np.array(data[2::3], dtype=np.int64),
            xys=arr[:, :2],
        )

    _read_records(path, problems, read_one)
    return images


def read_points3d_binary(path: Path, problems: list[str]) -> ColmapPoints:
    ids, xyz, rgb = [], [], []

    def read_one(f: BinaryIO) -> None:
        props = _read(f, "<QdddBBBd")
        (track_len,) = _read(f, "<Q")
        f.read(8 * track_len)
        ids.append(props[0])
        xyz.append(props[1:4])
        rgb.append(props[4:7])

    _read_records(path, problems, read_one)
    return ColmapPoints(
        np.array(ids, dtype=np.int64),
        np.array(xyz, dtype=np.float64).reshape(-1, 3),
        np.array(rgb, dtype=np.uint8).reshape(-1, 3),
    )


def find_sparse_dir(root: Path) -> Path | None:
    """``root/sparse/0`` or ``root/sparse`` (whichever holds a model), else None."""
    for cand in (root / "sparse" / "0", root / "sparse"):
        for ext in (".bin", ".txt"):
            if (cand / f"cameras{ext}").is_file() and (cand / f"images{ext}").is_file():
                return cand
    return None


def read_model(
    sparse: Path, problems: list[str]
) -> tuple[dict[int, ColmapCamera], dict[int, ColmapImage], ColmapPoints | None]:
    """Read a sparse model, binary if ``cameras.bin`` exists, else text. ``points3D`` is
    optional (None when absent)."""
    binary = (sparse / "cameras.bin").is_file()
    ext = ".bin" if binary else ".txt"
    if binary:
        cams = read_cameras_binary(sparse / "cameras.bin", problems)
        images = read_images_binary(sparse / "images.bin", problems)
    else:
        cams = read_cameras_text(sparse / "cameras.txt", problems)
        images = read_images_text(sparse / "images.txt", problems)
    pts_path = sparse / f"points3D{ext}"
    points = None
    if pts_path.is_file():
        reader = read_points3d_binary if binary else read_points3d_text
        points = reader(pts_path, problems)
    return cams, images, points


def camera_intrinsics(cam: ColmapCamera) -> tuple[float, float, float, float, tuple[float, ...]]:
    """``(fx, fy, cx, cy, distortion (k1, k2, p1, p2))`` of a supported camera model."""
    p = cam.params
    if cam.model == "SIMPLE_PINHOLE":
        return p[0], p[0], p[1], p[2], ()
    if cam.model == "PINHOLE":
        return p[0], p[1], p[2], p[3], ()
    if cam.model == "SIMPLE_RADIAL":
        return p[0], p[0], p[1], p[2], (p[3], 0.0, 0.0, 0.0)
    if cam.model == "RADIAL":
        return p[0], p[0], p[1], p[2], (p[3], p[4], 0.0, 0.0)
    if cam.model == "OPENCV":
        return p[0], p[1], p[2], p[3], tuple(p[4:8])
    raise ValueError(f"unsupported camera model {cam.model}")


def load_colmap(
    path: str | Path,
    images_dir: str = "images",
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
    name: str | None = None,
) -> Scene:
    """Load a COLMAP capture as a :class:`Scene` (normalised, see :mod:`nerf_lab.data.capture`).

    Args:
        path: the capture folder (``images/`` and ``sparse/0/`` or ``sparse/``).
        images_dir: the images folder's name.
        downscale: integer factor; images come from ``<images_dir>_<downscale>/`` when it
            exists (same file names), else are area-downscaled at load.
        holdout_every: every n-th image (sorted by name, from the first) is ``"test"``.
        background: the scene's background colour.
        orient_up, recenter, rescale, roi_from, roi_percentile, depth_percentile,
            depth_margin: normalisation and depth range (:func:`build_capture_scene`).
        name: scene name (default: the folder name).

    Also the Hydra builder ``data=colmap`` (``colmap_scene``): the YAML's keys are these
    arguments.

    Raises:
        SceneValidationError: every problem at once (missing model files or images, unknown
            camera models, non-unit quaternions, image sizes disagreeing with the cameras,
            no points when ``roi_from='points'``, ...).
    """
    options = CaptureOptions.pick(locals())
    root = Path(path).expanduser()
    what = f"COLMAP capture {root}"
    if not root.is_dir():
        raise SceneValidationError([f"{root} is not a folder"], what)
    sparse = find_sparse_dir(root)
    if sparse is None:
        raise SceneValidationError(
            [
                f"no sparse model (cameras + images, .bin or .txt) in {root}/sparse/0 "
                f"or {root}/sparse"
            ],
            what,
        )
    problems: list[str] = []
    cams, images, points = read_model(sparse, problems)
    if not images and not problems:
        problems.append(f"{sparse}: the model has no registered images")
    for cam in cams.values():
        if cam.model not in CAMERA_MODELS:
            problems.append(
                f"camera {cam.camera_id}: unsupported camera model {cam.model} "
                f"(supported: {', '.join(CAMERA_MODELS)})"
            )
        elif len(cam.params) != len(CAMERA_MODELS[cam.model][1]):
            problems.append(
                f"camera {cam.camera_id}: {cam.model} needs {len(CAMERA_MODELS[cam.model][1])} "
                f"parameters, got {len(cam.params)}"
            )
    point_index = {}
    if points is not None:
        point_index = {int(pid): k for k, pid in enumerate(points.ids)}
    views: list[CaptureView] = []
    visible: list[np.ndarray | None] = []
    img_root = root / images_dir
    for img in sorted(images.values(), key=lambda im: im.name):
        where = f"image {img.image_id} ({img.name})"
        cam = cams.get(img.camera_id)
        if cam is None:
            problems.append(f"{where}: refers to camera {img.camera_id}, which is not in the model")
            continue
        if cam.model not in CAMERA_MODELS or len(cam.params) != len(CAMERA_MODELS[cam.model][1]):
            continue
        qn = float(np.linalg.norm(img.qvec))
        if not math.isfinite(qn) or abs(qn - 1.0) > 1e-3:
            problems.append(f"{where}: quaternion {img.qvec.tolist()} is not a unit rotation")
            continue
        r_cv = qvec_to_rotmat(img.qvec / qn)
        bad = rotation_problem(r_cv)
        if bad or not np.isfinite(img.tvec).all():
            problems.append(f"{where}: pose is {bad or 'not finite'}")
            continue
        R, T = opencv_w2c_to_p3d(r_cv, img.tvec)
        fx, fy, cx, cy, dist = camera_intrinsics(cam)
        views.append(
            CaptureView(
                name=img.name,
                image_path=img_root / img.name,
                R=R,
                T=T,
                fx=fx,
                fy=fy,
                cx=cx,
                cy=cy,
                width=cam.width,
                height=cam.height,
                distortion=dist,
            )
        )
        ids = [point_index[int(p)] for p in img.point3d_ids if int(p) in point_index]
        visible.append(np.array(ids, dtype=np.int64) if ids else None)
    splits = holdout_splits([v.name for v in views], holdout_every) if views else {}

    def downscaled(view: CaptureView, image_path: Path, factor: int) -> Path | None:
        cand = root / f"{images_dir}_{factor}" / view.name
        return cand if cand.is_file() else None

    return build_capture_scene(
        name if name is not None else root.name,
        views,
        splits,
        problems,
        what,
        points=None if points is None else points.xyz,
        visible=visible,
        downscaled_path=downscaled,
        options=options,
    )


# The Hydra builder (``data=colmap``): the loader itself, its keyword arguments are the YAML's keys.
colmap_scene = load_colmap


# -- writing -------------------------------------------------------------------------------


def _camera_params(
    model: str, fx: float, fy: float, cx: float, cy: float, dist: Sequence[float]
) -> tuple[float, ...]:
    d = [float(v) for v in dist] + [0.0] * (4 - len(dist))
    fx, fy, cx, cy = float(fx), float(fy), float(cx), float(cy)
    if model == "SIMPLE_PINHOLE":
        return (fx, cx, cy)
    if model == "PINHOLE":
        return (fx, fy, cx, cy)
    if model == "SIMPLE_RADIAL":
        return (fx, cx, cy, d[0])
    if model == "RADIAL":
        return (fx, cx, cy, d[0], d[1])
    if model == "OPENCV":
        return (fx, fy, cx, cy, *d[:4])
    raise ValueError(f"camera_model must be one of {list(CAMERA_MODELS)}; got {model!r}.")


def export_colmap(
    scene: Scene,
    out_dir: str | Path,
    points: torch.Tensor | np.ndarray | None = None,
    points_rgb: torch.Tensor | np.ndarray | None = None,
    binary: bool = False,
    camera_model: str | None = None,
    distortion: Sequence[float] = (),
    sparse_subdir: str = "sparse/0",
) -> Path:
    """Write a scene as a COLMAP capture: ``images/<name>.png`` and a sparse model.

    Cameras with equal intrinsics share one COLMAP camera. Each image's 2D observations are
    the points in front of it that project into it (no occlusion test); a point's track lists
    those images. The scene's own frame is the COLMAP world frame.

    Args:
        scene: the scene (any camera type; images of one size).
        out_dir: output folder (created).
        points: ``(m, 3)`` world points to store as ``points3D`` (e.g. mesh vertices), or None.
        points_rgb: ``(m, 3)`` uint8 colours (default grey).
        binary: write ``.bin`` files instead of ``.txt``.
        camera_model: a COLMAP model name; default ``PINHOLE`` (``OPENCV`` with distortion;
            ``SIMPLE_*`` models need ``fx == fy``).
        distortion: ``(k1, k2, p1, p2)``: the images are *distorted* with it before writing
            (what a camera with that lens would have seen), so loading undistorts them back.
        sparse_subdir: where the model goes (``"sparse/0"`` or ``"sparse"``).

    Returns:
        ``out_dir``.
    """
    out = Path(out_dir).expanduser()
    model = camera_model or ("OPENCV" if has_distortion(distortion) else "PINHOLE")
    check_choice("camera_model", model, CAMERA_MODELS)
    arrays = export_arrays(scene)
    H, W, focal, pp = arrays.height, arrays.width, arrays.focal, arrays.principal_point
    one_focal = model.startswith("SIMPLE") or model == "RADIAL"
    if one_focal and not np.allclose(focal[:, 0], focal[:, 1], rtol=1e-6):
        raise ValueError(f"camera_model {model} needs fx == fy; got {focal.tolist()}.")
    pts = None if points is None else np.asarray(points, dtype=np.float64).reshape(-1, 3)
    (out / "images").mkdir(parents=True, exist_ok=True)
    sparse = out / sparse_subdir
    sparse.mkdir(parents=True, exist_ok=True)

    cam_ids: dict[tuple[float, ...], int] = {}
    camera_rows: list[ColmapCamera] = []
    image_rows: list[ColmapImage] = []
    tracks: dict[int, list[tuple[int, int]]] = {}
    for i in range(len(scene)):
        params = _camera_params(model, *focal[i], *pp[i], distortion)
        if params not in cam_ids:
            cam_ids[params] = len(cam_ids) + 1
            camera_rows.append(ColmapCamera(cam_ids[params], model, W, H, params))
        r_cv, t_cv = p3d_to_opencv_w2c(arrays.R[i], arrays.T[i])
        name = f"frame_{i:05d}.png"
        img = arrays.images[i]
        if has_distortion(distortion):
            img = distort_image(img, (*focal[i], *pp[i]), distortion)
        Image.fromarray(img).save(out / "images" / name)
        row = ColmapImage(i + 1, rotmat_to_qvec(r_cv), t_cv, cam_ids[params], name)
        if pts is not None:
            view = pts @ arrays.R[i] + arrays.T[i]
            u, v, inside = project_view_points(view, (*focal[i], *pp[i]), W, H)
            seen = np.nonzero(inside)[0]
            row.xys = np.stack([u[seen], v[seen]], -1)
            row.point3d_ids = seen + 1
            for k, p in enumerate(seen):
                tracks.setdefault(int(p), []).append((i + 1, k))
        image_rows.append(row)
    rgb = (
        np.full((0 if pts is None else len(pts), 3), 128, dtype=np.uint8)
        if points_rgb is None
        else np.asarray(points_rgb, dtype=np.uint8).reshape(-1, 3)
    )
    if binary:
        _write_binary(sparse, camera_rows, image_rows, pts, rgb, tracks)
    else:
        _write_text(sparse, camera_rows, image_rows, pts, rgb, tracks)
    return out


def _write_text(sparse, camera_rows, image_rows, pts, rgb, tracks) -> None:
    lines = ["# Camera list with one line of data per camera:"]
    lines += [
        f"{c.camera_id} {c.model} {c.width} {c.height} " + " ".join(repr(p) for p in c.params)
        for c in camera_rows
    ]
    (sparse / "cameras.txt").write_text("\n".join(lines) + "\n")
    lines = ["# Image list with two lines of data per image:"]
    for r in image_rows:
        q = " ".join(repr(float(v)) for v in r.qvec)
        t = " ".join(repr(float(v)) for v in r.tvec)
        lines.append(f"{r.image_id} {q} {t} {r.camera_id} {r.name}")
        lines.append(
            " ".join(
                f"{x!r} {y!r} {int(p)}"
                for (x, y), p in zip(r.xys.tolist(), r.point3d_ids.tolist(), strict=True)
            )
        )
    (sparse / "images.txt").write_text("\n".join(lines) + "\n")
    if pts is None:
        return
    lines = ["# 3D point list with one line of data per point:"]
    for k, p in enumerate(pts):
        track = " ".join(f"{im} {idx}" for im, idx in tracks.get(k, []))
        xyz = " ".join(repr(float(v)) for v in p)
        lines.append(f"{k + 1} {xyz} {' '.join(str(int(c)) for c in rgb[k])} 0.0 {track}".rstrip())
    (sparse / "points3D.txt").write_text("\n".join(lines) + "\n")


def _write_binary(sparse, camera_rows, image_rows, pts, rgb, tracks) -> None:
    with open(sparse / "cameras.bin", "wb") as f:
        f.write(struct.pack("<Q", len(camera_rows)))
        for c in camera_rows:
            f.write(struct.pack("<iiQQ", c.camera_id, CAMERA_MODELS[c.model][0], c.width, c.height))
            f.write(struct.pack(f"<{len(c.params)}d", *c.params))
    with open(sparse / "images.bin", "wb") as f:
        f.write(struct.pack("<Q", len(image_rows)))
        for r in image_rows:
            f.write(struct.pack("<idddddddi", r.image_id, *r.qvec, *r.tvec, r.camera_id))
            f.write(r.name.encode("utf-8") + b"\x00")
            f.write(struct.pack("<Q", len(r.point3d_ids)))
            for (x, y), p in zip(r.xys.tolist(), r.point3d_ids.tolist(), strict=True):
                f.write(struct.pack("<ddq", x, y, p))
    if pts is None:
        return
    with open(sparse / "points3D.bin", "wb") as f:
        f.write(struct.pack("<Q", len(pts)))
        for k, p in enumerate(pts):
            f.write(struct.pack("<QdddBBBd", k + 1, *p, *(int(c) for c in rgb[k]), 0.0))
            track = tracks.get(k, [])
            f.write(struct.pack("<Q", len(track)))
            for im, idx in track:
                f.write(struct.pack("<ii", im, idx))
