"""``beastflow run`` on a real field without artificial stars (splinter noise model)."""

from __future__ import annotations

import json

import polars as pl
import pytest

from beastflow.cli import main
from beastflow.io.noise_model import open_noise_model

FILTERS = [
    "HST_WFC3_F275W",
    "HST_WFC3_F336W",
    "HST_ACS_WFC_F475W",
    "HST_ACS_WFC_F814W",
    "HST_WFC3_F110W",
    "HST_WFC3_F160W",
]


@pytest.mark.pipeline
def test_phat_small_runs_end_to_end_without_asts(prefect_fast, phat_catalog, tmp_path, capsys):
    # phat_small's catalog only: its AST files are not given, and no AST stage runs
    toml = tmp_path / "phat.toml"
    toml.write_text(
        f'[project]\nname = "phat"\noutput = "out"\n'
        f"[physics]\nfilters = {json.dumps(FILTERS)}\ndistances = [24.47]\n"
        "[physics.isochrones]\nlogt = [8.0, 10.0, 1.0]\n"
        "[physics.extinction]\navs = [0.5, 2.5, 1.0]\nrvs = [3.1]\nfAs = [1.0]\n"
        f'[observations]\ncatalog = "{phat_catalog}"\n'
        '[noise_model]\nmodel = "splinter"\nsplinter_fraction = 0.1\n'
        "[fit]\nlnp_npts = 20\npdf_max_nbins = 20\n"
        "[execution]\nprogress = false\n"
    )
    assert main(["run", str(toml), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert 'ast_inputs    skipped: noise_model.model = "splinter"' in text
    assert "stars=269" in text and "median chi2min=" in text
    out = tmp_path / "out"
    assert not list(out.glob("*inputAST*")) and not list(out.glob("*asts*"))
    nm = open_noise_model(str(out / "phat_gridsub0_noisemodel.hd5"))
    assert nm.meta["model"] == "splinter"
    stats = pl.read_parquet(out / "phat_stats.parquet")
    assert stats.height == 269 and stats["chi2min"].is_finite().all()
