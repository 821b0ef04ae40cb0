"""Summarise a Hydra multirun of ``nerf_lab.train``: one row per job.

    nerf-lab-summarize multirun/sweep_harmonics/2025-01-01_12-00-00 [--no-plot]
    python -m nerf_lab.summarize ...        (also: python scripts/summarize_sweep.py ...)

Prints a Markdown table (each job's swept overrides, status, held-out PSNR/SSIM, training
time, rays/s and, for a failed job, its error) and writes ``summary.csv`` and
``summary.png`` (held-out PSNR against each swept parameter; needs matplotlib, the
``plot`` extra) into the sweep directory. Works on a sweep that is still running.

A job's overrides come from ``<job>/.hydra/overrides.yaml``; its status and results only from
``<job>/metrics.json`` (never from log text): ``status`` is ``completed``, ``failed`` (with
``error``), ``interrupted`` (stopped by a signal after a checkpoint; resume with
``trainer.resume=true``) or ``running`` (started and not finished: still running, or killed
outright; the host and pid are in the file and a note says when that process is gone). A job
directory without a readable ``metrics.json`` is ``missing`` (created, not started yet).
An Optuna sweep's ``optimization_results.yaml`` (best parameters and value) is printed too.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import re
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

METRIC_COLUMNS = (  # (metrics.json key, column title, format)
    ("eval/psnr", "PSNR (dB)", "{:.2f}"),
    ("eval/ssim", "SSIM", "{:.4f}"),
    ("train_seconds", "train s", "{:.1f}"),
    ("rays_per_s", "rays/s", "{:.0f}"),
    ("iterations", "iters", "{}"),
)


@dataclass
class Job:
    """One job directory of the sweep."""

    path: Path
    num: int
    overrides: dict[str, str]
    metrics: dict[str, Any] = field(default_factory=dict)
    status: str = "missing"
    error: str = ""
    note: str = ""


def override_key(item: str) -> tuple[str, str]:
    """``"+sweep=harmonics"`` → ``("sweep", "harmonics")``; ``"~a"`` → ``("a", "<deleted>")``."""
    key, sep, value = item.partition("=")
    key = key.lstrip("+~")
    return key, (value if sep else "<deleted>")


def process_gone(metrics: dict[str, Any]) -> bool:
    """Whether a ``running`` job's recorded process is known to be gone: it ran on this host
    and its pid no longer exists. (Another host's process cannot be checked from here.)"""
    host, pid = metrics.get("host"), metrics.get("pid")
    if host != socket.gethostname() or not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # e.g. EPERM: it exists
        return False
    return False


def job_number(job_dir: Path, sweep_dir: Path) -> int:
    """Hydra's job number: the leading integer of the job's directory name (or hydra.yaml)."""
    match = re.match(r"(\d+)", job_dir.relative_to(sweep_dir).parts[0])
    if match:
        return int(match[1])
    try:
        hydra_cfg = yaml.safe_load((job_dir / ".hydra" / "hydra.yaml").read_text())
        return int(hydra_cfg["hydra"]["job"]["num"])
    except (OSError, KeyError, TypeError, ValueError, yaml.YAMLError):
        return -1


def load_job(job_dir: Path, sweep_dir: Path) -> Job:
    """Read one job's overrides, metrics and status."""
    try:
        items = yaml.safe_load((job_dir / ".hydra" / "overrides.yaml").read_text()) or []
    except (OSError, yaml.YAMLError):
        items = []
    job = Job(
        path=job_dir,
        num=job_number(job_dir, sweep_dir),
        overrides=dict(override_key(str(i)) for i in items),
    )
    try:
        metrics = json.loads((job_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        return job  # missing: the directory exists, the job has not started (or is unreadable)
    if not isinstance(metrics, dict):
        job.note = "metrics.json is not a JSON object"
        return job
    job.metrics = metrics
    job.status = str(metrics.get("status", "missing"))
    job.error = str(metrics.get("error", "") or "")
    if job.status == "running":
        where = f"{metrics.get('host', '?')} pid {metrics.get('pid', '?')}"
        if metrics.get("slurm_job_id"):
            where += f", SLURM job {metrics['slurm_job_id']}"
        gone = process_gone(metrics)
        job.note = f"started {metrics.get('started', '?')} on {where}" + (
            " (that process is gone: killed?)" if gone else ""
        )
    return job


def find_jobs(sweep_dir: Path) -> list[Job]:
    """Every job directory (one holding ``.hydra/``) under ``sweep_dir``, by job number."""
    dirs = sorted(
        {
            p.parent
            for p in sweep_dir.rglob(".hydra")
            if p.is_dir() and ".submitit" not in p.parts and p.parent != sweep_dir
        }
    )
    return sorted((load_job(d, sweep_dir) for d in dirs), key=lambda j: (j.num, str(j.path)))


def swept_keys(jobs: list[Job]) -> tuple[list[str], dict[str, str]]:
    """Override keys whose value differs between jobs, and the overrides shared by all."""
    keys: list[str] = []
    for job in jobs:
        keys += [k for k in job.overrides if k not in keys]
    varying = [k for k in keys if len({j.overrides.get(k) for j in jobs}) > 1]
    fixed = {k: jobs[0].overrides[k] for k in keys if k not in varying and k in jobs[0].overrides}
    return varying, fixed


def fmt_metric(value: Any, spec: str) -> str:
    """A metric for the table; empty when absent or not a number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return ""
    return spec.format(value) if math.isfinite(value) else str(value)


def short_value(value: str) -> str:
    """A long float (e.g. an Optuna sample) to 4 significant digits; anything else as is."""
    x = as_number(value)
    return f"{x:.4g}" if x is not None and len(value) > 8 and "." in value else value


def one_line(text: str, limit: int = 160) -> str:
    """The first line of an error message, shortened for a table cell."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    if not lines:
        return ""
    head = lines[0] if len(lines) == 1 else f"{lines[0]} {' '.join(lines[1:3])}"
    return head if len(head) <= limit else head[: limit - 1] + "…"


def rows(jobs: list[Job], varying: list[str]) -> tuple[list[str], list[list[str]]]:
    """Table header and one row of strings per job."""
    header = ["job", *varying, "status", *(c[1] for c in METRIC_COLUMNS), "error / note"]
    table = []
    for job in jobs:
        table.append(
            [
                str(job.num),
                *(short_value(job.overrides.get(k, "")) for k in varying),
                job.status,
                *(fmt_metric(job.metrics.get(key), spec) for key, _, spec in METRIC_COLUMNS),
                one_line(job.error or job.note),
            ]
        )
    return header, table


def markdown(header: list[str], table: list[list[str]]) -> str:
    """A GitHub-flavoured Markdown table."""

    def cell(s: str) -> str:
        return s.replace("|", "\\|").replace("\n", " ")

    out = ["| " + " | ".join(cell(h) for h in header) + " |"]
    out.append("|" + "|".join("---" for _ in header) + "|")
    out += ["| " + " | ".join(cell(c) for c in row) + " |" for row in table]
    return "\n".join(out)


def write_csv(path: Path, jobs: list[Job], varying: list[str]) -> None:
    """One row per job: directory, all overrides, swept values, metrics, status, full error."""
    keys = [key for key, _, _ in METRIC_COLUMNS]
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["job", "dir", "overrides", *varying, "status", *keys, "error", "note"])
        for job in jobs:
            w.writerow(
                [
                    job.num,
                    job.path.name,
                    " ".join(f"{k}={v}" for k, v in job.overrides.items()),
                    *(job.overrides.get(k, "") for k in varying),
                    job.status,
                    *(job.metrics.get(k, "") for k in keys),
                    job.error.strip(),
                    job.note,
                ]
            )


def as_number(value: str) -> float | None:
    try:
        x = float(value)
    except ValueError:
        return None
    return x if math.isfinite(x) else None


def plot(path: Path, jobs: list[Job], varying: list[str], title: str) -> None:
    """Held-out PSNR of the completed jobs against each swept parameter (one panel each)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    done = [j for j in jobs if isinstance(j.metrics.get("eval/psnr"), (int, float))]
    params = varying or ["job"]
    fig, axes = plt.subplots(
        1, len(params), figsize=(4.2 * len(params), 3.4), squeeze=False, constrained_layout=True
    )
    for ax, key in zip(axes[0], params, strict=True):
        values = [str(j.num) if key == "job" else j.overrides.get(key, "") for j in done]
        psnrs = np.array([float(j.metrics["eval/psnr"]) for j in done])
        numbers = [as_number(v) for v in values]
        numeric = bool(values) and all(x is not None for x in numbers)
        if numeric:
            xs = np.array(numbers, dtype=float)
            if xs.min() > 0 and xs.max() / xs.min() > 50:
                ax.set_xscale("log")
        else:
            labels = sorted(set(values), key=values.index)
            xs = np.array([labels.index(v) for v in values], dtype=float)
            ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
        uniq = np.unique(xs)
        if len(uniq) < len(xs):  # repeated values: jobs as points, the mean over the others
            ax.scatter(xs, psnrs, alpha=0.5, label="job")
            means = [psnrs[xs == u].mean() for u in uniq]
            ax.plot(uniq, means, "-o", color="C1", label="mean over the other parameters")
            ax.legend(loc="best", fontsize="small")
        else:
            ax.plot(xs[np.argsort(xs)], psnrs[np.argsort(xs)], "-o")
        ax.set_xlabel(key)
        ax.set_ylabel("held-out PSNR (dB)")
        ax.ticklabel_format(axis="y", useOffset=False)
        ax.grid(alpha=0.3)
    n_other = len(jobs) - len(done)
    fig.suptitle(title + (f"  ({n_other} job(s) without a result)" if n_other else ""))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def optuna_results(sweep_dir: Path) -> str:
    """The Optuna sweeper's ``optimization_results.yaml`` as one line ("" when absent)."""
    try:
        res = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return ""
    if not isinstance(res, dict):
        return ""
    params = res.get("best_params") or {}
    shown = " ".join(f"`{k}={short_value(str(v))}`" for k, v in params.items())
    return f"Optuna best: {res.get('best_value')} with {shown}."


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_dir", type=Path, help="the multirun's directory (hydra.sweep.dir)")
    parser.add_argument("--no-plot", action="store_true", help="do not write summary.png")
    args = parser.parse_args(argv)

    sweep_dir: Path = args.sweep_dir
    if not sweep_dir.is_dir():
        print(f"error: {sweep_dir} is not a directory", file=sys.stderr)
        return 2
    if not args.no_plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print(
                "error: summary.png needs matplotlib, which is not installed.\n"
                "  Install the plot extra:  pip install -e '.[plot]'  (or pip install matplotlib)\n"
                "  or skip the plot:        --no-plot",
                file=sys.stderr,
            )
            return 2
    jobs = find_jobs(sweep_dir)
    if not jobs:
        print(f"error: no Hydra job directories (with .hydra/) under {sweep_dir}", file=sys.stderr)
        return 1

    varying, fixed = swept_keys(jobs)
    header, table = rows(jobs, varying)
    order = ["completed", "failed", "interrupted", "running", "missing"]
    statuses = sorted(
        {j.status for j in jobs},
        key=lambda s: (s not in order, order.index(s) if s in order else 0, s),
    )
    counts = {s: sum(j.status == s for j in jobs) for s in statuses}
    print(f"# Sweep {sweep_dir}\n")
    if fixed:
        print("Common overrides: " + " ".join(f"`{k}={v}`" for k, v in fixed.items()) + "\n")
    print(markdown(header, table))
    print("\n" + ", ".join(f"{n} {s}" for s, n in counts.items()) + f" of {len(jobs)} jobs.")
    done = [j for j in jobs if isinstance(j.metrics.get("eval/psnr"), (int, float))]
    if done:
        best = max(done, key=lambda j: j.metrics["eval/psnr"])
        print(f"Best held-out PSNR: {best.metrics['eval/psnr']:.2f} dB (job {best.num}).")

    optuna = optuna_results(sweep_dir)
    if optuna:
        print(optuna)

    write_csv(sweep_dir / "summary.csv", jobs, varying)
    written = [sweep_dir / "summary.csv"]
    if not args.no_plot:
        plot(
            sweep_dir / "summary.png",
            jobs,
            varying,
            title=f"{sweep_dir.parent.name}/{sweep_dir.name}",
        )
        written.append(sweep_dir / "summary.png")
    print("Wrote " + ", ".join(str(p) for p in written), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
