"""Stage-in and stage-out through Globus as Prefect flows and tasks ([storage.globus]).

The pipeline runs them only when the settings have a ``[storage.globus]`` table:

* ``stage_in``  (before the physics model): the inputs listed in ``stage_in``
  from the source collection into scratch, and the cached physics model from
  ``grid_cache_path`` back into the output folder;
* ``grid_cache`` (after the physics model): its artifacts and cache record to
  ``grid_cache_path``;
* ``stage_out`` (after the merge): the merged results (and the report, drawn
  here) to ``results_path`` on the source collection.

Each transfer is one Prefect task: submitted with checksum sync and
verification, its task id and link logged and published as a link artifact,
waited for with ``timeout_s``.  Retries (``execution.retries``) cover network
and service errors; a FAILED, INACTIVE or timed-out task or rejected
credentials fail the run at once with a one-line error naming the task.

Caching, on checksums: an outgoing transfer's key is the SHA-256 of the files
it sends plus where they go; when ``.cache/transfer/<name>.json`` holds the
same key from a transfer that succeeded, the task ends **Cached** without
contacting Globus.  Incoming files cannot be hashed before they arrive, so
stage-in always asks Globus, whose checksum sync copies only what changed;
a transfer that moved nothing (every checksum matched) also ends **Cached**.

Credentials are read from the environment inside the task (``transfer_factory``),
never passed as a parameter, so they reach neither the Prefect database nor logs.
"""

from __future__ import annotations

from collections.abc import Callable

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.states import Completed, State

from beastflow import storage
from beastflow.transfer import (
    PERMANENT_TRANSFER_ERRORS,
    Transfer,
    TransferReport,
    TransferRequest,
    plan,
)
from beastflow.transfer import base as transfer_base

from . import caching
from .tasks import CACHED, PERMANENT_ERRORS, StageRun


def globus_transfer(settings) -> Transfer:
    """The real Globus client, credentials from the environment (beastflow.transfer.globus)."""
    from beastflow.transfer.globus import GlobusTransfer

    return GlobusTransfer.from_environment(token_file=settings.storage.globus.token_file)


#: how a task gets its ``Transfer``; the tests put a ``LocalCopyTransfer`` here.
#: Chosen by code, never by a setting or an artifact.
transfer_factory: Callable[..., Transfer] = globus_transfer


def _retry_transient(task, task_run, state) -> bool:
    exc = state.data if isinstance(state.data, BaseException) else None
    return not isinstance(exc, PERMANENT_TRANSFER_ERRORS + PERMANENT_ERRORS)


def _record_url(settings, name: str) -> str:
    return settings.artifact(".cache", "transfer", f"{name}.json")


def _cached_report(settings, name: str, key: str) -> TransferReport | None:
    try:
        rec = storage.read_json(_record_url(settings, name))
    except (FileNotFoundError, ValueError):
        return None
    if rec.get("key") != key or rec.get("report", {}).get("status") != "SUCCEEDED":
        return None
    try:
        return TransferReport(**rec["report"])
    except TypeError:
        return None


@task(cache_policy=NO_CACHE, persist_result=False, log_prints=False)
def transfer_task(settings, name: str, request: TransferRequest, local_files: list[str]):
    """One Globus transfer; ``local_files``: what an outgoing transfer sends (its cache key)."""
    log = get_run_logger()
    g = settings.storage.globus
    key = plan.request_key(request, local_files) if local_files else None
    if key and settings.execution.cache:
        hit = _cached_report(settings, name, key)
        if hit is not None:
            return Completed(
                name=CACHED, data=hit, message=f"{name}: unchanged since Globus task {hit.task_id} ({hit.link})"
            )

    def submitted(task_id: str, link: str) -> None:
        log.info(
            "%s: Globus transfer task %s submitted (%d items, %s -> %s): %s",
            name,
            task_id,
            len(request.items),
            request.source_collection,
            request.destination_collection,
            link,
        )
        try:
            from prefect.artifacts import create_link_artifact

            create_link_artifact(
                link=link,
                link_text=f"Globus task {task_id}",
                key=f"globus-{name.replace('_', '-')}",
                description=f"{request.label}: {len(request.items)} items",
            )
        except Exception as exc:  # noqa: BLE001 - the artifact is a convenience; the log line has the link
            log.debug("no link artifact for %s: %s", task_id, exc)

    report = transfer_base.run(transfer_factory(settings), request, g.timeout_s, g.poll_s, on_submitted=submitted)
    log.info(
        "%s: Globus task %s %s: %d files, %d transferred, %d already there (checksum), %d bytes",
        name,
        report.task_id,
        report.status,
        report.files,
        report.files_transferred,
        report.files_skipped,
        report.bytes_transferred,
    )
    if key:
        storage.write_json(_record_url(settings, name), {"key": key, "report": caching.encode_result(report)["fields"]})
    if report.nothing_moved and report.files:
        return Completed(
            name=CACHED, data=report, message=f"{name}: all {report.files} files already there (checksums match)"
        )
    return report


def _run(settings, stage: str, transfers: list[tuple[str, TransferRequest, list[str]]]) -> StageRun:
    ex = settings.execution
    results: dict[str, TransferReport] = {}
    states: dict[str, str] = {}
    for name, request, local_files in transfers:
        t = transfer_task.with_options(
            name=stage,
            task_run_name=f"{stage}[{name}]",
            retries=ex.retries,
            retry_delay_seconds=ex.retry_delay_s,
            retry_condition_fn=_retry_transient,
        )
        st: State = t(settings, name, request, local_files, return_state=True)
        results[name] = st.result()  # raises the task's one-line error on failure
        states[name] = st.name
    urls = [d for r in results.values() for d in r.destinations]
    return StageRun(stage, urls, results, states)


_FLOW = dict(validate_parameters=False, persist_result=False, log_prints=True)


@flow(name="stage_in", **_FLOW)
def stage_in_flow(settings) -> StageRun:
    """Inputs from the source collection into scratch; the cached physics model back into the output."""
    from .pipeline import load

    s = load(settings)
    plan.check(s)
    transfers = []
    req = plan.stage_in_request(s)
    if req is not None:
        transfers.append(("inputs", req, []))
    grid = plan.grid_cache_in_request(s)
    if grid is not None:
        g = s.storage.globus
        if transfer_factory(s).exists(g.grid_collection, g.grid_cache_path):
            transfers.append(("grid_cache", grid, []))
        else:
            get_run_logger().info(
                "grid cache %s on %s is empty: the physics model is computed and cached there",
                g.grid_cache_path,
                g.grid_collection,
            )
    run = _run(s, "stage_in", transfers)
    run.urls = plan.staged_inputs(s) + [u for n, r in run.results.items() if n != "inputs" for u in r.destinations]
    return run


@flow(name="grid_cache", **_FLOW)
def grid_cache_flow(settings, physics: StageRun) -> StageRun:
    """The physics model's artifacts and cache records to ``grid_cache_path`` (kept between runs)."""
    from .pipeline import load

    s = load(settings)
    files = list(physics.urls) + [caching.record_url(s, "physicsmodel", label) for label in physics.results]
    req = plan.grid_cache_out_request(s, files)
    return _run(s, "grid_cache", [("grid_cache_out", req, files)] if req else [])


@flow(name="stage_out", **_FLOW)
def stage_out_flow(settings, merge: StageRun) -> StageRun:
    """The merged results (and the report, drawn first) to ``results_path`` on the source collection."""
    from .pipeline import load

    s = load(settings)
    plan.check(s)
    (merged,) = merge.results.values()
    files = plan.merged_files(s, merged)
    folders = []
    if "report" in s.storage.globus.stage_out:
        folders.append(report_task.with_options(task_run_name="report")(s))
    req = plan.stage_out_request(s, files, folders)
    return _run(s, "stage_out", [("results", req, files + folders)] if req else [])


@task(cache_policy=NO_CACHE, persist_result=False)
def report_task(settings) -> str:
    """Plots and the HTML report of the run (beastflow.report) below the output; its folder."""
    from beastflow.report import make_report
    from beastflow.report.html import REPORT_DIR

    make_report(settings.output, project=settings.project.name)
    return settings.artifact(REPORT_DIR)


__all__ = ["grid_cache_flow", "stage_in_flow", "stage_out_flow", "transfer_factory", "transfer_task"]
