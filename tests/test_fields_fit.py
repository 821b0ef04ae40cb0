"""Short fits: each new field raises the held-out PSNR of the tiny procedural scene.

Public API only: ``ImplicitRenderer`` + ``NDCMultinomialRaysampler`` + the
emission-absorption raymarcher, Adam over ``nerf_lab.hooks.param_groups`` (lr x lr_scale)
and the fields' ``nerf_lab.hooks.loss_terms``.
"""

from __future__ import annotations

import pytest
import torch

from nerf_lab import hooks
from nerf_lab.data import procedural_scene
from nerf_lab.metrics import psnr
from nerf_lab.models import KPlanesField, NeRFFullField, NGPField
from nerf_lab.raymarchers import EmissionAbsorptionRaymarcher
from nerf_lab.raysamplers import NDCMultinomialRaysampler
from nerf_lab.renderer import ImplicitRenderer

SIZE, N_PTS, DEPTHS = 24, 32, (1.0, 3.4)


def pixel_targets(images: torch.Tensor, xys: torch.Tensor) -> torch.Tensor:
    """The pixel each ray went through (square images, PyTorch3D NDC: +X left, +Y up).

    ``images (batch, H, W, 3)``, ``xys (batch, ..., 2)`` -> ``(batch, n_rays, 3)``."""
    xys = xys.reshape(xys.shape[0], -1, 2)
    col = ((1.0 - xys[..., 0]) * (SIZE / 2)).floor().long().clamp(0, SIZE - 1)
    row = ((1.0 - xys[..., 1]) * (SIZE / 2)).floor().long().clamp(0, SIZE - 1)
    return images[torch.arange(images.shape[0])[:, None], row, col]


def heldout_psnr(model: torch.nn.Module, cameras, images) -> float:
    sampler = NDCMultinomialRaysampler(image_width=SIZE, image_height=SIZE, n_pts_per_ray=N_PTS,
                                       min_depth=DEPTHS[0], max_depth=DEPTHS[1])  # fmt: skip
    renderer = ImplicitRenderer(sampler, EmissionAbsorptionRaymarcher(), chunk_size=4096)
    model.eval()
    with torch.no_grad():
        rendered = renderer(cameras=cameras, volumetric_function=model)[0]
    model.train()
    return float(psnr(rendered[..., :3], images).mean())


def fit(model: torch.nn.Module, steps: int, lr: float, rays: int) -> tuple[float, float]:
    """Held-out PSNR before and after ``steps`` Adam steps on 2 views x ``rays`` rays."""
    scene = procedural_scene(image_size=SIZE, num_views=8, n_test_views=2)
    cams, images, _ = scene.split("train")
    test_cams, test_images, _ = scene.split("test")
    sampler = NDCMultinomialRaysampler(image_width=SIZE, image_height=SIZE, n_pts_per_ray=N_PTS,
                                       min_depth=DEPTHS[0], max_depth=DEPTHS[1],
                                       n_rays_per_image=rays, stratified_sampling=True)  # fmt: skip
    renderer = ImplicitRenderer(sampler, EmissionAbsorptionRaymarcher())
    groups = hooks.param_groups(model)
    opt = torch.optim.Adam([{"params": g["params"], "lr": lr * g["lr_scale"]} for g in groups])
    before = heldout_psnr(model, test_cams, test_images)
    for step in range(steps):
        idx = [step % len(cams), (step + 3) % len(cams)]
        rendered, bundle = renderer(cameras=cams[idx], volumetric_function=model)
        colors = rendered[..., :3].reshape(len(idx), -1, 3)
        loss = (colors - pixel_targets(images[idx], bundle.xys)).square().mean()
        loss = loss + sum(hooks.loss_terms(model).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
    return before, heldout_psnr(model, test_cams, test_images)


FITS = {
    # A narrower PyTorch3D NeRF (the default 8 x 256 takes minutes per fit on a CPU).
    "nerf_full": (lambda: NeRFFullField(n_harmonic_functions_xyz=6, n_hidden_neurons_xyz=64,
                                        n_hidden_neurons_dir=32, n_layers_xyz=4,
                                        append_xyz=(2,)), 40, 2e-3, 128),
    "ngp": (lambda: NGPField(n_levels=8, log2_hashmap_size=14, base_resolution=4,
                             max_resolution=64, table_lr_scale=5.0), 40, 1e-2, 256),
    "kplanes": (lambda: KPlanesField(resolution=16, multiscale=(1, 2), n_features=8,
                                     tv_weight=1e-3, plane_lr_scale=5.0), 40, 1e-2, 256),
}  # fmt: skip


@pytest.mark.parametrize("name", list(FITS))
def test_short_fit_raises_heldout_psnr(name):
    make, steps, lr, rays = FITS[name]
    before, after = fit(make(), steps, lr, rays)
    assert after > before + 3.0, (before, after)
