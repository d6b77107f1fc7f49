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
