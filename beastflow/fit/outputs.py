"""Fit artifacts: stats (Parquet), 1-D / 2-D PDFs and lnP samples (HDF5).

Layouts are documented in docs/formats.md ("Fit outputs").  Every writer goes
through ``beastflow.storage`` (temporary name, moved into place when complete)
and stores the provenance record inside the artifact.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import sys
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, cast

import h5py
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from beastflow import storage
from beastflow.io.hdf5_arrays import decode_attr, deflate, open_h5, run_codec, shuffle_deflate

PDF1D_FORMAT = "beastflow-pdf1d"
PDF2D_FORMAT = "beastflow-pdf2d"
LNP_FORMAT = "beastflow-lnp"
STATS_FORMAT = "beastflow-stats"
FORMAT_VERSION = 1
_META_KEY = b"beastflow"

#: PDF datasets are chunked as (stars, bins...) tiles; only chunks holding a
#: non-zero value are stored (PDFs are mostly zeros), the others read back as 0.
PDF1D_CHUNK = (1024, 8)
PDF2D_CHUNK = (64, 8, 8)
GZIP_LEVEL = 1


# --------------------------------------------------------------------- stats
def write_stats(url: str, df: pl.DataFrame, provenance: Mapping[str, Any], meta: Mapping[str, Any]) -> str:
    """Write the stats table; every known column gets its unit and description as
    Parquet field metadata (``beastflow.fit.columns``)."""
    from beastflow.fit.columns import column_metadata

    table = df.to_arrow()
    filters = meta.get("filters") or [c for c in df.columns if f"symlog{c}_wd_bias_p50" in df.columns]
    fmeta = column_metadata(table.column_names, filters)
    if fmeta:
        table = table.cast(
            pa.schema(
                [f.with_metadata(fmeta[f.name]) if f.name in fmeta else f for f in table.schema],
                metadata=table.schema.metadata,
            )
        )
    info = {
        "format": STATS_FORMAT,
        "format_version": FORMAT_VERSION,
        "provenance": storage.portable(dict(provenance)),
        "meta": storage.portable(dict(meta)),
    }
    table = table.replace_schema_metadata(
        {**(table.schema.metadata or {}), _META_KEY: json.dumps(info, default=str).encode()}
    )
    buf = io.BytesIO()
    # no dictionary pages: ~180 mostly-unique float columns, where trying them costs more than it saves
    pq.write_table(table, buf, compression="zstd", use_dictionary=False)
    storage.write_bytes(url, buf.getvalue())
    return url


def read_stats(url: str) -> tuple[pl.DataFrame, dict[str, Any]]:
    """(table, {"format", "provenance", "meta"}) of a stats file."""
    with storage.open_url(url, "rb") as fh:
        table = pq.read_table(fh)
    raw = (table.schema.metadata or {}).get(_META_KEY)
    if raw is None:
        raise ValueError(f"{url}: not a beastflow stats file (no '{_META_KEY.decode()}' Parquet metadata)")
    info = json.loads(raw)
    if info.get("format") != STATS_FORMAT:
        raise ValueError(f"{url}: not a beastflow stats file (format {info.get('format')!r})")
    return cast(pl.DataFrame, pl.from_arrow(table)), info  # a Table (not an Array) always gives a DataFrame


def stats_units(url: str) -> dict[str, str]:
    """{column: astropy unit string} of a stats file, from its Parquet field metadata
    (only the schema is read)."""
    from beastflow.fit.columns import units_of

    with storage.open_url(url, "rb") as fh:
        schema = pq.read_schema(fh)
    return units_of({f.name: f.metadata for f in schema})


# ------------------------------------------------------------------- helpers
@contextlib.contextmanager
def h5_writer(url: str) -> Iterator[h5py.File]:
    with storage.local_copy_for_write(url, suffix=".h5") as local, h5py.File(local, "w") as h5:
        yield h5


def _attrs(h5: h5py.File, **kv: Any) -> None:
    kv = storage.portable(kv)  # files of this run: relative to its output root
    for k, v in kv.items():
        h5.attrs[k] = json.dumps(v, default=str) if isinstance(v, (dict, list, tuple)) else v


def _ids_dataset(h5: h5py.File, name: str, ids: np.ndarray) -> None:
    ids = np.asarray(ids)
    if ids.dtype.kind in "US O".replace(" ", ""):
        h5.create_dataset(name, data=np.asarray(ids, dtype=object), dtype=h5py.string_dtype())
    else:
        h5.create_dataset(name, data=ids.astype(np.int64))


def _read_ids(ds: h5py.Dataset) -> np.ndarray:
    if h5py.check_string_dtype(ds.dtype) is not None:
        return np.asarray(ds.asstr()[...], dtype=object)
    return np.asarray(ds[...])


def _new_dataset(
    parent: h5py.Group,
    name: str,
    data: np.ndarray | None = None,
    shape: tuple | None = None,
    chunks: tuple | None = None,
) -> h5py.h5d.DatasetID:
    """A float64/int64 dataset through h5py's low-level API (what ``create_dataset``
    makes, without its per-call overhead, which adds up over ~100 small datasets
    per file): no time stamps; ``chunks``: gzip level GZIP_LEVEL, fill value 0."""
    if data is not None:
        data = np.ascontiguousarray(data)
        shape = data.shape
    if shape is None:
        raise ValueError(f"dataset {name!r}: pass its data or its shape")
    dtype = data.dtype if data is not None else np.dtype(np.float64)
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_obj_track_times(False)
    if chunks is not None:
        dcpl.set_chunk(tuple(chunks))
        dcpl.set_deflate(GZIP_LEVEL)
        dcpl.set_fill_value(np.zeros((), dtype))
    dsid = h5py.h5d.create(
        parent.id,
        name.encode(),
        h5py.h5t.py_create(dtype, logical=True),
        h5py.h5s.create_simple(tuple(shape)),
        dcpl=dcpl,
    )
    if data is not None and data.size:
        dsid.write(h5py.h5s.ALL, h5py.h5s.ALL, data)
    return dsid


class _SparseChunks:
    """Writes a float64 dataset [n, *cells] slab by slab (``chunk[0]`` rows, in row
    order) and stores only the chunks that hold a value != 0, gzip-compressed here
    and written directly.  Unwritten chunks are not allocated and read back as the
    fill value 0.0, so readers see the same dense array (docs/formats.md)."""

    def __init__(self, parent: h5py.Group, name: str, n: int, cells: Sequence[int], chunk: Sequence[int]):
        self.name, self.n, self.cells = name, int(n), tuple(int(c) for c in cells)
        self.rows = max(1, min(int(chunk[0]), self.n))
        self.tile = tuple(max(1, min(int(t), c)) for t, c in zip(chunk[1:], self.cells))
        if not self.n:
            self.ds = _new_dataset(parent, name, shape=(0, *self.cells))
            return
        # slabs of equal size (less zero padding in the last one)
        self.rows = -(-self.n // -(-self.n // self.rows))
        self.ds = _new_dataset(parent, name, shape=(self.n, *self.cells), chunks=(self.rows, *self.tile))
        self.ntiles = tuple(-(-c // t) for c, t in zip(self.cells, self.tile))
        self.buf = np.zeros((self.rows, *(m * t for m, t in zip(self.ntiles, self.tile))))
        self.occ = np.zeros(self.ntiles, dtype=bool)
        self.start = 0  # first row of the slab in the buffer
        self.fill = 0  # rows of it received

    def _check(self, lo: int) -> None:
        if lo != self.start + self.fill:
            raise ValueError(
                f"{self.name!r}: rows must be written in order (got row {lo}, expected {self.start + self.fill})"
            )

    def _cells(self) -> tuple[slice, ...]:
        return tuple(slice(0, c) for c in self.cells)

    def add_dense(self, lo: int, arr: np.ndarray) -> None:
        """Rows lo.. of the dataset, [k, *cells]."""
        self._check(lo)
        i = 0
        while i < len(arr):
            k = min(self.rows - self.fill, len(arr) - i)
            part = arr[i : i + k]
            self.buf[(slice(self.fill, self.fill + k), *self._cells())] = part
            cell_nz = (part != 0).any(axis=0)  # NaN counts as a value
            if cell_nz.any():
                pad = np.zeros(self.buf.shape[1:], dtype=bool)
                pad[self._cells()] = cell_nz
                shape = [x for m, t in zip(self.ntiles, self.tile) for x in (m, t)]
                self.occ |= pad.reshape(shape).any(axis=tuple(range(1, 2 * len(self.tile), 2)))
            self._advance(k)
            i += k

    def add_sparse(self, lo: int, vals: np.ndarray, pos: tuple[np.ndarray, ...]) -> None:
        """Rows lo.. given as values [k, m] at cells ``pos`` (one index array [m] per cell
        axis); every other cell of these rows is 0."""
        self._check(lo)
        i = 0
        while i < len(vals):
            k = min(self.rows - self.fill, len(vals) - i)
            part = vals[i : i + k]
            rows_at_cells: tuple[slice | np.ndarray, ...] = (slice(self.fill, self.fill + k), *pos)
            self.buf[rows_at_cells] = part
            cols = np.flatnonzero((part != 0).any(axis=0))
            if len(cols):
                self.occ[tuple(p[cols] // t for p, t in zip(pos, self.tile))] = True
            self._advance(k)
            i += k

    def _advance(self, k: int) -> None:
        self.fill += k
        if self.fill == self.rows or self.start + self.fill == self.n:
            self.flush()

    def flush(self) -> None:
        if not self.n or not self.fill:
            return
        occupied = np.argwhere(self.occ)
        # the buffer with one axis per tile index, then the rows and the cells of a tile:
        # the occupied tiles come out together as [tiles, rows, *tile], each one chunk's bytes
        nd = len(self.tile)
        split = self.buf.reshape(self.rows, *(x for m, t in zip(self.ntiles, self.tile) for x in (m, t)))
        by_tile = split.transpose(*range(1, 2 * nd, 2), 0, *range(2, 2 * nd + 1, 2))
        tiles = by_tile[tuple(occupied.T)]
        # compressed on the codec threads, stored in the same order as one by one
        for t, data in zip(occupied, run_codec([functools.partial(deflate, b) for b in tiles])):
            self.ds.write_direct_chunk((self.start, *(int(j) * w for j, w in zip(t, self.tile))), data)
        self.buf.fill(0.0)
        self.occ[...] = False
        self.start += self.fill
        self.fill = 0


def _check_format(url: str, h5: h5py.File, fmt: str) -> None:
    got = decode_attr(h5.attrs.get("format", ""))
    if got != fmt:
        raise ValueError(f"{url}: not a {fmt} file (format attribute {got!r})")


# --------------------------------------------------------------------- 1-D PDFs
def write_pdf1d(
    url: str,
    star_ids: np.ndarray,
    total_log_norm: np.ndarray,
    bins: Sequence[Any],
    pdfs: Mapping[str, np.ndarray],
    provenance: Mapping[str, Any],
    meta: Mapping[str, Any],
) -> str:
    with h5_writer(url) as h5:
        _attrs(
            h5,
            format=PDF1D_FORMAT,
            format_version=FORMAT_VERSION,
            provenance=dict(provenance),
            meta=dict(meta),
            quantities=[b.name for b in bins],
        )
        _ids_dataset(h5, "star_id", star_ids)
        h5.create_dataset("total_log_norm", data=np.asarray(total_log_norm, np.float64))
        for b in bins:
            g = h5.create_group(b.name)
            _SparseChunks(g, "pdf", len(star_ids), (b.nbins,), PDF1D_CHUNK).add_dense(
                0, np.asarray(pdfs[b.name], np.float64)
            )
            _new_dataset(g, "centres", np.asarray(b.centres, np.float64))
            _new_dataset(g, "edges", np.asarray(b.edges, np.float64))
            g.attrs["log"] = bool(b.log)
    return url


def read_pdf1d(url: str, quantities: Sequence[str] | None = None) -> dict[str, Any]:
    """{"star_id", "total_log_norm", "quantities", "meta", "provenance",
    "pdf": {q: [n, nbins]}, "centres": {q}, "edges": {q}, "log": {q}}"""
    return _read_pdf1d(url, quantities, None)


def _read_pdf1d(url: str, quantities: Sequence[str] | None, star_ids: Sequence[Any] | None) -> dict[str, Any]:
    """The 1-D PDF file's header, bins and PDFs: every star, or only the rows of ``star_ids``."""
    with open_h5(url) as h5:
        _check_format(url, h5, PDF1D_FORMAT)
        qs = decode_attr(h5.attrs["quantities"])
        want = qs if quantities is None else list(quantities)
        missing = [q for q in want if q not in qs]
        if missing:
            raise KeyError(f"{url}: no 1-D PDF for {missing}; quantities are {qs}")
        out: dict[str, Any] = {"quantities": want}
        if star_ids is None:
            out["star_id"] = _read_ids(h5["star_id"])
            out["total_log_norm"] = h5["total_log_norm"][...]
        else:
            rows = _star_rows(url, h5["star_id"], star_ids)
            out["star_id"] = np.asarray(list(star_ids), dtype=object)
            out["rows"] = rows
            out["total_log_norm"] = _take_rows(h5["total_log_norm"], rows)
        out.update(
            meta=decode_attr(h5.attrs.get("meta", "{}")),
            provenance=decode_attr(h5.attrs.get("provenance", "{}")),
            pdf={},
            centres={},
            edges={},
            log={},
        )
        for q in want:
            out["pdf"][q] = h5[q]["pdf"][...] if star_ids is None else _take_rows(h5[q]["pdf"], out["rows"])
            out["centres"][q] = h5[q]["centres"][...]
            out["edges"][q] = h5[q]["edges"][...]
            out["log"][q] = bool(h5[q].attrs["log"])
    return out


def _star_rows(url: str, ids_ds: h5py.Dataset, star_ids: Sequence[Any]) -> np.ndarray:
    """Rows of ``star_ids`` in a PDF file (its star_id dataset is read, nothing else)."""
    ids = _read_ids(ids_ds)
    where: dict[Any, int] = {}
    for i, s in enumerate(ids.tolist()):
        where.setdefault(s, i)
    rows = []
    for s in star_ids:
        key = s if ids.dtype.kind == "O" else int(s)
        if key not in where:
            raise KeyError(f"{url}: no star with star_id {s!r}")
        rows.append(where[key])
    return np.asarray(rows, dtype=np.int64)


def _take_rows(ds: h5py.Dataset, rows: np.ndarray) -> np.ndarray:
    """ds[rows] in the given order, reading only those rows (h5py wants sorted unique indices)."""
    uniq, inv = np.unique(rows, return_inverse=True)
    return np.asarray(ds[uniq.tolist()])[inv] if len(uniq) else np.zeros((0, *ds.shape[1:]))


def read_star_pdf1d(url: str, star_ids: Sequence[Any], quantities: Sequence[str] | None = None) -> dict[str, Any]:
    """The 1-D PDFs of a few stars (by ``star_id``), reading only their rows; same
    layout as ``read_pdf1d`` with the PDFs in the order of ``star_ids``."""
    return _read_pdf1d(url, quantities, star_ids)


def read_star_pdf2d(url: str, star_ids: Sequence[Any]) -> dict[str, Any]:
    """The 2-D PDFs of a few stars (by ``star_id``), reading only their rows; same
    layout as ``read_pdf2d``."""
    with open_h5(url) as h5:
        _check_format(url, h5, PDF2D_FORMAT)
        pairs = decode_attr(h5.attrs["pairs"])
        rows = _star_rows(url, h5["star_id"], star_ids)
        out: dict[str, Any] = {
            "star_id": np.asarray(list(star_ids), dtype=object),
            "rows": rows,
            "pairs": pairs,
            "meta": decode_attr(h5.attrs.get("meta", "{}")),
            "provenance": decode_attr(h5.attrs.get("provenance", "{}")),
            "pdf": {},
            "axes": {},
        }
        for p in pairs:
            g = h5[p]
            out["pdf"][p] = _take_rows(g["pdf"], rows)
            out["axes"][p] = {k: g[k][...] for k in ("centres_a", "centres_b", "edges_a", "edges_b")}
    return out


# --------------------------------------------------------------------- 2-D PDFs
class PDF2DWriter:
    """2-D PDFs written block of stars by block (they are the largest output)."""

    def __init__(
        self,
        url: str,
        n_stars: int,
        pairs: Sequence[tuple[Any, Any]],
        provenance: Mapping[str, Any],
        meta: Mapping[str, Any],
    ):
        self.url, self.n, self.pairs = url, n_stars, list(pairs)
        self.provenance, self.meta = dict(provenance), dict(meta)
        self._stack = contextlib.ExitStack()

    @staticmethod
    def pair_name(a: str, b: str) -> str:
        return f"{a}+{b}"

    def __enter__(self) -> PDF2DWriter:
        # __exit__ is not called when __enter__ raises (full disk): close the file here
        try:
            return self._open()
        except BaseException:
            # with the error: the temporary is removed, never moved into place
            self._stack.__exit__(*sys.exc_info())
            raise

    def _open(self) -> PDF2DWriter:
        self.h5 = self._stack.enter_context(h5_writer(self.url))
        _attrs(
            self.h5,
            format=PDF2D_FORMAT,
            format_version=FORMAT_VERSION,
            provenance=self.provenance,
            meta=self.meta,
            pairs=[self.pair_name(a.name, b.name) for a, b in self.pairs],
        )
        self._w = []
        for a, b in self.pairs:
            g = self.h5.create_group(self.pair_name(a.name, b.name))
            self._w.append(_SparseChunks(g, "pdf", self.n, (a.nbins, b.nbins), PDF2D_CHUNK))
            for k, v in (
                ("centres_a", a.centres),
                ("centres_b", b.centres),
                ("edges_a", a.edges),
                ("edges_b", b.edges),
            ):
                _new_dataset(g, k, np.asarray(v, np.float64))
        return self

    def write(self, lo: int, blocks: Sequence[np.ndarray]) -> None:
        """Stars lo.. (in order), one dense block [k, nbins_a, nbins_b] per pair."""
        for w, arr in zip(self._w, blocks):
            w.add_dense(lo, np.asarray(arr, np.float64))

    def write_compact(self, lo: int, values: np.ndarray, flat: np.ndarray) -> None:
        """Stars lo.. (in order) as values [k, m] at the sorted flat indices ``flat``
        [m] of the concatenated pairs (pair p's bins (i, j) at sum of the sizes of
        the pairs before p + i * nbins_b + j); every other bin is 0."""
        off = 0
        for (a, b), w in zip(self.pairs, self._w):
            i0, i1 = np.searchsorted(flat, [off, off + a.nbins * b.nbins])
            ia, ib = np.divmod(flat[i0:i1] - off, b.nbins)
            w.add_sparse(lo, values[:, i0:i1], (ia, ib))
            off += a.nbins * b.nbins

    def finish(self, star_ids: np.ndarray, total_log_norm: np.ndarray) -> None:
        for w in self._w:
            w.flush()
        _ids_dataset(self.h5, "star_id", star_ids)
        self.h5.create_dataset("total_log_norm", data=np.asarray(total_log_norm, np.float64))

    def __exit__(self, *exc: Any) -> None:
        self._stack.__exit__(*exc)


def read_pdf2d(url: str) -> dict[str, Any]:
    with open_h5(url) as h5:
        _check_format(url, h5, PDF2D_FORMAT)
        pairs = decode_attr(h5.attrs["pairs"])
        out: dict[str, Any] = {
            "star_id": _read_ids(h5["star_id"]),
            "total_log_norm": h5["total_log_norm"][...],
            "pairs": pairs,
            "meta": decode_attr(h5.attrs.get("meta", "{}")),
            "provenance": decode_attr(h5.attrs.get("provenance", "{}")),
            "pdf": {},
            "axes": {},
        }
        for p in pairs:
            g = h5[p]
            out["pdf"][p] = g["pdf"][...]
            out["axes"][p] = {k: g[k][...] for k in ("centres_a", "centres_b", "edges_a", "edges_b")}
    return out


# --------------------------------------------------------------------- lnP samples
LNP_FIELDS = {
    "idx": np.int64,
    "gid": np.int64,
    "lnp": np.float64,
    "chi2": np.float64,
    "key": np.float64,
    "subgrid": np.int32,
}


def write_lnp(
    url: str,
    star_ids: np.ndarray,
    offsets: np.ndarray,
    fields: Mapping[str, np.ndarray],
    n_candidates: np.ndarray,
    truncated_key: np.ndarray,
    lnp_max: np.ndarray,
    inputs: np.ndarray | None,
    filters: Sequence[str],
    waves: np.ndarray | None,
    provenance: Mapping[str, Any],
    meta: Mapping[str, Any],
) -> str:
    """Ragged per-star samples as flat arrays + ``offsets`` (star e owns rows
    offsets[e]:offsets[e+1]), keyed by the star's row and ``star_id``."""
    with h5_writer(url) as h5:
        _attrs(
            h5,
            format=LNP_FORMAT,
            format_version=FORMAT_VERSION,
            provenance=dict(provenance),
            meta=dict(meta),
            obs_filters=list(filters),
        )
        _ids_dataset(h5, "star_id", star_ids)
        h5.create_dataset("offsets", data=np.asarray(offsets, np.int64))
        h5.create_dataset("n_candidates", data=np.asarray(n_candidates, np.int64))
        h5.create_dataset("truncated_key", data=np.asarray(truncated_key, np.float64))
        h5.create_dataset("lnPmax", data=np.asarray(lnp_max, np.float64))
        # byte shuffle first: faster and smaller than gzip alone on these ids and doubles;
        # the chunks of all the fields are encoded together on the codec threads
        stored, tasks = [], []
        for k, dt in LNP_FIELDS.items():
            data = np.asarray(fields[k], dt)
            ds = h5.create_dataset(
                k, shape=data.shape, dtype=dt, chunks=True, compression="gzip", compression_opts=1, shuffle=True
            )
            rows = cast(tuple[int, ...], ds.chunks)[0]  # h5py's own choice, as when it wrote the data itself
            for lo in range(0, len(data), rows):
                stored.append((ds, lo))
                tasks.append(functools.partial(shuffle_deflate, data[lo : lo + rows], rows))
        for (ds, lo), enc in zip(stored, run_codec(tasks)):
            ds.id.write_direct_chunk((lo,), enc)
        if inputs is not None:
            h5.create_dataset("input", data=np.asarray(inputs, np.float64))
        if waves is not None:
            h5.create_dataset("grid_waves", data=np.asarray(waves, np.float64))
    return url


def read_lnp(url: str) -> dict[str, Any]:
    with open_h5(url) as h5:
        _check_format(url, h5, LNP_FORMAT)
        out = {k: h5[k][...] for k in ("offsets", "n_candidates", "truncated_key", "lnPmax", *LNP_FIELDS)}
        out["star_id"] = _read_ids(h5["star_id"])
        out["input"] = h5["input"][...] if "input" in h5 else None
        out["grid_waves"] = h5["grid_waves"][...] if "grid_waves" in h5 else None
        out["obs_filters"] = decode_attr(h5.attrs["obs_filters"])
        out["meta"] = decode_attr(h5.attrs.get("meta", "{}"))
        out["provenance"] = decode_attr(h5.attrs.get("provenance", "{}"))
    return out


def lnp_star(lnp: Mapping[str, Any], e: int) -> dict[str, np.ndarray]:
    """The sample of star row ``e``."""
    lo, hi = lnp["offsets"][e], lnp["offsets"][e + 1]
    return {k: lnp[k][lo:hi] for k in LNP_FIELDS}
