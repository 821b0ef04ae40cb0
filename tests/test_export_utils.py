import math
import os
import stat

import imageio.v3 as iio
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nerf_lab.cameras import FoVPerspectiveCameras, look_at_view_transform
from nerf_lab.export_utils import (
    Mesh,
    depth_to_pointcloud,
    extract_mesh,
    fibonacci_directions,
    grid_points,
    opacity_to_sigma,
    point_rays,
    query_density,
    query_field,
    transform_mesh,
    vertex_normals,
    write_depth_npy,
    write_depth_png16,
    write_obj,
    write_ply,
)
from nerf_lab.models.fast import FastRadianceField
from nerf_lab.models.nerf import NeuralRadianceField, sample_spacing
from nerf_lab.raysamplers import NDCMultinomialRaysampler, ray_bundle_to_ray_points

R0, SLOPE = 0.8, 100.0  # the analytic field's sigma = SLOPE * max(0, R0 - |p|)


class SphereField(torch.nn.Module):
    """sigma(p) = SLOPE * max(0, R0 - |p|), opacity 1 - exp(-sigma delta); the colour is
    ``0.5 - 0.5 d`` for the unit ray direction ``d`` (or a constant)."""

    def __init__(self, constant_color: tuple[float, float, float] | None = None):
        super().__init__()
        self.constant_color = constant_color
        self.calls = 0

    def forward(self, ray_bundle, **kwargs):
        self.calls += 1
        pts = ray_bundle_to_ray_points(ray_bundle)
        sigma = SLOPE * (R0 - pts.norm(dim=-1)).clamp_min(0)
        delta = sample_spacing(ray_bundle.lengths, ray_bundle.directions)
        alpha = 1 - torch.exp(-sigma * delta)
        if self.constant_color is None:
            rgb = 0.5 - 0.5 * F.normalize(ray_bundle.directions, dim=-1)
        else:
            rgb = torch.tensor(self.constant_color).expand_as(ray_bundle.directions)
        return alpha[..., None], rgb[..., None, :].expand(*pts.shape).clone()


def _surface_radius(level: float, spacing: float) -> float:
    return R0 - (-math.log(1 - level) / spacing) / SLOPE


# ----------------------------------------------------------------------------- queries
def test_point_rays_put_the_point_first_with_the_given_spacing():
    pts = torch.randn(5, 3)
    rb = point_rays(pts, 0.03)
    samples = ray_bundle_to_ray_points(rb)
    torch.testing.assert_close(samples[:, 0], pts)
    torch.testing.assert_close(sample_spacing(rb.lengths, rb.directions), torch.full((5, 2), 0.03))
    rb = point_rays(pts, 0.03, directions=torch.randn(5, 3) * 7)
    torch.testing.assert_close(rb.directions.norm(dim=-1), torch.ones(5))
    with pytest.raises(ValueError, match="spacing"):
        point_rays(pts, 0.0)


def test_query_density_closed_form_and_chunking():
    field = SphereField()
    pts = torch.rand(257, 3) * 2 - 1
    s = 0.02
    expected = 1 - torch.exp(-SLOPE * (R0 - pts.norm(dim=-1)).clamp_min(0) * s)
    got = query_density(field, pts, s, chunk=1000)
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(query_density(field, pts, s, chunk=10), got)
    assert field.calls == 1 + 26
    dirs = torch.randn(257, 3)
    _, rgb = query_field(field, pts, s, directions=dirs)
    torch.testing.assert_close(rgb, 0.5 - 0.5 * F.normalize(dirs, dim=-1))


def test_sigma_is_independent_of_the_spacing_for_real_fields():
    torch.manual_seed(0)
    pts = torch.rand(64, 3) * 1.6 - 0.8
    nerf = NeuralRadianceField(
        n_harmonic_functions=4, n_hidden_neurons=16, density_scaling="spacing"
    )
    nerf.density_layer[0].bias.data[0] = 3.0  # densities of order 1, not the tutorial's ~0
    fast = FastRadianceField(resolution=8, n_features=3, density_init=5.0)
    with torch.no_grad():
        fast.density.normal_(0, 0.5)
    for field in (nerf, fast):
        s1 = opacity_to_sigma(query_density(field, pts, 0.01).double(), 0.01)
        s2 = opacity_to_sigma(query_density(field, pts, 0.05).double(), 0.05)
        assert (s1 > 0.1).all()
        torch.testing.assert_close(s1, s2, rtol=2e-4, atol=0)
    # The tutorial's NeRF: opacity 1 - exp(-sigma), whatever the spacing.
    tut = NeuralRadianceField(n_harmonic_functions=4, n_hidden_neurons=16)
    torch.testing.assert_close(query_density(tut, pts, 0.01), query_density(tut, pts, 0.05))


def test_query_field_gives_nerf_colours_at_the_points_despite_the_render_threshold():
    torch.manual_seed(0)
    pts = torch.rand(32, 3) - 0.5
    nerf = NeuralRadianceField(n_harmonic_functions=4, n_hidden_neurons=16)
    nerf.density_layer[0].bias.data[0] = 3.0
    _, full = query_field(nerf, pts, 0.05)
    nerf.render_color_threshold = 1e-4
    _, thresh = query_field(nerf, pts, 0.05)
    torch.testing.assert_close(thresh, full)


# ----------------------------------------------------------------------------- meshes
def test_grid_points_layout():
    pts, step = grid_points(((0, -1, 2), (1, 1, 3)), (3, 5, 2))
    assert pts.shape == (30, 3)
    assert step == pytest.approx((0.5, 0.5, 1.0))
    g = pts.reshape(3, 5, 2, 3)
    torch.testing.assert_close(g[1, 2, 1], torch.tensor([0.5, 0.0, 3.0]))
    with pytest.raises(ValueError, match="bbox"):
        grid_points(((0, 0, 0), (0, 1, 1)), 4)
    with pytest.raises(ValueError, match="resolution"):
        grid_points(1.0, 1)


def test_extract_mesh_of_a_sphere():
    pytest.importorskip("skimage")
    trimesh = pytest.importorskip("trimesh")
    level, spacing = 0.5, 0.05
    mesh = extract_mesh(SphereField(), 1.0, resolution=40, level=level, spacing=spacing)
    radius = _surface_radius(level, spacing)  # 0.661
    r = mesh.verts.norm(dim=-1)
    assert (r - radius).abs().max() < 0.01
    # Closed, consistently wound, outward normals (face and vertex).
    tm = trimesh.Trimesh(mesh.verts.numpy(), mesh.faces.numpy(), process=False)
    assert tm.is_watertight and tm.is_winding_consistent
    assert len(mesh.verts) - len(tm.edges_unique) + len(mesh.faces) == 2
    v = mesh.verts[mesh.faces]
    face_n = torch.linalg.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0])
    assert ((face_n * v.mean(1)).sum(-1) > 0).all()
    cos = (mesh.vertex_normals * F.normalize(mesh.verts, dim=-1)).sum(-1)
    assert cos.min() > 0.98
    assert tm.volume == pytest.approx(4 / 3 * math.pi * radius**3, rel=0.02)
    # "normal" colours: the ray arrives along -n, so 0.5 - 0.5 (-n) = 0.5 + 0.5 n.
    torch.testing.assert_close(mesh.vertex_colors, 0.5 + 0.5 * mesh.vertex_normals)


def test_extract_mesh_average_colours_and_chunking():
    pytest.importorskip("skimage")
    kw = dict(bbox=1.0, resolution=20, level=0.5, spacing=0.05)
    const = extract_mesh(SphereField((0.2, 0.4, 0.6)), color_mode="average", **kw)
    torch.testing.assert_close(const.vertex_colors, torch.tensor([0.2, 0.4, 0.6]).expand(
        len(const.verts), 3))  # fmt: skip
    avg = extract_mesh(SphereField(), color_mode="average", n_color_directions=32, **kw)
    # The mean arriving direction is -n (cosine weighting): the colour leans towards +n.
    lean = ((avg.vertex_colors - 0.5) * avg.vertex_normals).sum(-1)
    assert (lean > 0.1).all()
    chunked = extract_mesh(SphereField(), color_mode="average", n_color_directions=32,
                           chunk=97, **kw)  # fmt: skip
    assert torch.equal(chunked.verts, avg.verts) and torch.equal(chunked.faces, avg.faces)
    torch.testing.assert_close(chunked.vertex_colors, avg.vertex_colors)
    none = extract_mesh(SphereField(), color_mode=None, **kw)
    assert none.vertex_colors is None


def test_extract_mesh_world_transform():
    pytest.importorskip("skimage")
    kw = dict(bbox=1.0, resolution=16, level=0.5, spacing=0.05)
    base = extract_mesh(SphereField(), **kw)
    for reflect in (False, True):
        A = torch.tensor([[0.0, -2.0, 0.0], [2.0, 0.0, 0.0], [0.0, 0.0, 2.0]])
        if reflect:
            A[:, 0] *= -1
        M = torch.eye(4)
        M[:3, :3] = A
        M[:3, 3] = torch.tensor([1.0, -2.0, 0.5])
        moved = extract_mesh(SphereField(), world_transform=M, **kw)
        torch.testing.assert_close(moved.verts, base.verts @ A.T + M[:3, 3])
        torch.testing.assert_close(moved.vertex_colors, base.vertex_colors)
        v = moved.verts[moved.faces] - M[:3, 3]
        face_n = torch.linalg.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0])
        assert ((face_n * v.mean(1)).sum(-1) > 0).all(), f"reflect={reflect}"
        cos = (moved.vertex_normals * F.normalize(moved.verts - M[:3, 3], dim=-1)).sum(-1)
        assert cos.min() > 0.95
    with pytest.raises(ValueError, match="last row"):
        transform_mesh(base, torch.ones(4, 4))


def test_extract_mesh_reports_a_missing_surface():
    pytest.importorskip("skimage")
    with pytest.raises(ValueError, match=r"no surface at level=0.5.*span \[0, 0\]"):
        extract_mesh(SphereField(), ((2, 2, 2), (3, 3, 3)), resolution=8, spacing=0.05)
    with pytest.raises(ValueError, match="level"):
        extract_mesh(SphereField(), 1.0, resolution=8, level=1.5)
    with pytest.raises(ValueError, match="color_mode"):
        extract_mesh(SphereField(), 1.0, resolution=8, color_mode="mean")


def test_vertex_normals_of_a_tetrahedron_and_fibonacci_directions():
    verts = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]])
    faces = torch.tensor([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
    n = vertex_normals(verts, faces)
    torch.testing.assert_close(n[0], -torch.ones(3) / math.sqrt(3))  # three equal faces
    d = fibonacci_directions(200)
    torch.testing.assert_close(d.norm(dim=-1), torch.ones(200))
    assert d.mean(0).norm() < 0.01


# ----------------------------------------------------------------------------- point clouds
def test_depth_to_pointcloud_matches_the_raysampler_and_reprojects():
    H, W = 6, 9
    R, T = look_at_view_transform(2.5, 20.0, 40.0, at=((0.1, 0.2, -0.1),))
    cam = FoVPerspectiveCameras(R=R, T=T, fov=55.0, znear=0.1, zfar=10.0)
    depth = 1.5 + torch.rand(H, W)
    rgb = torch.rand(H, W, 3)
    pts, cols = depth_to_pointcloud(depth, rgb, cam)
    assert pts.shape == (H * W, 3)
    torch.testing.assert_close(cols, rgb.reshape(-1, 3))
    # The raysampler's rays (directions with view z = 1): origin + depth * direction.
    rays = NDCMultinomialRaysampler(
        image_width=W, image_height=H, n_pts_per_ray=1, min_depth=0.1, max_depth=5.0
    )(cam)
    expected = rays.origins[0] + depth[..., None] * rays.directions[0]
    torch.testing.assert_close(pts, expected.reshape(-1, 3), atol=1e-5, rtol=0)
    view = cam.get_world_to_view_transform().transform_points(pts[None])[0]
    torch.testing.assert_close(view[:, 2], depth.reshape(-1), atol=1e-5, rtol=0)
    torch.testing.assert_close(
        cam.transform_points(pts[None])[0, :, :2], rays.xys[0].reshape(-1, 2), atol=1e-5, rtol=0
    )
    # Masks: default drops depth <= 0 and non-finite values.
    depth[0, 0], depth[1, 2] = 0.0, float("nan")
    pts2, cols2 = depth_to_pointcloud(depth, rgb, cam)
    assert pts2.shape == (H * W - 2, 3) and cols2.shape == (H * W - 2, 3)
    keep = torch.zeros(H, W, dtype=torch.bool)
    keep[2:4] = True
    pts3, none = depth_to_pointcloud(depth, None, cam, mask=keep)
    assert pts3.shape == (2 * W, 3) and none is None
    torch.testing.assert_close(pts3, expected[2:4].reshape(-1, 3), atol=1e-5, rtol=0)


# ----------------------------------------------------------------------------- files
def _mesh() -> Mesh:
    verts = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]])
    faces = torch.tensor([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
    colors = torch.tensor([[1.0, 0, 0], [0, 1, 0], [0, 0, 1], [0.5, 0.25, 1.0]])
    return Mesh(verts, faces, colors, vertex_normals(verts, faces))


def test_write_ply_binary_little_endian_reads_back(tmp_path):
    trimesh = pytest.importorskip("trimesh")
    m = _mesh()
    path = write_ply(tmp_path / "m.ply", m.verts, m.faces, m.vertex_colors, m.vertex_normals)
    raw = path.read_bytes()
    header, body = raw.split(b"end_header\n", 1)
    assert b"format binary_little_endian 1.0" in header
    # 4 vertices of 6 floats + 3 bytes, 4 faces of 1 byte + 3 int32.
    assert len(body) == 4 * (6 * 4 + 3) + 4 * (1 + 12)
    first = np.frombuffer(body[:27], dtype=np.dtype("<f4,<f4,<f4,<f4,<f4,<f4,u1,u1,u1"))
    assert tuple(first[0])[6:] == (255, 0, 0)
    tm = trimesh.load(path, process=False)
    np.testing.assert_allclose(tm.vertices, m.verts.numpy())
    np.testing.assert_array_equal(tm.faces, m.faces.numpy())
    np.testing.assert_array_equal(tm.visual.vertex_colors[:, :3][3], [128, 64, 255])
    cloud = trimesh.load(write_ply(tmp_path / "c.ply", m.verts), process=False)
    np.testing.assert_allclose(cloud.vertices, m.verts.numpy())


def test_write_obj_reads_back(tmp_path):
    trimesh = pytest.importorskip("trimesh")
    m = _mesh()
    tm = trimesh.load(write_obj(tmp_path / "m.obj", m.verts, m.faces, m.vertex_colors),
                      process=False)  # fmt: skip
    np.testing.assert_allclose(tm.vertices, m.verts.numpy(), atol=1e-6)
    np.testing.assert_array_equal(tm.faces, m.faces.numpy())
    np.testing.assert_allclose(tm.visual.vertex_colors[:, :3], (m.vertex_colors * 255).round(),
                               atol=1)  # fmt: skip
    with pytest.raises(ValueError, match="faces index"):
        write_obj(tmp_path / "bad.obj", m.verts, m.faces + 1)


def test_depth_png16_and_npy_round_trip(tmp_path):
    depth = torch.tensor([[0.5, 1.2344, 3.0], [0.0, float("nan"), 70.0]])
    png = write_depth_png16(tmp_path / "d.png", depth)
    back = iio.imread(png)
    assert back.dtype == np.uint16 and back.shape == (2, 3)
    np.testing.assert_array_equal(back, [[500, 1234, 3000], [0, 0, 0]])  # 70 > 65.535: none
    coarse = iio.imread(write_depth_png16(tmp_path / "c.png", depth, scale=100.0))
    assert coarse[1, 2] == 7000
    npy = np.load(write_depth_npy(tmp_path / "d.npy", depth[..., None]))
    np.testing.assert_array_equal(npy, depth.numpy())


def test_export_files_follow_the_umask(tmp_path):
    old = os.umask(0o002)
    try:
        paths = [
            write_ply(tmp_path / "a.ply", _mesh().verts),
            write_obj(tmp_path / "a.obj", _mesh().verts),
            write_depth_png16(tmp_path / "a.png", torch.ones(2, 2)),
        ]
    finally:
        os.umask(old)
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o664 for p in paths)
