"""The small command-line front of ``nerf_lab.eval`` and ``nerf_lab.render`` (and
``nerf_lab.export``): ``key=value`` arguments, ``--help``, one-line errors, exit codes.

Every command also takes ``allow_targets=[my_pkg.*]``: ``_target_`` patterns that the run
directory's config may instantiate besides nerf_lab's own components and ``torch.optim``
classes (a run directory is data; anything else is refused before it is imported)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any

from omegaconf import OmegaConf

#: The argument every command takes: extra ``_target_`` patterns (see the module docstring).
ALLOW_KEY = "allow_targets"


def allow_patterns(value: Any) -> list[str]:
    """``allow_targets=...`` as a list of patterns (one string or a list of strings).

    Raises:
        ValueError: for anything else (naming the argument and the value).
    """
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValueError(
            f"allow_targets={value!r}: must be a pattern or a list of patterns, e.g. "
            "allow_targets=[my_pkg.*]"
        )
    return list(value)


def parse_args(argv: list[str], allowed: set[str], doc: str) -> dict[str, Any]:
    """``key=value`` arguments (Hydra's override syntax, without composition).

    ``--help``/``-h`` prints ``doc`` and exits 0; a bad argument exits 2 with a message.
    """
    if any(a in ("-h", "--help") for a in argv):
        print(doc.strip())
        raise SystemExit(0)
    bad = [a for a in argv if "=" not in a]
    if bad:
        print(f"Arguments must be key=value; got {bad}. Allowed keys: {sorted(allowed)}",
              file=sys.stderr)  # fmt: skip
        raise SystemExit(2)
    args = OmegaConf.to_container(OmegaConf.from_dotlist(argv))
    allowed = set(allowed) | {ALLOW_KEY}
    unknown = sorted(set(args) - allowed)
    if unknown:
        print(f"Unknown argument(s) {unknown}. Allowed keys: {sorted(allowed)}", file=sys.stderr)
        raise SystemExit(2)
    if "run_dir" not in args:
        print("Missing run_dir=DIR (a finished or interrupted training run).", file=sys.stderr)
        raise SystemExit(2)
    return args


def run_command(
    argv: list[str] | None,
    allowed: set[str],
    doc: str,
    work: Callable[[dict[str, Any]], Any],
    show: Callable[[Any], str],
) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``), run ``work(args)``, print ``show(result)``.

    Returns:
        0 on success; 1 after printing a one-line error for a ``ValueError``/``OSError``.
    """
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s] %(message)s")
    from nerf_lab.runs import allowed_targets

    args = parse_args(sys.argv[1:] if argv is None else argv, allowed, doc)
    try:
        patterns = allow_patterns(args.pop(ALLOW_KEY, None))
        with allowed_targets(patterns):
            result = work(args)
    except (ValueError, OSError) as e:
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print(show(result))
    return 0
