"""Time the fields of ``conf/model`` on a training step, and the hash encoding alone.

    python scripts/bench_fields.py [--fields nerf_full ngp kplanes] [--threads 1]
        [--rays 512] [--cameras 4] [--points 64] [--warmup 2] [--iters 5]
        [--encoding-points 262144] [--fit-steps 0] [--lr 3e-3] [model.key=value ...]

For each field (built from its YAML, ``model.key=value`` overrides applied to every
field that has the key) it times a training step: ``--cameras`` views of the procedural
scene (64 px) x ``--rays`` Monte Carlo rays x ``--points`` stratified points over depths
1-4, the emission-absorption raymarcher, an MSE loss plus the field's ``loss_terms()``,
backward, and a fused Adam step over ``nerf_lab.hooks.param_groups`` (lr x lr_scale). It
prints one JSON line per field (``step_s_median``, ``step_s_min``, ``points_per_s``,
parameters). ``--encoding-points N`` also times the multiresolution hash encoding of the
``ngp`` YAML alone (forward + backward of N random points; ``points_per_s``).
``--fit-steps N`` trains each field N steps and adds the held-out PSNR before and after
(``psnr_0``, ``psnr``) and the training time.

A measurement, not a test: nothing here asserts on time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch
import yaml
from hydra.utils import instantiate
from omegaconf import OmegaConf

from nerf_lab import hooks
from nerf_lab.data import procedural_scene
from nerf_lab.metrics import psnr
from nerf_lab.perf import tune_malloc
from nerf_lab.raymarchers import EmissionAbsorptionRaymarcher
from nerf_lab.raysamplers import MonteCarloRaysampler, NDCMultinomialRaysampler
from nerf_lab.renderer import ImplicitRenderer

CONF = Path(__file__).resolve().parents[1] / "conf" / "model"


def build_field(name: str, overrides: dict[str, Any]) -> torch.nn.Module:
    cfg = OmegaConf.load(CONF / f"{name}.yaml")
    for key, value in overrides.items():
        if key in cfg:
            cfg[key] = value
    return instantiate(cfg)


def make_optimizer(model: torch.nn.Module, lr: float) -> torch.optim.Optimizer:
    groups = hooks.param_groups(model)
    return torch.optim.Adam(
        [{"params": g["params"], "lr": lr * g["lr_scale"]} for g in groups], fused=True
    )


def pixel_targets(images: torch.Tensor, xys: torch.Tensor) -> torch.Tensor:
    """The pixel each ray went through, square images: ``(batch, n_rays, 3)``."""
    size = images.shape[1]
    col = ((1.0 - xys[..., 0]) * (size / 2)).floor().long().clamp(0, size - 1)
    row = ((1.0 - xys[..., 1]) * (size / 2)).floor().long().clamp(0, size - 1)
    return images[torch.arange(images.shape[0])[:, None], row, col]


def heldout_psnr(model, scene, n_points: int) -> float:
    cams, images, _ = scene.split("test")
    size = images.shape[1]
    sampler = NDCMultinomialRaysampler(
        image_width=size, image_height=size, n_pts_per_ray=n_points, min_depth=1.0, max_depth=4.0
    )
    renderer = ImplicitRenderer(sampler, EmissionAbsorptionRaymarcher(), chunk_size=2048)
    model.eval()
    with torch.no_grad():
        out = torch.cat([renderer(cameras=cams[[i]], volumetric_function=model)[0]
                         for i in range(len(cams))])  # fmt: skip
    model.train()
    return float(psnr(out[..., :3], images).mean())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--fields", nargs="+", default=["nerf_full", "ngp", "kplanes"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rays", type=int, default=512)
    parser.add_argument("--cameras", type=int, default=4)
    parser.add_argument("--points", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--encoding-points", type=int, default=0)
    parser.add_argument("--fit-steps", type=int, default=0)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("overrides", nargs="*", help="model.key=value, applied to every field")
    args = parser.parse_args()
    if args.iters < 1 or args.warmup < 0:
        parser.error("--iters must be >= 1 and --warmup >= 0")
    torch.set_num_threads(args.threads)
    tune_malloc()
    torch.manual_seed(0)
    overrides = {}
    for item in args.overrides:
        key, _, value = item.partition("=")
        overrides[key.removeprefix("model.")] = yaml.safe_load(value)

    if args.encoding_points:
        enc = build_field("ngp", overrides).encoding
        pts = torch.rand(args.encoding_points, 3)
        times = []
        for i in range(args.warmup + args.iters):
            t0 = time.perf_counter()
            enc(pts).square().sum().backward()
            enc.table.grad = None
            if i >= args.warmup:
                times.append(time.perf_counter() - t0)
        med = statistics.median(times)
        log2_t = enc.layout.hashmap_size.bit_length() - 1
        print(json.dumps({"what": "hash_encoding_fwd_bwd", "points": args.encoding_points,
                          "levels": enc.layout.n_levels, "log2_T": log2_t,
                          "s_median": round(med, 4), "s_min": round(min(times), 4),
                          "points_per_s": round(args.encoding_points / med),
                          "threads": args.threads}), flush=True)  # fmt: skip

    scene = procedural_scene(num_views=20, n_test_views=4, image_size=args.image_size)
    cams, images, _ = scene.split("train")
    sampler = MonteCarloRaysampler(
        min_x=-1.0, max_x=1.0, min_y=-1.0, max_y=1.0, n_rays_per_image=args.rays,
        n_pts_per_ray=args.points, min_depth=1.0, max_depth=4.0, stratified_sampling=True,
    )  # fmt: skip
    renderer = ImplicitRenderer(sampler, EmissionAbsorptionRaymarcher())
    for name in args.fields:
        torch.manual_seed(0)
        model = build_field(name, overrides)
        opt = make_optimizer(model, args.lr)

        def step(model=model, opt=opt) -> float:
            idx = torch.randperm(len(cams))[: args.cameras]
            rendered, bundle = renderer(cameras=cams[idx], volumetric_function=model)
            target = pixel_targets(images[idx], bundle.xys)
            loss = (rendered[..., :3] - target).square().mean()
            loss = loss + sum(hooks.loss_terms(model).values())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            return float(loss.detach())

        times = []
        for i in range(args.warmup + args.iters):
            t0 = time.perf_counter()
            step()
            if i >= args.warmup:
                times.append(time.perf_counter() - t0)
        med = statistics.median(times)
        n_pts = args.cameras * args.rays * args.points
        result = {"field": name, "step_s_median": round(med, 4), "step_s_min": round(min(times), 4),
                  "points_per_s": round(n_pts / med), "rays": args.cameras * args.rays,
                  "points_per_ray": args.points, "threads": args.threads,
                  "parameters": sum(p.numel() for p in model.parameters())}  # fmt: skip
        if args.fit_steps:
            torch.manual_seed(0)
            model = build_field(name, overrides)
            opt = make_optimizer(model, args.lr)
            result["psnr_0"] = round(heldout_psnr(model, scene, args.points), 3)
            t0 = time.perf_counter()
            for _ in range(args.fit_steps):
                step(model, opt)
            result["fit_s"] = round(time.perf_counter() - t0, 1)
            result["fit_steps"] = args.fit_steps
            result["psnr"] = round(heldout_psnr(model, scene, args.points), 3)
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
