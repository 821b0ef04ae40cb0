"""Datasets (scenes) for nerf_lab: the tutorial's cow, any mesh, a procedural object and
NeRF-synthetic (Blender) folders, all as :class:`Scene` objects with train / test splits.

Builders take plain keyword arguments so Hydra can ``instantiate`` them from YAML.
"""

from nerf_lab.data.blender import blender_scene, export_blender, load_blender
from nerf_lab.data.cow import CowMeshUnavailableError, cow_scene, generate_cow_renders
from nerf_lab.data.mesh_scene import mesh_scene
from nerf_lab.data.procedural import procedural_scene
from nerf_lab.data.scene import Scene, SceneValidationError

__all__ = [
    "CowMeshUnavailableError",
    "Scene",
    "SceneValidationError",
    "blender_scene",
    "cow_scene",
    "export_blender",
    "generate_cow_renders",
    "load_blender",
    "mesh_scene",
    "procedural_scene",
]
