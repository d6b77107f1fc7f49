"""One run per output (issue 12, items 6 and 7): the lease on the output root."""

from __future__ import annotations

import json
import multiprocessing
import os
import time

import pytest

from beastflow import lease, storage
from beastflow.lease import OutputBusy, output_lease


def _hold(root: str, ready, release) -> None:
    with output_lease(root):
        ready.set()
        release.wait(30)


def _other_process_holds(root: str):
    ctx = multiprocessing.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    proc = ctx.Process(target=_hold, args=(root, ready, release))
    proc.start()
    assert ready.wait(60), "the holder process did not start"
    return proc, release


def test_second_run_on_one_output_stops_naming_the_holder(tmp_path):
    root = str(tmp_path / "out")
    proc, release = _other_process_holds(root)
    try:
        with pytest.raises(OutputBusy) as err, output_lease(root):
            pass
        msg = str(err.value)
        assert "\n" not in msg and root in msg and f"pid {proc.pid}" in msg
        t0 = time.monotonic()
        with pytest.raises(OutputBusy), output_lease(root, wait_s=1.0):
            pass
        assert time.monotonic() - t0 >= 0.9  # it waited before giving up
    finally:
        release.set()
        proc.join(30)
    with output_lease(root):  # released when its holder finished
        pass


def test_killed_holder_releases_the_lease(tmp_path):
    root = str(tmp_path / "out")
    proc, _release = _other_process_holds(root)
    os.kill(proc.pid, 9)
    proc.join(30)
    with output_lease(root):
        pass


def test_lease_is_reentrant_in_one_process(tmp_path):
    root = str(tmp_path / "out")
    with output_lease(root):
        with output_lease(root):  # a stage flow inside the pipeline
            pass
        with open(os.path.join(root, lease.LOCK_NAME)) as fh:
            assert json.load(fh)["pid"] == os.getpid()


def test_taking_the_lease_removes_temporaries_of_a_killed_run(tmp_path):
    root = tmp_path / "out"
    (root / ".cache" / "fit").mkdir(parents=True)
    stale = [root / ".P_bin0_sub0_lnp.hd5.0123456789ab.tmp.h5", root / ".cache" / "fit" / ".x.json.abcdef012345.tmp"]
    for p in stale:
        p.write_bytes(b"half")
    keep = [root / "P_stats.parquet", root / ".hidden.tmp"]
    for p in keep:
        p.write_bytes(b"ok")
    with output_lease(str(root)):
        assert not any(p.exists() for p in stale)
        assert all(p.exists() for p in keep)


def test_object_store_lease_with_expiry(monkeypatch):
    root = "memory://beastflow-lease-test/run"
    storage.remove(root)
    with output_lease(root):
        lock = storage.read_json(storage.join(root, lease.LOCK_NAME))
        assert lock["pid"] == os.getpid() and lock["expires"] > time.time()
        # another process would find the lock object: simulate it by leaving this process' registry
        monkeypatch.setattr(lease, "_HELD", {})
        with pytest.raises(OutputBusy, match="lock memory://"):
            with output_lease(root):
                pass
        monkeypatch.undo()
    assert not storage.exists(storage.join(root, lease.LOCK_NAME))
    # a lock whose run stopped renewing it has expired: taken over
    storage.write_json(storage.join(root, lease.LOCK_NAME), {"owner": "dead", "expires": time.time() - 1})
    with output_lease(root):
        assert storage.read_json(storage.join(root, lease.LOCK_NAME))["owner"] != "dead"
    # a local run's lock file copied along with the run folder holds no expiry: not a live lock
    storage.write_json(storage.join(root, lease.LOCK_NAME), {"owner": "local", "pid": 1, "expires": None})
    with output_lease(root):
        assert storage.read_json(storage.join(root, lease.LOCK_NAME))["owner"] != "local"


def test_two_threads_of_one_process_exclude_each_other(tmp_path):
    import threading

    root = str(tmp_path / "out")
    outcome = {}

    def second():
        try:
            with output_lease(root):
                outcome["second"] = "ran"
        except OutputBusy as exc:
            outcome["second"] = str(exc)

    with output_lease(root):
        t = threading.Thread(target=second)
        t.start()
        t.join(30)
    assert outcome["second"].startswith(f"output {root} is in use by run")
