"""Held-out evaluation: full renders of test views against their images."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from nerf_lab.cameras import FoVPerspectiveCameras
from nerf_lab.metrics import psnr, ssim
from nerf_lab.raymarchers import RenderOutput
from nerf_lab.raysamplers import RayBundle
from nerf_lab.renderer import Renderer


def evaluate_views(
    renderer: Renderer,
    raysampler: Callable[..., RayBundle],
    cameras: FoVPerspectiveCameras,
    images: torch.Tensor,
    chunk_size: int | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> tuple[dict[str, Any], RenderOutput]:
    """PSNR and SSIM of full renders of ``cameras`` against ``images``.

    Args:
        raysampler: full-image sampler of the images' size.
        cameras: ``n_views`` cameras; images: ``(n_views, H, W, 3)`` in [0, 1].

    Returns:
        The metrics (means and per-view lists, ``eval/`` keys) and the renders
        ``(n_views, H, W)``.
    """
    renders = renderer.render_views(cameras, raysampler, chunk_size, should_stop)
    rgb = renders.rgb[..., :3].clamp(0, 1)
    psnrs = psnr(rgb, images)
    ssims = ssim(rgb, images)
    metrics = {
        "eval/psnr": float(psnrs.mean()),
        "eval/ssim": float(ssims.mean()),
        "eval/psnr_per_view": [round(float(v), 4) for v in psnrs],
        "eval/ssim_per_view": [round(float(v), 5) for v in ssims],
        "eval/n_views": len(cameras),
    }
    return metrics, renders


#: The evaluation protocol, written into every ``eval.json`` (README: "Evaluation").
PROTOCOL = {
    "images": "float RGB in [0, 1] (renders clamped), full resolution, all held-out views",
    "psnr": "10 log10(1 / MSE) per view over all pixels and channels, then the mean",
    "ssim": "11x11 Gaussian window, sigma 1.5, K=(0.01, 0.03), data_range 1, no padding, "
    "mean over valid positions and channels (Wang et al. 2004; tf.image.ssim)",
    "lpips": "AlexNet LPIPS (Zhang et al. 2018) on [-1, 1] inputs, when the lpips package "
    "and its weights are installed locally",
}

#: Columns of the per-view table ``views.csv``.
VIEW_COLUMNS = ("view", "psnr", "ssim", "lpips", "render", "target", "error", "depth")


def lpips_metrics(rgb: torch.Tensor, images: torch.Tensor) -> dict[str, Any]:
    """LPIPS of each view when available, else ``None`` and the reason.

    Args:
        rgb, images: ``(n_views, H, W, 3)`` in [0, 1].

    Returns:
        ``{"lpips": mean or None, "lpips_per_view": list or None, "lpips_reason": str}``.
    """
    from nerf_lab.metrics_lpips import lpips, lpips_available

    ok, reason = lpips_available()
    if not ok:
        return {"lpips": None, "lpips_per_view": None, "lpips_reason": reason}
    values = lpips(rgb, images)
    return {
        "lpips": float(values.mean()),
        "lpips_per_view": [round(float(v), 5) for v in values],
        "lpips_reason": reason,
    }


def save_eval_views(
    out_dir: Path,
    renders: RenderOutput,
    images: torch.Tensor,
    metrics: dict[str, Any],
    depth_range: tuple[float, float],
    error_scale: float = 0.25,
) -> Path:
    """Write each view's render, target, error map and depth as PNGs and ``views.csv``.

    Files: ``view_<i>_render.png``, ``view_<i>_target.png``, ``view_<i>_error.png`` (mean
    absolute error over the channels, Turbo colours, ``error_scale`` and above = the top
    colour), ``view_<i>_depth.png`` (Turbo over the fixed ``depth_range``, black where
    nothing was hit) and ``views.csv`` (one row per view: :data:`VIEW_COLUMNS`).

    Args:
        out_dir: an existing folder.
        renders: leading shape ``(n_views, H, W)``.
        images: ``(n_views, H, W, 3)`` targets in [0, 1].
        metrics: ``eval/psnr_per_view``, ``eval/ssim_per_view`` and ``lpips_per_view``
            (or None).
        depth_range: ``(near, far)`` of the depth colours.

    Returns:
        The path of ``views.csv``.
    """
    import csv
    import io

    from nerf_lab.fileio import atomic_write_data
    from nerf_lab.video import apply_colormap, colorize_depth, error_map, write_image

    out_dir = Path(out_dir)
    rgb = renders.rgb[..., :3].clamp(0, 1).cpu()
    images = images.cpu()
    lp = metrics.get("lpips_per_view")
    rows = []
    for i in range(rgb.shape[0]):
        names = {k: f"view_{i:03d}_{k}.png" for k in ("render", "target", "error", "depth")}
        write_image(out_dir / names["render"], rgb[i])
        write_image(out_dir / names["target"], images[i])
        write_image(
            out_dir / names["error"], apply_colormap(error_map(rgb[i], images[i]) / error_scale)
        )
        depth = colorize_depth(
            renders.depth[i].cpu(), *depth_range, opacity=renders.opacity[i].cpu()
        )
        write_image(out_dir / names["depth"], depth)
        rows.append(
            {
                "view": i,
                "psnr": metrics["eval/psnr_per_view"][i],
                "ssim": metrics["eval/ssim_per_view"][i],
                "lpips": "" if lp is None else lp[i],
                **names,
            }
        )
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=VIEW_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return atomic_write_data(out_dir / "views.csv", text.getvalue().encode())


def evaluate_and_save(
    renderer: Renderer,
    raysampler: Callable[..., RayBundle],
    cameras: Any,
    images: torch.Tensor,
    out_dir: Path,
    depth_range: tuple[float, float],
    chunk_size: int | None = None,
    should_stop: Callable[[], bool] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Full held-out evaluation with files: PSNR, SSIM, LPIPS (or why not), the per-view
    images and table (:func:`save_eval_views`) and ``out_dir/eval.json``.

    Args:
        cameras: ``n_views`` cameras; images: ``(n_views, H, W, 3)`` in [0, 1].
        out_dir: a new, existing folder for this evaluation.
        depth_range: ``(near, far)`` of the depth colours.
        should_stop: checked before each view (e.g. a progress reporter).
        extra: more keys for ``eval.json`` (step, checkpoint, ...).

    Returns:
        The metrics written to ``eval.json``: ``eval/psnr``, ``eval/ssim``, per-view lists,
        ``psnr``, ``ssim``, ``lpips`` (None without LPIPS, with ``lpips_reason``),
        ``protocol`` and ``eval_dir``.
    """
    from nerf_lab.checkpoint import write_json_atomic

    metrics, renders = evaluate_views(renderer, raysampler, cameras, images, chunk_size,
                                      should_stop)  # fmt: skip
    rgb = renders.rgb[..., :3].clamp(0, 1)
    metrics.update(lpips_metrics(rgb, images.to(rgb.device)))
    if metrics["lpips"] is not None:
        metrics["eval/lpips"] = metrics["lpips"]
    metrics.update(psnr=metrics["eval/psnr"], ssim=metrics["eval/ssim"])
    save_eval_views(out_dir, renders, images, metrics, depth_range)
    metrics.update(extra or {})
    metrics["protocol"] = PROTOCOL
    metrics["eval_dir"] = str(out_dir)
    write_json_atomic(Path(out_dir) / "eval.json", metrics)
    return metrics
