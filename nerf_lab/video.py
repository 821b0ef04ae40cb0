"""Videos, images and the pictures researchers look at: colormaps, error maps, panels.

Everything here takes tensors (or numpy arrays) and plain values and writes files
atomically with the user's umask (:func:`nerf_lab.fileio.atomic_write_public`).

* :func:`write_gif` (imageio's Pillow plugin, as the trainer's turntable) and
  :func:`write_mp4` (H.264 through ``imageio-ffmpeg``, the ``video`` extra:
  ``pip install -e '.[video]'``); :func:`write_video` writes both and, without
  ``imageio-ffmpeg``, logs why and writes the GIF only.
* :func:`apply_colormap` / :func:`colorize_depth`: Turbo (Google, Apache-2.0) and viridis
  (CC0) as 52-knot tables (every 5th entry of the 256-entry maps matplotlib ships; linear
  interpolation is within 0.7/255 of the full tables), so matplotlib is not needed at
  run time. Depth is normalised by a *fixed* ``near`` / ``far`` so colours mean the same
  depth in every frame of a video.
* :func:`error_map`, :func:`labelled_panel` (render | target | error | depth | opacity with
  a label above each tile, PIL's default font).

Image shapes: ``(H, W, 3)`` (or ``(H, W)`` for single-channel maps); frames
``(n_frames, H, W, 3)``; float images are in [0, 1] (clamped), ``uint8`` is taken as is.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from nerf_lab.fileio import atomic_write_data
from nerf_lab.validate import check_choice, check_int, check_number

log = logging.getLogger(__name__)

__all__ = [
    "COLORMAPS",
    "VideoBackendUnavailable",
    "apply_colormap",
    "colorize_depth",
    "error_map",
    "labelled_panel",
    "mp4_available",
    "to_uint8",
    "write_gif",
    "write_image",
    "write_mp4",
    "write_video",
]

# Every 5th entry (0, 5, ..., 255) of the 256-entry tables.
_TURBO_KNOTS = (
    (0.18995, 0.07176, 0.23217),
    (0.21291, 0.12947, 0.37314),
    (0.23236, 0.18603, 0.50004),
    (0.24830, 0.24143, 0.61286),
    (0.26074, 0.29568, 0.71162),
    (0.26967, 0.34878, 0.79631),
    (0.27509, 0.40072, 0.86692),
    (0.27701, 0.45152, 0.92347),
    (0.27543, 0.50115, 0.96594),
    (0.26878, 0.54995, 0.99303),
    (0.24946, 0.59943, 0.99835),
    (0.22039, 0.64901, 0.98436),
    (0.18625, 0.69775, 0.95498),
    (0.15173, 0.74472, 0.91416),
    (0.12151, 0.78896, 0.86581),
    (0.10026, 0.82955, 0.81389),
    (0.09267, 0.86554, 0.76230),
    (0.10342, 0.89600, 0.71500),
    (0.13526, 0.92197, 0.66556),
    (0.18491, 0.94484, 0.60713),
    (0.24797, 0.96423, 0.54303),
    (0.32006, 0.97974, 0.47654),
    (0.39678, 0.99098, 0.41098),
    (0.47375, 0.99755, 0.34963),
    (0.54658, 0.99907, 0.29581),
    (0.61088, 0.99514, 0.25280),
    (0.66428, 0.98524, 0.22370),
    (0.71577, 0.96875, 0.20815),
    (0.76608, 0.94627, 0.20311),
    (0.81410, 0.91861, 0.20552),
    (0.85868, 0.88655, 0.21230),
    (0.89870, 0.85087, 0.22038),
    (0.93301, 0.81236, 0.22667),
    (0.96049, 0.77181, 0.22811),
    (0.98000, 0.73000, 0.22161),
    (0.99163, 0.68408, 0.20706),
    (0.99654, 0.63193, 0.18738),
    (0.99517, 0.57549, 0.16412),
    (0.98799, 0.51667, 0.13883),
    (0.97545, 0.45740, 0.11305),
    (0.95801, 0.39958, 0.08831),
    (0.93612, 0.34513, 0.06616),
    (0.91024, 0.29599, 0.04814),
    (0.88066, 0.25334, 0.03521),
    (0.84662, 0.21407, 0.02487),
    (0.80799, 0.17753, 0.01660),
    (0.76476, 0.14374, 0.01041),
    (0.71692, 0.11268, 0.00629),
    (0.66449, 0.08436, 0.00424),
    (0.60746, 0.05878, 0.00427),
    (0.54583, 0.03593, 0.00638),
    (0.47960, 0.01583, 0.01055),
)
_VIRIDIS_KNOTS = (
    (0.26700, 0.00487, 0.32942),
    (0.27381, 0.03150, 0.35885),
    (0.27879, 0.06214, 0.38659),
    (0.28192, 0.08967, 0.41241),
    (0.28320, 0.11568, 0.43611),
    (0.28262, 0.14093, 0.45752),
    (0.28025, 0.16569, 0.47650),
    (0.27619, 0.19007, 0.49300),
    (0.27059, 0.21407, 0.50705),
    (0.26366, 0.23763, 0.51876),
    (0.25565, 0.26070, 0.52831),
    (0.24681, 0.28324, 0.53594),
    (0.23744, 0.30520, 0.54192),
    (0.22780, 0.32659, 0.54653),
    (0.21813, 0.34743, 0.55004),
    (0.20862, 0.36775, 0.55268),
    (0.19943, 0.38761, 0.55464),
    (0.19063, 0.40706, 0.55609),
    (0.18226, 0.42618, 0.55712),
    (0.17427, 0.44504, 0.55779),
    (0.16662, 0.46371, 0.55812),
    (0.15919, 0.48224, 0.55807),
    (0.15192, 0.50069, 0.55759),
    (0.14476, 0.51909, 0.55657),
    (0.13777, 0.53749, 0.55491),
    (0.13117, 0.55590, 0.55246),
    (0.12539, 0.57432, 0.54909),
    (0.12115, 0.59274, 0.54464),
    (0.11942, 0.61114, 0.53898),
    (0.12138, 0.62949, 0.53197),
    (0.12809, 0.64775, 0.52349),
    (0.14021, 0.66586, 0.51343),
    (0.15785, 0.68376, 0.50169),
    (0.18065, 0.70140, 0.48819),
    (0.20803, 0.71870, 0.47287),
    (0.23937, 0.73559, 0.45569),
    (0.27415, 0.75199, 0.43660),
    (0.31193, 0.76782, 0.41559),
    (0.35236, 0.78301, 0.39264),
    (0.39517, 0.79748, 0.36776),
    (0.44014, 0.81114, 0.34097),
    (0.48703, 0.82393, 0.31232),
    (0.53562, 0.83579, 0.28191),
    (0.58568, 0.84666, 0.24990),
    (0.63690, 0.85654, 0.21662),
    (0.68894, 0.86545, 0.18272),
    (0.74139, 0.87345, 0.14956),
    (0.79376, 0.88068, 0.12001),
    (0.84556, 0.88732, 0.09970),
    (0.89632, 0.89362, 0.09634),
    (0.94564, 0.89982, 0.11284),
    (0.99325, 0.90616, 0.14394),
)

#: Colormap name -> ``(52, 3)`` knots at evenly spaced positions in [0, 1].
COLORMAPS: dict[str, torch.Tensor] = {
    "turbo": torch.tensor(_TURBO_KNOTS, dtype=torch.float32),
    "viridis": torch.tensor(_VIRIDIS_KNOTS, dtype=torch.float32),
}

ArrayLike = torch.Tensor | np.ndarray


class VideoBackendUnavailable(RuntimeError):
    """MP4 writing needs ``imageio-ffmpeg`` (``pip install -e '.[video]'``)."""


# ---------------------------------------------------------------------------------------
# Conversions
# ---------------------------------------------------------------------------------------
def _as_tensor(image: ArrayLike) -> torch.Tensor:
    if isinstance(image, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(image))
    if torch.is_tensor(image):
        return image.detach().cpu()
    raise ValueError(f"expected a torch.Tensor or numpy array; got {type(image).__name__}.")


def to_uint8(images: ArrayLike) -> np.ndarray:
    """Float images in [0, 1] (clamped; NaN -> 0) or ``uint8`` images -> ``uint8`` numpy.

    Args:
        images: ``(..., C)`` any leading shape.

    Returns:
        numpy ``uint8`` array of the same shape.
    """
    t = _as_tensor(images)
    if t.dtype == torch.uint8:
        return t.numpy()
    if t.dtype == torch.bool or not (t.is_floating_point()):
        raise ValueError(f"images must be float in [0, 1] or uint8; got dtype {t.dtype}.")
    t = torch.nan_to_num(t.float(), nan=0.0).clamp(0, 1)
    return (t * 255).round().to(torch.uint8).numpy()


def _frames_u8(frames: ArrayLike | Sequence[ArrayLike]) -> np.ndarray:
    if isinstance(frames, list | tuple):
        if not frames:
            raise ValueError("frames must hold at least one frame; got an empty sequence.")
        frames = np.stack([to_uint8(f) for f in frames])
    out = to_uint8(frames)
    if out.ndim != 4 or out.shape[-1] != 3 or out.shape[0] < 1:
        raise ValueError(f"frames must have shape (n_frames, H, W, 3); got {tuple(out.shape)}.")
    return out


# ---------------------------------------------------------------------------------------
# Writers
# ---------------------------------------------------------------------------------------
def write_image(path: str | Path, image: ArrayLike) -> Path:
    """Write an ``(H, W, 3)`` / ``(H, W)`` image (float [0, 1] or uint8) as PNG/JPEG
    (by suffix), atomically, mode ``0o666 & ~umask``."""
    import imageio.v3 as iio

    path = Path(path)
    u8 = to_uint8(image)
    return atomic_write_data(path, iio.imwrite("<bytes>", u8, extension=path.suffix or ".png"))


def write_gif(
    path: str | Path, frames: ArrayLike | Sequence[ArrayLike], fps: float = 12.5, loop: int = 0
) -> Path:
    """Write an animated GIF (imageio's Pillow plugin), atomically.

    GIF frame durations are whole hundredths of a second, so ``1000 / fps`` ms is rounded
    by the format (12.5 fps = 80 ms, the trainer's turntable). Pillow merges *identical*
    consecutive frames into one longer frame.

    Args:
        path: output file.
        frames: ``(n_frames, H, W, 3)`` (or a sequence of ``(H, W, 3)``).
        fps: frames per second (> 0).
        loop: 0 loops forever; ``n`` plays ``n`` extra times.

    Returns:
        ``path``.
    """
    import imageio.v3 as iio

    fps = check_number("fps", fps, 0, low_open=True)
    u8 = _frames_u8(frames)
    data = iio.imwrite("<bytes>", u8, extension=".gif", duration=1000.0 / fps, loop=loop)
    return atomic_write_data(path, data)


def mp4_available() -> tuple[bool, str]:
    """Whether :func:`write_mp4` can run, and why not: ``(ok, reason)``."""
    try:
        import imageio_ffmpeg
    except ImportError:
        return False, "MP4 needs imageio-ffmpeg: pip install -e '.[video]'"
    try:
        exe = imageio_ffmpeg.get_ffmpeg_exe()
    except RuntimeError as e:  # no bundled binary for this platform and none on PATH
        return False, f"imageio-ffmpeg found no ffmpeg executable ({e})"
    return True, f"ffmpeg at {exe}"


def _pad_even(frames: np.ndarray) -> np.ndarray:
    n, h, w, c = frames.shape
    ph, pw = h % 2, w % 2
    if ph or pw:
        frames = np.pad(frames, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="edge")
    return np.ascontiguousarray(frames)


def write_mp4(
    path: str | Path, frames: ArrayLike | Sequence[ArrayLike], fps: float = 25.0, quality: float = 8
) -> Path:
    """Write an H.264 MP4 (``yuv420p``, plays everywhere) through ``imageio-ffmpeg``.

    ffmpeg encodes into a temporary folder; the result is then written atomically, mode
    ``0o666 & ~umask``. ``yuv420p`` needs even sizes: an odd ``H`` or ``W`` is padded by
    repeating the last row / column (the video is then one pixel larger).

    Args:
        path: output ``.mp4``.
        frames: ``(n_frames, H, W, 3)``.
        fps: frames per second (> 0).
        quality: imageio-ffmpeg's quality, 0 (worst) to 10 (best).

    Returns:
        ``path``.

    Raises:
        VideoBackendUnavailable: ``imageio-ffmpeg`` (or its ffmpeg) is missing; the message
            says what to install.
    """
    ok, reason = mp4_available()
    if not ok:
        raise VideoBackendUnavailable(reason)
    import imageio_ffmpeg

    fps = check_number("fps", fps, 0, low_open=True)
    check_number("quality", quality, 0, 10)
    u8 = _pad_even(_frames_u8(frames))
    _, h, w, _ = u8.shape
    with tempfile.TemporaryDirectory(prefix="nerf_lab_mp4_") as tmp:
        out = Path(tmp) / "video.mp4"
        writer = imageio_ffmpeg.write_frames(
            str(out),
            (w, h),
            fps=fps,
            codec="libx264",
            pix_fmt_out="yuv420p",
            quality=quality,
            macro_block_size=1,
            ffmpeg_log_level="error",
        )
        writer.send(None)
        try:
            for frame in u8:
                writer.send(frame)
        finally:
            writer.close()
        data = out.read_bytes()
    return atomic_write_data(path, data)


def write_video(
    path: str | Path,
    frames: ArrayLike | Sequence[ArrayLike],
    fps: float = 25.0,
    formats: Sequence[str] = ("mp4", "gif"),
) -> dict[str, Path]:
    """Write ``frames`` as ``path`` with each suffix of ``formats`` (``"mp4"``, ``"gif"``).

    Without ``imageio-ffmpeg`` the MP4 is skipped with a warning saying what to install;
    the other formats are still written.

    Args:
        path: output path; its suffix (if any) is replaced by each format's.
        frames: ``(n_frames, H, W, 3)``.
        fps: frames per second.
        formats: any of ``"mp4"``, ``"gif"``.

    Returns:
        ``{format: path}`` of the files written.
    """
    bad = [f for f in formats if f not in ("mp4", "gif")]
    if bad or not formats:
        raise ValueError(f"formats must be a non-empty subset of ('mp4', 'gif'); got {formats!r}.")
    u8 = _frames_u8(frames)
    path = Path(path)
    written: dict[str, Path] = {}
    for fmt in formats:
        target = path.with_suffix("." + fmt)
        if fmt == "mp4":
            ok, reason = mp4_available()
            if not ok:
                log.warning("Not writing %s: %s. Writing the other formats only.", target, reason)
                continue
            written[fmt] = write_mp4(target, u8, fps=fps)
        else:
            written[fmt] = write_gif(target, u8, fps=fps)
    return written


# ---------------------------------------------------------------------------------------
# Colormaps, error maps
# ---------------------------------------------------------------------------------------
def apply_colormap(values: ArrayLike, cmap: str = "turbo") -> torch.Tensor:
    """Map values in [0, 1] (clamped; NaN -> 0) to RGB by linear interpolation of a table.

    Args:
        values: ``(...)`` any shape, e.g. ``(H, W)``.
        cmap: ``"turbo"`` or ``"viridis"``.

    Returns:
        ``(..., 3)`` float32 in [0, 1]; 0 maps to the table's first colour, 1 to its last.
    """
    check_choice("cmap", cmap, sorted(COLORMAPS))
    v = _as_tensor(values)
    knots = COLORMAPS[cmap].to(v.device)
    n = knots.shape[0]
    x = torch.nan_to_num(v.float(), nan=0.0).clamp(0, 1) * (n - 1)
    lo = x.floor().long().clamp(max=n - 2)
    frac = (x - lo)[..., None]
    return knots[lo] * (1 - frac) + knots[lo + 1] * frac


def colorize_depth(
    depth: ArrayLike,
    near: float,
    far: float,
    opacity: ArrayLike | None = None,
    cmap: str = "turbo",
    background: Sequence[float] = (0.0, 0.0, 0.0),
) -> torch.Tensor:
    """Colour a depth map with a fixed normalisation ``(depth - near) / (far - near)``.

    ``near`` maps to the colormap's first colour (Turbo: dark blue), ``far`` to its last
    (Turbo: dark red); depths outside are clamped. Fix ``near`` / ``far`` once per video
    (e.g. the raysampler's ``min_depth`` / ``max_depth``) so a colour is one depth in every
    frame. A rendered depth is meaningless where nothing was hit: with ``opacity`` the
    colour is blended over ``background`` by it.

    Args:
        depth: ``(H, W)`` (or ``(H, W, 1)``) view-space z-depths.
        near, far: the depths mapped to 0 and 1; ``near < far``.
        opacity: optional ``(H, W)`` (or ``(H, W, 1)``) in [0, 1].
        cmap: ``"turbo"`` or ``"viridis"``.
        background: RGB under transparent pixels.

    Returns:
        ``(H, W, 3)`` float32 in [0, 1].
    """
    near, far = float(near), float(far)
    if not near < far:
        raise ValueError(f"near must be < far; got near={near!r}, far={far!r}.")
    d = _squeeze_map("depth", _as_tensor(depth))
    rgb = apply_colormap((d.float() - near) / (far - near), cmap)
    if opacity is not None:
        a = _squeeze_map("opacity", _as_tensor(opacity)).float().clamp(0, 1)
        if a.shape != d.shape:
            raise ValueError(
                f"opacity must have the shape of depth {tuple(d.shape)}; got {tuple(a.shape)}."
            )
        bg = torch.as_tensor(background, dtype=torch.float32)
        rgb = rgb * a[..., None] + bg * (1 - a[..., None])
    return rgb


def _squeeze_map(name: str, t: torch.Tensor) -> torch.Tensor:
    if t.dim() == 3 and t.shape[-1] == 1:
        t = t[..., 0]
    if t.dim() != 2:
        raise ValueError(f"{name} must have shape (H, W) or (H, W, 1); got {tuple(t.shape)}.")
    return t


def error_map(pred: ArrayLike, target: ArrayLike, kind: str = "abs") -> torch.Tensor:
    """Per-pixel error, averaged over the colour channels.

    Args:
        pred, target: ``(H, W, C)`` float images in [0, 1].
        kind: ``"abs"`` (mean absolute error, in [0, 1]) or ``"squared"`` (mean squared
            error; its image mean is the MSE behind PSNR).

    Returns:
        ``(H, W)`` float32.
    """
    p, t = _as_tensor(pred).float(), _as_tensor(target).float()
    if p.shape != t.shape or p.dim() != 3:
        raise ValueError(
            f"pred and target must both have shape (H, W, C); got {tuple(p.shape)} and "
            f"{tuple(t.shape)}."
        )
    diff = p - t
    if kind == "abs":
        return diff.abs().mean(-1)
    if kind == "squared":
        return (diff * diff).mean(-1)
    raise ValueError(f"kind must be 'abs' or 'squared'; got {kind!r}.")


# ---------------------------------------------------------------------------------------
# Panels
# ---------------------------------------------------------------------------------------
def _as_rgb(name: str, image: ArrayLike) -> torch.Tensor:
    t = _as_tensor(image)
    t = t.float() / 255.0 if t.dtype == torch.uint8 else t.float()
    if t.dim() == 2:
        t = t[..., None]
    if t.dim() != 3 or t.shape[-1] not in (1, 3):
        raise ValueError(
            f"panel image {name!r} must have shape (H, W), (H, W, 1) or (H, W, 3); got "
            f"{tuple(t.shape)}."
        )
    return torch.nan_to_num(t, nan=0.0).clamp(0, 1).expand(*t.shape[:2], 3)


def labelled_panel(
    images: Mapping[str, ArrayLike],
    label_height: int = 16,
    separator: int = 2,
    text_color: Sequence[int] = (255, 255, 255),
    background: Sequence[int] = (0, 0, 0),
) -> torch.Tensor:
    """Tiles side by side, each with its name written above it (PIL's default font).

    Typical: ``{"render": rgb, "target": gt, "error": apply_colormap(error_map(rgb, gt)),
    "depth": colorize_depth(depth, near, far), "opacity": opacity}``. Single-channel
    images are shown in grey. Labels wider than a tile are cut at its edge.

    Args:
        images: name -> ``(H, W, 3)``, ``(H, W, 1)`` or ``(H, W)`` image (float in [0, 1]
            or uint8), all of the same ``H`` and ``W``, in display order.
        label_height: pixel rows of the label strip above the tiles (>= 1).
        separator: pixel columns between tiles (>= 0).
        text_color, background: RGB 0-255 of the labels and of the strip / separators.

    Returns:
        ``(label_height + H, n W + (n - 1) separator, 3)`` float32 in [0, 1].
    """
    from PIL import Image, ImageDraw, ImageFont

    if not images:
        raise ValueError("images must hold at least one image.")
    check_int("label_height", label_height)
    check_int("separator", separator, 0)
    tiles = {name: _as_rgb(name, im) for name, im in images.items()}
    sizes = {name: tuple(t.shape[:2]) for name, t in tiles.items()}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"panel images must all have the same (H, W); got {sizes}.")
    h, w = next(iter(sizes.values()))
    n = len(tiles)
    width = n * w + (n - 1) * separator
    canvas = Image.new("RGB", (width, label_height + h), tuple(background))
    font = ImageFont.load_default()
    for i, (name, tile) in enumerate(tiles.items()):
        x0 = i * (w + separator)
        canvas.paste(Image.fromarray(to_uint8(tile)), (x0, label_height))
        strip = Image.new("RGB", (w, label_height), tuple(background))
        draw = ImageDraw.Draw(strip)
        left, top, right, bottom = draw.textbbox((0, 0), name, font=font)
        y = (label_height - (bottom - top)) // 2 - top
        draw.text((2, y), name, fill=tuple(text_color), font=font)
        canvas.paste(strip, (x0, 0))
    return torch.from_numpy(np.asarray(canvas, dtype=np.float32) / 255.0)
