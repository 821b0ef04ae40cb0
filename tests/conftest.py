from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
COW_DIR = REPO_ROOT.parent / "shared" / "data" / "cow_mesh"


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Every test gets its own scene cache, so tests never see each other's files."""
    if "NERF_LAB_TEST_SHARED_CACHE" in os.environ:
        monkeypatch.setenv("NERF_LAB_CACHE_DIR", os.environ["NERF_LAB_TEST_SHARED_CACHE"])
    else:
        monkeypatch.setenv("NERF_LAB_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    yield


@pytest.fixture(scope="session")
def cow_dir() -> Path:
    if not (COW_DIR / "cow.obj").exists():
        pytest.skip(f"cow mesh not found at {COW_DIR}")
    return COW_DIR


CAPTURE_FORMATS = ("colmap", "nerfstudio", "llff")


@pytest.fixture
def capture_dirs(tmp_path) -> dict[str, Path]:
    """The procedural scene exported as a tiny COLMAP, nerfstudio and LLFF capture each."""
    from nerf_lab.data import export_colmap, export_llff, export_nerfstudio, procedural_scene
    from nerf_lab.data.procedural import torus_mesh

    scene = procedural_scene(num_views=8, n_test_views=2, image_size=24)
    points = torus_mesh().verts
    out = {}
    for fmt, export in zip(
        CAPTURE_FORMATS, (export_colmap, export_nerfstudio, export_llff), strict=True
    ):
        out[fmt] = export(scene, tmp_path / fmt, points=points)
    return out
