"""The trainer smoke test, TensorBoard tags, checkpoints, eval/render from the run directory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from nerf_lab.build import build_trainer
from nerf_lab.train import run
from tests.conftest import CONF, TINY, compose_cfg


def scalar_tags(run_dir: Path) -> dict[str, list]:
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return {t: acc.Scalars(t) for t in acc.Tags()["scalars"]}, acc.Tags()["images"]


def test_smoke_training_writes_tags_checkpoint_metrics_and_renders(tmp_path, caplog):
    caplog.set_level("INFO", logger="nerf_lab")
    cfg = compose_cfg(
        TINY
        + [
            "trainer.n_iter=6",
            "trainer.log_every=2",
            "trainer.render_every=3",
            "trainer.eval_every=3",
            "trainer.checkpoint_every=3",
        ]
    )
    psnr = run(cfg, tmp_path)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["iterations"] == 6
    for key in ("eval/psnr", "eval/ssim", "train_seconds", "iterations"):
        assert key in metrics
    assert psnr == pytest.approx(metrics["eval/psnr"])
    scalars, images = scalar_tags(tmp_path)
    for tag in (
        "train/loss/color",
        "train/loss/silhouette",
        "train/loss",
        "train/psnr",
        "opt/lr",
        "perf/rays_per_s",
        "perf/iter_s",
        "eval/psnr",
        "eval/ssim",
    ):
        assert tag in scalars, (tag, sorted(scalars))
    assert [e.step for e in scalars["train/loss"]] == [1, 3, 5]
    assert [e.step for e in scalars["eval/psnr"]] == [3, 6]
    assert "render/heldout" in images and "turntable" in images
    ckpts = sorted(p.name for p in (tmp_path / "checkpoints").glob("step_*.pt"))
    assert ckpts == ["step_00000003.pt", "step_00000006.pt"]
    saves = [
        r.getMessage() for r in caplog.records if r.getMessage().startswith("Saved checkpoint")
    ]
    assert len(saves) == 2, saves  # the final checkpoint is written once
    assert (tmp_path / "checkpoints" / "latest").read_text().strip() == "step_00000006.pt"
    state = torch.load(tmp_path / "checkpoints" / "step_00000006.pt", weights_only=True)
    assert state["step"] == 6 and state["config"]["trainer"]["n_iter"] == 6
    assert (tmp_path / "renders" / "turntable.gif").stat().st_size > 0
    assert (tmp_path / "renders" / "turntable_grid.png").stat().st_size > 0


def test_short_fit_raises_psnr(tmp_path):
    cfg = compose_cfg(
        TINY
        + [
            "raysampler.n_pts_per_ray=32",
            "trainer.n_iter=150",
            "trainer.log_every=0",
            "trainer.render_every=0",
            "trainer.turntable_frames=0",
            "optimizer.lr=3e-3",
            "trainer.checkpoint_every=0",
        ]
    )
    trainer = build_trainer(cfg, tmp_path)
    before = trainer.evaluate()["eval/psnr"]
    after = trainer.fit()["eval/psnr"]
    assert after > before + 2.0, (before, after)


def test_eval_and_render_rebuild_from_run_dir(tmp_path):
    from nerf_lab import eval as nl_eval
    from nerf_lab import render as nl_render

    cfg = compose_cfg(TINY + ["trainer.n_iter=4", "trainer.turntable_frames=0"])
    run(cfg, tmp_path)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert nl_eval.main([f"run_dir={tmp_path}"]) == 0
    again = json.loads((tmp_path / "eval.json").read_text())
    assert again["eval/psnr"] == pytest.approx(metrics["eval/psnr"], abs=1e-6)
    assert again["iterations"] == 4
    assert nl_render.main([f"run_dir={tmp_path}", "frames=3"]) == 0
    assert len(list((tmp_path / "renders").glob("orbit_*/rgb.gif"))) == 1
    with pytest.raises(SystemExit) as e:
        nl_eval.main([f"run_dir={tmp_path}", "bogus=1"])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        nl_render.main(["--help"])
    assert e.value.code == 0
    assert nl_eval.main([f"run_dir={tmp_path / 'nowhere'}"]) == 1


def test_pixel_lookup_returns_the_pixel_each_ray_went_through():
    from nerf_lab.raysamplers import ndc_pixel_grid
    from nerf_lab.targets import sample_images_at_rays

    for h, w in ((5, 5), (4, 7), (6, 3)):
        images = torch.arange(2 * h * w, dtype=torch.float32).view(2, h, w, 1)
        grid = ndc_pixel_grid(h, w).reshape(1, -1, 2).expand(2, -1, -1)
        # jitter inside the pixel: still the same pixel
        jitter = (torch.rand_like(grid) - 0.5) * (0.9 / min(h, w))
        out = sample_images_at_rays(images, grid + jitter, "pixel")
        torch.testing.assert_close(out, images.reshape(2, -1, 1))
    # the tutorial lookup is half a pixel off: at the centre of the top-left pixel it
    # blends in the neighbours
    images = torch.zeros(1, 4, 4, 1)
    images[0, 0, 0] = 1.0
    centre = ndc_pixel_grid(4, 4)[0, 0].view(1, 1, 2)
    assert sample_images_at_rays(images, centre, "pixel").item() == 1.0
    assert sample_images_at_rays(images, centre, "tutorial").item() < 1.0


def test_bench_script_prints_one_json_line(tmp_path):
    import subprocess
    import sys

    run(compose_cfg(TINY + ["trainer.n_iter=2", "trainer.turntable_frames=0"]), tmp_path)
    repo = CONF.parent
    out = (
        subprocess.run(
            [
                sys.executable,
                str(repo / "scripts" / "bench.py"),
                "--warmup",
                "1",
                "--iters",
                "1",
                "--renders",
                "1",
                "--render-size",
                "16",
                "--render-run",
                str(tmp_path),
                *TINY,
            ],
            check=True,
            capture_output=True,
            text=True,
            cwd=repo,
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    result = json.loads(out)
    for key in ("iter_s_median", "rays_per_s", "points_per_s", "peak_rss_mb", "device", "render_s"):
        assert key in result
    assert result["rays_per_iter"] == 2 * 64 and result["device"] == "cpu"
    assert result["render_trained_s"] > 0


def test_bench_script_without_renders_and_with_bad_counts():
    import subprocess
    import sys

    bench = [sys.executable, str(CONF.parent / "scripts" / "bench.py")]
    done = subprocess.run(
        [*bench, "--warmup", "0", "--iters", "1", "--renders", "0", *TINY],
        capture_output=True, text=True, cwd=CONF.parent, check=True,
    )  # fmt: skip
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["render_s"] is None and result["iter_s_median"] > 0
    bad = subprocess.run(
        [*bench, "--iters", "0", *TINY], capture_output=True, text=True, cwd=CONF.parent
    )
    assert bad.returncode == 2 and "--iters must be >= 1; got 0" in bad.stderr
    bad = subprocess.run(
        [*bench, "--renders", "0", "--render-run", "DIR", *TINY],
        capture_output=True, text=True, cwd=CONF.parent,
    )  # fmt: skip
    assert bad.returncode == 2 and "--renders must be >= 1" in bad.stderr


def test_bf16_precision_trains_and_stays_close_to_fp32(tmp_path):
    base = TINY + [
        "trainer.n_iter=2",
        "trainer.turntable_frames=0",
        "trainer.log_every=0",
        "trainer.render_every=0",
    ]
    fp32 = build_trainer(compose_cfg(base), tmp_path / "a")
    bf16 = build_trainer(compose_cfg(base + ["trainer.precision=bf16"]), tmp_path / "b")
    r32 = fp32.render_views(fp32.test_views[0][[0]]).rgb
    r16 = bf16.render_views(bf16.test_views[0][[0]]).rgb
    assert r16.dtype == torch.float32
    assert (r32 - r16).abs().max() < 0.05
    stats = bf16.train_step()
    assert all(torch.isfinite(p).all() for p in bf16.renderer.parameters())
    assert all(p.dtype == torch.float32 for p in bf16.renderer.parameters())  # fp32 master weights
    assert stats["loss"] > 0


def test_chunked_training_step_gives_the_same_gradient(tmp_path):
    base = TINY + ["trainer.n_iter=2", "trainer.turntable_frames=0"]
    t = build_trainer(compose_cfg(base + ["trainer.target_lookup=tutorial"]), tmp_path / "tut")
    assert t.train_step()["loss"] > 0  # the tutorial's lookup trains too
    grads = []
    for extra in ([], ["trainer.train_chunk_size=37"]):
        t = build_trainer(compose_cfg(base + extra), tmp_path / str(len(extra)))
        torch.manual_seed(5)
        stats = t.train_step()
        grads.append(({n: p.grad.clone() for n, p in t.renderer.named_parameters()}, stats))
    (g0, s0), (g1, s1) = grads
    for name in g0:
        torch.testing.assert_close(g1[name], g0[name], rtol=1e-4, atol=1e-7, msg=name)
    assert s1["loss"] == pytest.approx(s0["loss"], rel=1e-5)
    assert s1["psnr"] == pytest.approx(s0["psnr"], rel=1e-5)


def test_job_dirname_is_filesystem_safe_and_bounded():
    from nerf_lab.config import job_dirname

    assert job_dirname("model.n_harmonic_functions=4,raysampler.max_depth=2.5") == (
        "model.n_harmonic_functions=4,raysampler.max_depth=2.5"
    )
    long = job_dirname("data.path=/a/b," + "x=1," * 100)
    assert "/" not in long and len(long) <= 120
    assert long != job_dirname("data.path=/a/b," + "x=2," * 100)


def test_missing_plugin_gives_a_clear_message():
    from nerf_lab.plugins import missing_plugin_message, plugin_installed

    msg = missing_plugin_message(["hydra/sweeper=optuna"], CONF)
    if not plugin_installed("hydra_optuna_sweeper"):
        assert "pip install 'nerf_lab[optuna]'" in msg
    assert missing_plugin_message(["model=small"], CONF) is None


def test_metrics_peak_memory_is_the_runs_own_not_the_processes(tmp_path):
    """A local multirun (the method study) trains several runs in one process: each run's
    ``peak_rss_mb`` starts from its own start, not from an earlier job's peak, also when
    the earlier job's freed memory stayed in the heap (``tune_malloc``). (A fresh
    interpreter: in this one, earlier tests' freed memory may still be resident.)"""
    import subprocess
    import sys

    from nerf_lab.memory import reset_peak_rss

    if not reset_peak_rss():
        pytest.skip("this system cannot reset the peak RSS (/proc/self/clear_refs)")
    script = r"""
import json, sys
from nerf_lab.perf import tune_malloc
from nerf_lab.memory import peak_rss_mb
from nerf_lab.train import run
tune_malloc()  # as an earlier job of the process did: freed memory stays in the heap
from tests.conftest import TINY, compose_cfg
earlier_job = b"\x01" * (600 * 2**20)  # an earlier job's 600 MiB (written: resident), freed again
process_peak = peak_rss_mb()
del earlier_job
run(compose_cfg(TINY + ["trainer.n_iter=2", "trainer.turntable_frames=0"]), sys.argv[1])
print(json.dumps([process_peak, json.load(open(sys.argv[1] + "/metrics.json"))["peak_rss_mb"]]))
"""
    out = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "run")],
        cwd=CONF.parent, capture_output=True, text=True, check=True,
    )  # fmt: skip
    process_peak, run_peak = json.loads(out.stdout.strip().splitlines()[-1])
    assert process_peak > 600 and 0 < run_peak < process_peak - 400, (run_peak, process_peak)
