"""The pipeline with [storage.globus]: inputs arrive and results leave through the transfer tasks.

Two local folders stand in for the two Globus collections: ``laptop/`` (the
source: inputs, and results coming back) and ``cluster/`` (scratch and the
cluster's project space).  ``LocalCopyTransfer`` copies between them with
Globus' checksum-sync rules; the last test drives the real globus-sdk client
instead, against registered HTTP responses whose transfer endpoint does the
same copy, with planted credentials that must not show up anywhere.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path

import pytest

import beastflow.flows.transfer
from beastflow.flows.pipeline import pipeline_flow
from beastflow.settings.globus import Globus, Storage
from beastflow.transfer import LocalCopyTransfer, TransferFailed, TransferRequest
from beastflow.transfer.base import TransferItem

pytestmark = [pytest.mark.pipeline, pytest.mark.usefixtures("prefect_fast")]

LAPTOP = "6c54cade-bde5-45c1-bdea-f4bd71dba2cc"
CLUSTER = "1c3ff1ba-4d0c-4c9a-a2a0-2ee3a0b1c8d2"
SCIENCE_STAGES = {
    "physicsmodel",
    "density",
    "ast_inputs",
    "demo_asts",
    "cut",
    "split",
    "noisemodel",
    "trim",
    "grid_info",
    "fit",
    "merge",
}


def _sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _field(tiny_settings, tmp_path, **globus):
    """The demo field on the 'laptop'; settings pointing at scratch copies on the 'cluster'."""
    laptop, cluster = tmp_path / "laptop", tmp_path / "cluster"
    (laptop / "m31").mkdir(parents=True)
    (cluster / "scratch" / "m31").mkdir(parents=True)
    shutil.copyfile(tiny_settings.observations.catalog, laptop / "m31" / "phot.parquet")
    scratch = cluster / "scratch" / "m31"
    g = Globus(
        source_collection=LAPTOP,
        source_path="/~/m31/",
        destination_collection=CLUSTER,
        destination_path="/scratch/m31/",
        scratch_dir=str(scratch),
        stage_in=["phot.parquet"],
        poll_s=0.01,
        timeout_s=60.0,
        **globus,
    )
    s = tiny_settings.model_copy(
        update={
            "observations": tiny_settings.observations.model_copy(update={"catalog": str(scratch / "phot.parquet")}),
            "project": tiny_settings.project.model_copy(update={"output": str(scratch / "out")}),
            "storage": Storage(globus=g),
        }
    )
    return s, laptop, cluster, scratch


def _states(run, stage):
    return run.states.get(stage, {})


def test_inputs_arrive_and_results_leave_through_transfer_tasks(tiny_settings, tmp_path, monkeypatch):
    s, laptop, cluster, scratch = _field(
        tiny_settings,
        tmp_path,
        grid_cache_path="/projects/grids/m31/",
        stage_out=["stats", "pdf1d", "pdf2d", "lnp", "report"],
    )
    fake = LocalCopyTransfer({LAPTOP: str(laptop), CLUSTER: str(cluster)})
    monkeypatch.setattr(beastflow.flows.transfer, "transfer_factory", lambda settings: fake)
    assert not (scratch / "phot.parquet").exists()

    first = pipeline_flow(s)
    # the catalog came in through the stage-in task, byte for byte
    assert _states(first, "stage_in") == {"inputs": "Completed"}
    assert _sha(scratch / "phot.parquet") == _sha(laptop / "m31" / "phot.parquet")
    assert first.summary["stars"] > 100
    # results went back through the stage-out task
    assert _states(first, "stage_out") == {"results": "Completed"}
    merged = first.stages["merge"].results["merge"]
    results = laptop / "m31" / "results"
    for url in (merged.stats, merged.pdf1d, merged.pdf2d, merged.lnp):
        assert _sha(results / os.path.basename(url)) == _sha(url)
    assert (results / "report" / "index.html").is_file()
    report = first.stages["stage_out"].results["results"]
    assert report.status == "SUCCEEDED" and report.files_transferred == report.files > 5
    # and the SED grid went to the cluster's project space
    assert _states(first, "grid_cache") == {"grid_cache_out": "Completed"}
    cached_grid = cluster / "projects" / "grids" / "m31"
    assert (cached_grid / ".cache" / "physicsmodel").is_dir()
    labels = [r.label for r in fake.requests]
    assert labels == ["beastflow demo stage in", "beastflow demo grid cache out", "beastflow demo stage out"]

    # rerun: no input changed, so every stage and transfer is Cached -- except the stage-out, because
    # the report is redrawn and carries this run's date; Globus' checksum sync then sends only the
    # files that changed
    n_before = len(fake.requests)
    second = pipeline_flow(s)
    not_cached = {f"{st}[{u}]" for st, units in second.states.items() for u, v in units.items() if v != "Cached"}
    assert not_cached == {"stage_out[results]"}, second.states
    again = second.stages["stage_out"].results["results"]
    assert again.files == report.files and 1 <= again.files_transferred <= 3
    assert again.files_skipped == report.files - again.files_transferred  # merged results, plots: not re-sent
    # stage-in asked Globus (checksums matched, nothing copied); the grid cache's outgoing transfer was
    # recognised from its record (same bytes, same destination) and not submitted at all
    assert [r.label for r in fake.requests[n_before:]] == [
        "beastflow demo stage in",
        "beastflow demo grid cache in",
        "beastflow demo stage out",
    ]

    # scratch purged: the inputs come back, and the SED grid from the grid cache (no recompute)
    shutil.rmtree(scratch)
    scratch.mkdir()
    third = pipeline_flow(s)
    assert _states(third, "stage_in") == {"inputs": "Completed", "grid_cache": "Completed"}
    assert _states(third, "physicsmodel") == {"seds": "Cached"}
    assert set(_states(third, "fit").values()) == {"Completed"}
    assert third.summary == first.summary


def test_missing_input_fails_the_run_naming_the_task(tiny_settings, tmp_path, monkeypatch):
    s, laptop, cluster, _ = _field(tiny_settings, tmp_path)
    (laptop / "m31" / "phot.parquet").unlink()
    fake = LocalCopyTransfer({LAPTOP: str(laptop), CLUSTER: str(cluster)})
    monkeypatch.setattr(beastflow.flows.transfer, "transfer_factory", lambda settings: fake)
    with pytest.raises(
        TransferFailed,
        match=r"Globus transfer task [0-9a-f-]{36} \(beastflow demo stage in\) "
        r"failed: FILE_NOT_FOUND.*phot\.parquet",
    ) as err:
        pipeline_flow(s)
    assert "\n" not in str(err.value)
    assert len(fake.requests) == 1  # a failed transfer is not retried


def test_transient_transfer_error_is_retried(tiny_settings, tmp_path, monkeypatch):
    """A network error while submitting is retried (execution.retries); the retry's transfer succeeds."""
    from beastflow.flows.transfer import stage_in_flow

    s, laptop, cluster, scratch = _field(tiny_settings, tmp_path)
    fake = LocalCopyTransfer({LAPTOP: str(laptop), CLUSTER: str(cluster)})
    attempts: list[str] = []

    class FlakyNetwork:
        def __getattr__(self, name):
            return getattr(fake, name)

        def submit(self, request):
            attempts.append(request.label)
            if len(attempts) == 1:
                raise ConnectionError("connection reset by peer")
            return fake.submit(request)

    monkeypatch.setattr(beastflow.flows.transfer, "transfer_factory", lambda settings: FlakyNetwork())
    run = stage_in_flow(s)
    assert run.states == {"inputs": "Completed"}
    assert attempts == ["beastflow demo stage in"] * 2
    assert _sha(scratch / "phot.parquet") == _sha(laptop / "m31" / "phot.parquet")


def test_output_outside_scratch_is_refused(tiny_settings, tmp_path, monkeypatch):
    s, laptop, cluster, _ = _field(tiny_settings, tmp_path)
    s = s.model_copy(update={"project": s.project.model_copy(update={"output": str(tmp_path / "elsewhere")})})
    monkeypatch.setattr(
        beastflow.flows.transfer,
        "transfer_factory",
        lambda settings: LocalCopyTransfer({LAPTOP: str(laptop), CLUSTER: str(cluster)}),
    )
    with pytest.raises(ValueError, match=r"project.output = .*elsewhere.* is not inside storage.globus.scratch_dir"):
        pipeline_flow(s)


def test_no_globus_table_no_transfer_tasks(tiny_settings, monkeypatch):
    def refuse(settings):
        raise AssertionError("a transfer was requested without [storage.globus]")

    monkeypatch.setattr(beastflow.flows.transfer, "transfer_factory", refuse)
    run = pipeline_flow(tiny_settings)
    assert set(run.states) == SCIENCE_STAGES


# ------------------------------------------------------------------------------------------------
# the real globus-sdk client, mocked HTTP; planted credentials must not leak
# ------------------------------------------------------------------------------------------------
PLANTED_SECRET = "planted-client-secret-7c0ffee5d00d"
PLANTED_CLIENT_ID = "8a3e5b2c-0f0e-4d65-9d8b-6f1f3a7b9c01"


def _globus_service(mock, local: LocalCopyTransfer) -> None:
    """Registered Globus Auth + Transfer responses; POST /transfer copies with ``local``."""
    from globus_sdk.testing import load_response

    tokens = load_response("auth.oauth2_client_credentials_tokens", requests_mock=mock)
    load_response("transfer.get_submission_id", requests_mock=mock)

    def submit(request):
        body = json.loads(request.body)
        assert request.headers["Authorization"] == f"Bearer {tokens.metadata['access_token']}"
        assert body["sync_level"] == 3 and body["verify_checksum"] is True
        req = TransferRequest(
            body["source_endpoint"],
            body["destination_endpoint"],
            tuple(TransferItem(d["source_path"], d["destination_path"], d["recursive"]) for d in body["DATA"]),
            body["label"],
        )
        task_id = local.submit(req)
        return (
            202,
            {},
            json.dumps(
                {
                    "DATA_TYPE": "transfer_result",
                    "code": "Accepted",
                    "task_id": task_id,
                    "submission_id": body["submission_id"],
                }
            ),
        )

    def task(request):
        task_id = request.url.rstrip("/").rsplit("/", 1)[-1]
        return 200, {}, json.dumps({"DATA_TYPE": "task", **local.status(task_id)})

    import responses

    mock.add_callback(responses.POST, "https://transfer.api.globus.org/v0.10/transfer", callback=submit)
    mock.add_callback(
        responses.GET, re.compile(r"https://transfer\.api\.globus\.org/v0\.10/task/[0-9a-f-]+$"), callback=task
    )


def _files_containing(folder: Path, needles: list[bytes]) -> list[str]:
    hits = []
    for root, _, names in os.walk(folder):
        for n in names:
            p = Path(root) / n
            try:
                data = p.read_bytes()
            except OSError:
                continue
            hits += [f"{p}: {needle.decode()}" for needle in needles if needle in data]
    return hits


def test_real_client_pipeline_leaks_no_credentials(tiny_settings, tmp_path, monkeypatch):
    import prefect.settings as ps
    import responses

    s, laptop, cluster, scratch = _field(tiny_settings, tmp_path, stage_out=["stats", "pdf1d"])
    monkeypatch.setenv("GLOBUS_CLIENT_ID", PLANTED_CLIENT_ID)
    monkeypatch.setenv("GLOBUS_CLIENT_SECRET", PLANTED_SECRET)
    local = LocalCopyTransfer({LAPTOP: str(laptop), CLUSTER: str(cluster)})
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        _globus_service(mock, local)
        run = pipeline_flow(s)  # beastflow.flows.transfer.transfer_factory is the real globus_transfer
        token_calls = [c for c in mock.calls if c.request.url.endswith("/v2/oauth2/token")]
    assert token_calls, "the confidential client never asked Globus Auth for a token"
    assert _states(run, "stage_in") == {"inputs": "Completed"}
    assert _states(run, "stage_out") == {"results": "Completed"}
    assert run.stages["stage_out"].results["results"].link.startswith("https://app.globus.org/activity/")
    merged = run.stages["merge"].results["merge"]
    assert _sha(laptop / "m31" / "results" / os.path.basename(merged.stats)) == _sha(merged.stats)

    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()  # task logs reach the Prefect database before it is searched
    db_url = ps.PREFECT_SERVER_DATABASE_CONNECTION_URL.value()
    places = [scratch, laptop, Path(os.environ["PREFECT_HOME"])]
    if db_url and db_url.startswith("sqlite"):
        places.append(Path(db_url.split(":///", 1)[1]).parent)
    needles = [PLANTED_SECRET.encode(), b"DUMMY_TRANSFER_TOKEN_FROM_THE_INTERTUBES"]
    leaks = [h for p in places for h in _files_containing(p, needles)]
    assert not leaks, leaks
    # the search does look where Prefect keeps a run: the Globus task id (in the link artifact) is found there
    task_id = run.stages["stage_out"].results["results"].task_id
    assert _files_containing(places[-1], [task_id.encode()]), f"task {task_id} not found in the Prefect database"


def test_cli_without_globus_credentials_is_one_clear_line(tiny_settings, prefect_backend, tmp_path):
    """`beastflow run` with [storage.globus] but no credentials: exit 1, one line naming the variables."""
    import subprocess
    import sys
    import tempfile

    import prefect.settings as ps

    from .conftest import write_settings_toml

    s, _, _, scratch = _field(tiny_settings, tmp_path)
    settings_file = write_settings_toml(s, tmp_path / "field.toml")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GLOBUS_", "BEASTFLOW_GLOBUS_"))}
    env.update(PREFECT_HOME=tempfile.mkdtemp(prefix="bf-cli-prefect-"), PREFECT_API_URL=ps.PREFECT_API_URL.value())
    out = subprocess.run(
        [str(Path(sys.executable).with_name("beastflow")), "run", str(settings_file), "--no-progress"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    shutil.rmtree(env["PREFECT_HOME"], ignore_errors=True)
    assert out.returncode == 1, out.stderr[-3000:]
    errors = [ln for ln in out.stderr.splitlines() if ln.startswith("beastflow run: error:")]
    assert len(errors) == 1 and "GLOBUS_CLIENT_ID" in errors[0] and "GLOBUS_CLIENT_SECRET" in errors[0], out.stderr
    # (Prefect logs the failed flow runs with their tracebacks above; the CLI's verdict is the last line)
    assert out.stderr.strip().splitlines()[-1] == errors[0]
    assert not (scratch / "phot.parquet").exists()  # nothing ran past the failed stage-in
