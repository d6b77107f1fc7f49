"""The pipeline against real services started by the tests on 127.0.0.1:
an S3 endpoint (moto server) and a one-node SLURM cluster (infra/slurm-up.sh).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import polars as pl
import pytest

from beastflow import storage
from flows.pipeline import pipeline_flow

from .conftest import with_execution, with_output

pytestmark = [pytest.mark.service, pytest.mark.usefixtures("prefect_fast")]


def _read_stats(url: str) -> pl.DataFrame:
    with storage.open_url(url, "rb") as fh:
        return pl.read_parquet(fh)


def _stats_url(run) -> str:
    return next(u for u in run.urls["merge"] if u.endswith("_stats.parquet"))


def test_pipeline_on_s3_matches_local(tiny_settings, s3_endpoint):
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    s3fs.S3FileSystem(endpoint_url=s3_endpoint).mkdir("beastflow-test")

    local = pipeline_flow(tiny_settings)
    # Same inputs for both runs: the ASTs the local run "observed" are given to the S3 run.
    asts = next(u for u in local.urls["demo_asts"]) if "demo_asts" in local.urls else tiny_settings.observations.ast_results
    obs = tiny_settings.observations.model_copy(update={"ast_results": asts})
    remote_settings = with_output(tiny_settings.model_copy(update={"observations": obs}), "s3://beastflow-test/run",
                                  storage_options={"s3": {"endpoint_url": s3_endpoint}})
    remote = pipeline_flow(remote_settings)

    urls = [u for us in remote.urls.values() for u in us]
    assert urls and all(u.startswith("s3://beastflow-test/run/") for u in urls), urls
    remote_settings.activate()
    fs = s3fs.S3FileSystem(endpoint_url=s3_endpoint)
    assert fs.exists("beastflow-test/run/.cache/fit")  # cache records travel with the artifacts
    a = _read_stats(_stats_url(local))
    b = _read_stats(_stats_url(remote))
    assert a.shape == b.shape and a.height > 100
    assert a.columns == b.columns
    num = [c for c, t in a.schema.items() if t.is_numeric()]
    for c in num:
        assert (a[c] - b[c]).abs().max() <= 1e-9 * max(1.0, float(a[c].abs().max() or 0)), c
    # a rerun against S3 is all cache hits
    again = pipeline_flow(remote_settings)
    assert {s for units in again.states.values() for s in units.values()} == {"Cached"}


# ----------------------------------------------------------------------------------------------
FLAKY_MARK = "BEASTFLOW_TEST_FLAKY_MARK"


def fit_failing_once(settings, *args, **kwargs):
    """Runs inside a SLURM array task: the first call for sub-file bin*_sub0 fails once.

    The marker file (shared disk) makes "once" hold across array tasks.
    """
    from beastflow.fit.fitting import run_fit

    mark = Path(kwargs.pop("_mark"))
    if args[4].endswith("_sub0") and not mark.exists():
        mark.write_text(args[4])
        raise OSError(f"injected: node lost while fitting {os.path.basename(args[4])}")
    return run_fit(settings, *args, **kwargs)


def test_trim_and_fit_as_slurm_arrays(tiny_settings, slurm_cluster, tmp_path, monkeypatch):
    import cloudpickle

    from flows import stages

    # this test module is not importable inside a job: ship the wrapper by value
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    real_fit_units = stages.fit_units

    def fit_units_with_flaky(*a, **k):
        units = real_fit_units(*a, **k)
        for u in units:
            u.func = fit_failing_once
            u.kwargs = {**u.kwargs, "_mark": str(tmp_path / "failed-once")}
        return units

    monkeypatch.setattr(stages, "fit_units", fit_units_with_flaky)
    folder = tmp_path / "submitit"
    slurm = tiny_settings.execution.slurm.model_copy(update={"folder": str(folder), "time_min": 5,
                                                             "partition": "debug"})
    settings = with_execution(tiny_settings, executor="slurm", retries=1, retry_delay_s=0.0, slurm=slurm)
    run = pipeline_flow(settings)

    assert set(run.states["trim"].values()) == {"Completed"}
    assert set(run.states["fit"].values()) == {"Completed"}
    assert run.summary["stars"] > 100
    n_units = len(run.states["fit"])
    # submitit's folders are "<array job id>_<task index>": one array for trim, one for fit,
    # and a one-element array for the fit that failed once
    jobs: dict[str, list[int]] = {}
    for d in folder.iterdir():
        if d.is_dir() and "_" in d.name:
            jid, idx = d.name.split("_", 1)
            jobs.setdefault(jid, []).append(int(idx))
    sizes = sorted(len(v) for v in jobs.values())
    assert sizes == sorted([n_units, n_units, 1]), jobs
    assert (tmp_path / "failed-once").exists()
    # memory request: from the trimmed grid size, written into the sbatch file
    sbatch = "\n".join(p.read_text() for p in folder.rglob("*.sh")) if any(folder.rglob("*.sh")) else ""
    assert "--mem=" in sbatch or not sbatch

    # rerun: every array unit is a cache hit, no job is submitted
    before = {d.name for d in folder.iterdir()}
    again = pipeline_flow(settings)
    assert set(again.states["fit"].values()) == {"Cached"}
    assert {d.name for d in folder.iterdir()} == before
