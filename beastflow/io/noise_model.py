"""The noise-model artifact (format "beastflow-noise-model", version 1).

HDF5, rows aligned one-to-one with the SED grid it was evaluated on, bands in
the grid's filter order (spec noise-model.md §1):

- ``/bias``         float64 [N_models, N_bands]  erg s^-1 cm^-2 A^-1
- ``/error``        float64 [N_models, N_bands]  erg s^-1 cm^-2 A^-1; negative = outside AST coverage
- ``/completeness`` float64 [N_models, N_bands]  fraction 0-1
- optional ``/covdiag`` [N, N_bands], ``/covoffdiag`` [N, N_bands (N_bands - 1) / 2]:
  absolute-calibration covariance in physical units (when configured)
- optional truncheon arrays (spec noise-model.md §6): ``/q_norm`` [N]
  (-1/2 ln det C), ``/icov_diag`` [N, N_bands], ``/icov_offdiag``
  [N, N_bands (N_bands - 1) / 2] (C^-1, strict upper triangle row by row)

Attributes: ``format``, ``format_version``, ``filters``, ``provenance``,
``sed_grid`` (URL of the grid it belongs to), ``meta``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from beastflow import storage
from beastflow.io.hdf5_arrays import ArraysWriter, decode_attr, iter_row_blocks, open_h5

FORMAT = "beastflow-noise-model"
FORMAT_VERSION = 1
REQUIRED = ("bias", "error", "completeness")
TRUNCHEN = ("q_norm", "icov_diag", "icov_offdiag")


class NoiseModelWriter(ArraysWriter):
    def __init__(
        self,
        url: str,
        filters: Sequence[str],
        n_models: int | None = None,
        provenance: Mapping[str, Any] | None = None,
        sed_grid: str = "",
        with_covariance: bool = False,
        meta: Mapping[str, Any] | None = None,
        with_trunchen: bool = False,
    ):
        nb = len(filters)
        schema: dict[str, tuple[tuple[int, ...], Any]] = {k: ((nb,), np.float64) for k in REQUIRED}
        if with_covariance:
            schema["covdiag"] = ((nb,), np.float64)
            schema["covoffdiag"] = ((nb * (nb - 1) // 2,), np.float64)
        if with_trunchen:
            schema["q_norm"] = ((), np.float64)
            schema["icov_diag"] = ((nb,), np.float64)
            schema["icov_offdiag"] = ((nb * (nb - 1) // 2,), np.float64)
        attrs = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "filters": list(filters),
            "provenance": dict(provenance or {}),
            "sed_grid": sed_grid,
            "meta": dict(meta or {}),
        }
        super().__init__(url, schema, attrs=attrs, n_rows=n_models)


@dataclass
class NoiseBlock:
    start: int
    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def bias(self) -> np.ndarray:
        return self.arrays["bias"]

    @property
    def error(self) -> np.ndarray:
        return self.arrays["error"]

    @property
    def completeness(self) -> np.ndarray:
        return self.arrays["completeness"]


class NoiseModel:
    """Reader; arrays stay on disk until asked for."""

    def __init__(self, url: str):
        self.url = url
        with open_h5(url) as h5:
            fmt = decode_attr(h5.attrs.get("format", ""))
            if fmt != FORMAT:
                raise ValueError(f"{url}: not a beastflow noise model (format attribute {fmt!r}, expected {FORMAT!r})")
            missing = [k for k in REQUIRED if k not in h5]
            if missing:
                raise ValueError(f"{url}: noise model lacks datasets {missing}")
            self.filters: list[str] = decode_attr(h5.attrs["filters"])
            self.provenance: dict[str, Any] = decode_attr(h5.attrs.get("provenance", "{}"))
            self.meta: dict[str, Any] = decode_attr(h5.attrs.get("meta", "{}"))
            grid = decode_attr(h5.attrs.get("sed_grid", ""))
            # recorded relative to the output root, where the noise model itself lies
            self.sed_grid: str = storage.resolve(grid, url.rsplit("/", 1)[0]) if grid and "/" in url else grid
            self.n_models = int(h5["bias"].shape[0])
            self.names = [k for k in ("bias", "error", "completeness", "covdiag", "covoffdiag", *TRUNCHEN) if k in h5]

    def __len__(self) -> int:
        return self.n_models

    def read(self, rows: slice | np.ndarray | None = None, names: Sequence[str] | None = None) -> NoiseBlock:
        sel = slice(None) if rows is None else rows
        names = list(names or self.names)
        with open_h5(self.url) as h5:
            arrays = {k: np.asarray(h5[k][sel]) for k in names}
        start = (sel.start or 0) if isinstance(sel, slice) else -1
        return NoiseBlock(start=start, arrays=arrays)

    def iter_chunks(self, chunk_models: int = 262_144, names: Sequence[str] | None = None) -> Iterator[NoiseBlock]:
        names = list(names or self.names)
        with open_h5(self.url) as h5:
            for sl in iter_row_blocks(self.n_models, chunk_models):
                yield NoiseBlock(start=sl.start, arrays={k: np.asarray(h5[k][sl]) for k in names})


def open_noise_model(url: str) -> NoiseModel:
    return NoiseModel(url)


def write_noise_model(
    url: str, filters: Sequence[str], bias: np.ndarray, error: np.ndarray, completeness: np.ndarray, **kwargs: Any
) -> str:
    with NoiseModelWriter(url, filters, n_models=len(bias), **kwargs) as w:
        w.append({"bias": bias, "error": error, "completeness": completeness})
    return url
