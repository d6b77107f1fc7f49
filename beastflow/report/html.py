"""An HTML report of a run: finds the artifacts below an output URL, plots them, links the plots.

``make_report(output_url)`` works on any run's output folder (the demo's or a
real field's): every section is drawn only when its artifacts exist, and a
section whose plot fails is reported in the page instead of aborting the whole
report.  Output: ``{output}/report/index.html`` plus one PNG per plot.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import html
import logging
import posixpath
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from beastflow import run_records, storage
from beastflow.filters import short_name
from beastflow.report import field_plots, plots, star_plots
from beastflow.report.artifacts import REPORT_DIR, Artifacts, find_artifacts, read_table, stats_filters, wavelengths
from beastflow.report.field import stacked_pdf1d, stacked_pdf2d, star_noise, tile_index, tile_medians
from beastflow.report.star import STAR_QUANTITIES, best_model_and_noise, make_star_pages, varying
from beastflow.report.star import field_priors as star_field_priors
from beastflow.report.star_plots import support_range

log = logging.getLogger(__name__)

#: quantities shown for example stars and recovery, when the run has them
PDF_QUANTITIES = ("Av", "logA", "M_ini", "Rv", "Z")
RECOVERY_QUANTITIES = ("Av", "logA", "M_ini")


# ------------------------------------------------------------------ loaders
def _take(table: dict[str, np.ndarray], idx: np.ndarray) -> dict[str, np.ndarray]:
    return {k: np.asarray(v)[idx] for k, v in table.items()}


def _join_on_star_id(left: dict[str, np.ndarray], right: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (into left, into right) of the stars present in both, in left's order."""
    if "star_id" not in left or "star_id" not in right:
        raise KeyError("both tables need a star_id column to be joined")
    lid = np.asarray(left["star_id"]).astype(np.int64)
    rid = np.asarray(right["star_id"]).astype(np.int64)
    order = np.argsort(rid, kind="stable")
    pos = np.searchsorted(rid[order], lid)
    pos = np.clip(pos, 0, len(rid) - 1)
    hit = rid[order][pos] == lid
    return np.flatnonzero(hit), order[pos[hit]]


def _example_rows(stats: dict[str, np.ndarray], ref: str, n: int = 3) -> np.ndarray:
    """Bright, middle and faint example stars (by observed flux in ``ref``)."""
    f = np.asarray(stats[ref], float)
    order = np.argsort(-np.where(np.isfinite(f), f, -np.inf))
    if len(order) <= n:
        return order
    return order[np.linspace(0, len(order) - 1, n + 2).astype(int)[1:-1]]


# ------------------------------------------------------------------ report
@dataclasses.dataclass
class Section:
    title: str
    images: list[str]
    text: str = ""
    error: str = ""
    #: (label, page name) of linked pages (the example stars' own pages)
    links: list[tuple[str, str]] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Report:
    index: str
    images: list[str]
    sections: list[Section]
    recovery: dict[str, dict[str, float]]
    artifacts: Artifacts


def make_report(
    output_url: str, project: str | None = None, truth_url: str | None = None, report_url: str | None = None
) -> Report:
    """Plot a finished run's artifacts and write ``report/index.html`` linking the PNGs."""
    run = _Run.load(output_url, project, truth_url, report_url)
    sections: list[Section] = []
    for title, applies, build, text in SECTIONS:
        if applies(run):
            sections.extend(_draw(run, title, build, text))
    facts = _facts(run.art, run.stats, run.shorts)
    index = storage.join(run.out, "index.html")
    storage.write_bytes(index, render_html(run.art, sections, run.recovery, facts).encode())
    images = [i for s in sections for i in s.images]
    return Report(index=index, images=images, sections=sections, recovery=run.recovery, artifacts=run.art)


@dataclasses.dataclass
class _Run:
    """What every section builder reads: the run's artifacts and tables, read once."""

    art: Artifacts
    out: str
    stats: dict[str, np.ndarray] | None
    filters: list[str]
    vega: np.ndarray
    shorts: list[str]
    truth: dict[str, np.ndarray] | None
    #: per-quantity recovery metrics, filled by the recovery section
    recovery: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)
    _prior: dict[str, np.ndarray] | None = None
    _stack1: dict[str, Any] | None = None

    @classmethod
    def load(cls, output_url: str, project: str | None, truth_url: str | None, report_url: str | None) -> _Run:
        from beastflow.physics.vega import vega_band_fluxes

        art = find_artifacts(output_url, project, truth_url)
        out = report_url or storage.join(output_url, REPORT_DIR)
        storage.makedirs(out)
        stats = read_table(art.stats) if art.stats else None
        filters = stats_filters(stats) if stats is not None else []
        return cls(
            art=art,
            out=out,
            stats=stats,
            filters=filters,
            vega=vega_band_fluxes(filters) if filters else np.array([]),
            shorts=[short_name(f) for f in filters],
            truth=read_table(art.truth) if art.truth and storage.exists(art.truth) else None,
        )

    def img(self, name: str) -> str:
        return storage.join(self.out, name)

    def field_priors(self, pdf: dict[str, Any]) -> dict[str, np.ndarray]:
        """The grid prior on the PDF bins, computed once per report (it reads the SED grid's columns)."""
        if self._prior is None:
            try:
                self._prior = star_field_priors(
                    self.art.sed_grids, pdf, [q for q in STAR_QUANTITIES if q in pdf["quantities"]]
                )
            except Exception as exc:  # noqa: BLE001 - the plots go on without the prior
                log.warning("grid prior not available: %s", exc)
                self._prior = {}
        return self._prior

    def stack1(self) -> dict[str, Any]:
        """The stacked 1-D posteriors of the field, read once."""

        if self.art.pdf1d is None:
            raise FileNotFoundError(f"{self.art.output}: no merged 1-D PDF file ({self.art.project}_pdf1d.hd5)")
        if self._stack1 is None:
            self._stack1 = stacked_pdf1d(self.art.pdf1d)
        return self._stack1

    def shown_quantities(self, stack: dict[str, Any]) -> list[str]:

        return varying(stack, self.field_priors(stack), [q for q in STAR_QUANTITIES if q in stack["quantities"]])

    def has_stars(self) -> bool:
        return self.stats is not None and bool(self.filters) and len(self.stats[self.filters[0]]) > 0

    def example_rows(self) -> np.ndarray:
        """Bright, middle and faint example stars (by flux in the CMD's red band)."""
        assert self.stats is not None
        return _example_rows(self.stats, self.filters[self.shorts.index(_cmd_bands(self.shorts)[1])], 3)

    def star_labels(self, rows: np.ndarray) -> list[str]:
        assert self.stats is not None
        return [f"star_id {int(self.stats['star_id'][e])}" if "star_id" in self.stats else f"row {e}" for e in rows]

    def pdf2d_url(self) -> str:
        return storage.join(self.art.output, f"{self.art.project}_pdf2d.hd5")


def _draw(run: _Run, title: str, build: Callable[[_Run], Any], text: str) -> list[Section]:
    """One section; a builder returns image URLs, or whole Sections (pages of their own).
    A failing builder becomes a section that says why, so one bad artifact never hides the rest."""
    try:
        made = build(run)
    except Exception as exc:  # noqa: BLE001 - reported in the page
        log.warning("report section %r failed: %s", title, exc)
        return [Section(title, [], text, error=f"{type(exc).__name__}: {exc}")]
    if made and isinstance(made[0], Section):
        return list(made)
    return [Section(title, [i for i in made if i], text)] if made else []


# ------------------------------------------------------------------ sections, in page order
# each: (title, applies(run), build(run) -> image URLs, caption)


def _cmd(run: _Run) -> list[str]:
    stats, shorts, vega, filters = run.stats, run.shorts, run.vega, run.filters
    assert stats is not None
    blue, red = _cmd_bands(shorts)
    kb, kr = shorts.index(blue), shorts.index(red)
    mb = plots._mags(np.asarray(stats[filters[kb]], float), vega[kb])
    mr = plots._mags(np.asarray(stats[filters[kr]], float), vega[kr])
    qs = [q for q in ("Av", "logA", "M_ini") if f"{q}_p50" in stats]
    vals = [np.log10(stats[f"{q}_p50"]) if q == "M_ini" else stats[f"{q}_p50"] for q in qs]
    names = ["log M_ini [M_sun] (p50)" if q == "M_ini" else f"{q} (p50)" for q in qs]
    return [
        plots.plot_cmd(mb, mr, vals or [None], names or [""], blue, red, run.img("cmd.png"), title="fitted catalog")
    ]


def _density_map(run: _Run) -> list[str]:
    assert run.art.density_map is not None
    tiles = read_table(run.art.density_map)
    ra = dec = None
    if run.art.catalog:
        cat = read_table(run.art.catalog)
        ra, dec = cat.get("RA"), cat.get("DEC")
    return [plots.plot_density_map(tiles, run.img("density_map.png"), ra, dec)]


def _asts(run: _Run) -> list[str]:
    art = run.art
    assert art.asts is not None
    if art.asts_per_bin:
        parts = {b: read_table(u) for b, u in sorted(art.asts_per_bin.items())}
        sets = [set(p) for p in parts.values()]
        keys = sorted(sets[0].intersection(*sets[1:]))  # the columns every bin has
        merged = {k: np.concatenate([np.asarray(p[k]) for p in parts.values()]) for k in keys}
        groups = np.concatenate([np.full(len(next(iter(p.values()))), b) for b, p in parts.items()])
    else:
        merged, groups = read_table(art.asts), None
    bands = [b for b in run.shorts if f"{b}_IN" in merged and f"{b}_RATE" in merged]
    return [plots.plot_ast_completeness(merged, bands, run.img("ast_completeness.png"), groups)]


def _noise(run: _Run) -> list[str]:
    art = run.art
    curves = []
    for u in art.noise_models:
        curves.append(_noise_curve(u, art))
    ast_tab = read_table(art.asts) if art.asts else None
    return [plots.plot_noise_model(curves, run.filters, run.vega, run.img("noise_model.png"), ast_tab)]


def _example_pdfs(run: _Run) -> list[str]:
    from beastflow.fit.outputs import read_pdf1d, read_star_pdf1d

    stats, truth, art = run.stats, run.truth, run.art
    assert stats is not None and art.pdf1d is not None
    rows = run.example_rows()
    if "star_id" in stats:  # only the example stars' rows are read
        pdf = read_star_pdf1d(art.pdf1d, [stats["star_id"][e] for e in rows])
        prow = np.arange(len(rows))
    else:
        pdf, prow = read_pdf1d(art.pdf1d), rows
    prior = run.field_priors(pdf)
    qs = varying(pdf, prior, [q for q in PDF_QUANTITIES if q in pdf["quantities"]])
    tr = None
    if truth is not None and "star_id" in stats:
        li, ri = _join_on_star_id({"star_id": np.asarray(stats["star_id"])[rows]}, truth)
        if len(li) == len(rows):
            tr = {q: np.asarray(truth[q])[ri] for q in qs if q in truth}
    sub_stats = {k: np.asarray(v)[rows] for k, v in stats.items() if k.endswith(("_p16", "_p50", "_p84"))}
    sub_pdf = dict(pdf)
    sub_pdf["pdf"] = {q: np.asarray(pdf["pdf"][q])[prow] for q in qs}
    xl = {q: support_range(pdf["centres"][q], *sub_pdf["pdf"][q], log=bool(pdf["log"][q]), pad=0.3) for q in qs}
    return [
        plots.plot_pdf1d(
            sub_pdf,
            list(range(len(rows))),
            qs,
            run.img("pdf1d_examples.png"),
            sub_stats,
            tr,
            run.star_labels(rows),
            xlims=xl,
        )
    ]


def _star_pages(run: _Run) -> list[Section]:

    stats = run.stats
    assert stats is not None
    pages = make_star_pages(
        run.art.output,
        [stats["star_id"][e] for e in run.example_rows()],
        art=run.art,
        report_url=run.out,
        truth=run.truth,
        priors=run._prior,
    )
    return [
        Section(
            "Example stars, one page each",
            [p_ for pg in pages for p_ in pg.images],
            "Each page: the SED fit with residuals in sigma, the 1-D PDFs over the "
            "prior and the 2-D PDFs (beastflow star OUTPUT STAR_ID for any other star).",
            links=[(f"star_id {pg.star_id}", posixpath.basename(pg.html)) for pg in pages],
        )
    ]


def _example_seds(run: _Run) -> list[str]:

    stats, filters = run.stats, run.filters
    assert stats is not None
    rows = run.example_rows()
    lamb = wavelengths(run.art, filters)
    sig = []
    for e in rows:
        bm = best_model_and_noise(run.art, {c: np.asarray(v)[e] for c, v in stats.items()}, filters)
        sig.append(None if bm is None else bm[1])
    return [
        plots.plot_sed_fits(
            stats, rows.tolist(), filters, lamb, run.img("sed_examples.png"), run.star_labels(rows), sig
        )
    ]


def _recovery(run: _Run) -> list[str]:
    stats, truth = run.stats, run.truth
    assert stats is not None and truth is not None
    li, ri = _join_on_star_id(stats, truth)
    if len(li) == 0:
        raise ValueError("no fitted star has a truth entry (star_id)")
    qs = [q for q in RECOVERY_QUANTITIES if q in truth and f"{q}_p50" in stats]
    # the PDF bins (not the PDFs): grid-valued truths are compared over their cells
    from beastflow.fit.outputs import read_star_pdf1d

    bins = read_star_pdf1d(run.art.pdf1d, [], qs) if run.art.pdf1d else None
    url, met = plots.plot_recovery(_take(stats, li), _take(truth, ri), qs, run.img("recovery.png"), bins)
    run.recovery.update(met)
    return [url]


def _prior_vs_posterior(run: _Run) -> list[str]:

    st = run.stack1()
    return [
        field_plots.plot_prior_vs_posterior(
            st, run.field_priors(st), run.shown_quantities(st), run.img("prior_vs_posterior.png")
        )
    ]


def _stacked_corner(run: _Run) -> list[str]:

    st = run.stack1()
    st2 = stacked_pdf2d(run.pdf2d_url())
    qs = [q for q in star_plots.corner_quantities(st2["pairs"]) if q in run.shown_quantities(st)]
    if len(qs) < 2:
        return []
    return [
        star_plots.plot_corner(
            st2,
            0,
            st,
            0,
            run.img("stacked_corner.png"),
            qs,
            run.field_priors(st),
            f"stacked 2-D posteriors of {st['n_stars']} stars",
        )
    ]


def _tile_maps(run: _Run) -> list[str]:

    stats = run.stats
    assert stats is not None and run.art.density_map is not None
    tiles = read_table(run.art.density_map)
    t = tile_index(tiles, stats["RA"], stats["DEC"])
    out_maps, cnt = [], None
    for q in ("Av_p50", "logA_p50", "chi2min"):
        if q in stats:
            med, cnt = tile_medians(t, stats[q], len(tiles["value"]))
            out_maps.append((q.replace("_p50", ""), med))
    if not out_maps or cnt is None:
        return []
    return [field_plots.plot_tile_maps(tiles, out_maps, cnt, run.img("tile_maps.png"))]


def _chi2(run: _Run) -> list[str]:

    stats, filters = run.stats, run.filters
    assert stats is not None
    red = _cmd_bands(run.shorts)[1]
    k = run.shorts.index(red)
    mag = plots._mags(np.asarray(stats[filters[k]], float), run.vega[k])
    nb = np.asarray(stats.get("n_bands_used", np.full(len(mag), len(filters))))
    return [field_plots.plot_chi2_vs_mag(mag, stats["chi2min"], nb, red, run.img("chi2_vs_mag.png"))]


def _recovery_by_snr(run: _Run) -> list[str]:

    stats, truth, filters = run.stats, run.truth, run.filters
    assert stats is not None and truth is not None
    li, ri = _join_on_star_id(stats, truth)
    if len(li) == 0:
        return []
    st = _take(stats, li)
    sig = star_noise(run.art, st, filters)
    if sig is None:  # S/N unknown without the noise models: nothing to split by
        log.info("recovery by S/N skipped: no noise model of the fitted stars in %s", run.art.output)
        return []
    red = _cmd_bands(run.shorts)[1]
    k = run.shorts.index(red)
    snr = np.asarray(st[filters[k]], float) / sig[:, k]
    qs = [q for q in RECOVERY_QUANTITIES if q in truth and f"{q}_p50" in stats]
    url, _ = field_plots.plot_recovery_by_snr(st, _take(truth, ri), snr, red, qs, run.img("recovery_by_snr.png"))
    return [url]


def _timings(run: _Run) -> list[str]:
    secs, units = run_records.run_timings(run.art.output)
    if not secs:
        return []
    return [plots.plot_timings(secs, run.img("timings.png"), units)]


SECTIONS: list[tuple[str, Callable[[_Run], bool], Callable[[_Run], Any], str]] = [
    (
        "Colour-magnitude diagram, coloured by fitted parameters",
        lambda r: r.stats is not None and bool(r.filters),
        _cmd,
        "Observed photometry of every fitted star; colour = posterior median.",
    ),
    (
        "Source-density map",
        lambda r: bool(r.art.density_map),
        _density_map,
        "Tiles of the density map with the catalogue positions.",
    ),
    (
        "Artificial-star completeness",
        lambda r: bool(r.art.asts) and bool(r.filters),
        _asts,
        "Fraction of artificial stars recovered (non-zero flux, not cut) per band and density bin.",
    ),
    (
        "Noise model",
        lambda r: bool(r.art.noise_models) and bool(r.filters),
        _noise,
        "Toothpick noise model per density bin: fractional error (solid) and bias (dashed) against "
        "model magnitude; grey points: recovered artificial stars.",
    ),
    (
        "1-D posterior PDFs of example stars",
        lambda r: r.has_stars() and bool(r.art.pdf1d),
        _example_pdfs,
        "A bright, a middle and a faint star; quantities the grid does not vary are left out.",
    ),
    (
        "Example stars, one page each",
        lambda r: r.has_stars() and r.stats is not None and "star_id" in r.stats and bool(r.art.pdf1d),
        _star_pages,
        "",
    ),
    (
        "SED fits of example stars",
        _Run.has_stars,
        _example_seds,
        "Observed fluxes and the fitted model fluxes (including the noise-model bias).",
    ),
    (
        "Parameter recovery (fit vs truth)",
        lambda r: r.stats is not None and r.truth is not None,
        _recovery,
        "Posterior median and p16-p84 against the true value; histogram of (fit - truth) / sigma.",
    ),
    # ---- the field as a whole
    (
        "Prior vs stacked posterior",
        lambda r: bool(r.art.pdf1d),
        _prior_vs_posterior,
        "Grey: the grid prior (model weights) on the PDF bins; blue: the sum of every star's posterior. "
        "Where the two agree the data say little about that quantity; the prior also holds the stars "
        "too faint to be detected, so masses and luminosities differ by construction.",
    ),
    (
        "Stacked 2-D posteriors (corner plot)",
        lambda r: bool(r.art.pdf1d) and storage.exists(r.pdf2d_url()),
        _stacked_corner,
        "Sum over stars of the 2-D PDFs the fit stores (fit.pdf2d_pairs); diagonal: stacked 1-D PDFs over the prior.",
    ),
    (
        "Maps of A(V), age and chi2min",
        lambda r: r.stats is not None and bool(r.art.density_map) and "RA" in r.stats and "DEC" in r.stats,
        _tile_maps,
        "Median posterior A(V), log age and chi2min of the stars in each source-density tile.",
    ),
    (
        "chi2min against magnitude",
        lambda r: r.stats is not None and bool(r.filters) and "chi2min" in r.stats,
        _chi2,
        "chi2min of each star's best model, its running median, and the quantiles of a chi2 distribution "
        "with as many degrees of freedom as bands (what a perfect model and noise model would give).",
    ),
    (
        "Parameter recovery by S/N",
        lambda r: r.stats is not None and r.truth is not None and bool(r.filters),
        _recovery_by_snr,
        "The recovery plot split by the S/N of each star in the red band: at low S/N the posteriors of "
        "poorly constrained quantities (e.g. old ages) are set by the prior, and their points go flat.",
    ),
    (
        "Time per stage",
        lambda r: bool(run_records.record_urls(r.art.output)),
        _timings,
        "Compute seconds of every stage (sum over its units, from the cache records).",
    ),
]


def _facts(art: Artifacts, stats: dict[str, np.ndarray] | None, shorts: Sequence[str]) -> dict[str, str]:
    """A few numbers describing the run, for the top of the page (best effort)."""
    facts: dict[str, str] = {}
    if stats is not None:
        facts["fitted stars"] = str(len(next(iter(stats.values()))) if stats else 0)
    if shorts:
        facts["bands"] = ", ".join(shorts)
    try:
        from beastflow.io.sed_grid import SEDGrid

        if art.sed_grids:
            g = [SEDGrid(u) for u in art.sed_grids]
            facts["SED grid models"] = f"{sum(len(x) for x in g):,}" + (f" in {len(g)} subgrids" if len(g) > 1 else "")
            facts["stellar library"] = g[0].stellar_library or "?"
        if art.asts_per_bin:
            facts["density bins"] = ", ".join(str(b) for b in sorted(art.asts_per_bin))
        facts.update(run_records.read_prelude(art.output).facts)
    except Exception as exc:  # facts are decoration: never fail the report for them
        log.debug("report facts incomplete: %s", exc)
    return facts


def _cmd_bands(shorts: Sequence[str]) -> tuple[str, str]:
    """A blue and a red optical band for the CMD (F475W/F814W when present)."""
    for b, r in (("F475W", "F814W"), ("F555W", "F814W"), ("F606W", "F814W"), ("F336W", "F814W")):
        if b in shorts and r in shorts:
            return b, r
    if len(shorts) >= 2:
        return shorts[0], shorts[-1]
    return shorts[0], shorts[0]


def _noise_curve(url: str, art: Artifacts, max_rows: int = 20_000) -> dict[str, Any]:
    from beastflow.io.hdf5_arrays import decode_attr, open_h5
    from beastflow.io.sed_grid import SEDGrid

    with open_h5(url) as h5:
        n = h5["error"].shape[0]
        grid_url = decode_attr(h5.attrs.get("sed_grid", ""))
    if grid_url:  # recorded relative to the output root (the noise model's folder)
        grid_url = storage.resolve(grid_url, url.rsplit("/", 1)[0])
    if not grid_url or not storage.exists(grid_url):
        m = re.search(r"_gridsub(\d+)_", posixpath.basename(url))
        cands = [g for g in art.sed_grids if (f"gridsub{m.group(1)}" in g if m else True)]
        if not cands:
            raise FileNotFoundError(f"{url}: its SED grid is not in the output folder")
        grid_url = cands[0]
    rng = np.random.default_rng(0)
    rows = np.sort(rng.choice(n, size=min(n, max_rows), replace=False))
    with open_h5(url) as h5:
        err, bias = h5["error"][...][rows], h5["bias"][...][rows]
        comp = h5["completeness"][...][rows]
    seds = SEDGrid(grid_url).read(columns=[]).seds[rows]
    m = re.search(r"_bin(\d+)", posixpath.basename(url))
    return {
        "label": f"bin {m.group(1)}" if m else posixpath.basename(url),
        "seds": seds,
        "error": err,
        "bias": bias,
        "completeness": comp,
    }


def render_html(
    art: Artifacts,
    sections: Sequence[Section],
    recovery: dict[str, dict[str, float]],
    facts: dict[str, str] | None = None,
) -> str:
    e = html.escape
    now = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>beastflow report: {e(art.project)}</title>",
        "<style>body{font-family:sans-serif;max-width:1200px;margin:2em auto;color:#222}"
        "img{max-width:100%;border:1px solid #ddd;margin:.5em 0}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.2em .6em}"
        ".err{color:#a00}</style></head><body>",
        f"<h1>beastflow report: {e(art.project)}</h1>",
        f"<p>Output: <code>{e(art.output)}</code> &middot; generated {e(now)}</p>",
        "<ul>" + "".join(f"<li><a href='#s{i}'>{e(s.title)}</a></li>" for i, s in enumerate(sections)) + "</ul>",
    ]
    if facts:
        parts.append(
            "<h2>Run</h2><table>"
            + "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in facts.items())
            + "</table>"
        )
    if recovery:
        parts.append(
            "<h2>Recovery summary</h2><table><tr><th>quantity</th><th>stars</th>"
            "<th>median (fit-truth)/&sigma;</th><th>truth inside p16-p84</th><th>median |fit-truth|</th></tr>"
        )
        for q, m in recovery.items():
            cells = " (truths spread over their grid cells)" if m.get("cells") else ""
            parts.append(
                f"<tr><td>{e(q)}</td><td>{m['n']}</td><td>{m['median_z']:+.2f}</td>"
                f"<td>{100 * m['coverage_68']:.1f}%{cells}</td><td>{m['median_abs_error']:.3g}</td></tr>"
            )
        parts.append(
            "</table><p>A calibrated fit has median (fit-truth)/&sigma; near 0 and 68% of the truths "
            "inside p16-p84 (binomial error sqrt(0.68*0.32/stars)); docs/demo.md, Calibration.</p>"
        )
    for i, s in enumerate(sections):
        parts.append(f"<h2 id='s{i}'>{e(s.title)}</h2>")
        if s.text:
            parts.append(f"<p>{e(s.text)}</p>")
        if s.error:
            parts.append(f"<p class='err'>could not be drawn: {e(s.error)}</p>")
        if s.links:
            parts.append(
                "<ul>" + "".join(f"<li><a href='{e(href)}'>{e(text)}</a></li>" for text, href in s.links) + "</ul>"
            )
            continue  # the pages show their own plots
        for im in s.images:
            name = posixpath.basename(im)
            parts.append(f"<a href='{e(name)}'><img src='{e(name)}' alt='{e(s.title)}'></a>")
    found = {k: v for k, v in dataclasses.asdict(art).items() if k not in ("output", "project") and v}
    parts.append("<h2>Artifacts used</h2><ul>")
    for k, v in found.items():
        vals = v.values() if isinstance(v, dict) else (v if isinstance(v, list) else [v])
        parts.append(
            f"<li>{e(k)}: " + ", ".join(f"<code>{e(posixpath.basename(str(x)))}</code>" for x in vals) + "</li>"
        )
    parts.append("</ul></body></html>")
    return "\n".join(parts)
