"""Camera paths to render along: orbits, spirals, keyframe interpolation, nerfstudio JSON.

Every path is a batch of ``n_frames`` cameras *of the kind it is given*
(:class:`~nerf_lab.cameras.FoVPerspectiveCameras` for the built-in scenes and Blender,
:class:`~nerf_lab.cameras.PerspectiveCameras` for real captures) in PyTorch3D's convention
(``X_view = X_world @ R + T``; view +X left, +Y up, +Z forward): orbits and spirals copy the
intrinsics of ``like_cameras[0]``, interpolation interpolates the keyframes' intrinsics.
:func:`resize_cameras` adapts screen-space (pixel) intrinsics to another render size.

Spherical placement (:func:`orbit`, :func:`spiral`) follows
:func:`~nerf_lab.cameras.look_at_view_transform`: for ``up = +Y`` the camera centre is
``center + r (cos(e) sin(a), sin(e), cos(e) cos(a))``. **Elevation** ``e`` is the angle
of the camera above the plane through ``center`` perpendicular to ``up``: positive
elevation puts the camera on the ``+up`` side, looking *down* at the centre (a point
above the centre then projects above the image centre, as one expects). **Azimuth** ``a``
turns about ``up``, 0 on the ``+Z`` side of the centre, 90 on the ``+X`` side. For another
``up`` the same formula is used in the frame ``(e_x, up, e_z)``, with ``e_z`` the unit
projection of ``+Z`` onto the plane perpendicular to ``up`` (of ``+X`` when ``up`` is
parallel to ``Z``) and ``e_x = up x e_z``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nerf_lab.cameras import (
    CamerasBase,
    FoVPerspectiveCameras,
    PerspectiveCameras,
    get_image_size_tensor,
    look_at_view_transform,
    screen_intrinsics,
    so3_exp_map,
)
from nerf_lab.data.blender import c2w_to_p3d, p3d_to_c2w
from nerf_lab.fileio import atomic_write_public
from nerf_lab.validate import check_int, check_number, is_number

__all__ = [
    "TUTORIAL_TURN_RAD",
    "CameraPath",
    "forward_facing_spiral",
    "interpolate",
    "load_camera_path",
    "matrix_to_quaternion",
    "orbit",
    "orbit_positions",
    "quaternion_to_matrix",
    "resize_cameras",
    "save_camera_path",
    "slerp_quaternions",
    "spiral",
    "to_camera_kind",
    "tutorial_azimuths_deg",
    "turntable_cameras",
]

#: The tutorial's turntable turns the camera about +Y by ``linspace(-3.14, 3.14, n)``
#: radians (not +-pi: its first and last frames are 0.18 degrees apart).
TUTORIAL_TURN_RAD = (-3.14, 3.14)

Vec3 = Sequence[float] | torch.Tensor


# ---------------------------------------------------------------------------------------
# Validation helpers
# ---------------------------------------------------------------------------------------
def _vec3(name: str, value: Vec3) -> torch.Tensor:
    t = torch.as_tensor(value, dtype=torch.float64).detach().cpu()
    if t.shape != (3,) or not torch.isfinite(t).all():
        raise ValueError(f"{name} must be 3 finite numbers; got {value!r}.")
    return t


def _check_elevation(name: str, value: float) -> None:
    if not abs(value) < 90.0:
        raise ValueError(
            f"{name} must be in (-90, 90) degrees (at +-90 the view is parallel to up and the "
            f"camera's roll is undefined); got {value!r}."
        )


def _check_like(like: Any) -> CamerasBase:
    """``like`` must be a non-empty camera batch (any kind)."""
    if not isinstance(like, CamerasBase) or len(like) < 1:
        raise ValueError(
            "like_cameras must be a non-empty FoVPerspectiveCameras or PerspectiveCameras; "
            f"got {like!r}."
        )
    return like


# ---------------------------------------------------------------------------------------
# Spherical placement
# ---------------------------------------------------------------------------------------
def _spherical_frame(up: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Orthonormal ``(e_x, e_up, e_z)`` (float64) of the spherical angles for ``up``."""
    u = up / up.norm()
    ref = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    if abs(float(u @ ref)) > 0.999:
        ref = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    e_z = ref - (ref @ u) * u
    e_z = e_z / e_z.norm()
    e_x = torch.linalg.cross(u, e_z)
    return e_x, u, e_z


def orbit_positions(
    radius: torch.Tensor,
    elevation_deg: torch.Tensor,
    azimuth_deg: torch.Tensor,
    center: Vec3 = (0.0, 0.0, 0.0),
    up: Vec3 = (0.0, 1.0, 0.0),
) -> torch.Tensor:
    """Camera centres on spheres about ``center`` (pure; the module docstring's angles).

    Args:
        radius, elevation_deg, azimuth_deg: ``(n_frames,)`` (or broadcastable) values.
        center: the point looked at, 3 values.
        up: world up direction, 3 values (need not be unit length).

    Returns:
        ``(n_frames, 3)`` float64 camera centres.
    """
    c = _vec3("center", center)
    u = _vec3("up", up)
    if not float(u.norm()) > 0:
        raise ValueError(f"up must be a non-zero vector; got {up!r}.")
    e_x, e_up, e_z = _spherical_frame(u)
    r, el, az = torch.broadcast_tensors(
        torch.as_tensor(radius, dtype=torch.float64),
        torch.deg2rad(torch.as_tensor(elevation_deg, dtype=torch.float64)),
        torch.deg2rad(torch.as_tensor(azimuth_deg, dtype=torch.float64)),
    )
    r, el, az = r.reshape(-1, 1), el.reshape(-1, 1), az.reshape(-1, 1)
    offset = r * (
        torch.cos(el) * torch.sin(az) * e_x
        + torch.sin(el) * e_up
        + torch.cos(el) * torch.cos(az) * e_z
    )
    return c + offset


def _look_at_cameras(eye: torch.Tensor, center: Vec3, up: Vec3, like: CamerasBase) -> Any:
    """Cameras of ``like``'s kind at ``eye (n_frames, 3)`` looking at ``center``, with the
    intrinsics of ``like[0]`` (fov, znear, zfar, aspect ratio; or focal length, principal
    point, image size)."""
    base = _check_like(like)[[0] * len(eye)]
    at = _vec3("center", center)[None].expand_as(eye)
    u = _vec3("up", up)[None].expand_as(eye)
    R, T = look_at_view_transform(eye=eye, at=at, up=u, device="cpu")
    return base._replace(R=R.to(base.R), T=T.to(base.T))


def tutorial_azimuths_deg(n_frames: int) -> torch.Tensor:
    """Azimuths (degrees, float64, ``(n_frames,)``) of the tutorial's turntable.

    The tutorial's camera ``n`` has ``R = so3_exp_map([0, phi_n, 0])``, ``T = (0, 0, d)``
    with ``phi = linspace(-3.14, 3.14, n_frames)``: its centre is ``-d (sin phi, 0, cos
    phi)``, i.e. azimuth ``phi + 180`` degrees in :func:`orbit`'s convention.
    """
    check_int("n_frames", n_frames)
    phi = torch.linspace(*TUTORIAL_TURN_RAD, n_frames, dtype=torch.float64)
    return torch.rad2deg(phi) + 180.0


def orbit(
    n_frames: int,
    radius: float,
    elevation_deg: float,
    like_cameras: CamerasBase,
    center: Vec3 = (0.0, 0.0, 0.0),
    up: Vec3 = (0.0, 1.0, 0.0),
    azimuth_deg: Sequence[float] | torch.Tensor | None = None,
) -> Any:
    """A turn about ``up`` at a fixed ``radius`` and elevation, looking at ``center``.

    With ``elevation_deg=0``, ``center`` at the origin and ``up = +Y`` this is exactly the
    tutorial's turntable (``nerf_lab.trainer.turntable_cameras``), frame for frame.

    Args:
        n_frames: number of cameras.
        radius: distance of every camera centre from ``center``.
        elevation_deg: in (-90, 90); positive: above the centre, looking down (see the
            module docstring).
        like_cameras: the kind, the intrinsics (znear, zfar, aspect ratio, fov, degrees; or
            focal length, principal point, image size) and the device of the cameras are
            those of ``like_cameras[0]``.
        center: the point looked at (projects to the image centre of every frame).
        up: world up direction.
        azimuth_deg: ``(n_frames,)`` azimuths; ``None``: the tutorial's
            (:func:`tutorial_azimuths_deg`: ``180 + degrees(linspace(-3.14, 3.14, n))``).

    Returns:
        ``n_frames`` cameras of ``like_cameras``' kind.
    """
    check_int("n_frames", n_frames)
    _check_like(like_cameras)
    radius = check_number("radius", radius, 0, low_open=True)
    elevation_deg = check_number("elevation_deg", elevation_deg)
    _check_elevation("elevation_deg", elevation_deg)
    if azimuth_deg is None:
        az = tutorial_azimuths_deg(n_frames)
    else:
        az = torch.as_tensor(azimuth_deg, dtype=torch.float64).reshape(-1)
        if az.shape != (n_frames,) or not torch.isfinite(az).all():
            raise ValueError(
                f"azimuth_deg must hold n_frames={n_frames} finite values; got shape "
                f"{tuple(az.shape)}."
            )
    eye = orbit_positions(
        torch.full((n_frames,), radius, dtype=torch.float64),
        torch.full((n_frames,), elevation_deg, dtype=torch.float64),
        az,
        center,
        up,
    )
    return _look_at_cameras(eye, center, up, like_cameras)


def spiral(
    n_frames: int,
    radius: float,
    like_cameras: CamerasBase,
    elevation_deg: float = 0.0,
    elevation_amplitude_deg: float = 20.0,
    radius_amplitude: float = 0.1,
    n_turns: float = 1.0,
    n_oscillations: int = 2,
    start_azimuth_deg: float = 0.0,
    center: Vec3 = (0.0, 0.0, 0.0),
    up: Vec3 = (0.0, 1.0, 0.0),
) -> Any:
    """A loopable spiral: an orbit whose elevation oscillates and whose radius breathes.

    With ``s = i / n_frames`` for frame ``i`` (the last frame stops one step short of the
    first, so a looping video does not repeat a frame):

    * azimuth ``= start_azimuth_deg + 360 n_turns s``,
    * elevation ``= elevation_deg + elevation_amplitude_deg sin(2 pi n_oscillations s)``,
    * radius ``= radius (1 + radius_amplitude cos(2 pi n_oscillations s))``.

    The path closes on itself when ``n_turns`` is an integer.

    Args:
        n_frames: number of cameras.
        radius: mean distance from ``center``.
        like_cameras: the kind and intrinsics of ``like_cameras[0]`` (as :func:`orbit`).
        elevation_deg: mean elevation; ``|elevation_deg| + elevation_amplitude_deg`` must
            be below 90.
        elevation_amplitude_deg: >= 0.
        radius_amplitude: relative breathing of the radius, in [0, 1).
        n_turns: turns about ``up`` (> 0).
        n_oscillations: periods of the elevation and radius oscillations (>= 0).
        start_azimuth_deg: azimuth of frame 0.
        center, up: as in :func:`orbit`.

    Returns:
        ``n_frames`` cameras of ``like_cameras``' kind looking at ``center``.
    """
    check_int("n_frames", n_frames)
    _check_like(like_cameras)
    radius = check_number("radius", radius, 0, low_open=True)
    elevation_deg = check_number("elevation_deg", elevation_deg)
    amp = check_number("elevation_amplitude_deg", elevation_amplitude_deg, 0)
    _check_elevation("|elevation_deg| + elevation_amplitude_deg", abs(elevation_deg) + amp)
    r_amp = check_number("radius_amplitude", radius_amplitude, 0, 1, high_open=True)
    n_turns = check_number("n_turns", n_turns, 0, low_open=True)
    check_int("n_oscillations", n_oscillations, 0)
    start = check_number("start_azimuth_deg", start_azimuth_deg)
    s = torch.arange(n_frames, dtype=torch.float64) / n_frames
    phase = 2.0 * math.pi * n_oscillations * s
    eye = orbit_positions(
        radius * (1.0 + r_amp * torch.cos(phase)),
        elevation_deg + amp * torch.sin(phase),
        start + 360.0 * n_turns * s,
        center,
        up,
    )
    return _look_at_cameras(eye, center, up, like_cameras)


def forward_facing_spiral(
    cameras: CamerasBase,
    near: float,
    far: float,
    n_frames: int,
    n_rotations: float = 2.0,
    z_rate: float = 0.5,
    radius_percentile: float = 90.0,
) -> Any:
    """The original NeRF's render path for forward-facing (LLFF) captures
    (``render_path_spiral``), in PyTorch3D's convention.

    In the frame of the cameras' mean pose (:func:`nerf_lab.ndc.mean_pose`: its centre, its
    left / up / forward axes), frame ``i`` with ``a = 2 pi n_rotations i / n_frames`` sits at
    ``(-r_x cos a, -r_y sin a, r_z sin(z_rate a))`` (NeRF's ``(cos, -sin, -sin)`` in OpenGL
    axes) and looks at the point ``focus`` ahead of the mean centre, with the mean up.
    ``r`` is the ``radius_percentile`` percentile of the cameras' absolute offsets from the
    mean centre along each axis; ``focus = 1 / (0.25 / (0.9 near) + 0.75 / (5 far))`` (NeRF's
    ``dt = 0.75`` blend of the close and far depths, in disparity).

    Args:
        cameras: the capture's (training) cameras; the frames have the kind and intrinsics
            of ``cameras[0]``.
        near, far: the capture's depth bounds (> 0, ``near < far``).
        n_frames: number of frames (the last stops one step short of the first).
        n_rotations: turns of the spiral (NeRF: 2).
        z_rate: forward oscillation frequency relative to the turns (NeRF: 0.5).
        radius_percentile: in [0, 100].

    Returns:
        ``n_frames`` cameras.
    """
    from nerf_lab.ndc import mean_pose

    check_int("n_frames", n_frames)
    _check_like(cameras)
    near = check_number("near", near, 0, low_open=True)
    far = check_number("far", far, 0, low_open=True)
    if not near < far:
        raise ValueError(f"near must be < far; got near={near!r}, far={far!r}.")
    n_rotations = check_number("n_rotations", n_rotations, 0, low_open=True)
    z_rate = check_number("z_rate", z_rate)
    pct = check_number("radius_percentile", radius_percentile, 0, 100)
    R_mean, T_mean = mean_pose(cameras.R, cameras.T)
    axes = R_mean[0]  # columns: left, up, forward (world)
    centre = -T_mean[0] @ axes.T
    R = cameras.R.detach().cpu().double()
    T = cameras.T.detach().cpu().double()
    offsets = (-torch.bmm(T[:, None, :], R.transpose(1, 2))[:, 0] - centre) @ axes
    radii = torch.quantile(offsets.abs(), pct / 100.0, dim=0)
    focus = 1.0 / (0.25 / (0.9 * near) + 0.75 / (5.0 * far))
    a = 2.0 * math.pi * n_rotations * torch.arange(n_frames, dtype=torch.float64) / n_frames
    local = torch.stack([-torch.cos(a), -torch.sin(a), torch.sin(z_rate * a)], -1) * radii
    eye = centre + local @ axes.T
    at = centre + focus * axes[:, 2]
    return _look_at_cameras(eye, at, axes[:, 1], cameras)


# ---------------------------------------------------------------------------------------
# Rotations: quaternions and slerp
# ---------------------------------------------------------------------------------------
def matrix_to_quaternion(matrix: torch.Tensor) -> torch.Tensor:
    """Unit quaternions ``(w, x, y, z)`` with ``w >= 0`` of rotation matrices.

    The matrix is read in the column-vector sense (``v' = M v``), as PyTorch3D's
    ``matrix_to_quaternion``; the largest of ``|w|, |x|, |y|, |z|`` is recovered from the
    diagonal first, so the result is accurate for every rotation (also near 180 degrees).

    Args:
        matrix: ``(..., 3, 3)`` rotation matrices.

    Returns:
        ``(..., 4)``.
    """
    if matrix.shape[-2:] != (3, 3):
        raise ValueError(f"matrix must have shape (..., 3, 3); got {tuple(matrix.shape)}.")
    m = matrix
    m00, m11, m22 = m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]
    # 4 * (w^2, x^2, y^2, z^2)
    sq = torch.stack(
        [1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22],
        dim=-1,
    )
    # Candidate quaternions, each scaled by 4 * (its largest component).
    cands = torch.stack(
        [
            torch.stack(
                [sq[..., 0], m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0],
                 m[..., 1, 0] - m[..., 0, 1]], dim=-1),
            torch.stack(
                [m[..., 2, 1] - m[..., 1, 2], sq[..., 1], m[..., 1, 0] + m[..., 0, 1],
                 m[..., 0, 2] + m[..., 2, 0]], dim=-1),
            torch.stack(
                [m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] + m[..., 0, 1], sq[..., 2],
                 m[..., 2, 1] + m[..., 1, 2]], dim=-1),
            torch.stack(
                [m[..., 1, 0] - m[..., 0, 1], m[..., 0, 2] + m[..., 2, 0],
                 m[..., 2, 1] + m[..., 1, 2], sq[..., 3]], dim=-1),
        ],
        dim=-2,
    )  # fmt: skip
    best = sq.argmax(dim=-1)
    q = torch.gather(cands, -2, best[..., None, None].expand(*best.shape, 1, 4))[..., 0, :]
    q = q / q.norm(dim=-1, keepdim=True)
    return torch.where(q[..., :1] < 0, -q, q)


def quaternion_to_matrix(quaternions: torch.Tensor) -> torch.Tensor:
    """Rotation matrices (column-vector sense) of quaternions ``(w, x, y, z)``.

    Args:
        quaternions: ``(..., 4)``, normalised here.

    Returns:
        ``(..., 3, 3)``.
    """
    q = quaternions / quaternions.norm(dim=-1, keepdim=True)
    w, x, y, z = q.unbind(-1)
    out = torch.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w),
            2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w),
            2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    )  # fmt: skip
    return out.reshape(*q.shape[:-1], 3, 3)


def slerp_quaternions(q0: torch.Tensor, q1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical linear interpolation along the shorter arc (``q`` and ``-q`` are one
    rotation, so ``q1`` is flipped when ``q0 . q1 < 0``).

    Args:
        q0, q1: ``(n, 4)`` unit quaternions.
        t: ``(n,)`` in [0, 1].

    Returns:
        ``(n, 4)`` unit quaternions; ``t = 0`` gives ``q0``, ``t = 1`` gives ``+-q1``.
    """
    dot = (q0 * q1).sum(-1, keepdim=True)
    q1 = torch.where(dot < 0, -q1, q1)
    dot = dot.abs().clamp(max=1.0)
    theta = torch.acos(dot)
    sin_theta = torch.sin(theta)
    t = t[:, None].to(q0.dtype)
    near = sin_theta < 1e-6  # (almost) the same rotation: linear interpolation is exact
    safe = torch.where(near, torch.ones_like(sin_theta), sin_theta)
    w0 = torch.where(near, 1 - t, torch.sin((1 - t) * theta) / safe)
    w1 = torch.where(near, t, torch.sin(t * theta) / safe)
    q = w0 * q0 + w1 * q1
    return q / q.norm(dim=-1, keepdim=True)


def _segment_params(n_keyframes: int, n_frames: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Segment index ``(n_frames,)`` and parameter ``t`` in [0, 1) of every frame; the
    ``n_frames - 1`` steps are shared as evenly as possible (earlier segments get the
    remainder) and the last frame is ``(n_keyframes - 2, 1.0)``."""
    n_seg = n_keyframes - 1
    base, extra = divmod(n_frames - 1, n_seg)
    seg_idx, ts = [], []
    for s in range(n_seg):
        m = base + (1 if s < extra else 0)
        seg_idx += [s] * m
        ts += [j / m for j in range(m)]
    seg_idx.append(n_seg - 1)
    ts.append(1.0)
    return torch.tensor(seg_idx), torch.tensor(ts, dtype=torch.float64)


def interpolate(keyframe_cameras: CamerasBase, n_frames: int) -> Any:
    """A smooth path through keyframes: slerp of rotations, lerp of camera centres.

    Interpolation is in camera-centre space: the centre ``C = -T R^T`` moves on straight
    lines between keyframe centres and the rotation along the shortest arc (quaternion
    slerp); ``T = -C R`` is recomputed. The intrinsics are interpolated linearly (znear,
    zfar, aspect ratio and fov of ``FoVPerspectiveCameras``; focal length and principal point
    of ``PerspectiveCameras``, whose keyframes must share one image size). The
    ``n_frames - 1`` steps are shared as evenly as possible between the ``K - 1`` segments
    (earlier segments get one more when they do not divide), so **every keyframe is a frame**
    (its ``R``, ``T`` and intrinsics copied exactly): keyframe ``k`` is frame ``sum of the
    steps of segments < k``; with ``n_frames - 1 = m (K - 1)`` it is frame ``k m``.

    Args:
        keyframe_cameras: ``K >= 2`` cameras (either kind).
        n_frames: ``>= K``.

    Returns:
        ``n_frames`` cameras of the keyframes' kind (on ``keyframe_cameras.device``).
    """
    if not isinstance(keyframe_cameras, CamerasBase):
        raise ValueError(
            "keyframe_cameras must be FoVPerspectiveCameras or PerspectiveCameras; got "
            f"{type(keyframe_cameras)!r}."
        )
    k = len(keyframe_cameras)
    if k < 2:
        raise ValueError(f"keyframe_cameras must hold at least 2 cameras; got {k}.")
    check_int("n_frames", n_frames, k)
    cams = keyframe_cameras
    size = cams.get_image_size()
    if size is not None and not bool((size == size[:1]).all()):
        raise ValueError(
            f"keyframe_cameras must share one image_size to be interpolated; got {size.tolist()}."
        )
    R = cams.R.detach().cpu().double()
    T = cams.T.detach().cpu().double()
    C = -torch.bmm(T[:, None, :], R.transpose(1, 2))[:, 0]
    # Quaternion of the camera-to-world rotation R^T (column-vector sense).
    q = matrix_to_quaternion(R.transpose(1, 2))
    seg, t = _segment_params(k, n_frames)
    q_t = slerp_quaternions(q[seg], q[seg + 1], t)
    R_out = quaternion_to_matrix(q_t).transpose(1, 2)
    C_out = C[seg] + t[:, None] * (C[seg + 1] - C[seg])
    T_out = -torch.bmm(C_out[:, None, :], R_out)[:, 0]
    # Frames that are keyframes: exact copies.
    key_frame = (t == 0.0) | (t == 1.0)
    key_index = torch.where(t == 1.0, seg + 1, seg)
    R_out[key_frame] = R[key_index[key_frame]]
    T_out[key_frame] = T[key_index[key_frame]]

    def lerp(v: torch.Tensor) -> torch.Tensor:
        v = v.detach().cpu().double()
        w = t.view(-1, *([1] * (v.dim() - 1)))
        out = v[seg] + w * (v[seg + 1] - v[seg])
        out[key_frame] = v[key_index[key_frame]]
        return out.to(torch.float32)

    fields: dict[str, Any] = {"R": R_out.float(), "T": T_out.float()}
    for name in type(cams)._FIELDS:
        value = getattr(cams, name)
        if name not in fields and value is not None:
            fields[name] = lerp(value)
    return type(cams)(device=cams.device, **cams._shared_kwargs(), **fields)


def resize_cameras(cameras: CamerasBase, image_size: Sequence[int]) -> CamerasBase:
    """The same cameras for renders of ``image_size = (H', W')``.

    Screen-space ``PerspectiveCameras`` (``in_ndc=False``: intrinsics in pixels of their own
    ``image_size``) get their focal lengths and principal points scaled by ``W' / W`` (x)
    and ``H' / H`` (y) and ``image_size = (H', W')``, so every pixel of the new size sees
    what the same fraction of the old image saw (a different aspect ratio stretches the
    view). Cameras whose intrinsics do not depend on the image size (NDC
    ``PerspectiveCameras``, ``FoVPerspectiveCameras``, whose fov is that of the shorter side)
    are returned unchanged.

    Args:
        cameras: any camera batch.
        image_size: ``(H', W')`` positive integers.

    Returns:
        Cameras of the same kind.
    """
    hw = [int(v) for v in image_size]
    if len(hw) != 2 or min(hw) < 1:
        raise ValueError(f"image_size must be two positive integers; got {image_size!r}.")
    if not isinstance(cameras, PerspectiveCameras) or cameras.in_ndc():
        return cameras
    n = len(cameras)
    old = get_image_size_tensor(cameras.get_image_size(), n, cameras.device)
    new = torch.tensor(hw, dtype=torch.float32, device=cameras.device).expand(n, 2)
    scale_xy = (new / old).flip(-1)  # (W'/W, H'/H)
    return cameras._replace(
        focal_length=cameras.focal_length * scale_xy,
        principal_point=cameras.principal_point * scale_xy,
        image_size=new.clone(),
    )


def to_camera_kind(cameras: CamerasBase, like: CamerasBase, image_size: Sequence[int]) -> Any:
    """``cameras`` as cameras of ``like``'s kind, for renders of ``image_size = (H, W)``.

    The same kind: :func:`resize_cameras`. ``FoVPerspectiveCameras`` to screen-space
    ``PerspectiveCameras``: their pixel intrinsics at ``image_size``
    (:func:`~nerf_lab.cameras.screen_intrinsics`). Other conversions are not needed by the
    renders (a ``FoVPerspectiveCameras`` cannot hold ``fx != fy`` or an off-centre principal
    point) and return the cameras resized.
    """
    hw = [int(v) for v in image_size]
    if isinstance(cameras, FoVPerspectiveCameras) and isinstance(like, PerspectiveCameras):
        if like.in_ndc():
            return cameras
        focal, pp = screen_intrinsics(cameras, hw)
        return PerspectiveCameras(
            focal_length=focal, principal_point=pp, R=cameras.R, T=cameras.T,
            in_ndc=False, image_size=(hw,), device=cameras.device,
        )  # fmt: skip
    return resize_cameras(cameras, hw)


# ---------------------------------------------------------------------------------------
# nerfstudio camera-path JSON
# ---------------------------------------------------------------------------------------
@dataclass
class CameraPath:
    """A camera path read from (or to be written as) nerfstudio's camera-path JSON.

    Attributes:
        cameras: ``n_frames`` cameras.
        image_size: ``(H, W)`` of the renders (``render_height``, ``render_width``).
        fps: frames per second of the video.
        seconds: duration of the video.
    """

    cameras: FoVPerspectiveCameras | PerspectiveCameras
    image_size: tuple[int, int]
    fps: float
    seconds: float


def _vertical_fov_from_p3d(fov_deg: float, height: int, width: int) -> float:
    """Vertical fov (degrees; nerfstudio / three.js) from PyTorch3D's (shorter side)."""
    if height <= width:
        return fov_deg
    half = math.tan(math.radians(fov_deg) / 2.0) * height / width
    return math.degrees(2.0 * math.atan(half))


def _p3d_fov_from_vertical(fov_deg: float, height: int, width: int) -> float:
    """PyTorch3D's fov (degrees, shorter side) from the vertical fov (degrees)."""
    if height <= width:
        return fov_deg
    half = math.tan(math.radians(fov_deg) / 2.0) * width / height
    return math.degrees(2.0 * math.atan(half))


def _rigid_c2w(value: Any, where: str) -> np.ndarray:
    try:
        m = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: camera_to_world is not 16 numbers ({e}).") from None
    if m.shape not in ((16,), (4, 4)):
        raise ValueError(f"{where}: camera_to_world must hold 16 numbers; got shape {m.shape}.")
    m = m.reshape(4, 4)
    if not np.isfinite(m).all():
        raise ValueError(f"{where}: camera_to_world has non-finite values.")
    r = m[:3, :3]
    if not np.allclose(m[3], [0, 0, 0, 1], atol=1e-4) or (
        np.abs(r.T @ r - np.eye(3)).max() > 1e-4 or abs(np.linalg.det(r) - 1) > 1e-4
    ):
        raise ValueError(
            f"{where}: camera_to_world is not a rigid transform (rotation + translation, last "
            f"row 0 0 0 1); got {m.tolist()}."
        )
    return m


#: Per-frame pixel intrinsics nerf_lab adds to a camera-path JSON for ``PerspectiveCameras``
#: (nerfstudio's transforms.json names; nerfstudio's viewer ignores them).
PIXEL_KEYS = ("fl_x", "fl_y", "cx", "cy")


def _pixel_intrinsics(frame: dict[str, Any], where: str) -> list[float] | None:
    """``[fl_x, fl_y, cx, cy]`` of a camera-path frame, or None when it has none of them."""
    present = [k for k in PIXEL_KEYS if k in frame]
    if not present:
        return None
    values = [frame.get(k) for k in PIXEL_KEYS]
    if len(present) < len(PIXEL_KEYS) or any(not is_number(v) for v in values):
        raise ValueError(f"{where}: {list(PIXEL_KEYS)} must all be finite numbers; got {values}.")
    if not (values[0] > 0 and values[1] > 0):
        raise ValueError(f"{where}: fl_x, fl_y must be > 0; got {values[:2]}.")
    return [float(v) for v in values]


def load_camera_path(
    path: str | Path, znear: float | None = None, zfar: float | None = None
) -> CameraPath:
    """Read a nerfstudio camera-path JSON (as its viewer exports it).

    Reads ``render_height``, ``render_width``, ``camera_path: [{camera_to_world, fov,
    ...}]`` (``camera_to_world``: 16 numbers, a row-major 4x4 OpenGL camera-to-world
    matrix, +X right, +Y up, looking along -Z; ``fov``: *vertical* field of view in degrees,
    as three.js), and ``fps`` / ``seconds`` when present (``fps`` defaults to
    ``n_frames / seconds``, else 30; ``seconds`` to ``n_frames / fps``). Poses convert with
    :func:`nerf_lab.data.blender.c2w_to_p3d`; the fov becomes PyTorch3D's (that of the
    shorter image side). Other keys (``keyframes``, ``aspect``, ``smoothness_value``, ...)
    are ignored; only ``camera_type: "perspective"`` (or no ``camera_type``) is supported.

    Frames with pixel intrinsics ``fl_x``, ``fl_y``, ``cx``, ``cy`` (at ``render_height`` x
    ``render_width``; written by :func:`save_camera_path` for ``PerspectiveCameras``, e.g. a
    capture's off-centre principal point) give screen-space ``PerspectiveCameras`` with
    ``image_size = (render_height, render_width)``; either every frame has them or none.

    The poses are taken to be in this scene's world frame: a path exported by nerfstudio
    for a nerfstudio-trained model is in *that* model's (normalised) frame.

    Args:
        path: the JSON file.
        znear, zfar: the cameras' clipping planes; ``None``: the file's ``znear`` /
            ``zfar`` keys (written by :func:`save_camera_path`), else 1 and 100 (the
            ``FoVPerspectiveCameras`` defaults; they do not affect ray-sampled renders).

    Returns:
        The :class:`CameraPath`.

    Raises:
        FileNotFoundError: no such file.
        ValueError: invalid JSON or content, naming the key and the value.
    """
    path = Path(path)
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e}).") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: expected a JSON object; got {type(meta).__name__}.")
    camera_type = meta.get("camera_type", "perspective")
    if camera_type != "perspective":
        raise ValueError(
            f"{path}: camera_type={camera_type!r} is not supported (only 'perspective')."
        )
    size = []
    for key in ("render_height", "render_width"):
        v = meta.get(key)
        if not is_number(v) or v != int(v) or v < 1:
            raise ValueError(f"{path}: {key} must be a positive integer; got {v!r}.")
        size.append(int(v))
    H, W = size
    frames = meta.get("camera_path")
    if not isinstance(frames, list) or not frames:
        raise ValueError(f"{path}: camera_path must be a non-empty list; got {frames!r:.80}.")
    Rs, Ts, fovs, pixels = [], [], [], []
    for i, fr in enumerate(frames):
        where = f"{path}: camera_path[{i}]"
        if not isinstance(fr, dict):
            raise ValueError(f"{where} must be an object; got {fr!r:.80}.")
        R, T = c2w_to_p3d(_rigid_c2w(fr.get("camera_to_world"), where))
        fov = fr.get("fov")
        check_number(f"{where}: fov", fov, 0, 180, low_open=True, high_open=True)
        Rs.append(R)
        Ts.append(T)
        fovs.append(_p3d_fov_from_vertical(float(fov), H, W))
        pixels.append(_pixel_intrinsics(fr, where))
    with_pixels = [k is not None for k in pixels]
    if any(with_pixels) and not all(with_pixels):
        raise ValueError(
            f"{path}: frames {[i for i, k in enumerate(pixels) if k is None]} lack the pixel "
            f"intrinsics {list(PIXEL_KEYS)} that the others have (all frames or none)."
        )
    n = len(frames)
    fps, seconds = meta.get("fps"), meta.get("seconds")
    for key, v in (("fps", fps), ("seconds", seconds)):
        if v is not None:
            check_number(f"{path}: {key}", v, 0, low_open=True)
    if fps is None:
        fps = n / seconds if seconds is not None else 30.0
    if seconds is None:
        seconds = n / fps
    znear = meta.get("znear", 1.0) if znear is None else znear
    zfar = meta.get("zfar", 100.0) if zfar is None else zfar
    check_number("znear", znear, 0, low_open=True)
    check_number("zfar", zfar, 0, low_open=True)
    if not znear < zfar:
        raise ValueError(f"znear must be < zfar; got znear={znear!r}, zfar={zfar!r}.")
    if all(with_pixels):
        k = torch.tensor(pixels, dtype=torch.float32)
        persp = PerspectiveCameras(
            focal_length=k[:, :2], principal_point=k[:, 2:],
            R=torch.tensor(np.stack(Rs), dtype=torch.float32),
            T=torch.tensor(np.stack(Ts), dtype=torch.float32),
            in_ndc=False, image_size=((H, W),),
        )  # fmt: skip
        return CameraPath(persp, image_size=(H, W), fps=float(fps), seconds=float(seconds))
    cams = FoVPerspectiveCameras(
        R=torch.tensor(np.stack(Rs), dtype=torch.float32),
        T=torch.tensor(np.stack(Ts), dtype=torch.float32),
        fov=torch.tensor(fovs, dtype=torch.float32),
        znear=float(znear),
        zfar=float(zfar),
        degrees=True,
    )
    return CameraPath(cameras=cams, image_size=(H, W), fps=float(fps), seconds=float(seconds))


def save_camera_path(
    path: str | Path,
    cameras: CamerasBase,
    image_size: tuple[int, int],
    fps: float = 30.0,
    seconds: float | None = None,
) -> Path:
    """Write ``cameras`` as a nerfstudio camera-path JSON (atomically, mode ``0o666 & ~umask``).

    The inverse of :func:`load_camera_path`: ``camera_to_world`` from
    :func:`nerf_lab.data.blender.p3d_to_c2w` (row-major, 16 numbers), the vertical fov in
    degrees, ``aspect = W / H``, ``render_height`` / ``render_width``, ``fps``, ``seconds``
    (default ``n_frames / fps``), ``camera_type: "perspective"``; plus, which nerfstudio
    ignores, ``znear`` / ``zfar`` (of the first camera) for ``FoVPerspectiveCameras``, and
    each frame's pixel intrinsics ``fl_x``, ``fl_y``, ``cx``, ``cy`` at ``image_size`` for
    ``PerspectiveCameras`` (their ``fov`` is the vertical one of ``fl_y``).

    Args:
        path: the JSON file to write.
        cameras: ``n_frames`` cameras: ``FoVPerspectiveCameras`` with square pixels
            (``aspect_ratio`` 1), or ``PerspectiveCameras`` (screen-space ones for
            ``image_size``: see :func:`resize_cameras`).
        image_size: ``(H, W)``.
        fps: frames per second (> 0).
        seconds: duration (> 0); ``None``: ``n_frames / fps``.

    Returns:
        ``path``.
    """
    H, W = (int(v) for v in image_size)
    if H < 1 or W < 1:
        raise ValueError(f"image_size must be two positive integers; got {image_size!r}.")
    fps = check_number("fps", fps, 0, low_open=True)
    n = len(cameras)
    seconds = n / fps if seconds is None else check_number("seconds", seconds, 0, low_open=True)
    R = cameras.R.detach().cpu().double().numpy()
    T = cameras.T.detach().cpu().double().numpy()
    extra: dict[str, Any] = {}
    per_frame: list[dict[str, float]] = [{} for _ in range(n)]
    if isinstance(cameras, PerspectiveCameras):
        focal, pp = (v.detach().cpu().double() for v in screen_intrinsics(cameras, (H, W)))
        fov_v = torch.rad2deg(2.0 * torch.atan(H / (2.0 * focal[:, 1]))).tolist()
        per_frame = [
            dict(zip(PIXEL_KEYS, [*focal[i].tolist(), *pp[i].tolist()], strict=True))
            for i in range(n)
        ]
    elif isinstance(cameras, FoVPerspectiveCameras):
        if not torch.allclose(cameras.aspect_ratio, torch.ones_like(cameras.aspect_ratio)):
            raise ValueError(
                "cameras.aspect_ratio must be 1 (square pixels) to be written as a nerfstudio "
                f"camera path; got {cameras.aspect_ratio.tolist()}."
            )
        fov = cameras.fov.detach().cpu().double()
        fov_deg = (fov if cameras.degrees else torch.rad2deg(fov)).tolist()
        fov_v = [_vertical_fov_from_p3d(f, H, W) for f in fov_deg]
        extra = {"znear": float(cameras.znear[0]), "zfar": float(cameras.zfar[0])}
    else:
        raise ValueError(f"cameras of type {type(cameras).__name__} cannot be written.")
    frames = [
        {
            "camera_to_world": p3d_to_c2w(R[i], T[i]).reshape(-1).tolist(),
            "fov": fov_v[i],
            "aspect": W / H,
            **per_frame[i],
        }
        for i in range(n)
    ]
    meta = {
        "camera_type": "perspective",
        "render_height": H,
        "render_width": W,
        "fps": fps,
        "seconds": seconds,
        **extra,
        "camera_path": frames,
    }
    data = (json.dumps(meta, indent=2) + "\n").encode()
    return atomic_write_public(path, lambda f: f.write(data))


def turntable_cameras(n_frames: int, like: Any, distance: float = 2.7) -> Any:
    """The tutorial's rotating cameras: a turn about +Y at ``distance`` from the origin.

    Args:
        n_frames: number of cameras.
        like: cameras of any type; the intrinsics of ``like[0]`` are kept (FoV, znear,
            zfar, aspect ratio; or focal length, principal point, image size).

    Returns:
        ``n_frames`` cameras of ``like``'s type.
    """
    log_rots = torch.zeros(n_frames, 3)
    log_rots[:, 1] = torch.linspace(-3.14, 3.14, n_frames)
    Rs = so3_exp_map(log_rots)
    Ts = torch.zeros(n_frames, 3)
    Ts[:, 2] = distance
    base = like[[0] * n_frames]
    return base._replace(R=Rs.to(base.R), T=Ts.to(base.T))
