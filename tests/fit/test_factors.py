"""The fit kernels' factored sums (beastflow/fit/factors.py) and their exp."""

import math

import numpy as np
import pytest

from beastflow.fit import fitting
from beastflow.fit import likelihood as lk
from beastflow.fit.factors import GridFactors, grid_factors, visiting_order
from beastflow.fit.fitting import run_fit
from beastflow.fit.grid_info import run_grid_info
from beastflow.fit.outputs import read_lnp, read_pdf1d, read_stats
from beastflow.io.sed_grid import open_sed_grid
from beastflow.simulate import simulate_observations

from . import synth
from .conftest import settings_for


def _unfactored(qnames, qvals, pairs, visit):
    """Nothing factored: every quantity added model by model (in the same visiting order)."""
    nq, n = qvals.shape
    return GridFactors(
        perm=visit.order,
        stellar=np.arange(n, dtype=np.int64),
        dustpt=np.zeros(n, np.int64),
        n_dust=0,
        qorder=np.arange(nq, dtype=np.int64),
        porder=np.arange(len(pairs), dtype=np.int64),
        layout=np.array([nq, 0, len(pairs), 0], dtype=np.int64),
        dust_rep=np.zeros(0, np.int64),
    )


def _factors(names, qvals, pairs, columns):
    """grid_factors of the rows in ``columns`` as the fit visits them."""
    v = visiting_order(columns)
    return grid_factors(names, qvals if v.order is None else qvals[:, v.order], pairs, v)


def test_factors_of_a_dust_major_grid(field):
    """synth grids are stored as BEAST stores them, dust point by dust point: the factors
    visit each stellar model's rows together and sort the quantities by what they depend on."""
    g = open_sed_grid(field["trim"]).read()
    names = ["Av", "Rv", "f_A", "M_ini", "logA", "logL", "logHST_ACS_WFC_F475W_nd", "logHST_ACS_WFC_F475W_wd"]
    qv = np.stack([g.columns[q] for q in names])
    f = _factors(names, qv, [(0, 1), (3, 4), (0, 3)], g.columns)
    assert f.perm is not None and sorted(f.perm) == list(range(len(g.seds)))
    st = f.stellar
    assert np.all(np.diff(st) >= 0)  # each stellar model's rows consecutive
    spec = g.columns["specgrid_indx"][f.perm]
    assert all(len(np.unique(spec[st == i])) == 1 for i in range(0, st.max() + 1, 7))
    kind = {names[i]: k for k, part in zip(("direct", "stellar", "dust"), np.split(f.qorder, np.cumsum(f.layout[:2])))
            for i in part}  # fmt: skip
    assert kind == {
        "Av": "dust", "Rv": "dust", "f_A": "dust", "M_ini": "stellar", "logA": "stellar", "logL": "stellar",
        "logHST_ACS_WFC_F475W_nd": "stellar", "logHST_ACS_WFC_F475W_wd": "direct",
    }  # fmt: skip
    # pairs: (Av, Rv) dust, (M_ini, logA) stellar, (Av, M_ini) direct
    assert list(f.porder) == [2, 1, 0] and list(f.layout[2:]) == [1, 1]
    # dust points: one id per (Av, Rv, f_A), the representative row has its values
    key = np.stack([g.columns[q][f.perm] for q in ("Av", "Rv", "f_A")], axis=1)
    assert f.n_dust == len(np.unique(key, axis=0))
    for d in range(f.n_dust):
        assert (key[f.dustpt == d] == key[f.dust_rep[d]]).all()


def test_a_quantity_varying_within_a_stellar_model_is_not_factored(field):
    g = open_sed_grid(field["trim"]).read()
    noisy = g.columns["M_ini"] * (1 + 1e-12 * (g.columns["Av"] > 1))  # depends on dust by a hair
    f = _factors(["M_ini"], noisy[None, :], [], g.columns)
    assert list(f.layout[:2]) == [1, 0]
    f = _factors(["M_ini"], noisy[None, :], [], {k: v for k, v in g.columns.items() if k != "specgrid_indx"})
    assert f.perm is None and list(f.layout[:2]) == [1, 0]  # no stellar model named: nothing factored


def test_factored_sums_are_the_model_by_model_sums(field, tmp_path, synth_vega, monkeypatch):
    """Stats, PDFs and lnP samples with the factored sums against every quantity added model
    by model in stored order: the same to rounding (1e-12 of each column's scale), the
    same indices and lnP samples."""
    s = settings_for(tmp_path, lnp_npts=50, pdf2d_pairs=[["Av", "Rv"], ["logA", "M_ini"], ["Av", "logA"]])
    gi = run_grid_info(s, [field["full"]], out_url=str(tmp_path / "gi.json")).grid_info
    a = run_fit(s, field["trim"], field["trim_noise"], field["cat0"], gi, str(tmp_path / "A_bin0_sub0"))
    monkeypatch.setattr(fitting, "grid_factors", _unfactored)
    b = run_fit(s, field["trim"], field["trim_noise"], field["cat0"], gi, str(tmp_path / "B_bin0_sub0"))
    sa, sb = read_stats(a.stats)[0], read_stats(b.stats)[0]
    for c in sa.columns:
        if c.endswith(("_indx", "_gid")) or not sa[c].dtype.is_numeric():
            assert sa[c].equals(sb[c]), c
        else:
            x, y = sa[c].to_numpy(), sb[c].to_numpy()
            # to rounding of the column's scale (a percentile may sit near 0)
            np.testing.assert_allclose(x, y, rtol=1e-12, atol=1e-12 * np.nanmax(np.abs(x)), err_msg=c)
    pa, pb = read_pdf1d(a.pdf1d), read_pdf1d(b.pdf1d)
    for q in pa["quantities"]:
        np.testing.assert_allclose(pa["pdf"][q], pb["pdf"][q], rtol=1e-12, atol=1e-15, err_msg=q)
    la, lb = read_lnp(a.lnp), read_lnp(b.lnp)
    for k in ("gid", "lnp", "chi2", "key", "offsets", "n_candidates"):
        np.testing.assert_array_equal(la[k], lb[k], err_msg=k)


def test_ties_keep_the_first_stored_row(tmp_path, synth_vega):
    """Two identical models: Best and chi2min name the one stored first, although the
    factors visit the other's stellar model first."""
    seds, cols = synth.make_models(n_mass=8, logas=(8.0, 9.0), zs=(0.019,), avs=(0.0, 0.5), rvs=(3.1,), fas=(1.0,))
    n0 = len(seds) // 2  # stellar models per dust point; rows [0, n0) at Av = 0
    a, b = 5, n0 + 3  # b: stellar model 3 (visited before model 5), stored after a
    seds[b] = seds[a]
    for k in cols:
        if k != "specgrid_indx":
            cols[k][b] = cols[k][a]
    grid = synth.write_grid(tmp_path / "g.hd5", seds, cols)
    noise = synth.write_noise(tmp_path / "n.hd5", seds)
    s = settings_for(tmp_path, lnp_npts=0)
    gi = run_grid_info(s, [grid], out_url=str(tmp_path / "gi.json")).grid_info
    cat = simulate_observations(grid, noise, 4, 1, synth.VEGA)
    for band in ("F275W", "F336W", "F475W", "F814W", "F110W", "F160W"):
        k = ["F275W", "F336W", "F475W", "F814W", "F110W", "F160W"].index(band)
        cat = cat.with_columns(cat[f"{band}_RATE"] * 0 + seds[a, k] / synth.VEGA[k])
    cat.write_parquet(tmp_path / "c.parquet")
    g = open_sed_grid(grid).read()
    f = _factors(["M_ini"], g.columns["M_ini"][None, :], [], g.columns)
    pos = np.argsort(f.perm)
    assert pos[b] < pos[a]  # the duplicate stored later is visited first
    r = run_fit(s, grid, noise, str(tmp_path / "c.parquet"), gi, str(tmp_path / "F_bin0_sub0"))
    st = read_stats(r.stats)[0]
    assert (st["Pmax_indx"] == a).all() and (st["chi2min_indx"] == a).all()


@pytest.mark.parametrize("seed", [0, 1])
def test_exp_is_within_one_ulp_of_the_c_library(seed):
    rng = np.random.default_rng(seed)
    x = np.concatenate([-rng.uniform(0, 60, 4000), -rng.uniform(0, 708, 4000), [0.0, -0.0, -1e-300, -708.0]])
    w, tmp = x.copy(), np.empty_like(x)
    lk._exp_inplace(w, len(w), tmp)
    ref = np.array([math.exp(v) for v in x])
    assert np.all(np.abs(w - ref) <= np.spacing(ref)), np.max(np.abs(w - ref) / np.spacing(ref))
    assert (w == ref).mean() > 0.8
    w = np.array([-800.0, -1e5])
    lk._exp_inplace(w, 2, np.empty(2))
    assert np.all(np.abs(w - math.exp(-708.0)) <= np.spacing(math.exp(-708.0)))  # clamped: no sum resolves it


def test_default_statistics_threshold_moves_nothing_beyond_its_bound(field, tmp_path, synth_vega):
    """Default threshold ln(1e-9 / N): every PDF within 1e-9 of its peak and every Exp within
    1e-9 of the quantity's range of the fit that skips only terms below e^-60 of the peak."""
    s = settings_for(tmp_path, lnp_npts=10)
    gi = run_grid_info(s, [field["full"]], out_url=str(tmp_path / "gi.json")).grid_info
    a = run_fit(s, field["trim"], field["trim_noise"], field["cat0"], gi, str(tmp_path / "A_bin0_sub0"))
    s60 = settings_for(tmp_path, lnp_npts=10, stats_threshold=-60.0)
    b = run_fit(s60, field["trim"], field["trim_noise"], field["cat0"], gi, str(tmp_path / "B_bin0_sub0"))
    (sa, meta), sb = read_stats(a.stats), read_stats(b.stats)[0]
    n = open_sed_grid(field["trim"]).n_models
    thr = meta["meta"]["stats_threshold"]
    assert thr == pytest.approx(math.log(1e-9 / n)) and thr > -60
    pa, pb = read_pdf1d(a.pdf1d), read_pdf1d(b.pdf1d)
    for q in pa["quantities"]:
        peak = pb["pdf"][q].max(axis=1, keepdims=True)
        assert np.all(np.abs(pa["pdf"][q] - pb["pdf"][q]) <= 1e-9 * peak), q
        x, y = sa[f"{q}_Exp"].to_numpy(), sb[f"{q}_Exp"].to_numpy()
        assert np.all(np.abs(x - y) <= 1e-9 * (np.abs(y).max() + 1e-300)), q
