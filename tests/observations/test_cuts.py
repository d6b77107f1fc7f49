import numpy as np
import polars as pl
import pytest

from beastflow.observations import catalogs
from beastflow.observations.cuts import cut_masks, run_cut

from .conftest import PHAT_BANDS, PHAT_FILTERS


def test_phat_real_counts(phat_catalog, phat_asts_rate, make_settings):
    s = make_settings()
    r = run_cut(s, str(phat_catalog), str(phat_asts_rate))
    # the PHAT catalog has no zero rate and no flag 99: nothing cut
    assert r.counts["catalog"] == {"n_in": 269, "removed_partial_overlap": 0, "removed_flagged": 0, "n_out": 269}
    # ASTs: 346 rows inserted only in F275W/F336W (+4 others with a zero rate) are outside a band's footprint
    a = r.counts["asts"]
    assert a["n_in"] == 521 and a["removed_partial_overlap"] == 350 and a["removed_flagged"] == 0
    assert pl.read_parquet(r.ast_url).height == 171 == a["n_out"]
    # beast-2.1 code tests RATE == 0 in the flag band: non-recovered F475W ASTs go too
    old = run_cut(make_settings("beast-2.1"), str(phat_catalog), str(phat_asts_rate))
    assert old.counts["asts"]["removed_flagged"] == 150 and old.counts["asts"]["n_out"] == 21
    assert old.counts["catalog"]["n_out"] == 269


def _perturbed(phat_catalog, tmp_path):
    df = catalogs.read_photometry(str(phat_catalog), PHAT_FILTERS)
    n = df.height
    idx = np.arange(n)
    f475_rate = df["F475W_RATE"].to_numpy().copy()
    f475_flag = df["F475W_FLAG"].to_numpy().copy()
    f814_rate = df["F814W_RATE"].to_numpy().copy()
    f814_rate[0:5] = 0.0  # outside the F814W footprint -> partial overlap
    all_zero = {b: df[f"{b}_RATE"].to_numpy().copy() for b in PHAT_BANDS}
    for b in PHAT_BANDS:
        all_zero[b][5] = 0.0  # zero in every band -> kept
    f475_flag[10:14] = 99  # flagged, positive rate -> cut
    f475_flag[14:16] = 99
    f475_rate[14:16] = -abs(f475_rate[14:16])  # flagged but negative flux -> stays
    f475_rate[20] = 0.0  # zero rate in one band only -> partial overlap
    cols = {f"{b}_RATE": all_zero[b] for b in PHAT_BANDS}
    cols["F475W_RATE"] = np.where(idx == 5, 0.0, f475_rate)
    cols["F814W_RATE"] = np.where(idx == 5, 0.0, f814_rate)
    df = df.with_columns([pl.Series(k, v) for k, v in cols.items()] + [pl.Series("F475W_FLAG", f475_flag)])
    p = tmp_path / "pert.parquet"
    df.write_parquet(p)
    return df, p


def test_cut_rules_exact(phat_catalog, tmp_path, make_settings):
    df, p = _perturbed(phat_catalog, tmp_path)
    r = run_cut(make_settings(), str(p))
    c = r.counts["catalog"]
    assert c["removed_partial_overlap"] == 6 and c["removed_flagged"] == 4 and c["n_out"] == 259
    kept = pl.read_parquet(r.catalog_url)["star_id"].to_numpy()
    gone = set(range(269)) - set(kept.tolist())
    assert gone == {0, 1, 2, 3, 4, 10, 11, 12, 13, 20}
    assert {5, 14, 15} <= set(kept.tolist())
    # compat: rate == 0 in the flag band (F475W) instead of the flag test
    o = run_cut(make_settings("beast-2.1", out=str(tmp_path / "o")), str(p)).counts["catalog"]
    assert o["removed_partial_overlap"] == 6 and o["removed_flagged"] == 1  # row 5 (all-zero)
    assert o["n_out"] == 262


def test_same_cuts_on_asts(phat_catalog, tmp_path, make_settings):
    # an AST table whose recovered rates are exactly the catalog's: the same rows must go
    df, p = _perturbed(phat_catalog, tmp_path)
    asts = df.select([f"{b}_RATE" for b in PHAT_BANDS] + [f"{b}_FLAG" for b in PHAT_BANDS] + ["RA", "DEC"])
    asts = asts.with_columns([pl.col(f"{b}_RATE").alias(f"{b}_IN") for b in PHAT_BANDS])
    asts = asts.with_columns([(pl.lit(20.0)).alias(f"{b}_IN") for b in PHAT_BANDS])
    ap = tmp_path / "asts.parquet"
    asts.write_parquet(ap)
    for compat in ("none", "beast-2.1"):
        r = run_cut(make_settings(compat, out=str(tmp_path / compat)), str(p), str(ap))
        kept_cat = pl.read_parquet(r.catalog_url)["star_id"].to_list()
        kept_ast = pl.read_parquet(r.ast_url)["star_id"].to_list()
        assert kept_ast == kept_cat
        assert {k: v for k, v in r.counts["asts"].items() if k != "removed_outside_footprint"} == r.counts["catalog"]
    # the mask function is literally shared
    s = make_settings()
    m1 = cut_masks(df, PHAT_BANDS, ["F475W"], s.observations.cuts, False)
    m2 = cut_masks(catalogs.read_asts(str(ap), PHAT_FILTERS), PHAT_BANDS, ["F475W"], s.observations.cuts, False)
    for k in m1:
        np.testing.assert_array_equal(m1[k], m2[k])


def test_asts_outside_footprint_and_flag_action(phat_catalog, tmp_path, make_settings):
    df = catalogs.read_photometry(str(phat_catalog), PHAT_FILTERS)
    n = 50
    rng = np.random.default_rng(0)
    ra = np.r_[rng.uniform(df["RA"].min(), df["RA"].max(), n - 3), [0.0, 1.0, 359.0]]
    dec = np.r_[np.full(n - 3, df["DEC"].mean()), [0.0, 1.0, -5.0]]
    cols = {"RA": ra, "DEC": dec}
    for b in PHAT_BANDS:
        cols[f"{b}_IN"] = np.full(n, 22.0)
        cols[f"{b}_RATE"] = np.full(n, 1e-9)
    ap = tmp_path / "a.parquet"
    pl.DataFrame(cols).write_parquet(ap)
    r = run_cut(make_settings(), str(phat_catalog), str(ap))
    assert r.counts["asts"]["removed_outside_footprint"] >= 3
    kept = pl.read_parquet(r.ast_url)
    assert not set(kept["star_id"].to_list()) & {n - 3, n - 2, n - 1}
    f = run_cut(
        make_settings(out=str(tmp_path / "f"), observations={"cuts": {"ast_action": "flag"}}),
        str(phat_catalog),
        str(ap),
    )
    t = pl.read_parquet(f.ast_url)
    assert t.height == n and int(t["CUT_FLAG"].sum()) == n - kept.height


def test_ds9_regions(tmp_path, phat_catalog, make_settings):
    df, p = _perturbed(phat_catalog, tmp_path)
    r = run_cut(make_settings(observations={"cuts": {"ds9_regions": True}}), str(p))
    text = open(r.region_urls[0]).read().splitlines()
    assert text[0] == "# Region file format: DS9 version 4.1" and text[2] == "fk5"
    assert len(text) == 3 + 269
    assert sum(line.endswith("# color=magenta") for line in text) == 10


def test_all_cut_errors_and_writes_nothing(tmp_path, phat_catalog, make_settings):
    df = catalogs.read_photometry(str(phat_catalog), PHAT_FILTERS).with_columns(
        pl.lit(99).cast(pl.Int16).alias("F475W_FLAG"), pl.col("F475W_RATE").abs().alias("F475W_RATE")
    )
    p = tmp_path / "flagged.parquet"
    df.write_parquet(p)
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=r"flagged\.parquet: every source was removed"):
        run_cut(make_settings(), str(p))
    assert not out.exists() or not list(out.iterdir())


def test_flag_bands_validated(phat_catalog, make_settings):
    with pytest.raises(ValueError, match="observations.cuts.flag_bands"):
        run_cut(make_settings(observations={"cuts": {"flag_bands": ["F999W"]}}), str(phat_catalog))
