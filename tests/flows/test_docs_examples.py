"""The docs' orchestration example runs as written (issue 13, item 8).

``docs/orchestration.md`` shows the plain-Python use of the flows on a
``field.toml``; here that block is executed unchanged in a folder whose
``field.toml`` is the smallest demo field, and what it says it returns is
checked.  (The other python block, docs/formats.md's own-grid example, runs in
``tests/io/test_own_grid_example.py``.)
"""

from __future__ import annotations

import pytest

from tests.conftest import REPO

from .conftest import with_execution, with_output, write_settings_toml

pytestmark = [pytest.mark.pipeline, pytest.mark.usefixtures("prefect_fast")]


def _orchestration_block() -> str:
    text = (REPO / "docs" / "orchestration.md").read_text()
    blocks = text.split("```python\n")[1:]
    (body,) = [b.split("```", 1)[0] for b in blocks if "pipeline_flow(" in b]
    return body


def test_orchestration_example_runs_as_written(demo_field, tmp_path, monkeypatch):
    body = _orchestration_block()
    s = with_execution(with_output(demo_field, str(tmp_path / "out")), retries=1, retry_delay_s=0.0, progress=False)
    write_settings_toml(s, tmp_path / "field.toml")
    monkeypatch.chdir(tmp_path)
    names: dict = {}
    exec(compile(body, "docs/orchestration.md", "exec"), names)  # noqa: S102 - the docs' own code
    run = names["run"]
    assert any(u.endswith("_stats.parquet") for u in run.urls["merge"])
    # the states the block reads are there, one per fit unit, none failed
    assert run.states["fit"] and set(run.states["fit"].values()) <= {"Completed", "Cached"}
