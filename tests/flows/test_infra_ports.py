"""Two users on one node: the infra scripts refuse a port someone else holds, naming the variable to set."""

from __future__ import annotations

import os
import socket
import subprocess

import pytest

from .conftest import INFRA


@pytest.mark.parametrize(
    "script, port_var, dir_var",
    [
        ("prefect-server.sh", "BEASTFLOW_PREFECT_PORT", "BEASTFLOW_PREFECT_DIR"),
        ("s3-endpoint.sh", "BEASTFLOW_S3_PORT", "BEASTFLOW_S3_DIR"),
    ],
)
def test_start_refuses_a_port_in_use(script, port_var, dir_var, tmp_path):
    with socket.socket() as other:  # another user's service on the default-looking port
        other.bind(("127.0.0.1", 0))
        other.listen(1)
        port = other.getsockname()[1]
        env = dict(os.environ, **{port_var: str(port), dir_var: str(tmp_path / "state")})
        out = subprocess.run(
            ["bash", str(INFRA / script), "start"], env=env, capture_output=True, text=True, timeout=60
        )
    assert out.returncode == 1, out.stdout + out.stderr
    assert f"port {port} is in use" in out.stderr and port_var in out.stderr
    assert not (tmp_path / "state").exists() or not any((tmp_path / "state").glob("*.pid"))
