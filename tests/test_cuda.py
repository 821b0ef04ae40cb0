"""On a CUDA GPU: training, rendering, resume, mixed precision and the presets.

Skipped without CUDA. ``bash scripts/gpu_check.sh`` runs these and the benchmarks on a GPU
machine (about 2 minutes of tests on one H100).
"""

from __future__ import annotations

import math

import pytest
import torch

from nerf_lab.build import build_trainer
from nerf_lab.raysamplers import RayBundle
from tests.conftest import TINY, compose_cfg

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

CUDA_TINY = [o for o in TINY if not o.startswith("trainer.device")] + ["trainer.device=cuda"]
QUIET = ["trainer.render_every=0", "trainer.turntable_frames=0", "trainer.log_every=0"]


def on_cuda(t: torch.Tensor) -> bool:
    return t.device.type == "cuda"


def test_training_step_runs_on_the_gpu(tmp_path):
    trainer = build_trainer(compose_cfg(CUDA_TINY + QUIET), tmp_path)
    stats = trainer.train_step()
    assert math.isfinite(stats["loss"]) and math.isfinite(stats["psnr"])
    params = list(trainer.renderer.field.parameters())
    assert params and all(on_cuda(p) for p in params)
    grads = [p.grad for p in params if p.grad is not None]
    assert grads and all(on_cuda(g) and torch.isfinite(g).all() for g in grads)
    for state in trainer.optimizer.state.values():
        assert all(on_cuda(v) for v in state.values() if torch.is_tensor(v) and v.dim() > 0)


@pytest.mark.parametrize("model", ["small", "voxel"])
def test_gpu_forward_backward_and_render_match_the_cpu(tmp_path, model):
    """The same weights give the same field, gradients and full render on both devices."""
    over = [o for o in CUDA_TINY if not o.startswith(("model=", "model."))] + [f"model={model}"]
    gpu = build_trainer(compose_cfg(over + QUIET), tmp_path / "gpu")
    cpu_over = [o for o in over if not o.startswith("trainer.device")] + ["trainer.device=cpu"]
    cpu = build_trainer(compose_cfg(cpu_over + QUIET), tmp_path / "cpu")
    cpu.renderer.field.load_state_dict(
        {k: v.cpu() for k, v in gpu.renderer.field.state_dict().items()}
    )

    g = torch.Generator().manual_seed(0)
    n_rays, n_pts = 64, 16
    bundle = RayBundle(
        origins=torch.randn(n_rays, 3, generator=g) * 0.1 + torch.tensor([0.0, 0.0, -2.2]),
        directions=torch.randn(n_rays, 3, generator=g) * 0.2 + torch.tensor([0.0, 0.0, 1.0]),
        lengths=torch.linspace(1.0, 3.0, n_pts).expand(n_rays, n_pts).contiguous(),
        xys=torch.zeros(n_rays, 2),
    )
    gpu_bundle = RayBundle(*(t.cuda() for t in bundle))
    outs = []
    for trainer, rays in ((cpu, bundle), (gpu, gpu_bundle)):
        trainer.renderer.field.train()
        trainer.renderer.field.zero_grad(set_to_none=True)
        densities, colors = trainer.renderer.field(rays)
        assert densities.shape == (n_rays, n_pts, 1) and colors.shape == (n_rays, n_pts, 3)
        (densities.sum() + colors.square().sum()).backward()
        grads = {
            n: p.grad.cpu()
            for n, p in trainer.renderer.field.named_parameters()
            if p.grad is not None
        }
        outs.append((densities.detach().cpu(), colors.detach().cpu(), grads))
    (d_cpu, c_cpu, g_cpu), (d_gpu, c_gpu, g_gpu) = outs
    torch.testing.assert_close(d_gpu, d_cpu, atol=1e-4, rtol=1e-3)
    torch.testing.assert_close(c_gpu, c_cpu, atol=1e-4, rtol=1e-3)
    assert g_cpu.keys() == g_gpu.keys() and g_cpu
    for name in g_cpu:
        torch.testing.assert_close(g_gpu[name], g_cpu[name], atol=1e-3, rtol=1e-3, msg=name)

    r_gpu = gpu.render_views(gpu.test_views[0][[0]])
    r_cpu = cpu.render_views(cpu.test_views[0][[0]])
    assert on_cuda(r_gpu.rgb)
    for key in ("rgb", "opacity", "depth", "weights"):
        a, b = getattr(r_gpu, key), getattr(r_cpu, key)
        torch.testing.assert_close(a.cpu(), b, atol=1e-3, rtol=1e-3, msg=key)


def test_resume_on_the_gpu_is_exact(tmp_path):
    run = CUDA_TINY + QUIET + ["trainer.n_iter=30", "trainer.checkpoint_every=10"]
    full = build_trainer(compose_cfg(run), tmp_path / "full").fit()
    part_dir = tmp_path / "part"
    t = build_trainer(compose_cfg(run), part_dir)
    for _ in range(13):
        t.train_step()
    t.save()
    resumed = build_trainer(compose_cfg(run + ["trainer.resume=true"]), part_dir).fit()
    assert resumed["iterations"] == 30
    assert resumed["eval/psnr"] == pytest.approx(full["eval/psnr"], abs=1e-3)


@pytest.mark.parametrize(
    ("precision", "dtype"), [("bf16", torch.bfloat16), ("fp16", torch.float16)]
)
def test_autocast_runs_the_mlp_in_low_precision_with_fp32_weights(tmp_path, precision, dtype):
    trainer = build_trainer(
        compose_cfg(CUDA_TINY + QUIET + [f"trainer.precision={precision}"]), tmp_path
    )
    seen: list[torch.dtype] = []
    linear = next(m for m in trainer.renderer.field.modules() if isinstance(m, torch.nn.Linear))
    handle = linear.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    losses = [trainer.train_step()["loss"] for _ in range(20)]
    handle.remove()
    assert seen and set(seen) == {dtype}
    assert all(math.isfinite(v) for v in losses)
    assert all(p.dtype == torch.float32 for p in trainer.renderer.field.parameters())
    render = trainer.render_views(trainer.test_views[0][[0]])
    assert render.rgb.dtype == torch.float32 and torch.isfinite(render.rgb).all()


@pytest.mark.parametrize("preset", [["model=small"], ["experiment=voxel"], ["experiment=fast"]])
def test_presets_learn_the_procedural_scene_in_a_few_hundred_iterations(tmp_path, preset):
    over = [*preset, "data=procedural", "trainer.device=cuda", "trainer.n_iter=300", *QUIET]
    trainer = build_trainer(compose_cfg(over), tmp_path)
    before = trainer.evaluate()["eval/psnr"]
    after = trainer.fit()
    assert after["status"] == "completed" and after["iterations"] == 300
    assert after["eval/psnr"] > before + 2.0, (before, after["eval/psnr"])
