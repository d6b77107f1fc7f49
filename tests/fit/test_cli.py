import numpy as np
import pytest

from beastflow.cli import main
from beastflow.fit.outputs import read_stats


@pytest.fixture
def settings_file(tmp_path):
    f = tmp_path / "beastflow.toml"
    f.write_text('[project]\nname = "P"\noutput = "out"\n[fit]\nlnp_npts = 20\n')
    return f


def test_cli_grid_info_fit_merge(field, settings_file, tmp_path, capsys, monkeypatch):
    from tests.fit import synth
    import beastflow.physics.vega as vega

    # the test grid uses stand-in Vega fluxes
    monkeypatch.setattr(vega, "vega_band_fluxes", lambda filters, compat=False: synth.VEGA.copy())
    out = tmp_path / "out"
    assert main(["grid-info", str(settings_file), *field["subs"]]) == 0
    gi = out / "P_grid_info.json"
    assert gi.exists()
    prefixes = []
    for g in range(3):
        pre = str(out / f"P_bin0_sub0_gridsub{g}")
        assert main(["fit", str(settings_file), "--grid", field["trim_subs"][g], "--noise",
                     field["trim_sub_noise"][g], "--catalog", field["cat0"], "--grid-info", str(gi),
                     "--out", pre]) == 0
        prefixes.append(pre + "_stats.parquet")
    assert main(["merge", str(settings_file), *prefixes]) == 0
    st, info = read_stats(str(out / "P_stats.parquet"))
    assert len(st) == 40 and sorted(info["meta"]["merged_subgrids"]) == [0, 1, 2]
    assert "stars/s" in capsys.readouterr().out


def test_cli_error_is_one_line(field, settings_file, capsys):
    rc = main(["fit", str(settings_file), "--grid", field["trim"], "--noise", field["trim_noise"],
               "--catalog", "/nonexistent/cat.parquet", "--out", "x"])
    assert rc == 1
    assert "nonexistent" in capsys.readouterr().err
