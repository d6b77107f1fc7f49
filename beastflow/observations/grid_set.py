"""Several SED (sub)grids read as one grid, block by block (rows numbered across them).

The AST-input stage selects models over the whole field's grid; the physics
stage may have written it as several subgrids.  Reading them as one
concatenation keeps memory at one block whatever the grid's size.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from beastflow.io.sed_grid import SEDGrid

# --------------------------------------------------------------------------
# the grid as one concatenation of subgrids
# --------------------------------------------------------------------------


class GridSet:
    """Several SED (sub)grids seen as one grid; rows numbered across them."""

    def __init__(self, urls: Sequence[str], chunk_models: int = 262_144):
        if not urls:
            raise ValueError("no SED grid given")
        self.urls = list(urls)
        self.grids = [SEDGrid(u) for u in self.urls]
        self.filters = self.grids[0].filters
        for g in self.grids[1:]:
            if g.filters != self.filters:
                raise ValueError(f"{g.url}: filters {g.filters} differ from {self.urls[0]}: {self.filters}")
        self.columns = [c for c in self.grids[0].columns if all(c in g.columns for g in self.grids)]
        self.offsets = np.cumsum([0] + [len(g) for g in self.grids])
        self.n_models = int(self.offsets[-1])
        self.chunk = int(chunk_models)

    def blocks(self, columns: Sequence[str] = ()) -> Iterator[tuple[int, np.ndarray, dict[str, np.ndarray]]]:
        """(global start row, seds, columns) block by block over all subgrids."""
        for g, grid in enumerate(self.grids):
            for blk in grid.iter_chunks(self.chunk, columns=[c for c in columns if c in grid.columns]):
                yield int(self.offsets[g]) + blk.start, blk.seds, blk.columns

    def read_rows(self, rows: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Models at global rows (any order, repeats allowed)."""
        rows = np.asarray(rows, np.int64)
        seds = np.empty((rows.size, len(self.filters)))
        cols = {c: np.empty(rows.size) for c in self.columns}
        g_of = np.searchsorted(self.offsets, rows, side="right") - 1
        for g in np.unique(g_of):
            sel = np.flatnonzero(g_of == g)
            local = rows[sel] - self.offsets[g]
            uniq, inv = np.unique(local, return_inverse=True)  # h5py needs increasing indices
            blk = self.grids[g].read(rows=uniq, columns=self.columns)
            seds[sel] = blk.seds[inv]
            for c in self.columns:
                cols[c][sel] = blk.columns[c][inv]
        return seds, cols

    def locate(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        g = np.searchsorted(self.offsets, rows, side="right") - 1
        return g, rows - self.offsets[g]
