"""Pictures of a run: preview panels, image grids, turntable files."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from nerf_lab.checkpoint import atomic_write_bytes
from nerf_lab.raymarchers import RenderOutput


def image_grid(images: torch.Tensor, n_cols: int | None = None) -> torch.Tensor:
    """Tile ``(n_images, H, W, C)`` images into one ``(rows * H, n_cols * W, C)`` image."""
    n, h, w, c = images.shape
    n_cols = n_cols or math.ceil(math.sqrt(n))
    n_rows = math.ceil(n / n_cols)
    canvas = images.new_zeros(n_rows * n_cols, h, w, c)
    canvas[:n] = images
    return (
        canvas.view(n_rows, n_cols, h, w, c)
        .permute(0, 2, 1, 3, 4)
        .reshape(n_rows * h, n_cols * w, c)
    )


def to_uint8(image: torch.Tensor) -> Any:
    """``(..., C)`` float image in [0, 1] → numpy uint8 array."""
    return (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()


def preview_panel(render: RenderOutput, target: torch.Tensor) -> torch.Tensor:
    """One view side by side: render | opacity | depth (normalised) | target.

    Args:
        render: one view's output with leading shape ``(H, W)``.
        target: ``(H_t, W_t, 3)`` ground truth (resized to ``(H, W)`` if needed).

    Returns:
        ``(H, 4 W, 3)`` in [0, 1].
    """
    h, w = render.rgb.shape[:2]
    tgt = F.interpolate(target.permute(2, 0, 1)[None], size=(h, w), mode="nearest")[0]
    depth = render.depth * render.opacity  # empty space dark
    max_depth = float(depth.max().clamp_min(1e-6))
    panel = torch.cat(
        [
            render.rgb[..., :3],
            render.opacity.expand(h, w, 3),
            (depth / max_depth).expand(h, w, 3),
            tgt.permute(1, 2, 0).to(render.rgb.device),
        ],
        dim=1,
    )
    return panel.clamp(0, 1)


def write_turntable(frames: torch.Tensor, out_dir: Path, duration_ms: int = 80) -> Path:
    """Write ``frames (n_frames, H, W, 3)`` as ``turntable.gif`` and ``turntable_grid.png``
    (atomically) into ``out_dir``; returns the GIF's path."""
    import imageio.v3 as iio

    out_dir.mkdir(parents=True, exist_ok=True)
    gif = out_dir / "turntable.gif"
    frames_u8 = to_uint8(frames)
    atomic_write_bytes(
        gif,
        lambda f: f.write(
            iio.imwrite("<bytes>", frames_u8, extension=".gif", duration=duration_ms, loop=0)
        ),
    )
    grid_u8 = to_uint8(image_grid(frames))
    atomic_write_bytes(
        out_dir / "turntable_grid.png",
        lambda f: f.write(iio.imwrite("<bytes>", grid_u8, extension=".png")),
    )
    return gif


def labelled_preview(
    render: RenderOutput,
    target: torch.Tensor,
    depth_range: tuple[float, float] | None = None,
    error_scale: float = 0.25,
) -> torch.Tensor:
    """One view as a labelled panel: render | target | error | depth | opacity.

    Args:
        render: one view's output with leading shape ``(H, W)``.
        target: ``(H_t, W_t, 3)`` ground truth in [0, 1] (resized to ``(H, W)`` if needed).
        depth_range: ``(near, far)`` of the depth colours (Turbo: near dark blue, far dark
            red); ``None``: the view's own depth range where it is opaque.
        error_scale: mean absolute error shown with the top colour of the error map.

    Returns:
        ``(16 + H, 5 W + 8, 3)`` in [0, 1] (:func:`nerf_lab.video.labelled_panel`).
    """
    from nerf_lab.video import apply_colormap, colorize_depth, error_map, labelled_panel

    h, w = render.rgb.shape[:2]
    tgt = F.interpolate(target.permute(2, 0, 1)[None].float(), size=(h, w), mode="nearest")[0]
    tgt = tgt.permute(1, 2, 0).cpu().clamp(0, 1)
    rgb = render.rgb[..., :3].detach().float().cpu().clamp(0, 1)
    opacity = render.opacity.detach().float().cpu().clamp(0, 1)
    depth = render.depth.detach().float().cpu()
    if depth_range is None:
        hit = depth[opacity > 0.5]
        lo, hi = (float(hit.min()), float(hit.max())) if hit.numel() else (0.0, 1.0)
        depth_range = (lo, hi if hi > lo else lo + 1.0)
    return labelled_panel(
        {
            "render": rgb,
            "target": tgt,
            "error": apply_colormap(error_map(rgb, tgt) / error_scale),
            "depth": colorize_depth(depth, *depth_range, opacity=opacity),
            "opacity": opacity,
        }
    )
