"""Fixtures of the orchestration tests: a tiny demo
field, and services (S3 endpoint, SLURM cluster, Prefect server) that the
tests start on 127.0.0.1 and stop again.

The Prefect harness (``prefect_backend``, ``prefect_fast``) is the suite's
one, in tests/conftest.py.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"


def need(condition: bool, why: str) -> None:
    """Skip when a system package is absent -- except in CI, where it is a failure."""
    if condition:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{why} (CI installs it via .ci/install-services)")
    pytest.skip(why)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def with_execution(settings, **updates):
    """A copy of the settings with [execution] keys replaced."""
    return settings.model_copy(update={"execution": settings.execution.model_copy(update=updates)})


def with_output(settings, output: str, storage_options: dict | None = None):
    proj = settings.project.model_copy(
        update={"output": output, **({"storage_options": storage_options} if storage_options is not None else {})}
    )
    return settings.model_copy(update={"project": proj})


@pytest.fixture(scope="session")
def demo_field(tmp_path_factory):
    """The embedded demo field at its smallest (coarse grid, 150 stars); made once per session.

    Tests copy the catalog/ASTs they change and point their own output folder
    elsewhere, so this folder is never modified by a pipeline run.
    """
    from beastflow.demo import prepare_demo

    folder = tmp_path_factory.mktemp("demo-field")
    settings = prepare_demo(str(folder), size="small", n_stars=150)
    return settings


@pytest.fixture
def tiny_settings(demo_field, tmp_path):
    """Demo settings writing into this test's own output folder; fast retries."""
    return with_execution(with_output(demo_field, str(tmp_path / "out")), retry_delay_s=0.0, retries=1, progress=False)


# ----------------------------------------------------------------------------------------------
# services
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def s3_endpoint():
    """A moto S3 server on 127.0.0.1 (free port) with test credentials in the environment."""
    try:
        from moto.server import ThreadedMotoServer
    except ImportError:
        need(False, "moto[server] is not installed (pip install -e '.[test]')")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    mp = pytest.MonkeyPatch()
    for k, v in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL_S3": url,
    }.items():
        mp.setenv(k, v)
    try:
        yield url
    finally:
        mp.undo()
        server.stop()


@pytest.fixture(scope="session")
def slurm_cluster():
    """A one-node SLURM cluster (infra/slurm-up.sh) on free ports; stopped after the session."""
    need(os.geteuid() == 0, "the local SLURM cluster (slurmctld, slurmd, munged as SlurmUser=root) needs root")
    need(
        all(shutil.which(p) for p in ("slurmctld", "slurmd", "sbatch", "munged")),
        "SLURM is not installed (apt-get install slurmctld slurmd slurm-client munge)",
    )
    # not below pytest's 0700 temp folders: munged wants every parent of its socket traversable
    state = Path(tempfile.mkdtemp(prefix="beastflow-slurm-"))
    state.chmod(0o755)
    env = dict(
        os.environ,
        BEASTFLOW_SLURM_DIR=str(state),
        BEASTFLOW_SLURM_NO_INSTALL="1",
        BEASTFLOW_SLURM_CTLD_PORT=str(free_port()),
        BEASTFLOW_SLURM_SLURMD_PORT=str(free_port()),
    )
    up = subprocess.run([str(INFRA / "slurm-up.sh"), "--env"], env=env, capture_output=True, text=True, timeout=120)
    if up.returncode != 0:
        subprocess.run([str(INFRA / "slurm-down.sh"), "--purge"], env=env, capture_output=True, timeout=120)
        pytest.fail(f"infra/slurm-up.sh failed:\n{up.stderr[-3000:]}")
    mp = pytest.MonkeyPatch()
    mp.setenv("SLURM_CONF", str(state / "slurm.conf"))
    mp.setenv("PATH", f"{state / 'bin'}{os.pathsep}{os.environ['PATH']}")
    try:
        yield state
    finally:
        mp.undo()
        subprocess.run([str(INFRA / "slurm-down.sh"), "--purge"], env=env, capture_output=True, timeout=180)


def write_settings_toml(settings, path: Path) -> Path:
    """Write Settings as a TOML file (TOML has no null: unset keys are left out)."""
    import tomli_w

    def drop_none(v):
        if isinstance(v, dict):
            return {k: drop_none(x) for k, x in v.items() if x is not None}
        if isinstance(v, list):
            return [drop_none(x) for x in v]
        return v

    path.write_text(tomli_w.dumps(drop_none(settings.model_dump(mode="json", exclude={"source"}))))
    return path


@pytest.fixture
def prefect_server(tmp_path):
    """A Prefect server (infra/prefect-server.sh) on a free 127.0.0.1 port; env for CLI subprocesses."""
    port = free_port()
    state = tmp_path / "prefect-server"
    env = dict(os.environ, BEASTFLOW_PREFECT_DIR=str(state), BEASTFLOW_PREFECT_PORT=str(port), PREFECT_HOME=str(state))
    up = subprocess.run(
        [str(INFRA / "prefect-server.sh"), "start"], env=env, capture_output=True, text=True, timeout=240
    )
    try:
        if up.returncode != 0:
            pytest.fail(f"infra/prefect-server.sh start failed:\n{up.stdout}\n{up.stderr}")
        env["PREFECT_API_URL"] = f"http://127.0.0.1:{port}/api"
        yield env
    finally:
        subprocess.run([str(INFRA / "prefect-server.sh"), "stop"], env=env, capture_output=True, timeout=60)
