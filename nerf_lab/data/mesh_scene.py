"""Any mesh file (OBJ, GLB/GLTF, PLY, STL, ...) as a multi-view scene."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from nerf_lab.data import cache as _cache
from nerf_lab.data.mesh import load_mesh, mesh_source_files, normalize_mesh
from nerf_lab.data.procedural import _orbit_params, render_orbit_scene
from nerf_lab.data.scene import Scene


def mesh_scene(
    path: str | Path,
    num_views: int = 40,
    n_test_views: int = 10,
    azimuth_range: float = 180.0,
    elevation_range: Sequence[float] = (0.0, 30.0),
    distance: float = 2.7,
    image_size: int = 128,
    fov: float = 60.0,
    light_location: Sequence[float] | None = None,
    background: str | Sequence[float] = "black",
    normalize: bool = True,
    silhouette: str = "pytorch3d",
    name: str | None = None,
    cache: bool = True,
) -> Scene:
    """Render a mesh file from an orbit of training views and in-between test views.

    Colours: the UV texture if the file has one, else vertex or face colours, else a
    constant grey; Phong shading as in the tutorial (ambient 0.5, diffuse 0.3, specular 0.2).

    Args:
        path: mesh file; OBJ is read like PyTorch3D's ``load_objs_as_meshes``, other formats
            with trimesh.
        num_views: number of training views.
        n_test_views: number of test views (half-way between consecutive training views).
        azimuth_range: half-range of the training azimuths in degrees (180: full circle).
        elevation_range: ``(min, max)`` training elevations in degrees (a spiral).
        distance: camera distance from the origin.
        image_size: image side in pixels.
        fov: field of view in degrees.
        light_location: world position of the point light; ``None``: a headlight at each camera.
        background: ``"black"``, ``"white"`` or an RGB triple.
        normalize: centre on the mean vertex and scale into ``[-1, 1]^3`` (as the tutorial).
        silhouette: ``"pytorch3d"`` (dilated like the tutorial's) or ``"hard"``.
        name: scene name (default: the file's stem).
        cache: reuse / store the scene in ``<cache dir>/scenes``.

    Returns:
        The scene: views ``[0, num_views)`` are ``"train"``, the rest ``"test"``.
    """
    path = Path(path).expanduser()
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
    files = mesh_source_files(path)
    scene_name = name if name is not None else path.stem
    key_params = {**params, "normalize": bool(normalize), "name": scene_name, "suffix": path.suffix}

    def build() -> Scene:
        mesh = load_mesh(path)
        if normalize:
            mesh = normalize_mesh(mesh)
        return render_orbit_scene(scene_name, mesh, **params)

    return _cache.cached_scene("mesh", key_params, files, build, cache=cache)
