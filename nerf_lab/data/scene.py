"""The multi-view dataset every scene builder returns, and the error raised for bad data."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch

from nerf_lab.cameras import CamerasBase
from nerf_lab.ndc import NDCSpace
from nerf_lab.validate import is_number

REQUIRED_SPLITS = ("train", "test")


class SceneValidationError(ValueError):
    """Bad scene data, with every problem found listed (not only the first).

    Attributes:
        problems: one human-readable line per bad item.
    """

    def __init__(self, problems: Sequence[str], what: str = "scene data") -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"Invalid {what} ({len(self.problems)} problem(s)):\n{lines}")


def raise_if_problems(problems: Sequence[str], what: str = "scene data") -> None:
    """Raise :class:`SceneValidationError` listing ``problems`` if there are any."""
    if problems:
        raise SceneValidationError(problems, what)


@dataclass(eq=False)
class Scene:
    """A multi-view dataset: cameras, RGB images and (optionally) silhouettes of ``n_views`` views.

    Attributes:
        name: a short name of the scene (used in logs and file names).
        cameras: ``n_views`` cameras (PyTorch3D conventions): ``FoVPerspectiveCameras`` or
            ``PerspectiveCameras``.
        images: ``(n_views, H, W, 3)`` float32 RGB in ``[0, 1]``.
        silhouettes: ``(n_views, H, W)`` float32 in ``{0, 1}``, or ``None`` when the scene
            has no masks (real captures): no silhouette supervision is possible then.
        splits: split name -> LongTensor of view indices into ``n_views``; ``"train"`` and
            ``"test"`` always exist, ``"val"`` and ``"test_elevated"`` may.
        background_color: RGB colour of the empty background in ``images``.
        near, far: a depth range, in the cameras' view-space z-depth units (the ``lengths`` of
            rays whose directions have view-space z = 1), that covers the content seen by
            every view; ``None`` when unknown. Raysamplers can sample ``[near, far]``.
        world_transform: ``(4, 4)`` float64 similarity mapping the capture's own frame to the
            scene's (normalised) frame, for column vectors: ``p_scene = M @ [p_capture, 1]``;
            ``None`` for scenes generated in their own frame. Its inverse maps renders and
            exports back to the capture frame.
        ndc: for forward-facing captures loaded with NDC rays (``data=llff data.ndc=true``):
            the NDC space (:class:`~nerf_lab.ndc.NDCSpace`, in the scene's frame) in which
            the scene is to be sampled and fitted; ``None``: ordinary world-space rays.
    """

    name: str
    cameras: CamerasBase
    images: torch.Tensor
    silhouettes: torch.Tensor | None
    splits: dict[str, torch.Tensor]
    background_color: tuple[float, float, float] = (0.0, 0.0, 0.0)
    near: float | None = None
    far: float | None = None
    world_transform: torch.Tensor | None = None
    ndc: NDCSpace | None = None

    def __post_init__(self) -> None:
        images, sil = self.images, self.silhouettes
        if images.dim() != 4 or images.shape[-1] != 3:
            raise ValueError(
                f"images must have shape (n_views, H, W, 3); got {tuple(images.shape)}."
            )
        if sil is not None and sil.shape != images.shape[:3]:
            raise ValueError(
                f"silhouettes must have shape {tuple(images.shape[:3])} (n_views, H, W) or be "
                f"None; got {tuple(sil.shape)}."
            )
        if len(self.cameras) != images.shape[0]:
            raise ValueError(
                f"Got {len(self.cameras)} cameras for {images.shape[0]} images; they must match."
            )
        if images.dtype != torch.float32 or (sil is not None and sil.dtype != torch.float32):
            raise ValueError(
                "images and silhouettes must be float32; got "
                f"{images.dtype} and {None if sil is None else sil.dtype}."
            )
        self.near, self.far = _check_depth_range(self.near, self.far)
        if self.world_transform is not None:
            m = torch.as_tensor(self.world_transform, dtype=torch.float64).cpu()
            if m.shape != (4, 4) or not bool(torch.isfinite(m).all()):
                raise ValueError(
                    f"world_transform must be a finite (4, 4) matrix; got {tuple(m.shape)}."
                )
            if not torch.allclose(m[3], torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=m.dtype)):
                raise ValueError(f"world_transform's last row must be [0, 0, 0, 1]; got {m[3]}.")
            self.world_transform = m
        if self.ndc is not None and not isinstance(self.ndc, NDCSpace):
            raise ValueError(f"ndc must be an NDCSpace or None; got {self.ndc!r}.")
        missing = [s for s in REQUIRED_SPLITS if s not in self.splits]
        if missing:
            raise ValueError(
                f"Scene splits must include {list(REQUIRED_SPLITS)}; missing {missing} "
                f"(got {sorted(self.splits)})."
            )
        n = images.shape[0]
        splits = {}
        for name, idx in self.splits.items():
            idx = torch.as_tensor(idx, dtype=torch.long).reshape(-1).cpu()
            if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= n):
                raise ValueError(f"Split {name!r} has indices outside [0, {n}): {idx.tolist()}.")
            splits[name] = idx
        self.splits = splits
        self.background_color = tuple(float(c) for c in self.background_color)  # type: ignore[assignment]

    # -- basic properties ---------------------------------------------------------------
    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def image_size(self) -> tuple[int, int]:
        """``(H, W)`` of every image."""
        return int(self.images.shape[1]), int(self.images.shape[2])

    @property
    def device(self) -> torch.device:
        return self.images.device

    @property
    def split_names(self) -> list[str]:
        return list(self.splits)

    @property
    def has_silhouettes(self) -> bool:
        """Whether the scene has silhouettes (masks)."""
        return self.silhouettes is not None

    def split(self, name: str) -> tuple[CamerasBase, torch.Tensor, torch.Tensor | None]:
        """Cameras, images and silhouettes of one split.

        Args:
            name: a key of ``splits`` (e.g. ``"train"``, ``"test"``).

        Returns:
            ``(cameras, images (n_split, H, W, 3), silhouettes (n_split, H, W) or None)``.
        """
        if name not in self.splits:
            raise KeyError(
                f"Scene {self.name!r} has no split {name!r}; available splits: {list(self.splits)}."
            )
        idx = self.splits[name]
        idx_dev = idx.to(self.images.device)
        sil = None if self.silhouettes is None else self.silhouettes[idx_dev]
        return self.cameras[idx_dev], self.images[idx_dev], sil

    def to(self, device: str | torch.device) -> Scene:
        """A copy of the scene with cameras, images and silhouettes on ``device``."""
        return Scene(
            name=self.name,
            cameras=self.cameras.clone().to(device),
            images=self.images.to(device),
            silhouettes=None if self.silhouettes is None else self.silhouettes.to(device),
            splits={k: v.clone() for k, v in self.splits.items()},
            background_color=self.background_color,
            near=self.near,
            far=self.far,
            world_transform=self.world_transform,
            ndc=self.ndc,
        )

    def __repr__(self) -> str:
        sizes = {k: int(v.numel()) for k, v in self.splits.items()}
        return (
            f"Scene(name={self.name!r}, n_views={len(self)}, image_size={self.image_size}, "
            f"splits={sizes}, silhouettes={self.has_silhouettes}, near={self.near}, "
            f"far={self.far}, background_color={self.background_color}"
            + ("" if self.ndc is None else f", ndc={self.ndc}")
            + ")"
        )


def _check_depth_range(near: float | None, far: float | None) -> tuple[float | None, float | None]:
    """Validate a scene's ``near`` / ``far``: each None or finite, ``0 < near < far``."""
    values = []
    for label, v in (("near", near), ("far", far)):
        if v is None:
            values.append(None)
            continue
        if not is_number(v):
            raise ValueError(f"Scene {label} must be a finite number or None; got {v!r}.")
        values.append(float(v))
    lo, hi = values
    if lo is not None and not lo > 0:
        raise ValueError(f"Scene near must be > 0; got {lo!r}.")
    if lo is not None and hi is not None and not lo < hi:
        raise ValueError(f"Scene near must be < far; got near={lo!r}, far={hi!r}.")
    return lo, hi


def concat_cameras(cameras: Iterable[CamerasBase]) -> CamerasBase:
    """Concatenate batches of cameras of one type.

    ``FoVPerspectiveCameras`` must share ``degrees``; ``PerspectiveCameras`` must share
    ``in_ndc`` and either all carry an ``image_size`` or none.
    """
    cams = list(cameras)
    if not cams:
        raise ValueError("concat_cameras needs at least one batch of cameras.")
    kind = type(cams[0])
    if any(type(c) is not kind for c in cams):
        names = sorted({type(c).__name__ for c in cams})
        raise ValueError(f"concat_cameras needs cameras of one type; got {names}.")
    shared = [c._shared_kwargs() for c in cams]
    if any(sh != shared[0] for sh in shared):
        raise ValueError(f"concat_cameras: cameras disagree on {shared[0]} vs {shared}.")
    kwargs = {}
    for f in kind._FIELDS:
        values = [getattr(c, f) for c in cams]
        if all(v is None for v in values):
            continue
        if any(v is None for v in values):
            raise ValueError(f"concat_cameras: some cameras have {f}, others do not.")
        kwargs[f] = torch.cat([v.to(cams[0].device) for v in values])
    return kind(device=cams[0].device, **shared[0], **kwargs)
