import json

import numpy as np
import polars as pl

from beastflow.cli import main


def _settings_file(tmp_path, phat_catalog, phat_asts_rate, extra=""):
    f = tmp_path / "beastflow.toml"
    f.write_text(f"""
[project]
name = "phat"
output = "out"

[observations]
catalog = "{phat_catalog}"
ast_results = "{phat_asts_rate}"

[observations.source_density]
pixsize = 1.0

[observations.split]
n_per_file = 50
{extra}
""")
    return f


def test_cli_chain(tmp_path, phat_catalog, phat_asts_rate, capsys):
    f = _settings_file(tmp_path, phat_catalog, phat_asts_rate)
    assert main(["density-map", str(f)]) == 0
    assert main(["cut", str(f)]) == 0
    assert main(["split", str(f)]) == 0
    out = capsys.readouterr().out
    assert "phat_sourceden_map.parquet" in out and "phat_split_manifest.json" in out
    m = json.loads((tmp_path / "out" / "phat_split_manifest.json").read_text())
    assert sum(e["n_rows"] for e in m["subfiles"]) == 269
    assert all(e["n_rows"] == 171 for e in m["asts"])


def test_cli_ast_inputs_and_errors(tmp_path, phat_catalog, phat_asts_rate, capsys):
    from beastflow.io.sed_grid import write_sed_grid
    from beastflow.physics.vega import vega_band_fluxes

    from .conftest import PHAT_FILTERS

    f = _settings_file(tmp_path, phat_catalog, phat_asts_rate, "\n[asts]\nn_flux_bins = 5\nn_per_flux_bin = 3\n")
    rng = np.random.default_rng(0)
    n = 3000
    mags = rng.uniform(16, 30, n)[:, None] + rng.normal(0, 0.5, (n, 6))
    out = tmp_path / "out"
    out.mkdir()
    write_sed_grid(
        str(out / "phat_seds.grid.hd5"),
        PHAT_FILTERS,
        np.arange(6.0),
        vega_band_fluxes(PHAT_FILTERS) * 10 ** (-0.4 * mags),
        {"logL": np.zeros(n), "logA": np.full(n, 7.0)},
    )
    assert main(["ast-inputs", str(f)]) == 1  # no density map yet: clear one-line error
    assert "density map" in capsys.readouterr().err
    assert main(["density-map", str(f)]) == 0
    assert main(["ast-inputs", str(f)]) == 0
    inp = pl.read_parquet(out / "phat_inputAST.parquet")
    assert inp.height > 0 and (out / "phat_inputAST.txt").exists()
    # bad input: a missing column is named, exit code 1, nothing written
    bad = tmp_path / "bad.parquet"
    pl.read_parquet(out / "phat_catalog_sd.parquet").drop("F160W_RATE").write_parquet(bad)
    assert main(["cut", str(f), "--catalog", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "F160W_RATE" in err and "bad.parquet" in err
    assert not (out / "phat_catalog_cut.parquet").exists()
