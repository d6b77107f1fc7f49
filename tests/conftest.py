"""Shared fixtures: where the real survey data live (../shared/data), and the one
Prefect harness every test that runs a flow uses.

Prefect reads its settings when it is first imported, so its environment is set
here, before any test module imports ``prefect`` or ``flows``: a private
PREFECT_HOME, no analytics, and start-up time-outs that a loaded 2-core machine
survives (Prefect's default for a temporary API server is 20 s).
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

#: seconds a temporary Prefect API server may take to start (harness and any
#: ephemeral server a flow or a CLI subprocess starts on its own)
PREFECT_STARTUP_TIMEOUT_S = 300

if os.environ.get("PREFECT_HOME") in (None, os.environ.get("BEASTFLOW_TEST_PREFECT_HOME")):
    # one private home per test process (each pytest-xdist worker its own, not the
    # controller's it inherits), removed when the process ends
    _home = tempfile.mkdtemp(prefix="beastflow-prefect-home-")
    os.environ["PREFECT_HOME"] = os.environ["BEASTFLOW_TEST_PREFECT_HOME"] = _home
    atexit.register(shutil.rmtree, _home, ignore_errors=True)
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = str(PREFECT_STARTUP_TIMEOUT_S)
# a test run never talks to a developer's server
os.environ.pop("PREFECT_API_URL", None)

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("BEASTFLOW_SHARED", REPO.parent / "shared"))
PHAT_SMALL = SHARED / "data" / "phat_small"
STELLIB = SHARED / "data" / "stellib"


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real test data not found at {path} (set BEASTFLOW_SHARED to the shared/ folder)")
    return path


@pytest.fixture
def phat_catalog() -> Path:
    return _need(PHAT_SMALL / "b15_4band_det_27_A.fits")


@pytest.fixture
def phat_asts() -> Path:
    return _need(PHAT_SMALL / "fake_stars_b15_27_all.hd5")


@pytest.fixture
def phat_asts_rate() -> Path:
    return _need(PHAT_SMALL / "fake_stars_b15_27_all_rate.hd5")


@pytest.fixture
def kurucz_grid() -> Path:
    return _need(STELLIB / "kurucz91_solar.grid.fits")


@pytest.fixture(scope="session")
def prefect_backend():
    """One temporary Prefect database + API for the whole session (~10 s when idle)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=PREFECT_STARTUP_TIMEOUT_S):
        yield


@pytest.fixture
def prefect_fast(prefect_backend):
    """Per test that runs a flow: the session's API, and no flow heartbeats (1 s per flow run otherwise)."""
    import prefect.settings as ps
    from prefect.settings import temporary_settings

    with temporary_settings(updates={ps.PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        yield


@pytest.fixture
def fixed_vega(monkeypatch):
    """``fixed_vega(values)``: the stages see ``values`` as the Vega band fluxes for the rest of the test."""
    from .seams import patch_vega_fluxes

    return lambda values: patch_vega_fluxes(monkeypatch, values)
