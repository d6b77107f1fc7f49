import json

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest

from beastflow.observations import catalogs
from beastflow.observations.catalogs import CatalogError

from .conftest import PHAT_BANDS, PHAT_FILTERS


def test_read_phat_fits_normalises(phat_catalog):
    df = catalogs.read_photometry(str(phat_catalog), PHAT_FILTERS)
    assert df.height == 269
    assert df["star_id"].to_list() == list(range(269))
    for b in PHAT_BANDS:
        for s in ("RATE", "VEGA", "FLAG"):
            assert f"{b}_{s}" in df.columns
    assert {"RA", "DEC", "X", "Y"} <= set(df.columns)
    # values unchanged by the renaming / byte-order conversion
    from astropy.table import Table

    t = Table.read(phat_catalog)
    np.testing.assert_array_equal(df["F475W_RATE"].to_numpy(), np.asarray(t["f475w_rate"]))
    np.testing.assert_array_equal(df["RA"].to_numpy(), np.asarray(t["ra"]))


@pytest.mark.parametrize("ext", ["parquet", "csv", "hd5", "fits"])
def test_formats_round_trip(phat_catalog, tmp_path, ext):
    ref = catalogs.read_photometry(str(phat_catalog), PHAT_FILTERS).drop("star_id")
    sub = ref.select(["RA", "DEC"] + [c for c in ref.columns if c.endswith(("_RATE", "_VEGA", "_FLAG"))])
    path = tmp_path / f"cat.{ext}"
    if ext == "parquet":
        sub.write_parquet(path)
    elif ext == "csv":
        sub.write_csv(path)
    else:
        from astropy.table import Table

        t = Table({c.lower(): sub[c].to_numpy() for c in sub.columns})  # lower-case as PHAT
        t.write(path, path="data", format="hdf5") if ext == "hd5" else t.write(path)
    got = catalogs.read_photometry(str(path), PHAT_FILTERS)
    assert got.height == 269
    np.testing.assert_allclose(got["F814W_RATE"].to_numpy(), sub["F814W_RATE"].to_numpy(), rtol=1e-6)
    assert got["star_id"].to_list() == list(range(269))


def test_asts_old_and_new_layout_agree(phat_asts, phat_asts_rate):
    old = catalogs.read_asts(str(phat_asts), PHAT_FILTERS)
    new = catalogs.read_asts(str(phat_asts_rate), PHAT_FILTERS)
    assert old.height == new.height == 521
    for b in PHAT_BANDS:
        np.testing.assert_allclose(old[f"{b}_RATE"].to_numpy(), new[f"{b}_RATE"].to_numpy(), rtol=1e-12)
        np.testing.assert_array_equal(np.isnan(old[f"{b}_IN"].to_numpy()), np.isnan(new[f"{b}_IN"].to_numpy()))
    assert (old["CUT_FLAG"] == 0).all()
    # README: F475W inserted in 175 ASTs, 92 recovered
    assert int((~np.isnan(new["F475W_IN"].to_numpy())).sum()) == 175
    assert int((new["F475W_RATE"].to_numpy() > 0).sum()) == 92


def test_missing_column_named(tmp_path, phat_catalog):
    df = catalogs.read_photometry(str(phat_catalog), PHAT_FILTERS).drop("F336W_FLAG", "star_id")
    p = tmp_path / "bad.parquet"
    df.write_parquet(p)
    with pytest.raises(CatalogError, match=r"bad\.parquet.*F336W_FLAG"):
        catalogs.read_photometry(str(p), PHAT_FILTERS)
    df.drop("RA", "DEC", "X", "Y").write_parquet(p)
    with pytest.raises(CatalogError, match=r"RA.*DEC"):
        catalogs.read_photometry(str(p), PHAT_FILTERS)


def test_empty_catalog_error(tmp_path, phat_catalog):
    df = catalogs.read_photometry(str(phat_catalog), PHAT_FILTERS).head(0)
    p = tmp_path / "empty.parquet"
    df.write_parquet(p)
    with pytest.raises(CatalogError, match=r"empty\.parquet.*empty"):
        catalogs.read_photometry(str(p), PHAT_FILTERS)


def test_missing_file_and_unknown_format(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.fits"):
        catalogs.read_table(str(tmp_path / "nope.fits"))
    (tmp_path / "x.xyz").write_text("a")
    with pytest.raises(CatalogError, match="unknown catalog format"):
        catalogs.read_table(str(tmp_path / "x.xyz"))


def test_parquet_provenance_metadata(tmp_path):
    df = pl.DataFrame({"a": [1, 2]})
    url = str(tmp_path / "o.parquet")
    catalogs.write_parquet(df, url, {"stage": "x", "settings_hash": "h"}, {"k": 1})
    md = pq.read_schema(url).metadata
    assert json.loads(md[b"beastflow_provenance"])["stage"] == "x"
    prov, meta = catalogs.read_parquet_metadata(url)
    assert prov["settings_hash"] == "h" and meta == {"k": 1}
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_ingest_writes_normalised_parquet(phat_catalog, phat_asts, make_settings):
    s = make_settings()
    u = catalogs.run_ingest(s, str(phat_catalog))
    df = pl.read_parquet(u)
    assert u.endswith("phat_catalog.parquet") and df.height == 269 and "F475W_RATE" in df.columns
    a = pl.read_parquet(catalogs.run_ingest(s, str(phat_asts), "asts"))
    assert a.height == 521 and "F475W_RATE" in a.columns and "CUT_FLAG" in a.columns
    # reading our own output back gives the same frame (star_id kept, not renumbered)
    again = catalogs.read_photometry(u, PHAT_FILTERS)
    assert again.equals(df)
    prov, meta = catalogs.read_parquet_metadata(u)
    assert prov["stage"] == "ingest" and meta["kind"] == "photometry"


def test_a_stage_leaves_the_process_storage_options_alone(phat_catalog, make_settings):
    """Storage options are installed once per process at the entry points; a stage
    never swaps in its own settings' options under other threads' feet."""
    from beastflow import storage

    storage.configure({"s3": {"endpoint_url": "http://entry-point"}})
    try:
        s = make_settings()
        other = s.project.model_copy(update={"storage_options": {"s3": {"endpoint_url": "http://stage"}}})
        catalogs.run_ingest(s.model_copy(update={"project": other}), str(phat_catalog))
        assert storage.storage_options_for("s3://b/x") == {"endpoint_url": "http://entry-point"}
    finally:
        storage.configure({})


def test_column_float_names_the_column_when_nothing_to_aggregate():
    # polars aggregates: a number, or None when every value is null
    assert catalogs.column_float(pl.Series([3, 1]).min(), "x") == 1.0
    assert catalogs.column_float(pl.Series([0.5, None]).mean(), "x") == 0.5
    with pytest.raises(CatalogError, match="cat.fits column F475W_RATE: every value is null"):
        catalogs.column_float(pl.Series([None, None], dtype=pl.Float64).min(), "cat.fits column F475W_RATE")
    with pytest.raises(CatalogError, match="expected numbers, got 'a'"):
        catalogs.column_float(pl.Series(["a", "b"]).min(), "cat.fits column NAME")


def test_duplicate_star_ids_are_an_error_naming_them():
    import polars as pl

    from beastflow.observations.catalogs import CatalogError, prepare_photometry

    filters = ["HST_ACS_WFC_F475W"]
    df = pl.DataFrame(
        {
            "star_id": [7, 8, 7, 9, 9],
            "RA": [1.0] * 5,
            "DEC": [2.0] * 5,
            "F475W_RATE": [1.0] * 5,
            "F475W_VEGA": [20.0] * 5,
            "F475W_FLAG": [0] * 5,
        }
    )
    with pytest.raises(CatalogError, match=r"star_id has 2 duplicated value\(s\): 7, 9"):
        prepare_photometry(df, filters, "cat.fits")
    assert prepare_photometry(df.unique("star_id", keep="first"), filters, "cat.fits").height == 3
