"""The trim artifact (format "beastflow-trim-index", version 1): kept models, not copies.

A sub-file's trim is the sorted set of model rows of the (sub)grid that survive
its trim rule (noise/trim.py).  Storing that set instead of a trimmed copy of
the grid and noise model saves ~2x the grid per sub-file (a lossless trim keeps
about half of the models), and the fit reads the full grid and noise model
restricted to the set.  HDF5, stored as contiguous runs because flux-sorted
sub-files keep long runs of neighbouring models:

- ``/run_start``  int64 [N_runs]: first kept row of each run (row of the source grid)
- ``/run_length`` int64 [N_runs]: rows in the run
- attributes: ``format``, ``format_version``, ``n_models_in`` (rows of the source
  grid), ``n_kept``, ``n_covered``, ``source_grid`` / ``source_noise_model`` (URLs),
  ``source_grid_rows`` / ``source_noise_rows``, ``skipped_bands`` (compat quirk),
  ``provenance`` and ``meta`` (the trim rule's bound, flux range, catalog).

``KeptGrid`` and ``KeptNoise`` present the full grid / noise model restricted
to the set with the reader interface of a trimmed file (row i = i-th kept
model, ``fullgrid_idx`` = its source row), so the fit is the same code either
way and its numbers are identical to those on a materialised trimmed copy.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from beastflow.io.hdf5_arrays import ArraysWriter, decode_attr, iter_row_blocks, open_h5
from beastflow.io.noise_model import NoiseBlock, NoiseModel
from beastflow.io.sed_grid import SEDGrid, SEDGridBlock, column_dtype, log10_band

FORMAT = "beastflow-trim-index"
FORMAT_VERSION = 1

#: rows between two kept runs read through rather than seeking (one HDF5 chunk
#: is ~4 MB; re-reading a short gap is cheaper than a second request on S3)
READ_GAP_ROWS = 4096


def runs_of(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted unique row indices -> (run starts, run lengths) of their contiguous runs."""
    idx = np.asarray(idx, dtype=np.int64)
    if len(idx) == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    if np.any(np.diff(idx) <= 0):
        raise ValueError("kept model rows must be strictly increasing")
    cut = np.flatnonzero(np.diff(idx) != 1) + 1
    starts = idx[np.concatenate([[0], cut])]
    ends = idx[np.concatenate([cut - 1, [len(idx) - 1]])] + 1
    return starts, ends - starts


def rows_of(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Inverse of ``runs_of``."""
    if len(starts) == 0:
        return np.empty(0, np.int64)
    total = int(lengths.sum())
    # position within the run + the run's start, without a Python loop over runs
    run_of_row = np.repeat(np.arange(len(starts)), lengths)
    first = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    return starts[run_of_row] + (np.arange(total) - first[run_of_row])


def write_trim_index(
    url: str,
    kept: np.ndarray,
    *,
    n_models_in: int,
    n_covered: int,
    source_grid: str,
    source_noise: str,
    skipped_bands: Sequence[str] = (),
    provenance: Mapping[str, Any] | None = None,
    meta: Mapping[str, Any] | None = None,
) -> str:
    starts, lengths = runs_of(kept)
    if len(kept) and (kept[0] < 0 or kept[-1] >= n_models_in):
        raise ValueError(f"{url}: kept rows outside 0..{n_models_in - 1}")
    attrs = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "n_models_in": int(n_models_in),
        "n_kept": len(kept),
        "n_covered": int(n_covered),
        "source_grid": source_grid,
        "source_noise_model": source_noise,
        "skipped_bands": list(skipped_bands),
        "provenance": dict(provenance or {}),
        "meta": dict(meta or {}),
    }
    schema = {"run_start": ((), np.int64), "run_length": ((), np.int64)}
    with ArraysWriter(url, schema, attrs=attrs, n_rows=len(starts)) as w:
        w.append({"run_start": starts, "run_length": lengths})
    return url


@dataclass
class TrimIndex:
    url: str
    kept: np.ndarray
    n_models_in: int
    n_covered: int
    source_grid: str
    source_noise: str
    skipped_bands: list[str]
    provenance: dict[str, Any]
    meta: dict[str, Any]

    @property
    def n_kept(self) -> int:
        return len(self.kept)

    @property
    def n_runs(self) -> int:
        return int(np.count_nonzero(np.diff(self.kept) != 1)) + 1 if len(self.kept) else 0


def read_trim_index(url: str) -> TrimIndex:
    with open_h5(url) as h5:
        fmt = decode_attr(h5.attrs.get("format", ""))
        if fmt != FORMAT:
            raise ValueError(f"{url}: not a beastflow trim index (format attribute {fmt!r}, expected {FORMAT!r})")
        starts = np.asarray(h5["run_start"][...], dtype=np.int64)
        lengths = np.asarray(h5["run_length"][...], dtype=np.int64)
        a = {k: decode_attr(v) for k, v in h5.attrs.items()}
    kept = rows_of(starts, lengths)
    if len(kept) != int(a["n_kept"]) or (len(kept) and (np.any(np.diff(kept) <= 0) or kept[-1] >= a["n_models_in"])):
        raise ValueError(
            f"{url}: corrupt trim index (runs do not give {a['n_kept']} increasing rows below {a['n_models_in']})"
        )
    return TrimIndex(
        url,
        kept,
        int(a["n_models_in"]),
        int(a["n_covered"]),
        a["source_grid"],
        a["source_noise_model"],
        list(a.get("skipped_bands") or []),
        a.get("provenance") or {},
        a.get("meta") or {},
    )


def _spans(rows: np.ndarray, max_rows: int, gap: int = READ_GAP_ROWS) -> Iterator[tuple[int, int, np.ndarray]]:
    """(lo, hi, rows - lo): source slices of at most ``max_rows`` rows covering sorted ``rows``;
    a gap wider than ``gap`` starts a new slice (contiguous runs, few requests)."""
    n, i = len(rows), 0
    while i < n:
        lo = int(rows[i])
        j = int(np.searchsorted(rows, lo + max_rows, side="left"))
        wide = np.flatnonzero(np.diff(rows[i:j]) > gap)
        if len(wide):
            j = i + int(wide[0]) + 1
        yield lo, int(rows[j - 1]) + 1, rows[i:j] - lo
        i = j


def _gather(h5, names: Sequence[str], rows: np.ndarray, max_rows: int) -> dict[str, np.ndarray]:
    parts: dict[str, list[np.ndarray]] = {k: [] for k in names}
    for lo, hi, sel in _spans(rows, max_rows):
        for k in names:
            parts[k].append(np.asarray(h5[k][lo:hi])[sel])
    out = {}
    for k in names:
        ds = h5[k]
        out[k] = np.concatenate(parts[k]) if parts[k] else np.empty((0, *ds.shape[1:]), ds.dtype)
    return out


def _view_rows(kept: np.ndarray, rows: slice | np.ndarray | None) -> tuple[np.ndarray, int]:
    if rows is None:
        return kept, 0
    if isinstance(rows, slice):
        return kept[rows], rows.indices(len(kept))[0]
    return kept[np.asarray(rows)], -1


class KeptGrid:
    """The full SED grid restricted to a trim index, read like a trimmed grid."""

    def __init__(self, grid: SEDGrid, index: TrimIndex, read_rows: int = 262_144):
        if grid.n_models != index.n_models_in:
            raise ValueError(
                f"{index.url}: trim index is for a grid of {index.n_models_in} models, but "
                f"{grid.url} has {grid.n_models}; trim again"
            )
        self._grid, self.index = grid, index
        self.url = grid.url
        self.filters, self.lamb = grid.filters, grid.lamb
        self.stellar_library, self.provenance = grid.stellar_library, grid.provenance
        self.meta = {**grid.meta, "trim": index.meta}
        # a trimmed copy carries its source rows as a column; a subgrid's rows are subgrid rows
        self.columns = [c for c in grid.columns if c != "fullgrid_idx"] + ["fullgrid_idx"]
        self.n_models = index.n_kept
        self.read_rows = read_rows

    def __len__(self) -> int:
        return self.n_models

    @property
    def n_bands(self) -> int:
        return len(self.filters)

    def _block(self, h5, rows: np.ndarray, start: int, columns: Sequence[str] | None, seds: bool) -> SEDGridBlock:
        cols = self.columns if columns is None else list(columns)
        unknown = [c for c in cols if c not in self.columns]
        if unknown:
            raise KeyError(f"{self.url}: no grid column {unknown}; columns are {self.columns}")
        derived = self._grid.derived
        need_seds = seds or any(c in derived for c in cols)
        stored = [f"grid/{c}" for c in cols if c != "fullgrid_idx" and c not in derived]
        got = _gather(h5, (["seds"] if need_seds else []) + stored, rows, self.read_rows)
        out_cols = {}
        for c in cols:
            if c == "fullgrid_idx":
                out_cols[c] = rows.astype(column_dtype(c))
            elif c in derived:
                out_cols[c] = log10_band(got["seds"], derived[c])
            else:
                out_cols[c] = got[f"grid/{c}"]
        return SEDGridBlock(start=start, seds=got["seds"] if seds else np.empty((0, self.n_bands)), columns=out_cols)

    def read(
        self, rows: slice | np.ndarray | None = None, columns: Sequence[str] | None = None, seds: bool = True
    ) -> SEDGridBlock:
        src, start = _view_rows(self.index.kept, rows)
        with open_h5(self._grid.url) as h5:
            return self._block(h5, src, start, columns, seds)

    def column(self, name: str) -> np.ndarray:
        return self.read(columns=[name], seds=False).columns[name]

    def iter_chunks(
        self, chunk_models: int = 262_144, columns: Sequence[str] | None = None, seds: bool = True
    ) -> Iterator[SEDGridBlock]:
        """Blocks of ``chunk_models`` KEPT models (the blocks a trimmed copy would give)."""
        with open_h5(self._grid.url) as h5:
            for sl in iter_row_blocks(self.n_models, chunk_models):
                yield self._block(h5, self.index.kept[sl], sl.start, columns, seds)


class KeptNoise:
    """The full noise model restricted to a trim index, row-aligned with ``KeptGrid``."""

    def __init__(self, noise: NoiseModel, index: TrimIndex, read_rows: int = 262_144):
        if noise.n_models != index.n_models_in:
            raise ValueError(
                f"{index.url}: trim index is for a noise model of {index.n_models_in} rows, but "
                f"{noise.url} has {noise.n_models}; trim again"
            )
        self._noise, self.index = noise, index
        self.url = noise.url
        self.filters, self.names = noise.filters, noise.names
        self.provenance, self.sed_grid = noise.provenance, noise.sed_grid
        self.meta = {**noise.meta, "trim": index.meta}
        self.n_models = index.n_kept
        self.read_rows = read_rows

    def __len__(self) -> int:
        return self.n_models

    def read(self, rows: slice | np.ndarray | None = None, names: Sequence[str] | None = None) -> NoiseBlock:
        src, start = _view_rows(self.index.kept, rows)
        with open_h5(self._noise.url) as h5:
            return NoiseBlock(
                start=start, arrays=self._physical(_gather(h5, list(names or self.names), src, self.read_rows))
            )

    def iter_chunks(self, chunk_models: int = 262_144, names: Sequence[str] | None = None) -> Iterator[NoiseBlock]:
        names = list(names or self.names)
        with open_h5(self._noise.url) as h5:
            for sl in iter_row_blocks(self.n_models, chunk_models):
                yield NoiseBlock(
                    start=sl.start, arrays=self._physical(_gather(h5, names, self.index.kept[sl], self.read_rows))
                )

    def _physical(self, stored: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {k: self._noise.physical(k, v) for k, v in stored.items()}


def open_kept(grid_url: str, noise_url: str, index_url: str, read_rows: int = 262_144) -> tuple[KeptGrid, KeptNoise]:
    """The (sub)grid and noise model restricted to the kept models of ``index_url``."""
    index = read_trim_index(index_url)
    return KeptGrid(SEDGrid(grid_url), index, read_rows), KeptNoise(NoiseModel(noise_url), index, read_rows)
