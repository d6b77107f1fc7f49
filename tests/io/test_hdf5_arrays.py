"""A failed HDF5 write closes its file and leaves nothing behind (issue 12, item 7)."""

from __future__ import annotations

import errno
import functools

import h5py
import numpy as np
import pytest

from beastflow.io.hdf5_arrays import ArraysWriter, encode_chunk, read_rows, run_codec, shuffle_deflate


def _open_hdf5_files() -> int:
    return h5py.h5f.get_obj_count(h5py.h5f.OBJ_ALL, h5py.h5f.OBJ_FILE)


def test_disk_full_while_creating_datasets_closes_the_file(tmp_path, monkeypatch):
    real = h5py.Group.create_dataset
    calls = {"n": 0}

    def full_disk(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, *a, **k)

    monkeypatch.setattr(h5py.Group, "create_dataset", full_disk)
    before = _open_hdf5_files()
    writer = ArraysWriter(str(tmp_path / "g.hd5"), {"a": ((3,), np.float64), "b": ((2,), np.float64)}, n_rows=4)
    with pytest.raises(OSError, match="No space left"), writer:
        pass
    assert _open_hdf5_files() == before  # the file handle is closed, not left for the interpreter exit
    assert list(tmp_path.iterdir()) == []  # no temporary, and no half-written artifact in place


def test_failed_append_leaves_the_previous_version(tmp_path):
    url = str(tmp_path / "g.hd5")
    with ArraysWriter(url, {"a": ((2,), np.float64)}, n_rows=2) as w:
        w.append({"a": np.ones((2, 2))})
    with pytest.raises(ValueError, match="block lacks datasets"):
        with ArraysWriter(url, {"a": ((2,), np.float64)}, n_rows=2) as w:
            w.append({"zz": np.ones((2, 2))})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.hd5"]
    with h5py.File(url) as h5:
        assert h5["a"].shape == (2, 2)


def test_rows_are_written_in_whole_chunks_no_dead_space(tmp_path):
    """Blocks that do not align with the chunks used to leave each part-written chunk's
    first compressed copy as dead space; the writer now holds rows back until a chunk
    is full, so the file is its datasets plus a little metadata, and a reused caller
    buffer cannot change what was appended."""
    import os

    import h5py

    from beastflow.io.hdf5_arrays import ArraysWriter

    rng = np.random.default_rng(0)
    # blocks larger than a chunk (3 MB, past HDF5's 1 MB chunk cache), not aligned with it
    data = rng.random((263_517, 6))
    url = str(tmp_path / "a.h5")
    buf = np.empty((100_000, 6))
    with ArraysWriter(url, {"x": ((6,), np.float64)}, chunk_rows=65_536) as w:
        for lo in range(0, len(data), 100_000):
            part = data[lo : lo + 100_000]
            buf[: len(part)] = part
            w.append({"x": buf[: len(part)]})
            buf[:] = -1.0  # the writer must have kept its own copy
    with h5py.File(url) as h5:
        np.testing.assert_array_equal(h5["x"][...], data)
        stored = h5["x"].id.get_storage_size()
    assert os.path.getsize(url) - stored < 64 * 1024


@pytest.mark.parametrize("raw_low_bytes", [0, 6])
def test_encoded_chunks_read_back_exactly(tmp_path, raw_low_bytes):
    """Chunks shuffled and deflated by encode_chunk, stored with write_direct_chunk, read
    back by HDF5's own filter pipeline bit for bit (a short, padded last chunk included)."""
    rng = np.random.default_rng(0)
    n, rows = 2500, 1000
    data = {
        "flux": rng.random((n, 3)) * 1e-17,
        "col": np.repeat(rng.random(5), n // 5),
        "idx": rng.integers(-(2**40), 2**40, n),
    }
    schema = {"flux": ((3,), np.float64), "col": ((), np.float64), "idx": ((), np.int64)}
    url = str(tmp_path / "a.h5")
    with ArraysWriter(url, schema, n_rows=n, chunk_rows=rows) as w:
        for lo in range(0, n, rows):
            hi = min(n, lo + rows)
            enc = {}
            for k, v in data.items():
                full = np.zeros((rows, *v.shape[1:]), dtype=v.dtype)
                full[: hi - lo] = v[lo:hi]
                enc[k] = encode_chunk(full, raw_low_bytes)
            w.append_encoded(hi - lo, enc)
    with h5py.File(url) as f:
        for k, v in data.items():
            assert f[k].compression == "gzip" and f[k].shuffle
            np.testing.assert_array_equal(f[k][()], v, err_msg=k)


def test_encoded_chunk_must_be_a_whole_chunk(tmp_path):
    with ArraysWriter(str(tmp_path / "a.h5"), {"x": ((), np.float64)}, n_rows=300, chunk_rows=100) as w:
        with pytest.raises(ValueError, match="not one chunk"):
            w.append_encoded(50, {"x": encode_chunk(np.zeros(100))})
        w.append_encoded(100, {"x": encode_chunk(np.zeros(100))})
        w.append_encoded(100, {"x": encode_chunk(np.ones(100))})
        w.append_encoded(100, {"x": encode_chunk(np.ones(100))})


@pytest.fixture
def codec_threads_2():
    """The codec threads follow the numba thread count: 2 for the test (if numba has 2)."""
    import numba

    before = numba.get_num_threads()
    numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
    yield numba.get_num_threads()
    numba.set_num_threads(before)


@pytest.mark.parametrize("threads", [1, 2])
def test_read_rows_gives_what_h5py_reads(tmp_path, threads, codec_threads_2):
    """read_rows decodes shuffle+deflate chunks itself (on the codec threads): every
    slice of every kind of dataset reads back as h5py reads it, edge chunks and
    datasets it leaves to h5py (no shuffle, a chunk never written, contiguous) included."""
    import numba

    numba.set_num_threads(min(threads, codec_threads_2))
    rng = np.random.default_rng(3)
    url = str(tmp_path / "a.hd5")
    data = {
        "f8": rng.normal(size=(1000, 3)),
        "f4": rng.normal(size=(1000, 2)).astype(np.float32),
        "i8": rng.integers(-(2**40), 2**40, 1000),
        "col": rng.normal(size=1000),
    }
    with h5py.File(url, "w") as h5:
        for k, v in data.items():
            h5.create_dataset(k, data=v, chunks=(96, *v.shape[1:]), compression="gzip", shuffle=True)
        h5.create_dataset("plain_gzip", data=data["col"], chunks=(96,), compression="gzip")
        h5.create_dataset("contiguous", data=data["col"])
        part = h5.create_dataset(
            "unwritten", shape=(1000,), dtype=np.float64, chunks=(96,), compression="gzip", shuffle=True
        )
        part[:96] = data["col"][:96]  # the other chunks are never allocated: fill value 0
    names = [*data, "plain_gzip", "contiguous", "unwritten"]
    with h5py.File(url, "r") as h5:
        for sl in (slice(None), slice(0, 96), slice(95, 97), slice(100, 1000), slice(999, 2000), slice(5, 5)):
            got = read_rows(h5, names, sl)
            assert list(got) == names
            for k in names:
                want = h5[k][sl]
                assert got[k].dtype == want.dtype and got[k].shape == want.shape, (k, sl)
                np.testing.assert_array_equal(got[k], want, err_msg=f"{k} {sl}")


def test_shuffle_deflate_chunks_read_back_exactly(tmp_path):
    """Chunks encoded by shuffle_deflate (any element size, a short edge chunk padded)
    and stored directly are read back by HDF5's own filters."""
    rng = np.random.default_rng(4)
    url = str(tmp_path / "b.hd5")
    data = {"i4": rng.integers(0, 99, 250).astype(np.int32), "f8": rng.normal(size=250)}
    with h5py.File(url, "w") as h5:
        for k, v in data.items():
            ds = h5.create_dataset(k, shape=v.shape, dtype=v.dtype, chunks=(100,), compression="gzip", shuffle=True)
            for lo in range(0, len(v), 100):
                ds.id.write_direct_chunk((lo,), shuffle_deflate(v[lo : lo + 100], 100))
    with h5py.File(url, "r") as h5:
        for k, v in data.items():
            np.testing.assert_array_equal(h5[k][...], v, err_msg=k)


def test_run_codec_keeps_the_order(codec_threads_2):
    out = run_codec([functools.partial(lambda i: i * i, i) for i in range(50)])
    assert out == [i * i for i in range(50)]
