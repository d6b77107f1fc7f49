"""Chunked row-major HDF5 arrays: the container of SED grids and noise models.

Every dataset has the model index as its first axis, and is chunked along it,
so a grid larger than memory is written and read one block of models at a time.
Files are written locally under a temporary name (HDF5 needs a seekable local
file) and moved/uploaded into place when complete.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import json
import struct
import sys
import threading
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Self

import h5py
import numba
import numpy as np
from isal import isal_zlib

from beastflow import storage

DEFAULT_CHUNK_ROWS = 65_536
#: every row dataset is stored gzip level 1 + byte shuffle: grid columns repeat
#: (Av, Rv, logA... take few values) and noise arrays are smooth, so files shrink
#: 2-3x for ~1 s per 100 MB written; gzip is readable by any HDF5 build (lzf is not)
COMPRESSION = {"compression": "gzip", "compression_opts": 1, "shuffle": True}


@numba.njit(cache=True, nogil=True)
def _shuffle8(src, dst):  # pragma: no cover - compiled
    """HDF5's byte shuffle of 8-byte elements: byte k of element i goes to dst[k * n + i]."""
    n = src.size // 8
    for k in range(8):
        base = k * n
        for i in range(n):
            dst[base + i] = src[i * 8 + k]


@numba.njit(cache=True, nogil=True)
def _unshuffle_rows(src, dst, size, n, i0, i1):  # pragma: no cover - compiled
    """Undo HDF5's byte shuffle of ``n`` elements of ``size`` bytes, elements i0..i1-1 only:
    byte k of element i is src[k * n + i]; element i goes to dst[(i - i0) * size + k]."""
    for k in range(size):
        base = k * n
        for i in range(i0, i1):
            dst[(i - i0) * size + k] = src[base + i]


#: deflate level of the chunks compressed by ``deflate``: ISA-L's level 2 makes
#: fit outputs of the sizes zlib's level 1 makes (within 2 %), 4-5x faster
DEFLATE_LEVEL = 2


def deflate(data: Any) -> bytes:
    """A zlib stream of ``data`` (any buffer) that every HDF5 deflate filter reads (ISA-L's
    encoder: the format is zlib's, only the encoder is faster); releases the GIL."""
    return isal_zlib.compress(data, DEFLATE_LEVEL)


@numba.njit(cache=True, nogil=True)
def _shuffle(src, dst, size):  # pragma: no cover - compiled
    """HDF5's byte shuffle of elements of ``size`` bytes: byte k of element i goes to dst[k * n + i]."""
    n = src.size // size
    for k in range(size):
        base = k * n
        for i in range(n):
            dst[base + i] = src[i * size + k]


def shuffle_deflate(arr: np.ndarray, rows: int) -> bytes:
    """The bytes HDF5 stores for a chunk of ``rows`` rows of a shuffle + deflate dataset
    holding ``arr`` (rows past its end are 0, as HDF5 pads an edge chunk), for
    ``write_direct_chunk``; any element size; releases the GIL while it works."""
    a = np.ascontiguousarray(arr)
    if len(a) < rows:
        a = np.concatenate([a, np.zeros((rows - len(a), *a.shape[1:]), a.dtype)])
    src = a.reshape(-1).view(np.uint8)
    dst = np.empty_like(src)
    _shuffle(src, dst, a.dtype.itemsize)
    return deflate(dst)


#: chunk codec pools by thread count (threads are started once, not per file)
_POOLS: dict[int, concurrent.futures.ThreadPoolExecutor] = {}
_POOLS_LOCK = threading.Lock()


def codec_threads() -> int:
    """Threads for HDF5 chunk codecs: the numba thread count, the one thread setting of
    the stages (``likelihood.set_threads``), so the I/O of a fit or a build uses the
    cores its kernels use, and no more."""
    return max(1, int(numba.get_num_threads()))


def run_codec(tasks: Sequence[Callable[[], Any]], threads: int | None = None) -> list[Any]:
    """Results of ``tasks`` in order; on ``threads`` (default ``codec_threads()``)
    threads when there are several of both.  Codec work (zlib, numba nogil
    kernels) releases the GIL, so it runs in parallel with the caller."""
    threads = codec_threads() if threads is None else max(1, threads)
    if threads == 1 or len(tasks) < 2:
        return [t() for t in tasks]
    with _POOLS_LOCK:
        pool = _POOLS.get(threads)
        if pool is None:
            pool = _POOLS[threads] = concurrent.futures.ThreadPoolExecutor(threads, "beastflow-codec")
    futures = [pool.submit(t) for t in tasks]
    return [f.result() for f in futures]


def _shuffle_deflate(ds: h5py.Dataset) -> bool:
    """Whether ``ds`` is stored as COMPRESSION writes it (byte shuffle then deflate,
    chunked along the first axis only), the one pipeline ``read_rows`` decodes itself."""
    if ds.chunks is None or tuple(ds.chunks[1:]) != tuple(ds.shape[1:]) or ds.dtype.itemsize not in (4, 8):
        return False
    dcpl = ds.id.get_create_plist()
    codes = [dcpl.get_filter(i)[0] for i in range(dcpl.get_nfilters())]
    return codes == [h5py.h5z.FILTER_SHUFFLE, h5py.h5z.FILTER_DEFLATE]


class _RawChunks(Exception):
    """A chunk that cannot be decoded here (not allocated, a filter skipped): h5py reads it."""


def read_rows(h5: h5py.File, names: Sequence[str], rows: slice) -> dict[str, np.ndarray]:
    """``{name: h5[name][rows]}`` for datasets sharing the first axis, the same arrays
    h5py gives, with the chunks of shuffle+deflate datasets decoded here: the
    compressed bytes are read one chunk at a time (HDF5 serialises its calls) and
    inflated and unshuffled on ``codec_threads()`` threads (zlib and the numba
    kernel release the GIL), which on one thread also skips HDF5's slower
    shuffle filter and a copy.  Any other dataset or selection is read by h5py."""
    out: dict[str, np.ndarray] = {}
    tasks: list[Callable[[], None]] = []
    for name in names:
        ds = h5[name]
        lo, hi, step = rows.indices(ds.shape[0])
        # a block much smaller than a chunk goes through h5py: its chunk cache keeps the
        # inflated chunk for the next block, where inflating here would hold a whole
        # chunk per call (the readers' memory is bounded by their block, not the chunk)
        small = ds.chunks is not None and (hi - lo) * 2 < ds.chunks[0]
        if step != 1 or hi <= lo or small or not _shuffle_deflate(ds):
            out[name] = np.asarray(ds[rows])
            continue
        try:
            arr, parts = _chunk_tasks(ds, lo, hi)
        except _RawChunks:
            out[name] = np.asarray(ds[rows])
            continue
        out[name] = arr
        tasks += parts
    run_codec(tasks)
    return out


def _chunk_tasks(ds: h5py.Dataset, lo: int, hi: int) -> tuple[np.ndarray, list[Callable[[], None]]]:
    """The array of rows lo..hi-1 of ``ds`` (empty) and one task per chunk filling it."""
    assert ds.chunks is not None
    rows = ds.chunks[0]
    size = ds.dtype.itemsize
    per_row = int(np.prod(ds.shape[1:], dtype=np.int64))
    arr = np.empty((hi - lo, *ds.shape[1:]), ds.dtype)
    flat = arr.reshape(-1).view(np.uint8)
    tasks: list[Callable[[], None]] = []
    for c0 in range(lo - lo % rows, hi, rows):
        try:
            mask, data = ds.id.read_direct_chunk((c0,) + (0,) * (ds.ndim - 1))
        except (KeyError, OSError, RuntimeError, ValueError):
            raise _RawChunks from None
        if mask:
            raise _RawChunks
        a, b = max(lo, c0), min(hi, c0 + rows)
        # elements of the chunk (whole rows), the first wanted one, the end
        n, i0, i1 = rows * per_row, (a - c0) * per_row, (b - c0) * per_row
        dst = flat[(a - lo) * per_row * size : (b - lo) * per_row * size]
        tasks.append(functools.partial(_decode_into, data, dst, size, n, i0, i1))
    return arr, tasks


def _decode_into(data: bytes, dst: np.ndarray, size: int, n: int, i0: int, i1: int) -> None:
    # ISA-L's inflate (2x zlib's on grid columns); the exact size: one buffer, no growing and joining
    raw = isal_zlib.decompress(data, bufsize=n * size)
    if len(raw) != n * size:
        raise ValueError(f"a chunk inflates to {len(raw)} bytes, expected {n * size}")
    _unshuffle_rows(np.frombuffer(raw, np.uint8), dst, size, n, i0, i1)


def _stored_blocks(data: memoryview) -> list[bytes]:
    """``data`` as non-final deflate stored blocks (RFC 1951 §3.2.4), each starting byte-aligned."""
    out = []
    for i in range(0, len(data), 65_535):
        part = data[i : i + 65_535]
        n = len(part)
        out.append(bytes((0, n & 0xFF, n >> 8, ~n & 0xFF, (~n >> 8) & 0xFF)))
        out.append(bytes(part))
    return out


def encode_chunk(arr: np.ndarray, raw_low_bytes: int = 0) -> bytes:
    """The bytes HDF5 stores for one full chunk of a float64/int64 dataset under COMPRESSION.

    The chunk's 8-byte elements are shuffled, then deflated into a zlib stream,
    as HDF5's own filter pipeline does, so ``Dataset.id.write_direct_chunk``
    can store it and every HDF5 reader decodes it.  Done here rather than by
    HDF5 because zlib releases the GIL: chunks are encoded on several threads
    while HDF5 itself serialises every call.

    ``raw_low_bytes`` > 0 keeps the first that many byte planes (the low
    mantissa bytes of float64 fluxes, near-random: deflate gains ~1.3x on them
    at ~50 MB/s) as stored deflate blocks and deflates only the rest (sign,
    exponent, top of the mantissa).  The stream stays a single valid zlib
    stream; only its size changes.
    """
    a = np.ascontiguousarray(arr)
    if a.dtype.itemsize != 8:
        raise ValueError(f"encode_chunk handles 8-byte elements, got {a.dtype}")
    src = a.reshape(-1).view(np.uint8)
    shuffled = np.empty_like(src)
    _shuffle8(src, shuffled)
    view = memoryview(shuffled.data)
    if raw_low_bytes <= 0:
        return zlib.compress(view, 1)
    cut = (src.size // 8) * min(8, raw_low_bytes)
    parts = [b"\x78\x01"] + _stored_blocks(view[:cut])
    # a raw deflate stream (no header) continues the zlib stream: it starts on the
    # byte boundary the stored blocks end on and carries the final block
    z = zlib.compressobj(1, zlib.DEFLATED, -15)
    parts += [z.compress(view[cut:]), z.flush(), struct.pack(">I", zlib.adler32(view))]
    return b"".join(parts)


def _chunk_shape(n_rows: int | None, trailing: tuple[int, ...], chunk_rows: int) -> tuple[int, ...]:
    # Aim for ~4 MB chunks: big enough for throughput, small enough to stream.
    per_row = max(1, int(np.prod(trailing))) * 8
    rows = max(1, min(chunk_rows, (4 << 20) // per_row))
    if n_rows:
        rows = min(rows, n_rows)
    return (rows, *trailing)


class ArraysWriter:
    """Append blocks of rows to a set of named datasets sharing the first axis.

    Use as a context manager; the file appears at ``url`` only on a clean exit.
    """

    def __init__(
        self,
        url: str,
        schema: Mapping[str, tuple[tuple[int, ...], Any]],
        attrs: Mapping[str, Any] | None = None,
        n_rows: int | None = None,
        chunk_rows: int = DEFAULT_CHUNK_ROWS,
        static: Mapping[str, np.ndarray] | None = None,
    ):
        self.url = url
        self.schema = dict(schema)
        self.attrs = dict(attrs or {})
        self.n_rows = n_rows
        self.chunk_rows = chunk_rows
        self.static = dict(static or {})
        self.rows_written = 0
        self._pending: dict[str, list[np.ndarray]] = {}
        self._stored: dict[str, int] = {}
        self._direct: dict[str, tuple[Any, int, int]] = {}
        self._stack = contextlib.ExitStack()
        self._h5: h5py.File | None = None

    def __enter__(self) -> Self:
        # a failure while creating the datasets (full disk, bad schema) must close the
        # HDF5 file and drop the temporary: __exit__ is not called when __enter__ raises
        try:
            return self._open()
        except BaseException:
            self._h5 = None
            # with the error: the temporary is removed, never moved into place
            self._stack.__exit__(*sys.exc_info())
            raise

    def _open(self) -> Self:
        local = self._stack.enter_context(storage.local_copy_for_write(self.url, suffix=".h5"))
        self._h5 = self._stack.enter_context(h5py.File(local, "w"))
        for name, (trailing, dtype) in self.schema.items():
            n0 = self.n_rows if self.n_rows is not None else 0
            self._h5.create_dataset(
                name,
                shape=(n0, *trailing),
                maxshape=(None, *trailing),
                dtype=dtype,
                chunks=_chunk_shape(self.n_rows, trailing, self.chunk_rows),
                **COMPRESSION,
            )
        for name, arr in self.static.items():
            self._h5.create_dataset(name, data=np.asarray(arr))
        for k, v in self.attrs.items():
            self._h5.attrs[k] = _attr_value(v)
        return self

    def append(self, block: Mapping[str, np.ndarray]) -> None:
        assert self._h5 is not None, "use ArraysWriter as a context manager"
        missing = set(self.schema) - set(block)
        if missing:
            raise ValueError(f"{self.url}: block lacks datasets {sorted(missing)}")
        n = None
        for name, arr in block.items():
            if name not in self.schema:
                raise ValueError(f"{self.url}: unknown dataset {name!r}")
            if n is None:
                n = len(arr)
            elif len(arr) != n:
                raise ValueError(f"{self.url}: block datasets have different lengths")
        assert n is not None
        # rows go out in whole chunks: a chunk written part-full and then again full
        # leaves its first compressed copy as dead space in the file (HDF5 does not
        # reuse it; 2 MB of a 16 MB grid); the tail is written on close
        for name, arr in block.items():
            parts = self._pending.setdefault(name, [])
            parts.append(np.asarray(arr))
            pending = sum(len(a) for a in parts)
            rows = self._h5[name].chunks[0]
            if pending >= rows:
                self._write(name, pending - pending % rows)
            else:
                # held back: a copy, the caller may reuse its buffer before the chunk is full
                parts[-1] = np.array(parts[-1], copy=True)
        self.rows_written += n

    def _write(self, name: str, n: int) -> None:
        assert self._h5 is not None
        parts = self._pending.pop(name, [])
        if not parts:
            return
        data = parts[0] if len(parts) == 1 else np.concatenate(parts)
        ds = self._h5[name]
        lo = self._stored.get(name, 0)
        if ds.shape[0] < lo + n:
            ds.resize(lo + n, axis=0)
        ds[lo : lo + n] = data[:n]
        self._stored[name] = lo + n
        if n < len(data):
            self._pending[name] = [data[n:].copy()]  # may be a view of the caller's buffer

    def chunk_rows_of(self, name: str) -> int:
        assert self._h5 is not None
        chunks = self._h5[name].chunks
        assert chunks is not None
        return int(chunks[0])

    def append_encoded(self, n: int, chunks: Mapping[str, bytes]) -> None:
        """Append ``n`` rows given as one pre-encoded chunk per dataset (``encode_chunk``).

        The rows must start a chunk of every dataset and fill it (the last chunk
        of a fixed-size dataset may be short: its encoded chunk is padded).
        """
        assert self._h5 is not None, "use ArraysWriter as a context manager"
        if self._pending:
            raise ValueError(f"{self.url}: append_encoded after append with rows still pending")
        if set(chunks) != set(self.schema):
            raise ValueError(f"{self.url}: encoded block must hold exactly the datasets {sorted(self.schema)}")
        lo = self.rows_written
        for name, data in chunks.items():
            dsid, rows, ndim = self._direct_target(name)
            size = dsid.shape[0]
            if lo % rows or (n != rows and lo + n != size):
                raise ValueError(f"{self.url}: rows [{lo}, {lo + n}) are not one chunk of {name} ({rows} rows)")
            if size < lo + n:
                self._h5[name].resize(lo + n, axis=0)
            dsid.write_direct_chunk((lo,) + (0,) * (ndim - 1), data)
            self._stored[name] = lo + n
        self.rows_written = lo + n

    def _direct_target(self, name: str) -> tuple[Any, int, int]:
        """(low-level dataset id, rows per chunk, rank) of ``name``, looked up once per file.

        h5py's high-level lookups (``File[name]``, ``.chunks``, ``.shape``) cost tens of
        microseconds each, under h5py's lock and the GIL: a grid build stores its 26
        datasets' chunks from one thread while others encode, and those lookups were
        4/5 of that thread's time (140 of 175 ms for 1.5e6 models).
        """
        assert self._h5 is not None
        t = self._direct.get(name)
        if t is None:
            ds = self._h5[name]
            t = self._direct[name] = (ds.id, self.chunk_rows_of(name), ds.ndim)
        return t

    def set_attr(self, key: str, value: Any) -> None:
        assert self._h5 is not None
        self._h5.attrs[key] = _attr_value(value)

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None and self.n_rows is not None and self.rows_written != self.n_rows:
                raise ValueError(f"{self.url}: wrote {self.rows_written} rows, expected {self.n_rows}")
            if exc_type is None and self._h5 is not None:
                for name in list(self._pending):
                    self._write(name, sum(len(a) for a in self._pending[name]))
                self._h5.attrs["n_rows"] = self.rows_written
        except BaseException:
            self._stack.__exit__(*__import__("sys").exc_info())
            raise
        self._stack.__exit__(exc_type, exc, tb)


def _attr_value(v: Any) -> Any:
    # files of this run are recorded relative to its output root (relocatable runs)
    v = storage.portable(v)
    if isinstance(v, (dict, list, tuple)):
        return json.dumps(v, default=str)
    if v is None:
        return "null"
    return v


def decode_attr(v: Any) -> Any:
    if isinstance(v, bytes):
        v = v.decode()
    if isinstance(v, str) and (v[:1] in ("[", "{") or v == "null"):
        try:
            return json.loads(v)
        except (json.JSONDecodeError, TypeError):
            return v
    if isinstance(v, np.generic):
        return v.item()
    return v


@contextlib.contextmanager
def open_h5(url: str) -> Iterator[h5py.File]:
    """Open an HDF5 artifact for reading from any fsspec URL."""
    if storage.protocol(url) == "file":
        path = url.split("://", 1)[1] if "://" in url else url
        try:
            with h5py.File(path, "r") as h5:
                yield h5
        except FileNotFoundError:
            raise FileNotFoundError(f"{url}: no such file") from None
        except OSError as exc:
            if "://" not in url and not __import__("os").path.exists(path):
                raise FileNotFoundError(f"{url}: no such file") from None
            raise OSError(f"{url}: not a readable HDF5 file ({exc})") from None
        return
    with storage.open_url(url, "rb") as fh, h5py.File(fh, "r") as h5:
        yield h5


def iter_row_blocks(n_rows: int, block: int) -> Iterator[slice]:
    for lo in range(0, n_rows, block):
        yield slice(lo, min(n_rows, lo + block))
