"""Summarise a method study (``python -m nerf_lab.train -m +sweep=methods``): one row per run.

    python scripts/method_study.py multirun/sweep_methods/2025-01-01_12-00-00 [--no-plot]

Prints a Markdown table: method, model (the field's class), sampler, status, held-out
PSNR and SSIM, training seconds, seconds per iteration, iterations and peak memory (when
the run recorded one in ``metrics.json``: ``peak_rss_mb`` or ``peak_memory_mb``), and
saves ``method_study.png`` (held-out PSNR against training seconds, one curve per run;
needs matplotlib, the ``plot`` extra) into the study directory (``--plot PATH``: elsewhere).

A run is any directory under the study directory holding ``.hydra/`` or ``metrics.json``.
Its method is its ``experiment=`` override (``.hydra/overrides.yaml``), else the run's
``name`` (``.hydra/config.yaml``), else its directory name. Results come from
``metrics.json`` (``eval/psnr``, ``eval/ssim``, ``train_seconds``, ``iterations``,
``status``; a run without one is ``running-or-missing``).

The curves: the run's TensorBoard ``eval/psnr`` points (periodic evaluations,
``trainer.eval_every``, and the final one) placed at the training seconds spent when they
were taken. Those come from ``perf/iter_s`` (each log line's mean seconds per iteration
since the previous one, ``trainer.log_every``), accumulated over the logged windows,
interpolated in the step and scaled to end at ``metrics.json``'s ``train_seconds`` (which,
like ``perf/iter_s``, excludes evaluation and rendering time); without ``perf/iter_s``,
training seconds are taken as proportional to the step.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

#: metrics.json keys that may hold a peak memory in MiB (the first present is shown).
PEAK_MEMORY_KEYS = ("peak_rss_mb", "peak_memory_mb")


@dataclass
class Run:
    """One run of the study."""

    path: Path
    method: str
    model: str = ""
    sampler: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    status: str = "running-or-missing"
    curve: list[tuple[float, float]] = field(default_factory=list)  # (train s, PSNR)


def short_target(node: Any) -> str:
    """The class name of a config node's ``_target_`` (``""`` when there is none)."""
    if isinstance(node, dict) and isinstance(node.get("_target_"), str):
        return node["_target_"].rsplit(".", 1)[-1]
    return ""


def read_yaml(path: Path) -> Any:
    """A YAML file's content, or ``None`` when it is missing or unreadable."""
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None


def method_name(run_dir: Path, overrides: list[str], config: dict[str, Any] | None) -> str:
    """The run's ``experiment=`` override, else its config's ``name``, else the directory."""
    for item in overrides:
        key, sep, value = str(item).partition("=")
        if sep and key.lstrip("+") == "experiment":
            return value
    if config and isinstance(config.get("name"), str):
        return config["name"]
    return run_dir.name


def sampler_name(raysampler: Any) -> str:
    """``"<train sampler>"`` or ``"<train sampler> + <resampler>"`` of a raysampler node."""
    if not isinstance(raysampler, dict):
        return ""
    first = short_target(raysampler.get("train"))
    second = short_target(raysampler.get("resampler"))
    return f"{first} + {second}" if first and second else first or second


def seconds_at_steps(
    log_steps: list[int],
    iter_s: list[float],
    query_steps: list[int],
    train_seconds: float,
    iterations: int,
) -> list[float]:
    """Training seconds spent after each of ``query_steps`` iterations.

    Args:
        log_steps: ``(n_logs,)`` increasing steps at which ``perf/iter_s`` was logged; the
            value logged at ``log_steps[k]`` is the mean over the steps after
            ``log_steps[k - 1]`` (after step 0 for ``k = 0``).
        iter_s: ``(n_logs,)`` those mean seconds per iteration.
        query_steps: ``(n_queries,)`` steps to place in time.
        train_seconds: total training seconds after ``iterations`` steps (> 0).
        iterations: steps of the whole run (>= every query step, > 0).

    Returns:
        ``(n_queries,)`` seconds: the accumulated windows, linear in the step within a
        window and after the last log, scaled so that ``iterations`` maps to
        ``train_seconds``; proportional to the step when nothing was logged.
    """
    if iterations <= 0 or not train_seconds > 0:
        raise ValueError(
            f"need iterations > 0 and train_seconds > 0; got {iterations}, {train_seconds}"
        )
    if len(log_steps) != len(iter_s):
        raise ValueError(
            f"log_steps and iter_s differ in length: {len(log_steps)} != {len(iter_s)}"
        )
    knots_s, knots_t = [0], [0.0]
    for step, dt in zip(log_steps, iter_s, strict=True):
        if step > knots_s[-1] and step <= iterations and math.isfinite(dt) and dt >= 0:
            knots_t.append(knots_t[-1] + dt * (step - knots_s[-1]))
            knots_s.append(step)
    if knots_s[-1] < iterations:
        # after the last log line: the last window's rate (or a plain line when none)
        rate = 1.0
        if len(knots_s) > 1:
            rate = (knots_t[-1] - knots_t[-2]) / (knots_s[-1] - knots_s[-2])
        knots_t.append(knots_t[-1] + rate * (iterations - knots_s[-1]))
        knots_s.append(iterations)
    total = knots_t[-1]
    scale = train_seconds / total if total > 0 else 0.0
    out = []
    for q in query_steps:
        if total <= 0:
            out.append(train_seconds * q / iterations)
            continue
        q = min(max(q, 0), iterations)
        k = next(i for i in range(1, len(knots_s)) if q <= knots_s[i])
        s0, s1, t0, t1 = knots_s[k - 1], knots_s[k], knots_t[k - 1], knots_t[k]
        out.append(scale * (t0 + (t1 - t0) * (q - s0) / (s1 - s0)))
    return out


def read_scalars(run_dir: Path, tags: tuple[str, ...]) -> dict[str, list[tuple[int, float]]]:
    """``{tag: [(step, value), ...]}`` from the run's TensorBoard event files (last write
    of a step wins, e.g. after a resume)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out: dict[str, list[tuple[int, float]]] = {t: [] for t in tags}
    if not any(run_dir.glob("events.out.tfevents.*")):
        return out
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    present = set(acc.Tags().get("scalars", []))
    for tag in tags:
        if tag in present:
            by_step = {e.step: float(e.value) for e in acc.Scalars(tag)}
            out[tag] = sorted(by_step.items())
    return out


def psnr_curve(run_dir: Path, metrics: dict[str, Any]) -> list[tuple[float, float]]:
    """``[(training seconds, held-out PSNR), ...]`` of a completed run (empty otherwise)."""
    train_seconds, iterations = metrics.get("train_seconds"), metrics.get("iterations")
    if not isinstance(iterations, int) or not isinstance(train_seconds, (int, float)):
        return []
    if iterations <= 0 or not train_seconds > 0:
        return []
    scalars = read_scalars(run_dir, ("eval/psnr", "perf/iter_s"))
    points = [(s, v) for s, v in scalars["eval/psnr"] if 0 <= s <= iterations]
    if not points:
        return []
    logs = scalars["perf/iter_s"]
    seconds = seconds_at_steps(
        [s for s, _ in logs], [v for _, v in logs], [s for s, _ in points], float(train_seconds),
        iterations,
    )  # fmt: skip
    return [(t, v) for t, (_, v) in zip(seconds, points, strict=True)]


def load_run(run_dir: Path) -> Run:
    """Read one run's method, components, metrics, status and PSNR curve."""
    overrides = read_yaml(run_dir / ".hydra" / "overrides.yaml") or []
    config = read_yaml(run_dir / ".hydra" / "config.yaml")
    config = config if isinstance(config, dict) else None
    run = Run(path=run_dir, method=method_name(run_dir, list(overrides), config))
    if config:
        run.model = short_target(config.get("model"))
        run.sampler = sampler_name(config.get("raysampler"))
    try:
        run.metrics = json.loads((run_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        return run
    if not isinstance(run.metrics, dict):
        run.metrics = {}
        return run
    run.status = str(run.metrics.get("status", "completed"))
    if run.status == "completed":
        run.curve = psnr_curve(run_dir, run.metrics)
    return run


def find_runs(study_dir: Path) -> list[Run]:
    """Every run directory under ``study_dir`` (holding ``.hydra/`` or ``metrics.json``),
    in directory order."""
    dirs = {p.parent for p in study_dir.rglob(".hydra") if p.is_dir()}
    dirs |= {p.parent for p in study_dir.rglob("metrics.json")}
    dirs = {d for d in dirs if d != study_dir and ".submitit" not in d.parts}
    return [load_run(d) for d in sorted(dirs, key=sort_key)]


def sort_key(path: Path) -> tuple[int, str]:
    """Hydra's job number first (``3_...``), then the name."""
    head = path.name.split("_", 1)[0]
    return (int(head) if head.isdigit() else 1 << 30, str(path))


def number(value: Any, spec: str) -> str:
    """A number for the table; empty when absent, boolean or not a number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return ""
    return spec.format(value) if math.isfinite(value) else str(value)


def peak_memory(metrics: dict[str, Any]) -> Any:
    """The first recorded peak memory (MiB) of :data:`PEAK_MEMORY_KEYS`, or ``None``."""
    return next((metrics[k] for k in PEAK_MEMORY_KEYS if k in metrics), None)


HEADER = ["method", "model", "sampler", "status", "PSNR (dB)", "SSIM", "train s", "s/iter",
          "iters", "peak MiB"]  # fmt: skip


def table_rows(runs: list[Run]) -> list[list[str]]:
    """One row of strings per run, in :data:`HEADER`'s order."""
    rows = []
    for run in runs:
        m = run.metrics
        secs, iters = m.get("train_seconds"), m.get("iterations")
        per_iter = None
        if isinstance(secs, (int, float)) and isinstance(iters, int) and iters > 0:
            per_iter = secs / iters
        rows.append(
            [
                run.method,
                run.model,
                run.sampler,
                run.status,
                number(m.get("eval/psnr"), "{:.2f}"),
                number(m.get("eval/ssim"), "{:.4f}"),
                number(secs, "{:.1f}"),
                number(per_iter, "{:.3f}"),
                number(iters, "{}"),
                number(peak_memory(m), "{:.0f}"),
            ]
        )
    return rows


def markdown(header: list[str], rows: list[list[str]]) -> str:
    """A GitHub-flavoured Markdown table."""

    def cell(s: str) -> str:
        return s.replace("|", "\\|").replace("\n", " ")

    out = ["| " + " | ".join(cell(h) for h in header) + " |"]
    out.append("|" + "|".join("---" for _ in header) + "|")
    out += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def plot(runs: list[Run], path: Path) -> bool:
    """Save held-out PSNR against training seconds, one curve per run with a curve.

    Returns ``False`` (and saves nothing) when matplotlib is not installed or no run has
    a curve."""
    curves = [r for r in runs if r.curve]
    if not curves:
        return False
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for run in curves:
        xs, ys = zip(*run.curve, strict=True)
        ax.plot(xs, ys, marker="o", markersize=3, label=run.method)
    ax.set_xlabel("training seconds")
    ax.set_ylabel("held-out PSNR (dB)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("study_dir", type=Path, help="the multirun directory of the study")
    parser.add_argument(
        "--plot",
        type=Path,
        default=None,
        help="the plot's path (default: STUDY_DIR/method_study.png)",
    )
    parser.add_argument("--no-plot", action="store_true", help="print the table only")
    args = parser.parse_args(argv)
    if not args.study_dir.is_dir():
        print(f"error: {args.study_dir} is not a directory", file=sys.stderr)
        return 1
    runs = find_runs(args.study_dir)
    if not runs:
        print(f"error: no runs (directories with .hydra/ or metrics.json) under {args.study_dir}",
              file=sys.stderr)  # fmt: skip
        return 1
    print(markdown(HEADER, table_rows(runs)))
    if not args.no_plot:
        path = args.plot or args.study_dir / "method_study.png"
        if plot(runs, path):
            print(f"\nPSNR vs training time: {path}")
        else:
            print("\nNo plot: no run has eval/psnr points, or matplotlib is missing "
                  "(pip install -e '.[plot]').")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
