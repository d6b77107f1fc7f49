"""Isochrones (spec §1.1): offline PARSEC / MIST grids and user tables."""

from __future__ import annotations

import numpy as np
import pytest

from beastflow.physics import isochrones as iso_mod
from beastflow.physics.isochrones import COLUMNS, load_isochrones, requested_ages
from beastflow.settings.physics import Isochrones

LOGT_SUN = np.log10(5772.0)  # IAU 2015 nominal T_eff

# The Sun started with more metals than its present surface shows (diffusion).
# PARSEC v1.2S: calibrated solar model Z_ini = 0.01774 (Bressan et al. 2012),
# while Z = 0.0152 (its [M/H] = 0) gives a 1 M_sun star 0.044 dex brighter at
# 4.57 Gyr.  MIST: 0.0153, the solar Z BEAST itself uses for MIST tracks
# (spec §1.2); with the protosolar 0.0142 ([Fe/H] = 0) the star is 0.028 dex
# brighter (logT still within 0.005 dex).
SOLAR_ZINI = {"parsec": 0.01774, "mist": 0.0153}


@pytest.mark.parametrize("source", ["parsec", "mist"])
def test_sun_is_a_one_msun_star_at_4p6_gyr(source):
    t = load_isochrones(Isochrones(source=source, logt=[9.66], z=[SOLAR_ZINI[source]]))
    i = np.nonzero(np.isclose(t["M_ini"], 1.0, rtol=1e-9))[0]
    assert i.size == 1, "1 M_sun must be a node of the log-mass lattice"
    i = i[0]
    assert abs(t["logT"][i] - LOGT_SUN) < 0.02
    assert abs(t["logL"][i]) < 0.02
    assert abs(t["logg"][i] - 4.438) < 0.03  # log g_sun = 4.438
    assert t["stage"][i] == (1.0 if source == "parsec" else 0.0)  # main sequence
    assert abs(t["mbolmag"][i] - 4.74) < 0.1


@pytest.mark.parametrize("source", ["parsec", "mist"])
def test_columns_ages_and_metallicity_selection(source):
    zsun = iso_mod.GRID_SETS[source].zsun
    z = [zsun, zsun * 10**-1.0, zsun * 10**0.2]
    t = load_isochrones(Isochrones(source=source, logt=[6.6, 7.6, 0.5], z=z))
    assert set(t) == set(COLUMNS)
    n = t["logA"].size
    for c in COLUMNS:
        assert t[c].dtype == np.float64 and t[c].shape == (n,)
    # rows stacked in the order of the z list, ages ascending within each Z
    zs = t["Z"]
    first = [np.argmax(zs == zz) for zz in z]
    assert first == sorted(first)
    assert np.array_equal(np.unique(t["logA"]), [6.6, 7.1, 7.6])
    assert np.all(t["logL"] > -9)
    # metal-poor stars of the same mass and age are hotter on the main sequence
    sel = (t["logA"] == 7.6) & np.isclose(t["M_ini"], 10**0.5)  # a 3.2 M_sun dwarf
    by_z = {zz: t["logT"][sel & (zs == zz)] for zz in z}
    assert by_z[z[1]][0] > by_z[z[0]][0] > by_z[z[2]][0]


def test_age_and_metallicity_interpolation_is_between_neighbours():
    g = iso_mod._grid("parsec")
    # 9.675 lies between the lattice ages 9.65 and 9.70; [Fe/H] 0.1 between 0 and 0.25
    mid = iso_mod.interpolate_isochrone(g, 9.675, 0.1)
    for a, f in [(9.65, 0.1), (9.70, 0.1), (9.675, 0.0), (9.675, 0.25)]:
        assert iso_mod.interpolate_isochrone(g, a, f)["eep"].size > 0

    def at_1msun(o):
        return np.interp(0.0, o["logM_ini"], o["logL"])

    lo = at_1msun(iso_mod.interpolate_isochrone(g, 9.65, 0.1))
    hi = at_1msun(iso_mod.interpolate_isochrone(g, 9.70, 0.1))
    assert lo < at_1msun(mid) < hi  # a 1 M_sun dwarf brightens with age
    # exactly on the lattice: the lattice isochrone itself
    eep, cols = g.block(int(np.argmin(abs(g.fehs))), int(np.argmin(abs(g.ages - 9.65))))
    on = iso_mod.interpolate_isochrone(g, 9.65, 0.0)
    assert np.array_equal(on["eep"], eep)
    assert np.allclose(on["logT"], cols["log_Teff"], rtol=0, atol=1e-12)


def test_requested_ages_follow_beast_clamps():
    assert np.allclose(requested_ages([6.0, 10.13, 1.0], 6.0), [6, 7, 8, 9, 10])
    assert np.allclose(requested_ages([5.0, 6.5, 0.5], 6.0), [6.0, 6.5])  # PadovaWeb clamp
    assert np.allclose(requested_ages([5.0, 6.0, 0.5], 5.0), [5.0, 5.5, 6.0])
    a = requested_ages([6.0, 10.13, 0.1], 6.0)
    assert a.size == 42 and a[-1] == 10.1


def test_mass_resampling_step():
    step = 0.05
    t = load_isochrones(Isochrones(source="parsec", logt=[8.0], z=[0.0152], logmass_step=step, max_dlog=0.0))
    lm = np.log10(t["M_ini"])
    k = np.arange(np.ceil(lm.min() / step), np.floor(lm.max() / step) + 1)
    lattice = k * step
    # every lattice node is present (to float precision) ...
    assert np.all(np.min(np.abs(lm[:, None] - lattice[None, :]), axis=0) < 1e-9)
    # ... and the only other points are the two ends and the phase ends
    off = np.min(np.abs(lm[:, None] - lattice[None, :]), axis=1) > 1e-9
    assert off.sum() <= 2 + np.unique(t["stage"]).size
    # with max_dlog the giant branches are resolved: small steps in logT/logL
    t2 = load_isochrones(Isochrones(source="parsec", logt=[8.0], z=[0.0152], logmass_step=step, max_dlog=0.05))
    assert t2["logA"].size > t["logA"].size

    def n_big(x):
        return int(((np.abs(np.diff(x["logT"])) > 0.1) | (np.abs(np.diff(x["logL"])) > 0.1)).sum())

    # big jumps remain only where a single EEP step of the source grid is that big
    src = iso_mod.interpolate_isochrone(iso_mod._grid("parsec"), 8.0, 0.0)
    assert n_big(t2) <= n_big(src) < n_big(t)
    # post-main-sequence (stage >= 2) points: many more than the mass lattice gives
    assert (t2["stage"] >= 2).sum() > 3 * (t["stage"] >= 2).sum()


def test_coverage_errors_name_the_setting():
    with pytest.raises(ValueError, match=r"physics\.isochrones\.z"):
        load_isochrones(Isochrones(source="parsec", logt=[9.0], z=[0.0001]))
    with pytest.raises(ValueError, match=r"physics\.isochrones\.z"):
        load_isochrones(Isochrones(source="mist", logt=[9.0], z=[0.08]))
    with pytest.raises(ValueError, match=r"physics\.isochrones\.logt"):
        load_isochrones(Isochrones(source="parsec", logt=[9.0, 10.2, 0.1], z=[0.0152]))
    with pytest.raises(ValueError, match=r"physics\.isochrones\.logt"):
        load_isochrones(Isochrones(source="mist", logt=[4.5, 6.0, 0.5], z=[0.0142]))


def test_filter_pms():
    a = load_isochrones(Isochrones(source="mist", logt=[6.5], z=[0.0142]))
    b = load_isochrones(Isochrones(source="mist", logt=[6.5], z=[0.0142], filter_pms=True))
    pms = (a["stage"] == -1) & (a["M_ini"] < 12)
    assert pms.sum() > 0
    assert b["logA"].size == a["logA"].size - pms.sum()
    assert not np.any((b["stage"] == -1) & (b["M_ini"] < 12))


def _table_rows():
    from astropy.table import Table

    return Table(
        {
            "logA": [9.0, 9.0, 9.0, np.nan],
            "M_ini": [1.0, 1.5, 2.0, 1.0],
            "M_act": [1.0, 1.5, 1.9, 1.0],
            "logL": [0.1, 0.8, -9.999, 0.0],
            "logT": [3.76, 3.85, 3.6, 3.76],
            "logg": [4.4, 4.2, 1.0, 4.4],
            "Z": [0.0152] * 4,
            "stage": [1, 1, 3, 1],
            "extra": [0, 0, 0, 0],
        }
    )


@pytest.mark.parametrize("ext", ["csv", "ecsv", "fits", "parquet"])
def test_table_source(tmp_path, ext):
    t = _table_rows()
    f = tmp_path / f"et.{ext}"
    if ext == "parquet":
        import polars as pl

        pl.DataFrame({c: np.asarray(t[c]) for c in t.colnames}).write_parquet(f)
    else:
        t.write(f, format={"csv": "ascii.csv", "ecsv": "ascii.ecsv", "fits": "fits"}[ext])
    out = load_isochrones(Isochrones(source="table", table=str(f)))
    # the logL sentinel row and the NaN-age row are dropped
    assert np.allclose(out["M_ini"], [1.0, 1.5])
    assert set(out) == set(COLUMNS)
    # no mbolmag column: M_bol = 4.74 - 2.5 logL
    assert np.allclose(out["mbolmag"], 4.74 - 2.5 * np.array([0.1, 0.8]))


def test_table_missing_column_names_file_and_column(tmp_path):
    t = _table_rows()
    t.remove_column("logg")
    f = tmp_path / "et.csv"
    t.write(f, format="ascii.csv")
    with pytest.raises(ValueError, match=r"et\.csv.*logg"):
        load_isochrones(Isochrones(source="table", table=str(f)))


def test_settings_keys_named():
    from beastflow.settings import SettingsError, settings_from_dict

    with pytest.raises(SettingsError, match=r"physics\.isochrones\.max_dlog"):
        settings_from_dict({"physics": {"isochrones": {"max_dlog": -0.1}}})
    with pytest.raises(SettingsError, match=r"physics\.isochrones"):
        settings_from_dict({"physics": {"isochrones": {"source": "table"}}})


def _two_age_two_z_table(tmp_path):
    import polars as pl

    rows = {
        "logA": [8.0, 8.0, 9.0, 9.0, 9.0],
        "M_ini": [1.0, 2.0, 1.0, 2.0, 1.0],
        "M_act": [1.0, 2.0, 1.0, 1.9, 1.0],
        "logL": [0.1, 1.2, 0.2, 1.5, 0.0],
        "logT": [3.76, 3.95, 3.75, 3.9, 3.77],
        "logg": [4.4, 4.3, 4.3, 3.5, 4.5],
        "Z": [0.0152, 0.0152, 0.0152, 0.0152, 0.008],
    }
    f = tmp_path / "et.parquet"
    pl.DataFrame(rows).write_parquet(f)
    return str(f)


def test_table_rows_selected_by_logt_and_z(tmp_path):
    f = _two_age_two_z_table(tmp_path)
    whole = load_isochrones(Isochrones(source="table", table=f))  # logt, z at their defaults: every row
    assert whole["logA"].size == 5
    sel = load_isochrones(Isochrones(source="table", table=f, logt=[9.0]))
    assert sel["logA"].tolist() == [9.0, 9.0, 9.0]
    sel = load_isochrones(Isochrones(source="table", table=f, logt=[7.0, 9.5, 1.0], z=[0.008]))
    assert sel["logA"].tolist() == [9.0] and sel["Z"].tolist() == [0.008]
    with pytest.raises(ValueError, match=r"et\.parquet: no row has logA on physics\.isochrones\.logt = \[7\.5\]"):
        load_isochrones(Isochrones(source="table", table=f, logt=[7.5]))


def test_table_refuses_the_mass_resampling_keys(tmp_path):
    from beastflow.settings import SettingsError, settings_from_dict

    f = _two_age_two_z_table(tmp_path)
    with pytest.raises(
        SettingsError,
        match=r"physics\.isochrones\.logmass_step = 0\.1: not used with source = "
        r"'table'",
    ):
        settings_from_dict({"physics": {"isochrones": {"source": "table", "table": f, "logmass_step": 0.1}}})
    # the template's values are the defaults: accepted
    settings_from_dict({"physics": {"isochrones": {"source": "table", "table": f, "logmass_step": 0.05}}})
