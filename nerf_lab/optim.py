"""Learning-rate schedules."""

from __future__ import annotations

from collections.abc import Sequence

import torch


class StepDecay:
    """``gamma ** (number of milestones <= step)``: a picklable LambdaLR factor."""

    def __init__(self, milestones: Sequence[int], gamma: float) -> None:
        self.milestones = sorted(int(m) for m in milestones)
        self.gamma = float(gamma)

    def __call__(self, step: int) -> float:
        return self.gamma ** sum(step >= m for m in self.milestones)


def decay_milestones(n_iter: int, decay_at: Sequence[float]) -> list[int]:
    """Iterations at which the lr decays: ``round(n_iter * f)`` for each fraction ``f``.

    ``round`` is Python's, as in the tutorial (``iteration == round(n_iter * 0.75)``).
    """
    return sorted(round(n_iter * float(f)) for f in decay_at)


def step_decay_scheduler(
    optimizer: torch.optim.Optimizer,
    n_iter: int,
    decay_at: Sequence[float] = (0.75,),
    gamma: float = 0.1,
) -> torch.optim.lr_scheduler.LambdaLR:
    """The tutorial's schedule: lr times ``gamma`` from ``round(n_iter * f)`` on, per ``f``.

    Step the scheduler once after every optimiser step; iteration ``i`` then uses
    ``lr * gamma ** #{milestones <= i}``.
    """
    for f in decay_at:
        if not 0.0 <= float(f) <= 1.0:
            raise ValueError(f"decay_at fractions must lie in [0, 1]; got {list(decay_at)!r}.")
    if not gamma > 0:
        raise ValueError(f"gamma must be > 0; got {gamma!r}.")
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, StepDecay(decay_milestones(n_iter, decay_at), gamma)
    )
