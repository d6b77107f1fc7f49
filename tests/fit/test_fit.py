import math

import numpy as np
import polars as pl
import pytest

from beastflow.fit.fitting import run_fit
from beastflow.fit.grid_info import make_bins, read_grid_info, run_grid_info, symlog
from beastflow.fit.likelihood import hash_key
from beastflow.fit.lnp import star_seeds
from beastflow.fit.outputs import lnp_star, read_lnp, read_pdf1d, read_stats
from beastflow.fit.stats import iau_names, percentiles_from_pdf
from beastflow.io.noise_model import open_noise_model
from beastflow.io.sed_grid import open_sed_grid

from . import synth
from .conftest import settings_for


def _reference(field, gi_url, compat=False, completeness="min"):
    """Plain numpy posterior of every model for every star of cat0 (fitting.md §2)."""
    g = open_sed_grid(field["trim"]).read()
    nz = open_noise_model(field["trim_noise"]).read()
    cat = pl.read_parquet(field["cat0"])
    y = (
        np.column_stack([cat[f"{b}_RATE"].to_numpy() for b in ("F275W", "F336W", "F475W", "F814W", "F110W", "F160W")])
        * synth.VEGA
    )
    m = g.seds + nz.bias
    e = nz.error
    w = g.columns["weight"]
    if compat:
        lnw = np.log(w) - np.log(w.sum())
        lnc = 0.0
    else:
        lnw = np.log(w) - np.log(read_grid_info(gi_url)["total_weight"])
        lnc = np.log(nz.completeness.min(axis=1)) if completeness == "min" else 0.0
    used = np.isfinite(y)
    lnp = np.empty((len(y), len(m)))
    chi2 = np.empty_like(lnp)
    for s in range(len(y)):
        u = used[s]
        c2 = (((y[s, u] - m[:, u]) / e[:, u]) ** 2).sum(axis=1)
        chi2[s] = c2
        lnp[s] = lnw + lnc - 0.5 * u.sum() * math.log(2 * math.pi) - np.log(e[:, u]).sum(axis=1) - 0.5 * c2
    return g, m, lnp, chi2, cat


@pytest.fixture(scope="module")
def default_fit(field, tmp_path_factory, synth_vega):
    d = tmp_path_factory.mktemp("fitdef")
    s = settings_for(d, lnp_npts=50)
    gi = run_grid_info(s, [field["full"]], out_url=str(d / "gi.json")).grid_info
    r = run_fit(s, field["trim"], field["trim_noise"], field["cat0"], gi, str(d / "P_bin0_sub0"))
    return s, gi, r


def test_kernel_equals_numpy_reference(field, default_fit):
    s, gi, r = default_fit
    g, m, lnp, chi2, cat = _reference(field, gi)
    st, info = read_stats(r.stats)
    M = lnp.max(axis=1)
    tln = M + np.log(np.exp(lnp - M[:, None]).sum(axis=1))
    np.testing.assert_allclose(st["total_log_norm"].to_numpy(), tln, rtol=1e-12)
    np.testing.assert_allclose(st["lnPmax"].to_numpy(), M, rtol=1e-12)
    assert (st["Pmax_indx"].to_numpy() == lnp.argmax(axis=1)).all()
    np.testing.assert_allclose(st["chi2min"].to_numpy(), chi2.min(axis=1), rtol=1e-12)
    wt = np.exp(lnp - tln[:, None])
    np.testing.assert_allclose(st["Pmax"].to_numpy(), wt.max(axis=1), rtol=1e-10)
    for q in ("logA", "M_ini", "Av", "Rv", "f_A", "Z", "logT", "radius"):
        # models skipped by the default threshold weigh < 1e-9 of the peak in all: an
        # absolute error < 1e-9 max|q| (likelihood.all_models_threshold)
        np.testing.assert_allclose(
            st[f"{q}_Exp"].to_numpy(), wt @ g.columns[q], rtol=1e-10, atol=1e-9 * np.abs(g.columns[q]).max(), err_msg=q
        )
        np.testing.assert_allclose(st[f"{q}_Best"].to_numpy(), g.columns[q][lnp.argmax(axis=1)])
    # flux quantity: symlog of the biased model flux
    q = "symlogHST_ACS_WFC_F475W_wd_bias"
    np.testing.assert_allclose(st[f"{q}_Exp"].to_numpy(), wt @ symlog(m[:, 2]), rtol=1e-10)
    # 1-D PDF = histogram of the weights on the full-grid bins
    p = read_pdf1d(r.pdf1d)
    edges = p["edges"]["Av"]
    ref = np.stack([np.histogram(g.columns["Av"], bins=edges, weights=wt[s])[0] for s in range(len(wt))])
    # (to the default threshold's bound: skipped weights < 1e-9 of the peak in all)
    np.testing.assert_allclose(p["pdf"]["Av"], ref, rtol=1e-10, atol=1e-9 * ref.max())
    # the star with a missing F275W flux used 5 bands
    assert st["n_bands_used"].to_list()[3] == 5 and st["n_bands_used"].to_list()[0] == 6


def test_stats_layout_and_ids(field, default_fit):
    s, gi, r = default_fit
    st, info = read_stats(r.stats)
    cat = pl.read_parquet(field["cat0"])
    assert st.columns[:4] == ["Name", "star_id", "RA", "DEC"]
    assert (st["star_id"] == cat["star_id"]).all() and (st["RA"] == cat["RA"]).all()
    assert "true_logA" in st.columns  # simulation truth travels with the stars
    assert "HST_ACS_WFC_F475W" in st.columns  # observed flux, physical units
    qn = info["meta"]["qnames"]
    assert qn[:3] == ["Av", "Rv", "f_A"] and qn[-1] == "symlogHST_WFC3_F160W_wd_bias"
    assert "weight_Exp" not in st.columns and "fullgrid_idx_Best" not in st.columns
    i = st.columns.index(f"{qn[0]}_Best")
    assert st.columns[i : i + 5] == [f"{qn[0]}_{x}" for x in ("Best", "Exp", "p16", "p50", "p84")]
    assert info["provenance"]["stage"] == "fit" and "trimmed_grid" in info["provenance"]["input_hashes"]
    assert st["Name"][0].startswith("PHAT J00")
    # percentiles come from the stored PDFs
    p = read_pdf1d(r.pdf1d)
    e = p["edges"]["logA"]
    pc = percentiles_from_pdf(
        p["pdf"]["logA"], p["centres"]["logA"], np.log10(e) if p["log"]["logA"] else e, p["log"]["logA"]
    )
    np.testing.assert_allclose(st["logA_p50"].to_numpy(), pc[:, 1])
    assert (st["logA_p16"] <= st["logA_p50"]).all() and (st["logA_p50"] <= st["logA_p84"]).all()


def test_lnp_sample(field, default_fit):
    s, gi, r = default_fit
    L = read_lnp(r.lnp)
    g, m, lnp, chi2, cat = _reference(field, gi)
    for e in (0, 5, 17):
        sm = lnp_star(L, e)
        cand = np.flatnonzero(lnp[e] - lnp[e].max() > -10)
        assert L["n_candidates"][e] == len(cand)
        assert len(sm["idx"]) == min(50, len(cand)) and len(set(sm["idx"])) == len(sm["idx"])
        assert set(sm["idx"]) <= set(cand)
        np.testing.assert_allclose(sm["lnp"], lnp[e, sm["idx"]], rtol=1e-12)
        np.testing.assert_allclose(sm["chi2"], chi2[e, sm["idx"]], rtol=1e-12)
        assert (sm["gid"] == g.columns["fullgrid_idx"][sm["idx"]]).all()


def test_lnp_sample_is_the_bottom_k_by_key(field, default_fit, tmp_path, synth_vega):
    """A small sample (k = 3: every partition's heap fills, so the kernels skip candidates
    by the partitions' shared heap bounds): still the k smallest keys of all candidates."""
    s, gi, _ = default_fit
    s3 = settings_for(tmp_path, lnp_npts=3)
    r = run_fit(s3, field["trim"], field["trim_noise"], field["cat0"], gi, str(tmp_path / "P_bin0_sub0"))
    L = read_lnp(r.lnp)
    g, m, lnp, chi2, cat = _reference(field, gi)
    ids = cat["star_id"].to_numpy() if "star_id" in cat.columns else np.arange(len(cat))
    seeds = star_seeds(s3.fit.seed if s3.fit.seed is not None else s3.project.seed, ids)
    for e in range(len(cat)):
        cand = np.flatnonzero(lnp[e] - lnp[e].max() > -10)
        keys = np.sort([hash_key(seeds[e], gd) for gd in g.columns["fullgrid_idx"][cand].astype(np.int64)])
        np.testing.assert_array_equal(np.sort(lnp_star(L, e)["key"]), keys[:3], err_msg=str(e))


def test_streaming_in_chunks_is_the_same(field, default_fit, tmp_path, synth_vega):
    s, gi, r = default_fit
    from beastflow.fit.fitting import STAR_PROGRESS

    s2 = settings_for(tmp_path, lnp_npts=50, chunk_models=1024, star_block=15)
    calls: list[tuple[int, int]] = []
    token = STAR_PROGRESS.set(lambda done, total: calls.append((done, total)))
    try:
        r2 = run_fit(
            s2,
            field["trim"],
            field["trim_noise"],
            field["cat0"],
            gi,
            str(tmp_path / "P_bin0_sub0"),
        )
    finally:
        STAR_PROGRESS.reset(token)
    # star-level progress (issue 18 item 3): one report per block of 15 stars, the last = all stars
    ns = read_stats(r.stats)[0].height
    assert calls == [(min(ns, k + 15), ns) for k in range(0, ns, 15)] and len(calls) > 1
    a, b = read_stats(r.stats)[0], read_stats(r2.stats)[0]
    for c in a.columns:
        if a[c].dtype.is_numeric():
            np.testing.assert_allclose(b[c].to_numpy(), a[c].to_numpy(), rtol=1e-11, atol=1e-12, err_msg=c)
    la, lb = read_lnp(r.lnp), read_lnp(r2.lnp)
    assert (la["gid"] == lb["gid"]).all()  # sampling keys do not depend on chunking or threads


def test_statistics_are_bit_identical_on_1_and_2_threads(field, default_fit, tmp_path, synth_vega):
    """The reduction partitions are fixed (not one per thread), so the order of every
    floating-point sum, and thus every statistic and PDF, is the same on any thread count;
    and fitted in blocks of 8 stars, the outputs are those of one block of all 40 stars."""
    import numba

    from beastflow.fit.outputs import read_pdf2d

    s, gi, whole = default_fit
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("numba was started with NUMBA_NUM_THREADS=1: no second thread to compare with")
    s = settings_for(tmp_path, lnp_npts=50, star_block=8)
    before = numba.get_num_threads()
    runs = []
    try:
        for nt in (1, 2):
            numba.set_num_threads(nt)
            d = tmp_path / f"t{nt}"
            d.mkdir()
            runs.append(run_fit(s, field["trim"], field["trim_noise"], field["cat0"], gi, str(d / "P_bin0_sub0")))
    finally:
        numba.set_num_threads(before)
    assert read_pdf2d(whole.pdf2d)["pairs"]
    for r in runs:
        _assert_same_outputs(whole, r)


def test_compat_mode(field, tmp_path, synth_vega):
    s = settings_for(tmp_path, lnp_npts=50).model_copy(update={"compat": "beast-2.1"})
    r = run_fit(
        s,
        field["trim"],
        field["trim_noise"],
        field["cat0"],
        None,
        str(tmp_path / "P_bin0_sub0"),
    )
    g, m, lnp, chi2, cat = _reference(field, None, compat=True)
    st, info = read_stats(r.stats)
    M = lnp.max(axis=1)
    S = lnp - M[:, None] > -10  # statistics only over the sparse set (QUIRK)
    w = np.where(S, np.exp(lnp - M[:, None]), 0.0)
    np.testing.assert_allclose(st["total_log_norm"].to_numpy(), M + np.log(w.sum(axis=1)), rtol=1e-12)
    np.testing.assert_allclose(st["Pmax"].to_numpy(), M, rtol=1e-12)  # a log (QUIRK)
    np.testing.assert_allclose(st["chi2min"].to_numpy(), np.where(S, chi2, np.inf).min(axis=1), rtol=1e-12)
    np.testing.assert_allclose(st["logA_Exp"].to_numpy(), (w @ g.columns["logA"]) / w.sum(axis=1), rtol=1e-10)
    assert info["meta"]["bins_source"] == "trimmed_grid"
    p = read_pdf1d(r.pdf1d)
    assert p["centres"]["Av"].min() == g.columns["Av"].min()  # bins from the trimmed grid


def test_compat_refuses_untrimmed_noise(field, tmp_path, synth_vega):
    s = settings_for(tmp_path).model_copy(update={"compat": "beast-2.1"})
    g = open_sed_grid(field["trim"]).read()
    bias, err, comp = synth.noise_for(g.seds)
    comp[5, 2] = 0.0
    from beastflow.io.noise_model import write_noise_model

    nz = write_noise_model(str(tmp_path / "n.hd5"), synth.FILTERS, bias, err, comp)
    with pytest.raises(ValueError, match="completeness <= 0"):
        run_fit(s, field["trim"], nz, field["cat0"], None, str(tmp_path / "x"))
    # behaviour.fit.refuse_invalid_noise alone refuses it; the default excludes that model
    only = settings_for(tmp_path).model_copy(update={"behaviour": {"fit": {"refuse_invalid_noise": True}}})
    with pytest.raises(ValueError, match="completeness <= 0"):
        run_fit(only, field["trim"], nz, field["cat0"], None, str(tmp_path / "y"))
    run_fit(settings_for(tmp_path), field["trim"], nz, field["cat0"], None, str(tmp_path / "z"))


def test_clear_errors(field, tmp_path, synth_vega):
    s = settings_for(tmp_path)
    cat = pl.read_parquet(field["cat0"]).drop("F814W_RATE")
    bad = tmp_path / "cat.parquet"
    cat.write_parquet(bad)
    with pytest.raises(KeyError, match=r"cat\.parquet.*F814W_RATE"):
        run_fit(s, field["trim"], field["trim_noise"], str(bad), None, str(tmp_path / "x"))
    with pytest.raises(ValueError, match="row-aligned"):
        run_fit(
            s,
            field["trim"],
            field["trim_sub_noise"][0],
            field["cat0"],
            None,
            str(tmp_path / "x"),
        )
    s2 = settings_for(tmp_path, pdf2d_pairs=[["Av", "nope"]])
    with pytest.raises(ValueError, match="pdf2d_pairs"):
        run_fit(s2, field["trim"], field["trim_noise"], field["cat0"], None, str(tmp_path / "x"))


def test_histogram_percentiles():
    """Default rule: percentiles of the histogram density (CDF linear across each bin)."""
    e = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
    c = 0.5 * (e[1:] + e[:-1])
    p = np.array(
        [
            [0.0, 1.0, 0.0, 0.0],  # all mass in [1, 2): p16..p84 = 1.16, 1.5, 1.84
            [0.5, 0.0, 0.0, 0.5],  # two bins: the empty middle is never a percentile
            [0.0, 0.0, 0.0, 0.0],
        ]
    )
    out = percentiles_from_pdf(p, c, e)
    np.testing.assert_allclose(out[0], [1.16, 1.5, 1.84])
    np.testing.assert_allclose(out[1], [0.32, 1.0, 3.68])
    assert (out[2] == 0).all()
    # log-binned: interpolated in log10, reported linear
    out = percentiles_from_pdf(p[:1], 10**c, e, log=True)
    np.testing.assert_allclose(out[0], 10 ** np.array([1.16, 1.5, 1.84]))
    # BEAST's rule on a one-bin posterior: centre -/+ 0.68 bin widths (twice as wide)
    np.testing.assert_allclose(percentiles_from_pdf(p[:1], c)[0], [0.82, 1.5, 2.18])


def test_percentile_formula():
    c = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    p = np.array([[0.0, 0.2, 0.0, 0.0, 0.8], [0, 0, 0, 0, 0], [0.25, 0.25, 0.25, 0.25, 0.0]])
    out = percentiles_from_pdf(p, c)
    for s in (0, 2):
        a = np.cumsum(p[s])
        x = (a - p[s] / 2) / p[s].sum()
        np.testing.assert_allclose(out[s], [np.interp(v, x, c) for v in (0.16, 0.5, 0.84)])
    assert (out[1] == 0).all()


def test_bins():
    b = make_bins("Av", 0.0, 3.0, np.array([0.0, 0.5, 1.0, 3.0]), 4, 50)
    np.testing.assert_allclose(b.centres, [0, 0.5, 1.0, 3.0])
    np.testing.assert_allclose(b.edges, [-0.25, 0.25, 0.75, 2.0, 4.0])
    assert list(b.assign(np.array([0.0, 0.5, 1.0, 3.0]))) == [0, 1, 2, 3]
    r = make_bins("M_ini", 0.1, 100.0, np.array([]), 5000, 4)  # log-spaced, regular
    np.testing.assert_allclose(r.centres, [0.1, 1.0, 10.0, 100.0])
    z = make_bins("f_A", 0.0, 0.0, np.array([0.0]), 1, 50)  # BEAST's 0.95c/1.05c is empty for c = 0
    assert list(z.assign(np.array([0.0]))) == [0]
    with pytest.raises(ValueError, match="outside the PDF bins"):
        b.assign(np.array([5.0]), "g.hd5")


def test_iau_names():
    assert iau_names("PHAT", np.array([10.68470833]), np.array([41.26875])) == ["PHAT J004244.3300+411607.500"]
    assert iau_names("X", np.array([0.0]), np.array([-0.5]))[0] == "X J000000.0000-003000.000"


def test_truncheon_full_covariance(field, default_fit, tmp_path, synth_vega):
    """A noise model with q_norm / icov_* (noise-model.md §6): full-covariance
    likelihood; a star with a missing band uses the Gaussian marginal."""
    from beastflow.io.noise_model import NoiseModelWriter

    s, gi, _ = default_fit
    g = open_sed_grid(field["trim"]).read()
    bias, err, comp = synth.noise_for(g.seds)
    nb = err.shape[1]
    R = 0.4 ** np.abs(np.subtract.outer(np.arange(nb), np.arange(nb)))
    C = err[:, :, None] * R[None] * err[:, None, :]
    P = np.linalg.inv(C)
    iu = np.triu_indices(nb, 1)
    qn = -0.5 * np.linalg.slogdet(C)[1]
    url = str(tmp_path / "P_bin0_sub0_noisemodel_trim.grid.hd5")
    with NoiseModelWriter(url, synth.FILTERS, n_models=len(err), with_trunchen=True) as w:
        w.append(
            {
                "bias": bias,
                "error": err,
                "completeness": comp,
                "q_norm": qn,
                "icov_diag": np.diagonal(P, axis1=1, axis2=2).copy(),
                "icov_offdiag": P[:, iu[0], iu[1]],
            }
        )
    r = run_fit(s, field["trim"], url, field["cat0"], gi, str(tmp_path / "T_bin0_sub0"))
    st, _ = read_stats(r.stats)
    cat = pl.read_parquet(field["cat0"])
    y = (
        np.column_stack([cat[f"{b}_RATE"].to_numpy() for b in ("F275W", "F336W", "F475W", "F814W", "F110W", "F160W")])
        * synth.VEGA
    )
    lnw = np.log(g.columns["weight"]) - np.log(read_grid_info(gi)["total_weight"]) + np.log(comp.min(axis=1))
    m = g.seds + bias
    for e in (0, 3, 7):  # star 3 has no F275W flux
        u = np.isfinite(y[e])
        Cu = C[:, u][:, :, u]
        d = y[e, u] - m[:, u]
        chi2 = np.einsum("jk,jkl,jl->j", d, np.linalg.inv(Cu), d)
        lnp = lnw - 0.5 * u.sum() * math.log(2 * math.pi) - 0.5 * np.linalg.slogdet(Cu)[1] - 0.5 * chi2
        M = lnp.max()
        np.testing.assert_allclose(st["lnPmax"][e], M, rtol=1e-10)
        np.testing.assert_allclose(st["total_log_norm"][e], M + np.log(np.exp(lnp - M).sum()), rtol=1e-10)
        np.testing.assert_allclose(st["chi2min"][e], chi2.min(), rtol=1e-8)
    assert not np.allclose(st["chi2min"].to_numpy(), read_stats(default_fit[2].stats)[0]["chi2min"].to_numpy())


def test_compat_chi2min_and_index_only_over_the_sparse_set(field, tmp_path, synth_vega):
    # make the smallest-chi2 model of every star improbable (weight x 1e-30): it then
    # lies outside S = {lnP > max - 10}, and BEAST reports the smallest chi2 inside S
    g = open_sed_grid(field["trim"]).read()
    _, _, _, chi2_0, _ = _reference(field, None, compat=True)
    cols = {k: v for k, v in g.columns.items() if k != "fullgrid_idx"}
    cols["weight"] = cols["weight"].copy()
    cols["weight"][np.unique(chi2_0.argmin(axis=1))] *= 1e-30
    grid = synth.write_grid(
        tmp_path / "P_bin0_sub0_seds_trim.grid.hd5", g.seds, cols, fullgrid_idx=g.columns["fullgrid_idx"]
    )
    fld = {**field, "trim": grid}
    s = settings_for(tmp_path, lnp_npts=10).model_copy(update={"compat": "beast-2.1"})
    r = run_fit(s, grid, field["trim_noise"], field["cat0"], None, str(tmp_path / "P_bin0_sub0"))
    _, _, lnp, chi2, _ = _reference(fld, None, compat=True)
    S = lnp - lnp.max(axis=1)[:, None] > -10
    in_s = np.where(S, chi2, np.inf)
    assert (in_s.min(axis=1) > chi2.min(axis=1)).sum() >= 10  # the case BEAST differs in is exercised
    st, _ = read_stats(r.stats)
    np.testing.assert_allclose(st["chi2min"].to_numpy(), in_s.min(axis=1), rtol=1e-12)
    assert (st["chi2min_indx"].to_numpy() == in_s.argmin(axis=1)).all()
    # behaviour.fit.chi2min_sparse alone: the minimum over the statistics set (here every model
    # within the default threshold, which the 1e-30 weights fall below), not over every model
    for on in (False, True):
        s1 = settings_for(tmp_path, lnp_npts=10).model_copy(update={"behaviour": {"fit": {"chi2min_sparse": on}}})
        r1 = run_fit(
            s1,
            grid,
            field["trim_noise"],
            field["cat0"],
            None,
            str(tmp_path / f"c{on}_bin0_sub0"),
        )
        c1 = read_stats(r1.stats)[0]["chi2min"].to_numpy()
        assert np.allclose(c1, chi2.min(axis=1), rtol=1e-12) is not on


# ----------------------------------------------------------------------------------------------
# bad measurements (issue 12, item 9): dropped per band, flagged, never fail the sub-file
# ----------------------------------------------------------------------------------------------
def test_bad_rows_are_dropped_per_band_and_flagged(field, default_fit, tmp_path, synth_vega):
    s, gi, r = default_fit
    cat = pl.read_parquet(field["cat0"])
    bad = {0: ("F475W", 1e300), 1: ("F814W", 1e30), 2: ("F160W", 0.0), 4: ("F336W", -1e3), 5: ("F110W", math.inf)}
    for row, (band, value) in bad.items():
        cat = cat.with_columns(cat[f"{band}_RATE"].scatter(row, value))
    path = tmp_path / "P_bin0_sub0.parquet"
    cat.write_parquet(path)
    r2 = run_fit(s, field["trim"], field["trim_noise"], str(path), gi, str(tmp_path / "P_bin0_sub0"))
    st = read_stats(r2.stats)[0]
    ref = read_stats(r.stats)[0]
    assert st.height == cat.height and "flag" in st.columns
    flags = st["flag"].to_list()
    assert flags[0] == "F475W:absurd" and flags[1] == "F814W:absurd" and flags[2] == "F160W:zero"
    assert flags[4] == "F336W:negative" and flags[5] == "F110W:nonfinite"
    assert flags[3] == "F275W:nonfinite"  # the fixture's missing F275W flux
    assert all(f == "" for i, f in enumerate(flags) if i not in (0, 1, 2, 3, 4, 5))
    n_used = st["n_bands_used"].to_numpy()
    assert (n_used[[0, 1, 2, 4, 5]] == 5).all()
    # every star has a finite result; a flagged star is no longer certain of one model
    assert np.isfinite(st["total_log_norm"].to_numpy()).all()
    assert (st["Pmax"].to_numpy()[[0, 1]] < 1.0).all()
    # the untouched stars are fitted exactly as before
    good = [i for i in range(cat.height) if i > 5]
    np.testing.assert_allclose(st["lnPmax"].to_numpy()[good], ref["lnPmax"].to_numpy()[good], rtol=1e-12)


def test_small_negative_flux_is_a_measurement(field, default_fit, tmp_path):
    from beastflow.observations.catalogs import screen_fluxes

    bands = ["A", "B"]
    vega = np.array([1.0, 2.0])
    y = np.array([[-1.0, 0.0], [-6.0, 3.0], [np.nan, -1e9]])
    out, flags = screen_fluxes(y, vega, bands, sigma=np.array([1.0, 1.0]), k_sigma=5.0)
    assert flags == ["B:zero", "A:negative", "A:nonfinite;B:absurd"]
    assert out[0, 0] == -1.0 and np.isnan(out[0, 1]) and out[1, 1] == 3.0
    out_c, flags_c = screen_fluxes(y, vega, bands, sigma=np.array([1.0, 1.0]), as_measured=True)
    assert flags_c == ["", "", "A:nonfinite;B:absurd"]  # BEAST fits zero and negative fluxes


def test_regular_2d_bins_alone(field, default_fit):
    """behaviour.fit.regular_2d_bins: BEAST's always-regular 2-D bins instead of the 1-D bins."""
    from beastflow.fit.pdfs import binset_from_info

    s, gi, _ = default_fit
    g = open_sed_grid(field["trim"])
    args = (read_grid_info(gi), g.columns, list(g.filters), s.fit.pdf_max_nbins, s.fit.pdf2d_pairs)
    own, regular = binset_from_info(*args, False, "t"), binset_from_info(*args, True, "t")
    assert [b.edges.tolist() for b in own.bins1] == [b.edges.tolist() for b in regular.bins1]
    by = {b.name: b for b in own.bins1}
    assert all(a is by[a.name] and b is by[b.name] for a, b in own.pairs)
    assert any(
        not np.array_equal(a.edges, by[a.name].edges) or not np.array_equal(b.edges, by[b.name].edges)
        for a, b in regular.pairs
    )


# ----------------------------------------------------------------------------------------------
# float32 screen (issue 14): float32 decides only which models the float64 kernels evaluate
# ----------------------------------------------------------------------------------------------
def test_float32_screen_gives_the_float64_results_bit_for_bit(field, default_fit, tmp_path, monkeypatch):
    """Default mode screens in float32; with the screen switched off (float64 kernels for
    every model, as compat uses) every statistic, PDF and lnP sample is the same, bit for
    bit: the budget of the float32 arithmetic (p16/p50/p84 shift < 1e-4 of the range, PDFs
    < 1e-4 of their peak) is met with zero difference."""
    from beastflow.fit import fitting

    s, gi, r = default_fit
    monkeypatch.setattr(fitting, "SCREEN", False)
    r64 = run_fit(s, field["trim"], field["trim_noise"], field["cat0"], gi, str(tmp_path / "P_bin0_sub0"))
    _assert_same_outputs(r, r64)


def test_float32_error_is_far_below_the_screen_margin(field, default_fit):
    """The screen is exact only while |lnP32 - lnP64| < SCREEN_MARGIN for the models near a
    decision (within 100 of a star's peak here): check it has a factor >= 100 to spare."""
    from beastflow.fit import likelihood as lk
    from beastflow.fit.fitting import _prepare, _resolve_options
    from beastflow.fit.pdfs import binset_from_info

    s, gi, _ = default_fit
    grid, noise = open_sed_grid(field["trim"]), open_noise_model(field["trim_noise"])
    info = read_grid_info(gi)
    bs = binset_from_info(info, grid.columns, grid.filters, 50, [], False, "t")
    opts = _resolve_options(s, grid, info)
    c = _prepare(grid.read(), noise.read(), bs, opts, 0, "t", {"zero_weight": 0, "invalid_noise": 0})
    assert c.screen
    g, m, lnp, chi2, cat = _reference(field, gi)
    y = np.column_stack([cat[f"{b}_RATE"].to_numpy() for b in ("F275W", "F336W", "F475W", "F814W", "F110W", "F160W")])
    used = np.isfinite(y)
    y32, fast = c.screen_stars(np.where(used, y * synth.VEGA, 0.0), used)
    assert fast.sum() >= len(y) - 1  # star 3 has no F275W flux
    n = c.m.shape[1]
    acc, l32 = np.empty(n, np.float32), np.empty(n, np.float32)
    worst = 0.0
    for e in np.flatnonzero(fast):
        lk._tile32(y32, e, c.m32, c.hv32, c.c32, 0, n, acc, l32)
        # the chunk holds the models in its visiting order: row c.rowid[i] of the grid at i
        lnp_e, chi2_e = lnp[e][c.rowid], chi2[e][c.rowid]
        near = lnp_e > lnp_e.max() - 100
        worst = max(worst, np.abs(l32[near] + c.cref - lnp_e[near]).max())
        np.testing.assert_allclose(-2.0 * acc[near], chi2_e[near], rtol=1e-5, atol=lk.SCREEN_MARGIN / 100)
    assert worst < lk.SCREEN_MARGIN / 100, worst


def test_float32_screen_in_compat_mode_gives_the_float64_results_bit_for_bit(field, tmp_path, synth_vega, monkeypatch):
    """Compat (thresholds -10, chi2min over the sparse set, Pmax a log, bins from the
    trimmed grid) with and without the float32 screen: the same files, bit for bit."""
    from beastflow.fit import fitting

    s = settings_for(tmp_path, lnp_npts=50).model_copy(update={"compat": "beast-2.1"})
    r = run_fit(s, field["trim"], field["trim_noise"], field["cat0"], None, str(tmp_path / "A_bin0_sub0"))
    monkeypatch.setattr(fitting, "SCREEN", False)
    r64 = run_fit(s, field["trim"], field["trim_noise"], field["cat0"], None, str(tmp_path / "B_bin0_sub0"))
    _assert_same_outputs(r, r64)


def _assert_same_outputs(r, r64):
    """Stats, 1-D and 2-D PDFs and lnP samples of two fits: equal bit for bit."""
    from beastflow.fit.outputs import LNP_FIELDS, read_pdf2d

    a, b = read_stats(r.stats)[0], read_stats(r64.stats)[0]
    for c in a.columns:
        assert a[c].equals(b[c]), c
    pa, pb = read_pdf1d(r.pdf1d), read_pdf1d(r64.pdf1d)
    for q in pa["quantities"]:
        np.testing.assert_array_equal(pa["pdf"][q], pb["pdf"][q], err_msg=q)
    p2a, p2b = read_pdf2d(r.pdf2d), read_pdf2d(r64.pdf2d)
    for p in p2a["pairs"]:
        np.testing.assert_array_equal(p2a["pdf"][p], p2b["pdf"][p], err_msg=p)
    la, lb = read_lnp(r.lnp), read_lnp(r64.lnp)
    for k in ("offsets", "n_candidates", "truncated_key", "lnPmax", *LNP_FIELDS):
        np.testing.assert_array_equal(la[k], lb[k], err_msg=k)
