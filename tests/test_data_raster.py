"""The rasteriser and shader against PyTorch3D's conventions (brute force and hand-made cases)."""

from __future__ import annotations

import math

import pytest
import torch

from nerf_lab.cameras import FoVPerspectiveCameras, look_at_view_transform
from nerf_lab.data.mesh import TexturedMesh, vertex_normals
from nerf_lab.data.raster import _edge, _point_segment_dist2, pix_to_ndc, rasterize
from nerf_lab.data.render import SILHOUETTE_BLUR_RADIUS, project_faces, render_mesh


def _brute_force(face_verts: torch.Tensor, H: int, W: int, blur: float):
    """PyTorch3D's naive rasteriser, pixel by pixel against every face (one view)."""
    x0, y0, z0 = face_verts[:, 0].T
    x1, y1, z1 = face_verts[:, 1].T
    x2, y2, z2 = face_verts[:, 2].T
    area = _edge(x2, y2, x0, y0, x1, y1)
    p2f = torch.full((H, W), -1)
    cov = torch.zeros(H, W, dtype=torch.bool)
    for i in range(H):
        py = pix_to_ndc(torch.tensor(H - 1 - i), H, W)
        for j in range(W):
            px = pix_to_ndc(torch.tensor(W - 1 - j), W, H)
            w0 = _edge(px, py, x1, y1, x2, y2) / area
            w1 = _edge(px, py, x2, y2, x0, y0) / area
            w2 = _edge(px, py, x0, y0, x1, y1) / area
            t0, t1, t2 = w0 * z1 * z2, z0 * w1 * z2, z0 * z1 * w2
            d = t0 + t1 + t2
            inside = (t0 / d > 0) & (t1 / d > 0) & (t2 / d > 0)
            pz = (t0 * z0 + t1 * z1 + t2 * z2) / d
            dist = torch.minimum(
                torch.minimum(
                    _point_segment_dist2(px, py, x0, y0, x1, y1),
                    _point_segment_dist2(px, py, x0, y0, x2, y2),
                ),
                _point_segment_dist2(px, py, x1, y1, x2, y2),
            )
            cov[i, j] = bool((inside | (dist < blur)).any())
            if inside.any():
                p2f[i, j] = int(torch.where(inside, pz, torch.tensor(math.inf)).argmin())
    return p2f, cov


def _random_mesh(n_faces: int = 40) -> TexturedMesh:
    g = torch.Generator().manual_seed(1)
    centers = torch.rand(n_faces, 1, 3, generator=g) * 1.6 - 0.8
    verts = (centers + 0.35 * torch.randn(n_faces, 3, 3, generator=g)).reshape(-1, 3)
    return TexturedMesh(verts=verts, faces=torch.arange(3 * n_faces).reshape(-1, 3))


@pytest.mark.parametrize("image_size", [(20, 20), (14, 22)])
def test_rasterizer_matches_brute_force(image_size):
    mesh = _random_mesh()
    R, T = look_at_view_transform(2.7, torch.tensor([10.0, -25.0]), torch.tensor([30.0, 200.0]))
    fv = project_faces(mesh, FoVPerspectiveCameras(R=R, T=T))
    H, W = image_size
    blur = 4 * SILHOUETTE_BLUR_RADIUS  # a wider band so the distance test matters at this size
    frags = rasterize(fv, (H, W), blur, max_pairs_per_chunk=500)  # many chunks
    for v in range(2):
        p2f, cov = _brute_force(fv[v], H, W, blur)
        assert torch.equal(frags.pix_to_face[v], p2f)
        assert torch.equal(frags.coverage[v], cov)
        assert cov.sum() > (p2f >= 0).sum() > 0


def test_pixel_centres_and_axes():
    # Pixel (row i, col j) of an S x S image is at NDC x = 1 - (2j + 1) / S, y = 1 - (2i + 1) / S.
    S = 8
    j = torch.arange(S)
    assert torch.allclose(pix_to_ndc(S - 1 - j, S, S), 1 - (2 * j + 1) / S)
    # Non-square: the shorter side spans [-1, 1], pixels are square.
    assert torch.allclose(pix_to_ndc(torch.tensor([0, 15]), 16, 8), torch.tensor([-1.875, 1.875]))
    # A triangle in the NDC quadrant x > 0 (left), y > 0 (up) covers the top-left pixels only.
    tri = torch.tensor([[[[0.05, 0.05, 2.0], [0.95, 0.05, 2.0], [0.05, 0.95, 2.0]]]])
    frags = rasterize(tri, (S, S))
    rows, cols = (frags.pix_to_face[0] >= 0).nonzero().T
    assert rows.max() < S // 2 and cols.max() < S // 2 and len(rows) > 0


def test_nearest_face_wins_and_no_backface_culling():
    near = [[-0.9, -0.9, 2.0], [0.9, -0.9, 2.0], [0.0, 0.9, 2.0]]
    far = [[-0.9, -0.9, 3.0], [0.0, 0.9, 3.0], [0.9, -0.9, 3.0]]  # opposite winding
    for order in ([far, near], [near, far]):
        frags = rasterize(torch.tensor([order]), (16, 16))
        hit = frags.pix_to_face[0] >= 0
        assert hit.any()
        expected = 1 if order[1] is near else 0
        assert (frags.pix_to_face[0][hit] == expected).all()
        assert torch.allclose(frags.zbuf[0][hit], torch.tensor(2.0))


def test_vertex_normals_area_weighted():
    verts = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 2]])
    faces = torch.tensor([[0, 2, 1], [0, 1, 3]])
    n = vertex_normals(verts, faces)
    fv = verts[faces]
    fn = torch.cross(fv[:, 2] - fv[:, 1], fv[:, 0] - fv[:, 1], dim=1)
    expected = torch.nn.functional.normalize(fn[0] + fn[1], dim=0)
    assert torch.allclose(n[0], expected)
    assert torch.allclose(n[2], torch.nn.functional.normalize(fn[0], dim=0))


def test_phong_constant_colour_and_background():
    # A triangle facing the camera, lit from the camera: at the image centre n = l = v, so the
    # colour is (ambient 0.5 + diffuse 0.3) * 0.5 + specular 0.2.
    verts = torch.tensor([[-2.0, -1.5, 0], [2, -1.5, 0], [0, 2, 0]])
    mesh = TexturedMesh(verts=verts, faces=torch.tensor([[0, 1, 2]]), constant_color=(0.5,) * 3)
    R, T = look_at_view_transform(3.0, 0.0, 0.0)
    cams = FoVPerspectiveCameras(R=R, T=T)
    img, sil = render_mesh(mesh, cams, 15, light_location=None, background_color=(0, 1, 0))
    assert torch.allclose(img[0, 7, 7], torch.tensor(0.6), atol=1e-5)
    assert torch.equal(img[0, 0, 0], torch.tensor([0.0, 1.0, 0.0]))
    assert sil[0, 7, 7] == 1 and sil[0, 0, 0] == 0
    # A light behind the surface: ambient only, no specular.
    img, _ = render_mesh(mesh, cams, 15, light_location=(0.0, 0.0, -5.0))
    assert torch.allclose(img[0, 7, 7], torch.tensor(0.25), atol=1e-5)
