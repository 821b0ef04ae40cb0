"""On-disk cache of generated scenes, keyed by a hash of their parameters and source files."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from nerf_lab.cameras import cameras_from_state, cameras_to_state
from nerf_lab.checkpoint import atomic_write_bytes
from nerf_lab.data.mesh import file_sha256
from nerf_lab.data.scene import Scene
from nerf_lab.ndc import NDCSpace

# Bump when the renderer or a builder changes what it produces: old cache entries are ignored.
CACHE_VERSION = 1
# Version of the file layout written by save_scene; files of another format are rebuilt.
# 2: optional silhouettes (None), the scene's near / far, any camera type.
# 3: world_transform; an optional "ndc" (NDC space state) read when present.
_FILE_FORMAT = 3


def cache_dir() -> Path:
    """``$NERF_LAB_CACHE_DIR``, else ``$XDG_CACHE_HOME/nerf_lab``, else ``~/.cache/nerf_lab``."""
    env = os.environ.get("NERF_LAB_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg).expanduser() / "nerf_lab"
    return Path.home() / ".cache" / "nerf_lab"


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in sorted(value.items())}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value.resolve())
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return repr(float(value))  # 180 and 180.0 give the same key
    if value is None or isinstance(value, (bool, str)):
        return value
    raise TypeError(f"Cannot hash parameter value {value!r} of type {type(value).__name__}.")


def scene_cache_key(kind: str, params: Mapping[str, Any], files: Iterable[Path] = ()) -> str:
    """Hex key of a generated scene: its builder, parameters, the cache version and file hashes."""
    payload = {
        "version": CACHE_VERSION,
        "kind": kind,
        "params": _jsonable(params),
        "files": sorted(file_sha256(p) for p in files),
    }
    blob = json.dumps(payload, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:32]


def save_scene(scene: Scene, path: str | Path) -> None:
    """Save a scene (CPU tensors) to ``path`` atomically."""
    payload = {
        "format": _FILE_FORMAT,
        "name": scene.name,
        "images": scene.images.cpu().contiguous(),
        "silhouettes": None if scene.silhouettes is None else scene.silhouettes.cpu().contiguous(),
        "splits": {k: v.cpu() for k, v in scene.splits.items()},
        "background_color": list(scene.background_color),
        "near": scene.near,
        "far": scene.far,
        "world_transform": scene.world_transform,
        "ndc": None if scene.ndc is None else scene.ndc.to_state(),
        "cameras": cameras_to_state(scene.cameras),
    }
    atomic_write_bytes(Path(path), lambda f: torch.save(payload, f))


def load_scene(path: str | Path) -> Scene:
    """Load a scene written by :func:`save_scene`."""
    payload = torch.load(Path(path), map_location="cpu", weights_only=True)
    if payload.get("format") != _FILE_FORMAT:
        raise ValueError(f"{path}: unknown scene file format {payload.get('format')!r}.")
    return Scene(
        name=payload["name"],
        cameras=cameras_from_state(payload["cameras"]),
        images=payload["images"],
        silhouettes=payload["silhouettes"],
        splits=dict(payload["splits"]),
        background_color=tuple(payload["background_color"]),
        near=payload["near"],
        far=payload["far"],
        world_transform=payload["world_transform"],
        ndc=None if payload.get("ndc") is None else NDCSpace.from_state(payload["ndc"]),
    )


def cached_scene(
    kind: str,
    params: Mapping[str, Any],
    files: Iterable[Path],
    build: Callable[[], Scene],
    cache: bool = True,
) -> Scene:
    """Return the cached scene for ``(kind, params, files)``, building and caching it if needed.

    Args:
        kind: builder name (part of the key and of the file name).
        params: every parameter that changes the result (plain values).
        files: source files whose content is part of the key.
        build: zero-argument function making the scene.
        cache: if False, always build and never touch the cache.

    Returns:
        The scene.
    """
    if not cache:
        return build()
    key = scene_cache_key(kind, params, files)
    path = cache_dir() / "scenes" / f"{kind}-{key}.pt"
    if path.is_file():
        try:
            return load_scene(path)
        except Exception:  # a corrupt or foreign file: rebuild and overwrite it
            pass
    scene = build()
    save_scene(scene, path)
    return scene
