import json

import numpy as np

from beastflow.cli import main
from beastflow.io.noise_model import open_noise_model
from beastflow.io.trim_index import read_trim_index

from .conftest import BANDS, FILTERS, ast_flux_range, synthetic_seds, write_grid


def test_noisemodel_and_trim_commands_chain_via_manifest(tmp_path, phat_asts_rate, phat_catalog, asts, vega, capsys):
    from beastflow.observations.catalogs import read_photometry

    out = tmp_path / "out"
    out.mkdir()
    (tmp_path / "s.toml").write_text(
        f'[project]\nname = "P"\noutput = "out"\n[physics]\nfilters = {json.dumps(FILTERS)}\n'
        "[noise_model]\nn_flux_bins = 5\nchunk_models = 1024\n[trim]\nchunk_models = 1024\n"
    )
    df = read_photometry(str(phat_catalog), FILTERS).sort("F475W_RATE")
    obs = np.column_stack([df[f"{b}_RATE"].to_numpy() for b in BANDS]) * vega
    lo, hi = ast_flux_range(asts, vega)
    write_grid(out / "P_seds.grid.hd5", synthetic_seds(4000, lo, hi, seed=7, anchors=obs))
    # what the split stage leaves: per-bin ASTs, sub-files, the manifest
    asts.write_parquet(out / "P_asts_bin0.parquet")
    subs = []
    for u, rows in enumerate([range(90, 180), range(180, df.height)]):
        url = str(out / f"P_bin0_sub{u}.parquet")
        df[list(rows)].write_parquet(url)
        subs.append({"bin": 0, "sub": u, "url": url, "n_rows": len(rows)})
    (out / "P_split_manifest.json").write_text(
        json.dumps(
            {"subfiles": subs, "asts": [{"bin": 0, "url": str(out / "P_asts_bin0.parquet"), "n_rows": asts.height}]}
        )
    )

    assert main(["noisemodel", str(tmp_path / "s.toml")]) == 0
    nm = open_noise_model(str(out / "P_bin0_gridsub0_noisemodel.hd5"))
    assert nm.n_models == 4000
    assert main(["trim", str(tmp_path / "s.toml")]) == 0
    for u in (0, 1):
        # the trim artifact is the kept-row index; no trimmed copies unless [trim] materialize
        ti = read_trim_index(str(out / f"P_bin0_sub{u}_trim.hd5"))
        assert 0 < ti.n_kept < ti.n_models_in == 4000
        assert not (out / f"P_bin0_sub{u}_seds_trim.grid.hd5").exists()
    # rerun: everything exists, nothing redone
    capsys.readouterr()
    assert main(["noisemodel", str(tmp_path / "s.toml")]) == 0
    assert main(["trim", str(tmp_path / "s.toml")]) == 0
    text = capsys.readouterr().out
    assert "exists" in text and "0 sub-file(s) trimmed" in text


def test_cli_errors_are_one_line(tmp_path, capsys):
    (tmp_path / "s.toml").write_text('[project]\noutput = "out"\n')
    assert main(["trim", str(tmp_path / "s.toml")]) == 1
    err = capsys.readouterr().err
    assert "beastflow trim: error:" in err and "seds.grid.hd5" in err
