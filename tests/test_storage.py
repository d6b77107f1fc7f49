import pytest

from beastflow import storage


def test_atomic_write_keeps_old_version_on_error(tmp_path):
    url = str(tmp_path / "a" / "x.json")
    storage.write_json(url, {"v": 1})
    with pytest.raises(RuntimeError):
        with storage.atomic_write(url) as fh:
            fh.write(b"partial")
            raise RuntimeError("boom")
    assert storage.read_json(url) == {"v": 1}
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["x.json"]


def test_local_copy_for_write_is_atomic(tmp_path):
    url = str(tmp_path / "f.bin")
    with pytest.raises(ValueError):
        with storage.local_copy_for_write(url) as local:
            open(local, "wb").write(b"half")
            raise ValueError("x")
    assert not (tmp_path / "f.bin").exists()
    with storage.local_copy_for_write(url) as local:
        open(local, "wb").write(b"whole")
    assert (tmp_path / "f.bin").read_bytes() == b"whole"
    assert list(tmp_path.iterdir()) == [tmp_path / "f.bin"]


def test_memory_filesystem_roundtrip():
    url = "memory://beastflow-test/run/y.bin"
    storage.write_bytes(url, b"abc")
    assert storage.read_bytes(url) == b"abc"
    assert storage.content_hash(url) == storage.content_hash(url)
    with storage.local_copy_for_write("memory://beastflow-test/run/z.bin") as local:
        open(local, "wb").write(b"zz")
    assert storage.read_bytes("memory://beastflow-test/run/z.bin") == b"zz"


def test_hash_object_is_order_independent():
    assert storage.hash_object({"a": 1, "b": 2}) == storage.hash_object({"b": 2, "a": 1})


# ----------------------------------------------------------------------------------------------
# writes stay inside the run's output root (issue 12, item 2)
# ----------------------------------------------------------------------------------------------
def test_confined_writes_refuse_paths_outside_the_root(tmp_path):
    root = str(tmp_path / "out")
    with storage.confine_writes(root):
        storage.write_bytes(str(tmp_path / "out" / "a" / "ok.bin"), b"1")
        for bad in (str(tmp_path / "escape.bin"), root + "/../escape.bin", root + "-sibling/x.bin", "/x"):
            with pytest.raises(storage.OutsideOutputError, match="outside the run's output root"):
                storage.write_bytes(bad, b"2")
            with pytest.raises(storage.OutsideOutputError):
                with storage.local_copy_for_write(bad):
                    pass
        with pytest.raises(storage.OutsideOutputError):
            storage.remove(str(tmp_path))
        with pytest.raises(storage.OutsideOutputError):
            storage.open_url(str(tmp_path / "w.txt"), "w")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    storage.write_bytes(str(tmp_path / "free.bin"), b"3")  # outside the block: unconfined


def test_containment_across_protocols():
    assert storage.is_inside("s3://bucket/run/x/y.parquet", "s3://bucket/run")
    assert not storage.is_inside("s3://bucket/run/../other/y", "s3://bucket/run")
    assert not storage.is_inside("s3://bucket/runner/y", "s3://bucket/run")
    assert not storage.is_inside("/bucket/run/y", "s3://bucket/run")


def test_portable_names_resolve_back_below_the_root(tmp_path):
    root = str(tmp_path / "out")
    rec = {
        "inputs": {"grid": root + "/P_seds.grid.hd5", "catalog": "/data/field/phot.fits"},
        "n": 3,
        "list": [root + "/a/b.parquet", "s3://bucket/x"],
    }
    with storage.confine_writes(root):
        port = storage.portable(rec)
    assert port == {
        "inputs": {"grid": "P_seds.grid.hd5", "catalog": "/data/field/phot.fits"},
        "n": 3,
        "list": ["a/b.parquet", "s3://bucket/x"],
    }
    assert storage.portable(rec) == rec  # outside a running stage nothing is rewritten
    assert storage.resolve("P_seds.grid.hd5", "s3://b/run") == "s3://b/run/P_seds.grid.hd5"
    assert storage.resolve("/data/field/phot.fits", root) == "/data/field/phot.fits"
    with pytest.raises(storage.OutsideOutputError):
        storage.resolve("../escape", root)
