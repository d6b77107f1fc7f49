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
    from beastflow.flows.stages import STAGES

    assert set(STAGES) | {"pipeline", "rerun-on-catalog-change"} == set(deps)
    assert all(d["work_pool"]["name"] == "beastflow-process" for d in deps.values())
    assert deps["pipeline"]["schedules"][0]["cron"]
    assert deps["rerun-on-catalog-change"]["schedules"][0]["interval"] > 0
    for d in deps.values():
        flow = _load_entrypoint(d["entrypoint"])
        assert hasattr(flow, "to_deployment"), d["entrypoint"]


def test_serve_builds_the_same_deployments():
    from deployments.serve import SERVED, deployments

    deps = {d.name.removesuffix(SERVED): d for d in deployments("/some/field.toml")}
    data = yaml.safe_load((REPO / "deployments" / "prefect.yaml").read_text())
    assert set(deps) == {d["name"] for d in data["deployments"]}
    # never the name of a work-pool deployment: serving it would drop its pull steps ("storage at None")
    assert all(d.name.endswith(SERVED) for d in deps.values())
    assert deps["pipeline"].parameters == {"settings": "/some/field.toml"}
    assert "/some/field.toml" in deps["pipeline"].description
    assert deps["pipeline"].schedules and deps["rerun-on-catalog-change"].schedules


def test_deployment_parameters_have_types_defaults_and_descriptions():
    """What the UI's Run form shows: every parameter of every deployed flow is documented."""
    from beastflow.flows.pipeline import STAGE_FLOWS, pipeline_flow
    from deployments.catalog_watch import catalog_watch_flow

    for fl in [pipeline_flow, catalog_watch_flow, *STAGE_FLOWS.values()]:
        props = fl.parameters.model_dump()["properties"]
        assert "settings" in props, fl.name
        for name, p in props.items():
            assert p.get("description"), f"{fl.name}.{name} has no description"
            assert "default" in p, f"{fl.name}.{name} has no default"
            assert p.get("anyOf") or p.get("type"), f"{fl.name}.{name} has no type"
    props = pipeline_flow.parameters.model_dump()["properties"]
    assert "BEASTFLOW_SETTINGS" in props["settings"]["description"]
    assert {"settings", "catalog", "asts"} == set(props)
