"""A temporary Prefect server left by a killed `beastflow run` is stopped by the next run (issue 12, item 7)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from beastflow.cli.orphans import MARK, reap_orphaned_servers

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc"), reason="needs Linux /proc")


def _fake_server(home: str, run_pid: int) -> subprocess.Popen:
    """Stands in for Prefect's uvicorn child: same environment marks, sleeps."""
    env = dict(os.environ, PREFECT__SERVER_EPHEMERAL="1", PREFECT_HOME=home, **{MARK: str(run_pid)})
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], env=env)


def test_server_of_a_dead_run_is_stopped_and_others_are_not(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    home = str(tmp_path / "prefect-home")
    orphan = _fake_server(home, dead.pid)
    living = _fake_server(home, os.getpid())  # its run is alive
    elsewhere = _fake_server(str(tmp_path / "other-home"), dead.pid)  # another Prefect database
    try:
        import time

        time.sleep(0.5)  # let the children exec
        stopped = reap_orphaned_servers(home)
        assert stopped == [orphan.pid]
        assert orphan.wait(10) != 0
        assert living.poll() is None and elsewhere.poll() is None
    finally:
        for p in (orphan, living, elsewhere):
            if p.poll() is None:
                p.kill()
                p.wait()


def test_run_killed_but_not_yet_reaped_counts_as_dead(tmp_path):
    import signal
    import time

    run = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    os.kill(run.pid, signal.SIGKILL)  # a zombie until this test waits for it
    time.sleep(0.3)
    home = str(tmp_path / "prefect-home")
    orphan = _fake_server(home, run.pid)
    try:
        time.sleep(0.5)
        assert reap_orphaned_servers(home) == [orphan.pid]
        assert orphan.wait(10) != 0
    finally:
        run.wait()
        if orphan.poll() is None:
            orphan.kill()
            orphan.wait()
