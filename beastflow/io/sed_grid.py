"""The SED grid artifact (format "beastflow-sed-grid", version 1).

Layout of the HDF5 file (see docs/formats.md):

- ``/seds``  float64 [N_models, N_bands]: extinguished band fluxes,
  erg s^-1 cm^-2 A^-1 at the model distance, band order = ``filters``.
- ``/lamb``  float64 [N_bands]: band mean wavelengths, Angstrom.
- ``/grid/<column>`` [N_models]: one dataset per grid column (spec
  physics-model.md §9.1: Av, Rv, Rv_A, f_A, distance, radius, weight,
  prior_weight, grid_weight, specgrid_indx, logL, logg, logA, logT, M_ini,
  M_act, Z, log{FILTER}_nd, log{FILTER}_wd, fullgrid_idx for trimmed grids...).
- attributes: ``format``, ``format_version``, ``filters`` (JSON list),
  ``columns`` (JSON list, column order), ``stellar_library`` (label),
  ``provenance`` (JSON record), ``n_rows``, ``derived_columns`` (JSON list)
  and free-form ``meta`` (JSON).

``log{FILTER}_wd`` is by definition log10 of that band's column of ``/seds``:
the writer checks it is (bit for bit) and then does not store it (a third of
the grid's bytes); it is listed in ``derived_columns`` and every reader
computes it from ``/seds`` with the same ``np.log10``, so the values read are
the ones written.  Files without the attribute store every column.

All datasets are chunked along the model axis so that grids larger than memory
are produced and consumed block by block (``SEDGrid.iter_chunks``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from beastflow.io.hdf5_arrays import ArraysWriter, decode_attr, iter_row_blocks, open_h5, read_rows

FORMAT = "beastflow-sed-grid"
FORMAT_VERSION = 1

#: integer-valued columns (everything else is float64, as in the BEAST)
INT_COLUMNS = {"fullgrid_idx"}


def column_dtype(name: str) -> Any:
    return np.int64 if name in INT_COLUMNS else np.float64


def log_flux_columns(filters: Sequence[str], columns: Sequence[str]) -> dict[str, int]:
    """The ``log{FILTER}_wd`` columns among ``columns``: name -> band index in ``filters``."""
    bands = {f"log{f}_wd": k for k, f in enumerate(filters)}
    return {c: bands[c] for c in columns if c in bands}


def log10_band(seds: np.ndarray, band: int) -> np.ndarray:
    """log10 of one band's fluxes, as the physics stage computes ``log{FILTER}_wd``."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log10(seds[:, band])


def derived_columns(h5: Any, filters: Sequence[str], columns: Sequence[str]) -> dict[str, int]:
    """Columns an open grid file does not store (``derived_columns`` attribute) -> band index."""
    listed = decode_attr(h5.attrs.get("derived_columns", "[]"))
    allowed = log_flux_columns(filters, columns)
    if not isinstance(listed, list) or any(c not in allowed for c in listed):
        raise ValueError(f"derived_columns {listed!r}: only log{{FILTER}}_wd columns of the grid can be derived")
    return {c: allowed[c] for c in listed}


class SEDGridWriter(ArraysWriter):
    """Write an SED grid block by block.

    >>> with SEDGridWriter(url, filters, lamb, columns, n_models=N, provenance=p) as w:
    ...     w.append_models(seds_block, {"Av": ..., "logA": ...})
    """

    def __init__(
        self,
        url: str,
        filters: Sequence[str],
        lamb: np.ndarray,
        columns: Sequence[str],
        n_models: int | None = None,
        provenance: Mapping[str, Any] | None = None,
        stellar_library: str = "",
        meta: Mapping[str, Any] | None = None,
        chunk_rows: int = 65_536,
    ):
        filters = list(filters)
        lamb = np.asarray(lamb, dtype=np.float64)
        if lamb.shape != (len(filters),):
            raise ValueError(f"{url}: lamb has shape {lamb.shape}, expected ({len(filters)},)")
        schema: dict[str, tuple[tuple[int, ...], Any]] = {"seds": ((len(filters),), np.float64)}
        self.derived = log_flux_columns(filters, columns)
        for c in columns:
            if c not in self.derived:
                schema[f"grid/{c}"] = ((), column_dtype(c))
        attrs = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "filters": filters,
            "columns": list(columns),
            "stellar_library": stellar_library,
            "provenance": dict(provenance or {}),
            "meta": dict(meta or {}),
            "derived_columns": list(self.derived),
        }
        super().__init__(url, schema, attrs=attrs, n_rows=n_models, chunk_rows=chunk_rows, static={"lamb": lamb})
        self.columns = list(columns)

    def append_models(self, seds: np.ndarray, columns: Mapping[str, np.ndarray]) -> None:
        missing = [c for c in self.columns if c not in columns]
        if missing:
            raise ValueError(f"{self.url}: block lacks grid columns {missing}")
        block = {"seds": np.asarray(seds, dtype=np.float64)}
        for c in self.columns:
            values = np.asarray(columns[c], dtype=column_dtype(c))
            if c in self.derived:
                if not np.array_equal(values, log10_band(block["seds"], self.derived[c]), equal_nan=True):
                    raise ValueError(f"{self.url}: column {c} is not log10 of the band's flux in seds")
                continue
            block[f"grid/{c}"] = values
        self.append(block)


@dataclass
class SEDGridBlock:
    start: int
    seds: np.ndarray
    columns: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.seds)


class SEDGrid:
    """Reader of an SED grid artifact; data stay on disk until asked for."""

    def __init__(self, url: str):
        self.url = url
        with open_h5(url) as h5:
            fmt = decode_attr(h5.attrs.get("format", ""))
            if fmt != FORMAT:
                raise ValueError(f"{url}: not a beastflow SED grid (format attribute {fmt!r}, expected {FORMAT!r})")
            self.filters: list[str] = decode_attr(h5.attrs["filters"])
            self.columns: list[str] = decode_attr(h5.attrs["columns"])
            self.stellar_library: str = decode_attr(h5.attrs.get("stellar_library", ""))
            self.provenance: dict[str, Any] = decode_attr(h5.attrs.get("provenance", "{}"))
            self.meta: dict[str, Any] = decode_attr(h5.attrs.get("meta", "{}"))
            self.lamb = np.asarray(h5["lamb"][...])
            self.n_models = int(h5["seds"].shape[0])
            try:
                self.derived = derived_columns(h5, self.filters, self.columns)
            except ValueError as exc:
                raise ValueError(f"{url}: {exc}") from None

    def __len__(self) -> int:
        return self.n_models

    @property
    def n_bands(self) -> int:
        return len(self.filters)

    @property
    def nbytes(self) -> int:
        """Bytes of the grid in memory (seds + all columns)."""
        return self.n_models * (self.n_bands + len(self.columns)) * 8

    @contextlib.contextmanager
    def _h5(self):
        with open_h5(self.url) as h5:
            yield h5

    def read(
        self, rows: slice | np.ndarray | None = None, columns: Sequence[str] | None = None, seds: bool = True
    ) -> SEDGridBlock:
        """Read a slice (or sorted index array) of models; all columns by default."""
        cols = self.columns if columns is None else list(columns)
        unknown = [c for c in cols if c not in self.columns]
        if unknown:
            raise KeyError(f"{self.url}: no grid column {unknown}; columns are {self.columns}")
        sel = slice(None) if rows is None else rows
        with self._h5() as h5:
            block = self._block(h5, sel, cols, seds)
        block.start = sel.start or 0 if isinstance(sel, slice) else -1
        return block

    def _block(self, h5: Any, sel: slice | np.ndarray, cols: Sequence[str], seds: bool) -> SEDGridBlock:
        need = seds or any(c in self.derived for c in cols)
        names = (["seds"] if need else []) + [f"grid/{c}" for c in cols if c not in self.derived]
        if isinstance(sel, slice):  # the chunks of every dataset decoded together, on threads
            got = read_rows(h5, names, sel)
        else:
            got = {k: np.asarray(h5[k][sel]) for k in names}
        all_seds = got["seds"] if need else np.empty((0, self.n_bands))
        out_cols = {c: log10_band(all_seds, self.derived[c]) if c in self.derived else got[f"grid/{c}"] for c in cols}
        return SEDGridBlock(start=0, seds=all_seds if seds else np.empty((0, self.n_bands)), columns=out_cols)

    def column(self, name: str) -> np.ndarray:
        return self.read(columns=[name], seds=False).columns[name]

    def iter_chunks(
        self, chunk_models: int = 262_144, columns: Sequence[str] | None = None, seds: bool = True
    ) -> Iterator[SEDGridBlock]:
        """Stream the grid block by block (memory bounded by one block)."""
        cols = self.columns if columns is None else list(columns)
        with self._h5() as h5:
            for sl in iter_row_blocks(self.n_models, chunk_models):
                block = self._block(h5, sl, cols, seds)
                block.start = sl.start
                yield block


def open_sed_grid(url: str) -> SEDGrid:
    return SEDGrid(url)


def write_sed_grid(
    url: str,
    filters: Sequence[str],
    lamb: np.ndarray,
    seds: np.ndarray,
    columns: Mapping[str, np.ndarray],
    **kwargs: Any,
) -> str:
    """Write a whole in-memory grid at once (small grids, tests)."""
    with SEDGridWriter(url, filters, lamb, list(columns), n_models=len(seds), **kwargs) as w:
        w.append_models(seds, columns)
    return url
