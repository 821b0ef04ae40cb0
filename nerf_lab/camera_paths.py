"""Camera paths for videos and turntables."""

from __future__ import annotations

from typing import Any

import torch

from nerf_lab.cameras import so3_exp_map


def turntable_cameras(n_frames: int, like: Any, distance: float = 2.7) -> Any:
    """The tutorial's rotating cameras: a turn about +Y at ``distance`` from the origin.

    Args:
        n_frames: number of cameras.
        like: cameras of any type; the intrinsics of ``like[0]`` are kept (FoV, znear,
            zfar, aspect ratio; or focal length, principal point, image size).

    Returns:
        ``n_frames`` cameras of ``like``'s type.
    """
    log_rots = torch.zeros(n_frames, 3)
    log_rots[:, 1] = torch.linspace(-3.14, 3.14, n_frames)
    Rs = so3_exp_map(log_rots)
    Ts = torch.zeros(n_frames, 3)
    Ts[:, 2] = distance
    base = like[[0] * n_frames]
    return base._replace(R=Rs.to(base.R), T=Ts.to(base.T))
