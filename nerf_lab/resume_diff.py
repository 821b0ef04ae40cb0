"""What a resume may change: the composed config against the checkpoint's.

``trainer.resume=true`` composes the config from the command line again; it must describe
the same experiment as the checkpoint's. :func:`resume_changes` compares the two (both
resolved, plain containers, data paths absolute) key by key:

* keys that define the experiment (``model``, ``data``, ``raysampler``, ``raymarcher``,
  ``loss``, ``optimizer``, ``scheduler``, ``trainer.seed``, ``trainer.batch_size``,
  ``trainer.precision``, ``trainer.target_lookup``, and every key not listed below) may
  not change: :class:`ResumeConfigError` lists every difference;
* keys that only say how to run (:data:`MUTABLE_TRAINER_KEYS`: ``n_iter``, intervals,
  device, logging, chunk sizes, threads, progress bar, renders, ``resume``/``overwrite``;
  top-level ``name``, ``allow_targets`` and ``logger``; ``raysampler.render_shortcuts``,
  which only acts on renders without autograd) are applied and returned, for the log.
  ``trainer.n_iter`` may not fall below the checkpoint's step.

A key of an experiment group whose value is an interpolation of a mutable key (e.g. a
scheduler's ``total_iters: ${trainer.n_iter}``) follows that key: :func:`derived_keys`
finds them in the unresolved config, and a resume applies their change too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: Trainer keys a resume may change (they do not change what is learnt).
MUTABLE_TRAINER_KEYS = frozenset(
    {
        "n_iter", "resume", "overwrite", "device", "log_every", "render_every", "eval_every",
        "checkpoint_every", "keep_checkpoints", "chunk_size", "train_chunk_size",
        "render_scale", "eval_max_views", "turntable_frames", "turntable_scale",
        "turntable_distance", "skip_nonfinite", "progress_bar", "num_threads", "tune_malloc",
    }
)  # fmt: skip
#: Top-level keys a resume may change.
MUTABLE_TOP_KEYS = frozenset({"name", "allow_targets", "logger"})
#: Nodes a resume may change as a whole (evaluation-only settings).
MUTABLE_NODES = ("raysampler.render_shortcuts",)

_MISSING = "<missing>"


class ResumeConfigError(ValueError):
    """The composed config changes keys that a resume must keep; lists each one."""


def flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted keys → leaf values of nested mappings (lists are leaves)."""
    out: dict[str, Any] = {}
    if isinstance(config, Mapping):
        for k, v in config.items():
            key = f"{prefix}.{k}" if prefix else str(k)
            if isinstance(v, Mapping) and v:
                out.update(flatten(v, key))
            else:
                out[key] = v
    return out


def is_mutable(key: str) -> bool:
    """May a resume change ``key`` (a dotted config key)?"""
    if any(key == n or key.startswith(n + ".") for n in MUTABLE_NODES):
        return True
    head, _, rest = key.partition(".")
    if head == "trainer":
        return rest in MUTABLE_TRAINER_KEYS
    return head in MUTABLE_TOP_KEYS


def derived_keys(unresolved: Mapping[str, Any]) -> set[str]:
    """Dotted keys whose unresolved value interpolates a mutable trainer key
    (``${trainer.n_iter}``, ...)."""
    refs = [f"${{trainer.{k}}}" for k in MUTABLE_TRAINER_KEYS]
    return {
        key
        for key, value in flatten(unresolved).items()
        if isinstance(value, str) and any(r in value for r in refs)
    }


def resume_changes(
    saved: Mapping[str, Any],
    composed: Mapping[str, Any],
    step: int,
    checkpoint: str = "",
    derived: set[str] = frozenset(),
) -> list[tuple[str, Any, Any]]:
    """The differences a resume applies: ``[(key, saved value, new value)]``.

    Args:
        saved: the checkpoint's config (plain containers).
        composed: the config of this start (plain containers, resolved, paths absolute).
        step: the checkpoint's step.
        checkpoint: its path, for messages.
        derived: keys that follow a mutable key (:func:`derived_keys`): applied too.

    Raises:
        ResumeConfigError: listing every key that may not change (saved → new), or
            ``trainer.n_iter`` below ``step``.
    """
    old, new = flatten(saved), flatten(composed)
    refused, applied = [], []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key, _MISSING), new.get(key, _MISSING)
        if a == b:
            continue
        if is_mutable(key) or key in derived:
            applied.append((key, a, b))
        else:
            refused.append(f"{key}: {a!r} -> {b!r}")
    n_iter = new.get("trainer.n_iter")
    where = f" ({checkpoint})" if checkpoint else ""
    if isinstance(n_iter, int) and step > n_iter:
        refused.append(
            f"trainer.n_iter={n_iter}: the checkpoint{where} is already at iteration {step}, "
            f"past trainer.n_iter; raise it to at least {step} to continue"
        )
    if refused:
        lines = "\n".join(f"  - {r}" for r in refused)
        raise ResumeConfigError(
            f"trainer.resume=true: the settings differ from the checkpoint's{where} in "
            f"{len(refused)} key(s) that a resume cannot change:\n{lines}\n"
            "Resume with the original settings (run.json and config_resolved.yaml in the run "
            "directory hold them), or start a new run in another hydra.run.dir."
        )
    return applied
