"""'Rerun when the catalog changes': a scheduled flow that starts the pipeline only on change.

Prefect 3 has no file sensor, so the deployment runs this flow on a schedule
(every 10 minutes by default, see prefect.yaml / serve.py).  Each run hashes
the photometry catalog and the AST results (SHA-256 of their bytes, through
fsspec, so local paths and s3:// work alike) and compares them with the hashes
stored at the last pipeline start in ``{output}/.cache/catalog_watch.json``.
Only when they differ does it run the pipeline (as a subflow, visible in the
UI under this run); a touched-but-identical file is no change.  Because the
pipeline itself is cached, even a spurious start would recompute nothing.
"""

from __future__ import annotations

import datetime as _dt
from typing import Any

from prefect import flow, get_run_logger

from beastflow import storage
from beastflow.flows.caching import file_hash
from beastflow.flows.pipeline import load, pipeline_flow


def watched_hashes(settings) -> dict[str, str]:
    """Content hashes of the run's external observation inputs."""
    out = {}
    for name in ("catalog", "ast_results"):
        url = getattr(settings.observations, name)
        if url:
            out[name] = file_hash(url)
    return out


def state_url(settings) -> str:
    return settings.artifact(".cache", "catalog_watch.json")


@flow(name="catalog-watch", validate_parameters=False, persist_result=False)
def catalog_watch_flow(settings: str | None = None, force: bool = False) -> dict[str, Any]:
    """Start the pipeline when the catalog (or AST results) changed since the last start.

    Args:
        settings: settings TOML file (any fsspec URL: /path/field.toml, s3://bucket/field.toml).
            Empty: $BEASTFLOW_SETTINGS of the process that runs the flow (worker or serve.py),
            else the embedded demo field.
        force: start the pipeline even when the catalog and AST results are unchanged.
    """
    log = get_run_logger()
    s = load(settings)
    now = watched_hashes(s)
    if not now:
        raise ValueError("observations.catalog is not set: nothing to watch")
    try:
        before = storage.read_json(state_url(s)).get("hashes", {})
    except FileNotFoundError:
        before = {}
    if now == before and not force:
        log.info("catalog unchanged (%s); pipeline not started", now.get("catalog", "")[:12])
        return {"started": False, "hashes": now}
    changed = sorted(k for k in now if now.get(k) != before.get(k))
    log.info("changed since the last run: %s; starting the pipeline", ", ".join(changed) or "forced")
    from beastflow.flows.settings_ref import by_reference

    run = pipeline_flow(by_reference(s))  # the Prefect database stores the reference only
    # recorded only after a successful run: a failed run is retried on the next tick
    storage.write_json(state_url(s), {"hashes": now, "started": _dt.datetime.now(_dt.UTC).isoformat()})
    return {"started": True, "changed": changed, "hashes": now, "stars": run.summary.get("stars")}
