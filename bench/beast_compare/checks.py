"""Stage outputs compared file to file (beastflow against BEAST), with the metrics of ``metrics``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py
import numpy as np

from .common import MIN_STARS_FRACTION, STAT_SUFFIXES, TOL_CHI2, TOL_NOISE, TOL_PDF_PEAK, TOL_SED, TOL_STATS_RANGE
from .metrics import (
    bias_over_error,
    bias_vs_scale,
    centre_shift,
    id_sets,
    lnp_rel_diff,
    max_over_peak,
    max_rel,
    range_scaled_diff,
    sign_mismatches,
    symlog_flux,
)
from .peer import Peer, read_beast_grid

# ------------------------------------------------------------------ comparisons


def compare_sed_grids(ours_url: str, beast_path: Path) -> dict[str, Any]:
    from beastflow.io.sed_grid import open_sed_grid

    g = open_sed_grid(ours_url)
    blk = g.read()
    filters, _, bseds, bcols = read_beast_grid(beast_path)
    res: dict[str, Any] = {"n_models": [g.n_models, len(bseds)], "filters_equal": list(g.filters) == filters}
    if g.n_models != len(bseds) or not res["filters_equal"]:
        res["ok"] = False
        return res
    keys = ["specgrid_indx", "Av", "Rv", "f_A"]
    ka = np.column_stack([blk.columns[k] for k in keys])
    kb = np.column_stack([bcols[k] for k in keys])
    oa = np.lexsort(ka.T[::-1])
    ob = np.lexsort(kb.T[::-1])
    res["keys_equal"] = bool(np.allclose(ka[oa], kb[ob], rtol=1e-12, atol=1e-12))
    res["same_row_order"] = bool(np.allclose(ka, kb, rtol=1e-12, atol=1e-12))
    if not res["keys_equal"]:
        res["ok"] = False
        return res
    seds_a, seds_b = blk.seds[oa], bseds[ob]
    res["seds"] = max_rel(seds_a, seds_b)
    res["seds_per_band"] = {f: max_rel(seds_a[:, k], seds_b[:, k])["max_rel"] for k, f in enumerate(filters)}
    cols = {}
    for c, v in bcols.items():
        if c in blk.columns:
            cols[c] = max_rel(blk.columns[c][oa], v[ob])["max_rel"]
        else:
            cols[c] = "missing"
    res["columns"] = cols
    res["extra_columns"] = sorted(set(blk.columns) - set(bcols))
    res["ok"] = bool(res["seds"]["max_rel"] <= TOL_SED)
    return res


def compare_spec_grids(ours_url: str, beast_path: Path) -> dict[str, Any]:
    """Spectral grid with priors: wavelengths, spectra (BEAST stores them in other units:
    compared up to one constant factor, reported), and the grid columns."""
    with h5py.File(ours_url, "r") as a, h5py.File(beast_path, "r") as b:
        la, lb = a["lamb"][...], b["lamb"][...]
        sa = a["spectra"][...][a["star_index"][...]] * a["scale"][...][:, None]
        sb = b["seds"][...]
        bg = b["grid"][...]
        res: dict[str, Any] = {"n_rows": [len(sa), len(sb)], "n_lamb": [len(la), len(lb)]}
        if sa.shape != sb.shape:
            res["ok"] = False
            return res
        res["lamb"] = max_rel(la, lb)["max_rel"]
        pos = (sb > 0) & (sa > 0)
        factor = float(np.median(sa[pos] / sb[pos])) if pos.any() else float("nan")
        res["unit_factor_ours_over_beast"] = factor
        res["spectra_after_factor"] = max_rel(sa / factor, sb)["max_rel"]
        res["columns"] = {
            c: (max_rel(a["grid"][c][...], bg[c])["max_rel"] if c in a["grid"] else "missing") for c in bg.dtype.names
        }
    res["ok"] = bool(res["lamb"] <= TOL_SED and res["spectra_after_factor"] <= TOL_SED)
    return res


def compare_noise(ours_url: str, beast: dict[str, np.ndarray], row_map: np.ndarray | None = None) -> dict[str, Any]:
    from beastflow.io.noise_model import open_noise_model

    n = open_noise_model(ours_url).read()
    out: dict[str, Any] = {}
    for k in ("bias", "error", "completeness"):
        a = n.arrays[k] if row_map is None else n.arrays[k][row_map]
        out[k] = max_rel(a, beast[k])
    a = n.arrays["bias"] if row_map is None else n.arrays["bias"][row_map]
    out["bias_vs_max_bias_error"] = bias_vs_scale(a, beast["bias"], beast["error"])
    out["bias_over_error"] = bias_over_error(a, beast["bias"], beast["error"])
    out["error_sign_mismatch"] = sign_mismatches(
        n.arrays["error"] if row_map is None else n.arrays["error"][row_map], beast["error"]
    )
    out["ok"] = bool(
        out["error"]["max_rel"] <= TOL_NOISE
        and out["completeness"]["max_rel"] <= TOL_NOISE
        and out["bias_vs_max_bias_error"] <= TOL_NOISE
        and out["error_sign_mismatch"] == 0
    )
    return out


def compare_trim(ours_grid_url: str, beast_trim: Path, row_map: np.ndarray | None = None) -> dict[str, Any]:
    from beastflow.io.sed_grid import open_sed_grid
    from beastflow.io.trim_index import read_trim_index
    from beastflow.noise.trim import index_url_for

    a = open_sed_grid(ours_grid_url).column("fullgrid_idx").astype(np.int64)
    # the trim artifact the pipeline's fit reads (kept rows) must be the copy's rows
    index_same = bool(np.array_equal(read_trim_index(index_url_for(ours_grid_url)).kept, a))
    if row_map is not None:  # our full-grid rows -> BEAST's full-grid rows
        a = row_map[a]
    with h5py.File(beast_trim, "r") as f:
        b = f["grid"]["fullgrid_idx"].astype(np.int64)
    res: dict[str, Any] = id_sets(a, b)
    same_set = res.pop("same_set")
    return {**res, "index_matches_copy": index_same, "ok": same_set and index_same}


def compare_fit(
    prefix: str, peer: Peer, full_grid: dict[str, np.ndarray], full_noise_bias: np.ndarray, full_seds: np.ndarray
) -> dict[str, Any]:
    import polars as pl
    from astropy.io import fits
    from astropy.table import Table

    from beastflow.fit.outputs import read_lnp, read_pdf1d, read_pdf2d

    ours = pl.read_parquet(f"{prefix}_stats.parquet")
    bt = Table.read(peer.path("stats.fits"), hdu=1)
    res: dict[str, Any] = {"n_stars": [ours.height, len(bt)]}
    if ours.height != len(bt):
        res["ok"] = False
        return res
    res["names_equal"] = [str(x) for x in ours["Name"].to_list()] == [str(x).strip() for x in bt["Name"]]
    filters = peer.setting("filters")
    sl = symlog_flux(full_seds + full_noise_bias)
    qnames = [c[:-5] for c in bt.colnames if c.endswith("_Best")]
    per_q = {}
    worst_frac = 1.0
    for q in qnames:
        if q in full_grid:
            v = full_grid[q]
        elif q.startswith("symlog") and q.endswith("_wd_bias"):
            v = sl[:, filters.index(q[len("symlog") : -len("_wd_bias")])]
        else:
            v = None
        if f"{q}_Best" not in ours.columns:
            per_q[q] = "missing"
            worst_frac = 0.0
            continue
        rng = float(np.nanmax(v) - np.nanmin(v)) if v is not None else 0.0
        row = {"range": rng}
        for s in STAT_SUFFIXES:
            a = ours[f"{q}_{s}"].cast(pl.Float64).to_numpy()
            b = np.asarray(bt[f"{q}_{s}"], dtype=np.float64)
            row[s] = range_scaled_diff(a, b, rng, TOL_STATS_RANGE)
            worst_frac = min(worst_frac, row[s]["frac_ok"])
        per_q[q] = row
    res["stats"] = per_q
    res["stats_worst_frac"] = worst_frac
    res["stats_max"] = max(
        (r[s]["max"] for r in per_q.values() if isinstance(r, dict) for s in STAT_SUFFIXES), default=float("inf")
    )
    other = {}
    for c in ("chi2min", "Pmax", "total_log_norm"):
        other[c] = max_rel(ours[c].to_numpy(), np.asarray(bt[c], float))["max_rel"]
    for c in ("chi2min_indx", "Pmax_indx", "specgrid_indx"):
        other[c + "_equal"] = bool(
            np.array_equal(ours[c].to_numpy().astype(np.int64), np.asarray(bt[c]).astype(np.int64))
        )
    # chi2min star by star: BEAST takes it over the sparse set S only, which
    # differs from the all-model minimum when the posterior is wide
    a, b = ours["chi2min"].to_numpy().astype(np.float64), np.asarray(bt["chi2min"], dtype=np.float64)
    rel = np.abs(a - b) / np.maximum(np.abs(b), 1e-300)
    ia = ours["chi2min_indx"].to_numpy().astype(np.int64)
    ib = np.asarray(bt["chi2min_indx"]).astype(np.int64)
    other["chi2min_stars_off"] = int((rel > TOL_CHI2).sum())
    other["chi2min_indx_stars_off"] = int((ia != ib).sum())
    other["chi2min_lower_than_beast"] = int((a < b * (1 - TOL_CHI2)).sum())
    other["chi2min_not_pmax_model"] = int((ib != np.asarray(bt["Pmax_indx"]).astype(np.int64)).sum())
    res["other"] = other

    # 1D PDFs
    p1 = read_pdf1d(f"{prefix}_pdf1d.hd5")
    pdf1: dict[str, Any] = {}
    worst1 = 0.0
    with fits.open(peer.path("pdf1d.fits")) as hb:
        for h in hb[1:]:
            q = h.name
            B, cb = h.data[:-1].astype(np.float64), h.data[-1].astype(np.float64)
            if q not in p1["pdf"]:
                pdf1[q] = "missing"
                worst1 = float("inf")
                continue
            A, ca = p1["pdf"][q], p1["centres"][q]
            if A.shape != B.shape:
                pdf1[q] = f"shape {list(A.shape)} vs {list(B.shape)}"
                worst1 = float("inf")
                continue
            d = max_over_peak(A, B)
            cen = centre_shift(ca, cb)
            pdf1[q] = {"nbins": int(B.shape[1]), "max_over_peak": d, "centre_shift_over_bin": cen}
            # bins that moved by more than the tolerance make the bin-by-bin test meaningless
            worst1 = max(worst1, d, 0.0 if cen <= TOL_PDF_PEAK else float("inf"))
    res["pdf1d"] = pdf1
    res["pdf1d_max"] = worst1

    # 2D PDFs
    pdf2: dict[str, Any] = {}
    try:
        p2 = read_pdf2d(f"{prefix}_pdf2d.hd5")
        with fits.open(peer.path("pdf2d.fits")) as hb:
            for h in hb[1:]:
                q = h.name
                n = len(bt)
                B = h.data[:n].astype(np.float64)
                if q not in p2["pdf"]:
                    pdf2[q] = "missing"
                    continue
                A = p2["pdf"][q]
                if A.shape != B.shape:
                    pdf2[q] = f"shape {list(A.shape)} vs {list(B.shape)}"
                    continue
                pdf2[q] = {
                    "max_over_peak": max_over_peak(A, B),
                    "centre_shift_a": centre_shift(p2["axes"][q]["centres_a"], h.data[n][:, 0]),
                    "centre_shift_b": centre_shift(p2["axes"][q]["centres_b"], h.data[n + 1][0, :]),
                }
    except Exception as exc:  # noqa: BLE001 - reported, not fatal
        pdf2["error"] = repr(exc)
    res["pdf2d"] = pdf2

    # lnp samples: comparable where both keep every candidate (BEAST draws 500 at random)
    try:
        L = read_lnp(f"{prefix}_lnp.hd5")
        n_cmp = n_same = 0
        dl = 0.0
        with h5py.File(peer.path("lnp.hd5"), "r") as fb:
            for e in range(len(bt)):
                g = fb[f"star_{e}"]
                bidx = np.asarray(g["idx"][...]).ravel().astype(np.int64)
                lo, hi = L["offsets"][e], L["offsets"][e + 1]
                if L["n_candidates"][e] > 500 or len(bidx) >= 500:
                    continue
                n_cmp += 1
                aidx = L["idx"][lo:hi]
                if set(aidx.tolist()) == set(bidx.tolist()):
                    n_same += 1
                    oa, ob = np.argsort(aidx), np.argsort(bidx)
                    bl = np.asarray(g["lnp"][...], dtype=np.float64).ravel()[ob]
                    # BEAST stores lnP as float32: compare relative to max(1, |lnP|)
                    dl = max(dl, lnp_rel_diff(L["lnp"][lo:hi][oa], bl))
        res["lnp"] = {"stars_compared": n_cmp, "same_model_sets": n_same, "max_rel_lnp_diff": dl}
    except Exception as exc:  # noqa: BLE001
        res["lnp"] = {"error": repr(exc)}
    res["ok"] = bool(worst_frac >= MIN_STARS_FRACTION and worst1 <= TOL_PDF_PEAK and other["chi2min_stars_off"] == 0)
    return res
