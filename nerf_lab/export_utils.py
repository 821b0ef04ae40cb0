"""Geometry out of a trained field: densities at points, meshes, point clouds, depth files.

A field is only ever called through its contract, ``field(ray_bundle) -> (densities
(..., n_pts_per_ray, 1) opacities, colors (..., n_pts_per_ray, 3))``, so every field of
nerf_lab (and any user module) exports the same way.

**Querying points** (:func:`point_rays`, :func:`query_field`, :func:`query_density`). A
point ``p`` becomes a ray of 2 samples: origin ``p``, a *unit* direction ``d`` (+Z unless
given) and lengths ``(0, spacing)``, so the points are ``p`` and ``p + spacing d`` and the
world-space sample spacing every field computes (:func:`nerf_lab.models.nerf.sample_spacing`:
depth difference times ``|d|``) is ``spacing`` at both samples. The opacity and colour of
the *first* sample are returned:

* a field whose opacity is ``1 - exp(-sigma delta)`` (``FastRadianceField``, NeRF with
  ``density_scaling=spacing``) gives ``1 - exp(-sigma(p) spacing)``: ``sigma(p) =
  -log(1 - opacity) / spacing`` (:func:`opacity_to_sigma`) does not depend on ``spacing``;
* the tutorial's NeRF (``density_scaling=none``) gives ``1 - exp(-sigma(p))`` for any
  ``spacing``.

The first sample of a ray has transmittance 1, so fields that decode colours only where a
point is visible (NeRF's ``render_color_threshold``, the fast field's
``color_threshold``) return the colour of every point whose opacity exceeds their
threshold; below it the colour may be 0.

**Meshes** (:func:`extract_mesh`): marching cubes (``skimage.measure.marching_cubes``,
the ``export`` extra: ``pip install -e '.[export]'``) on the opacity sampled on a regular
grid, faces wound counter-clockwise seen from outside (normals point out of the
high-density side), vertex colours queried from the field (see ``color_mode``).

**Files**: :func:`write_ply` (binary little-endian), :func:`write_obj`,
:func:`write_depth_png16` and :func:`write_depth_npy`; all atomic, mode ``0o666 & ~umask``.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nerf_lab.cameras import CamerasBase
from nerf_lab.fileio import atomic_write_data
from nerf_lab.raysamplers import RayBundle, ndc_pixel_grid
from nerf_lab.validate import check_choice, check_int, check_number, is_int, is_number

__all__ = [
    "COLOR_MODES",
    "Mesh",
    "depth_to_pointcloud",
    "extract_mesh",
    "fibonacci_directions",
    "grid_points",
    "marching_cubes_available",
    "opacity_to_sigma",
    "point_rays",
    "query_density",
    "query_field",
    "transform_mesh",
    "vertex_normals",
    "write_depth_npy",
    "write_depth_png16",
    "write_obj",
    "write_ply",
]

COLOR_MODES = ("normal", "average")

Field = Callable[..., tuple[torch.Tensor, torch.Tensor]]
BBox = float | Sequence[Sequence[float]] | torch.Tensor


# ---------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------
def _field_device(field: Any) -> torch.device:
    if isinstance(field, torch.nn.Module):
        for t in field.parameters():
            return t.device
        for t in field.buffers():
            return t.device
    return torch.device("cpu")


def _points(name: str, value: torch.Tensor | np.ndarray) -> torch.Tensor:
    t = torch.as_tensor(value)
    if t.dim() != 2 or t.shape[-1] != 3:
        raise ValueError(f"{name} must have shape (n, 3); got {tuple(t.shape)}.")
    return t


def opacity_to_sigma(opacity: torch.Tensor, spacing: float) -> torch.Tensor:
    """``sigma = -log(1 - opacity) / spacing`` (inverse of ``1 - exp(-sigma spacing)``).

    Args:
        opacity: any shape, in [0, 1); 1 gives ``inf``.
        spacing: the spacing the opacity was queried with.

    Returns:
        Same shape as ``opacity``.
    """
    return -torch.log1p(-opacity) / spacing


# ---------------------------------------------------------------------------------------
# Querying a field at points
# ---------------------------------------------------------------------------------------
def point_rays(
    points: torch.Tensor, spacing: float, directions: torch.Tensor | None = None
) -> RayBundle:
    """Rays of 2 samples whose first sample is each point (see the module docstring).

    Args:
        points: ``(n, 3)`` world points.
        spacing: world distance between the 2 samples of each ray (> 0).
        directions: optional ``(n, 3)`` directions (normalised here); default ``+Z``.

    Returns:
        A :class:`RayBundle` with origins ``(n, 3)``, unit directions ``(n, 3)``, lengths
        ``(n, 2) = (0, spacing)`` and ``xys`` ``(n, 2)`` zeros.
    """
    points = _points("points", points)
    spacing = check_number("spacing", spacing, 0, low_open=True)
    n = points.shape[0]
    if directions is None:
        d = points.new_zeros(n, 3)
        d[:, 2] = 1.0
    else:
        d = _points("directions", directions).to(points)
        if d.shape[0] != n:
            raise ValueError(f"directions must have shape ({n}, 3); got {tuple(d.shape)}.")
        d = torch.nn.functional.normalize(d, dim=-1)
    lengths = points.new_tensor([0.0, spacing]).expand(n, 2)
    return RayBundle(origins=points, directions=d, lengths=lengths, xys=points.new_zeros(n, 2))


@torch.no_grad()
def query_field(
    field: Field,
    points: torch.Tensor,
    spacing: float,
    directions: torch.Tensor | None = None,
    chunk: int = 65536,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Opacity and colour of a field at points, through its ray-bundle contract.

    Args:
        field: ``field(ray_bundle) -> (densities, colors)``; evaluated without autograd,
            on the device of its first parameter (CPU if it has none).
        points: ``(n, 3)`` world points.
        spacing: sample spacing the opacity refers to (see the module docstring).
        directions: optional ``(n, 3)`` viewing directions (the ray travels along them);
            default ``+Z``.
        chunk: points per call of the field.

    Returns:
        ``opacity (n,)`` in [0, 1] and ``colors (n, 3)``, float32 on ``points``' device.
    """
    points = _points("points", points)
    chunk = check_int("chunk", chunk)
    device = _field_device(field)
    n = points.shape[0]
    opac = torch.empty(n, dtype=torch.float32, device=points.device)
    rgb = torch.empty(n, 3, dtype=torch.float32, device=points.device)
    for start in range(0, n, chunk):
        sl = slice(start, min(start + chunk, n))
        p = points[sl].to(device=device, dtype=torch.float32)
        d = None if directions is None else directions[sl].to(device=device, dtype=torch.float32)
        densities, colors = field(point_rays(p, spacing, d))
        opac[sl] = densities[:, 0, 0].float().to(points.device)
        rgb[sl] = colors[:, 0, :].float().to(points.device)
    return opac, rgb


def query_density(
    field: Field, points: torch.Tensor, spacing: float, chunk: int = 65536
) -> torch.Tensor:
    """Opacities ``(n,)`` of a field at ``points (n, 3)`` for sample spacing ``spacing``.

    For spacing-aware fields this is ``1 - exp(-sigma(p) spacing)`` (see the module
    docstring); :func:`opacity_to_sigma` recovers ``sigma``.
    """
    return query_field(field, points, spacing, chunk=chunk)[0]


# ---------------------------------------------------------------------------------------
# Meshes
# ---------------------------------------------------------------------------------------
@dataclass
class Mesh:
    """A triangle mesh.

    Attributes:
        verts: ``(V, 3)`` float32 vertex positions.
        faces: ``(F, 3)`` int64 vertex indices, counter-clockwise seen from outside.
        vertex_colors: ``(V, 3)`` float32 in [0, 1], or None.
        vertex_normals: ``(V, 3)`` float32 unit outward normals, or None.
    """

    verts: torch.Tensor
    faces: torch.Tensor
    vertex_colors: torch.Tensor | None = None
    vertex_normals: torch.Tensor | None = None


def marching_cubes_available() -> tuple[bool, str]:
    """Whether :func:`extract_mesh` can run (scikit-image), and why not: ``(ok, reason)``."""
    try:
        from skimage import measure  # noqa: F401
    except ImportError:
        return False, "mesh extraction needs scikit-image: pip install -e '.[export]'"
    return True, "scikit-image found"


def _bbox(bbox: BBox) -> tuple[torch.Tensor, torch.Tensor]:
    if is_number(bbox):
        b = check_number("bbox", bbox, 0, low_open=True)
        return torch.full((3,), -b, dtype=torch.float64), torch.full((3,), b, dtype=torch.float64)
    t = torch.as_tensor(bbox, dtype=torch.float64)
    if t.shape != (2, 3) or not torch.isfinite(t).all() or not (t[0] < t[1]).all():
        raise ValueError(
            f"bbox must be a positive half-size b (the cube [-b, b]^3) or "
            f"((xmin, ymin, zmin), (xmax, ymax, zmax)) with min < max; got {bbox!r}."
        )
    return t[0], t[1]


def _resolution(resolution: int | Sequence[int]) -> tuple[int, int, int]:
    res = (resolution,) * 3 if isinstance(resolution, int) else tuple(resolution)
    if len(res) != 3 or any(not is_int(r) or r < 2 for r in res):
        raise ValueError(
            f"resolution must be an integer >= 2 or 3 such integers (grid vertices per axis); "
            f"got {resolution!r}."
        )
    return res  # type: ignore[return-value]


def grid_points(
    bbox: BBox, resolution: int | Sequence[int]
) -> tuple[torch.Tensor, tuple[float, float, float]]:
    """The vertices of a regular grid over ``bbox``, x slowest, z fastest.

    Args:
        bbox: half-size ``b`` (the cube ``[-b, b]^3``) or ``((xmin, ymin, zmin), (xmax,
            ymax, zmax))``.
        resolution: vertices per axis (``>= 2``), one int or ``(rx, ry, rz)``.

    Returns:
        ``(rx * ry * rz, 3)`` float32 points (``reshape(rx, ry, rz, 3)`` is the grid) and
        the step ``(dx, dy, dz)``.
    """
    lo, hi = _bbox(bbox)
    res = _resolution(resolution)
    axes = [
        torch.linspace(float(lo[i]), float(hi[i]), res[i], dtype=torch.float64) for i in range(3)
    ]
    step = tuple(float((hi[i] - lo[i]) / (res[i] - 1)) for i in range(3))
    g = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 3)
    return g.float(), step  # type: ignore[return-value]


def vertex_normals(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Area-weighted vertex normals of a mesh (unit; 0 for unused vertices).

    Args:
        verts: ``(V, 3)``; faces: ``(F, 3)`` counter-clockwise seen from the normal's side.

    Returns:
        ``(V, 3)``.
    """
    v0, v1, v2 = (verts[faces[:, i]] for i in range(3))
    face_n = torch.linalg.cross(v1 - v0, v2 - v0)  # length = 2 * area
    out = torch.zeros_like(verts)
    for i in range(3):
        out.index_add_(0, faces[:, i], face_n)
    return torch.nn.functional.normalize(out, dim=-1)


def fibonacci_directions(n: int) -> torch.Tensor:
    """``(n, 3)`` unit vectors spread evenly over the sphere (Fibonacci lattice)."""
    check_int("n", n)
    i = torch.arange(n, dtype=torch.float64) + 0.5
    z = 1.0 - 2.0 * i / n
    r = torch.sqrt((1.0 - z * z).clamp_min(0))
    phi = math.pi * (3.0 - math.sqrt(5.0)) * i
    return torch.stack([r * torch.cos(phi), r * torch.sin(phi), z], dim=-1).float()


def transform_mesh(mesh: Mesh, world_transform: torch.Tensor | np.ndarray) -> Mesh:
    """Apply a 4x4 affine map (column vectors: ``[x', 1] = M [x, 1]``) to a mesh.

    Normals are mapped by the inverse transpose and renormalised; a map with negative
    determinant (a reflection) also reverses the faces' winding, so faces stay
    counter-clockwise seen from outside.
    """
    M = torch.as_tensor(world_transform, dtype=torch.float64)
    if M.shape != (4, 4) or not torch.isfinite(M).all():
        raise ValueError(
            f"world_transform must be a finite 4x4 matrix; got shape {tuple(M.shape)}."
        )
    if not torch.allclose(M[3], M.new_tensor([0.0, 0.0, 0.0, 1.0])):
        raise ValueError(f"world_transform's last row must be 0 0 0 1; got {M[3].tolist()}.")
    A, t = M[:3, :3], M[:3, 3]
    det = float(torch.linalg.det(A))
    if abs(det) < 1e-12:
        raise ValueError("world_transform must be invertible (its 3x3 part has determinant 0).")
    verts = (mesh.verts.double() @ A.T + t).float()
    normals = None
    if mesh.vertex_normals is not None:
        normals = torch.nn.functional.normalize(
            mesh.vertex_normals.double() @ torch.linalg.inv(A), dim=-1
        ).float()
    faces = mesh.faces.flip(-1) if det < 0 else mesh.faces
    return Mesh(verts, faces, mesh.vertex_colors, normals)


def extract_mesh(
    field: Field,
    bbox: BBox,
    resolution: int | Sequence[int] = 128,
    level: float = 0.5,
    chunk: int = 65536,
    spacing: float | None = None,
    color_mode: str | None = "normal",
    n_color_directions: int = 16,
    world_transform: torch.Tensor | np.ndarray | None = None,
) -> Mesh:
    """Marching cubes on a field's opacity, with vertex colours from the field.

    The field's opacity (:func:`query_density`, with ``spacing``) is sampled at the
    vertices of a ``resolution`` grid over ``bbox`` and the ``level`` isosurface is
    extracted by ``skimage.measure.marching_cubes`` (faces oriented with their normals out
    of the region where the opacity is above ``level``).

    Vertex colours (``color_mode``):

    * ``"normal"``: the colour seen by a ray arriving head-on from outside, i.e. with
      direction ``-n`` for the outward vertex normal ``n``;
    * ``"average"``: the cosine-weighted mean, over the ``n_color_directions``
      :func:`fibonacci_directions` that arrive from outside (``d . n < 0``), of the colour
      seen along each (weight ``-d . n``): a view-averaged, diffuse-like colour;
    * ``None``: no colours.

    Args:
        field: ``field(ray_bundle) -> (densities, colors)``.
        bbox: half-size ``b`` (cube ``[-b, b]^3``) or ``((xmin, ymin, zmin), (xmax, ymax,
            zmax))`` in the field's coordinates.
        resolution: grid vertices per axis, int or ``(rx, ry, rz)``.
        level: opacity of the surface, in (0, 1).
        chunk: points per field call.
        spacing: sample spacing of the opacity queries; ``None``: the smallest grid step
            (a ``level`` of 0.5 then means "a grid-step-thick slab is half opaque"). Has no
            effect on the tutorial's ``density_scaling=none`` NeRF.
        color_mode: ``"normal"``, ``"average"`` or ``None``.
        n_color_directions: directions for ``"average"`` (about half of them are used per
            vertex).
        world_transform: optional 4x4 affine map (column vectors) from the field's
            coordinates to an original capture frame, applied last (e.g. the inverse of a
            data parser's normalisation).

    Returns:
        The :class:`Mesh` (on the CPU), with outward vertex normals.

    Raises:
        ValueError: bad arguments, or no surface at ``level`` (the message gives the
            range of opacities sampled).
        ImportError: scikit-image is missing (the message says what to install).
    """
    ok, reason = marching_cubes_available()
    if not ok:
        raise ImportError(reason)
    from skimage.measure import marching_cubes

    check_number("level", level, 0, 1, low_open=True, high_open=True)
    check_choice("color_mode", color_mode, (*COLOR_MODES, None))
    check_int("n_color_directions", n_color_directions)
    lo, _ = _bbox(bbox)
    res = _resolution(resolution)
    pts, step = grid_points(bbox, res)
    spacing = min(step) if spacing is None else check_number("spacing", spacing, 0, low_open=True)
    volume = query_density(field, pts, spacing, chunk=chunk).reshape(res).cpu().numpy()
    vmin, vmax = float(volume.min()), float(volume.max())
    if not vmin < level < vmax:
        raise ValueError(
            f"no surface at level={level!r}: the opacities sampled on the grid span "
            f"[{vmin:.4g}, {vmax:.4g}] (spacing={spacing:.4g}); choose a level inside it, a "
            f"larger bbox or a finer resolution."
        )
    verts_np, faces_np, _, _ = marching_cubes(
        volume, level=level, spacing=step, gradient_direction="descent", allow_degenerate=False
    )
    verts = torch.from_numpy(verts_np.astype(np.float64) + lo.numpy()).float()
    faces = torch.from_numpy(faces_np.astype(np.int64))
    # skimage's "descent" winding is clockwise seen from the low side for an (x, y, z)
    # grid; flip to counter-clockwise seen from outside (outward normals).
    faces = faces.flip(-1)
    normals = vertex_normals(verts, faces)
    colors = None
    if color_mode == "normal":
        colors = query_field(field, verts, spacing, directions=-normals, chunk=chunk)[1]
    elif color_mode == "average":
        dirs = fibonacci_directions(n_color_directions)
        acc = torch.zeros(len(verts), 3)
        wsum = torch.zeros(len(verts), 1)
        for d in dirs:
            w = (-(normals @ d)).clamp_min(0)[:, None]
            use = w[:, 0] > 0
            if not use.any():
                continue
            rgb = query_field(
                field, verts[use], spacing, directions=d.expand(int(use.sum()), 3), chunk=chunk
            )[1]
            acc[use] += w[use] * rgb
            wsum[use] += w[use]
        colors = acc / wsum.clamp_min(1e-12)
    mesh = Mesh(verts, faces, colors, normals)
    if world_transform is not None:
        mesh = transform_mesh(mesh, world_transform)
    return mesh


# ---------------------------------------------------------------------------------------
# Point clouds
# ---------------------------------------------------------------------------------------
def depth_to_pointcloud(
    depth: torch.Tensor,
    rgb: torch.Tensor | None,
    camera: CamerasBase,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """World points of a depth map (view-space z-depths, as nerf_lab renders them).

    Pixel ``(i, j)`` of depth ``z`` gives the point at depth ``z`` on the ray through that
    pixel centre, the raysampler's ray: the view direction through the pixel centre's NDC
    ``(x, y)`` (:func:`nerf_lab.raysamplers.ndc_pixel_grid`,
    ``camera.get_ray_directions_view``, view-space z = 1) times ``z``, mapped to the world.
    This holds for every camera kind (also screen-space ``PerspectiveCameras`` whose
    ``image_size`` is a multiple of ``(H, W)``: the NDC grid depends on the aspect only).

    Args:
        depth: ``(H, W)`` (or ``(H, W, 1)``) z-depths.
        rgb: optional ``(H, W, 3)`` colours.
        camera: one camera (``len(camera) == 1``), ``FoVPerspectiveCameras`` or
            ``PerspectiveCameras``.
        mask: optional ``(H, W)`` bool (or ``(H, W, 1)``) pixels to keep; default: pixels
            with a finite depth > 0.

    Returns:
        ``points (n, 3)`` and ``colors (n, 3)`` (None without ``rgb``), pixels in row-major
        order.
    """
    if len(camera) != 1:
        raise ValueError(f"camera must hold exactly 1 camera; got {len(camera)}.")
    if depth.dim() == 3 and depth.shape[-1] == 1:
        depth = depth[..., 0]
    if depth.dim() != 2:
        raise ValueError(f"depth must have shape (H, W); got {tuple(depth.shape)}.")
    H, W = depth.shape
    if rgb is not None and tuple(rgb.shape) != (H, W, 3):
        raise ValueError(f"rgb must have shape ({H}, {W}, 3); got {tuple(rgb.shape)}.")
    if mask is None:
        mask = torch.isfinite(depth) & (depth > 0)
    else:
        if mask.dim() == 3 and mask.shape[-1] == 1:
            mask = mask[..., 0]
        if tuple(mask.shape) != (H, W):
            raise ValueError(f"mask must have shape ({H}, {W}); got {tuple(mask.shape)}.")
        mask = mask.bool()
    keep = mask.reshape(-1).to(camera.device)
    xy = ndc_pixel_grid(H, W, device=camera.device).reshape(1, -1, 2)[:, keep]
    z = depth.to(camera.device, torch.float32).reshape(-1)[keep]
    view = camera.get_ray_directions_view(xy)[0] * z[:, None]
    R, T = camera.R[0].to(view.dtype), camera.T[0].to(view.dtype)
    points = (view - T) @ R.T
    colors = None if rgb is None else rgb.reshape(-1, 3)[mask.reshape(-1).to(rgb.device)]
    return points, colors


# ---------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------
def _colors_u8(colors: torch.Tensor | np.ndarray, n: int) -> np.ndarray:
    c = torch.as_tensor(colors).detach().cpu()
    if tuple(c.shape) != (n, 3):
        raise ValueError(f"colors must have shape ({n}, 3); got {tuple(c.shape)}.")
    if c.dtype == torch.uint8:
        return c.numpy()
    return (torch.nan_to_num(c.float(), nan=0.0).clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def _mesh_arrays(vertices: Any, faces: Any) -> tuple[np.ndarray, np.ndarray | None]:
    v = torch.as_tensor(vertices).detach().cpu()
    if v.dim() != 2 or v.shape[-1] != 3:
        raise ValueError(f"vertices must have shape (V, 3); got {tuple(v.shape)}.")
    f = None
    if faces is not None:
        ft = torch.as_tensor(faces).detach().cpu()
        if ft.dim() != 2 or ft.shape[-1] != 3:
            raise ValueError(f"faces must have shape (F, 3); got {tuple(ft.shape)}.")
        if ft.numel() and (int(ft.min()) < 0 or int(ft.max()) >= v.shape[0]):
            raise ValueError(
                f"faces index vertices 0..{v.shape[0] - 1}; got indices {int(ft.min())}.."
                f"{int(ft.max())}."
            )
        f = ft.to(torch.int64).numpy()
    return v.to(torch.float32).numpy(), f


def write_ply(
    path: str | Path,
    vertices: torch.Tensor | np.ndarray,
    faces: torch.Tensor | np.ndarray | None = None,
    colors: torch.Tensor | np.ndarray | None = None,
    normals: torch.Tensor | np.ndarray | None = None,
) -> Path:
    """Write a binary little-endian PLY: a point cloud, or a mesh with ``faces``.

    Vertex properties: ``float x, y, z`` [``float nx, ny, nz``] [``uchar red, green,
    blue``]; faces: ``list uchar int vertex_indices``.

    Args:
        path: output ``.ply``.
        vertices: ``(V, 3)``.
        faces: optional ``(F, 3)`` vertex indices.
        colors: optional ``(V, 3)`` float in [0, 1] or uint8.
        normals: optional ``(V, 3)``.

    Returns:
        ``path``.
    """
    v, f = _mesh_arrays(vertices, faces)
    n = v.shape[0]
    fields: list[tuple[str, str]] = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    header = ["ply", "format binary_little_endian 1.0", "comment written by nerf_lab"]
    header += [f"element vertex {n}", "property float x", "property float y", "property float z"]
    if normals is not None:
        nrm = torch.as_tensor(normals).detach().cpu().float().numpy()
        if nrm.shape != (n, 3):
            raise ValueError(f"normals must have shape ({n}, 3); got {tuple(nrm.shape)}.")
        fields += [("nx", "<f4"), ("ny", "<f4"), ("nz", "<f4")]
        header += ["property float nx", "property float ny", "property float nz"]
    if colors is not None:
        col = _colors_u8(colors, n)
        fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
        header += ["property uchar red", "property uchar green", "property uchar blue"]
    vert = np.empty(n, dtype=np.dtype(fields))
    vert["x"], vert["y"], vert["z"] = v[:, 0], v[:, 1], v[:, 2]
    if normals is not None:
        vert["nx"], vert["ny"], vert["nz"] = nrm[:, 0], nrm[:, 1], nrm[:, 2]
    if colors is not None:
        vert["red"], vert["green"], vert["blue"] = col[:, 0], col[:, 1], col[:, 2]
    body = [vert.tobytes()]
    if f is not None:
        header += [f"element face {f.shape[0]}", "property list uchar int vertex_indices"]
        face = np.empty(f.shape[0], dtype=np.dtype([("n", "u1"), ("idx", "<i4", (3,))]))
        face["n"] = 3
        face["idx"] = f
        body.append(face.tobytes())
    header.append("end_header")
    data = ("\n".join(header) + "\n").encode("ascii") + b"".join(body)
    return atomic_write_data(path, data)


def write_obj(
    path: str | Path,
    vertices: torch.Tensor | np.ndarray,
    faces: torch.Tensor | np.ndarray | None = None,
    colors: torch.Tensor | np.ndarray | None = None,
) -> Path:
    """Write a Wavefront OBJ: ``v x y z`` lines (``v x y z r g b`` with colours in [0, 1],
    the common vertex-colour extension read by MeshLab, Blender, trimesh and Open3D) and
    1-based ``f i j k`` lines.

    Args:
        path: output ``.obj``.
        vertices: ``(V, 3)``; faces: optional ``(F, 3)``; colors: optional ``(V, 3)`` float
            in [0, 1] or uint8.

    Returns:
        ``path``.
    """
    v, f = _mesh_arrays(vertices, faces)
    lines = ["# written by nerf_lab"]
    if colors is not None:
        col = _colors_u8(colors, v.shape[0]).astype(np.float64) / 255.0
        lines += [
            f"v {a:.7g} {b:.7g} {c:.7g} {r:.6g} {g:.6g} {bb:.6g}"
            for (a, b, c), (r, g, bb) in zip(v.tolist(), col.tolist(), strict=True)
        ]
    else:
        lines += [f"v {a:.7g} {b:.7g} {c:.7g}" for a, b, c in v.tolist()]
    if f is not None:
        lines += [f"f {i + 1} {j + 1} {k + 1}" for i, j, k in f.tolist()]
    return atomic_write_data(path, ("\n".join(lines) + "\n").encode("ascii"))


def _depth_map(depth: torch.Tensor | np.ndarray) -> np.ndarray:
    d = torch.as_tensor(depth).detach().cpu()
    if d.dim() == 3 and d.shape[-1] == 1:
        d = d[..., 0]
    if d.dim() != 2:
        raise ValueError(f"depth must have shape (H, W); got {tuple(d.shape)}.")
    return d.to(torch.float32).numpy()


def write_depth_png16(
    path: str | Path, depth: torch.Tensor | np.ndarray, scale: float = 1000.0
) -> Path:
    """Write a depth map as a 16-bit greyscale PNG: ``value = round(depth * scale)``.

    With the default ``scale = 1000`` a value is the depth in thousandths of a scene unit
    (millimetres for metric scenes, as TUM RGB-D / ScanNet depth PNGs), so depths up to
    65.535 units are stored with a resolution of 0.001. Depths <= 0, not finite or beyond
    ``65535 / scale`` are written as 0 ("no depth").

    Args:
        path: output ``.png``.
        depth: ``(H, W)`` (or ``(H, W, 1)``) z-depths.
        scale: values per depth unit (> 0).

    Returns:
        ``path``. Read back with ``imageio.v3.imread(path) / scale`` (a ``uint16`` array).
    """
    from PIL import Image

    scale = check_number("scale", scale, 0, low_open=True)
    d = _depth_map(depth).astype(np.float64) * scale
    valid = np.isfinite(d) & (d > 0) & (d <= 65535.0)
    u16 = np.where(valid, np.round(np.where(valid, d, 0.0)), 0).astype(np.uint16)
    buf = io.BytesIO()
    Image.fromarray(u16).save(buf, format="PNG")
    return atomic_write_data(path, buf.getvalue())


def write_depth_npy(path: str | Path, depth: torch.Tensor | np.ndarray) -> Path:
    """Write a depth map ``(H, W)`` as a float32 ``.npy`` (exact; NaN / inf kept)."""
    buf = io.BytesIO()
    np.save(buf, _depth_map(depth), allow_pickle=False)
    return atomic_write_data(path, buf.getvalue())
