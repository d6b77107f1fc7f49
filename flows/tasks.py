"""Prefect tasks around pipeline units: cache lookup, retries, arrays, progress.

Two ways a stage's units run:

* **one Prefect task per unit** (every light stage, and trim/fit with the
  in-process executor): the task checks the unit's cache record and returns a
  ``Completed`` state named **"Cached"** on a hit, otherwise runs the stage
  function.  Prefect's own retries (``execution.retries`` /
  ``retry_delay_s``) rerun a failing unit alone.
* **one Prefect task per array** (trim/fit with ``executor = "processes"`` or
  ``"slurm"``): the task looks up every unit's cache record in this process,
  hands only the misses to ``beastflow.flows.executors.run_batch`` (one SLURM array,
  failed elements resubmitted alone) and is itself named "Cached" when every
  unit was a hit.

Prefect's result cache (``cache_policy``) is deliberately off (``NO_CACHE``):
our records live next to the artifacts (local disk or S3) and are checked
against the artifacts' content hashes, which Prefect's result store cannot do
without a configured storage block per output location.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Sequence
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.states import Completed, State

from . import caching, executors
from .executors import Unit, UnitsFailed
from .progress import StageProgress

#: stages whose units may leave this process (executor = processes / slurm)
HEAVY_STAGES = ("trim", "fit")

CACHED = "Cached"

#: errors a retry cannot fix (bad settings, bad or inconsistent inputs: the stages
#: raise ValueError/KeyError for those); anything else -- I/O and S3 errors, memory,
#: a lost node -- is retried
PERMANENT_ERRORS = (ValueError, KeyError, TypeError, NotImplementedError)


def _retry_transient(task, task_run, state) -> bool:
    exc = state.data if isinstance(state.data, BaseException) else None
    return not isinstance(exc, PERMANENT_ERRORS)


@dataclasses.dataclass
class StageRun:
    """What a stage flow returns: its artifacts, per-unit results and task states."""

    stage: str
    #: every artifact URL the stage produced (or found in its cache)
    urls: list[str]
    #: unit label -> the stage function's returned object (dataclass of URLs)
    results: dict[str, Any]
    #: unit label -> Prefect state name of the task that handled it ("Cached", "Completed")
    states: dict[str, str]
    #: stage summary for humans (the merge: fitted stars and median posteriors)
    summary: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def all_cached(self) -> bool:
        return bool(self.states) and all(s == CACHED for s in self.states.values())


@task(cache_policy=NO_CACHE, persist_result=False, log_prints=False)
def unit_task(settings, unit: Unit):
    """Run one unit unless its cache record matches; a hit finishes as state "Cached"."""
    key = unit.key(settings)
    if settings.execution.cache:
        found = caching.lookup(settings, unit.stage, unit.label, key)
        if found.hit:
            return Completed(
                name=CACHED,
                data=found.result,
                message=f"cache hit {key[:12]}: inputs and settings unchanged, outputs verified",
            )
        _log_rejected(unit.stage, unit.label, found)
    return caching.decode_result(executors.execute_unit(settings, unit, key), settings.output)


def _log_rejected(stage: str, label: str, found: caching.Lookup) -> None:
    """A record that exists but could not be trusted is worth a warning: the unit recomputes."""
    if found.rejected:
        get_run_logger().warning("%s[%s]: cache record not used, recomputing: %s", stage, label, found.reason)


@task(cache_policy=NO_CACHE, persist_result=False, retries=0)
def array_task(settings, stage: str, units: list[Unit]):
    """Run a heavy stage's cache misses as one batch (SLURM array / process pool).

    Returns ``{"results": {label: result}, "cached": [labels found in the cache]}``.
    """
    log = get_run_logger()
    keys = {u.label: u.key(settings) for u in units}
    progress = StageProgress(stage, [u.label for u in units], {u.label: u.n_stars for u in units})
    results: dict[str, Any] = {}
    misses: list[Unit] = []
    for u in units:
        found = caching.lookup(settings, stage, u.label, keys[u.label]) if settings.execution.cache else None
        if found is None or not found.hit:
            if found is not None:
                _log_rejected(stage, u.label, found)
            misses.append(u)
        else:
            results[u.label] = found.result
            progress.update(u.label, "cached", attempt=0)
    cached = sorted(results)
    if not misses:
        progress.finish()
        return Completed(
            name=CACHED, data={"results": results, "cached": cached}, message=f"all {len(units)} {stage} units cached"
        )
    log.info("%s: %d of %d units to run with executor %r", stage, len(misses), len(units), settings.execution.executor)

    def on_event(unit: Unit, status: str, info: dict[str, Any]) -> None:
        if status == "stars":  # stars done inside a running fit (process pool)
            progress.stars_done(unit.label, info["done"])
            return
        if status == "done":
            progress.update(unit.label, "computed", info["attempt"], info["seconds"])
        else:
            final = info.get("final")
            progress.update(
                unit.label, "failed" if final else "retrying", info["attempt"], info["seconds"], info.get("reason", "")
            )
            log.warning(
                "%s[%s] attempt %d failed%s: %s",
                stage,
                unit.label,
                info["attempt"],
                "" if final else " (will retry alone)",
                info.get("reason"),
            )

    try:
        results.update(executors.run_batch(settings, misses, keys, on_event=on_event))
    finally:
        progress.finish()
    return {"results": results, "cached": cached}


def _task_for(settings, unit: Unit):
    ex = settings.execution
    return unit_task.with_options(
        name=f"{unit.stage}",
        task_run_name=f"{unit.stage}[{unit.label}]",
        retries=ex.retries,
        retry_delay_seconds=ex.retry_delay_s,
        retry_condition_fn=_retry_transient,
    )


def run_units(settings, stage: str, units: Sequence[Unit]) -> StageRun:
    """Run a stage's units (cached, retried), from inside a flow.

    Raises ``UnitsFailed`` naming every unit (sub-file) that failed after its
    retries, with the reason; units that succeeded keep their cache records,
    so a rerun redoes only the failed ones.
    """
    from beastflow.lease import output_lease

    # a stage flow run on its own holds the output too (inside the pipeline: already held)
    with output_lease(settings.output, wait_s=settings.execution.lease_wait_s):
        return _run_units(settings, stage, list(units))


def _run_units(settings, stage: str, units: list[Unit]) -> StageRun:
    labels = [u.label for u in units]
    if len(set(labels)) != len(labels):
        raise ValueError(f"{stage}: duplicate unit labels {labels}")
    if stage in HEAVY_STAGES and settings.execution.executor != "inprocess" and units:
        state = array_task.with_options(task_run_name=f"{stage}[array x{len(units)}]")(
            settings, stage, units, return_state=True
        )
        out = state.result()  # raises UnitsFailed (with every failed sub-file) on failure
        results, hits = out["results"], set(out["cached"])
        states = {lb: (CACHED if lb in hits else "Completed") for lb in labels}
        return StageRun(stage, _collect_urls(settings, results), results, states)

    progress = StageProgress(stage, labels, {u.label: u.n_stars for u in units})
    results, states, failures = {}, {}, {}
    for u in units:
        with _star_progress(stage, progress, u.label):
            st: State = _task_for(settings, u)(settings, u, return_state=True)
        states[u.label] = st.name
        if st.is_completed():
            results[u.label] = st.result()
            if st.name == CACHED:
                progress.update(u.label, "cached", attempt=0)
            else:
                progress.update(u.label, "computed", attempt=_attempts(st))
        else:
            reason = _reason(st)
            failures[u.label] = reason
            progress.update(u.label, "failed", attempt=_attempts(st), error=reason)
    progress.finish()
    if failures:
        raise UnitsFailed(stage, failures, len(units))
    return StageRun(stage, _collect_urls(settings, results), results, states)


@contextlib.contextmanager
def _star_progress(stage: str, progress: StageProgress, label: str):
    """In-process fits report stars done per block to the stage's progress (bar + artifact)."""
    if stage != "fit":
        yield
        return
    from beastflow.fit.fitting import STAR_PROGRESS

    token = STAR_PROGRESS.set(lambda done, total: progress.stars_done(label, done))
    try:
        yield
    finally:
        STAR_PROGRESS.reset(token)


def _attempts(state: State) -> int:
    """How often Prefect ran the task (1 + retries used), for the units table."""
    from prefect.client.orchestration import get_client

    try:
        with get_client(sync_client=True) as client:
            return int(client.read_task_run(state.state_details.task_run_id).run_count)
    except Exception:  # noqa: BLE001 - the count is informative only
        return 1


def _reason(state: State) -> str:
    try:
        state.result()
    except Exception as exc:  # noqa: BLE001 - turned into the failure report
        return executors.format_exception(exc)[:500]
    return state.message or state.name


def _collect_urls(settings, results: dict[str, Any]) -> list[str]:
    seen: dict[str, None] = {}
    for r in results.values():
        for u in caching.result_urls(r, settings.output):
            seen.setdefault(u, None)
    return list(seen)
