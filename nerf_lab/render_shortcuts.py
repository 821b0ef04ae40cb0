"""Rendering shortcuts for any field: ray skipping and early ray termination (evaluation only).

Sampling never lives inside a field (nerfacc's design): these shortcuts are applied by the
one render path (:func:`nerf_lab.renderer.render_rays`) to whatever field it renders, and
only where no gradient is taken (``torch.is_grad_enabled()`` is false: evaluation,
previews, videos, exports), so training numerics never change.

* **Ray skipping.** A resampler may mark rays that need no field evaluation with the aux
  key :data:`ACTIVE_RAYS` (``(..., 1)`` bool; e.g.
  :class:`~nerf_lab.occupancy_grid.OccupancyResampler`: the ray crosses no occupied cell).
  The field is evaluated on the active rays only; the others get the raymarcher's result
  for an empty ray (zero weights and opacity, the background colour):
  :func:`~nerf_lab.raymarchers.march_empty`, i.e. ``march`` on zero densities for any
  raymarcher, built without arithmetic by
  :class:`~nerf_lab.raymarchers.EmissionAbsorptionRaymarcher`.
* **Early ray termination.** A bundle's ``n_pts_per_ray`` samples are evaluated in
  segments of ``segment_size`` points per ray (:func:`segment_bounds`); after each segment
  only rays whose transmittance ``T = prod_j (1 - alpha_j)`` is still above
  ``termination_threshold`` go on to the next (:func:`evaluate_in_segments`). The points
  never evaluated get density 0 and colour 0 and the whole bundle is raymarched once, so
  for :class:`~nerf_lab.raymarchers.EmissionAbsorptionRaymarcher`
  (``surface_thickness=1``) every colour channel, the opacity and the sum of the weights
  differ from the unsegmented render by at most the transmittance at the stop, i.e.
  ``<= termination_threshold`` for colours and background in [0, 1].

**Segment boundaries are exact.** Fields compute a point's opacity over the spacing to the
next sample (the last point of a bundle reuses the spacing before it, or the tutorial's
``1e10``): every segment but the last is evaluated with one look-ahead point (its next
sample), whose outputs are dropped, and the last segment ends where the ray ends; a
final segment of a single point is merged into the one before. So a field whose value at
a point depends on the ray only through that point and the next sample's depth gives
exactly the unsegmented densities and colours. (Fields with their own shortcuts that look
along the whole ray, e.g. :class:`~nerf_lab.models.FastRadianceField`'s termination or
``render_color_threshold > 0`` of ``NeuralRadianceField`` and the hybrid fields, see a
segment's transmittance from its start, which is never lower than the true one: they skip
fewer points, never more.)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from nerf_lab.raymarchers import RenderOutput, march_empty
from nerf_lab.raysamplers import RayBundle
from nerf_lab.validate import check_bool, check_int, check_number

__all__ = [
    "ACTIVE_RAYS",
    "RenderShortcuts",
    "evaluate_in_segments",
    "march_active_rays",
    "march_in_segments",
    "segment_bounds",
]

#: The aux key of a resampler's output that marks the rays needing a field evaluation:
#: ``(..., 1)`` bool (or 0/1 numbers), false for rays the renderer may leave empty.
ACTIVE_RAYS = "active_rays"

FieldFn = Callable[..., tuple[torch.Tensor, torch.Tensor]]


class RenderShortcuts:
    """Which evaluation-time shortcuts the renderer takes (see the module docstring).

    Args:
        skip_inactive_rays: evaluate the field only on the rays a resampler marks active
            (aux :data:`ACTIVE_RAYS`); rays without the mark are all active.
        termination_threshold: stop marching a ray once its transmittance is at or below
            this, in [0, 1); 0: off (every point is evaluated, in one call).
        segment_size: points per ray evaluated per segment, >= 1 (the transmittance is
            checked between segments: smaller segments stop closer to the surface, larger
            ones make fewer field calls).
    """

    def __init__(
        self,
        skip_inactive_rays: bool = True,
        termination_threshold: float = 1.0e-4,
        segment_size: int = 16,
    ) -> None:
        check_bool("skip_inactive_rays", skip_inactive_rays)
        check_number("termination_threshold", termination_threshold, 0, 1, high_open=True)
        check_int("segment_size", segment_size)
        self.skip_inactive_rays = skip_inactive_rays
        self.termination_threshold = float(termination_threshold)
        self.segment_size = segment_size

    @property
    def terminates(self) -> bool:
        """Whether rays are marched in segments with early termination."""
        return self.termination_threshold > 0.0

    def __repr__(self) -> str:
        return (
            f"RenderShortcuts(skip_inactive_rays={self.skip_inactive_rays}, "
            f"termination_threshold={self.termination_threshold}, "
            f"segment_size={self.segment_size})"
        )


def segment_bounds(n_pts_per_ray: int, segment_size: int) -> list[tuple[int, int]]:
    """``[(start, stop), ...]``: consecutive segments of ``segment_size`` points covering
    ``0..n_pts_per_ray``; a last segment of one point is merged into the one before (a
    field needs 2 points for a spacing)."""
    bounds = [
        (s, min(s + segment_size, n_pts_per_ray)) for s in range(0, n_pts_per_ray, segment_size)
    ]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] == 1:
        bounds[-2:] = [(bounds[-2][0], n_pts_per_ray)]
    return bounds


def _select(bundle: RayBundle, rays: torch.Tensor, start: int, stop: int) -> RayBundle:
    return RayBundle(
        origins=bundle.origins[rays],
        directions=bundle.directions[rays],
        lengths=bundle.lengths[rays, start:stop],
        xys=None if bundle.xys is None else bundle.xys[rays],
    )


def evaluate_in_segments(
    ray_bundle: RayBundle,
    field: FieldFn,
    termination_threshold: float,
    segment_size: int,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The field's densities and colours, segment by segment, only while rays are visible.

    Args:
        ray_bundle: a flat bundle, lengths ``(n_rays, n_pts_per_ray)`` sorted.
        field: ``field(ray_bundle=..., **kwargs)`` → densities ``(n, P, 1)`` in [0, 1],
            colours ``(n, P, C)``.
        termination_threshold: rays whose transmittance after a segment is ``<=`` this are
            not evaluated further.
        segment_size: points per ray per segment (:func:`segment_bounds`).

    Returns:
        densities ``(n_rays, n_pts_per_ray, 1)`` and colours ``(n_rays, n_pts_per_ray, C)``
        (0 at the points not evaluated), and the number of points evaluated (look-ahead
        points included).
    """
    lengths = ray_bundle.lengths
    n_rays, n_pts = lengths.shape
    alive = torch.arange(n_rays, device=lengths.device)
    trans = lengths.new_ones(n_rays)
    densities = colors = None
    n_evaluated = 0
    for start, stop in segment_bounds(n_pts, segment_size):
        end = min(stop + 1, n_pts)  # one look-ahead point: the last point's exact spacing
        d, c = field(ray_bundle=_select(ray_bundle, alive, start, end), **kwargs)
        n_evaluated += alive.numel() * (end - start)
        d, c = d[:, : stop - start], c[:, : stop - start]
        if densities is None or colors is None:
            densities = d.new_zeros(n_rays, n_pts, 1)
            colors = c.new_zeros(n_rays, n_pts, c.shape[-1])
        densities[alive, start:stop] = d
        colors[alive, start:stop] = c
        t_alive = trans[alive] * torch.prod(1.0 - d[..., 0].to(trans.dtype), dim=-1)
        trans[alive] = t_alive
        alive = alive[t_alive > termination_threshold]
        if alive.numel() == 0:
            break
    assert densities is not None and colors is not None
    return densities, colors, n_evaluated


def march_in_segments(
    ray_bundle: RayBundle,
    field: FieldFn,
    raymarcher: Any,
    termination_threshold: float,
    segment_size: int,
    **kwargs: Any,
) -> RenderOutput:
    """Raymarch a flat bundle (lengths ``(n_rays, n_pts_per_ray)``) with early termination:
    :func:`evaluate_in_segments`, then ``raymarcher.march`` on the whole bundle.

    Returns:
        :class:`RenderOutput` of ``n_rays`` rays, within ``termination_threshold`` of the
        unsegmented render (see the module docstring).
    """
    densities, colors, _ = evaluate_in_segments(
        ray_bundle, field, termination_threshold, segment_size, **kwargs
    )
    return raymarcher.march(densities, colors, ray_bundle)


def _scatter_rays(
    n_rays: int, parts: list[tuple[torch.Tensor, torch.Tensor]], template: torch.Tensor
) -> torch.Tensor:
    out = template.new_zeros(n_rays, *template.shape[1:])
    for index, values in parts:
        out = out.index_copy(0, index, values.to(out.dtype))
    return out


def march_active_rays(
    ray_bundle: RayBundle,
    active: torch.Tensor,
    march: Callable[[RayBundle], RenderOutput],
    raymarcher: Any,
    n_channels: int = 3,
) -> RenderOutput:
    """Render only the active rays of a flat bundle; the others are empty.

    Args:
        ray_bundle: flat bundle, lengths ``(n_rays, n_pts_per_ray)``.
        active: ``(n_rays,)`` or ``(n_rays, 1)``, true (non-zero) for rays to evaluate.
        march: renders a flat sub-bundle into a :class:`RenderOutput` (the field and the
            raymarcher).
        raymarcher: its result for zero densities is the inactive rays' one (the
            background colour, opacity 0, weights 0;
            :func:`~nerf_lab.raymarchers.march_empty`).
        n_channels: feature channels of the empty result when no ray is active (the field
            contract's 3 colours).

    Returns:
        :class:`RenderOutput` of ``n_rays`` rays (no ``passes``, no ``aux``).
    """
    lengths = ray_bundle.lengths
    n_rays, n_pts = lengths.shape
    mask = active.reshape(n_rays) != 0
    on = mask.nonzero()[:, 0]
    off = (~mask).nonzero()[:, 0]
    parts: list[tuple[torch.Tensor, RenderOutput]] = []
    if on.numel() > 0:
        parts.append((on, march(_select(ray_bundle, on, 0, n_pts))))
    if off.numel() == 0:
        return parts[0][1]
    if parts:
        n_channels = parts[0][1].rgb.shape[-1]
    parts.append((off, march_empty(raymarcher, _select(ray_bundle, off, 0, n_pts), n_channels)))
    if len(parts) == 1:
        return parts[0][1]
    first = parts[0][1]

    def join(get: Callable[[RenderOutput], torch.Tensor]) -> torch.Tensor:
        return _scatter_rays(n_rays, [(i, get(o)) for i, o in parts], get(first))

    return RenderOutput(
        rgb=join(lambda o: o.rgb),
        opacity=join(lambda o: o.opacity),
        depth=join(lambda o: o.depth),
        weights=join(lambda o: o.weights),
        lengths=join(lambda o: o.lengths),
    )
