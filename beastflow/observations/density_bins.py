"""Density bins of the map tiles (spec observations.md §4).

One binning is computed once, by the density-map stage, and stored in the map
artifact (edges + the bin of every tile); the cut, split and AST stages read it
from there so the three always agree.
"""

from __future__ import annotations

import math

import numpy as np

from beastflow.settings.observations import SourceDensity


def bin_edges(values: np.ndarray, sd: SourceDensity) -> np.ndarray | None:
    """Bin edges for the tile values; ``None`` = every tile is its own bin."""
    v = np.asarray(values, float)
    if sd.custom_edges is not None:
        return np.asarray(sd.custom_edges, float)
    if v.size == 0:
        raise ValueError("density map has no tiles to bin")
    vmin, vmax = float(v.min()), float(v.max())
    if sd.binmode == "linear":
        if sd.n_bins is not None:
            return np.linspace(vmin - 0.01 * abs(vmin), vmax + 0.01 * abs(vmax), sd.n_bins + 1)
        if sd.bin_width is None:
            return None
        w = float(sd.bin_width)
        n = max(1, math.ceil((vmax - vmin) / w))
        return vmin + w * np.arange(n + 1)
    # log: bins between the smallest positive and the largest value
    pos = v[v > 0]
    if pos.size == 0:
        raise ValueError("binmode = 'log' but every tile value is zero")
    if sd.n_bins is None:
        raise ValueError("[observations.source_density] binmode = 'log' needs n_bins (a positive integer)")
    m = float(pos.min())
    return np.logspace(np.log10(m - 0.01 * m), np.log10(vmax + 0.01 * vmax), sd.n_bins + 1)


def assign_bins(
    values: np.ndarray, edges: np.ndarray | None, sd: SourceDensity, width_extra_bin: bool = False
) -> np.ndarray:
    """Bin index per value: ``numpy.digitize`` semantics (1-based, 0 below the first edge).

    Intended behaviour fixes the width-mode QUIRK: a value equal to the last
    edge (the maximum when (max - min)/width is an integer) belongs to the last
    bin, not to an extra bin of its own; ``width_extra_bin`` keeps the extra bin.
    """
    v = np.asarray(values, float)
    if edges is None:
        return np.arange(v.size, dtype=np.int64)
    b = np.digitize(v, edges).astype(np.int64)
    if sd.binmode == "log" and sd.custom_edges is None:
        b[v <= 0] = 0
    if not width_extra_bin and sd.custom_edges is None and sd.binmode == "linear":
        # every tile value lies inside [edges[0], edges[-1]] by construction
        b = np.clip(b, 1, len(edges) - 1)
    return b


def lookup_tiles_linear(
    ra: np.ndarray, dec: np.ndarray, ra_grid: np.ndarray, dec_grid: np.ndarray, dec_clamped_with_ra_limits: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Tile (i_ra, i_dec) of positions by a linear search in RA/Dec (BEAST's lookup).

    ``dec_clamped_with_ra_limits`` reproduces the BUG? of clamping the Dec index with the RA limits.
    """
    n_x, n_y = len(ra_grid) - 1, len(dec_grid) - 1
    i = np.searchsorted(ra_grid[:-1], ra, side="right") - 1
    j = np.searchsorted(dec_grid[:-1], dec, side="right") - 1
    i = np.clip(i, 0, n_x - 1)
    if dec_clamped_with_ra_limits:
        # BUG? reproduced: Dec clamped with the RA limits (then kept on the grid,
        # where BEAST would fail to find a tile at all)
        j = np.clip(j, 0, n_x - 1)
    j = np.clip(j, 0, n_y - 1)
    return i, j
