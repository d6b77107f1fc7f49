"""Field-level numbers for the report: stacked posteriors, per-tile medians, per-star S/N.

The stacked posterior of a quantity is the sum over stars of each star's
normalised PDF (on the shared full-grid bins): the field's distribution of
that quantity as the fits see it, to be held against the grid prior.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from beastflow.io.hdf5_arrays import decode_attr, open_h5
from beastflow.report.star import grid_offsets

#: stars read at a time when stacking (bounded memory for large fields)
BLOCK = 4096


def _normalised(block: np.ndarray) -> np.ndarray:
    tot = block.reshape(len(block), -1).sum(axis=1)
    shape = (len(block),) + (1,) * (block.ndim - 1)
    return np.where(tot.reshape(shape) > 0, block / np.where(tot > 0, tot, 1.0).reshape(shape), 0.0)


def stacked_pdf1d(url: str, quantities: Sequence[str] | None = None) -> dict[str, Any]:
    """Like ``read_pdf1d`` but ``pdf[q]`` is the field's stack (1-D array) and ``n_stars`` the count."""
    with open_h5(url) as h5:
        qs = decode_attr(h5.attrs["quantities"])
        want = [q for q in (quantities or qs) if q in qs]
        n = int(h5["star_id"].shape[0])
        out: dict[str, Any] = {"quantities": want, "n_stars": n, "pdf": {}, "centres": {}, "edges": {}, "log": {}}
        for q in want:
            ds = h5[q]["pdf"]
            acc = np.zeros(ds.shape[1:])
            for lo in range(0, n, BLOCK):
                acc += _normalised(np.asarray(ds[lo : lo + BLOCK])).sum(axis=0)
            out["pdf"][q] = acc / max(n, 1)
            out["centres"][q] = h5[q]["centres"][...]
            out["edges"][q] = h5[q]["edges"][...]
            out["log"][q] = bool(h5[q].attrs["log"])
    return out


def stacked_pdf2d(url: str) -> dict[str, Any]:
    """Like ``read_pdf2d`` with ``pdf[pair]`` the field's stack (2-D array)."""
    with open_h5(url) as h5:
        pairs = decode_attr(h5.attrs["pairs"])
        n = int(h5["star_id"].shape[0])
        out: dict[str, Any] = {"pairs": pairs, "n_stars": n, "pdf": {}, "axes": {}}
        for p in pairs:
            ds = h5[p]["pdf"]
            acc = np.zeros(ds.shape[1:])
            for lo in range(0, n, BLOCK):
                acc += _normalised(np.asarray(ds[lo : lo + BLOCK])).sum(axis=0)
            out["pdf"][p] = acc / max(n, 1)
            out["axes"][p] = {k: h5[p][k][...] for k in ("centres_a", "centres_b", "edges_a", "edges_b")}
    return out


def tile_index(tiles: Mapping[str, np.ndarray], ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    """Row of the density-map tile holding each star (-1: outside every tile)."""
    ra, dec = np.asarray(ra, float), np.asarray(dec, float)
    out = np.full(len(ra), -1, np.int64)
    lo_ra, hi_ra = np.asarray(tiles["min_ra"], float), np.asarray(tiles["max_ra"], float)
    lo_de, hi_de = np.asarray(tiles["min_dec"], float), np.asarray(tiles["max_dec"], float)
    # tiles are a regular grid: locate by the sorted edges, then check the tile really holds the star
    ra_e = np.unique(np.r_[lo_ra, hi_ra])
    de_e = np.unique(np.r_[lo_de, hi_de])
    where = {
        (int(np.searchsorted(ra_e, a)), int(np.searchsorted(de_e, c))): t for t, (a, c) in enumerate(zip(lo_ra, lo_de))
    }
    i = np.searchsorted(ra_e, ra, side="right") - 1
    j = np.searchsorted(de_e, dec, side="right") - 1
    for k, key in enumerate(zip(i.tolist(), j.tolist())):
        t = where.get(key)
        if t is not None and lo_ra[t] <= ra[k] <= hi_ra[t] and lo_de[t] <= dec[k] <= hi_de[t]:
            out[k] = t
    return out


def tile_medians(tile: np.ndarray, values: np.ndarray, n_tiles: int) -> tuple[np.ndarray, np.ndarray]:
    """(median of ``values`` per tile (NaN: no star), stars per tile)."""
    med = np.full(n_tiles, np.nan)
    cnt = np.zeros(n_tiles, np.int64)
    v = np.asarray(values, float)
    ok = (tile >= 0) & np.isfinite(v)
    order = np.argsort(tile[ok], kind="stable")
    t, vv = tile[ok][order], v[ok][order]
    bounds = np.flatnonzero(np.diff(t)) + 1
    for grp_t, grp_v in zip(np.split(t, bounds), np.split(vv, bounds)):
        if len(grp_t):
            med[grp_t[0]] = np.median(grp_v)
            cnt[grp_t[0]] = len(grp_v)
    return med, cnt


def star_noise(art, stats: Mapping[str, np.ndarray], filters: Sequence[str]) -> np.ndarray | None:
    """[n_stars, n_bands] noise sigma at each star's most probable model (NaN where unknown);
    None when the run's noise models or grid info are not in the output folder."""
    from beastflow import storage

    if "Pmax_gid" not in stats or not art.noise_models:
        return None
    offsets = grid_offsets(art)
    n = len(stats["Pmax_gid"])
    sig = np.full((n, len(filters)), np.nan)
    gid = np.asarray(stats["Pmax_gid"], np.int64)
    gsub = np.maximum(np.asarray(stats.get("best_gridsub", np.zeros(n)), np.int64), 0)
    if "sd_bin" in stats:
        sbin = np.asarray(stats["sd_bin"], np.int64)
    elif "reorder_tag" in stats:
        sbin = np.array(
            [int(m.group(1)) if (m := re.match(r"bin(\d+)_", str(t))) else -1 for t in stats["reorder_tag"]]
        )
    else:
        return None
    by_name = {u.rsplit("/", 1)[-1]: u for u in art.noise_models}
    found = False
    for b, g in sorted(set(zip(sbin.tolist(), gsub.tolist()))):
        name = f"{art.project}_bin{b}_gridsub{g}_noisemodel.hd5"
        url = by_name.get(name) or (by_name.get(f"{art.project}_bin{b}_noisemodel.hd5") if g == 0 else None)
        if url is None or g not in offsets or not storage.exists(url):
            continue
        sel = np.flatnonzero((sbin == b) & (gsub == g))
        rows = gid[sel] - offsets[g][0]
        with open_h5(url) as h5:
            ds = h5["error"]
            good = (rows >= 0) & (rows < ds.shape[0])
            uniq, inv = np.unique(rows[good], return_inverse=True)
            if not len(uniq):
                continue
            err = np.asarray(ds[uniq.tolist()])[inv]
        sig[sel[good]] = np.where(err > 0, err, np.nan)
        found = True
    return sig if found else None
