"""Camera paths for videos and turntables."""

from __future__ import annotations

import torch

from nerf_lab.cameras import FoVPerspectiveCameras, so3_exp_map


def turntable_cameras(
    n_frames: int, like: FoVPerspectiveCameras, distance: float = 2.7
) -> FoVPerspectiveCameras:
    """The tutorial's rotating cameras: a turn about +Y at ``distance`` from the origin.

    Intrinsics (znear, zfar, aspect ratio, fov) are taken from ``like[0]``.
    """
    log_rots = torch.zeros(n_frames, 3)
    log_rots[:, 1] = torch.linspace(-3.14, 3.14, n_frames)
    Rs = so3_exp_map(log_rots)
    Ts = torch.zeros(n_frames, 3)
    Ts[:, 2] = distance
    return FoVPerspectiveCameras(
        R=Rs,
        T=Ts,
        znear=like.znear[0].item(),
        zfar=like.zfar[0].item(),
        aspect_ratio=like.aspect_ratio[0].item(),
        fov=like.fov[0].item(),
        degrees=like.degrees,
        device=like.device,
    )
