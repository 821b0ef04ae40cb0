"""Mesh renderer reproducing PyTorch3D's ``MeshRenderer(MeshRasterizer, SoftPhongShader)`` with one
face per pixel and ``SoftSilhouetteShader`` silhouettes, in pure torch.

Shading (PyTorch3D's ``phong_shading`` with default ``Materials`` and ``PointLights`` values)::

    colour = (ambient + diffuse) * texel + specular
    ambient  = 0.5
    diffuse  = 0.3 * relu(n . l)
    specular = 0.2 * (relu(v . r) * [n . l > 0]) ** 64,   r = -l + 2 (n . l) n

with ``p`` the perspective-correct interpolated world position, ``n`` the normalised interpolated
vertex normal, ``l = normalize(light - p)`` and ``v = normalize(camera_centre - p)``. With
``sigma = gamma = 1e-4`` and one face per pixel, ``softmax_rgb_blend`` returns the shaded colour on
covered pixels and the background elsewhere (no clamping anywhere, the values stay in [0, 1]).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from nerf_lab.cameras import CamerasBase
from nerf_lab.data.mesh import TexturedMesh, vertex_normals
from nerf_lab.data.raster import Fragments, rasterize
from nerf_lab.validate import check_choice

SIGMA = 1e-4
# The tutorial's silhouette blur: log(1 / 1e-4 - 1) * sigma, compared with *squared* distances.
SILHOUETTE_BLUR_RADIUS = math.log(1.0 / 1e-4 - 1.0) * SIGMA
SILHOUETTE_MODES = ("pytorch3d", "hard")


@dataclass(frozen=True)
class PhongLighting:
    """PyTorch3D ``PointLights`` + ``Materials`` defaults (one white point light).

    Attributes:
        ambient, diffuse, specular: light colours (grey levels) of PyTorch3D's ``PointLights``.
        shininess: ``Materials.shininess``.
    """

    ambient: float = 0.5
    diffuse: float = 0.3
    specular: float = 0.2
    shininess: float = 64.0


def _interp(values: torch.Tensor, faces: torch.Tensor, face_idx: torch.Tensor, bary: torch.Tensor):
    """Barycentric interpolation of per-vertex ``values`` (n, C) at hits ``(P,)`` -> ``(P, C)``."""
    corner = values[faces[face_idx]]  # (P, 3, C)
    return (bary[..., None] * corner).sum(dim=1)


def sample_texels(mesh: TexturedMesh, face_idx: torch.Tensor, bary: torch.Tensor) -> torch.Tensor:
    """Base colour of each hit, as PyTorch3D's textures sample it.

    ``TexturesUV``: ``grid_sample`` of the vertically flipped map at ``uv * 2 - 1`` (bilinear,
    ``align_corners=True``, ``padding_mode="border"``); vertex colours are interpolated.

    Args:
        mesh: the mesh.
        face_idx: ``(P,)`` face of each hit.
        bary: ``(P, 3)`` perspective-corrected barycentrics.

    Returns:
        ``(P, 3)`` colours.
    """
    device = bary.device
    if mesh.texture is not None:
        uv = _interp(mesh.verts_uvs.to(device), mesh.faces_uvs.to(device), face_idx, bary)
        tex = mesh.texture.to(device).permute(2, 0, 1)[None].flip(2)  # (1, 3, H_tex, W_tex)
        grid = (uv * 2.0 - 1.0)[None, None]  # (1, 1, P, 2)
        out = F.grid_sample(tex, grid, mode="bilinear", align_corners=True, padding_mode="border")
        return out[0, :, 0].T
    if mesh.verts_colors is not None:
        return _interp(mesh.verts_colors.to(device), mesh.faces.to(device), face_idx, bary)
    if mesh.faces_colors is not None:
        return mesh.faces_colors.to(device)[face_idx]
    return torch.tensor(mesh.constant_color, dtype=torch.float32, device=device).expand(
        len(face_idx), 3
    )


def phong(
    points: torch.Tensor,
    normals: torch.Tensor,
    texels: torch.Tensor,
    light_location: torch.Tensor,
    camera_center: torch.Tensor,
    lighting: PhongLighting = PhongLighting(),
) -> torch.Tensor:
    """PyTorch3D's ``phong_shading`` for hits.

    Args:
        points: ``(P, 3)`` world positions.
        normals: ``(P, 3)`` interpolated (unnormalised) vertex normals.
        texels: ``(P, 3)`` base colours.
        light_location: ``(P, 3)`` point-light position of each hit's view.
        camera_center: ``(P, 3)`` camera centre of each hit's view.
        lighting: light and material constants.

    Returns:
        ``(P, 3)`` shaded colours.
    """
    n = F.normalize(normals, p=2, dim=-1, eps=1e-6)
    l_dir = F.normalize(light_location - points, p=2, dim=-1, eps=1e-6)
    cos = (n * l_dir).sum(-1)
    diffuse = lighting.diffuse * F.relu(cos)
    v_dir = F.normalize(camera_center - points, p=2, dim=-1, eps=1e-6)
    reflect = -l_dir + 2 * (cos[..., None] * n)
    alpha = F.relu((v_dir * reflect).sum(-1)) * (cos > 0).to(points.dtype)
    specular = lighting.specular * torch.pow(alpha, lighting.shininess)
    return (lighting.ambient + diffuse)[..., None] * texels + specular[..., None]


def project_faces(mesh: TexturedMesh, cameras: CamerasBase) -> torch.Tensor:
    """Per-view face corners in NDC x, y with view-space depth z, as PyTorch3D's ``MeshRasterizer``
    (projection, then the camera's screen-to-NDC transform: identity for NDC cameras).

    Returns:
        ``(n_views, n_faces, 3, 3)``.
    """
    verts = mesh.verts.to(cameras.device)
    verts_view = cameras.get_world_to_view_transform().transform_points(verts)
    if verts_view.dim() == 2:
        verts_view = verts_view[None]
    to_ndc = cameras.get_projection_transform().compose(cameras.get_ndc_camera_transform())
    verts_ndc = to_ndc.transform_points(verts_view)
    verts_ndc = torch.cat([verts_ndc[..., :2], verts_view[..., 2:]], dim=-1)
    return verts_ndc[:, mesh.faces.to(cameras.device)]


def render_mesh(
    mesh: TexturedMesh,
    cameras: CamerasBase,
    image_size: int | Sequence[int] = 128,
    light_location: Sequence[float] | torch.Tensor | None = (0.0, 0.0, -3.0),
    background_color: Sequence[float] = (0.0, 0.0, 0.0),
    silhouette: str = "pytorch3d",
    lighting: PhongLighting = PhongLighting(),
    views_per_batch: int = 8,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Render RGB images and binary silhouettes of a mesh from every camera.

    Args:
        mesh: the mesh (world coordinates).
        cameras: ``n_views`` cameras.
        image_size: ``S`` or ``(H, W)``.
        light_location: ``(3,)``, ``(1, 3)`` or ``(n_views, 3)`` world position of the point
            light; ``None`` puts it at each camera's centre (a headlight).
        background_color: RGB of empty pixels.
        silhouette: ``"pytorch3d"``: the tutorial's ``SoftSilhouetteShader`` silhouette
            thresholded at 1e-4, i.e. covered or within squared NDC distance
            ``log(1/1e-4 - 1) * 1e-4`` of a face (about 2 px dilated at 128 px); ``"hard"``:
            the pixels covered by a face.
        lighting: light and material constants.
        views_per_batch: views rasterised together (memory / speed trade-off).

    Returns:
        ``images (n_views, H, W, 3)`` float32 and ``silhouettes (n_views, H, W)`` float32 {0, 1}.
    """
    check_choice("silhouette", silhouette, SILHOUETTE_MODES)
    if isinstance(image_size, int):
        hw = (image_size, image_size)
    else:
        hw = (int(image_size[0]), int(image_size[1]))
    if min(hw) <= 0:
        raise ValueError(f"image_size must be positive; got {image_size!r}.")
    device = cameras.device
    n_views = len(cameras)
    centers = cameras.get_camera_center()
    if light_location is None:
        lights = centers
    else:
        lights = torch.as_tensor(light_location, dtype=torch.float32, device=device).reshape(-1, 3)
        if lights.shape[0] not in (1, n_views):
            raise ValueError(
                f"light_location must have shape (3,), (1, 3) or ({n_views}, 3); "
                f"got {tuple(lights.shape)}."
            )
        lights = lights.expand(n_views, 3)
    background = torch.tensor(background_color, dtype=torch.float32, device=device)
    if background.shape != (3,):
        raise ValueError(f"background_color must be 3 floats; got {background_color!r}.")
    verts = mesh.verts.to(device)
    faces = mesh.faces.to(device)
    normals = vertex_normals(verts, faces)
    blur = SILHOUETTE_BLUR_RADIUS if silhouette == "pytorch3d" else 0.0

    images, sils = [], []
    for start in range(0, n_views, views_per_batch):
        idx = torch.arange(start, min(start + views_per_batch, n_views), device=device)
        frags: Fragments = rasterize(project_faces(mesh, cameras[idx]), hw, blur_radius=blur)
        hit = frags.pix_to_face >= 0  # (B, H, W)
        view_of_hit = hit.nonzero()[:, 0]
        face_idx = frags.pix_to_face[hit]
        bary = frags.bary_coords[hit]
        points = _interp(verts, faces, face_idx, bary)
        normals_hit = _interp(normals, faces, face_idx, bary)
        texels = sample_texels(mesh, face_idx, bary)
        colors = phong(
            points,
            normals_hit,
            texels,
            lights[idx][view_of_hit],
            centers[idx][view_of_hit],
            lighting,
        )
        img = background.expand(*hit.shape, 3).clone()
        img[hit] = colors
        images.append(img)
        cover = frags.coverage if silhouette == "pytorch3d" else hit
        sils.append(cover.to(torch.float32))
    return torch.cat(images), torch.cat(sils)
