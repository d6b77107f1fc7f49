import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from beastflow.observations.cuts import run_cut
from beastflow.observations.density import run_density_map
from beastflow.observations.split import run_split, subfile_sizes
from beastflow.settings.observations import Split

from .conftest import PHAT_BANDS, synthetic_catalog


def _chain(settings, catalog, asts):
    d = run_density_map(settings, str(catalog))
    c = run_cut(settings, d.catalog_url, str(asts) if asts else None)
    return d, c, run_split(settings, c.catalog_url, c.ast_url, d.map_url)


def test_phat_split_no_loss_no_duplicates(phat_catalog, phat_asts_rate, make_settings):
    s = make_settings(observations={"source_density": {"pixsize": 1.0}, "split": {"n_per_file": 20}})
    d, c, r = _chain(s, phat_catalog, phat_asts_rate)
    m = json.load(open(r.manifest_url))
    parts = [pl.read_parquet(e["url"]) for e in m["subfiles"]]
    ids = np.concatenate([p["star_id"].to_numpy() for p in parts])
    assert len(ids) == 269 and len(np.unique(ids)) == 269
    assert sum(e["n_rows"] for e in m["subfiles"]) == 269 == m["n_catalog_rows"]
    cut = pl.read_parquet(c.catalog_url)
    bins = dict(zip(cut["star_id"].to_list(), cut["sd_bin"].to_list()))
    for e, p in zip(m["subfiles"], parts):
        assert p.height == e["n_rows"] <= 20
        assert set(p["sd_bin"].to_list()) == {e["bin"]}
        assert all(bins[i] == e["bin"] for i in p["star_id"].to_list())
        f = p["F475W_RATE"].to_numpy()
        assert (np.diff(f) >= 0).all()  # faintest first
        assert e["flux_range"]["F475W"] == [f.min(), f.max()]
        assert e["url"].endswith(f"phat_bin{e['bin']}_sub{e['sub']}.parquet")
    # bins of one bin's sub-files cover increasing flux ranges
    for b in m["bins"]:
        subs = sorted((e for e in m["subfiles"] if e["bin"] == b), key=lambda e: e["sub"])
        assert [e["sub"] for e in subs] == list(range(len(subs)))
        for a, bb in zip(subs, subs[1:]):
            assert a["flux_range"]["F475W"][1] <= bb["flux_range"]["F475W"][0]
    # phat_small ASTs have no positions: every (cut) AST goes to every bin
    assert m["asts_assignment"] == "all_bins"
    assert [e["bin"] for e in m["asts"]] == m["bins"]
    assert all(e["n_rows"] == 171 for e in m["asts"])
    a0 = pl.read_parquet(m["asts"][0]["url"])
    assert a0["star_id"].n_unique() == 171


def test_asts_with_positions_split_spatially(tmp_path, make_settings):
    cat = synthetic_catalog(3000, seed=5)
    cp = tmp_path / "cat.parquet"
    cat.write_parquet(cp)
    asts = (
        synthetic_catalog(800, seed=6)
        .rename({f"{b}_VEGA": f"{b}_IN" for b in PHAT_BANDS})
        .drop([f"{b}_FLAG" for b in PHAT_BANDS])
    )
    ap = tmp_path / "asts.parquet"
    asts.write_parquet(ap)
    s = make_settings(
        observations={"source_density": {"mag_cut": [15.0, 30.0], "bin_width": 0.05}, "split": {"n_per_file": 500}}
    )
    d, c, r = _chain(s, cp, ap)
    m = json.load(open(r.manifest_url))
    assert m["asts_assignment"] == "positions"
    got = np.concatenate([pl.read_parquet(e["url"])["star_id"].to_numpy() for e in m["asts"]])
    n_cut = pl.read_parquet(c.ast_url).height
    assert len(got) == n_cut == len(np.unique(got))  # each AST in exactly one bin
    assert len(m["bins"]) > 1
    sub_ids = np.concatenate([pl.read_parquet(e["url"])["star_id"].to_numpy() for e in m["subfiles"]])
    assert np.array_equal(np.sort(sub_ids), np.arange(3000))


def test_subfile_sizes_rules():
    assert subfile_sizes(13000, Split(n_per_file=6250), False) == [6250, 6250, 500]
    assert subfile_sizes(4, Split(n_per_file=6250, min_n_subfile=3), True) == [2, 2, 0]  # QUIRK
    assert subfile_sizes(4, Split(n_per_file=6250, min_n_subfile=3), False) == [2, 2]
    assert subfile_sizes(20000, Split(n_per_file=6250, min_n_subfile=3), False) == [6250] * 3 + [1250]


def test_compat_writes_empty_trailing_subfile(phat_catalog, make_settings):
    s = make_settings("beast-2.1", observations={"split": {"min_n_subfile": 400}})
    d, c, r = _chain(s, phat_catalog, None)
    m = json.load(open(r.manifest_url))
    assert any(e["n_rows"] == 0 for e in m["subfiles"])
    assert sum(e["n_rows"] for e in m["subfiles"]) == 269


def test_bad_sort_col_and_missing_positions(phat_catalog, phat_asts_rate, make_settings):
    s = make_settings(observations={"split": {"sort_col": "F999W_RATE"}})
    d = run_density_map(s, str(phat_catalog))
    c = run_cut(s, d.catalog_url, str(phat_asts_rate))
    with pytest.raises(ValueError, match="observations.split.sort_col"):
        run_split(s, c.catalog_url, c.ast_url, d.map_url)
    s2 = make_settings(observations={"split": {"asts_without_positions": "error"}})
    with pytest.raises(ValueError, match="no RA/DEC"):
        run_split(s2, c.catalog_url, c.ast_url, d.map_url)
    assert not [u for u in (d.map_url.rsplit("/", 1)[0],) for f in __import__("os").listdir(u) if "_sub" in f]


def test_band_without_values_in_a_subfile_is_a_clear_error(tmp_path, make_settings):
    # a band with no measurement at all (null rates) used to end in float(None): TypeError
    from beastflow.observations.catalogs import CatalogError

    cat = synthetic_catalog(500, seed=5).with_columns(pl.lit(None, dtype=pl.Float64).alias("F160W_RATE"))
    cp = tmp_path / "cat.parquet"
    cat.write_parquet(cp)
    s = make_settings(observations={"split": {"n_per_file": 200}})
    d = run_density_map(s, str(cp))
    c = run_cut(s, d.catalog_url, None)
    with pytest.raises(
        CatalogError,
        match=r"phat_catalog_cut.parquet \(stars of sub-file bin\d+_sub0\), "
        r"column F160W_RATE: every value is null",
    ):
        run_split(s, c.catalog_url, None, d.map_url)


def test_unchanged_subfiles_are_kept_byte_for_byte(phat_catalog, phat_asts_rate, make_settings, tmp_path):
    """Issue 18 item 3: a rerun after one star's flux changed rewrites only the sub-file holding
    it; every other sub-file and the per-bin ASTs keep their bytes (downstream stays cached)."""
    from beastflow.observations.catalogs import read_photometry

    s = make_settings(observations={"source_density": {"pixsize": 1.0}, "split": {"n_per_file": 20}})
    cat = tmp_path / "cat.parquet"
    read_photometry(str(phat_catalog), s.physics.filters).write_parquet(cat)
    _, _, r1 = _chain(s, cat, phat_asts_rate)
    m1 = json.loads(Path(r1.manifest_url).read_text())
    before = {e["url"]: Path(e["url"]).read_bytes() for e in m1["subfiles"] + m1["asts"]}
    assert all(len(e["rows_sha256"]) == 64 for e in m1["subfiles"] + m1["asts"])
    # the brightest star of the first sub-file of the first bin: x1.05 keeps it in its sub-file
    sub0 = pl.read_parquet(m1["subfiles"][0]["url"])
    star = sub0["star_id"][-2]
    f = pl.col("F475W_RATE")
    pl.read_parquet(cat).with_columns(
        pl.when(pl.col("star_id") == star).then(f * 1.05).otherwise(f).alias("F475W_RATE")
    ).write_parquet(cat)
    _, _, r2 = _chain(s, cat, phat_asts_rate)
    m2 = json.loads(Path(r2.manifest_url).read_text())
    changed = [u for u, b in before.items() if Path(u).read_bytes() != b]
    assert changed == [m1["subfiles"][0]["url"]], changed
    assert m2["subfiles"][0]["rows_sha256"] != m1["subfiles"][0]["rows_sha256"]
    assert [e["rows_sha256"] for e in m2["subfiles"][1:]] == [e["rows_sha256"] for e in m1["subfiles"][1:]]


def test_frozen_split_puts_an_added_star_where_its_flux_falls(phat_catalog, phat_asts_rate, make_settings, tmp_path):
    """Issue 18 item 3: the second run reuses the recorded flux edges, so a star added to the
    catalog changes only the sub-file its flux falls in (count-based splitting would shift every
    later sub-file by one row); resplit = true splits by n_per_file again."""
    from beastflow.observations.catalogs import read_photometry

    s = make_settings(observations={"source_density": {"pixsize": 1.0}, "split": {"n_per_file": 20}})
    cat = tmp_path / "cat.parquet"
    df = read_photometry(str(phat_catalog), s.physics.filters)
    df.write_parquet(cat)
    _, _, r1 = _chain(s, cat, phat_asts_rate)
    m1 = json.loads(Path(r1.manifest_url).read_text())
    assert not m1["frozen"] and set(m1["flux_edges"]) == {str(b) for b in m1["bins"]}
    before = {e["url"]: Path(e["url"]).read_bytes() for e in m1["subfiles"]}
    # a copy of a star of the first sub-file of the bin with the most sub-files, same position
    big = max(m1["bins"], key=lambda b: sum(e["bin"] == b for e in m1["subfiles"]))
    first = next(e for e in m1["subfiles"] if e["bin"] == big and e["sub"] == 0)
    star = pl.read_parquet(first["url"])["star_id"][0]
    twin = df.filter(pl.col("star_id") == star).with_columns(pl.lit(10**6).cast(df["star_id"].dtype).alias("star_id"))
    pl.concat([df, twin]).write_parquet(cat)
    _, _, r2 = _chain(s, cat, phat_asts_rate)
    m2 = json.loads(Path(r2.manifest_url).read_text())
    if m2["density_bin_edges"] != m1["density_bin_edges"]:
        pytest.skip("the added star changed the density-bin edges: a re-split is the intended answer")
    assert m2["frozen"] and m2["flux_edges"] == m1["flux_edges"]
    changed = [u for u, b in before.items() if Path(u).read_bytes() != b]
    assert changed == [first["url"]], changed
    assert sum(e["n_rows"] for e in m2["subfiles"]) == sum(e["n_rows"] for e in m1["subfiles"]) + 1
    # asked for: split by n_per_file again (edges recomputed from the rows)
    s2 = make_settings(observations={"source_density": {"pixsize": 1.0}, "split": {"n_per_file": 20, "resplit": True}})
    _, _, r3 = _chain(s2, cat, phat_asts_rate)
    m3 = json.loads(Path(r3.manifest_url).read_text())
    assert not m3["frozen"] and all(e["n_rows"] <= 20 for e in m3["subfiles"])
    # behaviour.observations.always_resplit alone (BEAST) re-splits too
    s4 = make_settings(
        observations={"source_density": {"pixsize": 1.0}, "split": {"n_per_file": 20}},
        behaviour={"observations": {"always_resplit": True}},
    )
    _, _, r4 = _chain(s4, cat, phat_asts_rate)
    assert not json.loads(Path(r4.manifest_url).read_text())["frozen"]
