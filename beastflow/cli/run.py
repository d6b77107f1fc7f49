"""``beastflow run [SETTINGS.toml]``: the whole pipeline as one Prefect flow.

Without a settings file the embedded demo field is prepared (below
``--output``, default ./demo-output) and run.  With no ``PREFECT_API_URL`` set
Prefect starts a temporary local API for the run (nothing to install or start);
point ``PREFECT_API_URL`` at a server (infra/prefect-server.sh) to see the run,
its per-stage progress and the fitted-star summary in the Prefect UI.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys


def _quiet_prefect_defaults() -> None:
    # Set before prefect is imported: no analytics from a CLI run, and Prefect's
    # own INFO logging would interleave with the progress bars.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    # Without a server, Prefect starts a temporary one and gives it 20 s; a busy
    # login node (or a 2-core laptop compiling numba) needs longer than that.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    # the Prefect client logs every API request through httpx at INFO: hundreds
    # of lines that would bury the pipeline's own messages and the final summary
    import logging

    logging.getLogger("httpx").setLevel(logging.WARNING)


def cmd_run(args: argparse.Namespace) -> int:
    _quiet_prefect_defaults()
    from beastflow.cli.orphans import mark_this_run, reap_orphaned_servers

    # a temporary Prefect server left by a killed run is stopped; this run's own one is marked
    for pid in reap_orphaned_servers():
        print(f"stopped the temporary Prefect API server (pid {pid}) left by a killed run", file=sys.stderr)
    mark_this_run()
    # one line per Prefect API request at INFO would bury the stage logs
    logging.getLogger("httpx").setLevel(logging.WARNING)
    from beastflow.settings import load_settings

    if args.settings:
        settings = load_settings(args.settings)
    else:
        from beastflow.demo import prepare_demo

        out = args.output or "demo-output"
        print(f"no settings given: preparing the embedded demo field in {out}")
        settings = prepare_demo(out if "://" in out else os.path.abspath(out))
    updates = {}
    if args.executor:
        updates["executor"] = args.executor
    if args.no_cache:
        updates["cache"] = False
    if updates:
        settings = settings.model_copy(update={"execution": settings.execution.model_copy(update=updates)})
    settings.activate()

    from beastflow.flows.executors import UnitsFailed
    from beastflow.flows.pipeline import PipelineStop, pipeline_flow
    from beastflow.flows.progress import console_bars
    from beastflow.flows.settings_ref import by_reference
    from beastflow.transfer import TransferError

    show = settings.execution.progress and not args.no_progress and not args.quiet and sys.stderr.isatty()
    try:
        with console_bars(show):
            # by reference: the flow run's parameters (Prefect database, UI) hold no settings
            run = pipeline_flow(by_reference(settings), catalog=args.catalog, asts=args.asts)
    except PipelineStop as stop:
        print(f"beastflow run: stopped: {stop}", file=sys.stderr)
        return 3
    except UnitsFailed as failed:
        # names every failed sub-file and why; the others are cached for the rerun
        print(f"beastflow run: error: {failed}", file=sys.stderr)
        return 1
    except TransferError as failed:
        # a Globus transfer ([storage.globus]) failed, timed out or was refused: one line naming the task
        print(f"beastflow run: error: {failed}", file=sys.stderr)
        return 1
    _report(run)
    link = ui_link(run.flow_run_id)
    if link:
        print(f"Prefect UI: {link}")
    _write_report(run.output)
    return 0


def ui_link(flow_run_id: str | None) -> str | None:
    """The run's page in the Prefect UI when a server is configured (PREFECT_API_URL / PREFECT_UI_URL);
    None for the temporary in-process API, whose UI is gone when the run ends."""
    if not flow_run_id:
        return None
    from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL

    if not PREFECT_API_URL.value():
        return None
    ui = PREFECT_UI_URL.value()
    if not ui:
        api = PREFECT_API_URL.value().rstrip("/")
        ui = api[: -len("/api")] if api.endswith("/api") else api
    return f"{ui.rstrip('/')}/runs/flow-run/{flow_run_id}"


def _report(run) -> None:
    print(f"output: {run.output}")
    for name, stage in run.stages.items():
        n = len(stage.states)
        cached = sum(1 for v in stage.states.values() if v == "Cached")
        print(f"  {name:<13} {n:>4} unit(s), {cached:>4} from cache")
    for name, why in getattr(run, "skipped", {}).items():
        print(f"  {name:<13} skipped: {why}")
    s = run.summary
    if s:
        print("fitted: " + ", ".join(f"{k}={v}" for k, v in s.items()))


def _write_report(output: str) -> None:
    """Plots + HTML report of the finished run (beastflow.report); a plotting
    problem never turns a finished pipeline run into a failure."""
    try:
        from beastflow.report import make_report

        rep = make_report(output)
    except Exception as exc:  # noqa: BLE001 - reported, the run's results stand
        print(
            f"report: not written ({type(exc).__name__}: {exc}); retry with `beastflow report {output}`",
            file=sys.stderr,
        )
        return
    for q, m in rep.recovery.items():
        print(
            f"recovery {q}: median (fit-truth)/sigma {m['median_z']:+.2f}, "
            f"{100 * m['coverage_68']:.0f}% of truths inside p16-p84"
        )
    print(f"report: {rep.index}")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run the whole pipeline (cached, resumable) as a Prefect flow")
    p.add_argument("settings", nargs="?", help="settings file (any fsspec URL); default: the embedded demo field")
    p.add_argument("--output", help="folder for the demo field when no settings are given (default ./demo-output)")
    p.add_argument("--catalog", help="photometry catalog (overrides observations.catalog)")
    p.add_argument("--asts", help="AST results (overrides observations.ast_results)")
    p.add_argument(
        "--executor",
        choices=["inprocess", "processes", "slurm"],
        help="where trim and fit run (overrides execution.executor)",
    )
    p.add_argument("--no-cache", action="store_true", help="recompute every stage (execution.cache = false)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_run)
