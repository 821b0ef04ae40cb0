"""The hyperparameters a run shows in TensorBoard's HParams dashboard."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

#: The main method settings, shown for every run (after the keys a sweep varies).
HPARAM_KEYS = (
    "model.n_harmonic_functions", "model.n_hidden_neurons", "raysampler.n_rays_per_image",
    "raysampler.n_pts_per_ray", "raysampler.min_depth", "raysampler.max_depth",
    "raysampler.stratified_sampling", "optimizer.lr", "trainer.n_iter", "trainer.batch_size",
    "trainer.precision", "trainer.seed",
)  # fmt: skip


def _short_target(node: Any) -> str | None:
    """``Adam`` for a node with ``_target_: torch.optim.Adam``."""
    target = node.get("_target_") if isinstance(node, DictConfig) else None
    return None if target is None else str(target).rsplit(".", 1)[-1]


def _current_sweep_keys() -> list[str]:
    """The keys this Hydra multirun varies (:func:`nerf_lab.sweep_names.swept_keys`); none
    outside a Hydra job."""
    import sys

    from nerf_lab.sweep_names import swept_keys

    try:
        from hydra.core.hydra_config import HydraConfig

        if not HydraConfig.initialized():
            return []
        params = list((HydraConfig.get().sweeper.get("params") or {}).keys())
    except Exception:  # no Hydra job config
        return []
    return swept_keys(sys.argv[1:], params)


def flat_hparams(cfg: DictConfig, overrides: list[str]) -> dict[str, Any]:
    """The overridden keys first (those a multirun sweeps before the fixed ones), then the
    components (by class name) and the main settings, each as a bool, number or short
    string (no dicts, no ``_target_`` paths)."""
    keys: list[str] = []
    for o in overrides:
        key = o.split("=", 1)[0].lstrip("+~")
        if key.startswith("hydra") or "=" not in o or key in keys:
            continue
        keys.append(key)
    swept = _current_sweep_keys()
    keys = [k for k in swept if k in keys] + [k for k in keys if k not in swept]
    out: dict[str, Any] = {}
    for key in keys + [k for k in HPARAM_KEYS if k not in keys]:
        v = OmegaConf.select(cfg, key, default=None)
        if v is None:
            continue
        if OmegaConf.is_config(v):
            target = _short_target(v)
            if target is None:
                continue
            v = target
        out[key] = v if isinstance(v, bool | int | float | str) else str(v)
    for group in ("model", "raysampler.resampler", "optimizer", "scheduler", "data"):
        target = _short_target(OmegaConf.select(cfg, group, default=None))
        if target is not None and group not in out:
            out[group] = target
    return out
