"""Measure the per-point memory constants of ``nerf_lab.memory`` for a few fields.

``python scripts/calibrate_memory.py [--case NAME ...] [--json]``

For each case, two fresh processes build the composed config (procedural scene, one
camera per step, ``trainer.tune_malloc=false`` so freed memory goes back to the OS) and run
one training step and one full-image render with the peak RSS reset just before each
(``/proc/self/clear_refs``; glibc set to ``mmap`` every block of 64 KiB or more, so the
RSS follows live tensors). The first at ``rays[0]`` rays and chunk ``chunks[0]``, the
second at ``rays[1]`` / ``chunks[1]``; the slopes between the two give

* ``activation_floats_per_point = d(peak train RSS) / (d(rays) * n_pts_per_ray * 4)``
* ``render_floats_per_point = d(peak render RSS) / (d(chunk) * n_pts_per_ray * 4)``

so constant costs (parameters, gradients, optimiser state, the runtime, the rendered
image) cancel. The numbers are upper bounds for fields with empty-space skipping (a fresh
grid is occupied everywhere). CPU only; a measurement, not a test.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

BASE = [
    "data=procedural",
    "data.image_size=64",
    "data.num_views=4",
    "data.n_test_views=1",
    "trainer.batch_size=1",
    "trainer.device=cpu",
    "trainer.tune_malloc=false",
    "trainer.progress_bar=false",
    "trainer.num_threads=2",
]

# name -> (overrides, n_pts_per_ray, rays per step (2), render chunks (2))
CASES: dict[str, tuple[list[str], int, tuple[int, int], tuple[int, int]]] = {
    "small": (["model=small"], 64, (512, 2048), (1024, 4096)),
    "nerf": (["model=nerf"], 128, (128, 512), (512, 2048)),
    "nerf_bf16": (["model=nerf", "trainer.precision=bf16"], 128, (64, 256), (512, 2048)),
    "nerf_h128_f30": (
        ["model=nerf", "model.n_hidden_neurons=128", "model.n_harmonic_functions=30"],
        128,
        (128, 512),
        (1024, 4096),
    ),
    "nerf_h256_f10": (
        ["model=nerf", "model.n_hidden_neurons=256", "model.n_harmonic_functions=10"],
        128,
        (64, 256),
        (512, 2048),
    ),
    "voxel": (["experiment=voxel"], 128, (256, 1024), (1024, 4096)),
}


def exact_rss_malloc() -> None:
    """glibc: serve every block of 64 KiB or more with its own ``mmap`` (no dynamic
    threshold) and trim freed heap at once, so RSS follows the live tensors instead of
    hiding them in memory freed earlier (data generation, model set-up)."""
    import ctypes
    import ctypes.util

    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    m_trim_threshold, m_mmap_threshold = -1, -3
    if libc.mallopt(m_mmap_threshold, 64 * 1024) != 1 or libc.mallopt(m_trim_threshold, 0) != 1:
        raise SystemExit("mallopt failed: this calibration needs glibc")


def child(overrides: list[str], n_rays: int, chunk: int) -> dict:
    """One measurement in this (fresh) process."""
    exact_rss_malloc()
    import torch
    from hydra import compose, initialize_config_dir

    from nerf_lab.memory import current_rss_bytes, peak_rss_bytes, reset_peak_rss
    from nerf_lab.train import CONF_DIR, build_trainer

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(
            config_name="config",
            overrides=[
                *BASE,
                *overrides,
                f"raysampler.n_rays_per_image={n_rays}",
                f"trainer.chunk_size={chunk}",
            ],
        )
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = build_trainer(cfg, Path(run_dir))
        n_params = sum(p.numel() for p in trainer.model.parameters())
        gc.collect()
        rss0 = current_rss_bytes()
        if not reset_peak_rss():
            raise SystemExit("cannot reset the peak RSS (/proc/self/clear_refs)")
        t0 = time.perf_counter()
        trainer.train_step()
        train_s = time.perf_counter() - t0
        train_peak = peak_rss_bytes() - rss0
        gc.collect()
        rss1 = current_rss_bytes()
        reset_peak_rss()
        height = int(trainer.image_hw[0])
        scale = max(1.0, (chunk * 4) ** 0.5 / height)  # at least 4 chunks per image
        with torch.no_grad():
            trainer.render_views(trainer.test_cameras[[0]], scale=scale, with_depth=True)
        render_peak = peak_rss_bytes() - rss1
    return {
        "n_rays": n_rays,
        "chunk": chunk,
        "n_params": n_params,
        "train_delta_bytes": train_peak,
        "render_delta_bytes": render_peak,
        "render_pixels": round(height * scale) ** 2,
        "train_s": round(train_s, 3),
    }


def measure(name: str) -> dict:
    overrides, n_pts, rays, chunks = CASES[name]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.setdefault("NERF_LAB_CACHE_DIR", str(Path(tempfile.gettempdir()) / "nerf_lab_calib"))
    runs = []
    for n_rays, chunk in zip(rays, chunks, strict=True):
        payload = json.dumps({"overrides": overrides, "n_rays": n_rays, "chunk": chunk})
        out = subprocess.run(
            [sys.executable, __file__, "--child", payload],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            check=False,
        )
        if out.returncode != 0:
            raise SystemExit(f"{name}: child failed:\n{out.stderr[-3000:]}")
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    a, b = runs
    d_points = (b["n_rays"] - a["n_rays"]) * n_pts
    d_chunk_points = (b["chunk"] - a["chunk"]) * n_pts
    return {
        "case": name,
        "overrides": overrides,
        "n_pts_per_ray": n_pts,
        "n_params": a["n_params"],
        "activation_floats_per_point": round(
            (b["train_delta_bytes"] - a["train_delta_bytes"]) / (d_points * 4), 1
        ),
        "render_floats_per_point": round(
            (b["render_delta_bytes"] - a["render_delta_bytes"]) / (d_chunk_points * 4), 1
        ),
        "runs": runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--case", action="append", choices=sorted(CASES))
    parser.add_argument("--json", action="store_true", help="one JSON line per case")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        spec = json.loads(args.child)
        print(json.dumps(child(spec["overrides"], spec["n_rays"], spec["chunk"])))
        return
    for name in args.case or list(CASES):
        result = measure(name)
        if args.json:
            print(json.dumps(result), flush=True)
            continue
        a, b = result["runs"]
        print(
            f"{name:15s} params={result['n_params']:>10d} n_pts={result['n_pts_per_ray']:>4d} "
            f"train: {result['activation_floats_per_point']:8.1f} floats/pt "
            f"(peak +{a['train_delta_bytes'] / 2**20:.0f} MiB @ {a['n_rays']} rays, "
            f"+{b['train_delta_bytes'] / 2**20:.0f} MiB @ {b['n_rays']})  "
            f"render: {result['render_floats_per_point']:7.1f} floats/pt "
            f"(+{a['render_delta_bytes'] / 2**20:.0f} MiB @ chunk {a['chunk']}, "
            f"+{b['render_delta_bytes'] / 2**20:.0f} MiB @ {b['chunk']})",
            flush=True,
        )


if __name__ == "__main__":
    main()
