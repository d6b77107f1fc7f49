"""Chunked row-major HDF5 arrays: the container of SED grids and noise models.

Every dataset has the model index as its first axis, and is chunked along it,
so a grid larger than memory is written and read one block of models at a time.
Files are written locally under a temporary name (HDF5 needs a seekable local
file) and moved/uploaded into place when complete.
"""

from __future__ import annotations

import contextlib
import json
import struct
import sys
import zlib
from collections.abc import Iterator, Mapping
from typing import Any, Self

import h5py
import numba
import numpy as np

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
