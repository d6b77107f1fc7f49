"""Serve every beastflow deployment from one process (no work pool needed).

    export PREFECT_API_URL=http://127.0.0.1:4200/api      # infra/prefect-server.sh start
    export BEASTFLOW_SETTINGS=/path/to/field.toml           # default settings of UI runs
    python deployments/serve.py [--limit 2]

Deployments (the names of prefect.yaml plus ``-served``; prefect.yaml uses a process work pool):

* ``beastflow-pipeline/pipeline-served`` — the whole pipeline, nightly at 03:00 UTC;
* ``<stage>/<stage>-served`` — one per stage (physicsmodel ... merge), no schedule:
  start them from the UI to redo one stage (upstream stages come from the cache);
* ``catalog-watch/rerun-on-catalog-change-served`` — every 10 minutes, hashes the
  catalog and AST results and starts the pipeline only when they changed.

The names differ from prefect.yaml's on purpose: serving a deployment under the
name of a work-pool deployment rewrites it without its pull steps, and the
worker then fails every run of it ("storage at None").

The settings file (``--settings``, else ``$BEASTFLOW_SETTINGS`` when this
script starts) becomes the deployments' default ``settings`` parameter, so the
UI shows which field a run will process; without either, runs use the
embedded demo field.
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import timedelta

# this file is run as a script: make the repository's deployments/ importable
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from prefect import serve  # noqa: E402

from beastflow.flows.pipeline import STAGE_FLOWS, pipeline_flow  # noqa: E402
from deployments.catalog_watch import catalog_watch_flow  # noqa: E402

PIPELINE_CRON = "0 3 * * *"
WATCH_INTERVAL = timedelta(minutes=10)


#: suffix of served deployment names (never the names prefect.yaml deploys to a work pool)
SERVED = "-served"


def deployments(settings: str | None = None) -> list:
    params = {"settings": settings} if settings else {}
    field = f" Default field: {settings}." if settings else " Default field: the embedded demo."
    out = [
        pipeline_flow.to_deployment(
            name="pipeline" + SERVED,
            cron=PIPELINE_CRON,
            parameters=params,
            tags=["beastflow"],
            description="The whole BEAST pipeline (cached)." + field,
        )
    ]
    for name, fl in STAGE_FLOWS.items():
        out.append(
            fl.to_deployment(
                name=name + SERVED,
                parameters=params,
                tags=["beastflow", "stage"],
                description=f"Stage {name} (upstream stages from the cache)." + field,
            )
        )
    out.append(
        catalog_watch_flow.to_deployment(
            name="rerun-on-catalog-change" + SERVED,
            interval=WATCH_INTERVAL,
            parameters=params,
            tags=["beastflow", "watch"],
            description="Starts the pipeline when the catalog's content hash changed." + field,
        )
    )
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--settings",
        help="settings file for every deployment, shown as the default parameter in "
        "the UI (default: $BEASTFLOW_SETTINGS)",
    )
    ap.add_argument("--limit", type=int, default=2, help="flow runs executed at once by this process")
    args = ap.parse_args(argv)
    settings = args.settings or os.environ.get("BEASTFLOW_SETTINGS") or None
    if settings:  # one run per output: later runs queue on the output's concurrency limit
        from beastflow.flows.output_limit import ensure_output_limit
        from beastflow.settings import load_settings

        ensure_output_limit(load_settings(settings))
    serve(*deployments(settings), limit=args.limit)


if __name__ == "__main__":
    main()
