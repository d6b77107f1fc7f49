"""PDF bin sets of a fit and the per-model bin indices the kernel scatters into.

Default: the 1-D bins come from the FULL grid (``P_grid_info.json``) and the
2-D PDFs use the same bins as the 1-D PDFs of their two parameters.  BEAST
compat: bins derived from the trimmed grid itself (unless grid info is given,
which BEAST builds over the trimmed subgrids of a sub-file) and always-regular
2-D bins (fitting.md §5.1, §6).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from beastflow.fit.grid_info import (
    EXCLUDED,
    Bins,
    _QStats,
    bins_from_info,
    flux_qname,
    make_bins,
    quantity_names,
    symlog,
)

log = logging.getLogger(__name__)


@dataclass
class BinSet:
    qnames: list[str]
    bins1: list[Bins]
    pairs: list[tuple[Bins, Bins]]
    source: str  # "full_grid" or "trimmed_grid"
    offsets1: np.ndarray = field(init=False)  # start of each quantity in the concatenated 1-D histogram
    offsets2: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        n1 = [b.nbins for b in self.bins1]
        self.offsets1 = np.concatenate([[0], np.cumsum(n1)]).astype(np.int64)
        n2 = [a.nbins * b.nbins for a, b in self.pairs]
        self.offsets2 = np.concatenate([[0], np.cumsum(n2)]).astype(np.int64)

    @property
    def n1(self) -> int:
        return int(self.offsets1[-1])

    @property
    def n2(self) -> int:
        return int(self.offsets2[-1])

    def assign(self, qT: np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray]:
        """Per model, from quantity-major values qT [nq, n]: offset 1-D bin index
        per quantity b1T [nq, n] and flat 2-D index per pair b2T [npairs, n]."""
        n = qT.shape[1]
        b1 = np.empty((len(self.bins1), n), dtype=np.int32)
        local = {}
        for i, b in enumerate(self.bins1):
            idx = b.assign(qT[i], where)
            local[b.name] = idx
            b1[i] = idx + self.offsets1[i]
        b2 = np.empty((len(self.pairs), n), dtype=np.int32)
        qi = {q: i for i, q in enumerate(self.qnames)}
        for p, (a, b) in enumerate(self.pairs):
            ia = a.assign(qT[qi[a.name]], where) if a is not self.bins1[qi[a.name]] else local[a.name]
            ib = b.assign(qT[qi[b.name]], where) if b is not self.bins1[qi[b.name]] else local[b.name]
            b2[p] = ia * b.nbins + ib + self.offsets2[p]
        return b1, b2


def _pairs(
    qnames: list[str], requested: list[list[str]], n_unique: dict[str, int], bins_for: Any
) -> list[tuple[Bins, Bins]]:
    out = []
    for a, b in requested:
        missing = [p for p in (a, b) if p not in qnames]
        if missing:
            raise ValueError(f"fit.pdf2d_pairs: {missing} not among the fitted quantities {qnames}")
        if n_unique[a] < 2 or n_unique[b] < 2:
            log.warning("2-D PDF %s+%s skipped: a parameter has a single value in the grid", a, b)
            continue
        out.append((bins_for(a), bins_for(b)))
    return out


def binset_from_info(
    info: dict[str, Any],
    trimmed_columns: list[str],
    filters: list[str],
    max_nbins: int,
    pairs: list[list[str]],
    regular_2d: bool,
    where: str,
) -> BinSet:
    cols = [c for c in trimmed_columns if c != "fullgrid_idx"]
    if cols != info["columns"] or list(filters) != info["filters"]:
        raise ValueError(
            f"{where}: grid columns/filters differ from those of the grid info "
            f"(grid: {cols}, {filters}; grid info: {info['columns']}, {info['filters']})"
        )
    qnames = list(info["qnames"])
    if info.get("pdf_max_nbins") != max_nbins:
        log.warning(
            "grid info was made with pdf_max_nbins=%s, settings say %s; the grid info's bins are used",
            info.get("pdf_max_nbins"),
            max_nbins,
        )
    bins1 = [bins_from_info(info, q) for q in qnames]
    nu = {q: int(info["quantities"][q]["num_unique"]) for q in qnames}
    by = {b.name: b for b in bins1}
    bins_for = (lambda q: bins_from_info(info, q, regular2d=True)) if regular_2d else by.__getitem__
    return BinSet(qnames, bins1, _pairs(qnames, pairs, nu, bins_for), "full_grid")


def binset_from_trimmed(grid, noise, max_nbins: int, pairs: list[list[str]], chunk_models: int) -> BinSet:
    """BEAST behaviour: bins from the values over the whole trimmed grid (fitting.md §5.1)."""
    qphys = [c for c in grid.columns if c not in EXCLUDED]
    qnames = quantity_names(grid.columns, grid.filters)
    st = {q: _QStats() for q in qnames}
    for blk, nblk in zip(grid.iter_chunks(chunk_models, columns=qphys), noise.iter_chunks(chunk_models, ["bias"])):
        for q in qphys:
            st[q].update(blk.columns[q])
        sl = symlog(blk.seds + nblk.bias)
        for k, f in enumerate(grid.filters):
            st[flux_qname(f)].update(sl[:, k])
    bins1, bins2, nu = [], {}, {}
    for q in qnames:
        s = st[q]
        n = len(s.unique) if not s.saturated else len(s.unique) + 1
        nu[q] = n
        bins1.append(make_bins(q, s.min, s.max, s.unique, n, max_nbins))
        bins2[q] = make_bins(q, s.min, s.max, s.unique, n, max_nbins, regular=True)
    return BinSet(qnames, bins1, _pairs(qnames, pairs, nu, bins2.__getitem__), "trimmed_grid")
