"""The pipeline against real services started by the tests on 127.0.0.1:
an S3 endpoint (moto server) and a one-node SLURM cluster (infra/slurm-up.sh).
"""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path

import polars as pl
import pytest

from beastflow import storage
from beastflow.flows.pipeline import pipeline_flow

from .conftest import with_execution, with_output

pytestmark = [pytest.mark.service, pytest.mark.usefixtures("prefect_fast")]


def _read_stats(url: str) -> pl.DataFrame:
    with storage.open_url(url, "rb") as fh:
        return pl.read_parquet(fh)


def _stats_url(run) -> str:
    return next(u for u in run.urls["merge"] if u.endswith("_stats.parquet"))


@pytest.fixture(scope="module")
def s3_run(demo_field, prefect_backend, s3_endpoint, tmp_path_factory):
    """A local pipeline run, and settings for the same field with the output on S3 (once per module)."""
    import prefect.settings as ps
    import s3fs
    from prefect.settings import temporary_settings

    tiny_settings = with_execution(
        with_output(demo_field, str(tmp_path_factory.mktemp("s3-local") / "out")),
        retry_delay_s=0.0,
        retries=1,
        progress=False,
    )

    mp = pytest.MonkeyPatch()
    mp.setenv("AWS_SECRET_ACCESS_KEY", PLANTED_SECRET)  # taken from the environment at run time
    s3fs.S3FileSystem.clear_instance_cache()
    fs = s3fs.S3FileSystem(endpoint_url=s3_endpoint)
    if fs.exists("beastflow-test"):
        fs.rm("beastflow-test", recursive=True)
    fs.mkdir("beastflow-test")
    with temporary_settings(updates={ps.PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        local = pipeline_flow(tiny_settings)
    # Same inputs for both runs: the ASTs the local run "observed" are given to the S3 run.
    asts = local.urls["demo_asts"][0] if "demo_asts" in local.urls else tiny_settings.observations.ast_results
    obs = tiny_settings.observations.model_copy(update={"ast_results": asts})
    remote = with_output(
        tiny_settings.model_copy(update={"observations": obs}),
        "s3://beastflow-test/run",
        storage_options={"s3": {"endpoint_url": s3_endpoint}},
    )
    yield local, remote, fs
    mp.undo()


#: a credential planted in the environment of the S3 and SLURM runs (moto accepts any secret);
#: it must end up in no file those runs write (issue 12, item 3)
PLANTED_SECRET = f"planted-{uuid.uuid4().hex}"


def _prefect_state_folders() -> list[Path]:
    """PREFECT_HOME and the folder of the Prefect database the tests' flow runs are stored in."""
    from prefect.settings import get_current_settings

    cur = get_current_settings()
    folders = [Path(cur.home)]
    db = cur.server.database.connection_url
    db = db.get_secret_value() if hasattr(db, "get_secret_value") else str(db or "")
    if db.startswith("sqlite"):
        folders.append(Path(db.split("///", 1)[-1]).parent)
    return folders


def assert_secret_nowhere(secret: str, folders, fs=None, prefix: str | None = None) -> None:
    """grep -r for the secret in local folders (Prefect state, outputs, SLURM pickles) and an S3 prefix."""
    needle = secret.encode()
    hits = []
    for folder in folders:
        for p in Path(folder).rglob("*"):
            if p.is_file() and needle in p.read_bytes():
                hits.append(str(p))
    if fs is not None:
        hits += [k for k in fs.find(prefix) if needle in fs.cat_file(k)]
    assert not hits, f"the credential was persisted in {hits[:5]}"


def _assert_same_stats(a: pl.DataFrame, b: pl.DataFrame) -> None:
    assert a.shape == b.shape and a.columns == b.columns
    for c, t in a.schema.items():
        if t.is_numeric():
            scale = max(1.0, float(a[c].abs().max() or 0.0))
            assert float((a[c] - b[c]).abs().max() or 0.0) <= 1e-9 * scale, c
        else:
            assert a[c].to_list() == b[c].to_list(), c


def test_stages_on_s3_match_local(s3_run):
    """Every stage up to the fits, artifacts and cache records on S3; fits equal the local ones."""
    from beastflow.flows.pipeline import fit_flow

    local, remote_settings, fs = s3_run
    remote = fit_flow(remote_settings)  # pulls physics ... trim, grid info through their flows
    urls = remote.urls
    assert urls and all(u.startswith("s3://beastflow-test/run/") for u in urls), urls
    assert fs.exists("beastflow-test/run/.cache/fit") and fs.exists("beastflow-test/run/.cache/physicsmodel")
    assert remote.results.keys() == local.stages["fit"].results.keys()
    for label, res in remote.results.items():
        _assert_same_stats(_read_stats(local.stages["fit"].results[label].stats), _read_stats(res.stats))
    assert sum(_read_stats(r.stats).height for r in remote.results.values()) == local.summary["stars"]
    # a rerun against S3 finds every unit in the cache records on S3
    again = fit_flow(remote_settings)
    assert set(again.states.values()) == {"Cached"}


def test_full_pipeline_on_s3_matches_local(s3_run):
    """The whole pipeline with every artifact on S3: merged stats equal the local run's."""
    local, remote_settings, fs = s3_run
    remote = pipeline_flow(remote_settings)
    assert all(u.startswith("s3://beastflow-test/run/") for us in remote.urls.values() for u in us)
    _assert_same_stats(_read_stats(_stats_url(local)), _read_stats(_stats_url(remote)))
    again = pipeline_flow(remote_settings)
    assert {s for units in again.states.values() for s in units.values()} == {"Cached"}
    assert_secret_nowhere(PLANTED_SECRET, _prefect_state_folders() + [Path(local.output)], fs, "beastflow-test")


def test_local_run_folder_copied_to_s3_reruns_all_cached(s3_run, s3_endpoint, tmp_path):
    """Relocatable runs (issue 12, item 5): the local run folder uploaded to S3 is a complete,
    all-cached run there (new ETags: every output is re-hashed once), and names nothing outside."""
    local, remote_settings, fs = s3_run
    fs.put(local.output.rstrip("/") + "/", "beastflow-test/copied/", recursive=True)
    # the local run's own settings (the S3 run of the fixture was handed the local run's ASTs)
    obs = remote_settings.observations.model_copy(
        update={"ast_results": None if "demo_asts" in local.urls else remote_settings.observations.ast_results}
    )
    copied = with_output(
        remote_settings.model_copy(update={"observations": obs}),
        "s3://beastflow-test/copied",
        storage_options={"s3": {"endpoint_url": s3_endpoint}},
    )
    run = pipeline_flow(copied)
    states = {st for units in run.states.values() for st in units.values()}
    assert states == {"Cached"}, run.states
    assert all(u.startswith("s3://beastflow-test/copied/") for us in run.urls.values() for u in us)
    needle = local.output.encode()
    naming = [k for k in fs.find("beastflow-test/copied") if needle in fs.cat_file(k)]
    assert naming == [], naming

    # ... and back from S3 to local disk
    back = tmp_path / "back"
    fs.get("beastflow-test/copied/", str(back) + "/", recursive=True)
    again = pipeline_flow(with_output(copied, str(back), storage_options={}))
    assert {st for units in again.states.values() for st in units.values()} == {"Cached"}, again.states
    assert not [p for p in back.rglob("*") if p.is_file() and b"beastflow-test/copied" in p.read_bytes()]


class _UploadCounter:
    """WSGI middleware in front of moto: bytes of every request body the client sends
    (PUT, multipart part, POST) and the server-side copies (a "rename" on S3 is a copy)."""

    def __init__(self, app):
        self.app, self.body_bytes, self.copies = app, 0, []

    def __call__(self, environ, start_response):
        if environ["REQUEST_METHOD"] in ("PUT", "POST"):
            self.body_bytes += int(environ.get("CONTENT_LENGTH") or 0)
            if environ.get("HTTP_X_AMZ_COPY_SOURCE"):
                self.copies.append(environ["HTTP_X_AMZ_COPY_SOURCE"])
        return self.app(environ, start_response)


def test_s3_artifacts_are_written_once(s3_run):
    """Issue 18 item 2: on S3 every object is PUT once under its final key (a PUT is atomic), so
    the bytes sent for a whole pipeline run are about the bytes of what it leaves there."""
    import s3fs
    from moto.server import ThreadedMotoServer

    from .conftest import free_port

    local, remote_settings, _ = s3_run
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    try:
        counter = _UploadCounter(server._server.app)
        server._server.app = counter  # werkzeug hands each request to server.app
        host, port = server.get_host_and_port()
        url = f"http://{host}:{port}"
        fs = s3fs.S3FileSystem(endpoint_url=url, skip_instance_cache=True)
        fs.mkdir("beastflow-bytes")
        counter.body_bytes = 0
        s = with_output(remote_settings, "s3://beastflow-bytes/run", storage_options={"s3": {"endpoint_url": url}})
        run = pipeline_flow(s)
        final = sum(fs.du("beastflow-bytes/run", total=False).values())
        sent = counter.body_bytes
        print(
            f"S3 run: {sent} bytes sent, {final} bytes of final objects ({sent / final:.3f}x), "
            f"{len(counter.copies)} server-side copies"
        )
        assert run.summary["stars"] == local.summary["stars"]
        assert not counter.copies, counter.copies[:5]
        assert final <= sent <= 1.1 * final
    finally:
        server.stop()


# ----------------------------------------------------------------------------------------------
FLAKY_MARK = "BEASTFLOW_TEST_FLAKY_MARK"


def fit_failing_once(settings, *args, **kwargs):
    """Runs inside a SLURM array task: the first call for sub-file bin*_sub0 fails once.

    The marker file (shared disk) makes "once" hold across array tasks.
    """
    from beastflow.fit.fitting import run_fit

    mark = kwargs.pop("_mark")
    if args[4].endswith("_sub0"):
        try:  # O_EXCL: array tasks run at once, exactly one of them may create the marker
            os.close(os.open(mark, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            pass
        else:
            raise OSError(f"injected: node lost while fitting {os.path.basename(args[4])}")
    return run_fit(settings, *args, **kwargs)


def test_trim_and_fit_as_slurm_arrays(tiny_settings, slurm_cluster, tmp_path, monkeypatch):
    import cloudpickle

    from beastflow.flows import stages

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
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", PLANTED_SECRET)
    folder = tmp_path / "submitit"
    slurm = tiny_settings.execution.slurm.model_copy(
        update={
            "folder": str(folder),
            "time_min": 5,
            "partition": "debug",
            # scaled up so that the few-MB test grids give a request above the overhead
            "mem_overhead_gb": 0.5,
            "mem_factor": 100.0,
            "mem_max_gb": 16.0,
        }
    )
    settings = with_execution(tiny_settings, executor="slurm", retries=1, retry_delay_s=0.0, slurm=slurm)
    run = pipeline_flow(settings)

    assert set(run.states["trim"].values()) == {"Completed"}
    assert set(run.states["fit"].values()) == {"Completed"}
    assert run.summary["stars"] > 100
    n_units = len(run.states["fit"])
    # submitit's folders: "<array job>_<task>" for array elements, "<job>" for a single job.
    # One array for trim, one for fit, then only the fit that failed resubmitted alone.
    names = sorted(p.name for p in folder.iterdir() if p.is_dir())
    arrays: dict[str, int] = {}
    for n in names:
        if "_" in n:
            arrays[n.split("_")[0]] = arrays.get(n.split("_")[0], 0) + 1
    singles = [n for n in names if "_" not in n and n not in arrays]
    scripts = [p.read_text() for p in folder.glob(".submission_file_*.sh")]
    # a single warm-up job before the first array when numba's cache does not hold the
    # kernels yet (it depends on which tests ran before in this process): at most one
    n_warm_up = sum("--job-name=bf-warmup" in t for t in scripts)
    assert n_warm_up <= 1, n_warm_up
    assert sorted(arrays.values()) == [n_units, n_units] and len(singles) == 1 + n_warm_up, names
    assert (tmp_path / "failed-once").exists()

    # memory request: overhead + factor x the kept share of grid + noise model (the trim index's set size)
    from beastflow.flows.executors import mem_request_gb

    trimmed = [t for ts in run.stages["trim"].results.values() for t in ts]
    from beastflow.flows.stages import _array_bytes

    expected = max(
        mem_request_gb(settings, int(_array_bytes(t.source_grid, t.source_noise)[0] * t.n_kept / t.n_models_in))
        for t in trimmed
    )
    assert expected > 1  # the grid size, not the overhead, decides it
    fit_scripts = [t for t in scripts if "--job-name=bf-fit" in t]
    assert fit_scripts and all(f"#SBATCH --mem={expected}GB" in t for t in fit_scripts[:1]), fit_scripts[0][:600]

    # rerun: every array unit is a cache hit, no job is submitted
    before = {d.name for d in folder.iterdir()}
    again = pipeline_flow(settings)
    assert set(again.states["fit"].values()) == {"Cached"}
    assert {d.name for d in folder.iterdir()} == before
    # the settings travel to the jobs as pickles: no credential may be in them
    assert_secret_nowhere(PLANTED_SECRET, _prefect_state_folders() + [folder, Path(settings.output)])


def test_s3_output_lease_is_a_conditional_put(s3_endpoint, monkeypatch):
    """The lease on an S3 output (issue 12, item 6): If-None-Match create, owner, expiry, release."""
    import time

    import s3fs

    from beastflow import lease

    s3fs.S3FileSystem.clear_instance_cache()
    fs = s3fs.S3FileSystem(endpoint_url=s3_endpoint)
    if not fs.exists("beastflow-lease"):
        fs.mkdir("beastflow-lease")
    storage.configure({"s3": {"endpoint_url": s3_endpoint}})
    try:
        root = "s3://beastflow-lease/run"
        lock = storage.join(root, lease.LOCK_NAME)
        with lease.output_lease(root):
            held = storage.read_json(lock)
            assert held["pid"] == os.getpid() and held["expires"] > time.time()
            monkeypatch.setattr(lease, "_HELD", {})  # as seen from another process
            with pytest.raises(lease.OutputBusy, match=f"pid {os.getpid()}"):
                with lease.output_lease(root):
                    pass
            monkeypatch.undo()
        assert not fs.exists("beastflow-lease/run/" + lease.LOCK_NAME)
        storage.write_json(lock, {"owner": "dead", "expires": time.time() - 5})
        with lease.output_lease(root):  # an expired lock (its run was killed) is taken over
            assert storage.read_json(lock)["owner"] != "dead"
    finally:
        storage.configure({})
