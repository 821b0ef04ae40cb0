"""Process-level performance settings."""

from __future__ import annotations

import subprocess
import sys

import pytest

from nerf_lab.perf import tune_malloc

# Page faults of 4 steady-state "training steps" in a fresh interpreter, each step
# allocating 320 MiB of large tensors (with small objects between them) and freeing them.
_STEADY_STATE_FAULTS = """
import resource, sys, torch
from nerf_lab.perf import tune_malloc
if sys.argv[1] == "tuned":
    assert tune_malloc()
def step():
    keep = []
    for n in (16, 24, 16, 24):
        keep.append(torch.ones(n * 2**20))
        keep.append(torch.ones(10))
    del keep
for i in range(8):  # warm-up: the heap grows until freed blocks fit the requests
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for i in range(4):
    step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> int:
    out = subprocess.run(
        [sys.executable, "-c", _STEADY_STATE_FAULTS, mode],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc only")
def test_tune_malloc_reuses_large_blocks_without_page_faults():
    # 4 steps x 320 MiB is 327680 pages: untuned glibc maps every large tensor afresh
    # and faults all of its pages in; tuned, the heap's freed blocks are reused (at most
    # one 96 MiB tensor, 24576 pages, was seen to land on fresh heap in 12 runs).
    assert _faults("default") > 300_000
    assert _faults("tuned") < 80_000


def test_tune_malloc_rejects_thresholds_mallopt_cannot_take():
    # mallopt takes a C int: 2**34 would silently wrap to 0 (trim on every free).
    with pytest.raises(ValueError, match="trim_threshold"):
        tune_malloc(trim_threshold=2**34)
