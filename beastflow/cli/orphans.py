"""Temporary Prefect API servers left behind by a killed ``beastflow run``.

Without ``PREFECT_API_URL`` Prefect starts a temporary API server as a child
process and stops it when the run exits.  A run killed with SIGKILL cannot
stop it, and the server lives on.  ``beastflow run`` marks the environment it
hands to that child (``BEASTFLOW_RUN_PID``), so the next run can recognise a
server whose run is gone and stop it.  Only servers of the same Prefect home
(the same database) are considered; nothing else on the machine is touched.
"""

from __future__ import annotations

import os
import signal

MARK = "BEASTFLOW_RUN_PID"


def mark_this_run() -> None:
    """Called before Prefect starts: its temporary server inherits the mark."""
    os.environ[MARK] = str(os.getpid())


def _environ(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/environ", "rb") as fh:
        items = fh.read().split(b"\0")
    return dict(i.decode(errors="replace").split("=", 1) for i in items if b"=" in i)


def _alive(pid: int) -> bool:
    """Running (a killed run that nobody reaped yet is a zombie: dead)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def reap_orphaned_servers(prefect_home: str | None = None) -> list[int]:
    """SIGTERM every marked temporary Prefect server of this Prefect home whose run has died."""
    if not os.path.isdir("/proc"):
        return []  # not Linux: nothing to look at
    home = os.path.realpath(os.path.expanduser(prefect_home or os.environ.get("PREFECT_HOME", "~/.prefect")))
    stopped = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        pid = int(entry)
        try:
            env = _environ(pid)
        except OSError:  # gone, or another user's process
            continue
        if env.get("PREFECT__SERVER_EPHEMERAL") != "1" or not env.get(MARK, "").isdigit():
            continue
        server_home = os.path.realpath(os.path.expanduser(env.get("PREFECT_HOME", "~/.prefect")))
        if server_home != home or _alive(int(env[MARK])):
            continue
        try:
            os.kill(pid, signal.SIGTERM)
            stopped.append(pid)
        except ProcessLookupError:
            pass
    return stopped
