"""Memory limits, up front: estimate what a training step and a render chunk need from the
config, compare with what this machine (or container, or GPU) has, refuse early.

The estimates are linear models with documented terms; the per-point constants are
measured (``scripts/calibrate_memory.py``, peak RSS of one step on small cases, the slope
between two ray counts) and belong to the field. Measured on CPU, fp32, in float32 values
per sample point:

=========================================  ===========  ==========  ====================
field (config)                             train        render      parameters
=========================================  ===========  ==========  ====================
NeRF ``model=nerf`` (256 units, 60 harm.)  1080         571         317 188
NeRF 256 units, 10 harmonics               941          414         163 588
NeRF 128 units, 30 harmonics               552          267         79 748
NeRF ``model=small`` (64 units, 10 harm.)  517 - 551    192 - 197   16 324
NeRF ``model=nerf``, bf16 autocast         913          171         317 188
voxel grid ``experiment=voxel``            0 - 30       100 - 121   18 875 235
=========================================  ===========  ==========  ====================

(two runs where a range is given; 64 points per ray for ``small``, 128 otherwise). A check
at 1500 rays x 128 points of ``model=nerf`` measured 797 MiB over the step's start, the
linear model 802 MiB. For NeRF MLPs, ``370 + 2.1 * n_hidden_neurons + 2.8 *
n_harmonic_functions`` (train) and ``90 + 1.14 * n_hidden_neurons + 3.1 *
n_harmonic_functions`` (render) are within 3 % of the three wide configurations and 25-31 %
above the 128-unit one (conservative). The voxel grid's step is dominated by its
parameters (weights, dense gradients and Adam state: ``4 * P`` floats); a trained grid
skips empty space, so its per-point figure only falls.

Training step, bytes (``estimate_train_step_bytes``):

* ``parameters``: ``P * (1 + 1 + optimizer_slots) * bytes_per_float`` (weights, gradients,
  optimiser state: Adam keeps 2 slots);
* ``activations``: ``rays_in_flight * n_pts_per_ray * activation_floats_per_point *
  bytes_per_float`` with ``rays_in_flight = min(n_rays, train_chunk_size or n_rays)``: what
  autograd keeps for backward plus the transients at the peak, per sample point, including
  the ray bundle, the raymarcher and the loss (the measured constant covers all of them);
* ``per_ray``: ``n_rays * per_ray_floats * bytes_per_float`` (targets, xys, colours: small);
* ``data``: the scene's images and silhouettes held in memory (``scene_bytes``).

Render chunk, bytes (``estimate_render_chunk_bytes``): ``chunk_size * n_pts_per_ray *
render_floats_per_point * bytes_per_float`` (no autograd: only transients) plus the
rendered images being assembled (``n_views * H * W * channels``, twice: the chunks and their
concatenation) plus the parameters (once).

Not modelled: the Python/torch runtime already resident (it is not in the available
figure either), allocator fragmentation (covered by ``check_fits``' headroom), CUDA's
context and workspace (on a GPU, leave more headroom).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from nerf_lab.validate import check_int, check_number

BYTES_PER_FLOAT = 4
_NO_LIMIT = 1 << 60  # cgroup v1 reports "no limit" as a huge number (9223372036854771712)


@dataclass(frozen=True)
class MemoryEstimate:
    """An estimate in bytes and its named parts (``total == sum(parts.values())``)."""

    parts: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return int(sum(self.parts.values()))

    def describe(self) -> str:
        """``"1.2 GiB (activations 1.0 GiB, parameters 0.2 GiB)"``, biggest part first."""
        parts = sorted(self.parts.items(), key=lambda kv: -kv[1])
        inner = ", ".join(f"{k} {format_bytes(v)}" for k, v in parts if v)
        return f"{format_bytes(self.total)} ({inner})" if inner else format_bytes(self.total)


def format_bytes(n: float) -> str:
    """Human-readable bytes in binary units: ``"1.5 GiB"``."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def estimate_train_step_bytes(
    n_rays: int,
    n_pts_per_ray: int,
    model_param_count: int,
    activation_floats_per_point: float,
    *,
    train_chunk_size: int = 0,
    optimizer_slots: int = 2,
    bytes_per_float: int = BYTES_PER_FLOAT,
    per_ray_floats: float = 16.0,
    scene_bytes: int = 0,
) -> MemoryEstimate:
    """Peak memory of one training step (see the module docstring for the model).

    Args:
        n_rays: rays per step (``trainer.batch_size * raysampler.n_rays_per_image``).
        n_pts_per_ray: ``raysampler.n_pts_per_ray``.
        model_param_count: ``sum(p.numel() for p in model.parameters())``.
        activation_floats_per_point: the field's measured constant (float32 values kept or
            live at the peak per sample point).
        train_chunk_size: ``trainer.train_chunk_size`` (0: all rays at once).
        optimizer_slots: optimiser state per parameter (Adam: 2, SGD with momentum: 1).
        bytes_per_float: 4 (fp32; bf16 autocast still keeps fp32 master weights, and its
            activation saving is in the measured constant of a bf16 calibration).
        per_ray_floats: per-ray buffers (targets, xys, colours, losses).
        scene_bytes: the scene held in memory (``images.nbytes + silhouettes.nbytes``).

    Returns:
        The estimate, parts ``parameters``, ``activations``, ``per_ray``, ``data``.
    """
    check_int("n_rays", n_rays, 1, style="key")
    check_int("n_pts_per_ray", n_pts_per_ray, 1, style="key")
    check_int("model_param_count", model_param_count, 0, style="key")
    check_int("train_chunk_size", train_chunk_size, 0, style="key")
    check_int("optimizer_slots", optimizer_slots, 0, style="key")
    check_int("bytes_per_float", bytes_per_float, 1, style="key")
    check_int("scene_bytes", scene_bytes, 0, style="key")
    act = check_number("activation_floats_per_point", activation_floats_per_point, 0, style="key")
    per_ray = check_number("per_ray_floats", per_ray_floats, 0, style="key")
    in_flight = min(n_rays, train_chunk_size or n_rays)
    return MemoryEstimate(
        {
            "parameters": model_param_count * (2 + optimizer_slots) * bytes_per_float,
            "activations": round(in_flight * n_pts_per_ray * act * bytes_per_float),
            "per_ray": round(n_rays * per_ray * bytes_per_float),
            "data": scene_bytes,
        }
    )


def estimate_render_chunk_bytes(
    chunk_size: int,
    n_pts_per_ray: int,
    render_floats_per_point: float,
    *,
    model_param_count: int = 0,
    image_height: int = 0,
    image_width: int = 0,
    n_views: int = 1,
    channels: int = 5,
    bytes_per_float: int = BYTES_PER_FLOAT,
    scene_bytes: int = 0,
) -> MemoryEstimate:
    """Peak memory of rendering full images chunk by chunk (see the module docstring).

    Args:
        chunk_size: rays per chunk (``trainer.chunk_size``).
        n_pts_per_ray: ``raysampler.n_pts_per_ray``.
        render_floats_per_point: the field's measured constant without autograd.
        model_param_count: parameters (counted once; 0 when already resident).
        image_height, image_width: the rendered size (data size x ``render_scale`` /
            ``turntable_scale``).
        n_views: views rendered by one call (a turntable renders all its frames, then
            writes them).
        channels: rendered values per pixel (RGB + opacity + depth: 5).
        bytes_per_float: 4.
        scene_bytes: the scene held in memory.

    Returns:
        The estimate, parts ``chunk``, ``images``, ``parameters``, ``data``.
    """
    check_int("chunk_size", chunk_size, 1, style="key")
    check_int("n_pts_per_ray", n_pts_per_ray, 1, style="key")
    check_int("model_param_count", model_param_count, 0, style="key")
    for name, value in (("image_height", image_height), ("image_width", image_width)):
        check_int(name, value, 0, style="key")
    check_int("n_views", n_views, 1, style="key")
    check_int("channels", channels, 1, style="key")
    check_int("bytes_per_float", bytes_per_float, 1, style="key")
    check_int("scene_bytes", scene_bytes, 0, style="key")
    per_point = check_number("render_floats_per_point", render_floats_per_point, 0, style="key")
    pixels = image_height * image_width
    rays = min(chunk_size, pixels) if pixels else chunk_size
    return MemoryEstimate(
        {
            "chunk": round(rays * n_pts_per_ray * per_point * bytes_per_float),
            "images": 2 * n_views * pixels * channels * bytes_per_float,
            "parameters": model_param_count * bytes_per_float,
            "data": scene_bytes,
        }
    )


# ----------------------------------------------------------------------------- availability


@dataclass(frozen=True)
class AvailableMemory:
    """Bytes available and where the figure comes from (the smallest limit found)."""

    bytes: int
    source: str


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if text == "max":
        return None
    try:
        value = int(text)
    except ValueError:
        return None
    return None if value >= _NO_LIMIT else value


def _stat_value(path: Path, key: str) -> int:
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except (OSError, ValueError):
        pass
    return 0


def meminfo_available(proc_root: str | Path = "/proc") -> int | None:
    """``MemAvailable`` from ``/proc/meminfo`` in bytes (``None`` if unreadable)."""
    try:
        for line in (Path(proc_root) / "meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_paths(proc_root: Path) -> dict[str, str]:
    """``{"v2": path, "memory": path}`` from ``/proc/self/cgroup``."""
    out: dict[str, str] = {}
    try:
        lines = (proc_root / "self" / "cgroup").read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hierarchy, controllers, path = parts
        if hierarchy == "0" and controllers == "":
            out["v2"] = path
        elif "memory" in controllers.split(","):
            out["memory"] = path
    return out


def _levels(root: Path, cgroup_path: str) -> list[Path]:
    """``root/a/b``, ``root/a``, ``root`` for ``/a/b`` (the directories that exist)."""
    parts = [p for p in cgroup_path.strip("/").split("/") if p]
    dirs = [root.joinpath(*parts[:i]) for i in range(len(parts), -1, -1)]
    return [d for d in dirs if d.is_dir()]


def cgroup_available(
    cgroup_root: str | Path = "/sys/fs/cgroup", proc_root: str | Path = "/proc"
) -> tuple[int, str] | None:
    """The tightest cgroup memory limit minus usage (reclaimable page cache counted free).

    cgroup v2: ``memory.max - (memory.current - inactive_file)`` at the process's cgroup and
    each parent; v1: ``memory.limit_in_bytes - (memory.usage_in_bytes -
    total_inactive_file)`` likewise. ``None`` when no level has a limit.
    """
    root, proc = Path(cgroup_root), Path(proc_root)
    paths = _cgroup_paths(proc)
    best: tuple[int, str] | None = None
    candidates: list[tuple[Path, str, str, str, str]] = []
    for d in _levels(root, paths.get("v2", "/")):
        candidates.append((d, "memory.max", "memory.current", "memory.stat", "inactive_file"))
    for d in _levels(root / "memory", paths.get("memory", "/")):
        candidates.append(
            (
                d,
                "memory.limit_in_bytes",
                "memory.usage_in_bytes",
                "memory.stat",
                "total_inactive_file",
            )
        )
    for d, limit_name, usage_name, stat_name, inactive_key in candidates:
        limit = _read_int(d / limit_name)
        if limit is None:
            continue
        usage = _read_int(d / usage_name) or 0
        inactive = _stat_value(d / stat_name, inactive_key)
        free = max(0, limit - max(0, usage - inactive))
        if best is None or free < best[0]:
            best = (free, f"cgroup limit {format_bytes(limit)} at {d / limit_name}")
    return best


def available_memory(
    device: str = "cpu",
    cgroup_root: str | Path = "/sys/fs/cgroup",
    proc_root: str | Path = "/proc",
) -> AvailableMemory:
    """Memory available for a new allocation on ``device``.

    CPU: the smaller of ``/proc/meminfo``'s ``MemAvailable`` and every cgroup (v1 or v2)
    limit above this process, minus its usage. CUDA: ``torch.cuda.mem_get_info``'s free
    bytes (the device's, shared with other processes).
    """
    if str(device).startswith("cuda"):
        import torch

        free, total = torch.cuda.mem_get_info(torch.device(device))
        return AvailableMemory(int(free), f"free memory of {device} ({format_bytes(total)} total)")
    found: list[tuple[int, str]] = []
    mem = meminfo_available(proc_root)
    if mem is not None:
        found.append((mem, "MemAvailable in /proc/meminfo"))
    cg = cgroup_available(cgroup_root, proc_root)
    if cg is not None:
        found.append(cg)
    if not found:
        return AvailableMemory(_NO_LIMIT, "unknown (no /proc/meminfo, no cgroup limit)")
    return AvailableMemory(*min(found))


def available_memory_bytes(device: str = "cpu") -> int:
    """Bytes available on ``device`` (see :func:`available_memory`)."""
    return available_memory(device).bytes


def check_fits(
    estimate: MemoryEstimate | int,
    what: str,
    available: AvailableMemory | int | None = None,
    headroom: float = 0.9,
    hint: str = "",
    device: str = "cpu",
) -> None:
    """Refuse to start what would not fit.

    Args:
        estimate: bytes, or a :class:`MemoryEstimate` (its parts are shown).
        what: what needs it, e.g. ``"a training step (4500 rays x 128 points)"``.
        available: default: :func:`available_memory` of ``device``.
        headroom: the fraction of the available memory an estimate may use (fragmentation,
            the estimate's error, everything else the process holds).
        hint: what to change, appended to the message (e.g. ``"set trainer.train_chunk_size"``).
        device: where it will run (when ``available`` is not given).

    Raises:
        ValueError: naming the estimate (and its parts) and the available memory (and its
            source).
    """
    if not 0 < headroom <= 1:
        raise ValueError(f"headroom={headroom!r}: must be in (0, 1].")
    est = estimate if isinstance(estimate, MemoryEstimate) else MemoryEstimate({"total": estimate})
    if available is None:
        available = available_memory(device)
    avail = available if isinstance(available, AvailableMemory) else AvailableMemory(available, "")
    if est.total <= headroom * avail.bytes:
        return
    source = f" ({avail.source})" if avail.source else ""
    raise ValueError(
        f"Not enough memory for {what}: it needs an estimated {est.describe()}, but only "
        f"{format_bytes(avail.bytes)} is available{source}, of which {headroom:.0%} may be "
        f"used." + (f" {hint}" if hint else "")
    )


def current_rss_bytes(proc_root: str | Path = "/proc") -> int | None:
    """This process's resident set size (``VmRSS``), for logs and calibration."""
    try:
        for line in (Path(proc_root) / "self" / "status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def peak_rss_bytes(proc_root: str | Path = "/proc") -> int | None:
    """This process's peak resident set size (``VmHWM``) since start or the last
    :func:`reset_peak_rss`."""
    try:
        for line in (Path(proc_root) / "self" / "status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def peak_rss_mb() -> float | None:
    """Peak resident memory in MiB since :func:`reset_peak_rss` (Linux ``VmHWM``), else over
    the process's life (``getrusage``); ``None`` where unknown."""
    peak = peak_rss_bytes()
    if peak is not None:
        return round(peak / 2**20, 1)
    try:
        import resource

        return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    except (ImportError, OSError):
        return None


def reset_peak_rss() -> bool:
    """Reset ``VmHWM`` to the current RSS (Linux >= 4.0); ``False`` where unsupported."""
    try:
        with open(f"/proc/{os.getpid()}/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True
