"""The original NeRF's normalized device coordinates (NDC) for forward-facing captures.

A forward-facing capture (LLFF: a handful of nearby photos all looking the same way, with
content out to infinity) cannot be bounded by a box in world space. NeRF (Mildenhall et al.
2020, appendix C; ``ndc_rays`` in its code) instead samples rays in the NDC space of one
*reference camera* (the mean camera pose): the view frustum from the near plane to infinity
becomes the cube ``[-1, 1]^3``, and depths are sampled linearly in NDC, i.e. linearly in
disparity ``1 / z`` in the world.

nerf_lab's NDC is NeRF's, with PyTorch3D's axes (+X left, +Y up, +Z forward, like PyTorch3D's
own NDC) and a pinhole with any focal lengths and principal point. For a point at view-space
``(x, y, z)`` of the reference camera (``fx, fy, cx, cy`` in pixels of a ``W x H`` image,
``cx, cy`` from the image's top-left corner, ``near`` the depth of the near plane)::

    X = a_x x / z + b_x,  a_x = 2 fx / W,  b_x = 1 - 2 cx / W
    Y = a_y y / z + b_y,  a_y = 2 fy / H,  b_y = 1 - 2 cy / H
    Z = 1 - 2 near / z

so ``X = 1 - 2 u / W`` and ``Y = 1 - 2 v / H`` for the pixel ``(u, v)`` the point projects to
(``|X|, |Y| <= 1`` inside the image), the near plane is ``Z = -1`` and infinity ``Z = +1``.
A ray ``o + s d`` (``d_z > 0``) is first moved to start on the near plane, then becomes the
NDC ray ``o' + t d'`` with ``t`` in ``[0, 1)`` from the near plane to infinity
(:func:`ndc_rays`). For ``fx = fy = f`` and a centred principal point this is exactly NeRF's
``ndc_rays(H, W, f, near, rays_o, rays_d)`` with the x axis mirrored (NeRF's camera axes are
OpenGL's: +X right, looking along -Z).

:class:`NDCSpace` holds the reference camera and ``near``; :class:`NDCRaysampler` wraps any
raysampler so that its rays come out in NDC with ``lengths`` the NDC parameter ``t`` (its
depth range must then be within ``[0, 1]``: ``min_depth``/``max_depth: auto`` gives
``0 .. 1``). ``data=llff data.ndc=true`` builds the space (docs/captures.md).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from nerf_lab.cameras import CamerasBase, PerspectiveCameras, cameras_from_state, cameras_to_state
from nerf_lab.raysamplers import RayBundle, ndc_extent
from nerf_lab.validate import check_number

#: NeRF's ``bd_factor``: the NDC near plane lies at this fraction of the capture's nearest
#: depth bound (NeRF scales the nearest bound to 1 / 0.75 and puts the near plane at 1).
NDC_NEAR_FACTOR = 0.75


# ---------------------------------------------------------------------------------------
# Pure functions
# ---------------------------------------------------------------------------------------
def _ndc_coefficients(
    H: int, W: int, focal: float | Sequence[float], principal_point: Sequence[float] | None
) -> tuple[float, float, float, float]:
    """``a_x, a_y, b_x, b_y`` of the module docstring's formulas."""
    if isinstance(focal, int | float):
        fx = fy = float(focal)
    else:
        fx, fy = (float(f) for f in focal)
    cx, cy = (W / 2.0, H / 2.0) if principal_point is None else (float(c) for c in principal_point)
    if not (H >= 1 and W >= 1 and fx > 0 and fy > 0):
        raise ValueError(f"NDC needs H, W >= 1 and focal lengths > 0; got {H, W, (fx, fy)}.")
    return 2.0 * fx / W, 2.0 * fy / H, 1.0 - 2.0 * cx / W, 1.0 - 2.0 * cy / H


def _check_near(near: float) -> float:
    return check_number("near", near, 0, low_open=True)


def ndc_rays(
    H: int,
    W: int,
    focal: float | Sequence[float],
    near: float,
    rays_o: torch.Tensor,
    rays_d: torch.Tensor,
    principal_point: Sequence[float] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """NeRF's NDC rays (``ndc_rays(H, W, focal, near, rays_o, rays_d)``) in PyTorch3D's axes.

    Each ray is moved along itself to start on the near plane ``z = near``, then its origin
    and direction are mapped so that ``o' + t d'``, ``t`` in ``[0, 1)``, runs through the NDC
    images (module docstring) of the ray's points from the near plane (``t = 0``,
    ``Z = -1``) to infinity (``t -> 1``, ``Z -> 1``); ``t = 1 - near / z`` for the point at
    depth ``z``. Rays must point forward (``d_z > 0``); others give non-finite values.

    Args:
        H, W: the reference image's height and width in pixels.
        focal: ``f`` or ``(fx, fy)`` in pixels.
        near: depth of the near plane (> 0).
        rays_o: ``(..., 3)`` origins in the reference camera's view space (PyTorch3D: +X
            left, +Y up, +Z forward).
        rays_d: ``(..., 3)`` directions in the same space (any length).
        principal_point: ``(cx, cy)`` in pixels from the image's top-left corner; default
            the image centre.

    Returns:
        ``(origins (..., 3), directions (..., 3))`` in NDC.
    """
    near = _check_near(near)
    ax, ay, bx, by = _ndc_coefficients(H, W, focal, principal_point)
    t = (near - rays_o[..., 2]) / rays_d[..., 2]
    o = rays_o + t[..., None] * rays_d
    ox, oy, oz = o.unbind(-1)
    dx, dy, dz = rays_d.unbind(-1)
    origins = torch.stack([ax * ox / oz + bx, ay * oy / oz + by, 1.0 - 2.0 * near / oz], -1)
    directions = torch.stack(
        [ax * (dx / dz - ox / oz), ay * (dy / dz - oy / oz), 2.0 * near / oz], -1
    )
    return origins, directions


def view_to_ndc(
    points: torch.Tensor,
    H: int,
    W: int,
    focal: float | Sequence[float],
    near: float,
    principal_point: Sequence[float] | None = None,
) -> torch.Tensor:
    """NDC of reference-view points ``(..., 3)`` with ``z > 0`` (module docstring)."""
    near = _check_near(near)
    ax, ay, bx, by = _ndc_coefficients(H, W, focal, principal_point)
    x, y, z = points.unbind(-1)
    return torch.stack([ax * x / z + bx, ay * y / z + by, 1.0 - 2.0 * near / z], -1)


def ndc_to_view(
    points: torch.Tensor,
    H: int,
    W: int,
    focal: float | Sequence[float],
    near: float,
    principal_point: Sequence[float] | None = None,
) -> torch.Tensor:
    """The inverse of :func:`view_to_ndc`: ``z = 2 near / (1 - Z)``,
    ``x = (X - b_x) z / a_x``, ``y = (Y - b_y) z / a_y``.

    Args:
        points: ``(..., 3)`` NDC points with ``Z < 1`` (``Z = 1`` is infinitely far).

    Returns:
        ``(..., 3)`` reference-view points.
    """
    near = _check_near(near)
    ax, ay, bx, by = _ndc_coefficients(H, W, focal, principal_point)
    X, Y, Z = points.unbind(-1)
    z = 2.0 * near / (1.0 - Z)
    return torch.stack([(X - bx) * z / ax, (Y - by) * z / ay, z], -1)


def mean_pose(R: torch.Tensor, T: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean of camera poses (LLFF's / NeRF's ``poses_avg``), in PyTorch3D's convention.

    The centre is the mean camera centre; the viewing direction (view +Z) the normalised sum
    of the cameras' viewing directions; the up direction the sum of their up directions
    (view +Y), made orthogonal to the viewing direction.

    Args:
        R: ``(n, 3, 3)`` world-to-view rotations (``X_view = X_world @ R + T``; the columns
            of ``R`` are the view axes in world coordinates); T: ``(n, 3)``.

    Returns:
        ``R (1, 3, 3)``, ``T (1, 3)`` float64.

    Raises:
        ValueError: the viewing directions cancel out (e.g. cameras all around an object), or
            the summed up direction is parallel to the mean viewing direction.
    """
    R, T = R.detach().cpu().double(), T.detach().cpu().double()
    centre = (-torch.bmm(T[:, None, :], R.transpose(1, 2))[:, 0]).mean(0)
    forward_sum = R[:, :, 2].sum(0)
    if not float(forward_sum.norm()) > 1e-3 * len(R):
        raise ValueError(
            "the cameras' viewing directions cancel out: they have no mean viewing direction "
            "(cameras all around a scene are not a forward-facing capture)."
        )
    forward = forward_sum / forward_sum.norm()
    left = torch.linalg.cross(R[:, :, 1].sum(0), forward)
    if not float(left.norm()) > 1e-3 * len(R):
        raise ValueError("the cameras' summed up direction is parallel to their viewing direction.")
    left = left / left.norm()
    up = torch.linalg.cross(forward, left)
    R_mean = torch.stack([left, up, forward], dim=1)
    return R_mean[None], (-centre @ R_mean)[None]


# ---------------------------------------------------------------------------------------
# The NDC space of a scene
# ---------------------------------------------------------------------------------------
@dataclass(eq=False)
class NDCSpace:
    """The NDC space of a forward-facing scene: a reference camera and the near plane.

    Attributes:
        camera: one screen-space ``PerspectiveCameras`` (``in_ndc=False`` with its
            ``image_size``): its pose and pixel intrinsics define NDC.
        near: the near plane's depth in the reference camera (scene units, > 0).
    """

    camera: PerspectiveCameras
    near: float

    def __post_init__(self) -> None:
        cam = self.camera
        if not isinstance(cam, PerspectiveCameras) or len(cam) != 1 or cam.in_ndc():
            raise ValueError(
                f"NDCSpace.camera must be one screen-space PerspectiveCameras; got {cam!r}."
            )
        if cam.get_image_size() is None:
            raise ValueError("NDCSpace.camera needs its image_size.")
        self.camera = cam.clone().to("cpu")
        self.near = _check_near(self.near)

    @classmethod
    def from_cameras(cls, cameras: PerspectiveCameras, near: float) -> NDCSpace:
        """The space of the mean pose of ``cameras`` (:func:`mean_pose`) with the first
        camera's intrinsics (NeRF's choice for LLFF captures)."""
        R, T = mean_pose(cameras.R, cameras.T)
        ref = cameras[[0]]._replace(R=R.float().to(cameras.device), T=T.float().to(cameras.device))
        return cls(ref, near)

    # -- the reference camera ---------------------------------------------------------------
    @property
    def image_size(self) -> tuple[int, int]:
        h, w = self.camera.image_size[0].tolist()
        return int(h), int(w)

    def _args(self) -> tuple[int, int, list[float], float, list[float]]:
        H, W = self.image_size
        focal = self.camera.focal_length[0].tolist()
        pp = self.camera.principal_point[0].tolist()
        return H, W, focal, self.near, pp

    def _rt(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.camera.R[0].to(like), self.camera.T[0].to(like)

    def world_to_view(self, points: torch.Tensor) -> torch.Tensor:
        """``(..., 3)`` world points -> the reference camera's view space."""
        R, T = self._rt(points)
        return points @ R + T

    def view_to_world(self, points: torch.Tensor) -> torch.Tensor:
        """The inverse of :meth:`world_to_view`."""
        R, T = self._rt(points)
        return (points - T) @ R.T

    # -- maps -------------------------------------------------------------------------------
    def rays(
        self, origins: torch.Tensor, directions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """World rays ``(..., 3)`` -> NDC rays ``(..., 3)`` (:func:`ndc_rays`)."""
        R, _ = self._rt(directions)
        H, W, focal, near, pp = self._args()
        return ndc_rays(H, W, focal, near, self.world_to_view(origins), directions @ R, pp)

    def from_world(self, points: torch.Tensor) -> torch.Tensor:
        """``(..., 3)`` world points in front of the reference camera -> NDC."""
        H, W, focal, near, pp = self._args()
        return view_to_ndc(self.world_to_view(points), H, W, focal, near, pp)

    def to_world(self, points: torch.Tensor) -> torch.Tensor:
        """``(..., 3)`` NDC points (``Z < 1``) -> world points."""
        H, W, focal, near, pp = self._args()
        return self.view_to_world(ndc_to_view(points, H, W, focal, near, pp))

    # -- which cameras NDC can serve ----------------------------------------------------------
    def camera_problems(
        self,
        cameras: CamerasBase,
        image_size: Sequence[int],
        names: Sequence[str] | None = None,
    ) -> list[str]:
        """Why cameras cannot be rendered in this NDC space (empty: they can).

        A camera is *forward-facing* for this space when

        1. every ray of its image points forward, away from the reference camera
           (positive component along the reference viewing direction; checked at the four
           image corners, which bound a pinhole's rays): NDC maps only such rays, and
        2. its viewing direction points into the reference camera's image: the optical
           axis's NDC image at infinity lies in ``|X|, |Y| <= 1`` (where the field's NDC
           cube is), i.e. it looks at what the reference camera sees.

        Args:
            cameras: any camera batch.
            image_size: ``(H, W)`` of their images.
            names: the cameras' names in the messages (default ``camera <i>``).

        Returns:
            One line per camera that is not forward-facing.
        """
        h, w = (int(v) for v in image_size)
        rx, ry = ndc_extent(h, w)
        corners = torch.tensor([[rx, ry], [-rx, ry], [rx, -ry], [-rx, -ry]])
        cams = cameras.clone().to("cpu")
        n = len(cams)
        dirs = cams.get_ray_directions_view(corners[None].expand(n, 4, 2).contiguous())
        R_cam = cams.R.double()
        world = dirs.double() @ R_cam.transpose(1, 2)  # (n, 4, 3)
        R_ref, _ = self._rt(world)
        ref_dirs = world @ R_ref  # corner rays in the reference view
        axis = R_cam[:, :, 2] @ R_ref  # (n, 3) optical axes in the reference view
        H, W, focal, _, pp = self._args()
        ax, ay, bx, by = _ndc_coefficients(H, W, focal, pp)
        cosines = ref_dirs[..., 2] / ref_dirs.norm(dim=-1)  # (n, 4)
        problems = []
        for i in range(n):
            name = f"camera {i}" if names is None else names[i]
            worst = float(cosines[i].min())
            if not worst > 1e-6:
                problems.append(
                    f"{name}: a corner ray is {math.degrees(math.acos(worst)):.0f} degrees "
                    "from the reference viewing direction (rays must point forward, < 90)"
                )
                continue
            a = axis[i]
            X, Y = ax * float(a[0] / a[2]) + bx, ay * float(a[1] / a[2]) + by
            if max(abs(X), abs(Y)) > 1.0:
                problems.append(
                    f"{name} looks outside the reference camera's image (its optical "
                    f"axis ends at NDC X={X:.2f}, Y={Y:.2f}; forward-facing needs |X|, |Y| <= 1)"
                )
        return problems

    # -- saving ---------------------------------------------------------------------------------
    def to_state(self) -> dict[str, Any]:
        """Plain, ``torch.load(weights_only=True)``-safe state."""
        return {"camera": cameras_to_state(self.camera), "near": self.near}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> NDCSpace:
        """The space saved by :meth:`to_state`."""
        camera = cameras_from_state(state["camera"])
        if not isinstance(camera, PerspectiveCameras):
            raise ValueError(f"an NDC state needs PerspectiveCameras; got {type(camera)}.")
        return cls(camera, float(state["near"]))

    def __repr__(self) -> str:
        H, W, focal, near, pp = self._args()
        return (
            f"NDCSpace(image_size={(H, W)}, focal={focal}, principal_point={pp}, near={near:.4g})"
        )


class NDCRaysampler(torch.nn.Module):
    """Any raysampler whose rays come out in an :class:`NDCSpace`.

    ``forward(cameras, **kwargs)`` calls the wrapped raysampler, then maps each ray's origin
    and direction with :meth:`NDCSpace.rays`; ``lengths`` (the wrapped sampler's depths,
    which must lie in ``[0, 1]``: the NDC parameter ``t``) and ``xys`` are kept. The cameras
    are checked first (:meth:`NDCSpace.camera_problems`): a ``ValueError`` names the cameras
    NDC cannot render (e.g. an orbit looking at a forward-facing scene from behind).

    Args:
        raysampler: the wrapped raysampler (``raysampler(cameras=..., **kwargs)``).
        space: the NDC space.
        image_size: ``(H, W)`` of the images the wrapped sampler's NDC grid refers to (for the
            camera check; their aspect ratio is what matters).
    """

    def __init__(self, raysampler: Any, space: NDCSpace, image_size: Sequence[int]) -> None:
        super().__init__()
        if not isinstance(space, NDCSpace):
            raise ValueError(f"space must be an NDCSpace; got {space!r}.")
        self.raysampler = raysampler
        self.space = space
        self.image_size = tuple(int(v) for v in image_size)

    def forward(self, cameras: CamerasBase, **kwargs: Any) -> RayBundle:
        """NDC rays of ``cameras`` (shapes as the wrapped raysampler's bundle)."""
        problems = self.space.camera_problems(cameras, self.image_size)
        if problems:
            raise ValueError(
                "These cameras cannot be rendered in the run's NDC space (data.ndc=true, a "
                "forward-facing capture): " + "; ".join(problems[:5])
                + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
                + ". Use views looking the way the capture's cameras look (e.g. render "
                "path=spiral or path=interpolate)."
            )  # fmt: skip
        bundle = self.raysampler(cameras=cameras, **kwargs)
        lengths = bundle.lengths
        if lengths.numel() and (float(lengths.min()) < 0.0 or float(lengths.max()) > 1.0):
            raise ValueError(
                "NDC rays need depths (the NDC parameter t) in [0, 1]; got "
                f"[{float(lengths.min()):.4g}, {float(lengths.max()):.4g}]: set "
                "raysampler.min_depth / max_depth to auto (0 and 1) or within [0, 1]."
            )
        origins, directions = self.space.rays(bundle.origins, bundle.directions)
        return RayBundle(origins, directions, lengths, bundle.xys)


#: Config keys (in the ``model`` and ``raysampler`` groups) that name the box a field or a
#: sampler covers: a half-size ``b`` (``[-b, b]^3``), ``[x0, y0, z0, x1, y1, z1]`` or
#: ``[[x0, y0, z0], [x1, y1, z1]]``.
BOX_KEYS = ("bbox", "aabb")


def config_boxes(node: Any, where: str) -> list[tuple[str, list[float], list[float]]]:
    """Every :data:`BOX_KEYS` entry under a plain config mapping: ``(key path, lo, hi)``."""
    if not isinstance(node, Mapping):
        return []
    out = []
    for key, v in node.items():
        path = f"{where}.{key}"
        if key not in BOX_KEYS:
            out += config_boxes(v, path)
        elif isinstance(v, int | float) and not isinstance(v, bool):
            out.append((path, [-float(v)] * 3, [float(v)] * 3))
        elif isinstance(v, list | tuple) and len(v) == 6:
            out.append((path, [float(x) for x in v[:3]], [float(x) for x in v[3:]]))
        elif isinstance(v, list | tuple) and len(v) == 2:
            out.append((path, [float(x) for x in v[0]], [float(x) for x in v[1]]))
    return out


def ndc_box_problems(groups: Mapping[str, Any], scene_name: str = "scene") -> list[str]:
    """A run in NDC fits its field in the NDC cube ``[-1, 1]^3``: the boxes of the config
    groups (e.g. ``{"model": {...}, "raysampler": {...}}``, plain values; :data:`BOX_KEYS`)
    must cover it. Returns one line per box that does not."""
    return [
        f"{path}: the box {lo} .. {hi} does not cover the NDC cube [-1, 1]^3 in which scene "
        f"{scene_name!r} is fitted (data.ndc=true): make it cover [-1, 1]^3 (e.g. "
        "[-1, -1, -1, 1, 1, 1], or bbox: 1)"
        for group, node in groups.items()
        for path, lo, hi in config_boxes(node, group)
        if max(lo) > -1.0 + 1e-6 or min(hi) < 1.0 - 1e-6
    ]
