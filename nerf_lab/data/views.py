"""Camera layouts for generated scenes: orbits, held-out views between training views."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from nerf_lab.cameras import FoVPerspectiveCameras, look_at_view_transform


def orbit_cameras(
    azimuths: torch.Tensor,
    elevations: torch.Tensor,
    distance: float,
    fov: float = 60.0,
    znear: float = 1.0,
    zfar: float = 100.0,
) -> FoVPerspectiveCameras:
    """Cameras on a sphere of radius ``distance`` looking at the origin (+Y up).

    Args:
        azimuths: ``(n_views,)`` degrees, 0 on the +Z axis.
        elevations: ``(n_views,)`` degrees above the XZ plane.
        distance: sphere radius.
        fov: field of view in degrees (of the shorter image side).
        znear, zfar: clipping planes carried by the cameras.

    Returns:
        ``n_views`` cameras.
    """
    R, T = look_at_view_transform(dist=distance, elev=elevations, azim=azimuths)
    return FoVPerspectiveCameras(znear=znear, zfar=zfar, fov=fov, R=R, T=T)


def evenly_spaced(n_total: int, k: int) -> torch.Tensor:
    """``k`` indices spread evenly over ``range(n_total)`` (first and last included when k > 1)."""
    if k <= 0:
        return torch.zeros(0, dtype=torch.long)
    if k > n_total:
        raise ValueError(f"Cannot pick {k} of {n_total} items.")
    if k == 1:
        return torch.tensor([n_total // 2])
    return torch.linspace(0, n_total - 1, k).round().long()


def held_out_interior(n_views: int, n_test: int) -> torch.Tensor:
    """``n_test`` evenly spread, pairwise non-adjacent indices in ``[1, n_views - 2]``.

    Every such view lies between two training neighbours (its azimuth is their midpoint on a
    uniform orbit), and the first/last views, which coincide on a full 360-degree orbit, are
    never held out.
    """
    if n_test < 1:
        raise ValueError(f"n_test_views must be >= 1; got {n_test}.")
    n_interior = n_views - 2
    max_test = (n_interior + 1) // 2
    if n_test > max_test:
        raise ValueError(
            f"n_test_views={n_test} is too many for num_views={n_views}: at most {max_test} "
            "non-adjacent interior views can be held out."
        )
    if n_test == 1:
        return torch.tensor([n_views // 2])
    idx = 1 + torch.linspace(0, n_interior - 1, n_test).round().long()
    return idx


def orbit_layout(
    num_views: int,
    n_test_views: int,
    azimuth_range: float,
    elevation_range: Sequence[float],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Training views on an orbit and test views half-way between consecutive training views.

    Training azimuths cover ``[-azimuth_range, azimuth_range]`` (a full circle without the
    duplicate end point when ``azimuth_range >= 180``) and elevations rise linearly over
    ``elevation_range`` (a spiral). Test views are midpoints (azimuth and elevation) of
    ``n_test_views`` evenly chosen consecutive training pairs.

    Returns:
        ``train_azim, train_elev`` of shape ``(num_views,)`` and ``test_azim, test_elev`` of
        shape ``(n_test_views,)``, in degrees.
    """
    if num_views < 2:
        raise ValueError(f"num_views must be >= 2; got {num_views}.")
    if n_test_views < 1 or n_test_views > num_views - 1:
        raise ValueError(f"n_test_views must be in [1, {num_views - 1}]; got {n_test_views}.")
    if not 0 < azimuth_range <= 180:
        raise ValueError(f"azimuth_range must be in (0, 180]; got {azimuth_range}.")
    if len(elevation_range) != 2:
        raise ValueError(f"elevation_range must be (min, max); got {elevation_range!r}.")
    lo, hi = float(elevation_range[0]), float(elevation_range[1])
    if not -90 < lo <= hi < 90:
        raise ValueError(f"elevation_range must satisfy -90 < min <= max < 90; got {(lo, hi)}.")
    if azimuth_range >= 180:
        azim = -180.0 + 360.0 * torch.arange(num_views, dtype=torch.float32) / num_views
    else:
        azim = torch.linspace(-azimuth_range, azimuth_range, num_views)
    elev = torch.linspace(lo, hi, num_views)
    pairs = evenly_spaced(num_views - 1, n_test_views)
    test_azim = 0.5 * (azim[pairs] + azim[pairs + 1])
    test_elev = 0.5 * (elev[pairs] + elev[pairs + 1])
    return azim, elev, test_azim, test_elev


def parse_background(background: str | Sequence[float]) -> tuple[float, float, float]:
    """``"black"``, ``"white"`` or three floats in [0, 1] -> an RGB tuple."""
    if isinstance(background, str):
        named = {"black": (0.0, 0.0, 0.0), "white": (1.0, 1.0, 1.0)}
        if background not in named:
            raise ValueError(
                f"background must be 'black', 'white' or 3 floats; got {background!r}."
            )
        return named[background]
    values = tuple(float(c) for c in background)
    if len(values) != 3 or not all(0.0 <= c <= 1.0 for c in values):
        raise ValueError(f"background must be 3 floats in [0, 1]; got {background!r}.")
    return values  # type: ignore[return-value]
