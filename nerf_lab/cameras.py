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

    def __init__(
        self,
        matrix: torch.Tensor | None = None,
        *,
        dtype: torch.dtype = torch.float32,
        device: Device = "cpu",
    ) -> None:
        if matrix is None:  # the identity, as PyTorch3D's ``Transform3d()``
            matrix = torch.eye(4, dtype=dtype, device=device)
        if matrix.dim() == 2:
            matrix = matrix[None]
        if matrix.shape[-2:] != (4, 4) or matrix.dim() != 3:
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


class CamerasBase:
    """What every camera batch shares (PyTorch3D's ``CamerasBase``): extrinsics ``R``, ``T``,
    batching, devices, the world-to-view transform and the NDC / screen projections.

    Subclasses define ``_FIELDS`` (batched tensors, first dimension ``N``; ``None`` allowed for
    optional ones), ``_shared_kwargs()`` (constructor arguments shared by the whole batch),
    ``get_projection_transform`` (view -> the camera's own space, NDC or screen),
    ``in_ndc()`` and ``get_ray_directions_view``.
    """

    _FIELDS: tuple[str, ...] = ("R", "T")
    R: torch.Tensor
    T: torch.Tensor
    device: torch.device

    def _shared_kwargs(self) -> dict[str, Any]:
        return {}

    # -- batch behaviour --------------------------------------------------------------
    def __len__(self) -> int:
        return self.R.shape[0]

    def _replace(self, **fields: torch.Tensor | None) -> Any:
        kwargs: dict[str, Any] = {f: getattr(self, f) for f in self._FIELDS}
        kwargs.update(fields)
        return type(self)(device=self.device, **self._shared_kwargs(), **kwargs)

    def __getitem__(self, index: int | Sequence[int] | torch.Tensor) -> Any:
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
        return self._replace(
            **{f: None if getattr(self, f) is None else getattr(self, f)[idx] for f in self._FIELDS}
        )

    def to(self, device: Device) -> Any:
        """Move the cameras to ``device`` in place and return them (as PyTorch3D)."""
        for f in self._FIELDS:
            value = getattr(self, f)
            if value is not None:
                setattr(self, f, value.to(device))
        self.device = self.R.device
        return self

    def cpu(self) -> Any:
        return self.to("cpu")

    def cuda(self) -> Any:
        return self.to("cuda")

    def clone(self) -> Any:
        """A copy with cloned tensors."""
        return self._replace(
            **{
                f: None if getattr(self, f) is None else getattr(self, f).clone()
                for f in self._FIELDS
            }
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(N={len(self)}, device={self.device})"

    # -- properties -------------------------------------------------------------------
    def in_ndc(self) -> bool:
        """Whether the camera's own projection space is NDC (else screen / pixels)."""
        raise NotImplementedError

    def is_perspective(self) -> bool:
        return True

    def get_image_size(self) -> torch.Tensor | None:
        """``(N, 2)`` image sizes ``(height, width)`` in pixels, if the cameras carry them."""
        return getattr(self, "image_size", None)

    def get_znear(self) -> torch.Tensor | None:
        return getattr(self, "znear", None)

    # -- transforms -------------------------------------------------------------------
    def get_projection_transform(self, **kwargs: Any) -> Transform3d:
        """View -> the camera's projection space (NDC or screen)."""
        raise NotImplementedError

    def get_world_to_view_transform(self, **kwargs: Any) -> Transform3d:
        """World-to-view transform ``X_view = X_world @ R + T`` (``R``, ``T`` overridable)."""
        R = _format_tensor(kwargs.get("R", self.R), self.device)
        T = _format_tensor(kwargs.get("T", self.T), self.device)
        return Transform3d(_world_to_view_matrix(R, T))

    def get_full_projection_transform(self, **kwargs: Any) -> Transform3d:
        """World -> the camera's projection space (NDC for NDC cameras, else screen)."""
        return self.get_world_to_view_transform(**kwargs).compose(
            self.get_projection_transform(**kwargs)
        )

    def transform_points(
        self, points: torch.Tensor, eps: float | None = None, **kwargs: Any
    ) -> torch.Tensor:
        """Project world points into the camera's projection space (NDC or screen).

        Args:
            points: ``(P, 3)`` or ``(N, P, 3)`` world points.
            eps: if given, clamp the homogeneous denominator to ``|w| >= eps``.

        Returns:
            ``(N, P, 3)`` projected points (``(P, 3)`` for a single camera and 2D input).
        """
        return self.get_full_projection_transform(**kwargs).transform_points(points, eps=eps)

    def get_ndc_camera_transform(self, **kwargs: Any) -> Transform3d:
        """The camera's projection space -> PyTorch3D's NDC (identity for NDC cameras)."""
        if self.in_ndc():
            return Transform3d(device=self.device)
        image_size = kwargs.get("image_size", self.get_image_size())
        return get_screen_to_ndc_transform(self, with_xyflip=False, image_size=image_size)

    def transform_points_ndc(
        self, points: torch.Tensor, eps: float | None = None, **kwargs: Any
    ) -> torch.Tensor:
        """Project world points to PyTorch3D's NDC (+X left, +Y up, the shorter image side
        spanning [-1, 1]); the third coordinate is the camera's projected depth.

        Args:
            points: ``(P, 3)`` or ``(N, P, 3)`` world points.

        Returns:
            ``(N, P, 3)`` (``(P, 3)`` for a single camera and 2D input).
        """
        transform = self.get_full_projection_transform(**kwargs)
        if not self.in_ndc():
            transform = transform.compose(self.get_ndc_camera_transform(**kwargs))
        return transform.transform_points(points, eps=eps)

    def transform_points_screen(
        self,
        points: torch.Tensor,
        eps: float | None = None,
        with_xyflip: bool = True,
        **kwargs: Any,
    ) -> torch.Tensor:
        """Project world points to screen space: pixel coordinates, +X right, +Y down, origin
        at the top-left corner of the image, so the centre of pixel ``(row i, col j)`` is at
        ``(j + 0.5, i + 0.5)``.

        Args:
            points: ``(P, 3)`` or ``(N, P, 3)`` world points.
            with_xyflip: flip x and y (PyTorch3D's default; keep it).
            image_size: ``(H, W)`` or ``(N, 2)`` keyword; default: the cameras' own.

        Returns:
            ``(N, P, 3)`` (``(P, 3)`` for a single camera and 2D input).
        """
        points_ndc = self.transform_points_ndc(points, eps=eps, **kwargs)
        image_size = kwargs.get("image_size", self.get_image_size())
        return get_ndc_to_screen_transform(
            self, with_xyflip=with_xyflip, image_size=image_size
        ).transform_points(points_ndc, eps=eps)

    def get_camera_center(self, **kwargs: Any) -> torch.Tensor:
        """Camera centres in world coordinates, ``(N, 3)``: ``-T @ R^T``."""
        R = _format_tensor(kwargs.get("R", self.R), self.device)
        T = _format_tensor(kwargs.get("T", self.T), self.device)
        return -torch.bmm(T[:, None, :], R.transpose(1, 2))[:, 0]

    def get_ray_directions_view(self, xy: torch.Tensor) -> torch.Tensor:
        """View-space directions (z = 1) through PyTorch3D NDC points.

        Args:
            xy: ``(N, n_rays, 2)`` NDC coordinates.

        Returns:
            ``(N, n_rays, 3)`` directions with view-space z equal to 1.
        """
        raise NotImplementedError


def _check_rotation_translation(R: torch.Tensor, T: torch.Tensor) -> None:
    if R.shape[-2:] != (3, 3) or R.dim() != 3:
        raise ValueError(f"R must have shape (N, 3, 3); got {tuple(R.shape)}.")
    if T.shape[-1] != 3 or T.dim() != 2:
        raise ValueError(f"T must have shape (N, 3); got {tuple(T.shape)}.")


def _default_rt(
    R: torch.Tensor | None, T: torch.Tensor | None, device: Device
) -> tuple[torch.Tensor, torch.Tensor]:
    R = _format_tensor(torch.eye(3)[None] if R is None else R, device)
    T = _format_tensor(torch.zeros(1, 3) if T is None else T, device)
    if R.dim() == 2:
        R = R[None]
    if T.dim() == 1:
        T = T[None]
    _check_rotation_translation(R, T)
    return R, T


def get_image_size_tensor(
    image_size: Sequence[int] | Sequence[Sequence[int]] | torch.Tensor | None,
    n: int,
    device: Device,
) -> torch.Tensor:
    """``(H, W)``, ``((H, W),)`` or an ``(N, 2)`` tensor -> ``(n, 2)`` float32 ``(H, W)``."""
    if image_size is None:
        raise ValueError(
            "image_size=(height, width) is needed for NDC <-> screen conversions: pass it to "
            "the cameras or as a keyword."
        )
    size = _format_tensor(image_size, device).reshape(-1, 2)
    if size.shape[0] not in (1, n):
        raise ValueError(f"image_size must be (H, W) or ({n}, 2); got {tuple(size.shape)}.")
    if not bool((size >= 1).all()):
        raise ValueError(f"image_size must be >= 1; got {size.tolist()}.")
    return size.expand(n, 2)


def get_ndc_to_screen_transform(
    cameras: CamerasBase,
    with_xyflip: bool = False,
    image_size: Sequence[int] | torch.Tensor | None = None,
) -> Transform3d:
    """PyTorch3D's NDC (+X left, +Y up) -> screen space, as PyTorch3D's function of this name.

    ``x_screen = s * x_ndc - W / 2`` (then ``-x`` with ``with_xyflip``), the same for y with
    ``H``, where ``s = min(H, W) / 2``; depth unchanged.
    """
    n = len(cameras)
    height, width = get_image_size_tensor(image_size, n, cameras.device).unbind(1)
    scale = torch.minimum(height, width) / 2.0
    K = torch.zeros((n, 4, 4), dtype=torch.float32, device=cameras.device)
    K[:, 0, 0] = scale
    K[:, 1, 1] = scale
    K[:, 0, 3] = -width / 2.0
    K[:, 1, 3] = -height / 2.0
    K[:, 2, 2] = 1.0
    K[:, 3, 3] = 1.0
    transform = Transform3d(K.transpose(1, 2).contiguous())
    if with_xyflip:
        flip = torch.diag(torch.tensor([-1.0, -1.0, 1.0, 1.0], device=cameras.device))
        transform = transform.compose(Transform3d(flip))
    return transform


def get_screen_to_ndc_transform(
    cameras: CamerasBase,
    with_xyflip: bool = False,
    image_size: Sequence[int] | torch.Tensor | None = None,
) -> Transform3d:
    """The inverse of :func:`get_ndc_to_screen_transform` (PyTorch3D's function of this name)."""
    n = len(cameras)
    height, width = get_image_size_tensor(image_size, n, cameras.device).unbind(1)
    scale = torch.minimum(height, width) / 2.0
    K = torch.zeros((n, 4, 4), dtype=torch.float32, device=cameras.device)
    K[:, 0, 0] = 1.0 / scale
    K[:, 1, 1] = 1.0 / scale
    K[:, 0, 3] = width / 2.0 / scale
    K[:, 1, 3] = height / 2.0 / scale
    K[:, 2, 2] = 1.0
    K[:, 3, 3] = 1.0
    transform = Transform3d(K.transpose(1, 2).contiguous())
    if with_xyflip:
        flip = torch.diag(torch.tensor([-1.0, -1.0, 1.0, 1.0], device=cameras.device))
        transform = Transform3d(flip).compose(transform)
    return transform


class FoVPerspectiveCameras(CamerasBase):
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
        R, T = _default_rt(R, T, device)
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

    def _shared_kwargs(self) -> dict[str, Any]:
        return {"degrees": self.degrees}

    def in_ndc(self) -> bool:
        return True

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


class PerspectiveCameras(CamerasBase):
    """A batch of pinhole cameras given by focal lengths and principal points (PyTorch3D's
    ``PerspectiveCameras``, the multi-view-geometry convention).

    The projection (column vectors, view point ``(X, Y, Z)``) is::

        K = [[fx, 0, px, 0], [0, fy, py, 0], [0, 0, 0, 1], [0, 0, 1, 0]]
        transform_points -> (fx X / Z + px, fy Y / Z + py, 1 / Z)

    * ``in_ndc=True`` (default): ``focal_length`` and ``principal_point`` are in PyTorch3D NDC
      units (+X left, +Y up, the shorter image side spanning [-1, 1]), so ``transform_points``
      gives NDC directly and no image size is needed.
    * ``in_ndc=False``: they are in pixels, with the principal point in image coordinates
      (+X right, +Y down, origin at the top-left corner of the image, so the centre of pixel
      ``(row i, col j)`` is ``(j + 0.5, i + 0.5)``: COLMAP's and nerfstudio's ``cx``, ``cy``);
      ``image_size=(H, W)`` is then required for NDC / screen conversions and ray sampling.
      ``transform_points`` gives PyTorch3D's intermediate "screen" space
      ``(fx X / Z + px, fy Y / Z + py)`` (not flipped); ``transform_points_screen`` gives
      pixel coordinates, ``transform_points_ndc`` NDC.

    A ``FoVPerspectiveCameras`` with field of view ``fov`` (of the shorter side) and
    ``aspect_ratio`` a projects x, y like ``PerspectiveCameras(focal_length=((1 / (tan(fov / 2)
    * a), 1 / tan(fov / 2)),))`` in NDC, or in pixels ``fx = s / (tan(fov / 2) a)``,
    ``fy = s / tan(fov / 2)``, ``s = min(H, W) / 2``, principal point ``(W / 2, H / 2)``.

    Every parameter is broadcast to the batch size ``N``.

    Args:
        focal_length: a scalar, ``(N,)``, ``(N, 1)`` (fx = fy) or ``(N, 2)`` (fx, fy). As in
            PyTorch3D, a 1-D sequence ``(a, b)`` means two cameras; write ``((fx, fy),)`` for
            one camera with two focal lengths.
        principal_point: ``(N, 2)`` (or ``(1, 2)``): ``(px, py)``.
        R: ``(N, 3, 3)`` world-to-view rotations.
        T: ``(N, 3)`` world-to-view translations.
        K: unsupported here (a custom 4x4 calibration matrix); must be None.
        device: device of every tensor.
        in_ndc: whether ``focal_length`` and ``principal_point`` are in NDC (else pixels).
        image_size: ``(H, W)``, ``((H, W),)`` or ``(N, 2)``; required when ``in_ndc=False``
            for anything that needs NDC (rays, ``transform_points_ndc`` / ``_screen``).
    """

    _FIELDS = ("focal_length", "principal_point", "R", "T", "image_size")

    def __init__(
        self,
        focal_length: _TensorLike = 1.0,
        principal_point: _TensorLike = ((0.0, 0.0),),
        R: torch.Tensor | None = None,
        T: torch.Tensor | None = None,
        K: torch.Tensor | None = None,
        device: Device = "cpu",
        in_ndc: bool = True,
        image_size: _TensorLike | None = None,
    ) -> None:
        if K is not None:
            raise ValueError("PerspectiveCameras in nerf_lab does not support a custom K.")
        R, T = _default_rt(R, T, device)
        focal = _format_tensor(focal_length, device)
        if focal.dim() == 1:
            focal = focal[:, None]
        if focal.dim() != 2 or focal.shape[1] not in (1, 2):
            raise ValueError(
                f"focal_length must be a scalar, (N,), (N, 1) or (N, 2); got {tuple(focal.shape)}."
            )
        focal = focal.expand(-1, 2)
        pp = _format_tensor(principal_point, device)
        if pp.dim() == 1:
            pp = pp[None]
        if pp.dim() != 2 or pp.shape[1] != 2:
            raise ValueError(f"principal_point must have shape (N, 2); got {tuple(pp.shape)}.")
        args = [focal, pp, R, T]
        if image_size is not None:
            size = _format_tensor(image_size, device)
            if size.dim() == 1:
                size = size[None]
            if size.dim() != 2 or size.shape[1] != 2:
                raise ValueError(
                    f"image_size must be (H, W) or of shape (N, 2); got {tuple(size.shape)}."
                )
            if not bool((size >= 1).all()):
                raise ValueError(f"image_size must be >= 1; got {size.tolist()}.")
            args.append(size)
        out = convert_to_tensors_and_broadcast(*args, device=device)
        self.focal_length, self.principal_point, self.R, self.T = out[:4]
        self.image_size = out[4] if image_size is not None else None
        if not bool(torch.isfinite(self.focal_length).all()) or bool(
            (self.focal_length == 0).any()
        ):
            raise ValueError(
                f"focal_length must be finite and non-zero; got {self.focal_length.tolist()}."
            )
        self._in_ndc = bool(in_ndc)
        self.device = self.R.device

    def _shared_kwargs(self) -> dict[str, Any]:
        return {"in_ndc": self._in_ndc}

    def in_ndc(self) -> bool:
        return self._in_ndc

    def get_projection_transform(self, **kwargs: Any) -> Transform3d:
        """View -> NDC (``in_ndc``) or screen; ``focal_length`` / ``principal_point``
        overridable by keyword."""
        n = len(self)
        focal = _format_tensor(kwargs.get("focal_length", self.focal_length), self.device)
        if focal.dim() == 1:
            focal = focal[:, None]
        focal = focal.expand(n, 2)
        pp = _format_tensor(kwargs.get("principal_point", self.principal_point), self.device)
        pp = pp.reshape(-1, 2).expand(n, 2)
        K = torch.zeros((n, 4, 4), dtype=torch.float32, device=self.device)
        K[:, 0, 0] = focal[:, 0]
        K[:, 1, 1] = focal[:, 1]
        K[:, 0, 2] = pp[:, 0]
        K[:, 1, 2] = pp[:, 1]
        K[:, 3, 2] = 1.0
        K[:, 2, 3] = 1.0
        return Transform3d(K.transpose(1, 2).contiguous())

    def get_principal_point(self, **kwargs: Any) -> torch.Tensor:
        """``(N, 2)`` principal points (in the camera's own units)."""
        return self.get_projection_transform(**kwargs).get_matrix()[:, 2, :2]

    def get_ndc_camera_transform(self, **kwargs: Any) -> Transform3d:
        """Screen (this camera's ``transform_points`` space) -> NDC, as PyTorch3D: the principal
        point, given in image coordinates (+X right, +Y down), is moved by ``-2 p`` into
        PyTorch3D's axes, then pixels are scaled to NDC. Identity for NDC cameras."""
        if self.in_ndc():
            return Transform3d(device=self.device)
        n = len(self)
        fix = torch.eye(4, dtype=torch.float32, device=self.device).repeat(n, 1, 1)
        fix[:, :2, 3] = -2.0 * self.get_principal_point(**kwargs)
        image_size = kwargs.get("image_size", self.get_image_size())
        return Transform3d(fix.transpose(1, 2).contiguous()).compose(
            get_screen_to_ndc_transform(self, with_xyflip=False, image_size=image_size)
        )

    def _ndc_to_view_xy(self, xy: torch.Tensor) -> torch.Tensor:
        """``X / Z``, ``Y / Z`` of view rays through NDC points ``xy (N, P, 2)``."""
        n = len(self)
        focal = self.focal_length.to(xy.dtype).view(n, 1, 2)
        pp = self.principal_point.to(xy.dtype).view(n, 1, 2)
        if self.in_ndc():
            return (xy - pp) / focal
        hw = get_image_size_tensor(self.get_image_size(), n, self.device).to(xy.dtype)
        wh = hw.flip(-1).view(n, 1, 2)
        scale = hw.min(dim=-1).values.view(n, 1, 1) / 2.0
        # ndc = (f X / Z - p + size / 2) / s  (PyTorch3D's get_ndc_camera_transform)
        return (scale * xy + pp - wh / 2.0) / focal

    def unproject_points(
        self,
        xy_depth: torch.Tensor,
        world_coordinates: bool = True,
        from_ndc: bool = False,
        **kwargs: Any,
    ) -> torch.Tensor:
        """Points from projected ``(x, y)`` and a view-space depth back to world (or view) space.

        Args:
            xy_depth: ``(N, P, 3)`` or ``(P, 3)`` (the same for every camera): x, y in the
                camera's own space (NDC or screen as in ``transform_points``), or in NDC with
                ``from_ndc=True``; then the view-space depth ``Z``.
            world_coordinates: return world points (else view points).
            from_ndc: x, y are in PyTorch3D NDC even for a screen-space camera.

        Returns:
            Points of the shape of ``xy_depth``.
        """
        if xy_depth.shape[-1] != 3:
            raise ValueError(f"xy_depth must end in 3 values; got {tuple(xy_depth.shape)}.")
        n = len(self)
        if xy_depth.dim() == 2:
            xy_depth = xy_depth[None].expand(n, -1, -1)
        batch = xy_depth.reshape(xy_depth.shape[0], -1, 3)
        xy, z = batch[..., :2], batch[..., 2:]
        if from_ndc or self.in_ndc():
            ratio = self._ndc_to_view_xy(xy)
        else:
            focal = self.focal_length.to(xy.dtype).view(n, 1, 2)
            ratio = (xy - self.principal_point.to(xy.dtype).view(n, 1, 2)) / focal
        pts_view = torch.cat([ratio * z, z], dim=-1)
        if world_coordinates:
            R = self.R.to(pts_view.dtype)
            pts_view = (pts_view - self.T.to(pts_view.dtype)[:, None, :]) @ R.transpose(1, 2)
        return pts_view.reshape(xy_depth.shape)

    def get_ray_directions_view(self, xy: torch.Tensor) -> torch.Tensor:
        """View-space directions (z = 1) through NDC points.

        Args:
            xy: ``(N, n_rays, 2)`` PyTorch3D NDC coordinates.

        Returns:
            ``(N, n_rays, 3)`` directions with view-space z equal to 1.
        """
        ratio = self._ndc_to_view_xy(xy)
        return torch.cat([ratio, torch.ones_like(ratio[..., :1])], dim=-1)


def screen_intrinsics(
    cameras: CamerasBase, image_size: Sequence[int] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel intrinsics of any camera batch: focal lengths ``(N, 2)`` ``(fx, fy)`` and principal
    points ``(N, 2)`` ``(cx, cy)`` in image coordinates (+X right, +Y down, origin at the image's
    top-left corner, pixel centres at ``+0.5``), i.e. COLMAP's / nerfstudio's ``fl_x, fl_y, cx,
    cy`` and the ``in_ndc=False`` parameters of :class:`PerspectiveCameras`.

    Args:
        cameras: :class:`FoVPerspectiveCameras` or :class:`PerspectiveCameras`.
        image_size: ``(H, W)``; default: the cameras' own (screen-space cameras).

    Returns:
        ``(focal (N, 2), principal_point (N, 2))`` float32.
    """
    n = len(cameras)
    hw = get_image_size_tensor(
        image_size if image_size is not None else cameras.get_image_size(), n, cameras.device
    )
    if isinstance(cameras, PerspectiveCameras) and not cameras.in_ndc():
        if image_size is not None and not torch.equal(
            hw, get_image_size_tensor(cameras.get_image_size(), n, cameras.device)
        ):
            raise ValueError("image_size differs from the cameras' own image_size.")
        return cameras.focal_length.clone(), cameras.principal_point.clone()
    # NDC cameras: x_ndc = f_ndc X / Z + p_ndc with x_pix = W / 2 - s x_ndc (+X flipped).
    scale = hw.min(dim=1).values[:, None] / 2.0
    wh = hw.flip(1)
    if isinstance(cameras, PerspectiveCameras):
        f_ndc, p_ndc = cameras.focal_length, cameras.principal_point
    elif isinstance(cameras, FoVPerspectiveCameras):
        fov = cameras.fov * (math.pi / 180.0) if cameras.degrees else cameras.fov
        tan_half = torch.tan(fov / 2)
        f_ndc = torch.stack([1.0 / (tan_half * cameras.aspect_ratio), 1.0 / tan_half], dim=1)
        p_ndc = torch.zeros(n, 2, device=cameras.device)
    else:
        raise TypeError(f"Unsupported cameras {type(cameras).__name__}.")
    return f_ndc * scale, wh / 2.0 - p_ndc * scale


CAMERA_TYPES: dict[str, type[CamerasBase]] = {
    "FoVPerspectiveCameras": FoVPerspectiveCameras,
    "PerspectiveCameras": PerspectiveCameras,
}


def cameras_to_state(cameras: CamerasBase) -> dict[str, Any]:
    """Plain, ``torch.load(weights_only=True)``-safe state of a camera batch (CPU tensors)."""
    name = type(cameras).__name__
    if name not in CAMERA_TYPES:
        raise TypeError(f"Unsupported cameras {name}.")
    fields = {}
    for f in cameras._FIELDS:
        value = getattr(cameras, f)
        fields[f] = None if value is None else value.detach().cpu().contiguous()
    return {"type": name, "shared": dict(cameras._shared_kwargs()), "fields": fields}


def cameras_from_state(state: dict[str, Any], device: Device = "cpu") -> CamerasBase:
    """The cameras saved by :func:`cameras_to_state`."""
    kind = CAMERA_TYPES.get(state.get("type", ""))
    if kind is None:
        raise ValueError(f"Unknown camera type {state.get('type')!r}; known: {list(CAMERA_TYPES)}.")
    fields = {k: v for k, v in state["fields"].items() if v is not None}
    return kind(device=device, **state["shared"], **fields)
