"""Checkpoint files under failure: kills mid-write, retention, unreadable resumes, full
disks, umask, run ownership and JSON without NaN."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from nerf_lab import checkpoint as ckpt
from nerf_lab.checkpoint import (
    LATEST,
    CheckpointError,
    DiskFullError,
    RunDirOwnedError,
    atomic_write_bytes,
    check_directory_owner,
    checkpoint_run_id,
    clean_stale_temporaries,
    current_umask,
    list_checkpoints,
    load_latest,
    new_run_id,
    read_run_json,
    resolve_resume,
    save_checkpoint,
    write_json_atomic,
    write_run_json,
)

REPO = Path(__file__).resolve().parents[1]
HAS_DEV_FULL = Path("/dev/full").exists()


def _state(step: int) -> dict:
    return {"step": step, "model": {"w": torch.full((3,), float(step))}}


def _steps(directory: Path) -> list[int]:
    return [int(p.name[5:13]) for p in list_checkpoints(directory)]


def _tmp_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


# ----------------------------------------------------------------------------- temporaries

KILLED_WRITER = """
import sys, time
from pathlib import Path
from nerf_lab.checkpoint import save_checkpoint
import torch

class Slow:
    # pickled inside torch.save: the temporary file exists, the checkpoint does not yet
    def __reduce__(self):
        print("writing", flush=True)
        time.sleep(600)
        return (int, (0,))

save_checkpoint(Path(sys.argv[1]), {"step": 7, "model": {}, "slow": Slow()}, 7, keep=3)
"""


def test_sigkill_during_a_checkpoint_write_leaves_a_temporary_that_is_cleaned(tmp_path):
    d = tmp_path / "checkpoints"
    save_checkpoint(d, _state(5), 5)
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, str(d)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "writing"
    finally:
        proc.kill()
        proc.wait(60)
    leaked = _tmp_files(d)
    assert len(leaked) == 1 and leaked[0].startswith(".step_00000007.pt.")  # the problem
    assert _steps(d) == [5] and (d / LATEST).read_text().strip() == "step_00000005.pt"

    decoys = ["foo.tmp", ".lock", ".x.tmp", ".step_00000001.pt.short.tmp", "keep.pt"]
    for name in decoys:
        (d / name).write_text("x")
    (d / ".dir.abcdefgh.tmp").mkdir()  # not a file: left alone
    removed = clean_stale_temporaries(d)
    assert [p.name for p in removed] == leaked
    assert _tmp_files(d) == [
        ".dir.abcdefgh.tmp",
        ".step_00000001.pt.short.tmp",
        ".x.tmp",
        "foo.tmp",
    ]
    assert all((d / n).exists() for n in decoys)
    assert load_latest(d)[0]["step"] == 5


def test_save_cleans_temporaries_and_older_than_keeps_fresh_ones(tmp_path):
    d = tmp_path / "c"
    d.mkdir()
    old, fresh = d / ".step_00000002.pt.a1b2c3d4.tmp", d / ".latest.zz__9x8w.tmp"
    old.write_bytes(b"partial")
    fresh.write_bytes(b"partial")
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    assert clean_stale_temporaries(d, older_than_s=60) == [old]
    assert fresh.exists() and not old.exists()
    save_checkpoint(d, _state(3), 3)
    assert _tmp_files(d) == []
    assert clean_stale_temporaries(tmp_path / "missing") == []


# ----------------------------------------------------------------------------- retention


def test_four_kept_with_keep_3_is_reproduced_and_fixed(tmp_path):
    # Run A wrote 1000, 1500, 2000 (keep=3). Run B then starts in the same directory (the
    # same-second default run name) and saves 500: the old pruning skipped the file just
    # saved when it sorted among the oldest, so 4 stayed; and B's later fallback would pick A's.
    d = tmp_path / "checkpoints"
    for step in (1000, 1500, 2000):
        save_checkpoint(d, _state(step), step, keep=3)
    # the old rule, `for old in list_checkpoints(d)[:-keep]: if old != path: unlink(old)`:
    after_save = sorted([*list_checkpoints(d), d / "step_00000500.pt"])
    assert after_save[:-3] == [d / "step_00000500.pt"]  # only the new file: skipped, 4 stay
    save_checkpoint(d, _state(500), 500, keep=3)
    assert _steps(d) == [500]
    for step in (600, 700, 800, 900):
        save_checkpoint(d, _state(step), step, keep=3)
    assert _steps(d) == [700, 800, 900]
    (d / "step_00000900.pt").write_bytes(b"corrupt")
    assert load_latest(d)[0]["step"] == 800  # never one of run A's


def _model_prune(on_disk: set[int], step: int, keep: int) -> set[int]:
    """Plain-loop model of retention: the new step and the keep-1 newest before it."""
    before = sorted(s for s in on_disk if s < step)
    kept = {step}
    for s in reversed(before):
        if len(kept) == keep:
            break
        kept.add(s)
    return kept


@pytest.mark.parametrize("seed", range(3))
def test_retention_matches_a_plain_model_on_random_save_sequences(tmp_path, seed):
    rng = random.Random(seed)
    d = tmp_path / "c"
    model: set[int] = set()
    step = 0
    for _ in range(25):
        step = max(0, step + rng.choice([1, 2, 5, -3, -7]))  # resumes fall back sometimes
        keep = rng.choice([1, 2, 3, 5])
        save_checkpoint(d, {"step": step, "model": {}}, step, keep=keep)
        model = _model_prune(model, step, keep)
        assert set(_steps(d)) == model
        assert len(_steps(d)) <= keep
        assert load_latest(d)[0]["step"] == step
    with pytest.raises(ValueError, match="keep"):
        save_checkpoint(d, {"step": 1, "model": {}}, 1, keep=0)


# ----------------------------------------------------------------------------- resume


def test_resume_with_only_unreadable_checkpoints_is_an_error(tmp_path, caplog):
    d = tmp_path / "checkpoints"
    assert resolve_resume(d) is None  # nothing there: a first start
    d.mkdir()
    assert resolve_resume(d) is None
    for step in (1, 2):
        save_checkpoint(d, _state(step), step, keep=3)
    for p in list_checkpoints(d):
        p.write_bytes(p.read_bytes()[:50])  # truncated
    assert load_latest(d) is None  # the old behaviour: looks like "no checkpoint" ...
    with pytest.raises(CheckpointError, match=r"step_00000002.pt: unreadable.*step_00000001.pt"):
        resolve_resume(d)  # ... now an error
    with pytest.raises(CheckpointError, match="iteration 0"):
        load_latest(d, strict=True)
    for p in list_checkpoints(d):
        p.unlink()
    with pytest.raises(CheckpointError, match="'latest' names a missing file"):
        resolve_resume(d)  # the pointer says there were checkpoints


def test_resume_skips_checkpoints_of_another_run(tmp_path):
    d = tmp_path / "checkpoints"
    save_checkpoint(d, _state(1), 1, run_id="aaa")
    save_checkpoint(d, _state(2), 2, run_id="bbb")
    state, path = resolve_resume(d, run_id="aaa")
    assert state["step"] == 1 and checkpoint_run_id(state) == "aaa"
    assert resolve_resume(d)[0]["step"] == 2  # no run id given: the newest
    with pytest.raises(CheckpointError, match="run bbb"):
        resolve_resume(d, run_id="ccc")
    legacy = tmp_path / "legacy"
    save_checkpoint(legacy, _state(4), 4)
    assert resolve_resume(legacy, run_id="ccc")[0]["step"] == 4  # no run id stored: accepted
    assert checkpoint_run_id(_state(4)) is None


def test_run_id_in_checkpoints_and_run_json(tmp_path):
    rid = new_run_id()
    assert len(rid) == 16 and rid != new_run_id()
    state = _state(3)
    path = save_checkpoint(tmp_path / "checkpoints", state, 3, run_id=rid)
    assert "run_id" not in state  # the caller's dict is unchanged
    assert checkpoint_run_id(torch.load(path, weights_only=True)) == rid
    first = write_run_json(tmp_path, rid, argv=["x"])
    time.sleep(0.01)
    second = write_run_json(tmp_path, rid)
    info = read_run_json(tmp_path)
    assert info["run_id"] == rid and info["pid"] == os.getpid()
    assert second["created"] == first["created"] < second["updated"]
    (tmp_path / "run.json").write_text("{broken")
    assert read_run_json(tmp_path) is None


def test_directory_owner(tmp_path):
    run_dir = tmp_path / "run"
    a, b = new_run_id(), new_run_id()
    assert check_directory_owner(run_dir, a, resume=False) == a  # empty: fresh start
    write_run_json(run_dir, a)
    save_checkpoint(run_dir / "checkpoints", _state(5), 5, run_id=a)
    (run_dir / "metrics.json").write_text("{}")
    assert check_directory_owner(run_dir, a, resume=False) == a  # its own
    with pytest.raises(RunDirOwnedError, match=rf"checkpoints of run {a}.*trainer.resume=true"):
        check_directory_owner(run_dir, b, resume=False)
    assert check_directory_owner(run_dir, b, resume=True) == a  # resume adopts the run
    (run_dir / "run.json").unlink()
    assert check_directory_owner(run_dir, b, resume=True) == a  # ... from the checkpoint
    with pytest.raises(RunDirOwnedError, match="an earlier run"):
        check_directory_owner(run_dir, b, resume=False)
    assert check_directory_owner(run_dir, b, resume=False, overwrite=True) == b
    assert list_checkpoints(run_dir / "checkpoints") == []
    assert not (run_dir / "checkpoints" / LATEST).exists()
    assert not (run_dir / "metrics.json").exists()
    assert check_directory_owner(tmp_path / "new", b, resume=True) == b  # nothing to resume


# ----------------------------------------------------------------------------- full disk


def _fill_dev_full(f) -> None:
    f.write(b"header")
    with open("/dev/full", "wb") as full:
        full.write(b"x" * 100_000)


@pytest.mark.skipif(not HAS_DEV_FULL, reason="needs /dev/full")
def test_enospc_is_reported_as_no_space_left_on_the_directory(tmp_path):
    with pytest.raises(DiskFullError, match=rf"no space left on {tmp_path} \(.* MiB free\)") as e:
        atomic_write_bytes(tmp_path / "x.bin", _fill_dev_full)
    assert e.value.errno == 28 and isinstance(e.value, OSError)
    assert "No space left on device" in str(e.value)
    assert list(tmp_path.iterdir()) == []  # no temporary left


@pytest.mark.skipif(not HAS_DEV_FULL, reason="needs /dev/full")
def test_torch_unexpected_pos_is_reported_as_no_space_left(tmp_path, monkeypatch):
    d = tmp_path / "checkpoints"
    save_checkpoint(d, _state(1), 1)
    real_save = torch.save
    # torch's own zip writer on a full device: "[enforce fail at inline_container.cc:...]
    # . unexpected pos ..." (a RuntimeError that does not say the disk is full)
    big = {"step": 2, "model": {"w": torch.zeros(100_000)}}
    with pytest.raises(RuntimeError, match="unexpected pos|PytorchStreamWriter"):
        real_save(big, "/dev/full")
    monkeypatch.setattr(torch, "save", lambda obj, f: real_save(obj, "/dev/full"))
    with pytest.raises(DiskFullError, match=f"no space left on {d}"):
        save_checkpoint(d, big, 2)
    monkeypatch.undo()
    assert _tmp_files(d) == [] and _steps(d) == [1]
    assert load_latest(d)[0]["step"] == 1


def test_other_errors_pass_through_unchanged(tmp_path):
    def boom(f):
        raise ValueError("not a disk problem")

    with pytest.raises(ValueError, match="not a disk problem"):
        atomic_write_bytes(tmp_path / "x", boom)
    assert list(tmp_path.iterdir()) == []
    assert not ckpt.is_disk_full_error(RuntimeError("something else"))
    assert ckpt.is_disk_full_error(OSError(122, "Disk quota exceeded"))


# ----------------------------------------------------------------------------- umask


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_files_get_the_users_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        assert current_umask() == umask
        atomic_write_bytes(tmp_path / "a.bin", lambda f: f.write(b"x"))
        path = save_checkpoint(tmp_path / "c", _state(1), 1)
    finally:
        os.umask(old)
    for p in (tmp_path / "a.bin", path, tmp_path / "c" / LATEST):
        assert p.stat().st_mode & 0o777 == 0o666 & ~umask, p


# ----------------------------------------------------------------------------- JSON


def _strict_loads(text: str):
    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


def test_json_never_contains_nan(tmp_path):
    data = {
        "eval/psnr": float("nan"),
        "eval/psnr_per_view": [20.0, float("inf"), -float("inf")],
        "nested": {"x": np.float32("nan"), "y": torch.tensor(1.5), "z": np.arange(2)},
        "status": "completed",
        "ok": 1.0,
        "path": Path("/a"),
    }
    bad = write_json_atomic(tmp_path / "m.json", data)
    out = _strict_loads((tmp_path / "m.json").read_text())
    expected_bad = [
        "eval/psnr",
        "eval/psnr_per_view[1]",
        "eval/psnr_per_view[2]",
        "nested.x",
    ]
    assert bad == expected_bad and out["nonfinite_keys"] == expected_bad
    assert out["eval/psnr"] is None and out["eval/psnr_per_view"] == [20.0, None, None]
    assert out["nested"] == {"x": None, "y": 1.5, "z": [0, 1]}
    assert out["status"] == "completed" and out["ok"] == 1.0 and out["path"] == "/a"
    assert write_json_atomic(tmp_path / "f.json", {"a": 1.0}) == []
    assert "nonfinite_keys" not in _strict_loads((tmp_path / "f.json").read_text())
    with pytest.raises(TypeError, match="object is not JSON serialisable"):
        write_json_atomic(tmp_path / "g.json", {"a": object()})
    assert not (tmp_path / "g.json").exists()


def test_an_interrupted_write_leaves_the_old_file(tmp_path):
    # atomicity (regression): an exception inside write keeps the previous content
    target = tmp_path / "m.json"
    write_json_atomic(target, {"v": 1})

    def interrupted(f):
        f.write(b'{"v": 2')
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write_bytes(target, interrupted)
    assert json.loads(target.read_text()) == {"v": 1} and _tmp_files(tmp_path) == []
