"""deployments/serve.py on a server that already has prefect.yaml's deployments: the work-pool
deployments keep their pull steps (serving under their names used to drop them, and every run then
failed with "storage at None"), and the UI gets documented parameters with the field as default."""

from __future__ import annotations

import subprocess
import sys

import pytest

from .conftest import REPO
from .test_browser import _api, _prefect

pytestmark = pytest.mark.service


def test_served_deployments_leave_the_work_pool_ones_intact(prefect_server, tmp_path):
    env = prefect_server
    api = env["PREFECT_API_URL"]
    _prefect(env, "work-pool", "create", "beastflow-process", "--type", "process", "--overwrite")
    _prefect(env, "--no-prompt", "deploy", "--all", "--prefect-file", "deployments/prefect.yaml")
    before = _api(api, "/deployments/name/beastflow-pipeline/pipeline")
    assert before["pull_steps"]
    apply = "from deployments.serve import deployments\nfor d in deployments('/data/field.toml'):\n    d.apply()\n"
    out = subprocess.run([sys.executable, "-c", apply], env=env, cwd=REPO, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    after = _api(api, "/deployments/name/beastflow-pipeline/pipeline")
    assert after["id"] == before["id"]
    assert after["pull_steps"] == before["pull_steps"] and after["work_pool_name"] == "beastflow-process"
    served = _api(api, "/deployments/name/beastflow-pipeline/pipeline-served")
    assert served["parameters"] == {"settings": "/data/field.toml"}
    props = served["parameter_openapi_schema"]["properties"]
    assert set(props) == {"settings", "catalog", "asts"}
    assert all(p.get("description") for p in props.values())
    yaml_props = after["parameter_openapi_schema"]["properties"]
    assert "BEASTFLOW_SETTINGS" in yaml_props["settings"]["description"]
