"""Rendering: raysampler → field → raymarcher, in chunks of rays, in one or more passes.

* :func:`map_ray_chunks` is the one chunking implementation: it applies a function to at
  most ``chunk_size`` rays at a time and joins the results.
* :func:`render_rays` is the one render path (training, evaluation, previews, videos and
  exports all use it, through :class:`Renderer`): it evaluates the field, raymarches into
  a structured :class:`~nerf_lab.raymarchers.RenderOutput` (rgb, opacity, depth, weights)
  and, with a resampler, runs further passes the way PyTorch3D's coarse-to-fine renderer
  does: the resampler is called as ``resampler(input_ray_bundle=..., ray_weights=...)``
  with the previous pass's bundle and weights (PyTorch3D's ``ProbabilisticRaysampler``
  protocol) and the field is evaluated again on the bundle it returns. Without autograd
  it takes the :class:`~nerf_lab.render_shortcuts.RenderShortcuts` it is given on the
  final pass (ray skipping, early ray termination), for any field.
* :class:`ImplicitRenderer` is PyTorch3D's renderer (``(images, ray_bundle)`` with the
  raymarcher's ``(..., C + 1)`` output), with optional chunking.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import torch

from nerf_lab.cameras import FoVPerspectiveCameras
from nerf_lab.hooks import TrainingHooks
from nerf_lab.raymarchers import RenderOutput
from nerf_lab.raysamplers import RayBundle
from nerf_lab.render_shortcuts import (
    ACTIVE_RAYS,
    RenderShortcuts,
    march_active_rays,
    march_in_segments,
)
from nerf_lab.validate import check_choice, invalid, is_int

VolumetricFunction = Callable[..., tuple[torch.Tensor, torch.Tensor]]


def check_chunk_size(chunk_size: Any) -> int | None:
    """``chunk_size`` if it is ``None`` or a positive int, else ``ValueError``."""
    if chunk_size is not None and not (is_int(chunk_size) and chunk_size >= 1):
        raise invalid("chunk_size", chunk_size, "a positive integer or None")
    return chunk_size


def flatten_ray_bundle(ray_bundle: RayBundle) -> RayBundle:
    """Merge the leading dimensions of a bundle into one ray dimension.

    Returns:
        RayBundle with origins/directions ``(n_rays, 3)``, lengths
        ``(n_rays, n_pts_per_ray)`` and xys ``(n_rays, 2)``.
    """
    n_pts = ray_bundle.lengths.shape[-1]
    return RayBundle(
        origins=ray_bundle.origins.reshape(-1, 3),
        directions=ray_bundle.directions.reshape(-1, 3),
        lengths=ray_bundle.lengths.reshape(-1, n_pts),
        xys=None if ray_bundle.xys is None else ray_bundle.xys.reshape(-1, 2),
    )


def slice_ray_bundle(ray_bundle: RayBundle, start: int, stop: int) -> RayBundle:
    """Rays ``start:stop`` of a flat bundle (see :func:`flatten_ray_bundle`)."""
    return RayBundle(
        origins=ray_bundle.origins[start:stop],
        directions=ray_bundle.directions[start:stop],
        lengths=ray_bundle.lengths[start:stop],
        xys=None if ray_bundle.xys is None else ray_bundle.xys[start:stop],
    )


def iter_ray_chunks(
    ray_bundle: RayBundle, chunk_size: int | None
) -> Iterator[tuple[slice, RayBundle]]:
    """``(rays slice, sub-bundle)`` for consecutive chunks of at most ``chunk_size`` rays of
    the flattened bundle (one chunk of every ray for ``None``)."""
    flat = flatten_ray_bundle(ray_bundle)
    n_rays = flat.lengths.shape[0]
    step = check_chunk_size(chunk_size) or max(n_rays, 1)
    for start in range(0, n_rays, step):
        yield slice(start, start + step), slice_ray_bundle(flat, start, start + step)


def _join(outputs: list[Any], rays_shape: torch.Size) -> Any:
    first = outputs[0]
    if isinstance(first, RenderOutput):
        return RenderOutput.cat(outputs).reshape(*rays_shape)
    if isinstance(first, tuple):
        return tuple(_join([o[i] for o in outputs], rays_shape) for i in range(len(first)))
    out = torch.cat(outputs, dim=0)
    return out.reshape(*rays_shape, *out.shape[1:])


def map_ray_chunks(
    fn: Callable[[RayBundle], Any],
    ray_bundle: RayBundle,
    chunk_size: int | None,
    should_stop: Callable[[], bool] | None = None,
) -> Any:
    """Apply ``fn`` to chunks of at most ``chunk_size`` rays and join the results.

    Args:
        fn: called with a flat sub-bundle of ``n`` rays; returns a tensor ``(n, ...)``, a
            tuple of such tensors, or a :class:`RenderOutput` of ``n`` rays.
        ray_bundle: rays with leading shape ``(*rays_shape)``.
        chunk_size: rays per call; ``None``: all rays in one call.
        should_stop: checked before each chunk; when it returns True,
            :class:`RenderInterrupted` is raised there.

    Returns:
        The same kind of result with leading shape ``(*rays_shape)``, equal to one call
        on every ray for functions that treat rays independently.
    """
    rays_shape = ray_bundle.lengths.shape[:-1]
    outputs = []
    for _, sub in iter_ray_chunks(ray_bundle, chunk_size):
        if should_stop is not None and should_stop():
            raise RenderInterrupted("render stopped: a stop was requested")
        outputs.append(fn(sub))
    return _join(outputs, rays_shape)


def chunked_volumetric_function(
    volumetric_function: VolumetricFunction,
    ray_bundle: RayBundle,
    chunk_size: int,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Evaluate ``volumetric_function`` on at most ``chunk_size`` rays at a time.

    Returns:
        densities ``(*rays_shape, n_pts_per_ray, 1)`` and features
        ``(*rays_shape, n_pts_per_ray, C)``, the same as one unchunked call.
    """
    if check_chunk_size(chunk_size) is None:
        raise ValueError("chunk_size must be a positive integer; got None.")
    return map_ray_chunks(
        lambda sub: volumetric_function(ray_bundle=sub, **kwargs), ray_bundle, chunk_size
    )


class Resampler(TrainingHooks, torch.nn.Module):
    """Optional base of a sampler that places a later pass's samples.

    Called as ``forward(input_ray_bundle, ray_weights, **kwargs)`` with the previous
    pass's bundle and its weights ``(..., n_pts_per_ray)`` (PyTorch3D's
    ``ProbabilisticRaysampler`` protocol, which plain modules follow); returns a
    :class:`RayBundle`, or ``(RayBundle, aux)`` with ``aux`` a dict of per-ray tensors
    ``(..., *)`` that end up in :attr:`RenderOutput.aux` (e.g. for a loss term).

    A subclass that places its samples without the field's weights (e.g. with proposal
    networks of its own) sets ``needs_field_weights = False``: the renderer then calls it
    with ``ray_weights=None`` and evaluates the field once.

    **Rays that need no field evaluation** (e.g. they cross no occupied cell): a resampler
    marks them with ``aux[Resampler.ACTIVE_RAYS]`` (``"active_rays"``), a ``(..., 1)``
    bool tensor, false for those rays. With
    :class:`~nerf_lab.render_shortcuts.RenderShortcuts` (``skip_inactive_rays``) and no
    autograd, :func:`render_rays` evaluates the field only on the active rays and gives
    the others the raymarcher's empty result (zero weights and opacity, the background
    colour). Rays are all active when the key is absent; training never skips.

    **A coarse pass that only places samples** (no loss term reads it): a resampler sets
    ``coarse_pass_grad = False`` and :func:`render_rays` runs the pass that feeds it
    without autograd, so in training it costs a forward only (its outputs in
    ``RenderOutput.passes`` then carry no gradient).

    **A coarse pass with its own field** (PyTorch3D ``projects/nerf`` trains a coarse and
    a fine network): :meth:`coarse_pass_field` returns the module that
    :class:`Renderer` evaluates in the pass feeding this resampler; ``None`` (the default)
    means the renderer's field.
    """

    needs_field_weights: ClassVar[bool] = True
    #: Whether the field pass feeding this resampler records autograd (see above).
    coarse_pass_grad: bool = True
    #: The aux key marking the rays that need a field evaluation (see above).
    ACTIVE_RAYS: ClassVar[str] = ACTIVE_RAYS

    def coarse_pass_field(self) -> torch.nn.Module | None:
        """The field of the pass that feeds this resampler; ``None``: the renderer's."""
        return None

    def bind_field(self, field: torch.nn.Module) -> None:
        """Called once by :class:`Renderer` with the field it renders (e.g. for a sampler
        that queries the field's density itself); default: nothing."""
        return None


def render_rays(
    ray_bundle: RayBundle,
    field: VolumetricFunction,
    raymarcher: Any,
    resampler: Callable[..., Any] | None = None,
    shortcuts: RenderShortcuts | None = None,
    coarse_field: VolumetricFunction | None = None,
    **kwargs: Any,
) -> RenderOutput:
    """Render rays: evaluate the field, raymarch; with a resampler, one more pass.

    Args:
        ray_bundle: rays of leading shape ``(...)`` with ``n_pts_per_ray`` samples.
        field: ``field(ray_bundle=..., **kwargs)`` → densities ``(..., n_pts_per_ray, 1)``,
            colours ``(..., n_pts_per_ray, C)``.
        raymarcher: has ``march(rays_densities, rays_features, ray_bundle)`` →
            :class:`RenderOutput` (e.g. ``EmissionAbsorptionRaymarcher``).
        resampler: optional; see :class:`Resampler`.
        shortcuts: optional evaluation shortcuts, taken on the final pass only and only
            without autograd (``torch.is_grad_enabled()`` false): the field is evaluated
            on the rays the resampler marks active (``aux[Resampler.ACTIVE_RAYS]``) and in
            segments with early ray termination
            (:mod:`nerf_lab.render_shortcuts`; colours and opacity within
            ``termination_threshold`` of the full render). ``None``: the full render.
        coarse_field: evaluated instead of ``field`` in the pass that feeds the resampler
            (same contract); ``None``: ``field``.
        **kwargs: passed to the field and the resampler.

    Returns:
        The final pass's :class:`RenderOutput` (leading shape ``(...)``) with the earlier
        passes in ``passes``.
    """

    def march(bundle: RayBundle, fn: VolumetricFunction = field) -> RenderOutput:
        densities, colors = fn(ray_bundle=bundle, **kwargs)
        return raymarcher.march(densities, colors, bundle)

    def march_final(bundle: RayBundle, aux: dict[str, torch.Tensor]) -> RenderOutput:
        if shortcuts is None or torch.is_grad_enabled():
            return march(bundle)
        sc = shortcuts

        def one(flat: RayBundle) -> RenderOutput:
            if not sc.terminates:
                return march(flat)
            return march_in_segments(flat, field, raymarcher, sc.termination_threshold,
                                     sc.segment_size, **kwargs)  # fmt: skip

        active = aux.get(ACTIVE_RAYS) if sc.skip_inactive_rays else None
        if active is None and not sc.terminates:
            return march(bundle)
        flat = flatten_ray_bundle(bundle)
        out = one(flat) if active is None else march_active_rays(flat, active, one, raymarcher)
        return out.reshape(*bundle.lengths.shape[:-1])

    if resampler is None:
        return march_final(ray_bundle, {})
    passes: list[RenderOutput] = []
    weights = None
    if not isinstance(resampler, Resampler) or resampler.needs_field_weights:
        grad = not isinstance(resampler, Resampler) or resampler.coarse_pass_grad
        with torch.set_grad_enabled(torch.is_grad_enabled() and grad):
            first = march(ray_bundle, field if coarse_field is None else coarse_field)
        passes.append(first)
        weights = first.weights
    result = resampler(input_ray_bundle=ray_bundle, ray_weights=weights, **kwargs)
    bundle, aux = (result, {}) if isinstance(result, RayBundle) else result
    out = march_final(bundle, aux)
    out.passes = passes
    out.aux = dict(aux)
    return out


class Renderer(torch.nn.Module):
    """The one render path of nerf_lab: a field, a raymarcher, an optional resampler.

    Holds the trainable parts (the field and the resampler, so ``state_dict`` has both)
    and evaluates the field under the run's precision (autocast; outputs cast back to
    fp32 before raymarching).

    Args:
        field: ``forward(ray_bundle) → (densities, colors)`` (the tutorial's contract).
        raymarcher: e.g. :class:`~nerf_lab.raymarchers.EmissionAbsorptionRaymarcher`.
        resampler: optional later-pass sampler (see :class:`Resampler`).
        precision: ``"fp32"``, ``"bf16"`` or ``"fp16"`` (autocast of the field).
        chunk_size: default rays per evaluation in :meth:`render`; ``None``: all at once.
        shortcuts: evaluation shortcuts (ray skipping, early ray termination) taken by
            renders without autograd (see :func:`render_rays`); ``None``: full renders.
            A plain attribute: set ``renderer.shortcuts = None`` for the exact render.
    """

    PRECISIONS = ("fp32", "bf16", "fp16")

    def __init__(
        self,
        field: torch.nn.Module,
        raymarcher: Any,
        resampler: torch.nn.Module | None = None,
        precision: str = "fp32",
        chunk_size: int | None = None,
        shortcuts: RenderShortcuts | None = None,
    ) -> None:
        super().__init__()
        if shortcuts is not None and not isinstance(shortcuts, RenderShortcuts):
            raise ValueError(
                f"shortcuts must be a RenderShortcuts or None; got {type(shortcuts).__name__}."
            )
        check_choice("precision", precision, self.PRECISIONS)
        self.field = field
        self.raymarcher = raymarcher
        self.resampler = resampler
        if isinstance(resampler, Resampler):
            resampler.bind_field(field)
        self.precision = precision
        self.chunk_size = check_chunk_size(chunk_size)
        self.shortcuts = shortcuts

    def _autocast(self, device: torch.device) -> Any:
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(device_type=device.type, dtype=dtype)

    def evaluate_field(
        self, ray_bundle: RayBundle, module: torch.nn.Module | None = None, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The densities ``(..., n_pts_per_ray, 1)`` and colours ``(..., n_pts_per_ray, C)``
        of the field ``module`` (default: the renderer's) under the run's precision, in fp32."""
        with self._autocast(ray_bundle.lengths.device):
            densities, colors = (self.field if module is None else module)(
                ray_bundle=ray_bundle, **kwargs
            )
        return densities.float(), colors.float()

    def _coarse_evaluator(self) -> VolumetricFunction | None:
        coarse = (
            self.resampler.coarse_pass_field() if isinstance(self.resampler, Resampler) else None
        )
        if coarse is None:
            return None
        return lambda ray_bundle, **kwargs: self.evaluate_field(ray_bundle, coarse, **kwargs)

    def render(
        self,
        ray_bundle: RayBundle,
        chunk_size: int | None = None,
        should_stop: Callable[[], bool] | None = None,
        **kwargs: Any,
    ) -> RenderOutput:
        """Render rays of leading shape ``(...)``, ``chunk_size`` rays at a time
        (default: the renderer's); returns a :class:`RenderOutput` of shape ``(...)``.
        ``should_stop`` is checked before each chunk (see :func:`map_ray_chunks`)."""
        chunk = self.chunk_size if chunk_size is None else check_chunk_size(chunk_size)
        coarse = self._coarse_evaluator()
        return map_ray_chunks(
            lambda sub: render_rays(
                sub,
                self.evaluate_field,
                self.raymarcher,
                self.resampler,
                self.shortcuts,
                coarse,
                **kwargs,
            ),
            ray_bundle,
            chunk,
            should_stop,
        )

    def render_views(
        self,
        cameras: FoVPerspectiveCameras,
        raysampler: Callable[..., RayBundle],
        chunk_size: int | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> RenderOutput:
        """Full-image renders, one camera at a time, without autograd, in eval mode.

        Args:
            cameras: ``n_views`` cameras.
            raysampler: a grid sampler, ``raysampler(cameras=...)`` → bundle
                ``(1, H, W, n_pts_per_ray)`` per camera.
            should_stop: checked between chunks of rays; when it returns True the render
                stops early with :class:`RenderInterrupted`.

        Returns:
            :class:`RenderOutput` with leading shape ``(n_views, H, W)``.
        """
        was_training = self.training
        self.eval()
        try:
            outs = []
            with torch.no_grad():
                for i in range(len(cameras)):
                    bundle = raysampler(cameras=cameras[[i]])
                    outs.append(self.render(bundle, chunk_size, should_stop))
        finally:
            self.train(was_training)
        return RenderOutput.cat(outs)


class RenderInterrupted(RuntimeError):
    """A long render stopped early because a stop was requested (e.g. a signal)."""


class ImplicitRenderer(torch.nn.Module):
    """PyTorch3D's ``ImplicitRenderer`` with optional chunked evaluation.

    Args:
        raysampler: called as ``raysampler(cameras=..., **kwargs)`` → RayBundle.
        raymarcher: called as ``raymarcher(rays_densities=..., rays_features=..., ...)``.
        chunk_size: if set, evaluate the volumetric function on at most this many rays at
            a time (bounded memory for full images); ``None`` is PyTorch3D's behaviour.

    ``forward(cameras, volumetric_function, **kwargs)`` returns ``(images, ray_bundle)``
    where ``images`` has shape ``(*rays_shape, C_out)`` (e.g. ``(batch, image_height,
    image_width, C + 1)`` for a grid sampler) and ``volumetric_function(ray_bundle=...,
    cameras=..., **kwargs)`` returns densities ``(*rays_shape, n_pts_per_ray, 1)`` and
    features ``(*rays_shape, n_pts_per_ray, C)``. As in PyTorch3D, ``**kwargs`` also
    reach the raysampler (how a coarse-to-fine sampler receives the coarse pass).
    """

    def __init__(
        self,
        raysampler: Callable[..., RayBundle],
        raymarcher: Callable[..., torch.Tensor],
        chunk_size: int | None = None,
    ) -> None:
        super().__init__()
        if not callable(raysampler) or not callable(raymarcher):
            raise ValueError("raysampler and raymarcher must be callable.")
        self.raysampler = raysampler
        self.raymarcher = raymarcher
        self.chunk_size = check_chunk_size(chunk_size)

    def forward(
        self,
        cameras: FoVPerspectiveCameras,
        volumetric_function: VolumetricFunction,
        chunk_size: int | None = None,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, RayBundle]:
        if not callable(volumetric_function):
            raise ValueError('"volumetric_function" has to be a "Callable" object.')
        ray_bundle = self.raysampler(
            cameras=cameras, volumetric_function=volumetric_function, **kwargs
        )

        def march(sub: RayBundle) -> torch.Tensor:
            densities, features = volumetric_function(ray_bundle=sub, cameras=cameras, **kwargs)
            return self.raymarcher(
                rays_densities=densities, rays_features=features, ray_bundle=sub, **kwargs
            )

        chunk = self.chunk_size if chunk_size is None else check_chunk_size(chunk_size)
        if chunk is None:  # PyTorch3D's behaviour: every ray at once, shapes as given
            return march(ray_bundle), ray_bundle
        return map_ray_chunks(march, ray_bundle, chunk), ray_bundle
