import math

import pytest
import torch
import trimesh

from nerf_lab.export_utils import Mesh
from nerf_lab.geometry_metrics import (
    chamfer_distance,
    fscore,
    mesh_metrics,
    nearest_distances,
    sample_surface,
)


def _sphere(radius: float, subdivisions: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    ico = trimesh.creation.icosphere(subdivisions=subdivisions, radius=radius)
    return torch.tensor(ico.vertices, dtype=torch.float32), torch.tensor(ico.faces)


# ----------------------------------------------------------------------------- sampling
def test_sample_surface_is_area_weighted_and_on_the_faces():
    # Two coplanar triangles (z = 0) of areas 0.5 and 1.5.
    verts = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [2, 0, 0], [5, 0, 0], [2, 1, 0]])
    faces = torch.tensor([[0, 1, 2], [3, 4, 5]])
    pts = sample_surface(verts, faces, 20000, seed=3)
    assert pts.shape == (20000, 3)
    assert pts[:, 2].abs().max() == 0
    in_first = pts[:, 0] < 1.5
    assert in_first.float().mean() == pytest.approx(0.25, abs=0.015)
    # Inside each triangle (x, y >= 0 and below the hypotenuse), uniformly: mean = centroid.
    a, b = pts[in_first], pts[~in_first]
    assert (a >= -1e-6).all() and (a[:, 0] + a[:, 1] <= 1 + 1e-6).all()
    assert (b[:, 0] >= 2 - 1e-6).all() and ((b[:, 0] - 2) / 3 + b[:, 1] <= 1 + 1e-6).all()
    torch.testing.assert_close(a.mean(0), torch.tensor([1 / 3, 1 / 3, 0]), atol=0.01, rtol=0)
    torch.testing.assert_close(b.mean(0), torch.tensor([3.0, 1 / 3, 0]), atol=0.02, rtol=0)
    assert torch.equal(sample_surface(verts, faces, 20000, seed=3), pts)
    assert not torch.equal(sample_surface(verts, faces, 20000, seed=4), pts)


def test_sample_surface_rejects_bad_meshes():
    with pytest.raises(ValueError, match="faces"):
        sample_surface(torch.zeros(3, 3), torch.tensor([[0, 1, 3]]), 10)
    with pytest.raises(ValueError, match="zero surface area"):
        sample_surface(torch.zeros(3, 3), torch.tensor([[0, 1, 2]]), 10)
    with pytest.raises(ValueError, match="n must be"):
        sample_surface(torch.eye(3), torch.tensor([[0, 1, 2]]), 0)


# ----------------------------------------------------------------------------- distances
def test_nearest_distances_vectorised_vs_loop_and_chunked():
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(30, 3, generator=gen, dtype=torch.float64)
    b = torch.randn(41, 3, generator=gen, dtype=torch.float64)
    loop = torch.tensor(
        [min(math.dist(p, q) for q in b.tolist()) for p in a.tolist()], dtype=torch.float64
    )
    torch.testing.assert_close(nearest_distances(a, b), loop, atol=1e-12, rtol=0)
    torch.testing.assert_close(nearest_distances(a, b, chunk=7), loop, atol=1e-12, rtol=0)
    back = [min(math.dist(p, q) for q in a.tolist()) for p in b.tolist()]
    expected = 0.5 * (loop.mean() + torch.tensor(back, dtype=torch.float64).mean())
    torch.testing.assert_close(chamfer_distance(a, b), expected, atol=1e-12, rtol=0)


def test_chamfer_of_identical_sets_is_exactly_zero():
    pts = torch.randn(3000, 3) * 10 + 100  # far from the origin: cdist's mm form rounds
    assert float(chamfer_distance(pts, pts.clone())) == 0.0


def test_chamfer_of_concentric_spheres_is_the_gap():
    # The same directions at radii r and r + g: the nearest point is the radial one.
    dirs = torch.nn.functional.normalize(torch.randn(2000, 3, dtype=torch.float64), dim=-1)
    r, g = 1.3, 0.07
    d = chamfer_distance(r * dirs, (r + g) * dirs)
    assert float(d) == pytest.approx(g, abs=1e-9)


def test_chamfer_gradients():
    gen = torch.Generator().manual_seed(1)
    a = torch.randn(6, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    b = torch.randn(5, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, y: chamfer_distance(x, y, chunk=2), (a, b))


def test_fscore_closed_form():
    pred = torch.tensor([[0.0, 0, 0], [1, 0, 0], [2, 0, 0], [10, 0, 0]])
    true = torch.tensor([[0.05, 0, 0], [1.0, 0.2, 0]])
    out = fscore(pred, true, threshold=0.1)
    assert out["precision"] == pytest.approx(0.25)  # only (0, 0, 0) is within 0.1
    assert out["recall"] == pytest.approx(0.5)  # only (0.05, 0, 0)
    assert out["fscore"] == pytest.approx(2 * 0.25 * 0.5 / 0.75)
    assert fscore(pred, true + 100, 0.1) == {"precision": 0.0, "recall": 0.0, "fscore": 0.0}
    with pytest.raises(ValueError, match="threshold"):
        fscore(pred, true, 0.0)


# ----------------------------------------------------------------------------- meshes
def test_mesh_against_itself():
    verts, faces = _sphere(1.0)
    same = mesh_metrics((verts, faces), Mesh(verts, faces), n_points=4000, threshold=1e-6)
    assert same["chamfer"] == 0.0 and same["fscore@1e-06"] == 1.0
    other_seed = sample_surface(verts, faces, 4000, seed=1)
    d = float(chamfer_distance(sample_surface(verts, faces, 4000, seed=0), other_seed))
    assert 0 < d < 0.03  # ~ half the typical spacing of 4000 points on a unit sphere


def test_sphere_vs_larger_sphere():
    r, g = 1.0, 0.05
    small, big = _sphere(r), _sphere(r + g)
    m = mesh_metrics(small, big, n_points=5000, threshold=[0.06, 0.04])
    # Face points are within the chord error (~0.3 % of r) of the sphere.
    assert m["chamfer"] == pytest.approx(g, rel=0.03)
    assert m["accuracy"] == pytest.approx(g, rel=0.03)
    assert m["completeness"] == pytest.approx(g, rel=0.03)
    assert m["fscore@0.06"] == 1.0 and m["precision@0.06"] == 1.0 and m["recall@0.06"] == 1.0
    assert m["fscore@0.04"] == 0.0
