"""Memory estimates (analytic), available memory (fake /proc and cgroup trees), check_fits."""

from __future__ import annotations

from pathlib import Path

import pytest

from nerf_lab.memory import (
    AvailableMemory,
    MemoryEstimate,
    available_memory,
    available_memory_bytes,
    cgroup_available,
    check_fits,
    current_rss_bytes,
    estimate_render_chunk_bytes,
    estimate_train_step_bytes,
    format_bytes,
    meminfo_available,
    peak_rss_bytes,
)

GiB = 2**30


def test_train_step_estimate_analytic():
    est = estimate_train_step_bytes(
        n_rays=4500,
        n_pts_per_ray=128,
        model_param_count=1000,
        activation_floats_per_point=3000.0,
        scene_bytes=123,
    )
    assert est.parts == {
        "parameters": 1000 * 4 * 4,  # weights, gradients, 2 Adam slots
        "activations": 4500 * 128 * 3000 * 4,
        "per_ray": 4500 * 16 * 4,
        "data": 123,
    }
    assert est.total == sum(est.parts.values())
    chunked = estimate_train_step_bytes(4500, 128, 1000, 3000.0, train_chunk_size=1500)
    assert chunked.parts["activations"] * 3 == est.parts["activations"]
    assert chunked.parts["parameters"] == est.parts["parameters"]
    # a chunk larger than the batch changes nothing
    big = estimate_train_step_bytes(4500, 128, 1000, 3000.0, train_chunk_size=10**6)
    assert big.parts["activations"] == est.parts["activations"]
    sgd = estimate_train_step_bytes(1, 1, 10, 0.0, optimizer_slots=0, per_ray_floats=0)
    assert sgd.total == 10 * 2 * 4


def test_render_estimate_analytic():
    est = estimate_render_chunk_bytes(
        4096, 64, 200.0, model_param_count=50, image_height=256, image_width=128, n_views=20
    )
    assert est.parts == {
        "chunk": 4096 * 64 * 200 * 4,
        "images": 2 * 20 * 256 * 128 * 5 * 4,
        "parameters": 50 * 4,
        "data": 0,
    }
    # an image smaller than the chunk renders in one smaller chunk
    tiny = estimate_render_chunk_bytes(4096, 64, 200.0, image_height=8, image_width=8)
    assert tiny.parts["chunk"] == 64 * 64 * 200 * 4


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"n_rays": 0}, "n_rays=0: must be a positive integer"),
        ({"n_pts_per_ray": 2.5}, "n_pts_per_ray=2.5"),
        ({"activation_floats_per_point": -1.0}, "activation_floats_per_point=-1.0"),
        ({"activation_floats_per_point": float("nan")}, "activation_floats_per_point=nan"),
        ({"train_chunk_size": True}, "train_chunk_size=True"),
        ({"model_param_count": -5}, "model_param_count=-5"),
    ],
)
def test_estimate_arguments_are_checked(kwargs, needle):
    args = {
        "n_rays": 10,
        "n_pts_per_ray": 4,
        "model_param_count": 1,
        "activation_floats_per_point": 1.0,
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=needle.replace(".", r"\.").replace("(", r"\(")):
        estimate_train_step_bytes(**args)


def test_check_fits_names_both_numbers():
    est = MemoryEstimate({"activations": 7 * GiB, "parameters": GiB // 2})
    with pytest.raises(ValueError) as info:
        check_fits(
            est,
            "a training step (4500 rays x 128 points)",
            available=AvailableMemory(4 * GiB, "MemAvailable in /proc/meminfo"),
            hint="Set trainer.train_chunk_size.",
        )
    msg = str(info.value)
    assert "a training step (4500 rays x 128 points)" in msg
    assert "7.5 GiB (activations 7.0 GiB, parameters 512.0 MiB)" in msg
    assert "only 4.0 GiB is available (MemAvailable in /proc/meminfo)" in msg
    assert msg.endswith("Set trainer.train_chunk_size.")
    check_fits(est, "x", available=9 * GiB)  # 7.5 <= 0.9 * 9
    with pytest.raises(ValueError, match="only 9.0 GiB is available, of which 80% may be used"):
        check_fits(est, "x", available=9 * GiB, headroom=0.8)  # 7.5 > 0.8 * 9
    check_fits(100, "x", available=100, headroom=1.0)
    with pytest.raises(ValueError, match="headroom=0"):
        check_fits(1, "x", available=100, headroom=0)


def test_format_bytes():
    assert format_bytes(512) == "512 B"
    assert format_bytes(1536) == "1.5 KiB"
    assert format_bytes(3 * 2**20) == "3.0 MiB"
    assert format_bytes(5 * 2**40) == "5120.0 GiB"


# ----------------------------------------------------------------------------- availability


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _proc(tmp_path: Path, cgroup: str, mem_available_kb: int | None) -> Path:
    proc = tmp_path / "proc"
    _write(proc / "self" / "cgroup", cgroup)
    meminfo = "MemTotal:       24683656 kB\n"
    if mem_available_kb is not None:
        meminfo += f"MemAvailable:   {mem_available_kb} kB\n"
    _write(proc / "meminfo", meminfo)
    return proc


def test_cgroup_v2_tightest_level_wins(tmp_path):
    proc = _proc(tmp_path, "0::/user.slice/job\n", 20 * 2**20)  # 20 GiB in kB
    cg = tmp_path / "cg"
    _write(cg / "memory.max", "max\n")  # the root: no limit
    _write(cg / "user.slice" / "memory.max", str(8 * GiB))
    _write(cg / "user.slice" / "memory.current", str(3 * GiB))
    _write(cg / "user.slice" / "memory.stat", f"anon 1\ninactive_file {GiB}\n")
    _write(cg / "user.slice" / "job" / "memory.max", str(4 * GiB))
    _write(cg / "user.slice" / "job" / "memory.current", str(GiB))
    free, source = cgroup_available(cg, proc)
    # job: 4 - 1 = 3 GiB; parent: 8 - (3 - 1) = 6 GiB; the job's limit is the tighter one
    assert free == 3 * GiB and "user.slice/job/memory.max" in source
    avail = available_memory(cgroup_root=cg, proc_root=proc)
    assert avail == AvailableMemory(3 * GiB, source)


def test_cgroup_v1_and_meminfo_minimum(tmp_path):
    proc = _proc(tmp_path, "4:memory:/docker/abc\n0::/\n", 2 * 2**20)  # 2 GiB
    cg = tmp_path / "cg"
    _write(cg / "memory" / "memory.limit_in_bytes", "9223372036854771712")  # no limit
    d = cg / "memory" / "docker" / "abc"
    _write(d / "memory.limit_in_bytes", str(6 * GiB))
    _write(d / "memory.usage_in_bytes", str(2 * GiB))
    _write(d / "memory.stat", f"cache 5\ntotal_inactive_file {GiB // 2}\n")
    assert cgroup_available(cg, proc)[0] == 6 * GiB - (2 * GiB - GiB // 2)
    # MemAvailable (2 GiB) is below the cgroup's 4.5 GiB
    assert available_memory(cgroup_root=cg, proc_root=proc) == AvailableMemory(
        2 * GiB, "MemAvailable in /proc/meminfo"
    )


def test_no_limits_anywhere(tmp_path):
    proc = _proc(tmp_path, "0::/\n", None)
    assert meminfo_available(proc) is None
    assert cgroup_available(tmp_path / "none", proc) is None
    avail = available_memory(cgroup_root=tmp_path / "none", proc_root=proc)
    assert avail.bytes >= 2**59 and "unknown" in avail.source


def test_this_machine():
    assert available_memory_bytes() > 0
    rss, peak = current_rss_bytes(), peak_rss_bytes()
    assert rss is not None and peak is not None and 0 < rss <= peak
