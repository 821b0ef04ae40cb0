"""Cameras and rotations with PyTorch3D's names, signatures and conventions.

Conventions (identical to PyTorch3D):

* Row vectors: a world point ``X_world`` (shape ``(..., 3)``) maps to view space as
  ``X_view = X_world @ R + T``.
* View space: +X points left, +Y up, +Z into the scene (the camera looks along +Z).
* NDC: +X left, +Y up; the shorter image side spans [-1, 1] and the longer side
  ``[-s, s]`` with ``s = long / short``.
* ``FoVPerspectiveCameras`` maps view-space depth ``z`` in ``[znear, zfar]`` to an NDC
  depth in ``[0, 1]``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

Device = str | torch.device
_TensorLike = float | int | Sequence[Any] | torch.Tensor


def _format_tensor(value: _TensorLike, device: Device | None) -> torch.Tensor:
    """Convert ``value`` to a float tensor with at least one dimension."""
    if torch.is_tensor(value):
        t = value.to(device=device if device is not None else value.device)
        if t.dtype != torch.float32:
            t = t.to(torch.float32)
    else:
        t = torch.tensor(value, dtype=torch.float32, device=device)
    if t.dim() == 0:
        t = t.view(1)
    return t


def convert_to_tensors_and_broadcast(
    *args: _TensorLike, device: Device | None = None
) -> list[torch.Tensor]:
    """Convert each argument to a tensor and broadcast the first dimension to ``N``.

    Args:
        *args: Scalars, sequences or tensors; each has a first dimension of 1 or ``N``.

    Returns:
        List of tensors, each with first dimension ``N``.
    """
    tensors = [_format_tensor(a, device) for a in args]
    sizes = [t.shape[0] for t in tensors]
    n = max(sizes)
    out = []
    for t in tensors:
        if t.shape[0] not in (1, n):
            raise ValueError(f"Got non-broadcastable batch sizes {sizes}.")
        out.append(t.expand(n, *t.shape[1:]))
    return out


def hat(v: torch.Tensor) -> torch.Tensor:
    """Skew-symmetric matrices of a batch of 3-vectors.

    Args:
        v: ``(N, 3)``.

    Returns:
        ``(N, 3, 3)`` with ``hat(v) @ w == cross(v, w)``.
    """
    if v.dim() != 2 or v.shape[1] != 3:
        raise ValueError(f"hat expects a tensor of shape (N, 3); got {tuple(v.shape)}.")
    x, y, z = v.unbind(1)
    zero = torch.zeros_like(x)
    return torch.stack(
        (zero, -z, y, z, zero, -x, -y, x, zero),
        dim=1,
    ).view(-1, 3, 3)


def so3_exp_map(log_rot: torch.Tensor, eps: float = 0.0001) -> torch.Tensor:
    """Rotation matrices from axis-angle vectors (Rodrigues' formula), as PyTorch3D.

    As in PyTorch3D, the squared angle is clamped from below by ``eps`` before the
    square root, which keeps the gradient finite at zero rotation.

    Args:
        log_rot: ``(N, 3)`` axis-angle vectors (direction = axis, norm = angle in radians).
        eps: lower clamp of the squared rotation angle.

    Returns:
        ``(N, 3, 3)`` rotation matrices.
    """
    if log_rot.dim() != 2 or log_rot.shape[1] != 3:
        raise ValueError(f"Input tensor shape has to be Nx3; got {tuple(log_rot.shape)}.")
    nrms = (log_rot * log_rot).sum(1)
    rot_angles = torch.clamp(nrms, eps).sqrt()
    rot_angles_inv = 1.0 / rot_angles
    fac1 = rot_angles_inv * rot_angles.sin()
    fac2 = rot_angles_inv * rot_angles_inv * (1.0 - rot_angles.cos())
    skews = hat(log_rot)
    skews_square = torch.bmm(skews, skews)
    eye = torch.eye(3, dtype=log_rot.dtype, device=log_rot.device)[None]
    return fac1[:, None, None] * skews + fac2[:, None, None] * skews_square + eye


def camera_position_from_spherical_angles(
    distance: _TensorLike,
    elevation: _TensorLike,
    azimuth: _TensorLike,
    degrees: bool = True,
    device: Device = "cpu",
) -> torch.Tensor:
    """Camera positions on a sphere around the origin.

    Azimuth 0 and elevation 0 put the camera on the +Z axis.

    Returns:
        ``(N, 3)`` positions.
    """
    dist, elev, azim = convert_to_tensors_and_broadcast(distance, elevation, azimuth, device=device)
    if degrees:
        elev = math.pi / 180.0 * elev
        azim = math.pi / 180.0 * azim
    x = dist * torch.cos(elev) * torch.sin(azim)
    y = dist * torch.sin(elev)
    z = dist * torch.cos(elev) * torch.cos(azim)
    return torch.stack([x, y, z], dim=1).view(-1, 3)


def look_at_rotation(
    camera_position: _TensorLike,
    at: _TensorLike = ((0, 0, 0),),
    up: _TensorLike = ((0, 1, 0),),
    device: Device = "cpu",
) -> torch.Tensor:
    """World-to-view rotations of cameras at ``camera_position`` looking at ``at``.

    Args:
        camera_position: ``(N, 3)`` or ``(1, 3)``.
        at: ``(N, 3)`` or ``(1, 3)`` points looked at.
        up: ``(N, 3)`` or ``(1, 3)`` up directions in world space.

    Returns:
        ``(N, 3, 3)`` matrices ``R`` for ``X_view = X_world @ R + T``.
    """
    camera_position, at, up = convert_to_tensors_and_broadcast(
        camera_position, at, up, device=device
    )
    for name, t in (("camera_position", camera_position), ("at", at), ("up", up)):
        if t.dim() != 2 or t.shape[-1] != 3:
            raise ValueError(f"{name} must have shape (N, 3); got {tuple(t.shape)}.")
    z_axis = F.normalize(at - camera_position, eps=1e-5)
    x_axis = F.normalize(torch.cross(up, z_axis, dim=1), eps=1e-5)
    y_axis = F.normalize(torch.cross(z_axis, x_axis, dim=1), eps=1e-5)
    is_close = torch.isclose(x_axis, torch.tensor(0.0, device=x_axis.device), atol=5e-3).all(
        dim=1, keepdim=True
    )
    if is_close.any():
        replacement = F.normalize(torch.cross(y_axis, z_axis, dim=1), eps=1e-5)
        x_axis = torch.where(is_close, replacement, x_axis)
    R = torch.cat((x_axis[:, None, :], y_axis[:, None, :], z_axis[:, None, :]), dim=1)
    return R.transpose(1, 2)


def look_at_view_transform(
    dist: _TensorLike = 1.0,
    elev: _TensorLike = 0.0,
    azim: _TensorLike = 0.0,
    degrees: bool = True,
    eye: _TensorLike | None = None,
    at: _TensorLike = ((0, 0, 0),),
    up: _TensorLike = ((0, 1, 0),),
    device: Device = "cpu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(R, T)`` of cameras looking at ``at``, placed by spherical angles or by ``eye``.

    Args:
        dist: distance(s) from ``at``, scalar or ``(N,)``.
        elev: elevation angle(s): angle between the camera direction and the XZ plane.
        azim: azimuth angle(s) about +Y, 0 on the +Z axis.
        degrees: whether the angles are in degrees.
        eye: optional ``(N, 3)`` camera positions, overriding the spherical angles.
        at: ``(N, 3)`` or ``(1, 3)`` points looked at.
        up: ``(N, 3)`` or ``(1, 3)`` up directions.

    Returns:
        ``R`` of shape ``(N, 3, 3)`` and ``T`` of shape ``(N, 3)``.
    """
    if eye is not None:
        eye, at, up = convert_to_tensors_and_broadcast(eye, at, up, device=device)
        C = eye
    else:
        dist, elev, azim, at, up = convert_to_tensors_and_broadcast(
            dist, elev, azim, at, up, device=device
        )
        C = camera_position_from_spherical_angles(dist, elev, azim, degrees=degrees, device=device)
        C = C + at
    R = look_at_rotation(C, at, up, device=device)
    T = -torch.bmm(R.transpose(1, 2), C[:, :, None])[:, :, 0]
    return R, T


class Transform3d:
    """A batch of 4x4 row-vector transforms (``p_out = [p, 1] @ M``), as in PyTorch3D.

    Only the subset of PyTorch3D's ``Transform3d`` that cameras need.
    """

    def __init__(self, matrix: torch.Tensor) -> None:
        if matrix.dim() == 2:
            matrix = matrix[None]
        if matrix.shape[-2:] != (4, 4):
            raise ValueError(f"Transform3d needs (N, 4, 4) matrices; got {tuple(matrix.shape)}.")
        self._matrix = matrix

    def get_matrix(self) -> torch.Tensor:
        """Returns the ``(N, 4, 4)`` matrix."""
        return self._matrix

    def compose(self, other: Transform3d) -> Transform3d:
        """The transform applying ``self`` first, then ``other``."""
        a, b = self._matrix, other._matrix
        if a.shape[0] != b.shape[0] and 1 not in (a.shape[0], b.shape[0]):
            raise ValueError("Cannot compose transforms with different batch sizes.")
        return Transform3d(a @ b)

    def inverse(self) -> Transform3d:
        """The inverse transform."""
        return Transform3d(torch.linalg.inv(self._matrix))

    def transform_points(self, points: torch.Tensor, eps: float | None = None) -> torch.Tensor:
        """Apply the transform with homogeneous division.

        Args:
            points: ``(P, 3)`` or ``(N, P, 3)``.
            eps: if given, the homogeneous denominator is clamped to ``|w| >= eps``.

        Returns:
            ``(N, P, 3)``; ``(P, 3)`` when both the transform batch and the input are 2D.
        """
        if points.dim() not in (2, 3) or points.shape[-1] != 3:
            raise ValueError(
                f"Expected points of shape (P, 3) or (N, P, 3); got {tuple(points.shape)}."
            )
        pts = points[None] if points.dim() == 2 else points
        ones = torch.ones_like(pts[..., :1])
        pts_h = torch.cat([pts, ones], dim=-1)
        m = self._matrix.to(dtype=pts_h.dtype)
        if pts_h.shape[0] != m.shape[0] and 1 not in (pts_h.shape[0], m.shape[0]):
            raise ValueError(
                f"Points batch {pts_h.shape[0]} does not match transform batch {m.shape[0]}."
            )
        out = pts_h @ m
        denom = out[..., 3:]
        if eps is not None:
            denom_sign = denom.sign() + (denom == 0.0).type_as(denom)
            denom = denom_sign * torch.clamp(denom.abs(), eps)
        out = out[..., :3] / denom
        if out.shape[0] == 1 and points.dim() == 2:
            out = out.reshape(points.shape)
        return out


def _world_to_view_matrix(R: torch.Tensor, T: torch.Tensor) -> torch.Tensor:
    n = R.shape[0]
    m = torch.zeros(n, 4, 4, dtype=R.dtype, device=R.device)
    m[:, :3, :3] = R
    m[:, 3, :3] = T
    m[:, 3, 3] = 1.0
    return m


class FoVPerspectiveCameras:
    """A batch of OpenGL-style perspective cameras given by a field of view (PyTorch3D).

    Every parameter is broadcast to the batch size ``N``: ``R`` is ``(N, 3, 3)``, ``T``
    ``(N, 3)`` and ``znear``, ``zfar``, ``aspect_ratio``, ``fov`` are ``(N,)``.

    Args:
        znear: near clipping plane (view-space depth).
        zfar: far clipping plane.
        aspect_ratio: aspect ratio of the pixels (1.0: square pixels).
        fov: vertical field of view.
        degrees: whether ``fov`` is in degrees.
        R: ``(N, 3, 3)`` world-to-view rotations.
        T: ``(N, 3)`` world-to-view translations.
        K: unsupported here (PyTorch3D's custom projection matrix); must be None.
        device: device of every tensor.
    """

    _FIELDS = ("znear", "zfar", "aspect_ratio", "fov", "R", "T")

    def __init__(
        self,
        znear: _TensorLike = 1.0,
        zfar: _TensorLike = 100.0,
        aspect_ratio: _TensorLike = 1.0,
        fov: _TensorLike = 60.0,
        degrees: bool = True,
        R: torch.Tensor | None = None,
        T: torch.Tensor | None = None,
        K: torch.Tensor | None = None,
        device: Device = "cpu",
    ) -> None:
        if K is not None:
            raise ValueError("FoVPerspectiveCameras in nerf_lab does not support a custom K.")
        if R is None:
            R = torch.eye(3)[None]
        if T is None:
            T = torch.zeros(1, 3)
        R = _format_tensor(R, device)
        T = _format_tensor(T, device)
        if R.dim() == 2:
            R = R[None]
        if T.dim() == 1:
            T = T[None]
        if R.shape[-2:] != (3, 3) or R.dim() != 3:
            raise ValueError(f"R must have shape (N, 3, 3); got {tuple(R.shape)}.")
        if T.shape[-1] != 3 or T.dim() != 2:
            raise ValueError(f"T must have shape (N, 3); got {tuple(T.shape)}.")
        znear, zfar, aspect_ratio, fov, R, T = convert_to_tensors_and_broadcast(
            znear, zfar, aspect_ratio, fov, R, T, device=device
        )
        for name, t in (
            ("znear", znear),
            ("zfar", zfar),
            ("aspect_ratio", aspect_ratio),
            ("fov", fov),
        ):
            if t.dim() != 1:
                raise ValueError(f"{name} must be a scalar or of shape (N,); got {tuple(t.shape)}.")
        self.znear = znear
        self.zfar = zfar
        self.aspect_ratio = aspect_ratio
        self.fov = fov
        self.R = R
        self.T = T
        self.degrees = degrees
        self.device = R.device

    # -- batch behaviour --------------------------------------------------------------
    def __len__(self) -> int:
        return self.R.shape[0]

    def _replace(self, **fields: torch.Tensor) -> FoVPerspectiveCameras:
        kwargs = {f: getattr(self, f) for f in self._FIELDS}
        kwargs.update(fields)
        return FoVPerspectiveCameras(degrees=self.degrees, device=self.device, **kwargs)

    def __getitem__(self, index: int | Sequence[int] | torch.Tensor) -> FoVPerspectiveCameras:
        """Select cameras by an int, a list of ints, a LongTensor or a BoolTensor."""
        if isinstance(index, int):
            index = [index]
        if isinstance(index, slice):
            index = list(range(len(self)))[index]
        idx = torch.as_tensor(index, device=self.device)
        if idx.dtype == torch.bool:
            if idx.shape != (len(self),):
                raise ValueError(
                    f"Boolean index must have shape ({len(self)},); got {tuple(idx.shape)}."
                )
            idx = idx.nonzero()[:, 0]
        elif idx.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"Cameras can be indexed by ints, lists or tensors; got {index!r}.")
        idx = idx.long().view(-1)
        if len(idx) and (idx.max() >= len(self) or idx.min() < -len(self)):
            raise IndexError(f"Index {index!r} out of range for {len(self)} cameras.")
        return self._replace(**{f: getattr(self, f)[idx] for f in self._FIELDS})

    def to(self, device: Device) -> FoVPerspectiveCameras:
        """Move the cameras to ``device`` in place and return them (as PyTorch3D)."""
        for f in self._FIELDS:
            setattr(self, f, getattr(self, f).to(device))
        self.device = self.R.device
        return self

    def cpu(self) -> FoVPerspectiveCameras:
        return self.to("cpu")

    def cuda(self) -> FoVPerspectiveCameras:
        return self.to("cuda")

    def clone(self) -> FoVPerspectiveCameras:
        return self._replace(**{f: getattr(self, f).clone() for f in self._FIELDS})

    def __repr__(self) -> str:
        return f"FoVPerspectiveCameras(N={len(self)}, device={self.device})"

    # -- transforms -------------------------------------------------------------------
    def compute_projection_matrix(
        self,
        znear: _TensorLike,
        zfar: _TensorLike,
        fov: _TensorLike,
        aspect_ratio: _TensorLike,
        degrees: bool,
    ) -> torch.Tensor:
        """The ``(N, 4, 4)`` column-vector projection matrix ``K`` (PyTorch3D layout)."""
        n = self.R.shape[0]
        znear, zfar, fov, aspect_ratio = (
            _format_tensor(v, self.device).expand(n) for v in (znear, zfar, fov, aspect_ratio)
        )
        K = torch.zeros((n, 4, 4), dtype=torch.float32, device=self.device)
        ones = torch.ones((n,), dtype=torch.float32, device=self.device)
        if degrees:
            fov = (math.pi / 180.0) * fov
        tan_half_fov = torch.tan(fov / 2)
        max_y = tan_half_fov * znear
        min_y = -max_y
        max_x = max_y * aspect_ratio
        min_x = -max_x
        K[:, 0, 0] = 2.0 * znear / (max_x - min_x)
        K[:, 1, 1] = 2.0 * znear / (max_y - min_y)
        K[:, 0, 2] = (max_x + min_x) / (max_x - min_x)
        K[:, 1, 2] = (max_y + min_y) / (max_y - min_y)
        K[:, 3, 2] = ones
        K[:, 2, 2] = zfar / (zfar - znear)
        K[:, 2, 3] = -(zfar * znear) / (zfar - znear)
        return K

    def get_projection_transform(self, **kwargs: Any) -> Transform3d:
        """View-to-NDC transform; ``znear``, ``zfar``, ``fov``, ``aspect_ratio`` and
        ``degrees`` may be overridden by keyword (as in PyTorch3D)."""
        K = self.compute_projection_matrix(
            kwargs.get("znear", self.znear),
            kwargs.get("zfar", self.zfar),
            kwargs.get("fov", self.fov),
            kwargs.get("aspect_ratio", self.aspect_ratio),
            kwargs.get("degrees", self.degrees),
        )
        return Transform3d(K.transpose(1, 2).contiguous())

    def get_world_to_view_transform(self, **kwargs: Any) -> Transform3d:
        """World-to-view transform ``X_view = X_world @ R + T`` (``R``, ``T`` overridable)."""
        R = _format_tensor(kwargs.get("R", self.R), self.device)
        T = _format_tensor(kwargs.get("T", self.T), self.device)
        return Transform3d(_world_to_view_matrix(R, T))

    def get_full_projection_transform(self, **kwargs: Any) -> Transform3d:
        """World-to-NDC transform."""
        return self.get_world_to_view_transform(**kwargs).compose(
            self.get_projection_transform(**kwargs)
        )

    def transform_points(
        self, points: torch.Tensor, eps: float | None = None, **kwargs: Any
    ) -> torch.Tensor:
        """Project world points to NDC (x, y, and depth mapped to [0, 1] over [znear, zfar]).

        Args:
            points: ``(P, 3)`` or ``(N, P, 3)`` world points.

        Returns:
            ``(N, P, 3)`` NDC points (``(P, 3)`` for a single camera and 2D input).
        """
        return self.get_full_projection_transform(**kwargs).transform_points(points, eps=eps)

    def get_camera_center(self, **kwargs: Any) -> torch.Tensor:
        """Camera centres in world coordinates, ``(N, 3)``: ``-T @ R^T``."""
        R = _format_tensor(kwargs.get("R", self.R), self.device)
        T = _format_tensor(kwargs.get("T", self.T), self.device)
        return -torch.bmm(T[:, None, :], R.transpose(1, 2))[:, 0]

    def unproject_points(
        self,
        xy_depth: torch.Tensor,
        world_coordinates: bool = True,
        scaled_depth_input: bool = False,
        **kwargs: Any,
    ) -> torch.Tensor:
        """Points from NDC ``(x, y)`` and a depth back to world (or view) space.

        Args:
            xy_depth: ``(N, P, 3)``: NDC x, y and the view-space depth (or, with
                ``scaled_depth_input``, the NDC depth in [0, 1]).
            world_coordinates: return world points (else view points).

        Returns:
            ``(N, P, 3)`` points.
        """
        if xy_depth.shape[-1] != 3:
            raise ValueError(f"xy_depth must end in 3 values; got {tuple(xy_depth.shape)}.")
        n = len(self)
        if xy_depth.dim() == 2:  # (P, 3): the same points for every camera
            xy_depth = xy_depth[None].expand(n, -1, -1)
        batch = xy_depth.reshape(xy_depth.shape[0], -1, 3)
        if scaled_depth_input:
            xy = batch[..., :2]
            z_ndc = batch[..., 2:]
            K = self.compute_projection_matrix(
                self.znear, self.zfar, self.fov, self.aspect_ratio, self.degrees
            )
            a = K[:, 2, 2].view(-1, 1, 1)
            b = K[:, 2, 3].view(-1, 1, 1)
            z = b / (z_ndc - a)
        else:
            xy = batch[..., :2]
            z = batch[..., 2:]
        fov = self.fov * (math.pi / 180.0) if self.degrees else self.fov
        tan_half = torch.tan(fov / 2).view(n, 1, 1)
        aspect = self.aspect_ratio.view(n, 1, 1)
        x_view = xy[..., :1] * z * tan_half * aspect
        y_view = xy[..., 1:2] * z * tan_half
        pts_view = torch.cat([x_view, y_view, z], dim=-1)
        if not world_coordinates:
            return pts_view.reshape(xy_depth.shape)
        pts_world = (pts_view - self.T[:, None, :]) @ self.R.transpose(1, 2)
        return pts_world.reshape(xy_depth.shape)

    def get_ray_directions_view(self, xy: torch.Tensor) -> torch.Tensor:
        """View-space directions (z = 1) through NDC points.

        Args:
            xy: ``(N, n_rays, 2)`` NDC coordinates.

        Returns:
            ``(N, n_rays, 3)`` directions with view-space z equal to 1.
        """
        n = len(self)
        fov = self.fov * (math.pi / 180.0) if self.degrees else self.fov
        tan_half = torch.tan(fov / 2).view(n, 1)
        aspect = self.aspect_ratio.view(n, 1)
        x = xy[..., 0] * tan_half * aspect
        y = xy[..., 1] * tan_half
        return torch.stack([x, y, torch.ones_like(x)], dim=-1)
