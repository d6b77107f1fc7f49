"""[storage.globus] settings, which files move where, and the local-copy stand-in for Globus."""

from __future__ import annotations

import pytest

from beastflow.settings import SettingsError, load_settings, settings_from_dict
from beastflow.transfer import LocalCopyTransfer, TransferItem, TransferRequest, plan

LAPTOP = "6c54cade-bde5-45c1-bdea-f4bd71dba2cc"
CLUSTER = "1c3ff1ba-4d0c-4c9a-a2a0-2ee3a0b1c8d2"
PROJECTS = "0b5f8a9e-3c1d-4e2f-8a7b-9c0d1e2f3a4b"


def _globus(**kw):
    g = {
        "source_collection": LAPTOP,
        "source_path": "/~/beast/m31/",
        "destination_collection": CLUSTER,
        "destination_path": "/alice/m31/",
        "scratch_dir": "/gpfs/scratch/alice/m31",
        "stage_in": ["phot.parquet", "asts/"],
    }
    g.update(kw)
    return g


def _settings(output="/gpfs/scratch/alice/m31/out", **kw):
    return settings_from_dict({"project": {"name": "m31", "output": output}, "storage": {"globus": _globus(**kw)}})


def test_settings_file_with_globus_table(tmp_path):
    f = tmp_path / "field.toml"
    f.write_text(f"""
[project]
output = "scratch/out"
[storage.globus]
source_collection = "{LAPTOP}"
source_path = "/~/beast/m31/"
destination_collection = "{CLUSTER}"
destination_path = "/scratch/alice/m31/"
scratch_dir = "scratch"
stage_in = ["phot.parquet"]
stage_out = ["stats", "report"]
token_file = "~/.beastflow/globus-tokens.json"
""")
    s = load_settings(str(f))
    g = s.storage.globus
    assert g.scratch_dir == str(tmp_path / "scratch")  # relative to the settings file, like every path
    assert g.results_folder == "/~/beast/m31/results"
    assert g.token_file.endswith("/.beastflow/globus-tokens.json") and not g.token_file.startswith("~")
    assert s.storage.globus.stage_out == ["stats", "report"]


@pytest.mark.parametrize(
    "bad, named",
    [
        ({"source_collection": "my-laptop"}, r"storage\.globus\.source_collection: .*UUID"),
        ({"destination_path": "scratch/m31"}, r"storage\.globus\.destination_path: .*absolute Globus path"),
        ({"stage_in": ["../../etc/passwd"]}, r"storage\.globus\.stage_in: .*relative to source_path"),
        ({"stage_out": ["pdfs"]}, r"storage\.globus\.stage_out\.0"),
        ({"timeout_s": 0}, r"storage\.globus\.timeout_s"),
        ({"client_secret": "x"}, r"storage\.globus\.client_secret: unknown key"),
        ({"grid_cache_path": "/alice/m31/grid"}, r"grid_cache_path must not lie inside destination_path"),
    ],
)
def test_bad_globus_settings_are_named(bad, named):
    with pytest.raises(SettingsError, match=named):
        _settings(**bad)


def test_globus_table_changes_no_cache_key():
    from beastflow.flows.caching import settings_hash
    from beastflow.flows.stages import SECTIONS

    a, b = _settings(), _settings(stage_in=["other.parquet"], timeout_s=10.0)
    for stage, sections in SECTIONS.items():
        assert settings_hash(a, sections) == settings_hash(b, sections), stage


def test_stage_in_maps_source_to_scratch():
    s = _settings()
    req = plan.stage_in_request(s)
    assert (req.source_collection, req.destination_collection) == (LAPTOP, CLUSTER)
    assert req.items == (
        TransferItem("/~/beast/m31/phot.parquet", "/alice/m31/phot.parquet", False),
        TransferItem("/~/beast/m31/asts/", "/alice/m31/asts/", True),
    )
    assert plan.staged_inputs(s) == ["/gpfs/scratch/alice/m31/phot.parquet", "/gpfs/scratch/alice/m31/asts"]
    assert req.label == "beastflow m31 stage in" and req.verify_checksum


def test_stage_out_maps_scratch_paths_to_globus_paths():
    s = _settings(results_path="/~/beast/m31/run-1/")
    req = plan.stage_out_request(
        s, ["/gpfs/scratch/alice/m31/out/m31_stats.parquet"], ["/gpfs/scratch/alice/m31/out/report"]
    )
    assert (req.source_collection, req.destination_collection) == (CLUSTER, LAPTOP)
    assert req.items == (
        TransferItem("/alice/m31/out/m31_stats.parquet", "/~/beast/m31/run-1/m31_stats.parquet", False),
        TransferItem("/alice/m31/out/report/", "/~/beast/m31/run-1/report/", True),
    )


def test_grid_cache_goes_to_another_collection_and_comes_back():
    s = _settings(grid_cache_path="/projects/alice/grids/m31/", grid_cache_collection=PROJECTS)
    out = plan.grid_cache_out_request(
        s,
        ["/gpfs/scratch/alice/m31/out/m31_seds.grid.hd5", "/gpfs/scratch/alice/m31/out/.cache/physicsmodel/seds.json"],
    )
    assert (out.source_collection, out.destination_collection) == (CLUSTER, PROJECTS)
    assert [i.destination for i in out.items] == [
        "/projects/alice/grids/m31/m31_seds.grid.hd5",
        "/projects/alice/grids/m31/.cache/physicsmodel/seds.json",
    ]
    back = plan.grid_cache_in_request(s)
    assert (back.source_collection, back.destination_collection) == (PROJECTS, CLUSTER)
    assert back.items == (TransferItem("/projects/alice/grids/m31/", "/alice/m31/out/", True),)


def test_check_refuses_unusable_layouts(tmp_path):
    with pytest.raises(ValueError, match=r"project\.output = 's3://b/m31' is not a local path"):
        plan.check(_settings(output="s3://b/m31"))
    with pytest.raises(
        ValueError, match=r"project\.output = '/home/alice/out' is not inside storage\.globus\.scratch_dir"
    ):
        plan.check(_settings(output="/home/alice/out"))
    with pytest.raises(ValueError, match=r"storage\.globus\.token_file .* lies inside project\.output"):
        plan.check(_settings(token_file="/gpfs/scratch/alice/m31/out/tokens.json"))
    plan.check(_settings(token_file="/home/alice/.beastflow/tokens.json"))  # fine


def test_request_key_follows_the_bytes(tmp_path):
    f = tmp_path / "a.parquet"
    f.write_bytes(b"one")
    req = TransferRequest(CLUSTER, LAPTOP, (TransferItem("/x/a.parquet", "/y/a.parquet"),), "l")
    k1 = plan.request_key(req, [str(f)])
    f.touch()
    assert plan.request_key(req, [str(f)]) == k1  # a new mtime is not a change
    f.write_bytes(b"two")
    assert plan.request_key(req, [str(f)]) != k1
    moved = TransferRequest(CLUSTER, LAPTOP, (TransferItem("/x/a.parquet", "/z/a.parquet"),), "l")
    assert plan.request_key(moved, [str(f)]) != plan.request_key(req, [str(f)])


def test_local_copy_follows_globus_checksum_sync(tmp_path):
    (tmp_path / "laptop" / "in").mkdir(parents=True)
    (tmp_path / "laptop" / "in" / "a.txt").write_text("a")
    (tmp_path / "laptop" / "in" / "sub").mkdir()
    (tmp_path / "laptop" / "in" / "sub" / "b.txt").write_text("b")
    t = LocalCopyTransfer({LAPTOP: str(tmp_path / "laptop"), CLUSTER: str(tmp_path / "cluster")})
    req = TransferRequest(LAPTOP, CLUSTER, (TransferItem("/~/in/", "/scratch/in/", True),), "l")
    first = t.status(t.submit(req))
    assert (first["status"], first["files"], first["files_transferred"]) == ("SUCCEEDED", 2, 2)
    assert (tmp_path / "cluster" / "scratch" / "in" / "sub" / "b.txt").read_text() == "b"
    (tmp_path / "laptop" / "in" / "a.txt").write_text("A")
    second = t.status(t.submit(req))
    assert (second["files_transferred"], second["files_skipped"]) == (1, 1)
    missing = t.status(t.submit(TransferRequest(LAPTOP, CLUSTER, (TransferItem("/nope", "/x"),), "l")))
    assert missing["status"] == "FAILED" and missing["fatal_error"]["code"] == "FILE_NOT_FOUND"
    with pytest.raises(ValueError, match="leaves collection"):
        t.exists(LAPTOP, "/../cluster/scratch")
