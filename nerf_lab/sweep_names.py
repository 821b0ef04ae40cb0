"""Sweep job folder names that start with what differs between the jobs.

Hydra's ``override_dirname`` sorts the overrides alphabetically, so in
``-m data=procedural model.n_harmonic_functions=4,8`` every job folder starts with the
same ``data=procedural``. :func:`sweep_dirname` (the ``nerf_lab.sweep_dirname`` resolver,
used by ``hydra.sweep.subdir``) puts the swept keys first, in command-line order, then
the fixed ones sorted.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from typing import Any


def _parse(lines: Iterable[str]) -> list[Any]:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    out = []
    for line in lines:
        try:
            out.extend(parser.parse_overrides([str(line)]))
        except Exception:  # not an override (e.g. a flag): ignore it
            continue
    return out


def swept_keys(argv: Sequence[str], sweeper_params: Iterable[str] = ()) -> list[str]:
    """Keys a multirun varies: command-line sweeps (``a=1,2``, ``range()``, ``choice()``,
    ``glob()``) in ``argv`` and the sweeper's ``params`` keys, in that order, no repeats."""
    keys: list[str] = []
    for o in _parse(a for a in argv if not str(a).startswith("-")):
        if o.is_sweep_override() and o.key_or_group not in keys:
            keys.append(o.key_or_group)
    for k in sweeper_params:
        k = str(k).lstrip("+~")
        if k not in keys:
            keys.append(k)
    return keys


def order_overrides(
    task_overrides: Sequence[str], swept: Sequence[str], exclude_keys: Iterable[str] = ()
) -> list[str]:
    """The job's overrides without ``exclude_keys``: swept keys first (in ``swept``'s order),
    then the others sorted as Hydra sorts them."""
    exclude = set(exclude_keys)
    parsed = [o for o in _parse(task_overrides) if o.key_or_group not in exclude]
    rank = {k: i for i, k in enumerate(swept)}
    first = sorted(
        (o for o in parsed if o.key_or_group in rank), key=lambda o: rank[o.key_or_group]
    )
    rest = sorted(o.input_line for o in parsed if o.key_or_group not in rank)
    return [o.input_line for o in first] + rest


def sweep_dirname(task_overrides: Sequence[str], exclude_keys: Sequence[str] = ()) -> str:
    """The resolver: ``k=v,...`` with the swept keys first, made file-system safe
    (:func:`nerf_lab.config.job_dirname`)."""
    from nerf_lab.config import job_dirname

    params: Iterable[str] = ()
    try:
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.initialized():
            params = list((HydraConfig.get().sweeper.get("params") or {}).keys())
    except Exception:  # outside a Hydra job
        params = ()
    keys = swept_keys(sys.argv[1:], params)
    return job_dirname(",".join(order_overrides(list(task_overrides), keys, list(exclude_keys))))
