"""Argument validators: one wording for every "bad value" error in nerf_lab.

Every component validates its own arguments when it is built and raises a ``ValueError``
that names the key, the value and what is allowed. These functions are those checks; each
returns the value (``check_number``: as a ``float``) so that a constructor can check and
store in one line::

    self.n_pts_per_ray = check_int("n_pts_per_ray", n_pts_per_ray)

Two message styles (``style``):

* ``"sentence"`` (default), for a constructor's arguments:
  ``n_pts_per_ray must be a positive integer; got 0.``
* ``"key"``, for config keys and command-line options, where ``name`` is the full key:
  ``trainer.batch_size=0: must be a positive integer.``

What is allowed reads the same in both: ``a positive integer`` (``low=1``), ``an integer
>= 0``, ``an integer in [2, 24]``, ``a finite number > 0``, ``a number in [0, 1)`` (two
bounds make "finite" go without saying), ``true or false``, ``one of ['a', 'b']``.

Booleans are not numbers here (``True`` is not an ``int`` of 1), NaN is never a number,
and infinities are numbers only with ``finite=False``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable
from typing import Any, Literal

__all__ = [
    "Style",
    "check_bool",
    "check_choice",
    "check_int",
    "check_number",
    "collect",
    "invalid",
    "is_int",
    "is_number",
]

#: How a message names the value: ``"sentence"`` or ``"key"`` (see the module docstring).
Style = Literal["sentence", "key"]


def invalid(name: str, value: Any, allowed: str, *, style: Style = "sentence") -> ValueError:
    """The ``ValueError`` for ``name=value`` not being ``allowed`` (e.g. ``"3 numbers"``),
    for checks these functions do not cover; raise it."""
    if style == "key":
        return ValueError(f"{name}={value!r}: must be {allowed}.")
    if style != "sentence":
        raise ValueError(f"style must be one of ['sentence', 'key']; got {style!r}.")
    return ValueError(f"{name} must be {allowed}; got {value!r}.")


def is_int(value: Any) -> bool:
    """``value`` is an ``int`` and not a ``bool``."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any, *, finite: bool = True) -> bool:
    """``value`` is a real number (``int``, ``float``, NumPy scalars; not a ``bool``),
    not NaN, and (``finite``) not infinite."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return False
    return math.isfinite(value) if finite else not math.isnan(value)


def check_int(
    name: str,
    value: Any,
    low: int | None = 1,
    high: int | None = None,
    *,
    style: Style = "sentence",
) -> int:
    """``value`` if it is an integer in ``[low, high]`` (each bound inclusive, ``None``: no
    bound), else ``ValueError`` naming ``name``, ``value`` and the range."""
    if (
        not is_int(value)
        or (low is not None and value < low)
        or (high is not None and value > high)
    ):
        if high is None:
            allowed = {None: "an integer", 1: "a positive integer"}.get(low, f"an integer >= {low}")
        elif low is None:
            allowed = f"an integer <= {high}"
        else:
            allowed = f"an integer in [{low}, {high}]"
        raise invalid(name, value, allowed, style=style)
    return value


def check_number(
    name: str,
    value: Any,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
    finite: bool = True,
    style: Style = "sentence",
) -> float:
    """``float(value)`` if it is a real number within the bounds, else ``ValueError``
    naming ``name``, ``value`` and the range.

    Args:
        low, high: the bounds, inclusive unless ``low_open`` / ``high_open``; ``None``: no
            bound.
        finite: reject infinities (NaN is always rejected).
    """
    ok = is_number(value, finite=finite)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        if low is not None and high is not None:
            rng = f" in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        elif low is not None:
            rng = f" {'>' if low_open else '>='} {low}"
        elif high is not None:
            rng = f" {'<' if high_open else '<='} {high}"
        else:
            rng = ""
        kind = "a finite number" if finite and (low is None or high is None) else "a number"
        raise invalid(name, value, kind + rng, style=style)
    return float(value)


def check_bool(name: str, value: Any, *, style: Style = "sentence") -> bool:
    """``value`` if it is a ``bool``, else ``ValueError`` naming ``name`` (``0``, ``1`` and
    ``"yes"`` are not booleans)."""
    if not isinstance(value, bool):
        raise invalid(name, value, "true or false", style=style)
    return value


def check_choice(
    name: str, value: Any, allowed: Iterable[Any], *, style: Style = "sentence"
) -> Any:
    """``value`` if it is one of ``allowed``, else ``ValueError`` naming ``name``, ``value``
    and the choices."""
    choices = list(allowed)
    if not any(value == c and isinstance(value, bool) == isinstance(c, bool) for c in choices):
        raise invalid(name, value, f"one of {choices}", style=style)
    return value


def collect(
    problems: list[str], check: Callable[..., Any], name: str, value: Any, *args, **kwargs
) -> bool:
    """Run ``check(name, value, *args, style="key", **kwargs)``; on ``ValueError`` append
    its message (without the final period) to ``problems``, for checks that report every
    bad config key at once. Returns whether the value passed."""
    try:
        check(name, value, *args, style="key", **kwargs)
    except ValueError as e:
        problems.append(str(e).removesuffix("."))
        return False
    return True
