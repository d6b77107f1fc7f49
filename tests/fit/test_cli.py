import pytest

from beastflow.cli import main
from beastflow.fit.outputs import read_stats


@pytest.fixture
def settings_file(tmp_path):
    f = tmp_path / "beastflow.toml"
    f.write_text('[project]\nname = "P"\noutput = "out"\n[fit]\nlnp_npts = 20\n')
    return f


def test_cli_grid_info_fit_merge(field, settings_file, tmp_path, capsys, monkeypatch):
    import beastflow.physics.vega as vega
    from tests.fit import synth

    # the test grid uses stand-in Vega fluxes
    monkeypatch.setattr(vega, "vega_band_fluxes", lambda filters, positive_points=False: synth.VEGA.copy())
    out = tmp_path / "out"
    assert main(["grid-info", str(settings_file), *field["subs"]]) == 0
    gi = out / "P_grid_info.json"
    assert gi.exists()
    prefixes = []
    for g in range(3):
        pre = str(out / f"P_bin0_sub0_gridsub{g}")
        assert (
            main(
                [
                    "fit",
                    str(settings_file),
                    "--grid",
                    field["trim_subs"][g],
                    "--noise",
                    field["trim_sub_noise"][g],
                    "--catalog",
                    field["cat0"],
                    "--grid-info",
                    str(gi),
                    "--out",
                    pre,
                ]
            )
            == 0
        )
        prefixes.append(pre + "_stats.parquet")
    assert main(["merge", str(settings_file), *prefixes]) == 0
    st, info = read_stats(str(out / "P_stats.parquet"))
    assert len(st) == 40 and sorted(info["meta"]["merged_subgrids"]) == [0, 1, 2]
    assert "stars/s" in capsys.readouterr().out


def test_cli_error_is_one_line(field, settings_file, capsys):
    rc = main(
        [
            "fit",
            str(settings_file),
            "--grid",
            field["trim"],
            "--noise",
            field["trim_noise"],
            "--catalog",
            "/nonexistent/cat.parquet",
            "--out",
            "x",
        ]
    )
    assert rc == 1
    assert "nonexistent" in capsys.readouterr().err


def test_cli_fit_and_grid_info_default_from_settings_and_manifest(field, tmp_path, capsys, monkeypatch):
    """`beastflow grid-info SETTINGS` and `beastflow fit SETTINGS` find their files like the other stages."""
    import json

    import beastflow.physics.vega as vega
    from tests.fit import synth

    monkeypatch.setattr(vega, "vega_band_fluxes", lambda filters, positive_points=False: synth.VEGA.copy())
    out = tmp_path / "run"
    out.mkdir()
    (out / "P_seds.grid.hd5").symlink_to(field["full"])
    (out / "P_bin0_sub0_seds_trim.grid.hd5").symlink_to(field["trim"])
    (out / "P_bin0_sub0_noisemodel_trim.grid.hd5").symlink_to(field["trim_noise"])
    (out / "P_bin0_sub1_seds_trim.grid.hd5").symlink_to(field["trim"])
    (out / "P_bin0_sub1_noisemodel_trim.grid.hd5").symlink_to(field["trim_noise"])
    (out / "P_split_manifest.json").write_text(
        json.dumps(
            {
                "subfiles": [
                    {"bin": 0, "sub": 0, "url": field["cat0"], "n_rows": 40},
                    {"bin": 0, "sub": 1, "url": field["cat1"], "n_rows": 25},
                ]
            }
        )
    )
    settings = tmp_path / "s.toml"
    settings.write_text(f'[project]\nname = "P"\noutput = "{out}"\n[fit]\nlnp_npts = 20\n')
    # fit before grid-info: several sub-files need the shared bins
    assert main(["fit", str(settings)]) == 1
    assert "grid-info" in capsys.readouterr().err
    assert main(["grid-info", str(settings)]) == 0
    assert (out / "P_grid_info.json").exists()
    assert main(["fit", str(settings)]) == 0
    text = capsys.readouterr().out
    assert "fit bin0_sub0: 40 stars" in text and "fit bin0_sub1: 25 stars" in text and "2 fit(s) run" in text
    st, info = read_stats(str(out / "P_bin0_sub1_stats.parquet"))
    assert len(st) == 25 and info["meta"]["tag"] == "bin0_sub1"
    # merge finds the fits the same way
    assert main(["merge", str(settings)]) == 0
    merged, _ = read_stats(str(out / "P_stats.parquet"))
    assert len(merged) == 65 and sorted(set(merged["reorder_tag"])) == ["bin0_sub0", "bin0_sub1"]
    # resumable: existing fits are skipped unless --force
    assert main(["fit", str(settings), "--bins", "0"]) == 0
    assert "0 fit(s) run" in capsys.readouterr().out
    # half an explicit job is an error naming what is missing
    assert main(["fit", str(settings), "--grid", field["trim"]]) == 1
    assert "--noise, --catalog, --out missing" in capsys.readouterr().err
