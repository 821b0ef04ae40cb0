"""Triangle meshes for the scene renderer: loading (OBJ as PyTorch3D reads it, GLB/PLY/... via
trimesh), normalisation and vertex normals.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from nerf_lab.data.scene import SceneValidationError

DEFAULT_GREY = (0.7, 0.7, 0.7)


@dataclass(frozen=True)
class TexturedMesh:
    """A triangle mesh and its colour source (first one set wins: texture, vertex, face, constant).

    Attributes:
        verts: ``(n_verts, 3)`` float32 positions.
        faces: ``(n_faces, 3)`` int64 vertex indices.
        verts_uvs: ``(n_uvs, 2)`` float32 texture coordinates (v = 0 at the image bottom) or None.
        faces_uvs: ``(n_faces, 3)`` int64 indices into ``verts_uvs`` or None.
        texture: ``(H_tex, W_tex, 3)`` float32 texture image in ``[0, 1]`` (row 0 = top) or None.
        verts_colors: ``(n_verts, 3)`` float32 in ``[0, 1]`` or None.
        faces_colors: ``(n_faces, 3)`` float32 in ``[0, 1]`` or None.
        constant_color: RGB used when nothing else is set.
        source_files: files the mesh was read from (hashed for cache keys).
    """

    verts: torch.Tensor
    faces: torch.Tensor
    verts_uvs: torch.Tensor | None = None
    faces_uvs: torch.Tensor | None = None
    texture: torch.Tensor | None = None
    verts_colors: torch.Tensor | None = None
    faces_colors: torch.Tensor | None = None
    constant_color: tuple[float, float, float] = DEFAULT_GREY
    source_files: tuple[Path, ...] = ()

    def __post_init__(self) -> None:
        if self.verts.dim() != 2 or self.verts.shape[1] != 3:
            raise ValueError(f"verts must have shape (n_verts, 3); got {tuple(self.verts.shape)}.")
        if self.faces.dim() != 2 or self.faces.shape[1] != 3:
            raise ValueError(f"faces must have shape (n_faces, 3); got {tuple(self.faces.shape)}.")
        if self.faces.numel() and (
            int(self.faces.min()) < 0 or int(self.faces.max()) >= self.verts.shape[0]
        ):
            raise ValueError(
                f"faces index vertices outside [0, {self.verts.shape[0]}): "
                f"min {int(self.faces.min())}, max {int(self.faces.max())}."
            )
        has_uv = (self.verts_uvs is not None, self.faces_uvs is not None, self.texture is not None)
        if any(has_uv) and not all(has_uv):
            raise ValueError("verts_uvs, faces_uvs and texture must be given together.")

    @property
    def is_textured(self) -> bool:
        return self.texture is not None


def vertex_normals(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Area-weighted vertex normals, exactly as PyTorch3D's ``Meshes.verts_normals_packed``.

    Args:
        verts: ``(n_verts, 3)``.
        faces: ``(n_faces, 3)``.

    Returns:
        ``(n_verts, 3)`` unit normals (sum of ``cross(v2 - v1, v0 - v1)`` over adjacent faces).
    """
    fv = verts[faces]
    face_normals = torch.cross(fv[:, 2] - fv[:, 1], fv[:, 0] - fv[:, 1], dim=1)
    normals = torch.zeros_like(verts)
    for k in range(3):
        normals = normals.index_add(0, faces[:, k], face_normals)
    return torch.nn.functional.normalize(normals, eps=1e-6, dim=1)


def normalize_mesh(mesh: TexturedMesh) -> TexturedMesh:
    """Centre on the mean vertex and scale so the largest |coordinate| is 1 (the tutorial's way).

    ``center = verts.mean(0)``, ``scale = max |verts - center|``,
    ``verts' = (verts - center) / scale``.
    """
    verts = mesh.verts
    center = verts.mean(0)
    scale = float((verts - center).abs().max(0)[0].max())
    if scale <= 0:
        raise ValueError(f"Cannot normalise a mesh of zero extent (scale {scale}).")
    # PyTorch3D: offset_verts_(-center) then scale_verts_(1 / scale).
    return replace(mesh, verts=(verts - center) * (1.0 / scale))


def file_sha256(path: str | Path) -> str:
    """SHA-256 hex digest of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_texture_image(path: Path) -> torch.Tensor:
    """``(H_tex, W_tex, 3)`` float32 RGB in ``[0, 1]`` (as PyTorch3D: RGB bytes / 255)."""
    with Image.open(path) as im:
        arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(arr.copy()).to(torch.float32) / 255.0


# -- OBJ, read as PyTorch3D's load_obj / load_objs_as_meshes read it ------------------------------


def _obj_index(token: str, count: int) -> int:
    i = int(token)
    return i - 1 if i > 0 else count + i


def _parse_mtl(path: Path) -> dict[str, dict[str, object]]:
    materials: dict[str, dict[str, object]] = {}
    current: dict[str, object] | None = None
    for raw in path.read_text(errors="replace").splitlines():
        tokens = raw.split("#", 1)[0].split()
        if not tokens:
            continue
        key = tokens[0]
        if key == "newmtl" and len(tokens) > 1:
            current = materials.setdefault(" ".join(tokens[1:]), {})
        elif current is not None and key == "map_Kd" and len(tokens) > 1:
            current["map_Kd"] = tokens[-1]
        elif current is not None and key == "Kd" and len(tokens) >= 4:
            current["Kd"] = tuple(float(t) for t in tokens[1:4])
    return materials


def load_obj_mesh(path: str | Path) -> TexturedMesh:
    """Read a Wavefront OBJ the way PyTorch3D's ``load_objs_as_meshes`` does.

    Vertices are the file's ``v`` list as written (no splitting at UV seams, so the mean
    vertex and the vertex normals match PyTorch3D); ``faces_uvs`` come from the ``vt``
    indices of each face corner; polygons are fan-triangulated ``(0, i, i + 1)``; the
    texture is the ``map_Kd`` image of the material used by the faces. Without a texture,
    the materials' ``Kd`` colours (or ``v x y z r g b`` vertex colours) are used.

    Args:
        path: the ``.obj`` file.

    Returns:
        The mesh, with ``source_files`` listing the OBJ, MTL and texture files read.
    """
    path = Path(path)
    problems: list[str] = []
    try:
        text = path.read_text(errors="replace")
    except OSError as e:
        raise SceneValidationError([f"cannot read OBJ file {path}: {e}"], "mesh") from e

    verts: list[list[float]] = []
    colors: list[list[float]] = []
    uvs: list[list[float]] = []
    faces: list[tuple[int, int, int]] = []
    faces_t: list[tuple[int, int, int]] = []
    face_mtl: list[str | None] = []
    mtllibs: list[str] = []
    current_mtl: str | None = None
    n_uv_corners = 0
    n_corners = 0
    for lineno, raw in enumerate(text.splitlines(), 1):
        tokens = raw.split("#", 1)[0].split()
        if not tokens:
            continue
        key = tokens[0]
        try:
            if key == "v":
                verts.append([float(t) for t in tokens[1:4]])
                if len(tokens) >= 7:
                    colors.append([float(t) for t in tokens[4:7]])
            elif key == "vt":
                uvs.append([float(t) for t in tokens[1:3]])
            elif key == "f":
                corners = [c.split("/") for c in tokens[1:]]
                if len(corners) < 3:
                    problems.append(f"{path}:{lineno}: face with fewer than 3 vertices")
                    continue
                vi = [_obj_index(c[0], len(verts)) for c in corners]
                ti = [_obj_index(c[1], len(uvs)) if len(c) > 1 and c[1] else -1 for c in corners]
                n_corners += len(corners)
                n_uv_corners += sum(t >= 0 for t in ti)
                for i in range(1, len(corners) - 1):
                    faces.append((vi[0], vi[i], vi[i + 1]))
                    faces_t.append((ti[0], ti[i], ti[i + 1]))
                    face_mtl.append(current_mtl)
            elif key == "usemtl":
                current_mtl = " ".join(tokens[1:])
            elif key == "mtllib":
                mtllibs.extend(tokens[1:])
        except (ValueError, IndexError) as e:
            problems.append(f"{path}:{lineno}: cannot parse {raw.strip()!r} ({e})")
    if len(verts) == 0:
        problems.append(f"{path}: no vertices ('v' lines)")
    if len(faces) == 0:
        problems.append(f"{path}: no faces ('f' lines)")
    v = torch.tensor(verts, dtype=torch.float32).reshape(-1, 3)
    f = torch.tensor(faces, dtype=torch.int64).reshape(-1, 3)
    if f.numel() and (int(f.min()) < 0 or int(f.max()) >= v.shape[0]):
        problems.append(f"{path}: face vertex indices out of range [1, {v.shape[0]}]")
    if problems:
        raise SceneValidationError(problems, "mesh")

    sources = [path]
    materials: dict[str, dict[str, object]] = {}
    for lib in mtllibs:
        mtl_path = path.parent / lib
        if mtl_path.is_file():
            sources.append(mtl_path)
            materials.update(_parse_mtl(mtl_path))

    used = [m for m in dict.fromkeys(face_mtl) if m is not None and m in materials]
    textured = [m for m in used if "map_Kd" in materials[m]]
    if not textured and len(materials) == 1:
        # PyTorch3D uses the only material even without a usemtl line.
        only = next(iter(materials))
        if "map_Kd" in materials[only]:
            textured = [only]

    kwargs: dict[str, object] = {}
    if textured and n_uv_corners == n_corners and uvs:
        if len(textured) > 1:
            raise SceneValidationError(
                [f"{path}: uses {len(textured)} texture maps ({textured}); only one is supported"],
                "mesh",
            )
        tex_path = path.parent / str(materials[textured[0]]["map_Kd"])
        if not tex_path.is_file():
            raise SceneValidationError([f"{path}: texture image {tex_path} not found"], "mesh")
        try:
            texture = read_texture_image(tex_path)
        except OSError as e:
            raise SceneValidationError(
                [f"cannot read texture image {tex_path}: {e}"], "mesh"
            ) from e
        sources.append(tex_path)
        ft = torch.tensor(faces_t, dtype=torch.int64)
        vt = torch.tensor(uvs, dtype=torch.float32).reshape(-1, 2)
        if int(ft.min()) < 0 or int(ft.max()) >= vt.shape[0]:
            raise SceneValidationError([f"{path}: texture coordinate indices out of range"], "mesh")
        kwargs.update(verts_uvs=vt, faces_uvs=ft, texture=texture)
    elif colors and len(colors) == len(verts):
        kwargs["verts_colors"] = torch.tensor(colors, dtype=torch.float32).clamp(0, 1)
    elif any("Kd" in materials.get(m, {}) for m in used):
        kd = [materials.get(m, {}).get("Kd", DEFAULT_GREY) if m else DEFAULT_GREY for m in face_mtl]
        kwargs["faces_colors"] = torch.tensor(kd, dtype=torch.float32).clamp(0, 1)
    return TexturedMesh(verts=v, faces=f, source_files=tuple(sources), **kwargs)  # type: ignore[arg-type]


# -- everything else through trimesh -------------------------------------------------------------


def _trimesh_texture(visual: object) -> torch.Tensor | None:
    material = getattr(visual, "material", None)
    if material is None:
        return None
    image = getattr(material, "image", None)
    if image is None:
        image = getattr(material, "baseColorTexture", None)
    if image is None:
        return None
    arr = np.asarray(image.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(arr.copy()).to(torch.float32) / 255.0


def load_trimesh_mesh(path: str | Path) -> TexturedMesh:
    """Read any mesh format trimesh reads (GLB/GLTF, PLY, STL, OFF, OBJ, ...).

    Colours: a UV texture if present, else per-vertex or per-face colours, else the
    material's main colour, else a constant grey.

    Args:
        path: the mesh file.

    Returns:
        The mesh (scenes are flattened into one mesh in world coordinates).
    """
    import trimesh

    path = Path(path)
    try:
        loaded = trimesh.load(str(path), process=False)
    except Exception as e:  # trimesh raises many kinds of errors for bad files
        raise SceneValidationError([f"cannot read mesh file {path}: {e}"], "mesh") from e
    if isinstance(loaded, trimesh.Scene):
        geoms = [g for g in loaded.dump() if isinstance(g, trimesh.Trimesh)]
        if not geoms:
            raise SceneValidationError([f"{path}: contains no triangle mesh"], "mesh")
        mesh = geoms[0] if len(geoms) == 1 else trimesh.util.concatenate(geoms)
    elif isinstance(loaded, trimesh.Trimesh):
        mesh = loaded
    else:
        raise SceneValidationError(
            [f"{path}: is a {type(loaded).__name__}, not a triangle mesh"], "mesh"
        )
    if len(mesh.faces) == 0:
        raise SceneValidationError([f"{path}: mesh has no faces"], "mesh")
    verts = torch.as_tensor(np.asarray(mesh.vertices), dtype=torch.float32)
    faces = torch.as_tensor(np.asarray(mesh.faces), dtype=torch.int64)
    kwargs: dict[str, object] = {}
    visual = mesh.visual
    kind = getattr(visual, "kind", None)
    if kind == "texture":
        uv = getattr(visual, "uv", None)
        texture = _trimesh_texture(visual)
        if uv is not None and texture is not None and len(uv) == len(verts):
            kwargs.update(
                verts_uvs=torch.as_tensor(np.asarray(uv), dtype=torch.float32),
                faces_uvs=faces.clone(),
                texture=texture,
            )
        else:
            color = getattr(getattr(visual, "material", None), "main_color", None)
            if color is not None:
                kwargs["constant_color"] = tuple(float(c) / 255.0 for c in np.asarray(color)[:3])
    elif kind == "vertex":
        vc = np.asarray(visual.vertex_colors)[:, :3].astype(np.float32) / 255.0
        kwargs["verts_colors"] = torch.from_numpy(vc)
    elif kind == "face":
        fc = np.asarray(visual.face_colors)[:, :3].astype(np.float32) / 255.0
        kwargs["faces_colors"] = torch.from_numpy(fc)
    return TexturedMesh(verts=verts, faces=faces, source_files=(path,), **kwargs)  # type: ignore[arg-type]


def mesh_source_files(path: str | Path) -> tuple[Path, ...]:
    """The files a mesh is read from (an OBJ's MTL libraries and their ``map_Kd`` images too),
    found without loading the mesh; used for cache keys.

    Raises:
        SceneValidationError: the file does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise SceneValidationError([f"mesh file {path} does not exist"], "mesh")
    files = [path]
    if path.suffix.lower() == ".obj":
        with open(path, errors="replace") as f:
            libs = [ln.split()[1:] for ln in f if ln.startswith("mtllib")]
        for lib in (name for group in libs for name in group):
            mtl = path.parent / lib
            if mtl.is_file():
                files.append(mtl)
                for mat in _parse_mtl(mtl).values():
                    tex = path.parent / str(mat.get("map_Kd", ""))
                    if "map_Kd" in mat and tex.is_file():
                        files.append(tex)
    return tuple(dict.fromkeys(files))


def load_mesh(path: str | Path) -> TexturedMesh:
    """Load a mesh file: OBJ with :func:`load_obj_mesh`, other formats with trimesh.

    Raises:
        SceneValidationError: the file is missing or unreadable.
    """
    path = Path(path)
    if not path.is_file():
        raise SceneValidationError([f"mesh file {path} does not exist"], "mesh")
    if path.suffix.lower() == ".obj":
        return load_obj_mesh(path)
    return load_trimesh_mesh(path)
