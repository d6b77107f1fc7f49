"""Fixed PDF bins for a whole field, computed once from the FULL SED grid.

The BEAST derives the PDF bins of every quantity from the *trimmed* grid of
each sub-file (fitting.md §5.1).  Different sub-files / source-density bins
then have different bins, so their PDFs cannot be merged, and A(V) PDFs are
distorted when trimming removes part of the A(V) range.  beastflow computes the
bins once from the full grid (all subgrids), so every sub-file, density bin and
subgrid of a field shares them.  ``run_grid_info`` streams the grids chunk by
chunk, so the full grid never has to fit in memory.

The artifact ``P_grid_info.json`` also records the total prior weight of the
full grid (so ``ln w_j = ln weight_j - ln Σ weight`` is the same constant in
every trimmed (sub)grid, making ``total_log_norm`` and ``Pmax`` comparable and
subgrid merging exact) and the row offset of each subgrid (so a model has one
global index across subgrids).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numba
import numpy as np

from beastflow import plan, storage
from beastflow.filters import short_names
from beastflow.io.sed_grid import open_sed_grid
from beastflow.provenance import make_provenance

if TYPE_CHECKING:
    from beastflow.settings import Settings

log = logging.getLogger(__name__)

FORMAT = "beastflow-grid-info"
FORMAT_VERSION = 1

#: grid columns that are not physical quantities (fitting.md §3)
EXCLUDED = {
    "osl",
    "keep",
    "weight",
    "grid_weight",
    "prior_weight",
    "fullgrid_idx",
    "stage",
    "specgrid_indx",
    "phase",
    "eep",
}
#: quantities binned in log10 (fitting.md §5.1)
LOG_SPACED = {"M_ini", "M_act", "radius"}
#: enough unique values to decide "more than the bin cap" (BEAST caps at 1000)
CAP_UNIQUE = 1000
#: symlog scale of the flux quantities (beast/tools/symlog.py)
SYMLOG_SCALE = 1e-20


def symlog(y: np.ndarray) -> np.ndarray:
    """sign(y) log10(1 + |y| / 1e-20): a log-like flux scale that tolerates y <= 0."""
    return np.sign(y) * np.log10(1.0 + np.abs(y) / SYMLOG_SCALE)


def flux_qname(filt: str) -> str:
    return f"symlog{filt}_wd_bias"


def quantity_names(columns: Sequence[str], filters: Sequence[str]) -> list[str]:
    """qnames: grid columns minus the bookkeeping ones, then one flux quantity per filter."""
    return [c for c in columns if c not in EXCLUDED] + [flux_qname(f) for f in filters]


def bin_index(edges: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``np.searchsorted(edges, values, side="right") - 1`` for sorted ``edges`` (NaN
    counts as above every edge, as numpy sorts it), in a few steps per value."""
    e = np.ascontiguousarray(edges, dtype=np.float64)
    v = np.ascontiguousarray(values, dtype=np.float64)
    if len(e) < 2:
        return np.searchsorted(e, v, side="right") - 1
    return _bin_index(e, v)


@numba.njit(cache=True, nogil=True)
def _bin_index(e, v):  # pragma: no cover - compiled
    """The last edge <= each value, searched from the bin a regular spacing would give:
    bins are (nearly) regular, so a value's bin is found in ~1 step, not log2(bins)."""
    ne = e.size
    span = e[ne - 1] - e[0]
    scale = (ne - 1) / span if span > 0 else 0.0
    out = np.empty(v.size, np.int64)
    for j in range(v.size):
        x = v[j]
        if not x >= e[0]:  # below the first edge, or NaN
            out[j] = ne - 1 if x != x else -1
        elif x >= e[ne - 1]:
            out[j] = ne - 1
        else:  # e[0] <= x < e[-1]: the answer is in 0..ne-2
            g = (x - e[0]) * scale
            i = ne - 2 if g >= ne - 2 else (int(g) if g > 0 else 0)
            while e[i] > x:
                i -= 1
            while e[i + 1] <= x:
                i += 1
            out[j] = i
    return out


@dataclass(frozen=True)
class Bins:
    """Bins of one quantity.  ``scaled_edges`` live in the assignment space
    (log10 for LOG_SPACED quantities), ``centres``/``edges`` are linear values."""

    name: str
    centres: np.ndarray
    edges: np.ndarray
    scaled_edges: np.ndarray
    log: bool
    clamp: bool  # flux quantities: values outside the edges go to the end bins

    @property
    def nbins(self) -> int:
        return len(self.centres)

    def assign(self, values: np.ndarray, where: str = "") -> np.ndarray:
        """Bin index of each value (e_i <= v < e_{i+1}, as numpy.digitize)."""
        v = np.asarray(values, dtype=np.float64)
        if self.log:
            with np.errstate(divide="ignore", invalid="ignore"):
                v = np.log10(v)
        idx = bin_index(self.scaled_edges, v)
        if self.clamp:
            return np.clip(idx, 0, self.nbins - 1).astype(np.int32)
        bad = (idx < 0) | (idx >= self.nbins) | ~np.isfinite(v)
        if bad.any():
            j = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"{where}: {int(bad.sum())} value(s) of {self.name!r} (e.g. {values[j]!r}) lie outside the "
                f"PDF bins [{self.edges[0]:g}, {self.edges[-1]:g}) of the grid info; the grid info was made "
                "from a different grid than this (trimmed) grid"
            )
        return idx.astype(np.int32)

    def to_json(self) -> dict[str, Any]:
        return {
            "centres": self.centres.tolist(),
            "edges": self.edges.tolist(),
            "scaled_edges": self.scaled_edges.tolist(),
            "log": self.log,
            "clamp": self.clamp,
        }

    @classmethod
    def from_json(cls, name: str, d: dict[str, Any]) -> Bins:
        return cls(
            name,
            np.asarray(d["centres"], float),
            np.asarray(d["edges"], float),
            np.asarray(d["scaled_edges"], float),
            bool(d["log"]),
            bool(d["clamp"]),
        )


def make_bins(
    name: str,
    vmin: float,
    vmax: float,
    unique_vals: np.ndarray,
    num_unique: int,
    max_nbins: int,
    regular: bool = False,
    clamp: bool = False,
) -> Bins:
    """Bins as fitting.md §5.1 (``regular=True``: always evenly spaced, §6)."""
    log = name in LOG_SPACED
    u = np.asarray(unique_vals, dtype=np.float64)
    lo, hi = float(vmin), float(vmax)
    if log:
        if lo <= 0:
            raise ValueError(f"quantity {name!r} is log-binned but has non-positive values (min {lo})")
        lo, hi, u = np.log10(lo), np.log10(hi), np.log10(u)
    nbins = int(min(num_unique, max_nbins))
    if regular or num_unique > nbins:
        delta = (hi - lo) / (nbins - 1) if nbins > 1 else 1.0
        centres = lo + np.arange(nbins) * delta
        edges = lo + (np.arange(nbins + 1) - 0.5) * delta
    else:
        centres = np.sort(u)
        if len(centres) == 1:
            c = centres[0]
            # BEAST uses 0.95c, 1.05c, an empty bin when c == 0; use ±0.5 then.
            half = 0.05 * abs(c) if c != 0 else 0.5
            edges = np.array([c - half, c + half])
        else:
            mid = 0.5 * (centres[1:] + centres[:-1])
            edges = np.concatenate([[centres[0] - (mid[0] - centres[0])], mid, [centres[-1] + (centres[-1] - mid[-1])]])
    scaled = edges.copy()
    if log:
        centres, edges = 10.0**centres, 10.0**edges
    return Bins(name, centres, edges, scaled, log, clamp)


class _QStats:
    """Streaming min / max / capped unique set of one quantity."""

    def __init__(self) -> None:
        self.min = np.inf
        self.max = -np.inf
        self.unique = np.empty(0)
        self.saturated = False

    def update(self, v: np.ndarray) -> None:
        v = v[np.isfinite(v)]
        if not len(v):
            return
        self.min = min(self.min, float(v.min()))
        self.max = max(self.max, float(v.max()))
        if not self.saturated:
            self.unique = np.union1d(self.unique, np.unique(v))
            if len(self.unique) > CAP_UNIQUE:
                self.saturated = True

    def merge(self, other: _QStats) -> None:
        self.min, self.max = min(self.min, other.min), max(self.max, other.max)
        if not self.saturated:
            self.unique = np.union1d(self.unique, other.unique)
            self.saturated = other.saturated or len(self.unique) > CAP_UNIQUE


def compute_grid_info(
    sed_grid_urls: Sequence[str], max_nbins: int, chunk_models: int = 262_144, flux_values: str = "full_grid"
) -> dict[str, Any]:
    """Bins and bookkeeping over all given grids (the subgrids of one full grid, in order).

    Flux quantities: over the full grid the noise-model bias is not known, so
    their range is that of symlog(F) extended down to symlog(0) = 0; values of
    symlog(F + bias) outside the range are put in the end bins (clamped).
    ``flux_values="trimmed"`` (BEAST compat, trimmed grids + their noise
    models) is handled by the fit itself.
    """
    if not sed_grid_urls:
        raise ValueError("grid info needs at least one SED grid URL")
    first = open_sed_grid(sed_grid_urls[0])
    filters, columns = first.filters, first.columns
    base_cols = [c for c in columns if c != "fullgrid_idx"]
    qphys = [c for c in base_cols if c not in EXCLUDED]
    stats = {q: _QStats() for q in qphys}
    fstats = {f: _QStats() for f in filters}
    total_weight, offset, subgrids = 0.0, 0, []
    for url in sed_grid_urls:
        g = open_sed_grid(url)
        if g.filters != filters:
            raise ValueError(f"{url}: filters {g.filters} differ from those of {sed_grid_urls[0]} ({filters})")
        gcols = [c for c in g.columns if c != "fullgrid_idx"]
        if gcols != base_cols:
            raise ValueError(f"{url}: grid columns {gcols} differ from those of {sed_grid_urls[0]}")
        if "weight" not in g.columns:
            raise ValueError(f"{url}: SED grid has no 'weight' column (prior x grid weight)")
        for block in g.iter_chunks(chunk_models, columns=qphys + ["weight"]):
            for q in qphys:
                stats[q].update(block.columns[q])
            w = block.columns["weight"]
            total_weight += float(w[w > 0].sum())
            sl = symlog(block.seds)
            for k, f in enumerate(filters):
                fstats[f].update(sl[:, k])
        subgrids.append({"url": storage.portable(url), "n_rows": g.n_models, "offset": offset})
        offset += g.n_models
    if not total_weight > 0:
        raise ValueError(f"{list(sed_grid_urls)}: the grid has no model with weight > 0")
    quantities: dict[str, Any] = {}
    for q in qphys:
        st = stats[q]
        if not np.isfinite(st.min):
            raise ValueError(f"{sed_grid_urls[0]}: grid column {q!r} has no finite value")
        quantities[q] = _entry(q, st, max_nbins, clamp=False)
    for f in filters:
        st = fstats[f]
        st.min = min(0.0, st.min)
        quantities[flux_qname(f)] = _entry(flux_qname(f), st, max_nbins, clamp=True)
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "filters": list(filters),
        "bands": short_names(filters),
        "columns": base_cols,
        "qnames": quantity_names(base_cols, filters),
        "total_weight": total_weight,
        "n_models": offset,
        "subgrids": subgrids,
        "pdf_max_nbins": max_nbins,
        "quantities": quantities,
    }


def _entry(q: str, st: _QStats, max_nbins: int, clamp: bool) -> dict[str, Any]:
    # saturated: "more than CAP_UNIQUE" (the exact count depends on chunking; only its size vs the bin cap matters)
    nu = len(st.unique) if not st.saturated else CAP_UNIQUE + 1
    b1 = make_bins(q, st.min, st.max, st.unique, nu, max_nbins, regular=False, clamp=clamp)
    b2 = make_bins(q, st.min, st.max, st.unique, nu, max_nbins, regular=True, clamp=clamp)
    return {
        "min": st.min,
        "max": st.max,
        "num_unique": nu,
        "unique_vals": st.unique.tolist() if not st.saturated else [],
        "bins": b1.to_json(),
        "bins2d_regular": b2.to_json(),
    }


@dataclass
class GridInfoResult:
    grid_info: str


def run_grid_info(settings: Settings, sed_grid_urls: Sequence[str], out_url: str | None = None) -> GridInfoResult:
    """Stage "grid info": ``P_grid_info.json`` from the FULL grid (all subgrids, in order)."""
    urls = list(sed_grid_urls)
    info = compute_grid_info(urls, settings.fit.pdf_max_nbins, settings.fit.chunk_models)
    info["provenance"] = make_provenance(
        "grid_info",
        settings.section_hash("fit", "compat"),
        inputs={f"sed_grid_{i}": u for i, u in enumerate(urls)},
    )
    out = out_url or plan.Names.of(settings).grid_info()
    storage.write_json(out, info)
    log.info("grid info for %d models over %d grid(s) -> %s", info["n_models"], len(urls), out)
    return GridInfoResult(grid_info=out)


def read_grid_info(url: str) -> dict[str, Any]:
    info = storage.read_json(url)
    if info.get("format") != FORMAT:
        raise ValueError(f"{url}: not a beastflow grid info file (format {info.get('format')!r})")
    return info


def bins_from_info(info: dict[str, Any], q: str, regular2d: bool = False) -> Bins:
    try:
        e = info["quantities"][q]
    except KeyError:
        raise KeyError(f"grid info has no quantity {q!r}; it has {list(info['quantities'])}") from None
    return Bins.from_json(q, e["bins2d_regular" if regular2d else "bins"])
