"""NeRF-synthetic ("Blender") format: ``transforms_{split}.json`` + RGBA PNGs, both ways.

Format: ``camera_angle_x`` (horizontal field of view, radians) and ``frames``, each with a
``file_path`` relative to the JSON's folder (with or without ``.png``) and a 4x4 camera-to-world
``transform_matrix`` in OpenGL camera axes (+X right, +Y up, looking along -Z).

Conversion to PyTorch3D's convention (view +X left, +Y up, looking along +Z, row vectors
``X_view = X_world @ R + T``): with ``M = [[R_gl, C], [0, 1]]`` and ``D = diag(-1, 1, -1)``,
``X_view = D R_gl^T (X_world - C)``, hence ``R = R_gl D`` and ``T = -R^T C``. PyTorch3D's ``fov``
is that of the *shorter* image side: for ``W > H``,
``tan(fov / 2) = tan(camera_angle_x / 2) H / W``.

Optional extra keys (written by :func:`export_blender`, read when present): ``near`` and ``far``
(file or frame level) and a frame-level ``camera_angle_x``.

Depth range of the scene (:attr:`Scene.near` / :attr:`Scene.far`): NeRF-synthetic files do not
say where the content is, so the loader assumes it lies in an axis-aligned ``scene_box``, by
default ``[-1.5, 1.5]^3``: the box instant-ngp and nerfacc use for these scenes (every object
of the eight NeRF-synthetic scenes fits in it, and every camera looks at it), and which holds
``[-1, 1]^3``, where nerf_lab's own scenes (normalised meshes) live. ``near`` / ``far`` are
then the smallest / largest view-space z-depth of the box's 8 corners over every camera
(depth is affine in the point, so no point of the box is nearer or farther), with ``near``
clamped above 0. For the original scenes (cameras at distance ~4.03) this gives about
1.4 / 6.6, a superset of the 2 / 6 of the NeRF paper. An explicit ``near`` / ``far``
argument overrides both the box and the file.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from nerf_lab.cameras import FoVPerspectiveCameras, screen_intrinsics
from nerf_lab.data.bounds import box_depth_range
from nerf_lab.data.scene import Scene, SceneValidationError, raise_if_problems
from nerf_lab.data.views import parse_background
from nerf_lab.validate import check_int, invalid, is_number

DEFAULT_NEAR = 2.0
DEFAULT_FAR = 6.0
# (x_min, y_min, z_min, x_max, y_max, z_max) of the region NeRF-synthetic cameras look at.
DEFAULT_SCENE_BOX = (-1.5, -1.5, -1.5, 1.5, 1.5, 1.5)
_GL_TO_P3D = np.diag([-1.0, 1.0, -1.0])
_RIGID_ATOL = 1e-4


def c2w_to_p3d(c2w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """OpenGL camera-to-world ``(4, 4)`` -> PyTorch3D ``R (3, 3)``, ``T (3,)`` (float64)."""
    r_gl, center = c2w[:3, :3], c2w[:3, 3]
    R = r_gl @ _GL_TO_P3D
    T = -R.T @ center
    return R, T


def p3d_to_c2w(R: np.ndarray, T: np.ndarray) -> np.ndarray:
    """PyTorch3D ``R (3, 3)``, ``T (3,)`` -> OpenGL camera-to-world ``(4, 4)`` (float64)."""
    c2w = np.eye(4)
    c2w[:3, :3] = R @ _GL_TO_P3D
    c2w[:3, 3] = -R @ T
    return c2w


def fov_from_camera_angle_x(camera_angle_x: float, height: int, width: int) -> float:
    """PyTorch3D fov (degrees, shorter side) from the horizontal field of view (radians)."""
    if width <= height:
        return math.degrees(camera_angle_x)
    return math.degrees(2.0 * math.atan(math.tan(camera_angle_x / 2.0) * height / width))


def camera_angle_x_from_fov(fov_degrees: float, height: int, width: int) -> float:
    """Horizontal field of view (radians) from PyTorch3D's fov (degrees, shorter side)."""
    fov = math.radians(fov_degrees)
    if width <= height:
        return fov
    return 2.0 * math.atan(math.tan(fov / 2.0) * width / height)


def _check_matrix(value: Any, where: str, problems: list[str]) -> np.ndarray | None:
    try:
        m = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        problems.append(f"{where}: transform_matrix is not a numeric 4x4 matrix")
        return None
    if m.shape != (4, 4):
        problems.append(f"{where}: transform_matrix has shape {m.shape}, expected (4, 4)")
        return None
    if not np.isfinite(m).all():
        problems.append(f"{where}: transform_matrix has non-finite values")
        return None
    bad = []
    if not np.allclose(m[3], [0.0, 0.0, 0.0, 1.0], atol=_RIGID_ATOL):
        bad.append(f"last row {m[3].tolist()} != [0, 0, 0, 1]")
    r = m[:3, :3]
    ortho = np.abs(r.T @ r - np.eye(3)).max()
    if ortho > _RIGID_ATOL:
        bad.append(f"max |R^T R - I| = {ortho:.3g}")
    det = float(np.linalg.det(r))
    if abs(det - 1.0) > _RIGID_ATOL:
        bad.append(f"det(R) = {det:.6g} != 1")
    if bad:
        problems.append(f"{where}: transform_matrix is not a rigid transform ({'; '.join(bad)})")
        return None
    return m


OUTSIDE_HINT = "set data.allow_outside_paths=true to allow files outside the dataset folder"


def resolve_inside(
    root: Path, relative: str, allow_outside_paths: bool = False
) -> tuple[Path | None, str | None]:
    """Resolve a dataset-relative file name to an absolute path inside ``root``.

    Args:
        root: the dataset folder (absolute).
        relative: a ``file_path`` from a transforms file (with or without ``.png``).
        allow_outside_paths: accept absolute names, ``..`` and symlinks leading out of
            ``root``.

    Returns:
        ``(path, None)`` with the resolved (absolute, symlink-free) path of an existing
        file; ``(None, problem)`` when the name is refused or nothing exists. Nothing outside
        ``root`` is opened unless allowed (existence is checked with ``stat`` only).
    """
    if Path(relative).is_absolute() and not allow_outside_paths:
        return None, f"file_path {relative!r} is absolute; {OUTSIDE_HINT}"
    names = [relative]
    if not relative.lower().endswith(".png"):
        names.append(relative + ".png")
    root_real = root.resolve()
    for name in names:
        candidate = root / name
        if not candidate.is_file():
            continue
        real = candidate.resolve()
        if not allow_outside_paths and not real.is_relative_to(root_real):
            return None, (
                f"file_path {relative!r} leads to {real}, outside the dataset folder "
                f"{root_real} ('..' or a symbolic link); {OUTSIDE_HINT}"
            )
        return real, None
    return None, f"image {root / relative}(.png) does not exist"


def _read_rgba(path: Path, where: str, problems: list[str]) -> tuple[np.ndarray, bool] | None:
    """An RGB(A) image as ``(H, W, 4)`` uint8 (alpha 255 for RGB images) and whether the
    file has an alpha channel, or ``None`` with the reason in ``problems``.

    Images over Pillow's decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``, checked
    from the header before decoding) are refused as data problems.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                im.load()
                if im.mode not in ("RGB", "RGBA"):
                    problems.append(
                        f"{where}: image {path} has mode {im.mode!r}, expected RGB or RGBA"
                    )
                    return None
                arr = np.asarray(im.convert("RGBA"), dtype=np.uint8)
                has_alpha = im.mode == "RGBA"
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        problems.append(
            f"{where}: image {path} refused as a possible decompression bomb ({e}); "
            f"Pillow's limit is PIL.Image.MAX_IMAGE_PIXELS = {Image.MAX_IMAGE_PIXELS}"
        )
        return None
    except (OSError, ValueError, MemoryError) as e:
        problems.append(f"{where}: cannot read image {path} ({e})")
        return None
    return arr, has_alpha


def composite_and_downscale(
    rgba: np.ndarray, background: Sequence[float], downscale: int
) -> tuple[np.ndarray, np.ndarray]:
    """Composite one RGBA frame over ``background`` and area-average it by ``downscale``.

    Args:
        rgba: ``(H, W, 4)`` uint8.
        background: RGB in [0, 1].
        downscale: integer factor dividing ``H`` and ``W``.

    Returns:
        rgb ``(H / downscale, W / downscale, 3)`` and alpha ``(H / downscale, W / downscale, 1)``,
        float32 (RGB composited at full resolution, then averaged; alpha averaged).
    """
    h, w = rgba.shape[:2]
    if h % downscale or w % downscale:
        raise ValueError(f"image size {w}x{h} is not divisible by downscale={downscale}")
    x = rgba.astype(np.float32) / np.float32(255.0)
    alpha = x[..., 3:]
    bg = np.asarray(background, dtype=np.float32)
    rgb = x[..., :3] * alpha + bg * (np.float32(1.0) - alpha)
    del x
    if downscale > 1:
        d = downscale

        def pool(a: np.ndarray) -> np.ndarray:
            c = a.shape[-1]
            return a.reshape(h // d, d, w // d, d, c).mean(axis=(1, 3), dtype=np.float64)

        rgb = pool(rgb).astype(np.float32)
        alpha = pool(alpha).astype(np.float32)
    else:
        alpha = alpha.copy()  # not a view of the full frame
    return rgb, alpha


def _load_frame(
    path: Path, where: str, problems: list[str], background: Sequence[float], downscale: int
) -> dict[str, Any] | None:
    """Read one image and reduce it at once: the full-resolution frame is freed on return.

    Returns:
        ``{"size": (H, W), "rgb": (h, w, 3), "alpha": (h, w, 1), "has_alpha": bool}``
        (float32 at the reduced size; ``rgb``/``alpha`` are ``None`` when ``downscale`` does
        not divide the size, reported once for the whole scene later), or ``None`` when
        unreadable.
    """
    read = _read_rgba(path, where, problems)
    if read is None:
        return None
    rgba, has_alpha = read
    size = rgba.shape[:2]
    if size[0] % downscale or size[1] % downscale:
        return {"size": size, "rgb": None, "alpha": None, "has_alpha": has_alpha}
    rgb, alpha = composite_and_downscale(rgba, background, downscale)
    return {"size": size, "rgb": rgb, "alpha": alpha, "has_alpha": has_alpha}


def _stack_frames(records: list[dict[str, Any]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Move the frames into ``(n_views, h, w, 3)`` and ``(n_views, h, w, 1)`` tensors one at
    a time, freeing each, so the set is never held twice."""
    h, w = records[0]["rgb"].shape[:2]
    rgb = torch.empty(len(records), h, w, 3)
    alpha = torch.empty(len(records), h, w, 1)
    for i, r in enumerate(records):
        rgb[i] = torch.from_numpy(r.pop("rgb"))
        alpha[i] = torch.from_numpy(r.pop("alpha"))
    return rgb, alpha


def load_blender(
    path: str | Path,
    background: str | Sequence[float] = "black",
    downscale: int = 1,
    splits: Sequence[str] = ("train", "val", "test"),
    near: float | None = None,
    far: float | None = None,
    name: str | None = None,
    scene_box: Sequence[float] = DEFAULT_SCENE_BOX,
    allow_outside_paths: bool = False,
) -> Scene:
    """Load a NeRF-synthetic folder as a :class:`Scene`.

    Args:
        path: folder holding ``transforms_{split}.json``.
        background: colour the RGBA images are composited over: ``"black"``, ``"white"`` or RGB.
        downscale: integer factor; images are area-averaged (RGB after compositing, and alpha).
        splits: splits to read; ``"train"`` and ``"test"`` must exist, others (``"val"``, ...)
            are read when their file exists.
        near, far: camera ``znear`` / ``zfar`` and the scene's ``near`` / ``far``; ``None``:
            the cameras take the file's ``near`` / ``far`` keys if present, else 2 and 6 (the
            NeRF-synthetic bounds), and the scene's depth range comes from ``scene_box``.
        name: scene name (default: the folder name).
        scene_box: ``(x_min, y_min, z_min, x_max, y_max, z_max)`` world box holding the
            content (see the module docstring); sets the scene's ``near`` / ``far``.
        allow_outside_paths: accept image paths that are absolute or lead out of ``path``
            (``..``, symbolic links); by default they are listed as problems.

    Each image is composited and downscaled right after it is read, so loading holds one
    full-resolution frame at a time plus the reduced set.

    Returns:
        The scene; views are ordered split by split, in ``splits`` order.

    Raises:
        SceneValidationError: listing every problem found (missing / unreadable files, bad JSON,
            non-rigid poses, bad ``camera_angle_x``, non-RGB(A) or mixed-size images, image
            paths leading out of the folder, decompression bombs, ...).
    """
    root = Path(path).expanduser().absolute()
    bg = parse_background(background)
    check_int("downscale", downscale)
    for label, value in (("near", near), ("far", far)):
        if value is not None and not (is_number(value) and value > 0):
            raise invalid(label, value, "a finite number > 0 or None")
    if near is not None and far is not None and not near < far:
        raise ValueError(f"near must be < far; got near={near!r}, far={far!r}.")
    box = _check_scene_box(scene_box)
    problems: list[str] = []
    if not root.is_dir():
        raise SceneValidationError([f"{root} is not a folder"], f"Blender scene {root}")

    records: list[dict[str, Any]] = []  # one per frame that passed the checks
    split_of: list[str] = []
    for split in splits:
        jpath = root / f"transforms_{split}.json"
        if not jpath.is_file():
            if split in ("train", "test"):
                problems.append(f"{jpath} is missing (the {split!r} split is required)")
            continue
        _, outside = resolve_inside(root, jpath.name, allow_outside_paths)
        if outside is not None:
            problems.append(f"{jpath}: {outside}")
            continue
        try:
            meta = json.loads(jpath.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            problems.append(f"{jpath}: cannot parse JSON ({e})")
            continue
        if not isinstance(meta, dict):
            problems.append(f"{jpath}: top level is a {type(meta).__name__}, expected an object")
            continue
        file_angle = meta.get("camera_angle_x")
        frames = meta.get("frames")
        if not isinstance(frames, list) or not frames:
            problems.append(f"{jpath}: 'frames' is missing, not a list or empty")
            continue
        for i, frame in enumerate(frames):
            where = f"{jpath.name} frame {i}"
            if not isinstance(frame, dict):
                problems.append(f"{where}: not an object")
                continue
            angle = frame.get("camera_angle_x", file_angle)
            if angle is None:
                problems.append(f"{where}: no camera_angle_x (file or frame level)")
            elif not (is_number(angle) and 0.0 < angle < math.pi):
                problems.append(f"{where}: camera_angle_x = {angle!r} is not in (0, pi)")
                angle = None
            m = _check_matrix(frame.get("transform_matrix"), where, problems)
            fp = frame.get("file_path")
            image = None
            has_alpha = False
            img_path = None
            if not isinstance(fp, str) or not fp:
                problems.append(f"{where}: 'file_path' is missing or not a string")
            else:
                img_path, refused = resolve_inside(root, fp, allow_outside_paths)
                if refused is not None:
                    problems.append(f"{where}: {refused}")
                else:
                    image = _load_frame(img_path, where, problems, bg, downscale)
                    has_alpha = image is not None and image["has_alpha"]
            z_near = near if near is not None else frame.get("near", meta.get("near", DEFAULT_NEAR))
            z_far = far if far is not None else frame.get("far", meta.get("far", DEFAULT_FAR))
            if not (is_number(z_near) and is_number(z_far) and 0 < z_near < z_far):
                problems.append(f"{where}: near/far = {z_near!r}/{z_far!r} invalid")
                continue
            if angle is None or m is None or image is None:
                continue
            records.append(
                {
                    "angle": float(angle),
                    "c2w": m,
                    "image": image,
                    "has_alpha": has_alpha,
                    "path": img_path,
                    "near": float(z_near),
                    "far": float(z_far),
                }
            )
            split_of.append(split)

    if records:
        sizes: dict[tuple[int, int], list[str]] = {}
        for r in records:
            sizes.setdefault(r["image"]["size"], []).append(str(r["path"]))
        if len(sizes) > 1:
            common = max(sizes, key=lambda s: len(sizes[s]))
            for size, files in sizes.items():
                if size != common:
                    problems.extend(
                        f"{f}: size {size[1]}x{size[0]} differs from {common[1]}x{common[0]} "
                        "(images of mixed sizes)"
                        for f in files
                    )
        h, w = next(iter(records))["image"]["size"]
        if (h % downscale or w % downscale) and len(sizes) == 1:
            problems.append(f"image size {w}x{h} is not divisible by downscale={downscale}")
    raise_if_problems(problems, f"Blender scene {root}")

    rgb, alpha = _stack_frames([r["image"] for r in records])
    H, W = rgb.shape[1:3]
    Rs, Ts = zip(*(c2w_to_p3d(r["c2w"]) for r in records), strict=True)
    cameras = FoVPerspectiveCameras(
        znear=torch.tensor([r["near"] for r in records]),
        zfar=torch.tensor([r["far"] for r in records]),
        fov=torch.tensor([fov_from_camera_angle_x(r["angle"], H, W) for r in records]),
        R=torch.tensor(np.stack(Rs), dtype=torch.float32),
        T=torch.tensor(np.stack(Ts), dtype=torch.float32),
    )
    split_idx = {
        s: torch.tensor([i for i, t in enumerate(split_of) if t == s], dtype=torch.long)
        for s in dict.fromkeys(split_of)
    }
    scene_near, scene_far = box_depth_range(
        torch.tensor(np.stack(Rs)), torch.tensor(np.stack(Ts)), box[:3], box[3:]
    )
    if near is not None:
        scene_near = float(near)
    if far is not None:
        scene_far = float(far)
    if not scene_near < scene_far:
        raise ValueError(
            f"The scene's depth range is empty: near={scene_near} >= far={scene_far} "
            f"(scene_box {list(box)}, near={near!r}, far={far!r})."
        )
    return Scene(
        name=name if name is not None else root.name,
        cameras=cameras,
        images=rgb.contiguous(),
        # RGB-only folders (no alpha anywhere) have no masks; RGB images among RGBA ones count
        # as fully opaque.
        silhouettes=(alpha[..., 0] > 0.5).to(torch.float32)
        if any(r["has_alpha"] for r in records)
        else None,
        splits=split_idx,
        background_color=bg,
        near=scene_near,
        far=scene_far,
    )


def _check_scene_box(scene_box: Sequence[float]) -> tuple[float, ...]:
    try:
        box = tuple(float(v) for v in scene_box)
    except (TypeError, ValueError):
        box = ()
    if len(box) != 6 or not all(math.isfinite(v) for v in box):
        raise ValueError(
            "scene_box must be 6 finite numbers (x_min, y_min, z_min, x_max, y_max, z_max); "
            f"got {scene_box!r}."
        )
    if not all(box[i] < box[i + 3] for i in range(3)):
        raise ValueError(f"scene_box must have min < max on every axis; got {list(box)}.")
    return box


def blender_scene(
    path: str | Path,
    background: str | Sequence[float] = "black",
    downscale: int = 1,
    splits: Sequence[str] = ("train", "val", "test"),
    near: float | None = None,
    far: float | None = None,
    scene_box: Sequence[float] = DEFAULT_SCENE_BOX,
    allow_outside_paths: bool = False,
) -> Scene:
    """Hydra builder for a NeRF-synthetic folder; see :func:`load_blender`."""
    return load_blender(
        path,
        background=background,
        downscale=downscale,
        splits=tuple(splits),
        near=near,
        far=far,
        scene_box=tuple(scene_box),
        allow_outside_paths=allow_outside_paths,
    )


def export_blender(scene: Scene, out_dir: str | Path, splits: Sequence[str] | None = None) -> Path:
    """Write a scene in NeRF-synthetic format (one JSON and one image folder per split).

    Images are written as 8-bit RGBA PNGs ``<split>/r_<i>.png``: RGB from ``scene.images`` and
    alpha 255 inside the silhouette, 0 outside (loading over ``scene.background_color`` gives
    the images back up to 8-bit quantisation where the image outside the silhouette is the
    background, as in every rendered scene). ``FoVPerspectiveCameras`` must have
    ``aspect_ratio == 1``; ``PerspectiveCameras`` need ``fx == fy`` and the principal point at
    the image centre (the format stores only ``camera_angle_x``); their ``near`` / ``far``
    keys are the scene's depth range (or 2 / 6 when unknown).

    Args:
        scene: the scene.
        out_dir: output folder (created).
        splits: splits to write (default: all of the scene's).

    Returns:
        ``out_dir``.
    """
    out = Path(out_dir).expanduser()
    cams = scene.cameras.clone().to("cpu")
    H, W = scene.image_size
    n = len(cams)
    if isinstance(cams, FoVPerspectiveCameras):
        if not torch.allclose(cams.aspect_ratio, torch.ones_like(cams.aspect_ratio)):
            raise ValueError(
                "export_blender needs cameras with aspect_ratio 1; got "
                f"{cams.aspect_ratio.tolist()}."
            )
        fov_deg = cams.fov if cams.degrees else torch.rad2deg(cams.fov)
        znear, zfar = cams.znear, cams.zfar
    else:
        focal, pp = screen_intrinsics(cams, (H, W))
        if not torch.allclose(focal[:, 0], focal[:, 1], rtol=1e-5):
            raise ValueError(f"export_blender needs fx == fy; got {focal.tolist()}.")
        if not torch.allclose(pp, torch.tensor([[W / 2.0, H / 2.0]]), atol=1e-3):
            raise ValueError(
                f"export_blender needs principal points at the image centre; got {pp.tolist()}."
            )
        half_fov = torch.atan(min(H, W) / 2.0 / focal[:, 0].double())
        fov_deg = torch.rad2deg(2.0 * half_fov)
        near = scene.near if scene.near is not None else DEFAULT_NEAR
        far = scene.far if scene.far is not None else DEFAULT_FAR
        znear, zfar = torch.full((n,), float(near)), torch.full((n,), float(far))
    names = list(scene.splits) if splits is None else list(splits)
    for s in names:
        if s not in scene.splits:
            raise KeyError(f"Scene has no split {s!r}; available splits: {list(scene.splits)}.")
    images = (scene.images.detach().cpu().clamp(0, 1) * 255.0).round().to(torch.uint8)
    if scene.silhouettes is None:
        rgba = images.numpy()
    else:
        alpha = (scene.silhouettes.detach().cpu() > 0.5).to(torch.uint8) * 255
        rgba = torch.cat([images, alpha[..., None]], dim=-1).numpy()
    for s in names:
        idx = scene.splits[s].tolist()
        (out / s).mkdir(parents=True, exist_ok=True)
        angles = [camera_angle_x_from_fov(float(fov_deg[i]), H, W) for i in idx]
        nears = [float(znear[i]) for i in idx]
        fars = [float(zfar[i]) for i in idx]
        meta: dict[str, Any] = {"camera_angle_x": angles[0] if angles else 0.0}
        uniform = len(set(angles)) <= 1, len(set(nears)) <= 1, len(set(fars)) <= 1
        if uniform[1] and nears:
            meta["near"] = nears[0]
        if uniform[2] and fars:
            meta["far"] = fars[0]
        frames = []
        for k, i in enumerate(idx):
            rel = f"./{s}/r_{k}"
            Image.fromarray(rgba[i]).save(out / f"{rel}.png")
            c2w = p3d_to_c2w(cams.R[i].double().numpy(), cams.T[i].double().numpy())
            frame: dict[str, Any] = {"file_path": rel, "transform_matrix": c2w.tolist()}
            if not uniform[0]:
                frame["camera_angle_x"] = angles[k]
            if not uniform[1]:
                frame["near"] = nears[k]
            if not uniform[2]:
                frame["far"] = fars[k]
            frames.append(frame)
        meta["frames"] = frames
        (out / f"transforms_{s}.json").write_text(json.dumps(meta, indent=2))
    return out
