"""Lens distortion of real captures (OpenCV's radial-tangential model), removed once at load time.

Model (OpenCV, COLMAP's ``OPENCV`` / ``RADIAL`` / ``SIMPLE_RADIAL``, nerfstudio's ``OPENCV``),
on normalised image coordinates ``x = (u - cx) / fx``, ``y = (v - cy) / fy``,
``r^2 = x^2 + y^2``::

    radial = 1 + k1 r^2 + k2 r^4 + k3 r^6
    x_d = x radial + 2 p1 x y + p2 (r^2 + 2 x^2)
    y_d = y radial + p1 (r^2 + 2 y^2) + 2 p2 x y

Pixel convention: nerf_lab's (and COLMAP's / nerfstudio's) principal point has the image's
top-left *corner* at (0, 0), so pixel centres sit at ``+0.5``; OpenCV puts the first pixel
*centre* at (0, 0). The functions below convert (``cx - 0.5``) before calling OpenCV.

Undistorting keeps the pinhole intrinsics: the result is the image a pinhole camera with the
same ``fx, fy, cx, cy`` would have taken (pixels that map outside the source become
``border_value``).

OpenCV (``opencv-python-headless``, the ``captures`` extra) is imported only when an image
actually has to be (un)distorted.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

DISTORTION_KEYS = ("k1", "k2", "p1", "p2", "k3")


def distortion_vector(coeffs: Sequence[float]) -> np.ndarray:
    """``(k1, k2, p1, p2[, k3])`` (missing trailing values are 0) -> OpenCV's ``(5,)`` vector."""
    values = [float(c) for c in coeffs]
    if len(values) > 5:
        raise ValueError(f"At most 5 distortion coefficients (k1, k2, p1, p2, k3); got {values}.")
    return np.array(values + [0.0] * (5 - len(values)), dtype=np.float64)


def has_distortion(coeffs: Sequence[float]) -> bool:
    """Whether any coefficient is non-zero."""
    return bool(np.any(distortion_vector(coeffs) != 0.0))


def distort_normalized(xy: np.ndarray, coeffs: Sequence[float]) -> np.ndarray:
    """Apply the distortion model to normalised image coordinates.

    Args:
        xy: ``(n_points, 2)`` undistorted normalised coordinates ``(x, y)``.
        coeffs: ``(k1, k2, p1, p2[, k3])``.

    Returns:
        ``(n_points, 2)`` distorted normalised coordinates.
    """
    k1, k2, p1, p2, k3 = distortion_vector(coeffs)
    x, y = xy[..., 0], xy[..., 1]
    r2 = x * x + y * y
    radial = 1.0 + r2 * (k1 + r2 * (k2 + r2 * k3))
    xd = x * radial + 2.0 * p1 * x * y + p2 * (r2 + 2.0 * x * x)
    yd = y * radial + p1 * (r2 + 2.0 * y * y) + 2.0 * p2 * x * y
    return np.stack([xd, yd], axis=-1)


def _cv2():
    try:
        import cv2
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "Removing lens distortion needs OpenCV: pip install -e '.[captures]' "
            "(opencv-python-headless)."
        ) from e
    return cv2


def opencv_camera_matrix(fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    """OpenCV's 3x3 camera matrix from nerf_lab intrinsics (pixel-corner origin)."""
    return np.array([[fx, 0.0, cx - 0.5], [0.0, fy, cy - 0.5], [0.0, 0.0, 1.0]], dtype=np.float64)


def _pixel_grid(height: int, width: int) -> np.ndarray:
    """OpenCV pixel coordinates (first pixel centre at 0) of every pixel, ``(H, W, 2)``."""
    u, v = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
    return np.stack([u, v], axis=-1)


def undistort_maps(
    height: int, width: int, intrinsics: Sequence[float], coeffs: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    """For every pixel of the undistorted image, where to sample the distorted source.

    Args:
        height, width: image size in pixels.
        intrinsics: ``(fx, fy, cx, cy)`` (pixel-corner origin), shared by both images.
        coeffs: ``(k1, k2, p1, p2[, k3])``.

    Returns:
        ``map_x, map_y``: ``(H, W)`` float32 OpenCV source coordinates (for ``cv2.remap``).
    """
    fx, fy, cx, cy = (float(v) for v in intrinsics)
    grid = _pixel_grid(height, width)
    xy = np.stack([(grid[..., 0] - (cx - 0.5)) / fx, (grid[..., 1] - (cy - 0.5)) / fy], -1)
    xd = distort_normalized(xy.reshape(-1, 2), coeffs).reshape(height, width, 2)
    map_x = (xd[..., 0] * fx + (cx - 0.5)).astype(np.float32)
    map_y = (xd[..., 1] * fy + (cy - 0.5)).astype(np.float32)
    return map_x, map_y


def distort_maps(
    height: int, width: int, intrinsics: Sequence[float], coeffs: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    """For every pixel of the distorted image, where to sample the pinhole source: the inverse
    of :func:`undistort_maps` (same arguments and ``(H, W)`` float32 maps), found with OpenCV's
    iterative ``undistortPointsIter``."""
    cv2 = _cv2()
    fx, fy, cx, cy = (float(v) for v in intrinsics)
    K = opencv_camera_matrix(fx, fy, cx, cy)
    pts = _pixel_grid(height, width).reshape(-1, 1, 2)
    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-12)
    src = cv2.undistortPointsIter(pts, K, distortion_vector(coeffs), None, K, criteria)
    src = src.reshape(height, width, 2).astype(np.float32)
    return src[..., 0], src[..., 1]


def _remap(
    image: np.ndarray,
    maps: Callable[[int, int, Sequence[float], Sequence[float]], tuple[np.ndarray, np.ndarray]],
    intrinsics: Sequence[float],
    coeffs: Sequence[float],
    nearest: bool,
    border_value: float,
) -> np.ndarray:
    """``image`` resampled at ``maps(H, W, intrinsics, coeffs)`` (a copy without distortion)."""
    if not has_distortion(coeffs):
        return image.copy()
    cv2 = _cv2()
    map_x, map_y = maps(image.shape[0], image.shape[1], intrinsics, coeffs)
    interp = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
    return cv2.remap(
        image, map_x, map_y, interp, borderMode=cv2.BORDER_CONSTANT, borderValue=border_value
    )


def undistort_image(
    image: np.ndarray,
    intrinsics: Sequence[float],
    coeffs: Sequence[float],
    nearest: bool = False,
    border_value: float = 0.0,
) -> np.ndarray:
    """The image a pinhole camera with the same intrinsics would have taken.

    Args:
        image: ``(H, W)`` or ``(H, W, C)`` uint8 or float32.
        intrinsics: ``(fx, fy, cx, cy)`` in pixels (pixel-corner origin).
        coeffs: ``(k1, k2, p1, p2[, k3])``.
        nearest: nearest-neighbour sampling (masks) instead of bilinear.
        border_value: value of pixels whose source lies outside the image.

    Returns:
        The undistorted image, same shape and dtype.
    """
    return _remap(image, undistort_maps, intrinsics, coeffs, nearest, border_value)


def distort_image(
    image: np.ndarray,
    intrinsics: Sequence[float],
    coeffs: Sequence[float],
    nearest: bool = False,
    border_value: float = 0.0,
) -> np.ndarray:
    """The inverse of :func:`undistort_image`: what a camera with this lens would see, given the
    pinhole image (used to make distorted test captures); arguments as there, sources from
    :func:`distort_maps`.
    """
    return _remap(image, distort_maps, intrinsics, coeffs, nearest, border_value)
