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
  ``provenance`` (JSON record), ``n_rows`` and free-form ``meta`` (JSON).

All datasets are chunked along the model axis so that grids larger than memory
are produced and consumed block by block (``SEDGrid.iter_chunks``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from beastflow.io.hdf5_arrays import ArraysWriter, decode_attr, iter_row_blocks, open_h5

FORMAT = "beastflow-sed-grid"
FORMAT_VERSION = 1

#: integer-valued columns (everything else is float64, as in the BEAST)
INT_COLUMNS = {"fullgrid_idx"}


def column_dtype(name: str) -> Any:
    return np.int64 if name in INT_COLUMNS else np.float64


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
        for c in columns:
            schema[f"grid/{c}"] = ((), column_dtype(c))
        attrs = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "filters": filters,
            "columns": list(columns),
            "stellar_library": stellar_library,
            "provenance": dict(provenance or {}),
            "meta": dict(meta or {}),
        }
        super().__init__(url, schema, attrs=attrs, n_rows=n_models, chunk_rows=chunk_rows, static={"lamb": lamb})
        self.columns = list(columns)

    def append_models(self, seds: np.ndarray, columns: Mapping[str, np.ndarray]) -> None:
        missing = [c for c in self.columns if c not in columns]
        if missing:
            raise ValueError(f"{self.url}: block lacks grid columns {missing}")
        block = {"seds": np.asarray(seds, dtype=np.float64)}
        for c in self.columns:
            block[f"grid/{c}"] = np.asarray(columns[c], dtype=column_dtype(c))
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
            out_seds = np.asarray(h5["seds"][sel]) if seds else np.empty((0, self.n_bands))
            out_cols = {c: np.asarray(h5[f"grid/{c}"][sel]) for c in cols}
        start = sel.start or 0 if isinstance(sel, slice) else -1
        return SEDGridBlock(start=start, seds=out_seds, columns=out_cols)

    def column(self, name: str) -> np.ndarray:
        return self.read(columns=[name], seds=False).columns[name]

    def iter_chunks(
        self, chunk_models: int = 262_144, columns: Sequence[str] | None = None, seds: bool = True
    ) -> Iterator[SEDGridBlock]:
        """Stream the grid block by block (memory bounded by one block)."""
        cols = self.columns if columns is None else list(columns)
        with self._h5() as h5:
            for sl in iter_row_blocks(self.n_models, chunk_models):
                yield SEDGridBlock(
                    start=sl.start,
                    seds=np.asarray(h5["seds"][sl]) if seds else np.empty((0, self.n_bands)),
                    columns={c: np.asarray(h5[f"grid/{c}"][sl]) for c in cols},
                )


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
