"""nerf_lab.validate: the argument checks every component uses."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from nerf_lab.validate import (
    check_bool,
    check_choice,
    check_int,
    check_number,
    collect,
    invalid,
    is_int,
    is_number,
)


def raises(message: str):
    return pytest.raises(ValueError, match=f"^{re.escape(message)}$")


# --------------------------------------------------------------------------- predicates


def test_is_int_excludes_bools_and_floats():
    assert is_int(0) and is_int(-3) and is_int(10**20)
    for v in (True, False, 1.0, "1", None, [1]):
        assert not is_int(v), v


def test_is_number_excludes_bools_nan_and_by_default_infinities():
    assert (
        is_number(0) and is_number(-2.5) and is_number(np.float32(1.5)) and is_number(np.int64(3))
    )
    for v in (True, False, "1", None, math.nan, [1.0]):
        assert not is_number(v) and not is_number(v, finite=False), v
    assert not is_number(math.inf) and not is_number(-math.inf)
    assert is_number(math.inf, finite=False) and is_number(-math.inf, finite=False)


# --------------------------------------------------------------------------- check_int


def test_check_int_returns_the_value():
    assert check_int("n", 3) == 3
    assert check_int("n", 0, 0) == 0
    assert check_int("n", -5, None) == -5
    assert check_int("n", 24, 1, 24) == 24  # both bounds inclusive


@pytest.mark.parametrize(
    "args,message",
    [
        (("n", 0), "n must be a positive integer; got 0."),
        (("n", True), "n must be a positive integer; got True."),  # bools are not ints
        (("n", 2.0), "n must be a positive integer; got 2.0."),
        (("n", "3"), "n must be a positive integer; got '3'."),
        (("n", None), "n must be a positive integer; got None."),
        (("n", -1, 0), "n must be an integer >= 0; got -1."),
        (("n", 1, 2), "n must be an integer >= 2; got 1."),
        (("n", 25, 1, 24), "n must be an integer in [1, 24]; got 25."),
        (("n", 0, 1, 24), "n must be an integer in [1, 24]; got 0."),
        (("n", 11, None, 10), "n must be an integer <= 10; got 11."),
        (("n", False, None), "n must be an integer; got False."),
    ],
)
def test_check_int_rejects(args, message):
    with raises(message):
        check_int(*args)


def test_key_style_names_the_full_key():
    with raises("trainer.batch_size=0: must be a positive integer."):
        check_int("trainer.batch_size", 0, style="key")
    with raises("fps=-1: must be a finite number > 0."):
        check_number("fps", -1, 0, low_open=True, style="key")
    with raises("progress='yes': must be true or false."):
        check_bool("progress", "yes", style="key")
    with raises("what='x': must be one of ['mesh', 'depth']."):
        check_choice("what", "x", ("mesh", "depth"), style="key")
    with pytest.raises(ValueError, match="style must be one of"):
        check_int("n", 0, style="loud")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- check_number


def test_check_number_returns_a_float():
    assert check_number("x", 1) == 1.0 and isinstance(check_number("x", 1), float)
    assert check_number("x", 0, 0) == 0.0  # closed bound
    assert check_number("x", 1, 0, 1) == 1.0
    assert check_number("x", math.inf, 0, finite=False) == math.inf
    assert check_number("x", np.float32(0.5), 0, 1) == 0.5


@pytest.mark.parametrize(
    "args,kwargs,message",
    [
        (("x", 0, 0), {"low_open": True}, "x must be a finite number > 0; got 0."),
        (("x", -1, 0), {}, "x must be a finite number >= 0; got -1."),
        (("x", 2, None, 1), {}, "x must be a finite number <= 1; got 2."),
        (("x", 1, None, 1), {"high_open": True}, "x must be a finite number < 1; got 1."),
        (("x", 1.5, 0, 1), {}, "x must be a number in [0, 1]; got 1.5."),
        (("x", 1.0, 0, 1), {"high_open": True}, "x must be a number in [0, 1); got 1.0."),
        (("x", 0, 0, 1), {"low_open": True}, "x must be a number in (0, 1]; got 0."),
        (
            ("x", 180, 0, 180),
            {"low_open": True, "high_open": True},
            "x must be a number in (0, 180); got 180.",
        ),
        (("x", math.nan), {}, "x must be a finite number; got nan."),
        (("x", math.nan), {"finite": False}, "x must be a number; got nan."),
        (("x", math.inf), {}, "x must be a finite number; got inf."),
        (("x", math.inf, 0), {"low_open": True}, "x must be a finite number > 0; got inf."),
        (("x", -math.inf, 0), {"finite": False}, "x must be a number >= 0; got -inf."),
        (("x", True), {}, "x must be a finite number; got True."),
        (("x", "1"), {}, "x must be a finite number; got '1'."),
        (("x", None, 0), {}, "x must be a finite number >= 0; got None."),
    ],
)
def test_check_number_rejects(args, kwargs, message):
    with raises(message):
        check_number(*args, **kwargs)


# --------------------------------------------------------------------------- bool, choice


def test_check_bool():
    assert check_bool("flag", True) is True and check_bool("flag", False) is False
    for v, shown in ((1, "1"), (0, "0"), ("yes", "'yes'"), (None, "None")):
        with raises(f"flag must be true or false; got {shown}."):
            check_bool("flag", v)


def test_check_choice():
    assert check_choice("kind", "mse", ("huber", "mse")) == "mse"
    assert check_choice("mode", None, ("a", None)) is None
    with raises("kind must be one of ['huber', 'mse']; got 'l3'."):
        check_choice("kind", "l3", ("huber", "mse"))
    with raises("n must be one of [1, 2]; got True."):  # True == 1, but it is not a choice
        check_choice("n", True, (1, 2))


# --------------------------------------------------------------------------- invalid, collect


def test_invalid_builds_the_same_message_shapes():
    assert str(invalid("spacing", 0, "a finite number > 0 or null")) == (
        "spacing must be a finite number > 0 or null; got 0."
    )
    assert str(invalid("a.b", [1], "3 numbers", style="key")) == "a.b=[1]: must be 3 numbers."


def test_collect_gathers_key_style_problems():
    problems: list[str] = []
    assert collect(problems, check_int, "trainer.n_iter", 5)
    assert not collect(problems, check_int, "trainer.n_iter", 0)
    assert not collect(problems, check_number, "data.azimuth_range", 400, 0, 180)
    assert problems == [
        "trainer.n_iter=0: must be a positive integer",
        "data.azimuth_range=400: must be a number in [0, 180]",
    ]
