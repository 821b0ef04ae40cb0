"""Datasets (scenes) for nerf_lab: the tutorial's cow, any mesh, a procedural object,
NeRF-synthetic (Blender) folders and real captures (COLMAP, nerfstudio / instant-ngp, LLFF),
all as :class:`Scene` objects with train / test splits.

Builders take plain keyword arguments so Hydra can ``instantiate`` them from YAML.
"""

from nerf_lab.data.blender import blender_scene, export_blender, load_blender
from nerf_lab.data.colmap import colmap_scene, export_colmap, load_colmap
from nerf_lab.data.cow import CowMeshUnavailableError, cow_scene, generate_cow_renders
from nerf_lab.data.llff import export_llff, llff_scene, load_llff
from nerf_lab.data.mesh_scene import mesh_scene
from nerf_lab.data.nerfstudio import export_nerfstudio, load_nerfstudio, nerfstudio_scene
from nerf_lab.data.procedural import procedural_scene
from nerf_lab.data.scene import Scene, SceneValidationError

__all__ = [
    "CowMeshUnavailableError",
    "Scene",
    "SceneValidationError",
    "blender_scene",
    "colmap_scene",
    "cow_scene",
    "export_blender",
    "export_colmap",
    "export_llff",
    "export_nerfstudio",
    "generate_cow_renders",
    "llff_scene",
    "load_blender",
    "load_colmap",
    "load_llff",
    "load_nerfstudio",
    "mesh_scene",
    "nerfstudio_scene",
    "procedural_scene",
]
