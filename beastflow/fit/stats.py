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


def percentiles_from_pdf(pdf: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """[n_stars, 3] p16, p50, p84 of each PDF row."""
    pdf = np.ascontiguousarray(pdf, dtype=np.float64)
    if pdf.ndim != 2 or pdf.shape[1] != len(centres):
        raise ValueError(f"PDF shape {pdf.shape} does not match {len(centres)} bin centres")
    return weighted_percentiles(pdf, np.ascontiguousarray(centres, dtype=np.float64),
                                np.array(PERCENTILES, dtype=np.float64))


def stat_columns(qnames: list[str]) -> list[str]:
    return [f"{q}_{s}" for q in qnames for s in STAT_SUFFIXES]


def iau_names(surveyname: str, ra_deg: np.ndarray, dec_deg: np.ndarray) -> list[str]:
    """``"{survey} JHHMMSS.ssss±DDMMSS.sss"`` (fitting.md §4); RA as hours, 4 decimals."""
    out = []
    for ra, dec in zip(np.asarray(ra_deg, float), np.asarray(dec_deg, float)):
        if not (np.isfinite(ra) and np.isfinite(dec)):
            out.append("noname")
            continue
        # integer ticks avoid "60.0000" seconds from rounding up
        t = int(round((ra % 360.0) / 15.0 * 3600.0 * 1e4)) % (24 * 3600 * 10**4)
        h, r = divmod(t, 3600 * 10**4)
        mi, r = divmod(r, 60 * 10**4)
        ras = f"{h:02d}{mi:02d}{r // 10**4:02d}.{r % 10**4:04d}"
        sign = "-" if dec < 0 else "+"
        d = int(round(abs(dec) * 3600.0 * 1e3))
        dd, r = divmod(d, 3600 * 10**3)
        dm, r = divmod(r, 60 * 10**3)
        decs = f"{sign}{dd:02d}{dm:02d}{r // 10**3:02d}.{r % 10**3:03d}"
        out.append(f"{surveyname} J{ras}{decs}")
    return out
