"""Deployment definitions: prefect.yaml and serve.py agree and point at real flows (fast, no server)."""

from __future__ import annotations

import yaml

from .conftest import REPO


def _load_entrypoint(entry: str):
    """The way a worker loads it (paths relative to the repository root)."""
    import os

    from prefect.flows import load_flow_from_entrypoint

    cwd = os.getcwd()
    os.chdir(REPO)
    try:
        return load_flow_from_entrypoint(entry)
    finally:
        os.chdir(cwd)


def test_prefect_yaml_deployments():
    data = yaml.safe_load((REPO / "deployments" / "prefect.yaml").read_text())
    deps = {d["name"]: d for d in data["deployments"]}
    from flows.stages import STAGES

    assert set(STAGES) | {"pipeline", "rerun-on-catalog-change"} == set(deps)
    assert all(d["work_pool"]["name"] == "beastflow-process" for d in deps.values())
    assert deps["pipeline"]["schedules"][0]["cron"]
    assert deps["rerun-on-catalog-change"]["schedules"][0]["interval"] > 0
    for d in deps.values():
        flow = _load_entrypoint(d["entrypoint"])
        assert hasattr(flow, "to_deployment"), d["entrypoint"]


def test_serve_builds_the_same_deployments():
    from deployments.serve import deployments

    deps = {d.name: d for d in deployments("/some/field.toml")}
    data = yaml.safe_load((REPO / "deployments" / "prefect.yaml").read_text())
    assert set(deps) == {d["name"] for d in data["deployments"]}
    assert deps["pipeline"].parameters == {"settings": "/some/field.toml"}
    assert deps["pipeline"].schedules and deps["rerun-on-catalog-change"].schedules
