"""Where pipeline units run: in this process, a local process pool, or SLURM arrays.

No Prefect import here: the functions below are what a SLURM array task or a
pool worker executes, and those must start fast and never contact a Prefect
API (a few hundred array tasks each starting a temporary Prefect server
would swamp a login node).  The Prefect layer (``flows/tasks.py``) decides
which units are cache misses and hands only those to ``run_batch``.

Retries here are per unit: when one element of an array fails, only that
element is resubmitted (after ``retry_delay_s``), up to ``retries`` times.
Units still failing at the end are reported together in ``UnitsFailed``,
naming each unit (sub-file) and the last line of its error.

Compiled kernels: before fit or trim units go to a pool or an array, their kernels are
compiled once into numba's cache (``beastflow.fit.warmup``) when it does not hold
this installation's yet, and every worker and task caches in
``execution.numba_cache_dir`` (``NUMBA_CACHE_DIR``): an array of a few hundred
tasks then loads the kernels instead of compiling them in every task.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import dataclasses
import importlib
import logging
import math
import multiprocessing
import os
import shlex
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from beastflow import storage

from . import caching

log = logging.getLogger(__name__)

#: stages whose units run the fit or trim kernels (compiled by ``beastflow.fit.warmup``)
WARM_UP_STAGES = frozenset({"fit", "trim"})


@dataclasses.dataclass
class Unit:
    """One call of a stage function, e.g. ``run_fit`` for one (bin, sub-file, subgrid)."""

    stage: str
    #: unique within the stage, used in file names and the UI: ``bin1_sub0_gridsub0``
    label: str
    #: ``"package.module:function"`` (or a callable, for tests); called as ``func(settings, *args, **kwargs)``
    func: str | Callable[..., Any]
    args: tuple = ()
    kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    #: input artifacts whose content hashes go into the cache key
    inputs: dict[str, Any] = dataclasses.field(default_factory=dict)
    #: settings sections the stage depends on
    sections: tuple[str, ...] = ()
    #: bytes of the grids the unit loads (SLURM memory request)
    mem_bytes: int = 0
    #: stars handled by the unit (progress), 0 when not applicable
    n_stars: int = 0

    def key(self, settings) -> str:
        return caching.unit_key(self.stage, self.label, settings, self.sections, self.inputs)


class UnitsFailed(RuntimeError):
    """Some units failed after all retries; ``failures`` maps unit label -> reason."""

    def __init__(self, stage: str, failures: dict[str, str], total: int, logs: str | None = None):
        self.stage = stage
        self.failures = dict(failures)
        lines = [f"{stage}: {len(failures)} of {total} units failed after retries:"]
        lines += [f"  {label}: {why}" for label, why in sorted(failures.items())]
        if logs:
            lines.append(f"  (logs in {logs})")
        super().__init__("\n".join(lines))


def _resolve(func: str | Callable[..., Any]) -> Callable[..., Any]:
    if callable(func):
        return func
    mod, _, name = func.partition(":")
    return getattr(importlib.import_module(mod), name)


def _as_settings(settings):
    if isinstance(settings, dict):
        from beastflow.settings import settings_from_dict

        return settings_from_dict(settings)
    return settings


def settings_payload(settings) -> dict[str, Any]:
    """Settings as plain JSON data (what crosses process / SLURM boundaries)."""
    return settings.model_dump(mode="json", exclude={"source"})


def execute_unit(settings, unit: Unit, key: str) -> dict[str, Any]:
    """Run one unit and write its cache record; returns the encoded stage result.

    This is the function a pool worker or SLURM array task runs.  The settings
    arrive as plain data; their storage options are installed first so that an
    S3 output works the same inside the job.
    """
    settings = _as_settings(settings).activate()
    t0 = time.monotonic()
    # a stage writes only below the run's output root, whatever its arguments say
    with storage.confine_writes(settings.output):
        result = _resolve(unit.func)(settings, *unit.args, **unit.kwargs)
        seconds = time.monotonic() - t0
        caching.write_record(
            settings,
            unit.stage,
            unit.label,
            key,
            result,
            extra={"seconds": round(seconds, 3), "host": os.uname().nodename},
        )
    return caching.encode_result(result, settings.output)


def _short_reason(exc: BaseException) -> str:
    """The last meaningful line of an error (SLURM errors carry a whole traceback)."""
    text = str(exc).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for ln in reversed(lines):
        if not ln.startswith(("File ", "^", "~", "raise ", "return ")) and not ln.startswith("submitit"):
            if "Error" in ln or "Exception" in ln or len(lines) == 1:
                return ln[:500]
    return (lines[-1] if lines else type(exc).__name__)[:500]


# --------------------------------------------------------------------------
# SLURM memory request
# --------------------------------------------------------------------------
def mem_request_gb(settings, mem_bytes: int) -> int:
    """Memory (GB, whole) for a unit that loads ``mem_bytes`` of grids."""
    sl = settings.execution.slurm
    gb = sl.mem_overhead_gb + sl.mem_factor * mem_bytes / 2**30
    need = max(1, math.ceil(gb))
    if need > sl.mem_max_gb:
        raise ValueError(
            f"a unit needs {need} GB (= {sl.mem_overhead_gb} + {sl.mem_factor} x {mem_bytes / 2**30:.2f} GB of grids), "
            f"more than execution.slurm.mem_max_gb = {sl.mem_max_gb}; use more subgrids (physics.n_subgrid) "
            "or raise mem_max_gb"
        )
    return need


def slurm_folder(settings) -> str:
    """Absolute local folder for submitit's pickles and logs."""
    folder = os.path.expanduser(settings.execution.slurm.folder)
    if os.path.isabs(folder):
        return folder
    if storage.protocol(settings.output) == "file":
        base = settings.output.split("://", 1)[-1]
        return os.path.abspath(os.path.join(base, folder))
    return os.path.abspath(folder)


# --------------------------------------------------------------------------
# batches with per-unit retries
# --------------------------------------------------------------------------
OnEvent = Callable[[Unit, str, dict[str, Any]], None]


def run_batch(
    settings, units: Sequence[Unit], keys: dict[str, str], kind: str | None = None, on_event: OnEvent | None = None
) -> dict[str, Any]:
    """Run the units with the executor ``kind`` (default: settings.execution.executor).

    Returns ``{label: decoded stage result}``.  ``on_event(unit, status, info)``
    is called with status ``"done"`` or ``"failed"`` (info: attempt, reason,
    seconds) as units finish, in this process.  Raises ``UnitsFailed`` naming
    every unit that still fails after ``settings.execution.retries`` retries.
    """
    ex = settings.execution
    kind = kind or ex.executor
    submit = {"inprocess": _run_inprocess, "processes": _run_processes, "slurm": _run_slurm}.get(kind)
    if submit is None:
        raise ValueError(f"unknown executor {kind!r} (inprocess, processes, slurm)")
    if kind == "processes" and on_event is not None:
        # fits in the pool report stars done per block: on_event(unit, "stars", {"done": n})
        def submit(settings, pending, keys, _run=_run_processes):
            return _run(settings, pending, keys, on_stars=lambda u, done: on_event(u, "stars", {"done": done}))

    if kind != "inprocess" and ex.warm_up and any(u.stage in WARM_UP_STAGES for u in units):
        ensure_warm(settings, kind)
    results: dict[str, Any] = {}
    pending = list(units)
    reasons: dict[str, str] = {}
    for attempt in range(ex.retries + 1):
        if not pending:
            break
        if attempt:
            time.sleep(ex.retry_delay_s)
        failed: list[Unit] = []
        for unit, ok, value, seconds in submit(settings, pending, keys):
            info = {"attempt": attempt + 1, "seconds": seconds}
            if ok:
                results[unit.label] = caching.decode_result(value, settings.output)
                # load the output hashes the job recorded (no re-hashing downstream)
                caching.read_hit(settings, unit.stage, unit.label, keys[unit.label])
                reasons.pop(unit.label, None)
                if on_event:
                    on_event(unit, "done", info)
            else:
                reasons[unit.label] = value
                failed.append(unit)
                if on_event:
                    on_event(unit, "failed", {**info, "reason": value, "final": attempt == ex.retries})
        pending = failed
    if pending:
        logs = slurm_folder(settings) if kind == "slurm" else None
        raise UnitsFailed(pending[0].stage, {u.label: reasons[u.label] for u in pending}, len(units), logs)
    return results


def _run_inprocess(settings, units, keys):
    for unit in units:
        t0 = time.monotonic()
        try:
            value = execute_unit(settings, unit, keys[unit.label])
        except Exception as exc:  # noqa: BLE001 - reported per unit, retried
            yield unit, False, f"{type(exc).__name__}: {exc}", time.monotonic() - t0
        else:
            yield unit, True, value, time.monotonic() - t0


#: in a pool worker: where fits report their star-level progress (a queue the parent drains)
_STAR_QUEUE: Any = None


def _init_worker(queue, cache_dir: str | None = None) -> None:
    global _STAR_QUEUE
    _STAR_QUEUE = queue
    from beastflow.fit.warmup import use_cache_dir

    use_cache_dir(cache_dir)


def _execute_reporting(settings, unit: Unit, key: str) -> dict[str, Any]:
    """``execute_unit`` in a pool worker, sending (label, stars done) after each block of a fit."""
    from beastflow.fit.fitting import STAR_PROGRESS

    queue = _STAR_QUEUE
    token = STAR_PROGRESS.set(None if queue is None else (lambda done, total: queue.put((unit.label, done))))
    try:
        return execute_unit(settings, unit, key)
    finally:
        STAR_PROGRESS.reset(token)


def _run_processes(settings, units, keys, on_stars: Callable[[Unit, int], None] | None = None):
    payload = settings_payload(settings)
    # "spawn": the parent runs Prefect's threads; forking a threaded process is unsafe.
    ctx = multiprocessing.get_context("spawn")
    workers = min(settings.execution.workers, len(units))
    by_label = {u.label: u for u in units}
    with contextlib.ExitStack() as stack:
        queue = None
        if on_stars is not None and any(u.stage == "fit" for u in units):
            queue = stack.enter_context(ctx.Manager()).Queue()
            stack.enter_context(_drain(queue, lambda label, done: on_stars(by_label[label], done)))
        pool = stack.enter_context(
            cf.ProcessPoolExecutor(
                max_workers=workers,
                mp_context=ctx,
                initializer=_init_worker,
                initargs=(queue, numba_cache_dir(settings)),
            )
        )
        yield from _pool_results(pool, payload, units, keys)


@contextlib.contextmanager
def _drain(queue, handle: Callable[[str, int], None]):
    """A thread passing the workers' (label, stars done) reports to ``handle`` until the block ends."""
    import queue as queue_mod
    import threading

    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            try:
                label, done = queue.get(timeout=0.2)
            except queue_mod.Empty:
                continue
            except (EOFError, OSError):  # the manager is gone
                return
            handle(label, done)

    t = threading.Thread(target=loop, name="star-progress", daemon=True)
    t.start()
    try:
        yield
    finally:
        stop.set()
        t.join(timeout=5)


def _pool_results(pool, payload, units, keys):
    t0 = time.monotonic()
    futs = {pool.submit(_execute_reporting, payload, u, keys[u.label]): u for u in units}
    for fut in cf.as_completed(futs):
        unit = futs[fut]
        try:
            value = fut.result()
        except Exception as exc:  # noqa: BLE001
            yield unit, False, f"{type(exc).__name__}: {exc}", time.monotonic() - t0
        else:
            yield unit, True, value, time.monotonic() - t0


def _slurm_executor(settings, name: str, mem_gb: int):
    import submitit

    sl = settings.execution.slurm
    folder = slurm_folder(settings)
    os.makedirs(folder, exist_ok=True)
    # cluster="slurm" explicitly: AutoExecutor would silently fall back to
    # local execution when sbatch is missing, hiding a misconfiguration.
    executor = submitit.AutoExecutor(folder=os.path.join(folder, "%j"), cluster="slurm")
    params: dict[str, Any] = {
        "name": name,
        "timeout_min": sl.time_min,
        "cpus_per_task": sl.cpus_per_task,
        "mem_gb": mem_gb,
    }
    if sl.partition:
        params["slurm_partition"] = sl.partition
    if sl.account:
        params["slurm_account"] = sl.account
    if sl.qos:
        params["slurm_qos"] = sl.qos
    if sl.array_parallelism:
        params["slurm_array_parallelism"] = sl.array_parallelism
    if sl.extra:
        params["slurm_additional_parameters"] = dict(sl.extra)
    cache = numba_cache_dir(settings)
    if cache:
        # in the job script, before Python starts: numba reads it when imported
        params["slurm_setup"] = [f"export NUMBA_CACHE_DIR={shlex.quote(cache)}"]
    executor.update_parameters(**params)
    return executor


# --------------------------------------------------------------------------
# compiled kernels: one warm-up before an array, one cache for all its tasks
# --------------------------------------------------------------------------
def numba_cache_dir(settings) -> str | None:
    """The numba cache folder the tasks use: ``execution.numba_cache_dir``, else this
    process's ``NUMBA_CACHE_DIR`` (inherited by pool workers and, with sbatch's default
    ``--export=ALL``, by SLURM tasks), else None (numba's default, next to the sources)."""
    d = settings.execution.numba_cache_dir or os.environ.get("NUMBA_CACHE_DIR") or None
    return os.path.abspath(os.path.expanduser(d)) if d else None


def ensure_warm(settings, kind: str) -> bool:
    """Compile the fit kernels into the tasks' cache unless it holds them; True if it ran.

    ``processes``: in a fresh process on this machine (the pool's).  ``slurm``: as one
    job with the array's partition and options, waited for, so that the kernels are
    compiled for the compute nodes' CPU, not the login node's.  A failed warm-up is
    logged, not raised: each task then compiles for itself, as without it.
    """
    from beastflow.fit import warmup

    cache = numba_cache_dir(settings)
    if warmup.is_warm(cache):
        return False
    where = cache or "numba's default folder"
    log.info("compiling the fit kernels into %s once, before the %s tasks start", where, kind)
    t0 = time.monotonic()
    try:
        _run_warm_up(settings, kind, cache)
    except Exception as exc:  # noqa: BLE001 - the tasks still run, compiling themselves
        log.warning("warm-up of the fit kernels failed (%s); every task compiles them itself", _short_reason(exc))
    else:
        log.info("fit kernels compiled in %.0f s", time.monotonic() - t0)
    return True


def _run_warm_up(settings, kind: str, cache: str | None) -> None:
    if kind == "slurm":
        executor = _slurm_executor(settings, "bf-warmup", max(1, math.ceil(settings.execution.slurm.mem_overhead_gb)))
        from beastflow.fit.warmup import warm_up_cache

        executor.submit(warm_up_cache, cache).result()
        return
    env = dict(os.environ)
    if cache:
        env["NUMBA_CACHE_DIR"] = cache
    cmd = [sys.executable, "-m", "beastflow.fit.warmup"] + (["--cache-dir", cache] if cache else [])
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(out.stderr.strip() or f"{' '.join(cmd)} exited with {out.returncode}")


def _run_slurm(settings, units, keys):
    payload = settings_payload(settings)
    size = settings.execution.slurm.max_array_size
    t0 = time.monotonic()
    running = []
    for start in range(0, len(units), size):
        chunk = list(units[start : start + size])
        # one memory request per array: enough for its largest unit
        mem_gb = max(mem_request_gb(settings, u.mem_bytes) for u in chunk)
        executor = _slurm_executor(settings, f"bf-{chunk[0].stage}", mem_gb)
        jobs = executor.map_array(execute_unit, [payload] * len(chunk), chunk, [keys[u.label] for u in chunk])
        running += list(zip(chunk, jobs))
    while running:
        still = []
        for unit, job in running:
            if not job.done():
                still.append((unit, job))
                continue
            try:
                value = job.result()
            except Exception as exc:  # noqa: BLE001 - Failed/UncompletedJobError carry the remote error
                yield (
                    unit,
                    False,
                    f"job {job.job_id}: {_short_reason(exc)} (log: {job.paths.stderr})",
                    time.monotonic() - t0,
                )
            else:
                yield unit, True, value, time.monotonic() - t0
        running = still
        if running:
            time.sleep(0.5)


def format_exception(exc: BaseException) -> str:
    return "".join(traceback.format_exception_only(type(exc), exc)).strip()
