"""Stage "merge": subgrids of one sub-file, then sub-files / density bins of a field.

Over subgrids (merging-and-batch.md §2.3–2.4) every output is a function of
sums over disjoint model sets, so the merge is exact: with the per-star
weights W_g = exp(total_log_norm_g − max_g total_log_norm_g),

- PDFs (1-D and 2-D, on the shared full-grid bins): Σ_g W_g pdf_g / Σ_g W_g;
- Exp: Σ_g W_g Exp_g / Σ_g W_g;  p16/p50/p84: recomputed from the merged PDF;
- total_log_norm: ln Σ_g e^{total_log_norm_g};  lnPmax, Best, Pmax_indx,
  specgrid_indx, Pmax_gid: from the subgrid with the largest lnPmax (first on
  ties), ``best_gridsub`` = that subgrid;  chi2min: min over subgrids
  (``chi2min_indx`` is dropped, as BEAST does);
- Pmax: default exp(lnPmax − total_log_norm); compat the max lnPmax;
- lnp samples: see ``beastflow.fit.lnp`` (keyed by star, not by HDF5 order).

Across sub-files and density bins (§2.1) rows are concatenated in the given
order with a ``reorder_tag`` (``bin{s}_sub{u}``) column; because every fit of a
field uses the same full-grid bins, the 1-D and 2-D PDFs and lnp samples are
concatenated too (BEAST cannot do this).  Sub-files whose PDF bins differ are
refused with an error naming the files.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from beastflow import plan
from beastflow.behaviour import PercentileRule
from beastflow.fit.fitting import FitResult
from beastflow.fit.grid_info import Bins
from beastflow.fit.lnp import NOT_TRUNCATED, merge_star_samples
from beastflow.fit.outputs import (
    LNP_FIELDS,
    PDF2DWriter,
    lnp_star,
    read_lnp,
    read_pdf1d,
    read_stats,
    write_lnp,
    write_pdf1d,
    write_stats,
)
from beastflow.fit.stats import percentiles_from_pdf, pmax_column
from beastflow.io.hdf5_arrays import decode_attr, open_h5
from beastflow.provenance import make_provenance

if TYPE_CHECKING:
    from beastflow.settings import Settings

log = logging.getLogger(__name__)

STAR_BLOCK = 1024


@dataclass
class MergeResult:
    stats: str
    pdf1d: str
    pdf2d: str
    lnp: str


def _percentiles(pdf: np.ndarray, p1: dict[str, Any], q: str, rule: PercentileRule) -> np.ndarray:
    """p16/p50/p84 by the same rule as the fit (fit.stats.percentiles_from_pdf)."""
    if rule is PercentileRule.BIN_CENTRES:
        return percentiles_from_pdf(pdf, p1["centres"][q])
    edges, log = p1["edges"][q], p1["log"][q]
    return percentiles_from_pdf(pdf, p1["centres"][q], np.log10(edges) if log else edges, log)


def _as_result(x: Any) -> FitResult:
    if isinstance(x, FitResult):
        return x
    if isinstance(x, MergeResult):
        return FitResult(x.stats, x.pdf1d, x.pdf2d, x.lnp)
    if isinstance(x, dict):
        return FitResult(**x)
    if isinstance(x, str):  # an output prefix
        return FitResult(*plan.fit_outputs(x))
    raise TypeError(f"cannot interpret fit result {x!r} (FitResult, dict of URLs or output prefix)")


def _same_ids(a: np.ndarray, b: np.ndarray) -> bool:
    return len(a) == len(b) and bool(np.all(np.asarray(a) == np.asarray(b)))


def _bins_of(p1: dict[str, Any]) -> list[Bins]:
    return [Bins(q, p1["centres"][q], p1["edges"][q], p1["edges"][q], p1["log"][q], False) for q in p1["quantities"]]


def _check_bins(ref: dict[str, Any], other: dict[str, Any], ref_url: str, url: str) -> None:
    if ref["quantities"] != other["quantities"]:
        raise ValueError(f"{url}: PDF quantities differ from {ref_url}")
    for q in ref["quantities"]:
        if not (
            np.array_equal(ref["edges"][q], other["edges"][q])
            and np.array_equal(ref["centres"][q], other["centres"][q])
        ):
            raise ValueError(
                f"{url}: PDF bins of {q!r} differ from those of {ref_url}; only fits that share the "
                "full-grid bins (same grid info) can be merged"
            )


def merge_subgrids(settings: Settings, fits: Sequence[Any], out_prefix: str) -> MergeResult:
    """Merge the fits of ONE sub-file against each of its subgrids (exact)."""
    fits = [_as_result(f) for f in fits]
    if not fits:
        raise ValueError("merge over subgrids needs at least one fit")
    beh = settings.resolved_behaviour.fit
    tabs, metas, p1s = [], [], []
    for f in fits:
        df, info = read_stats(f.stats)
        tabs.append(df)
        metas.append(info["meta"])
        p1s.append(read_pdf1d(f.pdf1d))
    ids = p1s[0]["star_id"]
    for f, df, p1 in zip(fits[1:], tabs[1:], p1s[1:]):
        if not _same_ids(p1["star_id"], ids) or len(df) != len(tabs[0]):
            raise ValueError(
                f"{f.pdf1d}: stars differ from {fits[0].pdf1d}; subgrid fits of one sub-file must "
                "cover the same stars in the same order"
            )
        _check_bins(p1s[0], p1, fits[0].pdf1d, f.pdf1d)
    subgrids = [m.get("subgrid") if m.get("subgrid") is not None else g for g, m in enumerate(metas)]
    G, ns = len(fits), len(ids)
    L = np.stack([df["total_log_norm"].to_numpy() for df in tabs])  # [G, ns]
    mx = L.max(axis=0)
    W = np.exp(L - mx)
    Wsum = W.sum(axis=0)
    lnpmax = np.stack([df["lnPmax"].to_numpy() for df in tabs])
    best_g = np.argmax(lnpmax, axis=0)  # first on ties
    tln = mx + np.log(Wsum)
    # ---- stats
    base = tabs[0]
    out: dict[str, Any] = {}
    qnames = p1s[0]["quantities"]
    merged_pdf = {}
    for q in qnames:
        pdf = sum(W[g][:, None] * p1s[g]["pdf"][q] for g in range(G)) / Wsum[:, None]
        merged_pdf[q] = pdf
    stat_cols = {f"{q}_{s}" for q in qnames for s in ("Best", "Exp", "p16", "p50", "p84")}
    special = {
        "chi2min",
        "chi2min_indx",
        "Pmax",
        "Pmax_indx",
        "specgrid_indx",
        "total_log_norm",
        "lnPmax",
        "Pmax_gid",
        "best_gridsub",
    }
    rows = np.arange(ns)
    for c in base.columns:
        if c in stat_cols or c in special:
            continue
        out[c] = base[c]
    for q in qnames:
        best = np.stack([df[f"{q}_Best"].to_numpy() for df in tabs])[best_g, rows]
        exp = sum(W[g] * tabs[g][f"{q}_Exp"].to_numpy() for g in range(G)) / Wsum
        pc = _percentiles(merged_pdf[q], p1s[0], q, beh.percentiles)
        out[f"{q}_Best"], out[f"{q}_Exp"] = best, exp
        out[f"{q}_p16"], out[f"{q}_p50"], out[f"{q}_p84"] = pc[:, 0], pc[:, 1], pc[:, 2]
    pick = lambda c: np.stack([df[c].to_numpy() for df in tabs])[best_g, rows]  # noqa: E731
    out["chi2min"] = np.stack([df["chi2min"].to_numpy() for df in tabs]).min(axis=0)
    lnp_best = lnpmax[best_g, rows]
    out["Pmax"] = pmax_column(beh.pmax, lnp_best, tln)
    out["Pmax_indx"] = pick("Pmax_indx")
    out["specgrid_indx"] = pick("specgrid_indx")
    out["total_log_norm"] = tln
    out["lnPmax"] = lnp_best
    out["Pmax_gid"] = pick("Pmax_gid")
    out["best_gridsub"] = np.asarray(subgrids, np.int64)[best_g]
    df = pl.DataFrame(out)
    inputs = {}
    for g, f in enumerate(fits):
        inputs.update({f"stats_{g}": f.stats, f"pdf1d_{g}": f.pdf1d, f"pdf2d_{g}": f.pdf2d, f"lnp_{g}": f.lnp})
    prov = make_provenance("merge_subgrids", settings.section_hash("fit", "compat"), inputs=inputs)
    meta = dict(metas[0])
    meta.update({"subgrid": None, "merged_subgrids": subgrids})
    res = MergeResult(*plan.fit_outputs(out_prefix))
    write_pdf1d(res.pdf1d, ids, tln, _bins_of(p1s[0]), merged_pdf, prov, meta)
    _merge_pdf2d([f.pdf2d for f in fits], W, Wsum, ids, tln, res.pdf2d, prov, meta)
    _merge_lnp([f.lnp for f in fits], subgrids, res.lnp, settings, prov, meta)
    write_stats(res.stats, df, prov, meta)
    return res


def _pairs_of(url: str) -> tuple[list[str], dict[str, dict[str, np.ndarray]]]:
    with open_h5(url) as h5:
        pairs = decode_attr(h5.attrs["pairs"])
        axes = {p: {k: h5[p][k][...] for k in ("centres_a", "centres_b", "edges_a", "edges_b")} for p in pairs}
    return pairs, axes


def _pair_bins(p: str, ax: dict[str, np.ndarray]) -> tuple[Bins, Bins]:
    a, b = p.split("+", 1)
    return (
        Bins(a, ax["centres_a"], ax["edges_a"], ax["edges_a"], False, False),
        Bins(b, ax["centres_b"], ax["edges_b"], ax["edges_b"], False, False),
    )


def _merge_pdf2d(urls, W, Wsum, ids, tln, out_url, prov, meta) -> None:
    pairs, axes = _pairs_of(urls[0])
    for u in urls[1:]:
        p2, ax2 = _pairs_of(u)
        if p2 != pairs or any(not np.array_equal(axes[p][k], ax2[p][k]) for p in pairs for k in axes[p]):
            raise ValueError(f"{u}: 2-D PDF pairs or bins differ from those of {urls[0]}")
    ns = len(ids)
    with PDF2DWriter(out_url, ns, [_pair_bins(p, axes[p]) for p in pairs], prov, meta) as w:
        with contextlib.ExitStack() as stack:
            files = [stack.enter_context(open_h5(u)) for u in urls]
            for lo in range(0, ns, STAR_BLOCK):  # bounded memory: a block of stars at a time
                hi = min(ns, lo + STAR_BLOCK)
                blocks = []
                for p in pairs:
                    acc = sum(W[g, lo:hi, None, None] * f[p]["pdf"][lo:hi] for g, f in enumerate(files))
                    blocks.append(acc / Wsum[lo:hi, None, None])
                w.write(lo, blocks)
        w.finish(ids, tln)


def _merge_lnp(urls, subgrids, out_url, settings: Settings, prov, meta) -> None:
    files = [read_lnp(u) for u in urls]
    ids = files[0]["star_id"]
    for u, f in zip(urls[1:], files[1:]):
        if not _same_ids(f["star_id"], ids):
            raise ValueError(f"{u}: lnp stars differ from {urls[0]}")
    k = settings.fit.lnp_npts
    forced = settings.resolved_behaviour.fit.lnp_threshold
    thr = forced if forced is not None else settings.fit.lnp_threshold
    lnpmax = np.max([f["lnPmax"] for f in files], axis=0)
    parts: dict[str, list[np.ndarray]] = {f: [] for f in LNP_FIELDS}
    offsets, trunc = [0], []
    for e in range(len(ids)):
        smp = []
        for g, f in zip(subgrids, files):
            s = lnp_star(f, e)
            s["subgrid"] = np.full(len(s["idx"]), g, np.int32)
            smp.append(s)
        merged, tau = merge_star_samples(smp, [f["truncated_key"][e] for f in files], k, thr, lnpmax[e])
        for fld in LNP_FIELDS:
            parts[fld].append(merged[fld])
        offsets.append(offsets[-1] + len(merged["idx"]))
        trunc.append(tau if tau < NOT_TRUNCATED else NOT_TRUNCATED)
    fields = {f: np.concatenate(v) if v else np.empty(0) for f, v in parts.items()}
    # candidates relative to each subgrid's own peak: an upper bound of the merged count
    ncand = np.sum([f["n_candidates"] for f in files], axis=0)
    write_lnp(
        out_url,
        ids,
        np.asarray(offsets),
        fields,
        ncand,
        np.asarray(trunc),
        lnpmax,
        files[0]["input"],
        files[0]["obs_filters"],
        files[0]["grid_waves"],
        prov,
        meta,
    )


def concatenate(settings: Settings, results: Sequence[Any], tags: Sequence[str | None], out_prefix: str) -> MergeResult:
    """Row-concatenate per-sub-file results (same full-grid bins) with ``reorder_tag``."""
    results = [_as_result(r) for r in results]
    tabs, p1s, metas = [], [], []
    for r, tag in zip(results, tags):
        df, info = read_stats(r.stats)
        tabs.append(df.with_columns(pl.lit(tag or "").alias("reorder_tag")) if "reorder_tag" not in df.columns else df)
        metas.append(info["meta"])
        p1s.append(read_pdf1d(r.pdf1d))
    for r, p1 in zip(results[1:], p1s[1:]):
        _check_bins(p1s[0], p1, results[0].pdf1d, r.pdf1d)
    inputs = {}
    for i, r in enumerate(results):
        inputs.update({f"stats_{i}": r.stats, f"pdf1d_{i}": r.pdf1d, f"pdf2d_{i}": r.pdf2d, f"lnp_{i}": r.lnp})
    prov = make_provenance("merge", settings.section_hash("fit", "compat"), inputs=inputs)
    meta = {k: v for k, v in metas[0].items() if k not in ("tag", "subgrid", "n_models", "gid_offset")}
    meta["tags"] = [t or "" for t in tags]
    res = MergeResult(*plan.fit_outputs(out_prefix))
    ids = np.concatenate([p["star_id"] for p in p1s])
    tln = np.concatenate([p["total_log_norm"] for p in p1s])
    pdfs = {q: np.concatenate([p["pdf"][q] for p in p1s]) for q in p1s[0]["quantities"]}
    write_pdf1d(res.pdf1d, ids, tln, _bins_of(p1s[0]), pdfs, prov, meta)
    # 2-D: stream file by file
    pairs, axes = _pairs_of(results[0].pdf2d)
    for r in results[1:]:
        p2, ax2 = _pairs_of(r.pdf2d)
        if p2 != pairs or any(not np.array_equal(axes[p][k], ax2[p][k]) for p in pairs for k in axes[p]):
            raise ValueError(f"{r.pdf2d}: 2-D PDF pairs or bins differ from those of {results[0].pdf2d}")
    with PDF2DWriter(res.pdf2d, len(ids), [_pair_bins(p, axes[p]) for p in pairs], prov, meta) as w:
        lo = 0
        for r in results:
            with open_h5(r.pdf2d) as f:
                n = f["star_id"].shape[0]
                for a in range(0, n, STAR_BLOCK):
                    b = min(n, a + STAR_BLOCK)
                    w.write(lo + a, [f[p]["pdf"][a:b] for p in pairs])
                lo += n
        w.finish(ids, tln)
    lnps = [read_lnp(r.lnp) for r in results]
    offs, shift = [np.zeros(1, np.int64)], 0
    for L in lnps:
        offs.append(L["offsets"][1:] + shift)
        shift += int(L["offsets"][-1])
    fields = {f: np.concatenate([L[f] for L in lnps]) for f in LNP_FIELDS}
    inp = np.concatenate([L["input"] for L in lnps]) if all(L["input"] is not None for L in lnps) else None
    write_lnp(
        res.lnp,
        ids,
        np.concatenate(offs),
        fields,
        np.concatenate([L["n_candidates"] for L in lnps]),
        np.concatenate([L["truncated_key"] for L in lnps]),
        np.concatenate([L["lnPmax"] for L in lnps]),
        inp,
        lnps[0]["obs_filters"],
        lnps[0]["grid_waves"],
        prov,
        meta,
    )
    write_stats(res.stats, pl.concat(tabs, how="diagonal_relaxed"), prov, meta)
    return res


def run_merge(settings: Settings, fit_results: Sequence[Any], out_prefix: str | None = None) -> MergeResult:
    """Stage "merge": group the fits by sub-file tag (``bin{s}_sub{u}``), merge
    each group over its subgrids (exact), then concatenate the groups in order.

    ``fit_results``: FitResult objects, dicts of their URLs, or output prefixes.
    The tag and subgrid of each fit are read from its stats file.
    """
    results = [_as_result(r) for r in fit_results]
    if not results:
        raise ValueError("merge needs at least one fit result")
    out_prefix = out_prefix or plan.Names.of(settings).merged_prefix()
    groups: dict[str, list[FitResult]] = {}
    for r in results:
        _, info = read_stats(r.stats)
        tag = info["meta"].get("tag") or ""
        groups.setdefault(tag, []).append(r)
    per_tag: list[FitResult | MergeResult] = []
    tags: list[str] = []
    for tag, rs in groups.items():
        subs = [read_stats(r.stats)[1]["meta"].get("subgrid") for r in rs]
        if len(rs) > 1:
            if len(set(subs)) != len(subs):
                raise ValueError(
                    f"sub-file {tag!r}: {len(rs)} fits with subgrids {subs} ({[r.stats for r in rs]}); a sub-file "
                    "may list each subgrid once (give fits of different sub-files a bin{s}_sub{u} tag)"
                )
            if len(groups) == 1:
                return merge_subgrids(settings, rs, out_prefix)
            folder = os.path.dirname(out_prefix) or "."
            name = os.path.basename(out_prefix)
            tag_prefix = f"{folder}/{tag}/{name}_{tag}"
            per_tag.append(merge_subgrids(settings, rs, tag_prefix))
        else:
            per_tag.append(rs[0])
        tags.append(tag)
    log.info("merging %d sub-file result(s) -> %s", len(per_tag), out_prefix)
    return concatenate(settings, per_tag, tags, out_prefix)
