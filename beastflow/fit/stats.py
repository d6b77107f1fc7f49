"""Per-star summary statistics from the accumulated sufficient quantities.

Everything reported is a function of quantities that add up exactly over
disjoint sets of models (subgrids): the total log-normalisation
``total_log_norm = ln Σ_j e^{lnP_j}``, the normalised sums Σ w̃ q (Exp), the
normalised PDFs on the shared bins, the peak lnP (Best/Pmax) and chi2min.  The
percentiles are recomputed from the (merged) 1-D PDFs, so a merge over subgrids
reproduces a single-grid fit to rounding.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from beastflow.behaviour import PmaxConvention

PERCENTILES = (16, 50, 84)
STAT_SUFFIXES = ("Best", "Exp", "p16", "p50", "p84")


@njit(cache=True)
def weighted_percentiles(pdf, centres, percents):
    """fitting.md §5.3 for every row of ``pdf``: x_i = (cumsum_i − p_i/2)/Σp,
    result = interp(P/100, x, centres); 0 for an all-zero row."""
    ns, nbin = pdf.shape
    out = np.zeros((ns, len(percents)))
    x = np.empty(nbin)
    for s in range(ns):
        tot = 0.0
        for i in range(nbin):
            tot += pdf[s, i]
        if not tot > 0:
            continue
        a = 0.0
        for i in range(nbin):
            a += pdf[s, i]
            x[i] = (a - 0.5 * pdf[s, i]) / tot
        for p in range(len(percents)):
            out[s, p] = np.interp(percents[p] / 100.0, x, centres)
    return out


@njit(cache=True)
def histogram_percentiles(pdf, edges, percents):
    """Percentiles of the piecewise-constant density that the binned PDF is: the
    CDF rises linearly across each bin from one edge to the next.  ``edges`` are
    in the binning variable (log10 for log-binned quantities).  0 for an
    all-zero row."""
    ns, nbin = pdf.shape
    out = np.zeros((ns, len(percents)))
    for s in range(ns):
        tot = 0.0
        for i in range(nbin):
            tot += pdf[s, i]
        if not tot > 0:
            continue
        for p in range(len(percents)):
            target = percents[p] / 100.0 * tot
            a = 0.0
            val = edges[nbin]
            for i in range(nbin):
                w = pdf[s, i]
                if w > 0 and a + w >= target:
                    val = edges[i] + (target - a) / w * (edges[i + 1] - edges[i])
                    break
                a += w
            out[s, p] = val
    return out


def percentiles_from_pdf(
    pdf: np.ndarray, centres: np.ndarray, scaled_edges: np.ndarray | None = None, log: bool = False
) -> np.ndarray:
    """[n_stars, 3] p16, p50, p84 of each PDF row.

    With ``scaled_edges`` (the bin edges in the binning variable, log10 when
    ``log``): percentiles of the histogram density (beastflow's default).
    Without: BEAST's rule (fitting.md §5.3), which interpolates a mid-bin CDF
    between bin centres.  For a posterior narrower than a bin that rule
    reports p16-p84 = centre -/+ 0.68 bin widths, twice the width of the
    histogram's own interval, so narrow posteriors look too uncertain (the
    demo's M_ini: 76 % of truths inside p16-p84 instead of 68 %); compat keeps
    it (docs/differences-from-beast.md).
    """
    pdf = np.ascontiguousarray(pdf, dtype=np.float64)
    if pdf.ndim != 2 or pdf.shape[1] != len(centres):
        raise ValueError(f"PDF shape {pdf.shape} does not match {len(centres)} bin centres")
    pcts = np.array(PERCENTILES, dtype=np.float64)
    if scaled_edges is None:
        return weighted_percentiles(pdf, np.ascontiguousarray(centres, dtype=np.float64), pcts)
    edges = np.ascontiguousarray(scaled_edges, dtype=np.float64)
    if len(edges) != pdf.shape[1] + 1:
        raise ValueError(f"{len(edges)} bin edges for {pdf.shape[1]} bins")
    out = histogram_percentiles(pdf, edges, pcts)
    if log:
        empty = ~(pdf.sum(axis=1) > 0)
        out = 10.0**out
        out[empty] = 0.0
    return out


def pmax_column(convention: PmaxConvention, lnpmax: np.ndarray, total_log_norm: np.ndarray) -> np.ndarray:
    """The ``Pmax`` column: the best grid point's probability, or BEAST's peak lnP (fitting.md §4)."""
    if convention is PmaxConvention.LN_PEAK:
        return lnpmax
    return np.exp(lnpmax - total_log_norm)


def iau_names(surveyname: str, ra_deg: np.ndarray, dec_deg: np.ndarray) -> list[str]:
    """``"{survey} JHHMMSS.ssss±DDMMSS.sss"`` (fitting.md §4); RA as hours, 4 decimals."""
    ra = np.atleast_1d(np.asarray(ra_deg, float))
    dec = np.atleast_1d(np.asarray(dec_deg, float))
    ok = np.isfinite(ra) & np.isfinite(dec)
    with np.errstate(invalid="ignore"):
        # integer ticks avoid "60.0000" seconds from rounding up (rint: round half to even, as round())
        t = np.where(ok, np.rint((ra % 360.0) / 15.0 * 3600.0 * 1e4), 0.0).astype(np.int64) % (24 * 3600 * 10**4)
        d = np.where(ok, np.rint(np.abs(dec) * 3600.0 * 1e3), 0.0).astype(np.int64)
    h, r = np.divmod(t, 3600 * 10**4)
    mi, r = np.divmod(r, 60 * 10**4)
    rs, rf = np.divmod(r, 10**4)
    dd, r = np.divmod(d, 3600 * 10**3)
    dm, r = np.divmod(r, 60 * 10**3)
    ds, df = np.divmod(r, 10**3)
    sign = np.where(dec < 0, "-", "+")
    fmt = surveyname.replace("%", "%%") + " J%02d%02d%02d.%04d%s%02d%02d%02d.%03d"
    cols = [a.tolist() for a in (h, mi, rs, rf, sign, dd, dm, ds, df)]
    return [fmt % v if o else "noname" for o, v in zip(ok.tolist(), zip(*cols))]
