"""Run-directory lock (two processes contending), unique run names, absolute data paths."""

from __future__ import annotations

import datetime as dt
import multiprocessing as mp
import os
import signal
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from nerf_lab.rundir import (
    LOCK_NAME,
    RUN_DIR_PATTERN,
    RunDirLock,
    RunDirLockedError,
    absolute_paths,
    process_uid,
    read_lock_holder,
    register_resolvers,
    unique_run_name,
)

# Children fork from a single-threaded fork server that has imported this module once (a
# plain fork of a process running torch's threads is unsafe; spawn re-imports torch per child).
CTX = mp.get_context("forkserver")
CTX.set_forkserver_preload([__name__])
TIMEOUT = 60


def _hold(run_dir: str, locked, release) -> None:
    with RunDirLock(run_dir):
        locked.set()
        release.wait(TIMEOUT)


def _try_lock(run_dir: str, queue) -> None:
    try:
        with RunDirLock(run_dir):
            queue.put(("acquired", os.getpid(), None))
    except RunDirLockedError as e:
        queue.put(("locked", e.pid, str(e)))


def _race(run_dir: str, barrier, queue, release) -> None:
    barrier.wait(TIMEOUT)
    try:
        lock = RunDirLock(run_dir).acquire()
    except RunDirLockedError as e:
        queue.put(("locked", os.getpid(), e.pid))
        return
    queue.put(("acquired", os.getpid(), None))
    release.wait(TIMEOUT)
    lock.release()


def _uid(queue) -> None:
    queue.put((process_uid(), process_uid()))


def test_second_process_gets_an_error_naming_the_holder(tmp_path):
    run_dir = str(tmp_path / "run")
    locked, release, queue = CTX.Event(), CTX.Event(), CTX.Queue()
    holder = CTX.Process(target=_hold, args=(run_dir, locked, release))
    holder.start()
    try:
        assert locked.wait(TIMEOUT)
        contender = CTX.Process(target=_try_lock, args=(run_dir, queue))
        contender.start()
        status, pid, message = queue.get(timeout=TIMEOUT)
        contender.join(TIMEOUT)
        assert status == "locked" and pid == holder.pid
        assert f"PID {holder.pid}" in message and run_dir in message
        assert read_lock_holder(run_dir)[0] == holder.pid
        # in this process too (flock is per open file, not per process)
        with pytest.raises(RunDirLockedError, match=f"PID {holder.pid}"):
            RunDirLock(run_dir).acquire()
    finally:
        release.set()
        holder.join(TIMEOUT)
    assert holder.exitcode == 0
    # released: the next process gets it
    contender = CTX.Process(target=_try_lock, args=(run_dir, queue))
    contender.start()
    status, pid, _ = queue.get(timeout=TIMEOUT)
    contender.join(TIMEOUT)
    assert status == "acquired" and pid == contender.pid


def test_sigkilled_holder_leaves_no_stale_lock(tmp_path):
    run_dir = tmp_path / "run"
    locked, release = CTX.Event(), CTX.Event()
    holder = CTX.Process(target=_hold, args=(str(run_dir), locked, release))
    holder.start()
    assert locked.wait(TIMEOUT)
    os.kill(holder.pid, signal.SIGKILL)
    holder.join(TIMEOUT)
    assert (run_dir / LOCK_NAME).exists()  # the file stays, the lock is gone
    assert read_lock_holder(run_dir)[0] == holder.pid  # stale contents ...
    with RunDirLock(run_dir) as lock:  # ... do not block
        assert lock.held and read_lock_holder(run_dir)[0] == os.getpid()
    assert not lock.held and read_lock_holder(run_dir) == (None, None)


def test_exactly_one_of_many_simultaneous_starts_wins(tmp_path):
    run_dir = str(tmp_path / "run")
    n = 4
    barrier, queue, release = CTX.Barrier(n), CTX.Queue(), CTX.Event()
    procs = [CTX.Process(target=_race, args=(run_dir, barrier, queue, release)) for _ in range(n)]
    for p in procs:
        p.start()
    try:
        results = [queue.get(timeout=TIMEOUT) for _ in range(n)]
    finally:
        release.set()
        for p in procs:
            p.join(TIMEOUT)
    winners = [pid for status, pid, _ in results if status == "acquired"]
    assert len(winners) == 1
    # every loser names the winner
    assert {holder for status, _, holder in results if status == "locked"} == {winners[0]}


def test_lock_in_process_reentry_and_release():
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        lock = RunDirLock(d)
        with lock:
            with pytest.raises(RuntimeError, match="already held"):
                lock.acquire()
            with pytest.raises(RunDirLockedError):
                RunDirLock(d).acquire()
        with RunDirLock(d):  # released by __exit__
            pass


def test_unique_run_name_in_the_same_second():
    t = dt.datetime(2024, 5, 6, 7, 8, 9)
    names = {unique_run_name(t) for _ in range(200)}
    assert len(names) == 200
    assert all(n.startswith("2024-05-06_07-08-09_") and len(n) == 28 for n in names)
    assert unique_run_name(t, uid="abc") == "2024-05-06_07-08-09_abc"


def test_uid_resolver_is_stable_in_a_process_and_differs_between_processes():
    register_resolvers()
    cfg = OmegaConf.create({"name": "nerf", "dir": "outputs/${name}/x_${nerf_lab.uid:}"})
    first, second = cfg.dir, cfg.dir
    assert first == second == f"outputs/nerf/x_{process_uid()}"
    queue = CTX.Queue()
    procs = [CTX.Process(target=_uid, args=(queue,)) for _ in range(2)]
    for p in procs:
        p.start()
    uids = [queue.get(timeout=TIMEOUT) for _ in procs]
    for p in procs:
        p.join(TIMEOUT)
    assert all(a == b for a, b in uids)
    assert len({a for a, _ in uids} | {process_uid()}) == 3


def test_run_dir_pattern_composes_with_hydra(tmp_path):
    from hydra import compose, initialize_config_dir

    from nerf_lab.train import CONF_DIR

    register_resolvers()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(
            config_name="config",
            overrides=[f"hydra.run.dir={RUN_DIR_PATTERN}"],
            return_hydra_config=True,
        )
    run_dir = Path(str(cfg.hydra.run.dir))
    assert run_dir.parent == Path("outputs") / cfg.name
    assert run_dir.name.endswith("_" + process_uid())


def test_absolute_paths(tmp_path):
    cfg = {"data": {"path": "scenes/lego", "data_dir": None}, "other": {"path": "rel"}}
    out = absolute_paths(cfg, base=tmp_path)
    assert out["data"]["path"] == str(tmp_path / "scenes" / "lego")
    assert out["data"]["data_dir"] is None and out["other"]["path"] == "rel"
    assert cfg["data"]["path"] == "scenes/lego"  # a copy
    home = absolute_paths({"data": {"path": "~/x/../y"}})["data"]["path"]
    assert home == str(Path.home() / "y")
    assert absolute_paths({"data": {"path": "/a/b"}}, base=tmp_path)["data"]["path"] == "/a/b"
    assert absolute_paths({"data": {"path": "???"}})["data"]["path"] == "???"
    assert absolute_paths({"model": {}}) == {"model": {}}
