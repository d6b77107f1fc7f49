"""Units of the stats columns (Parquet field metadata) and the FITS / ECSV export read back by astropy."""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest

from beastflow.fit.columns import describe_column
from beastflow.fit.export import export_stats, provenance_from_header
from beastflow.fit.outputs import read_stats, stats_units, write_stats

FILTERS = ["HST_ACS_WFC_F475W", "HST_ACS_WFC_F814W"]
PROV = {
    "stage": "merge",
    "settings_hash": "ab" * 32,
    "inputs": {"stats_0": "/x/P_bin1_sub0_stats.parquet"},
    "input_hashes": {"stats_0": "deadbeef"},
    "software": {"beastflow": "0.1.0"},
}


@pytest.fixture
def run_folder(tmp_path):
    n = 5
    rng = np.random.default_rng(3)
    data = {
        "Name": [f"PHAT J0044{i:02d}" for i in range(n)],
        "star_id": np.arange(n) + 10,
        "RA": rng.uniform(11, 11.1, n),
        "DEC": rng.uniform(41, 41.1, n),
    }
    for f in FILTERS:
        data[f] = rng.uniform(1e-19, 1e-18, n)
    for q in ("Av", "logA", "M_ini", "logT", "Z"):
        for s in ("Best", "Exp", "p16", "p50", "p84"):
            data[f"{q}_{s}"] = rng.uniform(1, 2, n)
    for f in FILTERS:
        data[f"symlog{f}_wd_bias_p50"] = rng.uniform(1, 2, n)
    data["chi2min"] = rng.uniform(0, 5, n)
    data["reorder_tag"] = ["bin1_sub0"] * n
    write_stats(str(tmp_path / "fld_stats.parquet"), pl.DataFrame(data), PROV, {"filters": FILTERS, "compat": "none"})
    return tmp_path, data


def test_stats_columns_carry_units_in_parquet_field_metadata(run_folder):
    out, data = run_folder
    url = str(out / "fld_stats.parquet")
    units = stats_units(url)
    assert units["M_ini_p50"] == "solMass"
    assert units["Av_p16"] == "mag"
    assert units["logA_Best"] == "dex(yr)"
    assert units["logT_p84"] == "dex(K)"
    assert units["RA"] == "deg"
    assert units[FILTERS[0]] == "erg / (Angstrom s cm2)"
    # dimensionless or no unit: left out rather than guessed
    for c in ("Z_p50", "chi2min", "star_id", "Name", f"symlog{FILTERS[0]}_wd_bias_p50"):
        assert c not in units
    schema = pq.read_schema(url)
    assert b"median" in schema.field("M_ini_p50").metadata[b"description"]
    df, info = read_stats(url)
    assert df.columns == list(data) and info["provenance"]["stage"] == "merge"


def test_describe_column_units():
    assert describe_column("M_act_Exp", FILTERS)[0] == "solMass"
    assert describe_column("true_logA", FILTERS)[0] == "dex(yr)"
    assert describe_column("distance_p50", FILTERS)[0] == "pc"
    assert describe_column("logL_p50", FILTERS)[0] == "dex(solLum)"
    assert describe_column("something_new", FILTERS) == ("", "")


def test_fits_export_read_back_by_astropy_with_units_and_provenance(run_folder):
    import astropy.units as u
    from astropy.io import fits
    from astropy.table import Table

    out, data = run_folder
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no truncated cards, no lost units
        url = export_stats(str(out), "fits")
    assert url == str(out / "fld_stats.fits")
    t = Table.read(url)
    assert len(t) == 5 and t.colnames == list(data)
    assert t["M_ini_p50"].unit == u.solMass
    assert t["Av_p50"].unit == u.mag
    assert t["logA_p50"].unit == u.dex(u.yr)
    assert t[FILTERS[1]].unit == u.erg / u.s / u.cm**2 / u.AA
    assert t["chi2min"].unit is None
    np.testing.assert_allclose(t["M_ini_p50"], data["M_ini_p50"])
    assert list(t["Name"]) == data["Name"] and list(t["reorder_tag"]) == data["reorder_tag"]
    h = fits.getheader(url, "STATS")
    assert h["TUNIT" + str(t.colnames.index("M_ini_p50") + 1)] == "solMass"
    assert h["PROJECT"] == "fld" and h["STAGE"] == "merge" and h["SETHASH"] == "ab" * 32
    assert h["ORIGIN"].startswith("beastflow")
    assert provenance_from_header(h) == PROV
    assert "median" in h["TCOMM" + str(t.colnames.index("M_ini_p50") + 1)]


def test_ecsv_export_and_cli(run_folder, capsys):
    import astropy.units as u
    from astropy.table import Table

    from beastflow.cli import main

    out, data = run_folder
    assert main(["export", str(out), "--format", "fits", "ecsv"]) == 0
    printed = capsys.readouterr().out
    assert "fld_stats.fits" in printed and "fld_stats.ecsv" in printed
    t = Table.read(str(out / "fld_stats.ecsv"))
    assert t["logT_p50"].unit == u.dex(u.K) and t["M_ini_Best"].unit == u.solMass
    assert t.meta["provenance"] == PROV
    assert t["Av_p50"].info.description.startswith("V-band dust extinction")
    # bad format: argparse refuses it; a folder without stats: one error line, status 1
    assert main(["export", str(out / "nothing")]) == 1
    assert "no such output folder" in capsys.readouterr().err
    with pytest.raises(ValueError, match="export format 'votable'"):
        export_stats(str(out), "votable")
