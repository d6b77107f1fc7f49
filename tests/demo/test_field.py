"""The synthetic field and its model instrument (beastflow.demo.field)."""

from __future__ import annotations

import numpy as np
import pytest

from beastflow.demo.field import (
    BAD_FLAG,
    NODATA_MAG,
    FieldGeometry,
    Instrument,
    default_instrument,
    make_field,
    observe_ast_list,
    vega_mags,
)
from beastflow.io.sed_grid import write_sed_grid

FILTERS = ["HST_WFC3_F275W", "HST_ACS_WFC_F475W", "HST_ACS_WFC_F814W"]
VEGA = np.array([3.7e-9, 5.3e-9, 1.1e-9])


def _instrument(**geo) -> Instrument:
    return default_instrument(FILTERS, VEGA, FieldGeometry(**{"size_arcsec": 30.0, **geo}))


def test_completeness_half_at_m50_and_brighter_limit_when_crowded():
    ins = _instrument()
    for b in ins.bands:
        rho = np.array([0.2, 1.0, 5.0])
        m50 = b.m50(rho)
        assert np.all(np.diff(m50) < 0), "the 50% point must move to brighter magnitudes with density"
        c = b.completeness(10 ** (-0.4 * m50), rho)
        np.testing.assert_allclose(c, 0.5, atol=1e-9)
        # sparse limit reproduces the configured depth
        assert abs(b.m50(np.array([0.0]))[0] - b.m50_sparse) < 1e-6
        # bright stars are always found, very faint never
        assert b.completeness(np.array([10 ** (-0.4 * (b.m50_sparse - 4))]), np.array([1.0]))[0] > 0.999
        assert b.completeness(np.array([10 ** (-0.4 * (b.m50_sparse + 4))]), np.array([1.0]))[0] < 1e-3


def test_measurement_noise_and_blending_bias():
    ins = _instrument()
    b = ins.bands[1]
    rng = np.random.default_rng(3)
    n = 200_000
    for mag, rho in [(b.m50_sparse - 0.3, 0.5), (b.m50_sparse - 5.0, 2.0)]:
        f = np.full(n, 10 ** (-0.4 * mag))
        d = np.full(n, rho)
        meas = b.measure(f, d, rng.standard_normal(n))
        k = b.counts_per_rate
        counts = f * k
        bg = b.background_var(d)
        sigma = np.sqrt(counts + bg + (b.sys_frac * counts) ** 2) / k
        assert abs(np.std(meas) / sigma[0] - 1) < 0.01
        bias = np.mean(meas - f) / sigma[0]
        if mag > b.m50_sparse - 1:
            assert bias > 0.1, "faint stars must be measured too bright (blending)"
        else:
            assert abs(bias) < 0.02, "bright stars are unbiased"


def test_density_gradient_and_projection_round_trip():
    geo = FieldGeometry(size_arcsec=40.0, gradient_pa_deg=0.0, density_contrast=4.0, mean_density=2.0)
    rng = np.random.default_rng(5)
    xi, eta = geo.draw_offsets(50_000, rng)
    assert np.all(np.abs(xi) <= 20) and np.all(np.abs(eta) <= 20)
    # gradient towards north: the northern half holds 4^(1/4)... ratio of integrals = 2 (exp profile, contrast 4)
    ratio = np.sum(eta > 0) / np.sum(eta <= 0)
    assert abs(ratio - 2.0) < 0.06
    dens = geo.density(np.zeros(3), np.array([-20.0, 0.0, 20.0]))
    np.testing.assert_allclose(dens[2] / dens[0], 4.0, rtol=1e-9)
    # mean over the patch = mean_density
    g = np.linspace(-20, 20, 201)
    X, Y = np.meshgrid(g, g)
    assert abs(geo.density(X, Y).mean() - 2.0) < 0.02
    ra, dec = geo.sky(xi[:100], eta[:100])
    x2, y2 = geo.tangent(ra, dec)
    np.testing.assert_allclose(x2, xi[:100], atol=1e-6)
    np.testing.assert_allclose(y2, eta[:100], atol=1e-6)


def test_instrument_json_round_trip():
    ins = _instrument(ra0=10.5, dec0=41.0)
    back = Instrument.from_json(ins.to_json())
    assert back == ins
    with pytest.raises(ValueError, match="not a beastflow demo instrument"):
        Instrument.from_json('{"bands": [{"name": "x"}], "geometry": {}}')


def _grid(tmp_path, mags: np.ndarray, weights: np.ndarray) -> str:
    seds = 10 ** (-0.4 * mags) * VEGA
    n = len(mags)
    cols = {
        "weight": weights,
        "Av": np.linspace(0, 1, n),
        "logA": np.linspace(7, 10, n),
        "M_ini": np.linspace(1, 5, n),
        "distance": np.full(n, 7.8e5),
    }
    return write_sed_grid(str(tmp_path / "g.hd5"), FILTERS, np.array([2700.0, 4750.0, 8100.0]), seds, cols)


def test_make_field_draws_by_prior_times_detection(tmp_path):
    # model 0 and 1: equally bright, prior weights 1 : 3; model 2: bright but
    # zero weight; model 3: far too faint to be detected anywhere.
    mags = np.array([[22.0, 24.0, 23.0], [22.0, 24.0, 23.0], [20.0, 21.0, 20.0], [35.0, 36.0, 35.0]])
    url = _grid(tmp_path, mags, np.array([1.0, 3.0, 0.0, 50.0]))
    ins = _instrument()
    fld = make_field(url, ins, 4000, seed=11)
    idx = fld.truth["sedgrid_indx"]
    assert len(idx) == 4000 and set(np.unique(idx)) <= {0, 1}
    frac1 = np.mean(idx == 1)
    assert abs(frac1 - 0.75) < 0.03
    cat = fld.catalog
    np.testing.assert_array_equal(cat["star_id"], np.arange(4000))
    # truth columns come from the drawn grid rows
    np.testing.assert_allclose(fld.truth["Av"], np.linspace(0, 1, 4)[idx])
    np.testing.assert_allclose(fld.truth["F475W_TRUE_VEGA"], 24.0)
    # measured photometry scatters around the truth (bright: small bias)
    assert abs(np.median(cat["F814W_VEGA"]) - 23.0) < 0.05
    for s in ("F275W", "F475W", "F814W"):
        rate, vega, flag = cat[f"{s}_RATE"], cat[f"{s}_VEGA"], cat[f"{s}_FLAG"]
        assert np.all(vega[rate <= 0] == NODATA_MAG)
        np.testing.assert_allclose(vega[rate > 0], -2.5 * np.log10(rate[rate > 0]))
        assert set(np.unique(flag)) <= {0, BAD_FLAG}
    nbad = sum(int(np.sum(cat[f"{s}_FLAG"] == BAD_FLAG)) for s in ("F275W", "F475W", "F814W"))
    assert 0 < nbad < 0.02 * 3 * 4000
    # positions follow the density gradient: the denser half of the patch (by
    # area) holds about 2/3 of the stars for a contrast of 4 (1/2 if uniform);
    # binomial sigma with 4000 stars is 0.0075
    dens = fld.truth["true_density"]
    g = np.linspace(-15.0, 15.0, 301)
    area_median = np.median(ins.geometry.density(*np.meshgrid(g, g)))
    assert np.mean(dens > area_median) > 0.6


def test_faint_stars_are_lost_in_dense_regions(tmp_path):
    # a model at the sparse 50% limit of every band is found less often where crowded
    ins = _instrument(density_contrast=8.0, mean_density=3.0)
    m50 = np.array([b.m50_sparse for b in ins.bands]) + 0.3
    url = _grid(tmp_path, np.array([m50, m50 - 6.0]), np.array([20.0, 1.0]))
    fld = make_field(url, ins, 3000, seed=2)
    faint = fld.truth["sedgrid_indx"] == 0
    d = fld.truth["true_density"]
    # the bright model traces the density; the faint one is suppressed at high density
    assert np.median(d[faint]) < np.median(d[~faint])


def test_make_field_refuses_undetectable_grid_and_wrong_filters(tmp_path):
    url = _grid(tmp_path, np.array([[40.0, 40.0, 40.0]]), np.array([1.0]))
    with pytest.raises(ValueError, match="detectable"):
        make_field(url, _instrument(), 10, seed=1)
    other = default_instrument(FILTERS[:2], VEGA[:2])
    with pytest.raises(ValueError, match="differ"):
        make_field(url, other, 10, seed=1)


def test_observe_asts_completeness_and_columns():
    ins = _instrument()
    rng = np.random.default_rng(9)
    n = 20_000
    mags = rng.uniform(22, 31, size=(n, 1)) + np.array([[1.5, 0.0, -0.7]])
    xi, eta = ins.geometry.draw_offsets(n, rng)
    ra, dec = ins.geometry.sky(xi, eta)
    inputs = {"RA": ra, "DEC": dec, **{f: mags[:, k] for k, f in enumerate(FILTERS)}}
    out = observe_ast_list(ins, inputs, seed=4)
    rec = out["recovered"].astype(bool)
    for s in ("F275W", "F475W", "F814W"):
        assert np.all(out[f"{s}_RATE"][~rec] == 0)
        assert np.all(out[f"{s}_VEGA"][~rec] == NODATA_MAG)
        assert np.all(out[f"{s}_RATE"][rec] != 0)
    np.testing.assert_allclose(out["F475W_IN"], mags[:, 1])
    # recovery fraction follows the detection probability
    p = ins.detection_probability(10 ** (-0.4 * mags), out["true_density"])
    for lo, hi in [(0.0, 0.2), (0.4, 0.6), (0.8, 1.01)]:
        sel = (p >= lo) & (p < hi)
        assert abs(rec[sel].mean() - p[sel].mean()) < 0.03
    flagged = np.zeros(n, bool)
    for s in ("F275W", "F475W", "F814W"):
        flagged |= out[f"{s}_FLAG"] == BAD_FLAG
    np.testing.assert_array_equal(out["CUT_FLAG"] == 1, flagged)
    assert flagged.any()
    # X/Y input gives the same positions
    out2 = observe_ast_list(ins, {"X": out["X"], "Y": out["Y"], **{f: mags[:, k] for k, f in enumerate(FILTERS)}}, 4)
    np.testing.assert_allclose(out2["RA"], ra, atol=1e-9)
    np.testing.assert_allclose(out2["DEC"], dec, atol=1e-9)
    with pytest.raises(ValueError, match="no magnitude column"):
        observe_ast_list(ins, {"RA": ra, "DEC": dec}, 1)


def test_vega_mags_nodata():
    np.testing.assert_allclose(vega_mags(np.array([1.0, 0.01, 0.0, -1.0])), [0.0, 5.0, NODATA_MAG, NODATA_MAG])


def test_detected_fraction_matches_prior_average_of_detection(tmp_path):
    # one model far above the limit (always found) and one far below (never):
    # with prior weights 1 : 3 a quarter of the placed stars are detected
    ins = _instrument()
    m_lim = np.array([b.m50_sparse for b in ins.bands])
    url = _grid(tmp_path, np.array([m_lim - 5, m_lim + 8]), np.array([1.0, 3.0]))
    fld = make_field(url, ins, 2000, seed=3)
    assert np.all(fld.truth["sedgrid_indx"] == 0)
    assert fld.n_candidates == pytest.approx(8000, rel=0.01)


def test_a_changed_model_changes_only_its_own_stars(tmp_path):
    """A difference in one model's fluxes (another CPU's exp/log, a changed
    isochrone point) may change which of *its* proposals are detected, and
    nothing else: every other star keeps its position and its noise.

    Before, the noise was drawn in catalogue order after the selection, so one
    star more or less shifted the noise of every star after it.
    """
    ins = _instrument()
    m_lim = np.array([b.m50_sparse for b in ins.bands])
    rng = np.random.default_rng(12)
    mags = rng.uniform(-6.0, -1.0, size=(50, 1)) + m_lim + rng.normal(0.0, 0.3, size=(50, 3))
    mags[0] = m_lim  # model 0: at the detection limit, often proposed
    w = rng.uniform(0.1, 1.0, 50)
    w[0] = 20.0
    n = len(mags)
    cols = {
        "weight": w,
        "Av": np.linspace(0, 1, n),
        "logA": np.linspace(7, 10, n),
        "M_ini": np.linspace(1, 5, n),
        "distance": np.full(n, 7.8e5),
    }
    seds = 10 ** (-0.4 * mags) * VEGA
    urls = []
    for tag, scale in (("a", 1.0), ("b", 1.05)):
        (tmp_path / tag).mkdir()
        s2 = seds.copy()
        s2[0] *= scale
        urls.append(
            write_sed_grid(str(tmp_path / tag / "g.hd5"), FILTERS, np.array([2700.0, 4750.0, 8100.0]), s2, cols)
        )
    fa, fb = (make_field(u, ins, 1500, seed=5) for u in urls)
    ia, ib = fa.truth["sedgrid_indx"], fb.truth["sedgrid_indx"]
    assert np.sum(ia == 0) != np.sum(ib == 0), "the test needs model 0's detections to change"
    # The same proposal (matched by its position, which only the proposal's own
    # uniforms set) of the same unchanged model must be measured identically.
    # Model 0's changed detection probability shifts the proposal CDF a little,
    # so some proposals pick a neighbouring model: those are left out.
    pos_a = {(x, y): i for i, (x, y) in enumerate(zip(fa.catalog["RA"], fa.catalog["DEC"]))}
    pairs = [(pos_a[(x, y)], i) for i, (x, y) in enumerate(zip(fb.catalog["RA"], fb.catalog["DEC"])) if (x, y) in pos_a]
    ra_, rb_ = np.array(pairs).T
    same = (ia[ra_] == ib[rb_]) & (ia[ra_] != 0)
    assert same.sum() > 0.25 * len(ia)
    for s in ("F275W", "F475W", "F814W"):
        np.testing.assert_array_equal(fa.catalog[f"{s}_RATE"][ra_[same]], fb.catalog[f"{s}_RATE"][rb_[same]])
    # and a different seed is a different field
    fc = make_field(urls[0], ins, 1500, seed=6)
    assert not np.array_equal(fa.catalog["RA"], fc.catalog["RA"])


def test_positions_follow_the_density_by_inverse_cdf():
    """Inverse-CDF positions: two uniforms per star, and the profile along the gradient is exponential."""
    geo = FieldGeometry(size_arcsec=40.0, gradient_pa_deg=90.0, density_contrast=9.0)
    n = 200_000
    xi, eta = geo.draw_offsets(n, np.random.default_rng(1))
    assert np.all(np.abs(xi) <= 20) and np.all(np.abs(eta) <= 20)
    # along east the density rises by 9 over 40": counts in the outer fifths differ by ~9^(4/5)
    lo = np.sum(xi < -12)
    hi = np.sum(xi > 12)
    expected = 9.0**0.8
    # Poisson error of the ratio is ~ ratio * sqrt(1/lo + 1/hi) ~ 1.3 %; allow 4 sigma
    assert abs(hi / lo / expected - 1) < 4 * np.sqrt(1 / lo + 1 / hi)
    # no gradient across it
    assert abs(np.mean(eta > 0) - 0.5) < 4 * 0.5 / np.sqrt(n)
