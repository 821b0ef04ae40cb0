"""Learning-rate schedules: each a ``torch.optim.lr_scheduler`` stepped once per iteration.

A ``scheduler`` config node is a ``_partial_`` called with the optimiser (any class of
``torch.optim.lr_scheduler`` works the same way). nerf_lab's schedules are
:class:`~torch.optim.lr_scheduler.LambdaLR` with picklable factor objects, so their state
goes into checkpoints and resumes exactly. After ``k`` calls of ``step()`` the learning
rate of every parameter group is ``group_lr * factor(k)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from nerf_lab.validate import check_int, check_number, is_number


def decay_milestones(n_iter: int, decay_at: Sequence[float]) -> list[int]:
    """Iterations at which the lr decays: ``round(n_iter * f)`` for each fraction ``f``.

    ``round`` is Python's, as in the tutorial (``iteration == round(n_iter * 0.75)``).
    """
    return sorted(round(n_iter * float(f)) for f in decay_at)


def warmup_factor(step: int, warmup: int, warmup_start: float) -> float:
    """The linear warm-up: ``warmup_start`` at step 0, rising to 1 at step ``warmup``."""
    if step >= warmup:
        return 1.0
    return warmup_start + (1.0 - warmup_start) * step / warmup


class StepFactor:
    """``gamma ** (number of milestones <= step)``, times a linear warm-up over the first
    ``warmup`` steps (from ``warmup_start``; none when ``warmup`` is 0)."""

    def __init__(
        self,
        milestones: Sequence[int],
        gamma: float,
        warmup: int = 0,
        warmup_start: float = 0.01,
    ) -> None:
        self.milestones = sorted(int(m) for m in milestones)
        self.gamma = float(gamma)
        self.warmup = int(warmup)
        self.warmup_start = float(warmup_start)

    def __call__(self, step: int) -> float:
        decay = self.gamma ** sum(step >= m for m in self.milestones)
        return decay * warmup_factor(step, self.warmup, self.warmup_start)


class ExponentialFactor:
    """``gamma ** (step / step_size)`` (PyTorch3D ``projects/nerf``'s schedule)."""

    def __init__(self, gamma: float, step_size: float) -> None:
        self.gamma = float(gamma)
        self.step_size = float(step_size)

    def __call__(self, step: int) -> float:
        return self.gamma ** (step / self.step_size)


class WarmupCosineFactor:
    """Linear warm-up from ``warmup_start`` to 1 over ``warmup`` steps, then a half cosine
    from 1 down to ``min_factor`` at ``n_iter`` (constant afterwards)."""

    def __init__(self, n_iter: int, warmup: int, min_factor: float, warmup_start: float) -> None:
        self.n_iter = int(n_iter)
        self.warmup = int(warmup)
        self.min_factor = float(min_factor)
        self.warmup_start = float(warmup_start)

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return warmup_factor(step, self.warmup, self.warmup_start)
        span = max(self.n_iter - self.warmup, 1)
        t = min(step - self.warmup, span) / span
        return self.min_factor + (1.0 - self.min_factor) * 0.5 * (1.0 + math.cos(math.pi * t))


class ConstantFactor:
    """Always 1."""

    def __call__(self, step: int) -> float:
        return 1.0


class StepDecayLR(torch.optim.lr_scheduler.LambdaLR):
    """:class:`StepFactor` schedule that can also clear the optimiser's state (e.g. Adam's
    moments) when it reaches a milestone, as re-creating the optimiser there would."""

    def __init__(
        self, optimizer: torch.optim.Optimizer, factor: StepFactor, reset_state: bool
    ) -> None:
        # (state_dict() saves every attribute: keep them plain values, not objects)
        self.reset_state = bool(reset_state)
        super().__init__(optimizer, factor)

    def step(self, epoch: int | None = None) -> None:  # type: ignore[override]
        super().step() if epoch is None else super().step(epoch)
        if self.reset_state and self.last_epoch in self.lr_lambdas[0].milestones:
            self.optimizer.state.clear()


def step_decay(
    optimizer: torch.optim.Optimizer,
    n_iter: int,
    decay_at: Sequence[float] = (0.75,),
    gamma: float = 0.1,
    reset_state_at_decay: bool = False,
    warmup: int = 50,
    warmup_start: float = 0.01,
) -> StepDecayLR:
    """The tutorial's schedule (lr times ``gamma`` from ``round(n_iter * f)`` on, per ``f``)
    after a linear learning-rate warm-up.

    Iteration ``i`` (0-based) uses ``lr * gamma ** #{milestones <= i}``, times
    ``warmup_start + (1 - warmup_start) * i / warmup`` while ``i < warmup``
    (``warmup=0``: the tutorial's schedule exactly). The warm-up keeps Adam's first large
    steps from emptying the field of RGB-only scenes (docs/captures.md, section 9). With
    ``reset_state_at_decay`` the optimiser's state is cleared at each milestone (the
    tutorial re-creates Adam at the drop, which also resets its moments).
    """
    check_int("n_iter", n_iter)
    check_int("warmup", warmup, 0)
    check_number("warmup_start", warmup_start, 0, 1)
    if isinstance(decay_at, str | bytes) or not all(
        is_number(f) and 0.0 <= f <= 1.0 for f in decay_at
    ):
        raise ValueError(f"decay_at must be a list of fractions in [0, 1]; got {decay_at!r}.")
    check_number("gamma", gamma, 0, low_open=True)
    return StepDecayLR(
        optimizer,
        StepFactor(decay_milestones(n_iter, decay_at), gamma, warmup, warmup_start),
        reset_state_at_decay,
    )


def exponential_decay(
    optimizer: torch.optim.Optimizer, gamma: float = 0.1, step_size: float = 5000
) -> torch.optim.lr_scheduler.LambdaLR:
    """``lr * gamma ** (iteration / step_size)`` (PyTorch3D ``projects/nerf``: 0.1, 5000)."""
    check_number("gamma", gamma, 0, low_open=True)
    check_number("step_size", step_size, 0, low_open=True)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, ExponentialFactor(gamma, step_size))


def warmup_cosine(
    optimizer: torch.optim.Optimizer,
    n_iter: int,
    warmup: int = 0,
    min_factor: float = 0.01,
    warmup_start: float = 0.01,
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over ``warmup`` iterations, then cosine decay to ``lr * min_factor``."""
    check_int("n_iter", n_iter)
    check_int("warmup", warmup, 0, n_iter)
    check_number("min_factor", min_factor, 0, 1)
    check_number("warmup_start", warmup_start, 0, 1)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, WarmupCosineFactor(n_iter, warmup, min_factor, warmup_start)
    )


def constant(optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LambdaLR:
    """No schedule: the learning rate stays as set."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, ConstantFactor())
