"""The Prefect UI starts the pipeline: server + work pool + deployments (deployments/prefect.yaml)
+ a process worker on 127.0.0.1, then headless Chromium clicks Run -> Quick run on the
pipeline deployment and the flow run completes.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from .conftest import REPO, need, with_output, write_settings_toml

pytestmark = [pytest.mark.browser, pytest.mark.service]

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _api(base: str, path: str, body=None):
    req = urllib.request.Request(
        base + path,
        method="POST" if body is not None else "GET",
        data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.load(r)


def _prefect(env, *args, timeout=120):
    exe = str(Path(sys.executable).with_name("prefect"))
    out = subprocess.run([exe, *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"prefect {' '.join(args)} failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}"
    return out.stdout


def test_quick_run_from_the_ui_completes(prefect_server, demo_field, tmp_path):
    need(_chromium() is not None, "chromium is not installed (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        need(False, "playwright is not installed (pip install -e '.[test]')")

    env = prefect_server
    api = env["PREFECT_API_URL"]
    ui = api[: -len("/api")]
    settings_file = write_settings_toml(with_output(demo_field, str(tmp_path / "out")), tmp_path / "field.toml")

    _prefect(env, "work-pool", "create", "beastflow-process", "--type", "process", "--overwrite")
    _prefect(env, "--no-prompt", "deploy", "--all", "--prefect-file", "deployments/prefect.yaml")
    dep = _api(api, "/deployments/name/beastflow-pipeline/pipeline")

    worker_env = dict(
        env, BEASTFLOW_SETTINGS=str(settings_file), PREFECT_WORKER_QUERY_SECONDS="1", PREFECT_LOGGING_LEVEL="INFO"
    )
    log = open(tmp_path / "worker.log", "w")
    worker = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("prefect")),
            "worker",
            "start",
            "--pool",
            "beastflow-process",
            "--name",
            "ui-test",
        ],
        env=worker_env,
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=_chromium(), headless=True, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(f"{ui}/deployments/deployment/{dep['id']}")
            page.get_by_role("button", name="Run", exact=True).click(timeout=60_000)
            page.get_by_text("Quick run", exact=True).click()
            # the toast follows the API's reply: slow while the other test process runs a pipeline
            page.get_by_text("scheduled to start now").first.wait_for(timeout=120_000)
            page.screenshot(path=str(tmp_path / "after-quick-run.png"))
            browser.close()

        # the run the click created (the cron schedule adds auto-scheduled future runs: not those)
        deadline = time.monotonic() + 300
        runs = []
        while time.monotonic() < deadline:
            runs = [
                r
                for r in _api(api, "/flow_runs/filter", {"deployments": {"id": {"any_": [dep["id"]]}}})
                if not r.get("auto_scheduled")
            ]
            if runs and runs[0]["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
                break
            time.sleep(1)
        assert len(runs) == 1, runs
        log.flush()
        assert runs[0]["state"]["type"] == "COMPLETED", (tmp_path / "worker.log").read_text()[-4000:]
        # the run published per-stage progress and the fitted-star summary for the UI
        keys = {a["key"] for a in _api(api, "/artifacts/filter", {}) if a.get("key")}
        assert {"fit-progress", "fit-units", "fit-summary"} <= keys, keys
        assert (tmp_path / "out" / "demo_stats.parquet").exists()
    finally:
        os.killpg(worker.pid, signal.SIGINT)  # a Prefect worker stops cleanly on SIGINT
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
        log.close()
