"""Splinter noise model (spec noise-model.md §5): no ASTs, error = fraction x flux."""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np
import pytest

from beastflow.cli import main
from beastflow.io.noise_model import open_noise_model
from beastflow.noise.splinter import band_fractions, splinter_arrays
from beastflow.noise.toothpick import run_noisemodel
from beastflow.settings import SettingsError, settings_from_dict

from .conftest import BANDS, FILTERS, write_grid


def _seds(n=500, seed=3):
    rng = np.random.default_rng(seed)
    return 10 ** rng.uniform(-20, -15, size=(n, len(FILTERS)))


def test_arrays_are_beasts_make_splinter_noise_model_to_the_bit():
    seds = _seds()
    b, e, c = splinter_arrays(seds, np.full(6, 0.10))
    # BEAST 2.1.0: bias = zeros, sigma = seds * frac_unc, completeness = ones
    assert np.array_equal(b, np.zeros_like(seds)) and np.array_equal(c, np.ones_like(seds))
    assert np.array_equal(e, seds * 0.10)
    # with a calibration matrix only its diagonal enters: sqrt(a^2 F^2 + sigma^2)
    cov = np.diag([0.01, 0.02, 0.03, 0.04, 0.05, 0.06]) ** 2 + 1e-5
    _, e2, _ = splinter_arrays(seds, np.full(6, 0.10), np.diag(cov))
    assert np.array_equal(e2, np.sqrt(np.diag(cov) * seds**2 + (seds * 0.10) ** 2))


def test_band_fractions_scalar_table_and_errors():
    assert band_fractions(0.2, FILTERS).tolist() == [0.2] * 6
    table = {"F275W": 0.3, "HST_WFC3_F336W": 0.25, "F475W": 0.1, "F814W": 0.1, "F110W": 0.05, "F160W": 0.05}
    assert band_fractions(table, FILTERS).tolist() == [0.3, 0.25, 0.1, 0.1, 0.05, 0.05]
    with pytest.raises(ValueError, match=r"noise_model\.splinter_fraction: no fraction for band\(s\) \['F160W'\]"):
        band_fractions({k: v for k, v in table.items() if k != "F160W"}, FILTERS)
    with pytest.raises(ValueError, match="'F999W' is not a band of physics.filters"):
        band_fractions({**table, "F999W": 0.1}, FILTERS)
    with pytest.raises(ValueError, match="band F275W is given twice"):
        band_fractions({**table, "HST_WFC3_F275W": 0.1}, FILTERS)


def test_settings_check_the_splinter_keys():
    ok = settings_from_dict(
        {
            "noise_model": {
                "model": "splinter",
                "splinter_fraction": {
                    "F275W": 0.3,
                    "F336W": 0.25,
                    "F475W": 0.1,
                    "F814W": 0.1,
                    "F110W": 0.05,
                    "F160W": 0.05,
                },
            }
        }
    )
    assert ok.noise_model.model == "splinter"
    for bad, words in [
        ({"model": "splinter", "splinter_fraction": 0.0}, "must be > 0"),
        ({"model": "splinter", "splinter_fraction": {"F275W": 0.1}}, "no fraction for band"),
        ({"model": "splinter", "splinter_fraction": "ten"}, "splinter_fraction"),
        # keys the chosen model never reads are refused, not ignored
        (
            {"splinter_fraction": 0.2},
            r"noise_model\.splinter_fraction = 0\.2: not used with "
            r"model = 'toothpick'",
        ),
        ({"model": "splinter", "n_flux_bins": 20}, r"noise_model\.n_flux_bins = 20: not used"),
    ]:
        with pytest.raises(SettingsError, match=words):
            settings_from_dict({"noise_model": bad})
    with pytest.raises(SettingsError, match=r"observations\.ast_results is set, but noise_model\.model"):
        settings_from_dict({"noise_model": {"model": "splinter"}, "observations": {"ast_results": "a.fits"}})
    with pytest.raises(
        SettingsError,
        match=r"asts\.n_per_flux_bin = 10: not used with noise_model\.model = "
        r"'splinter' \(no AST stage runs\)",
    ):
        settings_from_dict({"noise_model": {"model": "splinter"}, "asts": {"n_per_flux_bin": 10}})


def test_stage_function_streams_the_grid_and_needs_no_asts(tmp_path):
    seds = _seds(3000)
    grid = write_grid(tmp_path / "g.hd5", seds)
    s = settings_from_dict({"noise_model": {"model": "splinter", "splinter_fraction": 0.15, "chunk_models": 1024}})
    out = run_noisemodel(s, grid, None, str(tmp_path / "n.hd5"))
    nm = open_noise_model(out)
    blk = nm.read()
    assert nm.n_models == 3000 and nm.meta["model"] == "splinter"
    assert nm.meta["fractions"] == {f: 0.15 for f in FILTERS}
    assert np.array_equal(blk.error, seds * 0.15) and not blk.bias.any() and (blk.completeness == 1).all()
    # the AST-based models say what they miss
    with pytest.raises(ValueError, match=r"needs artificial-star tests.*model = \"splinter\""):
        run_noisemodel(settings_from_dict({}), grid, None, str(tmp_path / "t.hd5"))


def test_cli_noisemodel_and_trim_without_asts(tmp_path, phat_catalog):
    from beastflow.observations.catalogs import read_photometry

    out = tmp_path / "out"
    out.mkdir()
    (tmp_path / "s.toml").write_text(
        f'[project]\nname = "P"\noutput = "out"\n[physics]\nfilters = {json.dumps(FILTERS)}\n'
        '[noise_model]\nmodel = "splinter"\n'
    )
    df = read_photometry(str(phat_catalog), FILTERS)
    rates = np.column_stack([df[f"{b}_RATE"].to_numpy() for b in BANDS])
    from beastflow.physics.vega import vega_band_fluxes

    obs = np.abs(rates) * vega_band_fluxes(FILTERS) + 1e-22
    rng = np.random.default_rng(0)
    seds = obs[rng.integers(0, len(obs), 2000)] * 10 ** rng.normal(0, 0.2, (2000, 1))
    write_grid(out / "P_seds.grid.hd5", seds)
    sub = str(out / "P_bin0_sub0.parquet")
    df.write_parquet(sub)
    (out / "P_split_manifest.json").write_text(
        json.dumps({"subfiles": [{"bin": 0, "sub": 0, "url": sub, "n_rows": df.height}], "asts": []})
    )
    assert main(["noisemodel", str(tmp_path / "s.toml")]) == 0
    nm = open_noise_model(str(out / "P_gridsub0_noisemodel.hd5"))  # one per grid, every bin uses it
    assert nm.meta["model"] == "splinter"
    assert main(["trim", str(tmp_path / "s.toml")]) == 0
    # the trim artifact is the index of the kept models (no trimmed copies by default)
    from beastflow.io.trim_index import read_trim_index

    assert 0 < read_trim_index(str(out / "P_bin0_sub0_trim.hd5")).n_kept <= 2000


def _peer_splinter_run() -> Path | None:
    home = Path(os.environ.get("PEER_HOME", Path(os.environ.get("TMPDIR", "/tmp")) / "peer-beast"))
    hits = sorted(home.glob("work/*splinter*/*/*_noisemodel.grid.hd5"))
    return hits[0] if hits else None


@pytest.mark.skipif(
    _peer_splinter_run() is None,
    reason="no BEAST 2.1.0 splinter run under $PEER_HOME/work (run.sh small 0 --noise splinter)",
)
def test_equal_to_beast_on_beasts_own_grid(tmp_path):
    noise = _peer_splinter_run()
    seds_file = Path(str(noise).replace("_noisemodel.grid.hd5", "_seds.grid.hd5"))
    with h5py.File(seds_file, "r") as h5:
        seds = np.asarray(h5["seds"])
    with h5py.File(noise, "r") as h5:
        ref = {k: np.asarray(h5[k]) for k in ("bias", "error", "completeness")}
    b, e, c = splinter_arrays(seds, np.full(seds.shape[1], 0.10))
    assert np.array_equal(b, ref["bias"]) and np.array_equal(e, ref["error"]) and np.array_equal(c, ref["completeness"])
