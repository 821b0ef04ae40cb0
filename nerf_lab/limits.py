"""Limits checked up front, from the config, before any data are generated.

* :func:`data_range_problems`: the data's camera ranges (azimuth, elevation) and
  ``trainer.batch_size`` against the number of training views, where the data option's
  keys say it (``procedural_scene``, ``cow_scene``, ``mesh_scene``; other data options
  are checked by the trainer once the data exist).
* :func:`check_memory`: the memory of one training step and of rendering full images
  (previews, evaluation, turntable) estimated with :mod:`nerf_lab.memory`, compared with
  what the device has; refused with both numbers. The per-point constants come from a
  table by field class (:data:`FIELD_FLOATS_PER_POINT`, measured in
  ``nerf_lab.memory``'s docstring); a field not in the table gets
  :data:`DEFAULT_FLOATS_PER_POINT`, a conservative guess.
* :func:`render_size_problems`: a rendered image may have at most
  :data:`MAX_RENDER_PIXELS` pixels (``trainer.render_scale=100`` would otherwise render for
  hours, with no memory limit hit on a large machine).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nerf_lab.memory import (
    MemoryEstimate,
    available_memory,
    check_fits,
    estimate_render_chunk_bytes,
    estimate_train_step_bytes,
)
from nerf_lab.validate import check_number, collect, is_int, is_number

#: The largest image a preview, evaluation or turntable may render (4096 x 4096 pixels).
MAX_RENDER_PIXELS = 4096 * 4096

#: ``(train, render)`` float32 values per sample point, by field class name. NeRF MLPs use
#: the fitted formula of ``nerf_lab.memory`` instead (see :func:`floats_per_point`).
FIELD_FLOATS_PER_POINT: dict[str, tuple[float, float]] = {
    "FastRadianceField": (30.0, 121.0),
}
#: Fields without a measurement (NGP, K-Planes, the full NeRF, the user's own): conservative.
DEFAULT_FLOATS_PER_POINT = (1500.0, 700.0)

#: Data options whose number of training views is known from their keys.
_DATA_TARGETS = ("procedural_scene", "cow_scene", "mesh_scene")


def floats_per_point(field_class: str, model: Mapping[str, Any]) -> tuple[float, float]:
    """``(train, render)`` float32 values per sample point for a field.

    Args:
        field_class: the field's class name (e.g. ``"NeuralRadianceField"``).
        model: the ``model`` config node (plain values), for the NeRF MLP's sizes.
    """
    if field_class == "NeuralRadianceField":
        hidden = float(model.get("n_hidden_neurons", 256))
        harm = float(model.get("n_harmonic_functions", 60))
        return 370 + 2.1 * hidden + 2.8 * harm, 90 + 1.14 * hidden + 3.1 * harm
    return FIELD_FLOATS_PER_POINT.get(field_class, DEFAULT_FLOATS_PER_POINT)


def _data_kind(data: Mapping[str, Any]) -> str | None:
    target = str(data.get("_target_", ""))
    name = target.rsplit(".", 1)[-1]
    return name if name in _DATA_TARGETS else None


def n_training_views(data: Mapping[str, Any]) -> int | None:
    """The number of training views the data option will make, or ``None`` if unknown."""
    kind = _data_kind(data)
    n, n_test = data.get("num_views"), data.get("n_test_views", 0)
    if kind is None or not is_int(n) or not is_int(n_test):
        return None
    if kind == "cow_scene" and not data.get("train_on_all_views", False):
        return n - n_test
    return n


def data_range_problems(data: Mapping[str, Any], batch_size: Any) -> list[str]:
    """Camera ranges of the data option and ``trainer.batch_size`` vs its training views.

    Args:
        data: the ``data`` node (plain values).
        batch_size: ``trainer.batch_size``.

    Returns:
        One line per problem, naming the key, the value and what is allowed.
    """
    if _data_kind(data) is None:
        return []
    problems = []
    az = data.get("azimuth_range")
    if az is not None:
        collect(problems, check_number, "data.azimuth_range", az, 0, 180)
    el = data.get("elevation_range")
    if el is not None:
        ok = (
            isinstance(el, list | tuple)
            and len(el) == 2
            and all(is_number(v) and -90 < v < 90 for v in el)
            and el[0] <= el[1]
        )
        if not ok:
            problems.append(
                f"data.elevation_range={list(el) if isinstance(el, tuple) else el!r}: must be "
                "[min, max] degrees with -90 < min <= max < 90"
            )
    et = data.get("elevation_test")
    if et is not None:
        key = "data.elevation_test"
        collect(problems, check_number, key, et, -90, 90, low_open=True, high_open=True)
    n = n_training_views(data)
    if n is not None and n >= 1 and is_int(batch_size) and batch_size > n:
        problems.append(
            f"trainer.batch_size={batch_size}: must be <= the number of training views ({n})"
        )
    return problems


def render_size_problems(image_hw: tuple[int, int] | None, settings: Any) -> list[str]:
    """Rendered images larger than :data:`MAX_RENDER_PIXELS` (preview and turntable).

    Args:
        image_hw: the data's ``(H, W)``, or ``None`` when not known yet.
        settings: the trainer settings (``render_scale``, ``turntable_scale``,
            ``turntable_frames``).
    """
    if image_hw is None:
        return []
    problems = []
    scales = [("render_scale", settings.render_scale)]
    if settings.turntable_frames:
        scales.append(("turntable_scale", settings.turntable_scale))
    for key, scale in scales:
        h, w = (max(1, round(n * scale)) for n in image_hw)
        if h * w > MAX_RENDER_PIXELS:
            problems.append(
                f"trainer.{key}={scale!r}: renders {h} x {w} images ({h * w / 1e6:.1f} M "
                f"pixels) from {image_hw[0]} x {image_hw[1]} data; at most "
                f"{MAX_RENDER_PIXELS / 1e6:.1f} M pixels are allowed"
            )
    return problems


def known_image_hw(data: Mapping[str, Any]) -> tuple[int, int] | None:
    """The data's image size from its config (``image_size``), or ``None`` if unknown."""
    size = data.get("image_size") if _data_kind(data) is not None else None
    return (size, size) if is_int(size) and size >= 1 else None


def _n_views_total(data: Mapping[str, Any]) -> int:
    total = 0
    for key in ("num_views", "n_test_views", "elevated_test_views"):
        v = data.get(key, 0)
        total += v if is_int(v) and v > 0 else 0
    return total


def estimate_memory(
    *,
    field_class: str,
    model: Mapping[str, Any],
    n_rays: int,
    n_pts_per_ray: int,
    param_count: int,
    settings: Any,
    image_hw: tuple[int, int] | None,
    n_eval_views: int = 1,
    scene_bytes: int = 0,
    optimizer_slots: int = 2,
) -> tuple[MemoryEstimate, MemoryEstimate | None]:
    """Estimates of a training step and of the largest full render (``None`` without an
    image size): a preview at ``render_scale``, the evaluation at scale 1
    (``n_eval_views``), the turntable at ``turntable_scale`` (its frames are kept)."""
    train_fpp, render_fpp = floats_per_point(field_class, model)
    train = estimate_train_step_bytes(
        n_rays,
        n_pts_per_ray,
        param_count,
        train_fpp,
        train_chunk_size=settings.train_chunk_size,
        optimizer_slots=optimizer_slots,
        scene_bytes=scene_bytes,
    )
    if image_hw is None:
        return train, None
    renders = [(settings.render_scale, 1), (1.0, max(1, n_eval_views))]
    if settings.turntable_frames:
        renders.append((settings.turntable_scale, settings.turntable_frames))
    best: MemoryEstimate | None = None
    for scale, n_views in renders:
        h, w = (max(1, round(n * scale)) for n in image_hw)
        est = estimate_render_chunk_bytes(
            settings.chunk_size,
            n_pts_per_ray,
            render_fpp,
            model_param_count=param_count,
            image_height=h,
            image_width=w,
            n_views=n_views,
            scene_bytes=scene_bytes,
        )
        if best is None or est.total > best.total:
            best = est
    return train, best


def check_memory(
    train: MemoryEstimate,
    render: MemoryEstimate | None,
    n_rays: int,
    n_pts_per_ray: int,
    device: str = "cpu",
    available: int | None = None,
) -> None:
    """Refuse a run whose training step or renders would not fit in memory.

    Raises:
        ValueError: naming the estimate, the available memory and what to change.
    """
    avail = available if available is not None else available_memory(device)
    check_fits(
        train,
        f"a training step ({n_rays} rays x {n_pts_per_ray} points)",
        avail,
        hint="Lower raysampler.n_rays_per_image or trainer.batch_size, or set "
        "trainer.train_chunk_size.",
        device=device,
    )
    if render is not None:
        check_fits(
            render,
            "rendering full images",
            avail,
            hint="Lower trainer.chunk_size, trainer.render_scale, trainer.turntable_scale or "
            "trainer.turntable_frames.",
            device=device,
        )


def scene_bytes_from_config(data: Mapping[str, Any]) -> int:
    """Images and silhouettes of a data option whose size its keys give (else 0)."""
    hw = known_image_hw(data)
    if hw is None:
        return 0
    return _n_views_total(data) * hw[0] * hw[1] * 4 * 4
