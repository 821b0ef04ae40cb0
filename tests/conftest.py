from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from nerf_lab.config import CONF_DIR

REPO_ROOT = Path(__file__).resolve().parents[1]
COW_DIR = REPO_ROOT.parent / "shared" / "data" / "cow_mesh"
CONF = Path(CONF_DIR)

# A tiny, fast scene and run: 24 px procedural object, 8 views (2 held out), few points.
TINY = [
    "data=procedural",
    "data.image_size=24",
    "data.num_views=8",
    "data.n_test_views=2",
    "model=small",
    "model.n_hidden_neurons=16",
    "model.n_harmonic_functions=4",
    "raysampler.n_rays_per_image=64",
    "raysampler.n_pts_per_ray=16",
    "trainer.batch_size=2",
    "trainer.device=cpu",
    "trainer.progress_bar=false",
    "trainer.turntable_frames=2",
    "trainer.chunk_size=512",
]


#: TINY without the model settings (for other model options).
TINY_RUN = [o for o in TINY if not o.startswith("model")]


def compose_cfg(overrides: list[str]):
    """The composed config for ``overrides`` (as ``python -m nerf_lab.train`` would)."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def group_options(group: str) -> list[str]:
    """The options (YAML files) of a config group."""
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


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


@pytest.fixture
def mesh_file(tmp_path):
    import trimesh

    path = tmp_path / "box.ply"
    trimesh.creation.box(extents=(1.0, 0.6, 0.8)).export(path)
    return path


@pytest.fixture
def blender_dir(tmp_path):
    from nerf_lab.data import export_blender, procedural_scene

    out = tmp_path / "blender"
    export_blender(procedural_scene(num_views=6, n_test_views=2, image_size=24), out)
    return out


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
