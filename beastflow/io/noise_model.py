"""The noise-model artifact (format "beastflow-noise-model", version 1).

HDF5, rows aligned one-to-one with the SED grid it was evaluated on, bands in
the grid's filter order (spec noise-model.md §1):

- ``/bias``         float64 [N_models, N_bands]  erg s^-1 cm^-2 A^-1
- ``/error``        float64 [N_models, N_bands]  erg s^-1 cm^-2 A^-1; negative = outside AST coverage
- ``/completeness`` float64 [N_models, N_bands]  fraction 0-1 ([N_models, 1] when the
  model has one value per model, as the truncheon model: read back repeated in every band)
- optional ``/covdiag`` [N, N_bands], ``/covoffdiag`` [N, N_bands (N_bands - 1) / 2]:
  absolute-calibration covariance in physical units (when configured)
- optional truncheon arrays (spec noise-model.md §6): ``/q_norm`` [N]
  (-1/2 ln det C), ``/icov_diag`` [N, N_bands], ``/icov_offdiag``
  [N, N_bands (N_bands - 1) / 2] (C^-1, strict upper triangle row by row)

Attributes: ``format``, ``format_version``, ``filters``, ``provenance``,
``sed_grid`` (URL of the grid it belongs to), ``meta``, ``precision``.

``precision = "float32"`` (the truncheon default, ``[noise_model] precision``):
bias, error, completeness and C^-1 are stored as float32; q_norm and the
calibration covariance stay float64.  C^-1 in physical units (~1/sigma^2, up to
1e40) does not fit a float32, so it is stored as C^-1_kl 2^(e_k + e_l) with
``icov_exponents`` e_k = round(log2 F_Vega,k): a power of two, so scaling and
unscaling are exact and the only change is the rounding to 24 bits (relative
error <= 2^-24 = 6e-8, against a ~1/sqrt(2n) = 16 % sampling error of a
covariance estimated from n = 20 fake stars).  Readers always return float64
in physical units.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from beastflow import storage
from beastflow.io.hdf5_arrays import ArraysWriter, decode_attr, iter_row_blocks, open_h5, read_rows

FORMAT = "beastflow-noise-model"
FORMAT_VERSION = 1
REQUIRED = ("bias", "error", "completeness")
TRUNCHEN = ("q_norm", "icov_diag", "icov_offdiag")
#: the arrays a float32 noise model stores in float32 (q_norm, an absolute lnP term of
#: ~100s, and the calibration covariance, ~F^2 < 1e-36, keep float64)
SINGLE = ("bias", "error", "completeness", "icov_diag", "icov_offdiag")
PRECISIONS = ("float64", "float32")


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
        precision: str = "float64",
        icov_exponents: Sequence[int] | None = None,
        one_completeness: bool = False,
    ):
        nb = len(filters)
        if precision not in PRECISIONS:
            raise ValueError(f"{url}: noise-model precision {precision!r}, expected one of {PRECISIONS}")
        if precision == "float32" and with_trunchen and (icov_exponents is None or len(icov_exponents) != nb):
            raise ValueError(f"{url}: a float32 truncheon noise model needs {nb} icov_exponents (one per band)")
        schema: dict[str, tuple[tuple[int, ...], Any]] = {k: ((nb,), np.float64) for k in REQUIRED}
        if with_covariance:
            schema["covdiag"] = ((nb,), np.float64)
            schema["covoffdiag"] = ((nb * (nb - 1) // 2,), np.float64)
        if one_completeness:
            # one value per model (the truncheon model's), stored once, read back per band
            schema["completeness"] = ((1,), np.float64)
        if with_trunchen:
            schema["q_norm"] = ((), np.float64)
            schema["icov_diag"] = ((nb,), np.float64)
            schema["icov_offdiag"] = ((nb * (nb - 1) // 2,), np.float64)
        if precision == "float32":
            schema = {k: (shape, np.float32 if k in SINGLE else dt) for k, (shape, dt) in schema.items()}
        self._icov_shift = _icov_shifts(icov_exponents) if precision == "float32" and with_trunchen else None
        attrs = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "filters": list(filters),
            "provenance": dict(provenance or {}),
            "sed_grid": sed_grid,
            "meta": dict(meta or {}),
            "precision": precision,
        }
        if self._icov_shift is not None:
            attrs["icov_exponents"] = [int(e) for e in icov_exponents or ()]
        super().__init__(url, schema, attrs=attrs, n_rows=n_models)

    def append(self, block: Mapping[str, np.ndarray]) -> None:
        if self.schema["completeness"][0] == (1,):
            comp = np.asarray(block["completeness"])
            if comp.ndim == 2 and comp.shape[1] > 1:
                if not np.array_equal(comp, np.repeat(comp[:, :1], comp.shape[1], axis=1), equal_nan=True):
                    raise ValueError(f"{self.url}: one_completeness, but the completeness differs between bands")
                block = {**block, "completeness": comp[:, :1]}
        if self.attrs["precision"] == "float32":
            block = {k: np.asarray(v) for k, v in block.items()}
            if self._icov_shift is not None:
                block["icov_diag"] = np.ldexp(block["icov_diag"], self._icov_shift[0])
                block["icov_offdiag"] = np.ldexp(block["icov_offdiag"], self._icov_shift[1])
            # numpy's cast rounds to nearest (the error bound of the module docstring)
            block = {k: v.astype(np.float32) if k in SINGLE else v for k, v in block.items()}
        super().append(block)


def icov_exponents_for(vega_fluxes: Sequence[float] | np.ndarray) -> list[int]:
    """Per-band power-of-two scale of a float32 C^-1: round(log2 F_Vega)."""
    return [int(np.rint(np.log2(v))) for v in np.asarray(vega_fluxes, dtype=np.float64)]


def _icov_shifts(exponents: Sequence[int] | None) -> tuple[np.ndarray, np.ndarray]:
    e = np.asarray(exponents, dtype=np.int64)
    iu = np.triu_indices(len(e), k=1)
    return 2 * e, e[iu[0]] + e[iu[1]]


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
            self.one_completeness = h5["completeness"].ndim == 2 and h5["completeness"].shape[1] == 1
            self.precision: str = decode_attr(h5.attrs.get("precision", "float64"))
            if self.precision not in PRECISIONS:
                raise ValueError(f"{url}: precision attribute {self.precision!r}, expected one of {PRECISIONS}")
            exps = decode_attr(h5.attrs.get("icov_exponents", "null"))
            good = isinstance(exps, list) and len(exps) == len(self.filters) and all(isinstance(e, int) for e in exps)
            if self.precision == "float32" and "q_norm" in h5 and not good:
                raise ValueError(f"{url}: a float32 truncheon noise model needs integer icov_exponents per band")
            self.icov_exponents: list[int] | None = exps if isinstance(exps, list) else None
            self._unshift = None if self.icov_exponents is None else _icov_shifts(self.icov_exponents)

    def __len__(self) -> int:
        return self.n_models

    def read(self, rows: slice | np.ndarray | None = None, names: Sequence[str] | None = None) -> NoiseBlock:
        sel = slice(None) if rows is None else rows
        names = list(names or self.names)
        with open_h5(self.url) as h5:
            stored = read_rows(h5, names, sel) if isinstance(sel, slice) else {k: h5[k][sel] for k in names}
            arrays = {k: self.physical(k, v) for k, v in stored.items()}
        start = (sel.start or 0) if isinstance(sel, slice) else -1
        return NoiseBlock(start=start, arrays=arrays)

    def iter_chunks(self, chunk_models: int = 262_144, names: Sequence[str] | None = None) -> Iterator[NoiseBlock]:
        names = list(names or self.names)
        with open_h5(self.url) as h5:
            for sl in iter_row_blocks(self.n_models, chunk_models):
                stored = read_rows(h5, names, sl)
                yield NoiseBlock(start=sl.start, arrays={k: self.physical(k, v) for k, v in stored.items()})

    def physical(self, name: str, stored: np.ndarray) -> np.ndarray:
        """float64 in physical units, whatever the stored precision (exact: a cast and a power of two)."""
        arr = np.asarray(stored, dtype=np.float64)
        if name == "completeness" and arr.ndim == 2 and arr.shape[1] == 1 != len(self.filters):
            arr = np.repeat(arr, len(self.filters), axis=1)
        if self._unshift is not None and name in ("icov_diag", "icov_offdiag"):
            arr = np.ldexp(arr, -self._unshift[0 if name == "icov_diag" else 1])
        return arr


def open_noise_model(url: str) -> NoiseModel:
    return NoiseModel(url)


def write_noise_model(
    url: str, filters: Sequence[str], bias: np.ndarray, error: np.ndarray, completeness: np.ndarray, **kwargs: Any
) -> str:
    with NoiseModelWriter(url, filters, n_models=len(bias), **kwargs) as w:
        w.append({"bias": bias, "error": error, "completeness": completeness})
    return url
