import os

import numpy as np
import polars as pl
import pytest

from beastflow.io.noise_model import open_noise_model, write_noise_model
from beastflow.io.sed_grid import SEDGrid, open_sed_grid
from beastflow.io.trim_index import open_kept, read_trim_index
from beastflow.noise import trim as trim_mod
from beastflow.noise.toothpick import run_noisemodel
from beastflow.noise.trim import (
    TrimError,
    TrimJob,
    decide_bands,
    run_trim,
    trim_patterns,
    trim_patterns_numpy,
)
from beastflow.settings import settings_from_dict

from .conftest import BANDS, FILTERS, ast_flux_range, synthetic_seds, write_grid

SIGMA_FAC = 3.0
NBINS = 5  # phat_small has few ASTs: 5 bins give the widest joint coverage (README)


def _settings(tmp_path, compat="none", behaviour=None, **trim):
    return settings_from_dict(
        {
            "compat": compat,
            "project": {"output": str(tmp_path)},
            "noise_model": {"n_flux_bins": NBINS, "chunk_models": 1024},
            "trim": {"chunk_models": 1024, **trim},
            "behaviour": behaviour or {},
        }
    )


def _split_catalog(phat_catalog, tmp_path, n_files=3):
    """The real catalog sorted by F475W flux and split like the split stage does."""
    from beastflow.observations.catalogs import read_photometry

    df = read_photometry(str(phat_catalog), FILTERS).sort("F475W_RATE")
    urls = []
    for u, part in enumerate(np.array_split(np.arange(df.height), n_files)):
        url = str(tmp_path / f"P_bin0_sub{u}.parquet")
        df[part.tolist()].select(["star_id"] + [f"{b}_RATE" for b in BANDS]).write_parquet(url)
        urls.append(url)
    return df, urls


@pytest.fixture
def trimmed(tmp_path, phat_catalog, phat_asts_rate, asts, vega):
    df, urls = _split_catalog(phat_catalog, tmp_path)
    obs = np.column_stack([df[f"{b}_RATE"].to_numpy() for b in BANDS]) * vega
    lo, hi = ast_flux_range(asts, vega)
    seds = synthetic_seds(20000, lo, hi, seed=5, anchors=obs)
    grid = write_grid(tmp_path / "P_seds.grid.hd5", seds)
    s = _settings(tmp_path, materialize=True)  # BEAST-style copies too: checked against the index
    noise = run_noisemodel(s, grid, str(phat_asts_rate), str(tmp_path / "P_bin0_noisemodel.hd5"))
    # the faintest third (urls[0]) lies below the few ASTs' coverage: see test_faint_subfile_*
    jobs = [
        TrimJob(u, str(tmp_path / f"t{i}_seds.hd5"), str(tmp_path / f"t{i}_noise.hd5"))
        for i, u in enumerate(urls)
        if i > 0
    ]
    results = run_trim(s, grid, noise, jobs)
    return dict(
        grid=grid,
        noise=noise,
        urls=urls[1:],
        faint=urls[0],
        results=results,
        seds=seds,
        vega=vega,
        jobs=jobs,
        tmp=tmp_path,
    )


def _obs(url, vega):
    d = pl.read_parquet(url)
    return np.column_stack([d[f"{b}_RATE"].to_numpy() for b in BANDS]) * vega


def _chi2_check(trimmed, results, sigma_fac, window):
    """Plain-numpy chi2 of every star against every model of the full grid."""
    seds = trimmed["seds"]
    nm = open_noise_model(trimmed["noise"]).read()
    valid = np.all(nm.completeness > 0, axis=1) & np.all(nm.error > 0, axis=1)
    v = seds + nm.bias
    err = np.where(valid[:, None], nm.error, 1.0)
    n_checked = 0
    for url, res in zip(trimmed["urls"], results):
        kept = set(read_trim_index(res.index_url).kept.tolist())
        assert 0 < res.n_kept == len(kept) < valid.sum()
        y = _obs(url, trimmed["vega"])
        # chi2 (spec fitting.md §2) per star, model, band
        terms = ((y[:, None, :] - v[None, :, :]) / err[None, :, :]) ** 2
        chi2 = terms.sum(axis=2)
        chi2[:, ~valid] = np.inf
        # (a) guarantee: a model within sigma_fac errors of any star in every band is kept
        must = np.flatnonzero(valid & (terms.max(axis=2) <= sigma_fac**2).any(axis=0))
        assert set(must.tolist()) <= kept
        # (b) for the 5 best-fitted stars: every model with chi2 <= min + window is kept
        best = np.argsort(chi2.min(axis=1))[:5]
        for i in best:
            near = np.flatnonzero(chi2[i] <= chi2[i].min() + window)
            assert len(near) > 0 and set(near.tolist()) <= kept, (url, i, sorted(set(near.tolist()) - kept))
            n_checked += len(near)
    assert n_checked >= 10


def test_trim_never_drops_a_model_a_star_could_fit(trimmed):
    # window 20 = lnP within 10 of the best: the only models that enter any
    # BEAST statistic (fitting.md §2).  A window of 100 is NOT guaranteed at
    # sigma_fac = 3: one model of one star here has chi2 = min + 97 with a
    # 9.8-sigma F475W residual, 5.5 sigma above the sub-file's range.
    _chi2_check(trimmed, trimmed["results"], SIGMA_FAC, 20.0)


def test_trim_keeps_chi2_within_100_at_sigma_fac_10(trimmed):
    tmp = trimmed["tmp"]
    jobs = [TrimJob(j.catalog_url, j.out_grid_url + ".w", j.out_noise_url + ".w") for j in trimmed["jobs"]]
    res = run_trim(_settings(tmp, sigma_fac=10.0), trimmed["grid"], trimmed["noise"], jobs)
    # default mode keeps sigma-rule OR lossless-bound survivors: a wider window never keeps fewer
    assert all(r.n_kept >= r0.n_kept for r, r0 in zip(res, trimmed["results"]))
    _chi2_check(trimmed, res, 10.0, 100.0)


def test_trim_outputs_match_direct_criterion(trimmed):
    seds = trimmed["seds"]
    g_full = open_sed_grid(trimmed["grid"]).read()
    nm_full = open_noise_model(trimmed["noise"]).read()
    for url, res in zip(trimmed["urls"], trimmed["results"]):
        y = _obs(url, trimmed["vega"])
        ymin, ymax = y.min(axis=0), y.max(axis=0)
        v = seds + nm_full.bias
        d = SIGMA_FAC * nm_full.error
        covered = np.all(nm_full.completeness > 0, axis=1) & np.all(nm_full.error > 0, axis=1)
        sigma_keep = covered & np.all((v + d >= ymin) & (v - d <= ymax), axis=1)
        # default lossless rule (module doc of trim.py), brute force over every model:
        # -lnP_ij = -ln w_j - ln min_k c_jk + sum_k [ln e_jk + ln(2pi)/2 + (y_ik - m_jk)^2 / (2 e_jk^2)]
        e = np.where(covered[:, None], nm_full.error, 1.0)
        a = np.log(g_full.columns["weight"]) + np.log(np.where(covered, nm_full.completeness.min(axis=1), 1.0))
        lne = (np.log(e) + 0.5 * np.log(2 * np.pi)).sum(axis=1)
        nlp = -a + lne + 0.5 * (((y[:, None, :] - v[None, :, :]) / e[None, :, :]) ** 2).sum(axis=2)
        nlp[:, ~covered] = np.inf
        dist = np.maximum(ymin - v, 0) + np.maximum(v - ymax, 0)
        b = -a + lne + 0.5 * ((dist / e) ** 2).sum(axis=1)
        assert np.all(b[covered] <= nlp[:, covered].min(axis=0) + 1e-9)  # B_j is a lower bound
        thr = nlp.min(axis=1).max() + trim_mod.LOSSLESS_MARGIN + np.log(len(seds))
        keep = sigma_keep | (covered & (b <= thr))
        idx = np.flatnonzero(keep)
        # lossless: every dropped model is > T + ln N below each star's peak lnP
        assert np.all(nlp[:, ~keep] - nlp.min(axis=1)[:, None] > trim_mod.LOSSLESS_MARGIN + np.log(len(seds)))
        g = open_sed_grid(res.grid_url)
        assert g.filters == FILTERS and g.columns[-1] == "fullgrid_idx"
        assert g.provenance["stage"] == "trim" and g.provenance["inputs"]["catalog"] == url
        blk = g.read()
        np.testing.assert_array_equal(blk.columns["fullgrid_idx"], idx)
        np.testing.assert_array_equal(blk.seds, seds[idx])
        for c in ("Av", "logA", "weight"):
            np.testing.assert_array_equal(blk.columns[c], g_full.columns[c][idx])
        tn = open_noise_model(res.noise_url)
        assert tn.sed_grid == res.grid_url and tn.n_models == len(idx)
        tb = tn.read()
        for k in ("bias", "error", "completeness"):
            np.testing.assert_array_equal(tb.arrays[k], nm_full.arrays[k][idx])
        assert res.n_stars == len(y) and res.n_kept == len(idx)
        # the trim artifact is the index: the same rows, and read through it the full grid and
        # noise model give the materialised copies exactly
        ti = read_trim_index(res.index_url)
        np.testing.assert_array_equal(ti.kept, idx)
        assert ti.n_models_in == len(seds) and ti.provenance["inputs"]["catalog"] == url
        assert ti.meta["rule"] == "sigma+lossless" and ti.n_runs < len(idx)
        kg, kn = open_kept(trimmed["grid"], trimmed["noise"], res.index_url, read_rows=1000)
        assert kg.columns == g.columns and kg.n_models == g.n_models
        for got in (kg.read(), next(kg.iter_chunks(10**6))):
            np.testing.assert_array_equal(got.seds, blk.seds)
            for c in g.columns:
                np.testing.assert_array_equal(got.columns[c], blk.columns[c])
        for k in ("bias", "error", "completeness"):
            np.testing.assert_array_equal(kn.read().arrays[k], tb.arrays[k])
            np.testing.assert_array_equal(np.concatenate([b.arrays[k] for b in kn.iter_chunks(777)]), tb.arrays[k])


def test_grid_and_noise_read_once_for_all_subfiles(tmp_path, trimmed, monkeypatch):
    calls = []
    orig = SEDGrid.iter_chunks
    monkeypatch.setattr(SEDGrid, "iter_chunks", lambda self, *a, **k: (calls.append(1), orig(self, *a, **k))[1])
    jobs = [TrimJob(j.catalog_url, j.out_grid_url + ".2", j.out_noise_url + ".2") for j in trimmed["jobs"]]
    # default mode: two reads per batch (lossless bound, then write), whatever the number of sub-files
    res = run_trim(_settings(tmp_path), trimmed["grid"], trimmed["noise"], jobs)
    assert len(calls) == 2 and len(res) == 2
    # max_jobs_per_pass bounds a pass
    calls.clear()
    jobs = [TrimJob(j.catalog_url, j.out_grid_url + ".3", j.out_noise_url + ".3") for j in trimmed["jobs"]]
    run_trim(_settings(tmp_path, max_jobs_per_pass=1), trimmed["grid"], trimmed["noise"], jobs)
    assert len(calls) == 4
    # compat (BEAST's rule): one read per batch
    calls.clear()
    jobs = [TrimJob(j.catalog_url, j.out_grid_url + ".4", j.out_noise_url + ".4") for j in trimmed["jobs"]]
    run_trim(_settings(tmp_path, compat="beast-2.1"), trimmed["grid"], trimmed["noise"], jobs)
    assert len(calls) == 1
    # behaviour.trim.rule alone switches to BEAST's one-pass sigma rule (fewer models kept)
    calls.clear()
    jobs = [TrimJob(j.catalog_url, j.out_grid_url + ".5", j.out_noise_url + ".5") for j in trimmed["jobs"]]
    sigma_only = run_trim(
        _settings(tmp_path, behaviour={"trim": {"rule": "sigma"}}), trimmed["grid"], trimmed["noise"], jobs
    )
    assert len(calls) == 1
    assert sum(r.n_kept for r in sigma_only) < sum(r.n_kept for r in res)


def test_faint_subfile_outside_ast_coverage(trimmed):
    """phat_small's faintest third has no model with valid noise in F814W range:
    default = error naming file and band, the other job is still written;
    compat = BEAST's silent band skip."""
    tmp = trimmed["tmp"]
    good = trimmed["jobs"][0]
    jobs = [
        TrimJob(trimmed["faint"], str(tmp / "f_seds.hd5"), str(tmp / "f_noise.hd5")),
        TrimJob(good.catalog_url, str(tmp / "g_seds.hd5"), str(tmp / "g_noise.hd5")),
    ]
    with pytest.raises(TrimError, match=r"P_bin0_sub0\.parquet.*band HST_ACS_WFC_F814W"):
        run_trim(_settings(tmp), trimmed["grid"], trimmed["noise"], jobs)
    assert not os.path.exists(jobs[0].index_url) and os.path.exists(jobs[1].index_url)
    res = run_trim(_settings(tmp, compat="beast-2.1"), trimmed["grid"], trimmed["noise"], jobs[:1])
    assert "HST_ACS_WFC_F814W" in res[0].skipped_bands and res[0].n_kept > 0


def test_patterns_numba_equals_numpy():
    rng = np.random.default_rng(0)
    n, nb = 5000, 4
    seds = rng.random((n, nb))
    bias = rng.normal(0, 0.01, (n, nb))
    err = rng.random((n, nb)) * 0.05
    comp = rng.random((n, nb)) - 0.05
    err[comp <= 0] *= -1
    ymin = rng.random((3, nb)) * 0.3
    ymax = ymin + 0.4
    for pos in (True, False):
        np.testing.assert_array_equal(
            trim_patterns(seds, bias, err, comp, ymin, ymax, 3.0, pos),
            trim_patterns_numpy(seds, bias, err, comp, ymin, ymax, 3.0, pos),
        )


def test_decide_bands_compat_skips_in_order():
    from collections import Counter

    # 3 bands; no model passes band 1 together with band 0
    hist = Counter({0b101: 4, 0b010: 3, 0b011: 0})
    assert decide_bands(hist, 3, band_skip=False) == (0b111, [], 0)
    assert decide_bands(hist, 3, band_skip=True) == (0b101, [1], 4)


def _tiny_case(tmp_path, y_band2):
    """3 models x 2 bands with complete, known noise; one star per file."""
    filters = ["HST_ACS_WFC_F475W", "HST_ACS_WFC_F814W"]
    from beastflow.io.sed_grid import write_sed_grid

    seds = np.array([[1.0, 1.0], [2.0, 2.0], [4.0, 4.0]])
    grid = write_sed_grid(
        str(tmp_path / "g.hd5"), filters, np.array([4750.0, 8050.0]), seds, {"Av": np.array([0.0, 1.0, 2.0])}
    )
    noise = write_noise_model(str(tmp_path / "n.hd5"), filters, np.zeros((3, 2)), np.full((3, 2), 0.1), np.ones((3, 2)))
    cat = str(tmp_path / "cat.parquet")
    pl.DataFrame({"F475W_RATE": [2.0], "F814W_RATE": [y_band2]}).write_parquet(cat)
    return grid, noise, [TrimJob(cat, str(tmp_path / "tg.hd5"), str(tmp_path / "tn.hd5"))]


def test_band_skip_quirk_only_in_compat(tmp_path, fixed_vega):
    fixed_vega([1.0, 1.0])
    grid, noise, jobs = _tiny_case(tmp_path, y_band2=100.0)  # no model reaches band 2
    with pytest.raises(TrimError, match=r"band HST_ACS_WFC_F814W removes the last ones"):
        run_trim(_settings(tmp_path), grid, noise, jobs)
    assert not (tmp_path / "tg.hd5").exists() and not (tmp_path / "tn.hd5").exists()
    (res,) = run_trim(_settings(tmp_path, compat="beast-2.1"), grid, noise, jobs)
    assert res.skipped_bands == ["HST_ACS_WFC_F814W"] and res.n_kept == 1
    assert read_trim_index(res.index_url).kept.tolist() == [1] and res.grid_url is None
    # a normal file: same answer in both modes, one pass
    grid, noise, jobs = _tiny_case(tmp_path, y_band2=2.05)
    for compat in ("none", "beast-2.1"):
        (res,) = run_trim(_settings(tmp_path, compat=compat), grid, noise, jobs)
        assert res.skipped_bands == [] and read_trim_index(res.index_url).kept.tolist() == [1]


def test_outside_ast_coverage_is_an_error_naming_the_file(tmp_path, fixed_vega):
    fixed_vega([1.0, 1.0])
    grid, noise, jobs = _tiny_case(tmp_path, y_band2=2.0)
    from beastflow.io.noise_model import write_noise_model as w

    w(
        str(tmp_path / "n0.hd5"),
        ["HST_ACS_WFC_F475W", "HST_ACS_WFC_F814W"],
        np.zeros((3, 2)),
        np.full((3, 2), -0.1),
        np.zeros((3, 2)),
    )
    with pytest.raises(TrimError, match=r"cat\.parquet.*brighter than the minimum ASTs"):
        run_trim(_settings(tmp_path), grid, str(tmp_path / "n0.hd5"), jobs)
    with pytest.raises(ValueError, match=r"n1\.hd5: noise model has 2 rows but the grid .*g\.hd5 has 3"):
        w(
            str(tmp_path / "n1.hd5"),
            ["HST_ACS_WFC_F475W", "HST_ACS_WFC_F814W"],
            np.zeros((2, 2)),
            np.ones((2, 2)),
            np.ones((2, 2)),
        )
        run_trim(_settings(tmp_path), grid, str(tmp_path / "n1.hd5"), jobs)


def test_missing_rate_column_named(tmp_path, fixed_vega):
    fixed_vega([1.0, 1.0])
    grid, noise, jobs = _tiny_case(tmp_path, y_band2=2.0)
    pl.DataFrame({"F475W_RATE": [2.0]}).write_parquet(jobs[0].catalog_url)
    with pytest.raises(TrimError, match=r"cat\.parquet.*F814W_RATE"):
        run_trim(_settings(tmp_path), grid, noise, jobs)


def test_small_write_buffers_give_identical_files(trimmed, monkeypatch):
    """Survivors are buffered and flushed in whole chunks; tiny buffers
    (many flushes, 64-row chunks) must not change a single row."""
    monkeypatch.setattr(trim_mod, "_BUFFER_BYTES", 1)
    monkeypatch.setattr(trim_mod, "_MIN_FLUSH_ROWS", 64)
    tmp = trimmed["tmp"]
    jobs = [TrimJob(j.catalog_url, j.out_grid_url + ".b", j.out_noise_url + ".b") for j in trimmed["jobs"]]
    res = run_trim(_settings(tmp, materialize=True), trimmed["grid"], trimmed["noise"], jobs)
    assert max(r.n_kept for r in res) > 3 * 64  # several flushes happened
    for r, r0 in zip(res, trimmed["results"]):
        a, b = open_sed_grid(r.grid_url).read(), open_sed_grid(r0.grid_url).read()
        np.testing.assert_array_equal(a.seds, b.seds)
        for c in b.columns:
            np.testing.assert_array_equal(a.columns[c], b.columns[c])
        na, nb_ = open_noise_model(r.noise_url).read(), open_noise_model(r0.noise_url).read()
        for k in nb_.arrays:
            np.testing.assert_array_equal(na.arrays[k], nb_.arrays[k])
