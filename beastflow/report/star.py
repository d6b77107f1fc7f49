"""One star's page: ``report/star_<id>.html`` with its SED fit, 1-D PDFs over the prior and corner plot.

``make_star_pages(output_url, [star_id, ...])`` reads only the rows of the
requested stars from the stats (Parquet row filter) and the PDF files
(``read_star_pdf1d`` / ``read_star_pdf2d``).  The observed errors and the
best-fit model come from the run's own artifacts: the noise model of the
star's density bin and subgrid, at the row of its most probable model
(``Pmax_gid``), so the residuals are in the sigma the fit used.
"""

from __future__ import annotations

import dataclasses
import html
import logging
import posixpath
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from beastflow import storage
from beastflow.filters import short_name
from beastflow.report import star_plots
from beastflow.report.artifacts import REPORT_DIR, find_artifacts, stats_filters, wavelengths
from beastflow.report.plots import LABELS, inverse_symlog

log = logging.getLogger(__name__)

#: quantities of a star page, in this order, when the run has them (and they vary over the grid)
STAR_QUANTITIES = ("Av", "Rv", "f_A", "logA", "M_ini", "M_act", "Z", "distance", "logL", "logT", "logg", "radius")


@dataclasses.dataclass
class StarPage:
    star_id: Any
    html: str
    images: list[str]


def page_name(star_id: Any) -> str:
    """File name of a star's page (ids are sanitised for the file system)."""
    return "star_" + re.sub(r"[^A-Za-z0-9_.-]", "_", str(star_id)) + ".html"


def _stats_rows(url: str, star_ids: Sequence[Any]) -> dict[str, np.ndarray]:
    """The stats rows of ``star_ids`` (in that order) without loading the other stars."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    with storage.open_url(url, "rb") as fh:
        pf = pq.ParquetFile(fh)
        typ = pf.schema_arrow.field("star_id").type
        ids = [int(s) for s in star_ids] if pa.types.is_integer(typ) else [str(s) for s in star_ids]
        tab = pq.read_table(fh, filters=[("star_id", "in", ids)])
    got = tab.column("star_id").to_pylist()
    missing = [s for s in ids if s not in got]
    if missing:
        raise KeyError(f"{url}: no star with star_id {', '.join(map(str, missing))}")
    tab = tab.take(pa.array([got.index(s) for s in ids]))
    out = {}
    for c in tab.column_names:
        col = tab.column(c)
        numeric = pa.types.is_floating(col.type) or pa.types.is_integer(col.type)
        out[c] = col.to_numpy() if numeric else np.asarray(col.to_pylist(), dtype=object)
    return out


def field_priors(sed_grids: Sequence[str], pdf1d: dict[str, Any], quantities: Sequence[str]) -> dict[str, np.ndarray]:
    """The grid prior (model ``weight``: grid spacing x priors) as probability mass on the PDF bins."""
    from beastflow.io.sed_grid import SEDGrid

    full = [u for u in sed_grids if re.search(r"_seds\.grid\.hd5$", u)]
    grids = [SEDGrid(u) for u in (full or sed_grids)]
    out = {q: np.zeros(len(pdf1d["centres"][q])) for q in quantities}
    for g in grids:
        cols = [q for q in quantities if q in g.columns]
        if "weight" not in g.columns or not cols:
            continue
        for blk in g.iter_chunks(columns=cols + ["weight"], seds=False):
            w = blk.columns["weight"]
            for q in cols:
                h, _ = np.histogram(blk.columns[q], bins=pdf1d["edges"][q], weights=w)
                out[q] += h
    log.debug("grid prior on the PDF bins from %s: %s", [g.url for g in grids], sorted(out))
    return {q: v for q, v in out.items() if v.sum() > 0}


def varying(pdf1d: dict[str, Any], priors: dict[str, np.ndarray], quantities: Sequence[str]) -> list[str]:
    """Quantities with more than one populated bin (a one-metallicity grid has nothing to show for Z)."""
    out = []
    for q in quantities:
        if q not in pdf1d["quantities"]:
            continue
        ref = priors.get(q)
        if ref is None:  # no prior for it: what the stars' PDFs populate (a stack is already 1-D)
            ref = np.asarray(pdf1d["pdf"][q])
            ref = ref.sum(axis=0) if ref.ndim == 2 else ref
        if len(pdf1d["centres"][q]) > 1 and np.count_nonzero(ref) > 1:
            out.append(q)
    return out


def grid_offsets(art) -> dict[int, tuple[int, str]]:
    """subgrid -> (offset of its rows in the full-grid numbering, its SED grid URL)."""
    url = storage.join(art.output, f"{art.project}_grid_info.json")
    if storage.exists(url):
        info = storage.read_json(url)
        return {g: (int(s["offset"]), s["url"]) for g, s in enumerate(info.get("subgrids", []))}
    full = [u for u in art.sed_grids if u.endswith("_seds.grid.hd5")]
    return {0: (0, full[0])} if full else {}


def best_model_and_noise(art, row: dict[str, Any], filters: Sequence[str]) -> tuple[np.ndarray, np.ndarray] | None:
    """(model flux + noise bias, noise sigma) per band at the star's most probable model, or None
    when the noise model or grid is not in the output folder."""
    from beastflow.io.hdf5_arrays import open_h5
    from beastflow.io.sed_grid import SEDGrid

    g = int(row.get("best_gridsub", -1))
    g = max(g, 0)
    b = row.get("sd_bin")
    if b is None and row.get("reorder_tag"):
        m = re.match(r"bin(\d+)_", str(row["reorder_tag"]))
        b = int(m.group(1)) if m else None
    offsets = grid_offsets(art)
    if g not in offsets or "Pmax_gid" not in row:
        return None
    off, grid_url = offsets[g]
    names = {f"{art.project}_bin{int(b)}_gridsub{g}_noisemodel.hd5"} if b is not None else set()
    if b is not None and g == 0:  # a single full grid may be named without the subgrid
        names.add(f"{art.project}_bin{int(b)}_noisemodel.hd5")
    cands = [u for u in art.noise_models if posixpath.basename(u) in names]
    if not cands or not storage.exists(grid_url):
        return None
    r = int(row["Pmax_gid"]) - off
    grid = SEDGrid(grid_url)
    if list(grid.filters) != list(filters) or not 0 <= r < len(grid):
        return None
    sed = grid.read(rows=np.array([r]), columns=[]).seds[0]
    with open_h5(cands[0]) as h5:
        err, bias = np.asarray(h5["error"][r]), np.asarray(h5["bias"][r])
    log.debug("star %s: best model row %d of %s, noise from %s", row.get("star_id"), r, grid_url, cands[0])
    return sed + bias, np.where(err > 0, err, np.nan)


def make_star_pages(
    output_url: str,
    star_ids: Sequence[Any],
    project: str | None = None,
    report_url: str | None = None,
    art=None,
    priors: dict[str, np.ndarray] | None = None,
    truth: dict[str, np.ndarray] | None = None,
) -> list[StarPage]:
    """Write ``star_<id>.html`` (+ PNGs) for each star into the report folder."""
    from beastflow.fit.outputs import read_star_pdf1d, read_star_pdf2d

    art = art or find_artifacts(output_url, project)
    if not art.stats or not art.pdf1d:
        raise FileNotFoundError(f"{output_url}: star pages need {art.project}_stats.parquet and _pdf1d.hd5")
    out = report_url or storage.join(output_url, REPORT_DIR)
    storage.makedirs(out)
    rows = _stats_rows(art.stats, star_ids)
    filters = stats_filters(rows)
    lam_um = np.asarray(wavelengths(art, filters), float) / 1e4
    p1 = read_star_pdf1d(art.pdf1d, list(rows["star_id"]))
    pdf2d_url = storage.join(art.output, f"{art.project}_pdf2d.hd5")
    p2 = read_star_pdf2d(pdf2d_url, list(rows["star_id"])) if storage.exists(pdf2d_url) else None
    wanted = [q for q in STAR_QUANTITIES if q in p1["quantities"]]
    if priors is None:
        try:
            priors = field_priors(art.sed_grids, p1, wanted)
        except Exception as exc:  # the grid may have been moved away: pages without the prior
            log.warning("no prior for the star pages: %s", exc)
            priors = {}
    qs = varying(p1, priors, wanted)
    pages = []
    for k, sid in enumerate(rows["star_id"]):
        row = {c: v[k] for c, v in rows.items()}
        stem = page_name(sid)[: -len(".html")]
        obs = np.array([float(row[f]) for f in filters])
        mod = {
            s: inverse_symlog(np.array([float(row[f"symlog{f}_wd_bias_{s}"]) for f in filters]))
            if all(f"symlog{f}_wd_bias_{s}" in row for f in filters)
            else None
            for s in ("p16", "p50", "p84")
        }
        bm = best_model_and_noise(art, row, filters)
        best, sigma = bm if bm is not None else (None, None)
        title = f"star_id {sid}" + (f"  ({row['Name']})" if "Name" in row else "")
        imgs = [
            star_plots.plot_star_sed(
                lam_um,
                [short_name(f) for f in filters],
                obs,
                sigma,
                best,
                mod["p50"],
                mod["p16"],
                mod["p84"],
                storage.join(out, f"{stem}_sed.png"),
                title + f"  chi2min {float(row.get('chi2min', np.nan)):.1f}",
            )
        ]
        stats_q = {q: {s: float(row[f"{q}_{s}"]) for s in ("p16", "p50", "p84") if f"{q}_{s}" in row} for q in qs}
        one = dict(p1)
        one["pdf"] = {q: np.asarray(p1["pdf"][q])[k : k + 1] for q in p1["quantities"]}
        tr = None
        if truth is not None and "star_id" in truth:
            hit = np.flatnonzero(np.asarray(truth["star_id"]).astype(str) == str(sid))
            if len(hit):
                tr = {q: float(truth[q][hit[0]]) for q in qs if q in truth}
        imgs.append(
            star_plots.plot_star_pdfs(
                one,
                qs,
                storage.join(out, f"{stem}_pdf1d.png"),
                stats_q,
                priors,
                tr,
                f"{title}: 1-D posterior PDFs (grey: prior, red: truth)"
                if tr
                else f"{title}: 1-D posterior PDFs (grey: prior)",
            )
        )
        if p2 is not None:
            corner_qs = [q for q in star_plots.corner_quantities(p2["pairs"]) if q in qs]
            if len(corner_qs) >= 2:
                imgs.append(
                    star_plots.plot_corner(
                        p2,
                        k,
                        p1,
                        k,
                        storage.join(out, f"{stem}_corner.png"),
                        corner_qs,
                        priors,
                        f"{title}: 2-D posterior PDFs",
                    )
                )
        page = storage.join(out, page_name(sid))
        storage.write_bytes(page, render_star_html(art, row, filters, qs, bm is not None, imgs).encode())
        pages.append(StarPage(sid, page, imgs))
    return pages


def render_star_html(
    art, row: dict[str, Any], filters: Sequence[str], qs: Sequence[str], has_noise: bool, images: Sequence[str]
) -> str:
    from beastflow.fit.columns import describe_column

    e = html.escape
    sid = row["star_id"]
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>beastflow: {e(art.project)} star {e(str(sid))}</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
        "img{max-width:100%;border:1px solid #ddd;margin:.5em 0}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.2em .6em;text-align:right}"
        "</style></head><body>",
        "<p><a href='index.html'>&larr; field report</a></p>",
        f"<h1>{e(art.project)}: star_id {e(str(sid))}</h1>",
    ]
    facts = [
        (k, row[k])
        for k in ("Name", "RA", "DEC", "sd_bin", "reorder_tag", "chi2min", "n_bands_used", "Pmax")
        if k in row
    ]
    parts.append("<table>" + "".join(f"<tr><th>{e(k)}</th><td>{e(_fmt(v))}</td></tr>" for k, v in facts) + "</table>")
    parts.append(
        "<h2>Posterior summary</h2><table><tr><th>quantity</th><th>unit</th><th>p16</th><th>p50</th>"
        "<th>p84</th><th>best</th></tr>"
    )
    for q in qs:
        unit = describe_column(f"{q}_p50", filters)[0]
        vals = [row.get(f"{q}_{s}") for s in ("p16", "p50", "p84", "Best")]
        parts.append(
            f"<tr><td>{e(LABELS.get(q, q))}</td><td>{e(unit)}</td>"
            + "".join(f"<td>{e(_fmt(v))}</td>" for v in vals)
            + "</tr>"
        )
    parts.append("</table>")
    texts = {
        "sed": "Observed fluxes with 1-sigma errors of the noise model at the most probable model; "
        "non-detections (flux &le; 0) as open triangles at 1 sigma; below: residuals in sigma."
        if has_noise
        else "The noise model of this star is not in the output folder: no error bars or residuals.",
        "pdf1d": "1-D posterior (blue) and the grid prior (grey), both probability per bin.",
        "corner": "2-D posterior PDFs of the pairs the fit stored (fit.pdf2d_pairs).",
    }
    for im in images:
        name = posixpath.basename(im)
        kind = name.rsplit("_", 1)[-1].split(".")[0]
        parts.append(
            f"<p>{texts.get(kind, '')}</p><a href='{e(name)}'><img src='{e(name)}' "
            f"alt='{e(kind)} of star {e(str(sid))}'></a>"
        )
    parts.append("</body></html>")
    return "\n".join(parts)


def _fmt(v: Any) -> str:
    if isinstance(v, (float, np.floating)):
        return f"{float(v):.4g}"
    return str(v)
