"""Real captures: what every capture format (nerfstudio, COLMAP, LLFF) shares.

A format reader turns its files into :class:`CaptureView` records (image file, PyTorch3D
extrinsics in the capture's own world frame, pinhole intrinsics in pixels, optional lens
distortion, mask and depth bounds), optional sparse points, and splits;
:func:`build_capture_scene` then reads the images (undistorting and downscaling them once),
normalises the world and returns a :class:`~nerf_lab.data.scene.Scene` with screen-space
:class:`~nerf_lab.cameras.PerspectiveCameras`.

Normalisation (every step switchable; all on by default) maps the capture frame to a frame
where the region of interest (ROI) fits ``[-1, 1]^3`` with +Y up:

1. ``orient_up``: rotate the mean camera up vector (view +Y) onto world +Y (the smallest such
   rotation), so orbits / turntables around +Y go around the scene.
2. ``recenter``: move the ROI's centre to the origin. The ROI is the box between the
   ``roi_percentile`` and ``100 - roi_percentile`` percentiles of the sparse points on each
   (rotated) axis when points exist; without points, the point closest (least squares) to
   every camera's optical axis, with a half-size of the median camera distance to it times
   the tangent of the median half field of view (the part of the scene every camera frames);
   if the optical axes are (nearly) parallel (forward-facing captures), the mean camera
   position with a half-size of the largest camera distance from it.
3. ``rescale``: scale uniformly so the ROI's half-size is 1.

The applied similarity is stored as ``Scene.world_transform``: a ``(4, 4)`` float64 matrix
``M = [[s Q, t], [0, 1]]`` for column vectors, ``p_normalised = s Q p_capture + t``
(``Q`` a rotation, ``s > 0``); its inverse maps renders / exports back to the capture frame.
Cameras follow: with row vectors ``X_view = X @ R + T``, ``R' = Q R`` and
``T' = s T - t^T Q R``, and view-space depths are multiplied by ``s``.

Depth range (``Scene.near`` / ``far``): with points, per camera the ``depth_percentile`` and
``100 - depth_percentile`` percentiles of the z-depths of the points it sees (its COLMAP
track when known, else the points in front of it that project into its image), widened by
``depth_margin`` (``near (1 - m)``, ``far (1 + m)``), then the smallest near and the largest
far over the cameras; with per-view depth bounds (LLFF), their min / max times ``s``;
otherwise the z-depths of the ROI box's corners (:func:`~nerf_lab.data.bounds.box_depth_range`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from nerf_lab.cameras import PerspectiveCameras, screen_intrinsics
from nerf_lab.data.bounds import box_depth_range
from nerf_lab.data.distortion import has_distortion, undistort_image
from nerf_lab.data.scene import Scene, raise_if_problems
from nerf_lab.data.views import parse_background
from nerf_lab.validate import check_choice, check_int, check_number

ROI_FROM = ("auto", "points", "cameras")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
# OpenCV (COLMAP) camera axes -> PyTorch3D view axes: x right -> left, y down -> up.
OPENCV_TO_P3D = np.diag([-1.0, -1.0, 1.0])
_ROTATION_ATOL = 1e-4


@dataclass
class CaptureView:
    """One photo of a capture, in the capture's own world frame (before normalisation).

    Attributes:
        name: the image's name (file path relative to the capture; splits and sorting use it).
        image_path: the full-resolution image file.
        R: ``(3, 3)`` PyTorch3D world-to-view rotation (``X_view = X_world @ R + T``).
        T: ``(3,)`` PyTorch3D world-to-view translation.
        fx, fy, cx, cy: pinhole intrinsics in pixels of the full-resolution image, principal
            point with the image's top-left corner at (0, 0) (COLMAP / nerfstudio).
        width, height: the full-resolution image size the intrinsics refer to.
        distortion: OpenCV ``(k1, k2, p1, p2[, k3])``; empty or zeros: none.
        mask_path: optional mask image (white = object); becomes the silhouette.
        bounds: optional ``(near, far)`` z-depths of the content in this view (LLFF).
    """

    name: str
    image_path: Path
    R: np.ndarray
    T: np.ndarray
    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int
    distortion: tuple[float, ...] = ()
    mask_path: Path | None = None
    bounds: tuple[float, float] | None = None


# -- poses ----------------------------------------------------------------------------------------


def rotation_problem(m: np.ndarray, atol: float = _ROTATION_ATOL) -> str | None:
    """``None`` if ``m`` is a finite 3x3 rotation, else a description of what is wrong."""
    m = np.asarray(m, dtype=np.float64)
    if m.shape != (3, 3):
        return f"rotation has shape {m.shape}, expected (3, 3)"
    if not np.isfinite(m).all():
        return "rotation has non-finite values"
    bad = []
    ortho = float(np.abs(m.T @ m - np.eye(3)).max())
    if ortho > atol:
        bad.append(f"max |R^T R - I| = {ortho:.3g}")
    det = float(np.linalg.det(m))
    if abs(det - 1.0) > atol:
        bad.append(f"det = {det:.6g} != 1")
    return f"not a rotation ({'; '.join(bad)})" if bad else None


def opencv_w2c_to_p3d(r_cv: np.ndarray, t_cv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """OpenCV / COLMAP world-to-camera ``X_cam = R_cv X + t`` -> PyTorch3D ``R``, ``T``.

    ``X_view = D X_cam`` with ``D = diag(-1, -1, 1)``; with row vectors
    ``X_view = X @ (D R_cv)^T + D t``, hence ``R = R_cv^T D`` and ``T = D t``.
    """
    return r_cv.T @ OPENCV_TO_P3D, OPENCV_TO_P3D @ t_cv


def p3d_to_opencv_w2c(R: np.ndarray, T: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The inverse of :func:`opencv_w2c_to_p3d`."""
    return (R @ OPENCV_TO_P3D).T, OPENCV_TO_P3D @ T


def camera_centers(R: np.ndarray, T: np.ndarray) -> np.ndarray:
    """``(n, 3)`` camera centres ``C = -R T`` (column form of ``-T @ R^T``) of ``(n, 3, 3)``
    rotations and ``(n, 3)`` translations."""
    return -np.einsum("nij,nj->ni", R, T)


def apply_similarity_to_extrinsics(
    R: np.ndarray, T: np.ndarray, world_transform: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Extrinsics of the same cameras in the frame ``p' = s Q p + t``.

    Args:
        R: ``(n, 3, 3)``; T: ``(n, 3)`` (PyTorch3D, row vectors).
        world_transform: ``(4, 4)`` similarity ``[[s Q, t], [0, 1]]``.

    Returns:
        ``R' = Q R`` and ``T' = s T - t^T Q R``: the same pixels for the moved points, with
        view-space depths multiplied by ``s``.
    """
    sq, t = world_transform[:3, :3], world_transform[:3, 3]
    s = float(np.cbrt(np.linalg.det(sq)))
    Q = sq / s
    R2 = np.einsum("ij,njk->nik", Q, R)
    T2 = s * T - np.einsum("j,njk->nk", t, R2)
    return R2, T2


def transform_points_np(world_transform: np.ndarray, points: np.ndarray) -> np.ndarray:
    """``(n, 3)`` points mapped by a ``(4, 4)`` column-vector transform."""
    return points @ world_transform[:3, :3].T + world_transform[:3, 3]


def rotation_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The smallest rotation taking unit direction ``a`` to unit direction ``b`` (3x3)."""
    a = a / np.linalg.norm(a)
    b = b / np.linalg.norm(b)
    v = np.cross(a, b)
    c = float(np.dot(a, b))
    if c < -1.0 + 1e-10:  # opposite: a half turn about any axis orthogonal to a
        axis = np.cross(a, [1.0, 0.0, 0.0])
        if np.linalg.norm(axis) < 1e-6:
            axis = np.cross(a, [0.0, 1.0, 0.0])
        axis /= np.linalg.norm(axis)
        return 2.0 * np.outer(axis, axis) - np.eye(3)
    vx = np.array([[0.0, -v[2], v[1]], [v[2], 0.0, -v[0]], [-v[1], v[0], 0.0]])
    return np.eye(3) + vx + vx @ vx / (1.0 + c)


def nearest_point_to_lines(origins: np.ndarray, directions: np.ndarray) -> tuple[np.ndarray, float]:
    """Least-squares point closest to lines ``o_i + t d_i``.

    Returns:
        The point ``(3,)`` and the conditioning ``lambda_min / n`` of the normal matrix
        ``sum_i (I - d_i d_i^T)`` (0 for parallel lines, 2/3 for lines in every direction).
    """
    d = directions / np.linalg.norm(directions, axis=1, keepdims=True)
    proj = np.eye(3)[None] - d[:, :, None] * d[:, None, :]
    A = proj.sum(0)
    b = np.einsum("nij,nj->i", proj, origins)
    cond = float(np.linalg.eigvalsh(A)[0]) / len(d)
    if cond < 1e-9:
        return origins.mean(0), cond
    return np.linalg.solve(A, b), cond


@dataclass
class Normalization:
    """Result of :func:`normalization_transform`.

    Attributes:
        world_transform: ``(4, 4)`` capture -> normalised frame (``p' = s Q p + t``).
        scale: ``s``.
        roi_center: ``(3,)`` the ROI's centre in the normalised frame.
        roi_half_size: the ROI's half-size in the normalised frame (1 after ``rescale``).
        roi_source: ``"points"`` or ``"cameras"``.
    """

    world_transform: np.ndarray
    scale: float
    roi_center: np.ndarray
    roi_half_size: float
    roi_source: str


# Below this conditioning (lambda_min / n of the axes' normal matrix) the optical axes count as
# parallel: sin^2 of the spread of the view directions, about 13 degrees.
PARALLEL_AXES_CONDITIONING = 0.05


def normalization_transform(
    R: np.ndarray,
    T: np.ndarray,
    half_fov: np.ndarray,
    points: np.ndarray | None = None,
    orient_up: bool = True,
    recenter: bool = True,
    rescale: bool = True,
    roi_percentile: float = 1.0,
) -> Normalization:
    """The similarity that normalises a capture (see the module docstring).

    Args:
        R: ``(n, 3, 3)``; T: ``(n, 3)``: PyTorch3D extrinsics in the capture frame.
        half_fov: ``(n,)`` half of each camera's smaller field of view (radians).
        points: ``(m, 3)`` sparse points in the capture frame, or None (ROI from cameras).
        orient_up, recenter, rescale: the three steps.
        roi_percentile: percent of points ignored at each end of each axis for the ROI box.

    Returns:
        The :class:`Normalization`.
    """
    centers = camera_centers(R, T)
    up = R[:, :, 1].mean(0)  # view +Y in world coordinates
    Q = np.eye(3)
    if orient_up and np.linalg.norm(up) > 1e-9:
        Q = rotation_between(up, np.array([0.0, 1.0, 0.0]))
    if points is not None and len(points):
        p_rot = points @ Q.T
        lo = np.percentile(p_rot, roi_percentile, axis=0)
        hi = np.percentile(p_rot, 100.0 - roi_percentile, axis=0)
        roi_center = 0.5 * (lo + hi)
        half = 0.5 * (hi - lo)  # per axis
        source = "points"
    else:
        c_rot = centers @ Q.T
        focus, cond = nearest_point_to_lines(c_rot, R[:, :, 2] @ Q.T)
        if cond >= PARALLEL_AXES_CONDITIONING:
            roi_center = focus
            dist = np.linalg.norm(c_rot - focus, axis=1)
            radius = float(np.median(dist) * np.tan(np.median(half_fov)))
        else:
            roi_center = c_rot.mean(0)
            radius = float(np.linalg.norm(c_rot - roi_center, axis=1).max())
        if not radius > 1e-9:  # e.g. one camera, or a panorama: no scale information
            radius = 1.0
        half = np.full(3, radius)
        source = "cameras"
    half = np.maximum(half, 1e-9)
    origin = roi_center if recenter else np.zeros(3)
    # Half-size of the origin-centred cube holding the ROI box.
    extent = float((np.abs(roi_center - origin) + half).max())
    s = 1.0 / extent if rescale else 1.0
    M = np.eye(4)
    M[:3, :3] = s * Q
    M[:3, 3] = -s * origin
    return Normalization(M, s, s * (roi_center - origin), s * float(half.max()), source)


def depth_range_from_points(
    R: np.ndarray,
    T: np.ndarray,
    points: np.ndarray,
    visible: Sequence[np.ndarray | None] | None = None,
    in_image: Callable[[int, np.ndarray], np.ndarray] | None = None,
    percentile: float = 1.0,
    margin: float = 0.1,
) -> tuple[float, float]:
    """``near`` / ``far`` from the z-depths of the points each camera sees.

    Args:
        R: ``(n, 3, 3)``; T: ``(n, 3)``: PyTorch3D extrinsics (same frame as ``points``).
        points: ``(m, 3)``.
        visible: per camera, indices of the points it observed (COLMAP tracks) or None.
        in_image: ``in_image(view, view_points (k, 3)) -> (k,) bool`` for cameras without
            ``visible``: which points project into the image.
        percentile: percent of each camera's depths ignored at each end.
        margin: ``near *= 1 - margin``, ``far *= 1 + margin``.

    Returns:
        ``(near, far)`` over every camera that sees at least one point.

    Raises:
        ValueError: no camera sees any point.
    """
    nears, fars = [], []
    for i in range(len(R)):
        z_all = points @ R[i][:, 2] + T[i][2]
        if visible is not None and visible[i] is not None and len(visible[i]):
            z = z_all[visible[i]]
        else:
            keep = z_all > 0
            if in_image is not None:
                view_pts = points @ R[i] + T[i]
                keep &= in_image(i, view_pts)
            z = z_all[keep]
        z = z[z > 0]
        if len(z) == 0:
            continue
        nears.append(float(np.percentile(z, percentile)) * (1.0 - margin))
        fars.append(float(np.percentile(z, 100.0 - percentile)) * (1.0 + margin))
    if not nears:
        raise ValueError("No camera sees any of the sparse points: cannot derive near / far.")
    far = max(fars)
    return max(min(nears), 1e-6 * far), far


def project_view_points(
    view_points: np.ndarray, intrinsics: Sequence[float], width: int, height: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixel coordinates of PyTorch3D view-space points (``u = cx - fx x / z``,
    ``v = cy - fy y / z``; +X left, +Y up; the image's top-left corner at (0, 0)).

    Args:
        view_points: ``(n_points, 3)`` view-space points.
        intrinsics: ``(fx, fy, cx, cy)`` in pixels.
        width, height: the image size ``W``, ``H``.

    Returns:
        ``u``, ``v``: ``(n_points,)`` (points with ``z <= 0`` land on the principal point);
        ``inside``: ``(n_points,)`` bool, ``z > 0`` and ``(u, v)`` in ``[0, W] x [0, H]``.
    """
    fx, fy, cx, cy = intrinsics
    z = view_points[:, 2]
    zs = np.where(z > 0, z, np.inf)
    u = cx - fx * view_points[:, 0] / zs
    v = cy - fy * view_points[:, 1] / zs
    inside = (z > 0) & (u >= 0) & (u <= width) & (v >= 0) & (v <= height)
    return u, v, inside


# -- images ---------------------------------------------------------------------------------------


def read_image(path: Path, where: str, problems: list[str]) -> np.ndarray | None:
    """``(H, W, 3)`` float32 RGB in [0, 1], or ``(H, W, 4)`` for images with alpha; None (and a
    recorded problem) if unreadable."""
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
                arr = np.asarray(im.convert("RGBA"), dtype=np.uint8)
            elif im.mode in ("RGB", "L", "P", "I;16", "I", "CMYK", "YCbCr"):
                arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
            else:
                problems.append(f"{where}: image {path} has unsupported mode {im.mode!r}")
                return None
    except (OSError, ValueError) as e:
        problems.append(f"{where}: cannot read image {path} ({e})")
        return None
    return arr.astype(np.float32) / 255.0


def read_mask(path: Path, where: str, problems: list[str]) -> np.ndarray | None:
    """``(H, W)`` float32 in [0, 1] (alpha if the file has alpha, else luminance)."""
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("RGBA", "LA"):
                arr = np.asarray(im.getchannel("A"), dtype=np.uint8)
            else:
                arr = np.asarray(im.convert("L"), dtype=np.uint8)
    except (OSError, ValueError) as e:
        problems.append(f"{where}: cannot read mask {path} ({e})")
        return None
    return arr.astype(np.float32) / 255.0


def resize_area(image: np.ndarray, size_wh: tuple[int, int], nearest: bool = False) -> np.ndarray:
    """Resize a float32 ``(H, W[, C])`` image with area averaging (or nearest)."""
    if (image.shape[1], image.shape[0]) == tuple(size_wh):
        return image
    chans = [image] if image.ndim == 2 else [image[..., c] for c in range(image.shape[2])]
    resample = Image.Resampling.NEAREST if nearest else Image.Resampling.BOX
    out = [
        np.asarray(Image.fromarray(c.astype(np.float32), mode="F").resize(size_wh, resample))
        for c in chans
    ]
    return out[0] if image.ndim == 2 else np.stack(out, axis=-1)


def downscaled_size(width: int, height: int, downscale: int) -> tuple[int, int]:
    """``(W', H')`` of an image downscaled by an integer factor (rounded, at least 1)."""
    return max(1, int(round(width / downscale))), max(1, int(round(height / downscale)))


def holdout_splits(names: Sequence[str], every: int = 8) -> dict[str, list[int]]:
    """Every ``every``-th view, counted in name order from the first, is ``"test"`` (the
    LLFF / mip-NeRF 360 convention); the rest is ``"train"``.

    Returns:
        ``{"train": [...], "test": [...]}``: indices into ``names``.
    """
    check_int("holdout_every", every, 2)
    order = sorted(range(len(names)), key=lambda i: names[i])
    test = sorted(order[k] for k in range(0, len(order), every))
    train = sorted(set(range(len(names))) - set(test))
    return {"train": train, "test": test}


def check_options(
    downscale: int,
    roi_from: str,
    roi_percentile: float,
    depth_percentile: float,
    depth_margin: float,
) -> None:
    """Validate the options every capture builder shares (``ValueError`` naming the key)."""
    check_int("downscale", downscale)
    check_choice("roi_from", roi_from, ROI_FROM)
    for key, value in (("roi_percentile", roi_percentile), ("depth_percentile", depth_percentile)):
        check_number(key, value, 0, 50, high_open=True)
    check_number("depth_margin", depth_margin, 0, 1, high_open=True)


@dataclass(frozen=True)
class CaptureOptions:
    """The reading and normalisation options every capture loader shares.

    Attributes:
        downscale: integer image downscaling factor.
        background: ``"black"``, ``"white"`` or RGB: the scene's background colour; images
            with alpha are composited over it.
        orient_up, recenter, rescale, roi_percentile, depth_percentile, depth_margin: see
            the module docstring.
        roi_from: ``"auto"`` (points when there are any), ``"points"`` (required) or
            ``"cameras"``.

    :func:`build_capture_scene` validates them (:func:`check_options`).
    """

    downscale: int = 1
    background: str | Sequence[float] = "black"
    orient_up: bool = True
    recenter: bool = True
    rescale: bool = True
    roi_from: str = "auto"
    roi_percentile: float = 1.0
    depth_percentile: float = 1.0
    depth_margin: float = 0.1

    @classmethod
    def pick(cls, arguments: Mapping[str, Any], **fixed: Any) -> CaptureOptions:
        """The options among a loader's arguments.

        Args:
            arguments: the loader's ``locals()``, taken as its first statement (so that it
                holds only the loader's parameters); keys that are not options are ignored,
                options the loader does not take keep their defaults.
            fixed: options the loader sets itself (e.g. LLFF's ``roi_from="points"``).
        """
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in arguments.items() if k in names}, **fixed)


def build_capture_scene(
    name: str,
    views: Sequence[CaptureView],
    splits: dict[str, Sequence[int]],
    problems: list[str],
    what: str,
    points: np.ndarray | None = None,
    visible: Sequence[np.ndarray | None] | None = None,
    downscaled_path: Callable[[CaptureView, Path, int], Path | None] | None = None,
    options: CaptureOptions | None = None,
) -> Scene:
    """Read, undistort and downscale the images of ``views``, normalise, make the Scene.

    Args:
        name: scene name.
        views: the photos (see :class:`CaptureView`).
        splits: split name -> view indices; ``"train"`` and ``"test"`` required.
        problems: problems found so far by the format reader; image problems are added and
            everything is raised at once (:class:`~nerf_lab.data.scene.SceneValidationError`).
        what: what is loaded (for the error message), e.g. ``"COLMAP capture DIR"``.
        points: ``(m, 3)`` sparse points in the capture frame, or None.
        visible: per view, the indices of the points it observed, or None.
        downscaled_path: ``f(view, image_path, downscale)`` -> a pre-downscaled copy of an
            image or mask if the capture has one (e.g. ``images_4/``), else None.
        options: downscaling, background, normalisation and depth range
            (:class:`CaptureOptions`; default: its defaults).

    Returns:
        The scene: ``PerspectiveCameras(in_ndc=False)``, silhouettes from masks (None
        without), ``near`` / ``far`` and ``world_transform``.
    """
    options = options if options is not None else CaptureOptions()
    downscale, roi_from = options.downscale, options.roi_from
    check_options(
        downscale, roi_from, options.roi_percentile, options.depth_percentile, options.depth_margin
    )
    bg = parse_background(options.background)
    has_points = points is not None and len(points) > 0
    if roi_from == "points" and not has_points and views:
        problems.append("roi_from='points' but the capture has no sparse points")
    if not views:
        problems.append("the capture has no images")
    with_masks = [v.mask_path is not None for v in views]
    if any(with_masks) and not all(with_masks):
        missing = [v.name for v in views if v.mask_path is None]
        problems.append(f"some frames have masks and others not (without: {missing})")
    for split in ("train", "test") if views else ():
        if split not in splits or not len(splits[split]):
            problems.append(f"the {split!r} split is empty")

    images: list[np.ndarray | None] = []
    masks: list[np.ndarray | None] = []
    intrinsics: list[tuple[float, float, float, float]] = []
    for view in views:
        where = view.name
        path, factor_done = view.image_path, 1
        if downscale > 1 and downscaled_path is not None:
            pre = downscaled_path(view, view.image_path, downscale)
            if pre is not None:
                path, factor_done = pre, downscale
        if not path.is_file():
            problems.append(f"{where}: image {path} does not exist")
            images.append(None)
            masks.append(None)
            intrinsics.append((0.0, 0.0, 0.0, 0.0))
            continue
        img = read_image(path, where, problems)
        images.append(img)
        masks.append(None)
        intrinsics.append((0.0, 0.0, 0.0, 0.0))
        if img is None:
            continue
        h, w = img.shape[:2]
        exp_w, exp_h = view.width, view.height
        if factor_done > 1:
            exp_w, exp_h = downscaled_size(view.width, view.height, factor_done)
            ok = abs(w - view.width / factor_done) <= 1 and abs(h - view.height / factor_done) <= 1
        else:
            ok = (w, h) == (exp_w, exp_h)
        if not ok:
            problems.append(
                f"{where}: image {path} is {w}x{h}, but its intrinsics are for "
                f"{view.width}x{view.height}" + (f" (/{factor_done})" if factor_done > 1 else "")
            )
            images[-1] = None
            continue
        sx, sy = w / view.width, h / view.height
        k = (view.fx * sx, view.fy * sy, view.cx * sx, view.cy * sy)
        if view.mask_path is not None:
            mpath = view.mask_path
            if factor_done > 1 and downscaled_path is not None:
                mpath = downscaled_path(view, view.mask_path, downscale) or view.mask_path
            if not mpath.is_file():
                problems.append(f"{where}: mask {mpath} does not exist")
            else:
                mask = read_mask(mpath, where, problems)
                if mask is not None and mask.shape != (h, w):
                    mask = resize_area(mask, (w, h), nearest=True)
                masks[-1] = mask
        if has_distortion(view.distortion):
            img = undistort_image(img, k, view.distortion)
            if masks[-1] is not None:
                masks[-1] = undistort_image(masks[-1], k, view.distortion, nearest=True)
        if factor_done == 1 and downscale > 1:
            size = downscaled_size(w, h, downscale)
            img = resize_area(img, size)
            if masks[-1] is not None:
                masks[-1] = resize_area(masks[-1], size, nearest=True)
            sx, sy = size[0] / w, size[1] / h
            k = (k[0] * sx, k[1] * sy, k[2] * sx, k[3] * sy)
        images[-1] = img
        intrinsics[-1] = k
    sizes: dict[tuple[int, int], list[str]] = {}
    for view, img in zip(views, images, strict=True):
        if img is not None:
            sizes.setdefault(img.shape[:2], []).append(view.name)
    if len(sizes) > 1:
        common = max(sizes, key=lambda s: len(sizes[s]))
        for size, names in sizes.items():
            if size != common:
                problems.append(
                    f"images {names} are {size[1]}x{size[0]} after loading, the others "
                    f"{common[1]}x{common[0]} (one image size per scene)"
                )
    raise_if_problems(problems, what)

    R = np.stack([v.R for v in views]).astype(np.float64)
    T = np.stack([v.T for v in views]).astype(np.float64)
    K = np.array(intrinsics, dtype=np.float64)  # (n, 4) fx fy cx cy at the final size
    H, W = images[0].shape[:2]
    half_fov = np.minimum(np.arctan(W / (2.0 * K[:, 0])), np.arctan(H / (2.0 * K[:, 1])))
    roi_points = points if (has_points and roi_from != "cameras") else None
    norm = normalization_transform(
        R,
        T,
        half_fov,
        roi_points,
        options.orient_up,
        options.recenter,
        options.rescale,
        options.roi_percentile,
    )
    M = norm.world_transform
    R2, T2 = apply_similarity_to_extrinsics(R, T, M)
    bounds = [v.bounds for v in views]
    if all(b is not None for b in bounds):
        near = min(b[0] for b in bounds) * norm.scale
        far = max(b[1] for b in bounds) * norm.scale
    elif has_points:
        pts_norm = transform_points_np(M, points)

        def in_image(i: int, view_pts: np.ndarray) -> np.ndarray:
            return project_view_points(view_pts, K[i], W, H)[2]

        near, far = depth_range_from_points(
            R2, T2, pts_norm, visible, in_image, options.depth_percentile, options.depth_margin
        )
    else:
        c, h = norm.roi_center, norm.roi_half_size
        near, far = box_depth_range(torch.from_numpy(R2), torch.from_numpy(T2), c - h, c + h)
    rgb = []
    for img in images:
        if img.shape[-1] == 4:
            alpha = img[..., 3:]
            img = img[..., :3] * alpha + np.asarray(bg, dtype=np.float32) * (1.0 - alpha)
        rgb.append(np.clip(img, 0.0, 1.0))
    silhouettes = None
    if all(m is not None for m in masks) and views and all(with_masks):
        silhouettes = torch.from_numpy((np.stack(masks) > 0.5).astype(np.float32))
    cameras = PerspectiveCameras(
        focal_length=torch.from_numpy(K[:, :2]).float(),
        principal_point=torch.from_numpy(K[:, 2:]).float(),
        R=torch.from_numpy(R2).float(),
        T=torch.from_numpy(T2).float(),
        in_ndc=False,
        image_size=((H, W),),
    )
    return Scene(
        name=name,
        cameras=cameras,
        images=torch.from_numpy(np.stack(rgb).astype(np.float32)),
        silhouettes=silhouettes,
        splits={k: torch.as_tensor(list(v), dtype=torch.long) for k, v in splits.items()},
        background_color=bg,
        near=float(near),
        far=float(far),
        world_transform=torch.from_numpy(M),
    )


# -- exporting ------------------------------------------------------------------------------------


@dataclass
class ExportArrays:
    """What the capture exporters write of a scene, as numpy arrays on the CPU.

    Attributes:
        height, width: the image size ``H``, ``W``.
        R: ``(n, 3, 3)`` float64 PyTorch3D world-to-view rotations.
        T: ``(n, 3)`` float64 translations.
        focal: ``(n, 2)`` float64 ``fx, fy`` in pixels.
        principal_point: ``(n, 2)`` float64 ``cx, cy`` in pixels (top-left corner at (0, 0)).
        images: ``(n, H, W, 3)`` uint8.
    """

    height: int
    width: int
    R: np.ndarray
    T: np.ndarray
    focal: np.ndarray
    principal_point: np.ndarray
    images: np.ndarray


def export_arrays(scene: Scene) -> ExportArrays:
    """The cameras (screen-space intrinsics) and 8-bit images of ``scene`` (any camera type)."""
    H, W = scene.image_size
    cams = scene.cameras.clone().to("cpu")
    focal, pp = screen_intrinsics(cams, (H, W))
    images = (scene.images.detach().cpu().clamp(0, 1) * 255.0).round().to(torch.uint8).numpy()
    return ExportArrays(
        height=H,
        width=W,
        R=cams.R.double().numpy(),
        T=cams.T.double().numpy(),
        focal=focal.double().numpy(),
        principal_point=pp.double().numpy(),
        images=images,
    )
