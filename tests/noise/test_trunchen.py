import h5py
import numpy as np
import polars as pl
import pytest

from beastflow.io.noise_model import open_noise_model
from beastflow.io.sed_grid import write_sed_grid
from beastflow.noise.toothpick import run_noisemodel
from beastflow.noise.trim import TrimJob, run_trim
from beastflow.noise.trunchen import TrunchenEvaluator, ast_model_stats
from beastflow.settings import settings_from_dict

FILTERS = ["HST_WFC3_F275W", "HST_ACS_WFC_F475W", "HST_WFC3_F160W"]
VEGA = np.array([3.7e-9, 5.3e-9, 1.4e-10])


def _repeated_asts(n_models=40, n_real=20, seed=0):
    """Each of n_models SEDs injected n_real times; correlated Gaussian errors,
    ~10% of realisations lost in every band, one group too small."""
    rng = np.random.default_rng(seed)
    mags = rng.uniform(20, 26, size=(n_models, 3))
    rows = []
    for m in range(n_models):
        nr = 4 if m == 0 else n_real
        f_in = 10 ** (-0.4 * mags[m])
        sig = 0.05 * f_in
        corr = np.array([[1, 0.5, 0.2], [0.5, 1, 0.3], [0.2, 0.3, 1]])
        d = rng.multivariate_normal(0.01 * f_in, corr * np.outer(sig, sig), size=nr)
        out = f_in + d
        lost = rng.random(nr) < 0.1
        out[lost] = 0.0
        for r in range(nr):
            rows.append(
                {
                    **{f"{b}_IN": mags[m, k] for k, b in enumerate(["F275W", "F475W", "F160W"])},
                    **{f"{b}_RATE": out[r, k] for k, b in enumerate(["F275W", "F475W", "F160W"])},
                    "CUT_FLAG": 0,
                }
            )
    return pl.DataFrame(rows), mags


def test_ast_model_stats_match_direct_group_statistics():
    df, mags = _repeated_asts()
    st = ast_model_stats(df, FILTERS, VEGA)
    assert len(st) == 39 and st.n_groups_skipped == 1  # the 4-member group is skipped
    order = np.argsort(mags[1:, -1])  # groups come sorted by last-band input mag
    for j, m in enumerate(np.arange(1, 40)[order]):
        g = df.filter(pl.col("F160W_IN") == mags[m, -1])
        rate = np.column_stack([g[f"{b}_RATE"].to_numpy() for b in ["F275W", "F475W", "F160W"]])
        rec = np.any(rate != 0, axis=1)
        f_in = 10 ** (-0.4 * mags[m]) * VEGA
        d = rate[rec] * VEGA - f_in
        np.testing.assert_allclose(st.in_flux[j], f_in, rtol=1e-14)
        np.testing.assert_allclose(st.bias[j], d.mean(axis=0), rtol=1e-10)
        np.testing.assert_allclose(st.cov[j], np.cov(d.T), rtol=1e-10)
        assert st.completeness[j] == rec.sum() / len(g)


def test_evaluator_weights_and_inverse_covariance():
    df, _ = _repeated_asts()
    st = ast_model_stats(df, FILTERS, VEGA)
    A = np.array([[4e-4, 1e-4, 0.0], [1e-4, 4e-4, 1e-4], [0.0, 1e-4, 9e-4]])
    ev = TrunchenEvaluator(st, k=10, a_matrix=A)
    rng = np.random.default_rng(1)
    seds = st.in_flux[rng.integers(0, len(st), 50)] * 10 ** rng.normal(0, 0.1, (50, 3))
    seds[0] = st.in_flux[3]  # exactly on an AST model: its distance is clamped to 0.01
    out = ev(seds)
    q = np.log10(st.in_flux)
    for i in range(0, 50, 7):
        dist = np.sqrt(((q - np.log10(seds[i])) ** 2).sum(axis=1))
        nn = np.argsort(dist)[:10]
        w = 1 / np.maximum(dist[nn], 0.01)
        w /= w.sum()
        cov = np.tensordot(w, st.cov[nn], 1) + A * np.outer(seds[i], seds[i])
        np.testing.assert_allclose(out["bias"][i], w @ st.bias[nn], rtol=1e-10)
        np.testing.assert_allclose(out["error"][i], np.sqrt(np.diag(cov)), rtol=1e-10)
        np.testing.assert_allclose(out["completeness"][i], np.full(3, w @ st.completeness[nn]), rtol=1e-12)
        icov = np.linalg.inv(cov)
        np.testing.assert_allclose(out["icov_diag"][i], np.diag(icov), rtol=1e-8)
        np.testing.assert_allclose(out["icov_offdiag"][i], [icov[0, 1], icov[0, 2], icov[1, 2]], rtol=1e-8)
        assert out["q_norm"][i] == pytest.approx(-0.5 * np.linalg.slogdet(cov)[1], rel=1e-10)


def test_run_trunchen_and_trim_carry_the_arrays(tmp_path, fixed_vega):
    fixed_vega(VEGA)
    df, _ = _repeated_asts()
    ast = str(tmp_path / "asts.parquet")
    df.write_parquet(ast)
    st = ast_model_stats(df, FILTERS, VEGA)
    rng = np.random.default_rng(2)
    seds = st.in_flux[rng.integers(0, len(st), 3000)] * 10 ** rng.normal(0, 0.2, (3000, 3))
    grid = write_sed_grid(
        str(tmp_path / "g.hd5"), FILTERS, np.array([2700.0, 4750.0, 15400.0]), seds, {"Av": rng.random(3000)}
    )
    s = settings_from_dict(
        {
            "noise_model": {"model": "trunchen", "chunk_models": 1024},
            "trim": {"chunk_models": 1024, "materialize": True},
        }
    )
    out = run_noisemodel(s, grid, ast, str(tmp_path / "nm.hd5"))
    nm = open_noise_model(out)
    assert {"q_norm", "icov_diag", "icov_offdiag"} <= set(nm.names) and nm.meta["model"] == "trunchen"
    np.testing.assert_allclose(nm.read().arrays["q_norm"], TrunchenEvaluator(st, 10)(seds)["q_norm"], rtol=1e-12)
    cat = str(tmp_path / "cat.parquet")
    pl.DataFrame(
        {f"{b}_RATE": seds[:20, k] / VEGA[k] for k, b in enumerate(["F275W", "F475W", "F160W"])}
    ).write_parquet(cat)
    (r,) = run_trim(s, grid, out, [TrimJob(cat, str(tmp_path / "tg.hd5"), str(tmp_path / "tn.hd5"))])
    tn = open_noise_model(r.noise_url).read()
    full = nm.read()
    from beastflow.io.sed_grid import open_sed_grid

    idx = open_sed_grid(r.grid_url).column("fullgrid_idx")
    assert 20 <= len(idx) < 3000
    for k in ("q_norm", "icov_diag", "icov_offdiag", "bias", "error"):
        np.testing.assert_array_equal(tn.arrays[k], full.arrays[k][idx])
    # the trim index gives the same rows, and the truncheon arrays read through it
    from beastflow.io.trim_index import open_kept

    _, kn = open_kept(grid, out, r.index_url)
    kb = kn.read()
    for k in ("q_norm", "icov_diag", "icov_offdiag", "bias", "error"):
        np.testing.assert_array_equal(kb.arrays[k], tn.arrays[k])


def test_single_realisation_asts_are_refused(tmp_path, phat_asts_rate, fixed_vega):
    """phat_small has one realisation per model: no truncheon model is possible."""
    fixed_vega(VEGA[:2])
    from beastflow.observations.catalogs import read_asts

    filters = ["HST_WFC3_F275W", "HST_WFC3_F336W"]
    st = ast_model_stats(read_asts(str(phat_asts_rate), filters), filters, VEGA[:2])
    assert len(st) == 0 and st.n_groups_skipped > 0
    grid = write_sed_grid(
        str(tmp_path / "g.hd5"), filters, np.array([2700.0, 3350.0]), np.ones((5, 2)) * 1e-18, {"Av": np.zeros(5)}
    )
    s = settings_from_dict({"noise_model": {"model": "trunchen"}})
    with pytest.raises(ValueError, match="realisations.*toothpick"):
        run_noisemodel(s, grid, str(phat_asts_rate), str(tmp_path / "nm.hd5"))


def test_float32_storage_is_the_float64_model_rounded_to_24_bits(tmp_path, fixed_vega):
    """Default truncheon storage: every stored value within 2^-24 (relative) of the float64
    model, C^-1 scaled by exact powers of two (its ~1e40 values overflow a raw float32),
    q_norm exact; compat keeps BEAST's float64 files."""
    fixed_vega(VEGA)
    df, _ = _repeated_asts()
    ast = str(tmp_path / "asts.parquet")
    df.write_parquet(ast)
    st = ast_model_stats(df, FILTERS, VEGA)
    rng = np.random.default_rng(3)
    seds = st.in_flux[rng.integers(0, len(st), 2000)] * 10 ** rng.normal(0, 0.2, (2000, 3))
    grid = write_sed_grid(
        str(tmp_path / "g.hd5"), FILTERS, np.array([2700.0, 4750.0, 15400.0]), seds, {"Av": rng.random(2000)}
    )
    urls = {}
    for name, extra in (("f32", {}), ("f64", {"precision": "float64"})):
        s = settings_from_dict({"noise_model": {"model": "trunchen", "chunk_models": 1024, **extra}})
        urls[name] = run_noisemodel(s, grid, ast, str(tmp_path / f"{name}.hd5"))
    s = settings_from_dict({"compat": "beast-2.1", "noise_model": {"model": "trunchen"}})
    compat = open_noise_model(run_noisemodel(s, grid, ast, str(tmp_path / "c.hd5")))
    assert compat.precision == "float64"
    # behaviour.noise.trunchen_precision alone
    s = settings_from_dict(
        {"noise_model": {"model": "trunchen"}, "behaviour": {"noise": {"trunchen_precision": "float64"}}}
    )
    assert open_noise_model(run_noisemodel(s, grid, ast, str(tmp_path / "b.hd5"))).precision == "float64"
    n32, n64 = open_noise_model(urls["f32"]), open_noise_model(urls["f64"])
    assert (n32.precision, n64.precision) == ("float32", "float64")
    assert n32.icov_exponents == [int(np.rint(np.log2(v))) for v in VEGA]
    with h5py.File(urls["f32"]) as h5:
        assert {h5[k].dtype for k in ("bias", "error", "completeness", "icov_diag", "icov_offdiag")} == {
            np.dtype(np.float32)
        }
        assert h5["q_norm"].dtype == np.float64
        assert h5["completeness"].shape == (2000, 1)  # one value per model, not per band
    a32, a64 = n32.read().arrays, n64.read().arrays
    assert a32["completeness"].shape == (2000, 3)
    assert np.abs(a64["icov_diag"]).max() > 3.4e38  # would overflow a float32 unscaled
    for k in ("bias", "error", "completeness", "icov_diag", "icov_offdiag"):
        assert a32[k].dtype == np.float64
        ok = np.isfinite(a64[k])
        np.testing.assert_array_equal(np.isfinite(a32[k]), ok)
        rel = np.abs(a32[k][ok] - a64[k][ok]) / np.abs(a64[k][ok]).clip(1e-300)
        assert rel.max() <= 2.0**-24, k
        assert rel.max() > 0 or k == "completeness", k  # really rounded (not float64 under another name)
    np.testing.assert_array_equal(a32["q_norm"], a64["q_norm"])
    # the reader's unscaling is exact: re-storing what it returns gives the same bytes
    with h5py.File(urls["f32"]) as h5:
        stored = h5["icov_offdiag"][...]
    e = np.asarray(n32.icov_exponents)
    iu = np.triu_indices(3, k=1)
    np.testing.assert_array_equal(np.ldexp(a32["icov_offdiag"], e[iu[0]] + e[iu[1]]).astype(np.float32), stored)
