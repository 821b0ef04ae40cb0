"""A built-in scene that needs no files: a textured torus generated in code."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from nerf_lab.data import cache as _cache
from nerf_lab.data.bounds import bounding_radius, orbit_depth_range
from nerf_lab.data.mesh import TexturedMesh
from nerf_lab.data.render import SILHOUETTE_MODES, render_mesh
from nerf_lab.data.scene import Scene, concat_cameras
from nerf_lab.data.views import orbit_cameras, orbit_layout, parse_background
from nerf_lab.validate import check_choice, check_int, check_number


def checker_texture(size: int = 256, n_u: int = 12, n_v: int = 6) -> torch.Tensor:
    """A two-tone checkerboard crossed by four red bands of constant ``u``.

    Returns:
        ``(size, size, 3)`` float32 in [0, 1] (row 0 = top = ``v = 1``).
    """
    v = 1.0 - (torch.arange(size, dtype=torch.float32) + 0.5) / size
    u = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    vv, uu = torch.meshgrid(v, u, indexing="ij")
    check = ((uu * n_u).floor() + (vv * n_v).floor()) % 2
    light = torch.tensor([0.92, 0.85, 0.55])
    dark = torch.tensor([0.15, 0.35, 0.75])
    tex = torch.where(check[..., None] > 0, light, dark)
    band = (uu * 4.0) % 1.0 < 0.06
    tex[band] = torch.tensor([0.85, 0.15, 0.15])
    return tex


def torus_mesh(
    major_radius: float = 0.65,
    minor_radius: float = 0.3,
    n_major: int = 48,
    n_minor: int = 24,
    tilt_degrees: float = 30.0,
    texture_size: int = 256,
) -> TexturedMesh:
    """A UV-textured torus around the Y axis, tilted about X so its outline changes with azimuth.

    The vertex grid is ``(n_major + 1) x (n_minor + 1)`` (seam vertices duplicated so the UVs
    are continuous); faces are wound outward.

    Returns:
        The mesh with a :func:`checker_texture`.
    """
    if min(n_major, n_minor) < 3:
        raise ValueError(f"n_major and n_minor must be >= 3; got {(n_major, n_minor)}.")
    if not 0 < minor_radius < major_radius:
        raise ValueError(
            f"Need 0 < minor_radius < major_radius; got {(minor_radius, major_radius)}."
        )
    u = torch.linspace(0, 1, n_major + 1)
    v = torch.linspace(0, 1, n_minor + 1)
    uu, vv = torch.meshgrid(u, v, indexing="ij")
    theta, phi = 2 * math.pi * uu, 2 * math.pi * vv
    ring = major_radius + minor_radius * torch.cos(phi)
    verts = torch.stack(
        [ring * torch.cos(theta), minor_radius * torch.sin(phi), ring * torch.sin(theta)], dim=-1
    ).reshape(-1, 3)
    t = math.radians(tilt_degrees)
    rot = torch.tensor(
        [[1.0, 0.0, 0.0], [0.0, math.cos(t), -math.sin(t)], [0.0, math.sin(t), math.cos(t)]]
    )
    verts = verts @ rot.T
    idx = torch.arange((n_major + 1) * (n_minor + 1)).reshape(n_major + 1, n_minor + 1)
    a, b = idx[:-1, :-1], idx[1:, :-1]
    c, d = idx[1:, 1:], idx[:-1, 1:]
    faces = torch.cat(
        [torch.stack([a, d, c], -1).reshape(-1, 3), torch.stack([a, c, b], -1).reshape(-1, 3)]
    )
    uvs = torch.stack([uu, vv], dim=-1).reshape(-1, 2)
    return TexturedMesh(
        verts=verts.contiguous(),
        faces=faces,
        verts_uvs=uvs,
        faces_uvs=faces.clone(),
        texture=checker_texture(texture_size),
    )


def procedural_scene(
    num_views: int = 40,
    n_test_views: int = 10,
    image_size: int = 64,
    azimuth_range: float = 180.0,
    elevation_range: Sequence[float] = (10.0, 40.0),
    distance: float = 2.2,
    fov: float = 60.0,
    light_location: Sequence[float] | None = None,
    background: str | Sequence[float] = "black",
    silhouette: str = "pytorch3d",
    cache: bool = True,
) -> Scene:
    """A textured, tilted torus with specular highlights, rendered like the cow (no files needed).

    Training views spiral around the object (see
    :func:`nerf_lab.data.views.orbit_layout`); test views lie half-way between consecutive
    training views.

    Args:
        num_views: number of training views.
        n_test_views: number of test views.
        image_size: image side in pixels.
        azimuth_range: half-range of the training azimuths in degrees (180: full circle).
        elevation_range: ``(min, max)`` training elevations in degrees.
        distance: camera distance from the origin.
        fov: field of view in degrees.
        light_location: world position of the point light; ``None``: at each camera (headlight,
            so highlights move with the view).
        background: ``"black"``, ``"white"`` or an RGB triple.
        silhouette: ``"pytorch3d"`` or ``"hard"``.
        cache: reuse / store the scene in ``<cache dir>/scenes``.

    Returns:
        The scene: views ``[0, num_views)`` are ``"train"``, the rest ``"test"``.
    """
    params = _orbit_params(
        num_views,
        n_test_views,
        image_size,
        azimuth_range,
        elevation_range,
        distance,
        fov,
        light_location,
        background,
        silhouette,
    )

    def build() -> Scene:
        return render_orbit_scene("procedural", torus_mesh(), **params)

    return _cache.cached_scene("procedural", params, [], build, cache=cache)


def _orbit_params(
    num_views,
    n_test_views,
    image_size,
    azimuth_range,
    elevation_range,
    distance,
    fov,
    light_location,
    background,
    silhouette,
) -> dict:
    for name, value in (
        ("num_views", num_views),
        ("n_test_views", n_test_views),
        ("image_size", image_size),
    ):
        check_int(name, value)
    check_number("distance", distance, 0, low_open=True)
    check_number("fov", fov, 0, 180, low_open=True, high_open=True)
    check_choice("silhouette", silhouette, SILHOUETTE_MODES)
    light = None
    if light_location is not None:
        light = [float(c) for c in light_location]
        if len(light) != 3:
            raise ValueError(f"light_location must be 3 floats or None; got {light_location!r}.")
    orbit_layout(num_views, n_test_views, float(azimuth_range), elevation_range)  # validates
    return {
        "num_views": num_views,
        "n_test_views": n_test_views,
        "image_size": image_size,
        "azimuth_range": float(azimuth_range),
        "elevation_range": [float(e) for e in elevation_range],
        "distance": float(distance),
        "fov": float(fov),
        "light_location": light,
        "background": list(parse_background(background)),
        "silhouette": silhouette,
    }


def render_orbit_scene(
    name: str,
    mesh: TexturedMesh,
    num_views: int,
    n_test_views: int,
    image_size: int,
    azimuth_range: float,
    elevation_range: Sequence[float],
    distance: float,
    fov: float,
    light_location: Sequence[float] | None,
    background: Sequence[float],
    silhouette: str,
) -> Scene:
    """Render ``mesh`` from an :func:`orbit_layout` of train and test views into a Scene.

    The scene's ``near`` / ``far`` are :func:`~nerf_lab.data.bounds.orbit_depth_range` of
    ``distance`` and the mesh's bounding radius around the origin (the look-at point).
    """
    azim, elev, t_azim, t_elev = orbit_layout(
        num_views, n_test_views, azimuth_range, elevation_range
    )
    cameras = concat_cameras(
        [orbit_cameras(azim, elev, distance, fov), orbit_cameras(t_azim, t_elev, distance, fov)]
    )
    bg = tuple(float(c) for c in background)
    images, silhouettes = render_mesh(
        mesh,
        cameras,
        image_size,
        light_location=light_location,
        background_color=bg,
        silhouette=silhouette,
    )
    near, far = orbit_depth_range(distance, bounding_radius(mesh.verts))
    return Scene(
        name=name,
        cameras=cameras,
        images=images,
        silhouettes=silhouettes,
        splits={
            "train": torch.arange(num_views),
            "test": torch.arange(num_views, num_views + n_test_views),
        },
        background_color=bg,  # type: ignore[arg-type]
        near=near,
        far=far,
    )
