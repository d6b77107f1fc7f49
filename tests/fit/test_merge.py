import numpy as np
import pytest

from beastflow.fit.fitting import run_fit
from beastflow.fit.grid_info import read_grid_info, run_grid_info
from beastflow.fit.merge import run_merge
from beastflow.fit.outputs import lnp_star, read_lnp, read_pdf1d, read_pdf2d, read_stats

from .conftest import settings_for

INDEX_COLS = {"Pmax_indx", "chi2min_indx", "best_gridsub", "reorder_tag"}


@pytest.fixture(scope="module")
def fits(field, tmp_path_factory, synth_vega):
    d = tmp_path_factory.mktemp("fits")
    out = {}
    for name, npts in (("all", 100_000), ("k20", 20)):
        s = settings_for(d, lnp_npts=npts, chunk_models=2048, star_block=7)
        gi_full = run_grid_info(s, [field["full"]], out_url=str(d / f"{name}_full_info.json")).grid_info
        gi_sub = run_grid_info(s, field["subs"], out_url=str(d / f"{name}_sub_info.json")).grid_info
        single = run_fit(
            s,
            field["trim"],
            field["trim_noise"],
            field["cat0"],
            gi_full,
            str(d / f"{name}_P_bin0_sub0"),
            tag="bin0_sub0",
        )
        subs = [
            run_fit(
                s,
                field["trim_subs"][g],
                field["trim_sub_noise"][g],
                field["cat0"],
                gi_sub,
                str(d / f"{name}_P_bin0_sub0_gridsub{g}"),
                subgrid=g,
                tag="bin0_sub0",
            )
            for g in range(3)
        ]
        merged = run_merge(s, subs, str(d / f"{name}_merged"))
        out[name] = dict(settings=s, single=single, subs=subs, merged=merged, gi_full=gi_full, gi_sub=gi_sub)
    return out


def test_grid_info_same_bins_from_full_grid_and_subgrids(fits):
    a, b = read_grid_info(fits["all"]["gi_full"]), read_grid_info(fits["all"]["gi_sub"])
    assert a["quantities"] == b["quantities"]
    assert a["total_weight"] == pytest.approx(b["total_weight"], rel=1e-12)
    assert [s["offset"] for s in b["subgrids"]][1] > 0


def test_merged_subgrid_stats_equal_single_grid(fits):
    single, _ = read_stats(fits["all"]["single"].stats)
    merged, _ = read_stats(fits["all"]["merged"].stats)
    assert len(single) == len(merged) == 40
    common = [c for c in single.columns if c in merged.columns and c not in INDEX_COLS]
    assert len(common) > 150
    for c in common:
        a, b = single[c].to_numpy(), merged[c].to_numpy()
        if a.dtype.kind in "fi":
            np.testing.assert_allclose(b, a, rtol=1e-10, atol=1e-12, err_msg=c)
        else:
            assert (a == b).all(), c
    # the best model is the same model of the full grid
    assert (single["Pmax_gid"] == merged["Pmax_gid"]).all()
    assert merged["best_gridsub"].n_unique() >= 2  # the test exercises more than one subgrid
    assert "chi2min_indx" not in merged.columns


def test_merged_pdfs_equal_single_grid(fits):
    a, b = read_pdf1d(fits["all"]["single"].pdf1d), read_pdf1d(fits["all"]["merged"].pdf1d)
    assert a["quantities"] == b["quantities"]
    for q in a["quantities"]:
        # each (sub)grid skips weights < 1e-9 of its peak in all (the default threshold)
        np.testing.assert_allclose(b["pdf"][q], a["pdf"][q], rtol=1e-10, atol=1e-9, err_msg=q)
        np.testing.assert_allclose(a["pdf"][q].sum(axis=1), 1.0, rtol=1e-12)
    a2, b2 = read_pdf2d(fits["all"]["single"].pdf2d), read_pdf2d(fits["all"]["merged"].pdf2d)
    assert a2["pairs"] == b2["pairs"] and len(a2["pairs"]) == 4
    for p in a2["pairs"]:
        np.testing.assert_allclose(b2["pdf"][p], a2["pdf"][p], rtol=1e-10, atol=1e-9, err_msg=p)
        # the 2-D marginal equals the 1-D PDF of its first parameter (same full-grid bins)
        qa = p.split("+")[0]
        np.testing.assert_allclose(a2["pdf"][p].sum(axis=2), a["pdf"][qa], rtol=1e-9, atol=1e-14)


def test_merged_lnp_samples(fits):
    # all candidates kept: the merged sample is exactly the single-grid sample
    a, b = read_lnp(fits["all"]["single"].lnp), read_lnp(fits["all"]["merged"].lnp)
    for e in range(40):
        sa, sb = lnp_star(a, e), lnp_star(b, e)
        assert set(sa["gid"]) == set(sb["gid"]) and len(sa["gid"]) > 0
        np.testing.assert_allclose(np.sort(sb["lnp"]), np.sort(sa["lnp"]), rtol=1e-12)
        assert np.all(sa["lnp"] - sa["lnp"].max() > -10)
    # truncated to 20: merged sample is a key-order prefix of the single-grid sample
    a, b = read_lnp(fits["k20"]["single"].lnp), read_lnp(fits["k20"]["merged"].lnp)
    n_equal = 0
    for e in range(40):
        sa, sb = lnp_star(a, e), lnp_star(b, e)
        assert len(sa["gid"]) == min(20, a["n_candidates"][e])
        assert list(sb["gid"]) == list(sa["gid"][: len(sb["gid"])])
        n_equal += len(sb["gid"]) == len(sa["gid"])
        assert np.all(np.diff(sb["key"]) > 0)
    assert n_equal > 20


def test_merge_over_subfiles_concatenates(fits, field, tmp_path, synth_vega):
    s = fits["all"]["settings"]
    gi = fits["all"]["gi_sub"]
    subs1 = [
        run_fit(
            s,
            field["trim_subs"][g],
            field["trim_sub_noise"][g],
            field["cat1"],
            gi,
            str(tmp_path / f"P_bin0_sub1_gridsub{g}"),
            subgrid=g,
            tag="bin0_sub1",
        )
        for g in range(3)
    ]
    res = run_merge(s, fits["all"]["subs"] + subs1, str(tmp_path / "P"))
    st, info = read_stats(res.stats)
    assert len(st) == 65
    assert st["reorder_tag"].to_list() == ["bin0_sub0"] * 40 + ["bin0_sub1"] * 25
    assert info["provenance"]["stage"] == "merge"
    one, _ = read_stats(fits["all"]["merged"].stats)
    np.testing.assert_allclose(st["logA_p50"].to_numpy()[:40], one["logA_p50"].to_numpy(), rtol=1e-12)
    p = read_pdf1d(res.pdf1d)
    assert p["pdf"]["Av"].shape[0] == 65
    assert (tmp_path / "bin0_sub1" / "P_bin0_sub1_stats.parquet").exists()
    L = read_lnp(res.lnp)
    assert len(L["offsets"]) == 66 and L["offsets"][-1] == len(L["gid"])


def test_merge_refuses_different_bins(fits, field, tmp_path, synth_vega):
    s = fits["all"]["settings"]
    r = run_fit(
        s,
        field["trim_subs"][0],
        field["trim_sub_noise"][0],
        field["cat0"],
        None,
        str(tmp_path / "P_bin0_sub0_gridsub0"),
        subgrid=0,
        tag="bin0_sub0",
    )
    with pytest.raises(ValueError, match="bins of"):
        run_merge(s, [r, fits["all"]["subs"][1]], str(tmp_path / "bad"))
