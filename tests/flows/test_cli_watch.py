"""`beastflow run` on the command line, and the rerun-on-catalog-change flow."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from .conftest import with_output, write_settings_toml


@pytest.mark.pipeline
def test_beastflow_run_cli(demo_field, prefect_backend, tmp_path):
    import prefect.settings as ps

    settings_file = write_settings_toml(with_output(demo_field, str(tmp_path / "out")), tmp_path / "field.toml")
    # the CLI talks to the session's test API (a fresh temporary API would cost ~15 s of start-up)
    env = dict(
        os.environ, PREFECT_HOME=tempfile.mkdtemp(prefix="bf-cli-prefect-"), PREFECT_API_URL=ps.PREFECT_API_URL.value()
    )
    cmd = [str(Path(sys.executable).with_name("beastflow")), "run", str(settings_file), "--no-progress"]
    first = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "fitted: stars=" in first.stdout and "merge" in first.stdout
    lines = [ln.split() for ln in first.stdout.splitlines() if "unit(s)," in ln]
    assert [ln[0] for ln in lines][:2] == ["physicsmodel", "density"] and lines[-1][0] == "merge", first.stdout
    assert (tmp_path / "out" / "demo_stats.parquet").exists()
    shutil.rmtree(env["PREFECT_HOME"], ignore_errors=True)


def test_beastflow_run_bad_settings_is_one_clear_line(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[execution]\nexecutor = 'cloud'\n")
    out = subprocess.run(
        [str(Path(sys.executable).with_name("beastflow")), "run", str(bad)], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 1
    assert "execution.executor" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.pipeline
@pytest.mark.usefixtures("prefect_fast")
def test_catalog_watch_starts_pipeline_only_on_change(tiny_settings, tmp_path):
    from deployments.catalog_watch import catalog_watch_flow

    catalog = tmp_path / "catalog.parquet"
    shutil.copyfile(tiny_settings.observations.catalog, catalog)
    settings = tiny_settings.model_copy(
        update={"observations": tiny_settings.observations.model_copy(update={"catalog": str(catalog)})}
    )

    assert catalog_watch_flow(settings)["started"] is True  # first tick: never seen
    os.utime(catalog)  # touched, same bytes
    assert catalog_watch_flow(settings)["started"] is False
    table = pq.read_table(catalog)
    pq.write_table(table.slice(1), catalog)  # one star fewer
    res = catalog_watch_flow(settings)
    assert res["started"] is True and res["changed"] == ["catalog"]
