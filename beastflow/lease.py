"""One run per output: a lease on the output root for the duration of a run.

Two runs writing one output (a run from the UI, the nightly schedule and the
catalog watch) would interleave their artifacts and cache records.  A run
therefore holds a lease on its output root:

* **local disk**: an OS lock (``flock``) on ``{output}/.beastflow.lock``.  The
  kernel releases it when the process ends, also after ``kill -9``, so a
  crashed run never blocks the next one.
* **object stores (S3, ...)**: a lock object ``{output}/.beastflow.lock``
  created with a conditional put (``If-None-Match: *``), holding its owner and
  an expiry that a background thread renews; a lock whose expiry has passed
  (its run died) is taken over.

A second run waits up to ``wait_s`` seconds, then stops with ``OutputBusy``,
one line naming the holder (host, process, start time).  The lease is
re-entrant within a process: the pipeline holds it and the stage flows it
calls pass through.  Taking the lease also removes the temporary files that an
interrupted run left behind (nobody else can be writing them).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

from beastflow import storage

LOCK_NAME = ".beastflow.lock"
#: seconds an object-store lock stays valid without renewal (renewed every third of it)
DEFAULT_TTL_S = 600.0

#: temporaries of ``storage.atomic_write`` / ``local_copy_for_write``: ".{name}.{12 hex}.tmp[.ext]"
_TEMPORARY = re.compile(r"^\..+\.[0-9a-f]{12}\.tmp(\.[A-Za-z0-9]+)?$")


class OutputBusy(RuntimeError):
    """Another run holds the output; the message names it."""


#: output root -> [thread holding it, depth]: re-entrant for that thread only, so two runs
#: started in threads of one process (a worker serving several flow runs) still exclude each other
_HELD: dict[str, list[int]] = {}
_HELD_LOCK = threading.Lock()


def _key(root: str) -> str:
    proto, path = storage._canonical(root)
    return f"{proto}://{path}"


def _holder_text(info: dict[str, Any] | None) -> str:
    if not info:
        return "another run (no owner recorded)"
    return (
        f"run {info.get('owner', '?')} (host {info.get('host', '?')}, pid {info.get('pid', '?')}, "
        f"since {info.get('started', '?')})"
    )


def _owner_record(ttl_s: float) -> dict[str, Any]:
    now = time.time()
    return {
        "owner": uuid.uuid4().hex[:12],
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": _dt.datetime.fromtimestamp(now, _dt.UTC).isoformat(timespec="seconds"),
        "expires": now + ttl_s,
    }


# --------------------------------------------------------------------------
# local disk: flock
# --------------------------------------------------------------------------
@contextlib.contextmanager
def _local_lease(root: str, wait_s: float) -> Iterator[None]:
    import fcntl

    folder = root.split("://", 1)[1] if "://" in root else root
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, LOCK_NAME)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    try:
                        with open(path) as fh:
                            info = json.loads(fh.read() or "null")
                    except (OSError, ValueError):
                        info = None
                    raise OutputBusy(
                        f"output {root} is in use by {_holder_text(info)}; wait for it to finish "
                        "or set another project.output"
                    ) from None
                time.sleep(min(1.0, max(0.05, deadline - time.monotonic())))
        rec = json.dumps(_owner_record(0.0) | {"expires": None}).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, rec, 0)
        yield
    finally:
        os.close(fd)  # releases the flock


# --------------------------------------------------------------------------
# object stores: conditional put + expiry
# --------------------------------------------------------------------------
def _create_exclusive(fs, path: str, data: bytes) -> bool:
    """Create ``path`` only if it does not exist (S3: If-None-Match: *); False if it exists."""
    try:
        fs.pipe_file(path, data, mode="create")
        return True
    except FileExistsError:
        return False
    except TypeError:  # a file system without exclusive create: best effort
        if fs.exists(path):
            return False
        fs.pipe_file(path, data)
        return True
    except Exception as exc:  # S3 may report the failed precondition as an error code
        if "PreconditionFailed" in str(exc) or "412" in str(exc):
            return False
        raise


def _read_lock(fs, path: str) -> dict[str, Any] | None:
    try:
        return json.loads(fs.cat_file(path))
    except FileNotFoundError:
        return None
    except ValueError:
        return {}


@contextlib.contextmanager
def _object_lease(root: str, wait_s: float, ttl_s: float) -> Iterator[None]:
    url = storage.join(root, LOCK_NAME)
    fs, path = storage.filesystem(url)
    rec = _owner_record(ttl_s)
    deadline = time.monotonic() + wait_s
    while True:
        if _create_exclusive(fs, path, json.dumps(rec).encode()):
            break
        info = _read_lock(fs, path)
        expires = info.get("expires") if info is not None else None
        if info is not None and (not isinstance(expires, (int, float)) or expires < time.time()):
            # its run stopped renewing it (killed), or it is no lock object at all (a local run's
            # lock file copied along with the run folder, an unreadable object): take it over
            with contextlib.suppress(FileNotFoundError):
                fs.rm_file(path)
            continue
        if info is None:
            continue  # released between our put and our read
        if time.monotonic() >= deadline:
            raise OutputBusy(
                f"output {root} is in use by {_holder_text(info)} (lock {url}); wait for it to finish "
                "or set another project.output"
            )
        time.sleep(min(2.0, max(0.05, deadline - time.monotonic())))

    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(ttl_s / 3):
            cur = _read_lock(fs, path)
            if not cur or cur.get("owner") != rec["owner"]:
                return  # taken over after an expiry: nothing left to renew
            fs.pipe_file(path, json.dumps(rec | {"expires": time.time() + ttl_s}).encode())

    thread = threading.Thread(target=renew, name="beastflow-lease", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        cur = _read_lock(fs, path)
        if cur and cur.get("owner") == rec["owner"]:
            with contextlib.suppress(FileNotFoundError):
                fs.rm_file(path)


# --------------------------------------------------------------------------
def remove_stale_temporaries(root: str) -> list[str]:
    """Delete the temporary files interrupted writes left below ``root`` (call only under the lease)."""
    fs, path = storage.filesystem(root)
    if not fs.exists(path):
        return []
    proto = storage.protocol(root)
    removed = []
    for p in fs.find(path):
        if _TEMPORARY.match(p.rsplit("/", 1)[-1]):
            with contextlib.suppress(FileNotFoundError):
                fs.rm_file(p)
            removed.append(p if proto == "file" else f"{proto}://{p}")
    return removed


@contextlib.contextmanager
def output_lease(root: str, wait_s: float = 0.0, ttl_s: float = DEFAULT_TTL_S) -> Iterator[None]:
    """Hold the lease on the output root ``root`` (re-entrant within this process)."""
    key = _key(root)
    me = threading.get_ident()
    with _HELD_LOCK:
        held = _HELD.get(key)
        mine = held if held is not None and held[0] == me else None
        if mine is not None:
            mine[1] += 1
    if mine is not None:  # this thread holds it already: count the nesting
        try:
            yield
        finally:
            with _HELD_LOCK:
                mine[1] -= 1
        return
    lease = _local_lease(root, wait_s) if storage.protocol(root) == "file" else _object_lease(root, wait_s, ttl_s)
    with lease:
        with _HELD_LOCK:
            _HELD[key] = [me, 1]
        try:
            remove_stale_temporaries(root)
            yield
        finally:
            with _HELD_LOCK:
                _HELD.pop(key, None)
