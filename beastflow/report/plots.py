"""Diagnostic plots of a beastflow run (matplotlib, Agg, PNG).

Every function takes plain data (numpy arrays, polars frames, dicts as read by
the artifact readers), draws one figure and writes it atomically to a URL
through ``beastflow.storage``; it returns that URL.  Nothing here uses pyplot's
global state (figures are ``matplotlib.figure.Figure`` objects rendered by the
Agg canvas), so plotting is safe in worker threads and on headless machines.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from beastflow import storage
from beastflow.filters import short_name
from beastflow.magnitudes import flux_to_mag
from beastflow.report.recovery import recovery_metrics

#: human labels of the usual quantities
LABELS = {
    "Av": "A(V) [mag]",
    "Rv": "R(V)",
    "f_A": "f_A",
    "Rv_A": "R(V)_A",
    "logA": "log age [yr]",
    "M_ini": "M_ini [M_sun]",
    "M_act": "M_act [M_sun]",
    "Z": "Z",
    "distance": "distance [pc]",
    "logL": "log L [L_sun]",
    "logT": "log T_eff [K]",
    "logg": "log g",
    "radius": "radius [R_sun]",
}
#: symlog scale used by the fit's flux quantities (beast/tools/symlog.py)
SYMLOG_SCALE = 1e-20


def label(q: str) -> str:
    return LABELS.get(q, q)


def inverse_symlog(s: np.ndarray) -> np.ndarray:
    s = np.asarray(s, dtype=np.float64)
    return np.sign(s) * SYMLOG_SCALE * (10.0 ** np.abs(s) - 1.0)


def save(fig: Figure, url: str, dpi: int = 110) -> str:
    """Render ``fig`` to PNG and write it atomically to ``url``."""
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    storage.write_bytes(url, buf.getvalue())
    return url


def plain_log_ticks(ax, which: str = "x") -> None:
    """Log axis ticks as plain numbers (0.5, 1, 2, 5), not 2x10^0 labels that run into each other."""
    from matplotlib.ticker import LogLocator, NullFormatter, StrMethodFormatter

    axis = ax.xaxis if which == "x" else ax.yaxis
    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(StrMethodFormatter("{x:g}"))
    axis.set_minor_formatter(NullFormatter())


def _mags(flux: np.ndarray, vega: float) -> np.ndarray:
    return flux_to_mag(flux, vega)  # NaN where there is no magnitude: not drawn


def _panel_grid(n: int, max_cols: int = 3) -> tuple[int, int]:
    ncol = min(n, max_cols)
    return int(np.ceil(n / ncol)), ncol


# ---------------------------------------------------------------- catalog CMD
def plot_cmd(
    mag_blue: np.ndarray,
    mag_red: np.ndarray,
    color_values: Sequence[np.ndarray | None],
    color_names: Sequence[str],
    blue: str,
    red: str,
    url: str,
    title: str = "",
) -> str:
    """Colour-magnitude diagram (blue - red vs red), one panel per colouring quantity.

    ``color_values`` entries may be None (panel coloured by point density only).
    """
    mb, mr = np.asarray(mag_blue, float), np.asarray(mag_red, float)
    ok = np.isfinite(mb) & np.isfinite(mr)
    n = max(1, len(color_values))
    fig = Figure(layout="constrained", figsize=(4.6 * n, 4.8))
    for i in range(n):
        ax = fig.add_subplot(1, n, i + 1)
        cv = color_values[i] if color_values else None
        if cv is None:
            ax.scatter(mb[ok] - mr[ok], mr[ok], s=3, c="k", alpha=0.5, linewidths=0)
        else:
            c = np.asarray(cv, float)
            sel = ok & np.isfinite(c)
            order = np.argsort(c[sel])  # extreme values on top
            sc = ax.scatter((mb - mr)[sel][order], mr[sel][order], c=c[sel][order], s=4, cmap="viridis", linewidths=0)
            fig.colorbar(sc, ax=ax, label=label(color_names[i]))
        ax.invert_yaxis()
        ax.set_xlabel(f"{blue} - {red} [Vega mag]")
        ax.set_ylabel(f"{red} [Vega mag]")
        shown = f"{int(ok.sum())} of {len(mb)} stars"
        if ok.sum() < len(mb):  # a star with flux <= 0 in either band has no magnitude there
            shown += f"; {len(mb) - int(ok.sum())} without flux > 0 in {blue} or {red} not shown"
        ax.set_title(f"{title}: {shown}" if title else shown, fontsize=8)
    return save(fig, url)


# ---------------------------------------------------------------- density map
def plot_density_map(
    tiles: Mapping[str, np.ndarray],
    url: str,
    stars_ra: np.ndarray | None = None,
    stars_dec: np.ndarray | None = None,
    unit: str = "sources / arcsec$^2$",
) -> str:
    """The source-density tile map (tile table columns ``min_ra``, ``max_ra``, ``min_dec``, ``max_dec``, ``value``)."""
    from matplotlib.collections import PatchCollection
    from matplotlib.patches import Rectangle

    fig = Figure(layout="constrained", figsize=(6.0, 5.0))
    ax = fig.add_subplot(1, 1, 1)
    v = np.asarray(tiles["value"], float)
    rects = [
        Rectangle((a, c), b - a, d - c)
        for a, b, c, d in zip(tiles["min_ra"], tiles["max_ra"], tiles["min_dec"], tiles["max_dec"])
    ]
    pc = PatchCollection(rects, cmap="magma", edgecolor="none")
    pc.set_array(v)
    ax.add_collection(pc)
    fig.colorbar(pc, ax=ax, label=unit)
    if stars_ra is not None and stars_dec is not None:
        ax.scatter(stars_ra, stars_dec, s=1, c="c", alpha=0.4, linewidths=0)
    ax.set_xlim(float(np.max(tiles["max_ra"])), float(np.min(tiles["min_ra"])))  # east to the left
    ax.set_ylim(float(np.min(tiles["min_dec"])), float(np.max(tiles["max_dec"])))
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(4))
    # equal angular scale on the sky: 1 deg of RA spans cos(dec) deg
    ax.set_aspect(1.0 / max(np.cos(np.radians(float(np.mean(tiles["min_dec"])))), 1e-3))
    ax.set_xlabel("RA [deg]")
    ax.set_ylabel("Dec [deg]")
    ax.set_title(f"source density: {len(v)} tiles, max {np.max(v):.2f}", fontsize=9)
    return save(fig, url)


# ---------------------------------------------------------------- ASTs / noise
#: a band counts an artificial star as recovered when its measured flux is this many sigma above zero
RECOVERY_SNR = 5.0


def wilson_interval(k: np.ndarray, n: np.ndarray, z: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Binomial (Wilson score) interval of k successes in n trials; z = 1: the 68 % interval."""
    k, n = np.asarray(k, float), np.asarray(n, float)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = k / n
        den = 1 + z * z / n
        mid = (p + z * z / (2 * n)) / den
        half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return mid - half, mid + half


def binned_scatter(mag_in: np.ndarray, resid: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Robust standard deviation (1.4826 MAD) of ``resid`` in bins of input magnitude (NaN: < 5 points)."""
    idx = np.digitize(mag_in, edges) - 1
    out = np.full(len(edges) - 1, np.nan)
    for i in range(len(out)):
        r = resid[idx == i]
        r = r[np.isfinite(r)]
        if len(r) >= 5:
            out[i] = 1.4826 * np.median(np.abs(r - np.median(r)))
    return out


def band_recovered(
    mag_in: np.ndarray, rate: np.ndarray, detected: np.ndarray, snr: float = RECOVERY_SNR, n_bins: int = 25
) -> np.ndarray:
    """Artificial stars recovered IN THIS BAND: detected, and a measured flux at least ``snr`` sigma
    above zero, sigma being the ASTs' own scatter at that input magnitude.

    A source found in any band gets forced photometry in all of them, so "non-zero
    flux" would count a star 3 mag below a band's limit as recovered there.
    """
    m = np.asarray(mag_in, float)
    r = np.asarray(rate, float)
    fin = 10 ** (-0.4 * m)
    ok = detected & np.isfinite(m) & (m < 80) & np.isfinite(r)
    if not ok.any():
        return np.zeros(len(m), bool)
    edges = np.linspace(m[ok].min(), m[ok].max() + 1e-9, n_bins + 1)
    sig = binned_scatter(m[ok], (r - fin)[ok], edges)
    # bins with too few detected ASTs: nearest bin that has a scatter
    good = np.flatnonzero(np.isfinite(sig))
    if not len(good):
        return ok & (r > 0)
    fill = good[np.argmin(np.abs(np.arange(len(sig))[:, None] - good[None, :]), axis=1)]
    sig = sig[fill]
    idx = np.clip(np.digitize(m, edges) - 1, 0, n_bins - 1)
    return ok & (r >= snr * sig[idx])


def completeness_curve(
    mag_in: np.ndarray, recovered: np.ndarray, n_bins: int = 25
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(bin centres, recovered fraction, counts) of ASTs in bins of input magnitude."""
    m = np.asarray(mag_in, float)
    ok = np.isfinite(m) & (m < 80)
    m, r = m[ok], np.asarray(recovered, bool)[ok]
    if len(m) == 0:
        return np.array([]), np.array([]), np.array([])
    edges = np.linspace(m.min(), m.max() + 1e-9, n_bins + 1)
    idx = np.clip(np.digitize(m, edges) - 1, 0, n_bins - 1)
    cnt = np.bincount(idx, minlength=n_bins)
    rec = np.bincount(idx, weights=r.astype(float), minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = rec / cnt
    return 0.5 * (edges[1:] + edges[:-1]), frac, cnt


def m50(x: np.ndarray, frac: np.ndarray) -> float:
    """Faintest magnitude where the completeness curve crosses 50 % from above (NaN: never)."""
    ok = np.isfinite(frac)
    x, f = np.asarray(x)[ok], np.asarray(frac)[ok]
    for i in range(len(f) - 1, 0, -1):
        if f[i - 1] >= 0.5 > f[i]:
            return float(x[i - 1] + (f[i - 1] - 0.5) / (f[i - 1] - f[i]) * (x[i] - x[i - 1]))
    return float("nan")


def plot_ast_completeness(
    asts: Mapping[str, np.ndarray],
    bands: Sequence[str],
    url: str,
    groups: np.ndarray | None = None,
    group_label: str = "density bin",
) -> str:
    """AST completeness vs input magnitude per band, one curve per group (e.g. density bin),
    with 68 % binomial error bars.  A star counts as recovered in a band when it was
    detected (rate != 0, CUT_FLAG == 0, band flag == 0) with a flux >= RECOVERY_SNR sigma
    (``band_recovered``)."""
    nr, nc = _panel_grid(len(bands))
    fig = Figure(layout="constrained", figsize=(4.2 * nc, 3.3 * nr))
    cut = np.asarray(asts["CUT_FLAG"]) > 0 if "CUT_FLAG" in asts else None
    gvals = [None] if groups is None else sorted(np.unique(groups).tolist())
    for i, b in enumerate(bands):
        ax = fig.add_subplot(nr, nc, i + 1)
        rate = np.asarray(asts[f"{b}_RATE"], float)
        det = (rate != 0) & np.isfinite(rate)
        if cut is not None:
            det &= ~cut
        if f"{b}_FLAG" in asts:
            det &= np.asarray(asts[f"{b}_FLAG"]) == 0
        mags = np.asarray(asts[f"{b}_IN"], float)
        notes = []
        for g in gvals:
            sel = np.ones(len(rate), bool) if g is None else np.asarray(groups) == g
            rec = band_recovered(mags[sel], rate[sel], det[sel])
            x, frac, cnt = completeness_curve(mags[sel], rec)
            ok = cnt > 0
            lo, hi = wilson_interval(frac[ok] * cnt[ok], cnt[ok])
            ax.errorbar(
                x[ok],
                frac[ok],
                yerr=(np.clip(frac[ok] - lo, 0, None), np.clip(hi - frac[ok], 0, None)),
                fmt="-o",
                ms=2.5,
                lw=1,
                elinewidth=0.7,
                capsize=1.5,
                label=None if g is None else f"{group_label} {g}",
            )
            m = m50(x[ok], frac[ok])
            if np.isfinite(m):
                notes.append(f"{m:.1f}")
        ax.set_ylim(-0.03, 1.05)
        ax.axhline(0.5, color="0.7", lw=0.8, ls=":")
        ax.set_xlabel(f"{b} input [Vega mag]")
        ax.set_ylabel(f"recovered in {b}")
        if notes:
            ax.set_title(f"50 % at {', '.join(notes)} mag", fontsize=8)
        if groups is not None and i == 0:
            ax.legend(fontsize=7)
    fig.suptitle(
        f"artificial-star completeness per band ({len(next(iter(asts.values())))} ASTs; recovered = "
        f"detected with S/N >= {RECOVERY_SNR:g} in that band)",
        fontsize=10,
    )
    return save(fig, url)


def plot_noise_model(
    curves: Sequence[Mapping[str, Any]],
    filters: Sequence[str],
    vega: np.ndarray,
    url: str,
    asts: Mapping[str, np.ndarray] | None = None,
) -> str:
    """Noise-model curves per filter on log axes: sigma/F (solid) and |bias|/F (dashed) against
    model magnitude; grey points: the recovered ASTs' own scatter (1.4826 MAD of (out - in)/in)
    per input-magnitude bin, which sigma/F should follow.

    ``curves``: one dict per noise model with ``label``, ``seds`` [n, nb]
    (model fluxes), ``error``, ``bias``, ``completeness`` (rows aligned).
    """
    nr, nc = _panel_grid(len(filters))
    fig = Figure(layout="constrained", figsize=(4.4 * nc, 3.4 * nr))
    for k, f in enumerate(filters):
        b = short_name(f)
        ax = fig.add_subplot(nr, nc, k + 1)
        ys = []
        if asts is not None and f"{b}_IN" in asts:
            m_in = np.asarray(asts[f"{b}_IN"], float)
            fin = 10 ** (-0.4 * m_in)
            fout = np.asarray(asts[f"{b}_RATE"], float)
            ok = (fout != 0) & np.isfinite(fout) & np.isfinite(fin) & (m_in < 80)
            if "CUT_FLAG" in asts:
                ok &= np.asarray(asts["CUT_FLAG"]) == 0
            if ok.sum() > 10:
                edges = np.linspace(m_in[ok].min(), m_in[ok].max() + 1e-9, 26)
                sc = binned_scatter(m_in[ok], ((fout - fin) / fin)[ok], edges)
                ax.plot(0.5 * (edges[1:] + edges[:-1]), sc, "o", color="0.6", ms=3, label="ASTs: scatter/F")
                ys.append(sc[np.isfinite(sc) & (sc > 0)])
        for c in curves:
            F = np.asarray(c["seds"])[:, k]
            err = np.asarray(c["error"])[:, k]
            bias = np.asarray(c["bias"])[:, k]
            ok = (F > 0) & (err > 0)
            if not ok.any():
                continue
            m = _mags(F[ok], vega[k])
            order = np.argsort(m)
            s_f = (err[ok] / F[ok])[order]
            (line,) = ax.plot(m[order], s_f, lw=1.2, label=f"{c['label']} sigma/F")
            ab = np.abs(bias[ok] / F[ok])[order]
            ax.plot(
                m[order],
                np.where(ab > 0, ab, np.nan),
                lw=1.0,
                ls="--",
                color=line.get_color(),
                label=f"{c['label']} |bias|/F",
            )
            ys.append(s_f[s_f > 0])
        ax.set_yscale("log")
        if ys and any(len(y) for y in ys):
            allv = np.concatenate(ys)
            # the axis follows sigma/F; tiny biases near 0 would otherwise stretch it over decades
            ax.set_ylim(max(allv.min() / 3, 1e-4), min(allv.max() * 3, 1e3))
        ax.set_xlabel(f"{b} model [Vega mag]")
        ax.set_ylabel("fraction of the flux")
        ax.grid(True, which="major", color="0.92", lw=0.6)
        if k == 0:
            ax.legend(fontsize=6)
    fig.suptitle("toothpick noise model per density bin: sigma/F (solid), |bias|/F (dashed)", fontsize=10)
    return save(fig, url)


# ---------------------------------------------------------------- example stars
def plot_pdf1d(
    pdf1d: Mapping[str, Any],
    rows: Sequence[int],
    quantities: Sequence[str],
    url: str,
    stats: Mapping[str, np.ndarray] | None = None,
    truth: Mapping[str, np.ndarray] | None = None,
    star_labels: Sequence[str] | None = None,
    xlims: Mapping[str, tuple[float, float]] | None = None,
) -> str:
    """1-D posterior PDFs of example stars (rows of the pdf1d file), one column per quantity.

    Vertical lines: p16/p50/p84 from ``stats`` (same row order) and the truth.
    ``xlims``: axis range per quantity (default: the whole bin range).
    """
    nq, ns = len(quantities), len(rows)
    fig = Figure(layout="constrained", figsize=(2.9 * nq, 2.2 * ns))
    for i, e in enumerate(rows):
        for j, q in enumerate(quantities):
            ax = fig.add_subplot(ns, nq, i * nq + j + 1)
            cen = np.asarray(pdf1d["centres"][q])
            p = np.asarray(pdf1d["pdf"][q][e])
            ax.step(cen, p, where="mid", color="C0", lw=1.2)
            ax.fill_between(cen, p, step="mid", alpha=0.25, color="C0")
            if pdf1d.get("log", {}).get(q):
                ax.set_xscale("log")
                plain_log_ticks(ax, "x")
            if xlims and q in xlims:
                ax.set_xlim(*xlims[q])
            if stats is not None and f"{q}_p50" in stats:
                for s, ls in (("p16", ":"), ("p50", "-"), ("p84", ":")):
                    ax.axvline(float(stats[f"{q}_{s}"][e]), color="C1", ls=ls, lw=1)
            if truth is not None and q in truth:
                ax.axvline(float(truth[q][i]), color="C3", lw=1.5, label="truth")
            ax.set_yticks([])
            if i == ns - 1:
                ax.set_xlabel(label(q), fontsize=8)
            if j == 0:
                ax.set_ylabel(star_labels[i] if star_labels else f"star {e}", fontsize=7)
            ax.tick_params(labelsize=7)
    fig.suptitle("1-D posterior PDFs (orange: p16/p50/p84, red: truth)", fontsize=10)
    return save(fig, url)


def plot_sed_fits(
    stats: Mapping[str, np.ndarray],
    rows: Sequence[int],
    filters: Sequence[str],
    lamb: np.ndarray,
    url: str,
    star_labels: Sequence[str] | None = None,
    sigmas: Sequence[np.ndarray | None] | None = None,
) -> str:
    """Observed band fluxes and the fitted model SED (best model and p16-p84 band) of example stars.

    Uses the stats columns ``{FILTER}`` (observed flux) and
    ``symlog{FILTER}_wd_bias_{Best,p16,p50,p84}`` (model flux + noise bias);
    ``sigmas[i]``: per-band 1-sigma errors of star i (noise model at its best model) for error bars.
    """
    lamb = np.asarray(lamb, float)
    order = np.argsort(lamb)
    n = len(rows)
    nr, nc = _panel_grid(n, 3)
    fig = Figure(layout="constrained", figsize=(4.3 * nc, 3.3 * nr))
    lam_um = lamb[order] / 1e4
    for i, e in enumerate(rows):
        ax = fig.add_subplot(nr, nc, i + 1)
        obs = np.array([float(stats[f][e]) for f in filters])[order]
        mod = {}
        for s in ("Best", "p16", "p50", "p84"):
            cols = [f"symlog{f}_wd_bias_{s}" for f in filters]
            if all(c in stats for c in cols):
                mod[s] = inverse_symlog(np.array([float(stats[c][e]) for c in cols]))[order]
        scale = lam_um  # plot lambda * F_lambda: flatter, easier to read
        if "p16" in mod and "p84" in mod:
            ax.fill_between(
                lam_um, mod["p16"] * scale, mod["p84"] * scale, color="C0", alpha=0.25, label="model p16-p84"
            )
        if "Best" in mod:
            ax.plot(lam_um, mod["Best"] * scale, "-s", color="C0", ms=3, lw=1, label="best model")
        pos = obs > 0
        sig = None if not sigmas or sigmas[i] is None else np.asarray(sigmas[i], float)[order]
        yerr = None
        if sig is not None:
            # lower bar clipped above zero: the axis is logarithmic
            yerr = (np.minimum(sig, obs * 0.999)[pos] * scale[pos], sig[pos] * scale[pos])
        ax.errorbar(
            lam_um[pos],
            (obs * scale)[pos],
            yerr=yerr,
            fmt="o",
            color="C3",
            ms=5,
            capsize=2,
            label="observed" + (" (1 sigma)" if sig is not None else ""),
        )
        if (~pos).any():
            # a non-positive measured flux cannot go on a log axis: its 1-sigma limit, else the bottom
            floor = np.nanmin(np.concatenate([(obs * scale)[pos], *(m * scale for m in mod.values())])) * 0.6
            yv = sig[~pos] * scale[~pos] if sig is not None else np.full((~pos).sum(), floor)
            ax.plot(
                lam_um[~pos],
                yv,
                "v",
                mfc="none",
                mec="C3",
                ms=7,
                mew=1.4,
                label="not detected (flux <= 0)" + (": 1-sigma limit" if sig is not None else ""),
            )
        ax.set_xscale("log")
        ax.set_yscale("log")
        from matplotlib.ticker import NullFormatter, ScalarFormatter

        ax.set_xticks(
            [t for t in (0.2, 0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 3.0, 5.0) if lam_um.min() * 0.8 <= t <= lam_um.max() * 1.25]
        )
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("wavelength [micron]")
        ax.set_ylabel(r"$\lambda F_\lambda$ [micron erg s$^{-1}$ cm$^{-2}$ A$^{-1}$]", fontsize=8)
        ax.set_title(star_labels[i] if star_labels else f"star {e}", fontsize=8)
        ax.legend(fontsize=6)
    fig.suptitle("SED fits of example stars", fontsize=10)
    return save(fig, url)


# ---------------------------------------------------------------- recovery
def plot_recovery(
    stats: Mapping[str, np.ndarray],
    truth: Mapping[str, np.ndarray],
    quantities: Sequence[str],
    url: str,
    bins: Mapping[str, Any] | None = None,
) -> tuple[str, dict[str, dict[str, float]]]:
    """Fitted (p50 with p16-p84 bars) vs true values, and (fit - truth)/sigma histograms.

    ``stats`` and ``truth`` must be row-aligned (joined on star_id).  ``bins``:
    the PDF bins ({"centres", "edges", "log"} per quantity, as the PDF readers
    return them), so that grid-valued truths are spread over their cells
    (beastflow.report.recovery).  Returns (url, {quantity: recovery_metrics}).
    """
    nq = len(quantities)
    fig = Figure(layout="constrained", figsize=(4.0 * nq, 7.2))
    metrics: dict[str, dict[str, float]] = {}
    for j, q in enumerate(quantities):
        t = np.asarray(truth[q], float)
        p16, p50, p84 = (np.asarray(stats[f"{q}_{s}"], float) for s in ("p16", "p50", "p84"))
        if bins is not None and q in bins["centres"]:
            met = recovery_metrics(p16, p50, p84, t, bins["centres"][q], bins["edges"][q], bins["log"][q], label=q)
        else:
            met = recovery_metrics(p16, p50, p84, t)
        metrics[q] = met
        ax = fig.add_subplot(2, nq, j + 1)
        ax.errorbar(
            t,
            p50,
            yerr=[np.clip(p50 - p16, 0, None), np.clip(p84 - p50, 0, None)],
            fmt="o",
            ms=2,
            elinewidth=0.4,
            alpha=0.5,
            color="C0",
        )
        lo, hi = np.nanmin(np.r_[t, p16]), np.nanmax(np.r_[t, p84])
        ax.plot([lo, hi], [lo, hi], color="C3", lw=1)
        if q in ("M_ini", "M_act", "radius"):
            ax.set_xscale("log")
            ax.set_yscale("log")
        ax.set_xlabel(f"true {label(q)}")
        ax.set_ylabel(f"fitted {label(q)}")
        ax.set_title(f"{q}: {100 * met['coverage_68']:.0f}% inside p16-p84", fontsize=9)
        ax2 = fig.add_subplot(2, nq, nq + j + 1)
        half = np.where(p50 < t, p84 - p50, p50 - p16)
        half = np.where(half > 0, half, 0.5 * (p84 - p16))
        z = np.where(half > 0, (p50 - t) / np.where(half > 0, half, 1), np.nan)
        z = z[np.isfinite(z)]
        ax2.hist(np.clip(z, -5, 5), bins=np.linspace(-5, 5, 41).tolist(), color="C0", alpha=0.7, density=True)
        xx = np.linspace(-5, 5, 200)
        ax2.plot(xx, np.exp(-0.5 * xx**2) / np.sqrt(2 * np.pi), color="C3", lw=1, label="N(0,1)")
        ax2.axvline(met["median_z"], color="k", lw=1)
        ax2.set_xlabel(f"(fit - truth) / sigma  [{q}]")
        ax2.set_title(f"median {met['median_z']:+.2f}", fontsize=9)
        if j == 0:
            ax2.legend(fontsize=7)
    fig.suptitle(f"parameter recovery ({metrics[quantities[0]]['n']} stars)", fontsize=10)
    return save(fig, url), metrics


# ---------------------------------------------------------------- timings
def plot_timings(stage_seconds: Mapping[str, float], url: str, stage_units: Mapping[str, int] | None = None) -> str:
    """Horizontal bars: compute seconds per stage (sum over its units)."""
    names = list(stage_seconds)
    secs = np.array([float(stage_seconds[n]) for n in names])
    fig = Figure(layout="constrained", figsize=(6.5, 0.45 * len(names) + 1.2))
    ax = fig.add_subplot(1, 1, 1)
    y = np.arange(len(names))
    ax.barh(y, secs, color="C0")
    ax.set_yticks(y)
    ax.set_yticklabels(
        [f"{n} ({stage_units[n]})" if stage_units and n in stage_units else n for n in names], fontsize=8
    )
    ax.invert_yaxis()
    for yi, s in zip(y, secs):
        ax.text(s, float(yi), f" {s:.1f} s", va="center", fontsize=7)
    ax.set_xlabel("seconds (sum over units)")
    ax.set_xlim(0, max(1.0, secs.max() * 1.25) if len(secs) else 1.0)
    ax.set_title(f"time per stage, total {secs.sum():.1f} s", fontsize=9)
    return save(fig, url)
