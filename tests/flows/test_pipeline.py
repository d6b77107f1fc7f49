"""The pipeline flow on the real stages: caching, reruns after a catalog change, retries.

Every test runs the whole pipeline on the smallest demo field (coarse grid,
150 stars; a few seconds per run) in its own output folder.
"""

from __future__ import annotations

import os
import shutil
from collections import Counter

import polars as pl
import pyarrow.parquet as pq
import pytest

from beastflow.flows.pipeline import pipeline_flow

from .conftest import with_execution, with_output

pytestmark = [pytest.mark.pipeline, pytest.mark.usefixtures("prefect_fast")]

#: stages that do not read the photometry catalog
UPSTREAM_OF_CATALOG = {"physicsmodel", "grid_info"}


def _flat(run) -> dict[str, str]:
    return {f"{stage}[{unit}]": state for stage, units in run.states.items() for unit, state in units.items()}


def _two_runs_at_once(settings):
    """Start two pipeline runs on one output at the same moment; (finished runs, refused runs)."""
    import contextvars
    from concurrent.futures import ThreadPoolExecutor

    from beastflow.lease import OutputBusy

    start = [contextvars.copy_context() for _ in range(2)]  # each thread sees the test's Prefect settings
    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(ctx.run, pipeline_flow, settings) for ctx in start]
    done, refused = [], []
    for f in futures:
        try:
            done.append(f.result())
        except OutputBusy as exc:
            refused.append(exc)
    return done, refused


def _assert_stage_flows_got_references(output: str) -> None:
    """Settings by reference (issue 12, item 3): the Prefect database holds the stage flows' settings
    only as ``settings-ref:{output}#sha256=...``; only the pipeline's own caller passed more."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(limit=200)
        names = {r.flow_id: client.read_flow(r.flow_id).name for r in runs}
    mine = [r for r in runs if output in str(r.parameters.get("settings"))]
    refs = [r for r in mine if str(r.parameters["settings"]).startswith("settings-ref:")]
    assert len({names[r.flow_id] for r in refs}) >= 10, sorted(names[r.flow_id] for r in refs)
    assert all(names[r.flow_id] == "beastflow-pipeline" for r in mine if r not in refs)


def test_second_run_recomputes_nothing(tiny_settings, tmp_path):
    # one run per output (issue 12, item 6): of two runs started at once one runs, the other is refused
    # naming the holder; the next run finds a complete, uncorrupted output (everything cached)
    done, refused = _two_runs_at_once(tiny_settings)
    assert len(done) == 1 and len(refused) == 1, (done, refused)
    assert "is in use by run" in str(refused[0]) and "\n" not in str(refused[0])
    first = done[0]
    assert set(first.states) >= {
        "physicsmodel",
        "density",
        "ast_inputs",
        "cut",
        "split",
        "noisemodel",
        "trim",
        "grid_info",
        "fit",
        "merge",
    }
    assert set(_flat(first).values()) == {"Completed"}, _flat(first)
    assert len(first.states["fit"]) >= 2  # fanned out over density bins / sub-files
    assert first.summary["stars"] > 100
    # the run a user opens in the UI carries the fit summary and says what it processed
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        arts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[first.flow_run_id]))
        )
    by_key = {a.key: a for a in arts}
    assert {"fit-summary", "pipeline-inputs"} <= set(by_key), set(by_key)
    assert tiny_settings.output in by_key["pipeline-inputs"].data

    _assert_stage_flows_got_references(tiny_settings.output)

    second = pipeline_flow(tiny_settings)
    # every task of every stage finished in the "Cached" state: nothing recomputed
    assert set(_flat(second).values()) == {"Cached"}, _flat(second)
    assert second.urls == first.urls
    assert second.summary == first.summary

    # relocatable (issue 12, item 5): the run folder copied (cp -a) and the original moved away
    # reruns as all-cached, and nothing in the copy names the original folder
    original = tiny_settings.output
    copy = tmp_path / "copied-run"
    shutil.copytree(original, copy, copy_function=shutil.copy2)
    shutil.move(original, tmp_path / "moved-away")
    moved = with_output(tiny_settings, str(copy))
    third = pipeline_flow(moved)
    assert set(_flat(third).values()) == {"Cached"}, _flat(third)
    assert all(u.startswith(str(copy) + "/") for us in third.urls.values() for u in us)
    assert third.summary["stars"] == first.summary["stars"]
    naming = [p.name for p in copy.rglob("*") if p.is_file() and original.encode() in p.read_bytes()]
    assert not naming, f"artifacts naming the original run folder: {naming}"

    # verified hits (issue 12, item 4): a trim index overwritten in place (same size) and a
    # truncated noise model are recomputed, not handed out
    trim_label = sorted(third.states["trim"])[0]
    (trimmed,) = third.stages["trim"].results[trim_label]
    size = os.path.getsize(trimmed.index_url)
    with open(trimmed.index_url, "r+b") as fh:
        fh.seek(size // 2)
        fh.write(os.urandom(size - size // 2))
    noise_label = sorted(third.states["noisemodel"])[-1]
    noise_url = third.stages["noisemodel"].results[noise_label]
    with open(noise_url, "r+b") as fh:
        fh.truncate(os.path.getsize(noise_url) // 2)
    fourth = pipeline_flow(moved)
    assert fourth.states["trim"][trim_label] == "Completed"
    assert fourth.states["noisemodel"][noise_label] == "Completed"
    assert fourth.states["physicsmodel"]["seds"] == "Cached"
    assert fourth.summary == third.summary  # the repaired artifacts give the same fits


def _change_one_row(src: str, dst: str) -> None:
    """Copy the catalog with one star's F475W flux changed; keep the Parquet metadata."""
    table = pq.read_table(src)
    col = table.column("F475W_RATE").to_pylist()
    col[0] = col[0] * 1.2
    i = table.column_names.index("F475W_RATE")
    table = table.set_column(i, table.schema.field(i), [col])
    pq.write_table(table, dst)


def test_changed_catalog_row_reruns_only_downstream(tiny_settings, tmp_path, monkeypatch):
    catalog = tmp_path / "catalog.parquet"
    shutil.copyfile(tiny_settings.observations.catalog, catalog)
    obs = tiny_settings.observations.model_copy(update={"catalog": str(catalog)})
    settings = tiny_settings.model_copy(update={"observations": obs})
    first = pipeline_flow(settings)

    _change_one_row(str(catalog), str(catalog))
    from beastflow.flows.progress import StageProgress

    reports: list[tuple[str, str, int]] = []
    real = StageProgress.stars_done
    monkeypatch.setattr(
        StageProgress,
        "stars_done",
        lambda self, label, done: (reports.append((self.stage, label, done)), real(self, label, done)),
    )
    second = pipeline_flow(settings)
    for stage in UPSTREAM_OF_CATALOG:
        assert set(second.states[stage].values()) == {"Cached"}, (stage, second.states[stage])
    # the catalog stages rerun, but split keeps every file whose rows did not change (issue 18
    # item 3): the per-bin ASTs are the same, so the noise models stay cached, and only the
    # sub-file holding the changed star is trimmed and fitted again
    assert set(second.states["split"].values()) == {"Completed"}
    assert set(second.states["noisemodel"].values()) == {"Cached"}, second.states["noisemodel"]
    for stage in ("trim", "fit"):
        states = list(second.states[stage].values())
        assert states.count("Completed") == 1 and states.count("Cached") == len(states) - 1, second.states[stage]
    assert second.states["merge"] == {"merge": "Completed"}
    assert second.summary["stars"] == first.summary["stars"]
    # star-level progress inside the recomputed fit unit reached the stage's progress (bar + artifact)
    (refit,) = [lb for lb, st in second.states["fit"].items() if st == "Completed"]
    assert reports and {(s, lb) for s, lb, _ in reports} == {("fit", refit)}
    assert reports[-1][2] == len(pl.read_parquet(second.stages["fit"].results[refit].stats))


def test_transient_fit_failure_is_retried(tiny_settings, monkeypatch):
    from beastflow.fit import fitting

    real_fit = fitting.run_fit
    calls: Counter = Counter()
    failed: list[str] = []

    def fit_failing_once(settings, *args, **kwargs):
        prefix = args[4]
        calls[prefix] += 1
        if not failed:  # the first fit call of the run hits a transient error
            failed.append(prefix)
            raise OSError(f"injected transient I/O error writing {prefix}_stats.parquet")
        return real_fit(settings, *args, **kwargs)

    monkeypatch.setattr(fitting, "run_fit", fit_failing_once)
    run = pipeline_flow(with_execution(tiny_settings, retries=1, retry_delay_s=0.0))

    assert failed and calls[failed[0]] == 2  # retried once, alone
    assert all(n == 1 for p, n in calls.items() if p != failed[0])
    assert set(run.states["fit"].values()) == {"Completed"}
    assert set(run.states["merge"].values()) == {"Completed"}
    assert run.summary["stars"] > 100

    # Prefect recorded the retry on that task run
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterName

    label = next(lb for lb in run.states["fit"] if failed[0].endswith(lb.rsplit("_grid", 1)[0]))
    with get_client(sync_client=True) as client:
        trs = client.read_task_runs(task_run_filter=TaskRunFilter(name=TaskRunFilterName(any_=[f"fit[{label}]"])))
    assert any(tr.run_count == 2 and tr.state.name == "Completed" for tr in trs)


def test_failed_subfile_is_named(tiny_settings, monkeypatch):
    from beastflow.fit import fitting
    from beastflow.flows.executors import UnitsFailed

    def always_fails(settings, *args, **kwargs):
        if args[4].endswith("_sub0"):
            raise ValueError("injected: this sub-file cannot be fitted")
        return real(settings, *args, **kwargs)

    real = fitting.run_fit
    monkeypatch.setattr(fitting, "run_fit", always_fails)
    with pytest.raises(UnitsFailed) as err:
        pipeline_flow(with_execution(tiny_settings, retries=0))
    assert err.value.stage == "fit"
    assert err.value.failures and all("sub0" in lb for lb in err.value.failures)
    assert "injected: this sub-file cannot be fitted" in str(err.value)


def test_process_pool_executor_runs_trim_and_fit(tiny_settings, monkeypatch):
    from beastflow.flows.progress import StageProgress

    reports: list[tuple[str, int]] = []
    real = StageProgress.stars_done
    monkeypatch.setattr(
        StageProgress, "stars_done", lambda self, label, done: (reports.append((label, done)), real(self, label, done))
    )
    settings = with_execution(tiny_settings, executor="processes", workers=2)
    first = pipeline_flow(settings)
    assert set(first.states["fit"].values()) == {"Completed"} and first.summary["stars"] > 100
    # star-level progress from the pool workers' fits reached the stage's progress
    final = {}
    for label, done in reports:
        final[label] = max(final.get(label, 0), done)
    assert set(final) == set(first.states["fit"]) and sum(final.values()) == first.summary["stars"]
    second = pipeline_flow(settings)
    # the array task finds every unit in the cache and is itself "Cached"
    assert set(second.states["trim"].values()) == {"Cached"} and set(second.states["fit"].values()) == {"Cached"}


def test_subgrids_fan_out_and_merge(tiny_settings):
    """Two subgrids: noise models per (bin, subgrid), trims and fits per (bin, sub-file, subgrid)."""
    physics = tiny_settings.physics.model_copy(update={"n_subgrid": 2})
    run = pipeline_flow(tiny_settings.model_copy(update={"physics": physics}))
    fits = run.states["fit"]
    assert {lb.rsplit("_", 1)[1] for lb in fits} == {"gridsub0", "gridsub1"}
    subfiles = {lb.rsplit("_", 1)[0] for lb in fits}
    assert len(fits) == 2 * len(subfiles) and len(run.states["trim"]) == len(fits)
    assert len(run.states["noisemodel"]) == 2 * len({lb.split("_")[0] for lb in fits})
    assert run.summary["stars"] > 100


def test_missing_catalog_fails_before_the_first_stage(tiny_settings):
    """Fail fast (issue 12, item 8): no physics model is built for a run that cannot fit anything."""
    import time
    from pathlib import Path

    from beastflow.preflight import InputsError

    obs = tiny_settings.observations.model_copy(
        update={"catalog": str(Path(tiny_settings.output).parent / "gone.fits")}
    )
    settings = tiny_settings.model_copy(update={"observations": obs})
    t0 = time.monotonic()
    with pytest.raises(InputsError, match=r"observations\.catalog = .*gone\.fits: file not found"):
        pipeline_flow(settings)
    assert time.monotonic() - t0 < 30
    out = Path(settings.output)
    assert not out.exists() or not any(out.rglob("*.hd5")), "a stage ran before the inputs were checked"


def test_deployment_runs_queue_on_the_outputs_concurrency_limit(tiny_settings):
    """With the output's Prefect concurrency limit (deployments/serve.py creates it), a run that finds
    the slot taken stops with a one-line message instead of colliding (issue 12, item 6)."""
    from prefect.client.orchestration import get_client
    from prefect.concurrency.sync import concurrency

    from beastflow.flows.output_limit import ensure_output_limit
    from beastflow.lease import OutputBusy

    name = ensure_output_limit(tiny_settings)
    try:
        with concurrency(name, occupy=1, strict=True):  # another flow run holds the output
            with pytest.raises(OutputBusy, match=f"concurrency limit {name} has no free slot"):
                pipeline_flow(tiny_settings)
    finally:
        with get_client(sync_client=True) as client:
            client.delete_global_concurrency_limit_by_name(name)
