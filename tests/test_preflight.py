"""Every input of a run is checked before the first stage (issue 12, item 8)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from beastflow.filters import short_names
from beastflow.preflight import InputsError, check_run_inputs, table_columns
from beastflow.settings import Settings, settings_from_dict

FILTERS = Settings().physics.filters


def _catalog(path, drop: str | None = None):
    cols = {"RA": np.zeros(3), "DEC": np.zeros(3)}
    for b in short_names(FILTERS):
        cols.update({f"{b}_RATE": np.ones(3), f"{b}_VEGA": np.ones(3), f"{b}_FLAG": np.zeros(3, np.int16)})
    cols.pop(drop, None)
    pl.DataFrame(cols).write_parquet(path)
    return str(path)


def test_good_inputs_pass(tmp_path):
    s = settings_from_dict({"observations": {"catalog": _catalog(tmp_path / "c.parquet")}})
    check_run_inputs(s)


def test_every_problem_is_named_at_once(tmp_path):
    s = settings_from_dict(
        {
            "observations": {
                "catalog": _catalog(tmp_path / "c.parquet", drop="F814W_VEGA"),
                "ast_results": str(tmp_path / "no-asts.parquet"),
            },
            "noise_model": {"absflux_covariance": str(tmp_path / "cov.fits")},
        }
    )
    with pytest.raises(InputsError) as err:
        check_run_inputs(s)
    msg = str(err.value)
    assert "\n" not in msg and "nothing was computed" in msg
    assert "observations.catalog" in msg and "F814W_VEGA" in msg
    assert f"observations.ast_results = {tmp_path / 'no-asts.parquet'}: file not found" in msg
    assert "noise_model.absflux_covariance" in msg


def test_no_catalog_and_unreadable_catalog(tmp_path):
    with pytest.raises(InputsError, match=r"observations\.catalog: no photometry catalog set"):
        check_run_inputs(Settings())
    bad = tmp_path / "c.parquet"
    bad.write_bytes(b"not parquet at all")
    s = settings_from_dict({"observations": {"catalog": str(bad)}})
    with pytest.raises(InputsError, match=r"c\.parquet: cannot be read"):
        check_run_inputs(s)


def test_columns_from_the_header_only(tmp_path):
    from astropy.table import Table

    Table({"ra": [1.0], "f475w_rate": [2.0]}).write(tmp_path / "t.fits", format="fits")
    assert table_columns(str(tmp_path / "t.fits")) == ["RA", "F475W_RATE"]
    (tmp_path / "t.csv").write_text("# comment\nRA_J2000,dec_j2000,x\n1,2,3\n")
    assert table_columns(str(tmp_path / "t.csv")) == ["RA", "DEC", "X"]
