import math

import numpy as np
import polars as pl
import pytest

from beastflow.behaviour import PROFILES
from beastflow.io.noise_model import open_noise_model
from beastflow.io.sed_grid import open_sed_grid
from beastflow.noise.ast_stats import gaussian_halfwidth
from beastflow.noise.toothpick import (
    ToothpickStats,
    ast_binned_stats,
    evaluate_on_grid,
    evaluate_on_grid_numpy,
    run_noisemodel,
)
from beastflow.settings import settings_from_dict

from .conftest import BANDS, FILTERS, ast_flux_range, synthetic_seds, write_grid


def direct_stats(asts, band, vega_k, n_bins, min_per_bin=10, ratio=2.0):
    """The spec's recipe written out plainly, star by star, bin by bin."""
    mag = asts[f"{band}_IN"].to_numpy()
    rate = asts[f"{band}_RATE"].to_numpy()
    cut = asts["CUT_FLAG"].to_numpy()
    rows = [i for i in range(len(mag)) if math.isfinite(mag[i]) and math.isfinite(rate[i])]
    fin = [10 ** (-0.4 * mag[i]) for i in rows]
    fout = []
    for i, f in zip(rows, fin):
        o = 0.0 if cut[i] > 0 else rate[i]
        if o != 0 and o / f > ratio:
            o = 0.0
        fout.append(o)
    lo = math.log10(min(fin))
    hi = math.log10(max(fin) * 1.000001)
    d = (hi - lo) / n_bins
    out = []
    for i in range(n_bins):
        a, b = 10 ** (lo + i * d), 10 ** (lo + i * d + d)
        members = [(x, y) for x, y in zip(fin, fout) if a <= x < b]
        rec = [(x, y) for x, y in members if y != 0]
        if len(rec) > min_per_bin:
            diff = np.array([y - x for x, y in rec])
            p16, p50, p84 = np.percentile(diff, [16, 50, 84])
            # default mode: the half-width over its expectation for len(rec) unit normals
            out.append(
                (
                    10 ** (lo + (i + 0.5) * d) * vega_k,
                    p50 * vega_k,
                    (p84 - p16) / 2 / gaussian_halfwidth(len(rec)) * vega_k,
                    len(rec) / len(members),
                )
            )
    return np.array(out).reshape(-1, 4)


@pytest.mark.parametrize("n_bins", [4, 6, 10])
def test_binned_stats_match_direct_computation_on_real_asts(asts, vega, n_bins):
    stats = ast_binned_stats(asts, FILTERS, n_bins, 10, 2.0, vega, behaviour=PROFILES["none"].noise)
    for k, band in enumerate(BANDS):
        ref = direct_stats(asts, band, vega[k], n_bins)
        bs = stats[k]
        assert len(bs.centres) == len(ref) > 0, band
        np.testing.assert_allclose(bs.centres, ref[:, 0], rtol=1e-12)
        np.testing.assert_allclose(bs.bias, ref[:, 1], rtol=1e-10, atol=1e-30)
        np.testing.assert_allclose(bs.error, ref[:, 2], rtol=1e-10, atol=1e-30)
        np.testing.assert_allclose(bs.completeness, ref[:, 3], rtol=1e-14)
        # the diagnostics count every inserted fake star of the band exactly once
        assert bs.binned.n.sum() == np.isfinite(asts[f"{band}_IN"].to_numpy()).sum()


def test_completeness_in_range_and_falls_towards_faint_fluxes(asts, vega):
    for n_bins in (4, 6):
        stats = ast_binned_stats(asts, FILTERS, n_bins, 10, 2.0, vega)
        for bs in stats.bands:
            c = bs.completeness
            assert np.all((c > 0) & (c <= 1)), bs.filter
            assert np.all(np.diff(bs.centres) > 0)
            # faintest kept bin is the least complete, and incomplete
            assert c[0] == c.min() and c[0] < 1, (bs.filter, c)
            # over ALL bins the completeness of the faint half is below the bright half
            b = bs.binned
            half = len(b.n) // 2
            assert b.n_rec[:half].sum() / b.n[:half].sum() < b.n_rec[half:].sum() / b.n[half:].sum()


def test_interpolation_exact_at_bin_centres_and_zero_outside(asts, vega):
    stats = ast_binned_stats(asts, FILTERS, 6, 10, 2.0, vega)
    nmax = max(len(b.centres) for b in stats.bands)
    seds = np.empty((nmax + 2, len(FILTERS)))
    for k, bs in enumerate(stats.bands):
        c = bs.centres
        col = np.concatenate([c, np.full(nmax - len(c), c[-1]), [c[0] * 0.999, c[-1] * 1.001]])
        seds[:, k] = col
    b, e, comp = evaluate_on_grid(stats, seds)
    for k, bs in enumerate(stats.bands):
        n = len(bs.centres)
        assert np.array_equal(b[:n, k], bs.bias)
        assert np.array_equal(e[:n, k], bs.error)
        assert np.array_equal(comp[:n, k], bs.completeness)
        assert b[-2, k] == e[-2, k] == comp[-2, k] == 0.0  # fainter than the faintest centre
        assert b[-1, k] == e[-1, k] == comp[-1, k] == 0.0  # brighter than the brightest
    # linear in flux between two centres
    bs = stats[0]
    x = 0.25 * bs.centres[1] + 0.75 * bs.centres[2]
    s2 = np.tile(seds[:1], (1, 1))
    s2[0, 0] = x
    _, _, c2 = evaluate_on_grid(stats, s2)
    assert c2[0, 0] == pytest.approx(0.25 * bs.completeness[1] + 0.75 * bs.completeness[2], rel=1e-12)


def test_numba_kernel_equals_numpy_reference(asts, vega):
    stats = ast_binned_stats(asts, FILTERS, 6, 10, 2.0, vega)
    lo, hi = ast_flux_range(asts, vega)
    seds = synthetic_seds(20000, lo, hi, seed=3)
    seds[0, 2] = np.nan
    for a2, flip in [(None, False), (np.full(6, 2.5e-4), True), (None, True)]:
        got = evaluate_on_grid(stats, seds, a2, flip)
        ref = evaluate_on_grid_numpy(stats, seds, a2, flip)
        for g, r in zip(got, ref):
            np.testing.assert_array_equal(g, r)
    b, e, c = evaluate_on_grid(stats, seds, np.full(6, 2.5e-4), True)
    assert np.all(e[c <= 0] < 0) and np.all(e[c > 0] > 0)


def _toy_table(n=400, nan_out=0, seed=0):
    rng = np.random.default_rng(seed)
    mag = rng.uniform(20, 25, n)
    fin = 10 ** (-0.4 * mag)
    fout = fin * (1 + rng.normal(0, 0.05, n))
    fout[rng.random(n) < 0.2] = 0.0
    if nan_out:
        fout[:nan_out] = np.nan
    return {"F475W_IN": mag, "F475W_RATE": fout, "CUT_FLAG": np.zeros(n)}, fin, fout


def test_nan_outputs_default_vs_beast_quirk():
    tab, fin, fout = _toy_table(nan_out=5)
    args = (["HST_ACS_WFC_F475W"], 2, 10, 2.0, [1.0])
    new = ast_binned_stats(tab, *args, behaviour=PROFILES["none"].noise)[0]
    old = ast_binned_stats(tab, *args, behaviour=PROFILES["beast-2.1"].noise)[0]
    # default: NaN outputs are non-recoveries, everything stays finite
    assert np.all(np.isfinite(new.bias)) and np.all(np.isfinite(new.error))
    assert new.binned.n.sum() == 400
    assert new.binned.n_rec.sum() == np.sum((fout != 0) & np.isfinite(fout))
    # BEAST 2.1 (no NaN input): NaN counts as recovered and poisons its bin's percentiles
    assert old.binned.n_rec.sum() == new.binned.n_rec.sum() + 5
    assert np.isnan(old.bias).any()


def test_blends_and_cut_flag_are_non_recoveries():
    tab, fin, fout = _toy_table()
    fout = fout.copy()
    fout[10] = fin[10] * 3.0  # a blend
    cut = np.zeros(len(fin))
    cut[20] = 1  # cut by quality flags
    tab = {"F475W_IN": tab["F475W_IN"], "F475W_RATE": fout, "CUT_FLAG": cut}
    s = ast_binned_stats(tab, ["HST_ACS_WFC_F475W"], 1, 10, 2.0, [1.0])[0]
    rec = (fout != 0) & ~(fout / fin > 2.0) & (cut == 0)
    assert s.binned.n_rec[0] == rec.sum()
    assert s.completeness[0] == rec.sum() / len(fin)
    st = ast_binned_stats(tab, ["HST_ACS_WFC_F475W"], 1, 10, 2.0, [1.0], statistic="stddev")[0]
    d = (fout - fin)[rec]
    assert st.bias[0] == pytest.approx(d.mean()) and st.error[0] == pytest.approx(d.std())


def _settings(tmp_path, **nm):
    return settings_from_dict(
        {"project": {"output": str(tmp_path)}, "noise_model": {"n_flux_bins": 6, "chunk_models": 1024, **nm}}
    )


def test_run_noisemodel_streams_and_matches_direct_evaluation(tmp_path, phat_asts_rate, asts, vega, monkeypatch):
    lo, hi = ast_flux_range(asts, vega)
    seds = synthetic_seds(5000, lo, hi, seed=1)
    grid = write_grid(tmp_path / "g.hd5", seds)
    from beastflow.io.noise_model import NoiseModelWriter

    blocks = []
    orig = NoiseModelWriter.append
    monkeypatch.setattr(NoiseModelWriter, "append", lambda self, b: (blocks.append(len(b["bias"])), orig(self, b))[1])
    out = run_noisemodel(_settings(tmp_path), grid, str(phat_asts_rate), str(tmp_path / "nm.hd5"))
    nm = open_noise_model(out)
    assert nm.n_models == 5000 and nm.filters == FILTERS and nm.sed_grid == grid
    assert nm.provenance["stage"] == "noisemodel" and "asts" in nm.provenance["input_hashes"]
    stats = ast_binned_stats(asts, FILTERS, 6, 10, 2.0, vega)
    b, e, c = evaluate_on_grid(stats, seds, None, True)
    blk = nm.read()
    np.testing.assert_array_equal(blk.bias, b)
    np.testing.assert_array_equal(blk.error, e)
    np.testing.assert_array_equal(blk.completeness, c)
    assert 0 < (c > 0).all(axis=1).sum() < 5000
    # the binned statistics travel in the artifact and re-evaluate identically
    again = ToothpickStats.from_dict(nm.meta["stats"])
    np.testing.assert_array_equal(evaluate_on_grid(again, seds)[2], c)
    assert blocks == [1024] * 4 + [904]  # streamed in [noise_model] chunk_models blocks
    # behaviour.noise.sign_flip_with_calibration_only alone: no calibration matrix, so no flip (BEAST)
    s1 = _settings(tmp_path).model_copy(update={"behaviour": {"noise": {"sign_flip_with_calibration_only": True}}})
    e1 = open_noise_model(run_noisemodel(s1, grid, str(phat_asts_rate), str(tmp_path / "nm1.hd5"))).read().error
    np.testing.assert_array_equal(e1, evaluate_on_grid(stats, seds, None, False)[1])
    assert not np.array_equal(np.signbit(e1), np.signbit(blk.error))


def test_run_noisemodel_absflux_term(tmp_path, phat_asts_rate, asts, vega):
    lo, hi = ast_flux_range(asts, vega)
    seds = synthetic_seds(3000, lo, hi, seed=2)
    grid = write_grid(tmp_path / "g.hd5", seds)
    rng = np.random.default_rng(0)
    a = rng.normal(0, 0.01, (6, 6))
    A = a @ a.T + np.diag(np.full(6, 1e-4))
    np.save(tmp_path / "cov.npy", A)
    out = run_noisemodel(
        _settings(tmp_path, absflux_covariance=str(tmp_path / "cov.npy")),
        grid,
        str(phat_asts_rate),
        str(tmp_path / "nm.hd5"),
    )
    blk = open_noise_model(out).read()
    stats = ast_binned_stats(asts, FILTERS, 6, 10, 2.0, vega)
    _, sig, c = evaluate_on_grid(stats, seds)
    expect = np.sqrt(np.diag(A) * seds**2 + sig**2)
    np.testing.assert_allclose(np.abs(blk.error), expect, rtol=1e-13)
    assert np.all(blk.error[c <= 0] < 0) and np.all(blk.error[c > 0] > 0)
    np.testing.assert_allclose(blk.arrays["covdiag"], np.diag(A) * seds**2, rtol=1e-13)
    ku, lu = np.triu_indices(6, 1)
    np.testing.assert_allclose(blk.arrays["covoffdiag"], A[ku, lu] * seds[:, ku] * seds[:, lu], rtol=1e-13)


def test_run_noisemodel_names_band_without_good_bin(tmp_path, phat_asts_rate, asts, vega):
    lo, hi = ast_flux_range(asts, vega)
    grid = write_grid(tmp_path / "g.hd5", synthetic_seds(100, lo, hi))
    with pytest.raises(ValueError, match=r"HST_ACS_WFC_F475W.*n_flux_bins = 50"):
        run_noisemodel(_settings(tmp_path, n_flux_bins=50), grid, str(phat_asts_rate), str(tmp_path / "nm.hd5"))
    assert not (tmp_path / "nm.hd5").exists()


def test_parquet_asts_from_split_stage(tmp_path, asts, vega):
    """The split stage's P_asts_bin{s}.parquet (upper-case columns) reads the same."""
    p = tmp_path / "P_asts_bin0.parquet"
    asts.write_parquet(p)
    lo, hi = ast_flux_range(asts, vega)
    seds = synthetic_seds(500, lo, hi)
    grid = write_grid(tmp_path / "g.hd5", seds)
    out = run_noisemodel(_settings(tmp_path), grid, str(p), str(tmp_path / "nm.hd5"))
    stats = ast_binned_stats(asts, FILTERS, 6, 10, 2.0, vega)
    np.testing.assert_array_equal(open_noise_model(out).read().completeness, evaluate_on_grid(stats, seds)[2])
    assert isinstance(asts, pl.DataFrame)
    assert open_sed_grid(grid).n_models == 500


def test_compat_equals_default_on_phat_small(asts, vega):
    """The real ASTs mark not-inserted bands with NaN inputs (BEAST 2.1's
    convention), so both modes drop the same rows and agree exactly -- except
    the error, which the default corrects for the bin's count (unbiased sigma)."""
    a = ast_binned_stats(asts, FILTERS, 6, 10, 2.0, vega, behaviour=PROFILES["none"].noise)
    b = ast_binned_stats(asts, FILTERS, 6, 10, 2.0, vega, behaviour=PROFILES["beast-2.1"].noise)
    for x, y in zip(a.bands, b.bands):
        for k in ("centres", "bias", "completeness"):
            np.testing.assert_array_equal(getattr(x, k), getattr(y, k))
        n_rec = x.binned.n_rec[x.binned.good]
        np.testing.assert_allclose(x.error, y.error / np.array([gaussian_halfwidth(int(n)) for n in n_rec]), rtol=1e-14)
