"""Fixtures: a synthetic field (full grid, 3 subgrids, trimmed grids, noise models)."""

from __future__ import annotations

import numpy as np
import pytest

from beastflow.settings import settings_from_dict
from beastflow.simulate import simulate_observations

from ..seams import fixed_vega_fluxes
from . import synth


def settings_for(out, **fit):
    return settings_from_dict({"project": {"output": str(out), "name": "P"}, "fit": fit})


@pytest.fixture(scope="module")
def synth_vega():
    """The stages see the Vega fluxes the synthetic field was simulated with (synth.VEGA)."""
    with fixed_vega_fluxes(synth.VEGA) as vega:
        yield vega


@pytest.fixture(scope="session")
def field(tmp_path_factory):
    """Full grid + 3 uneven subgrids, a trimmed version of each (same trim rule),
    noise models row-aligned with them, and two simulated sub-files."""
    d = tmp_path_factory.mktemp("field")
    seds, cols = synth.make_models(n_mass=16)
    n = len(seds)
    cuts = [0, n // 5, (3 * n) // 5, n]
    # trim rule: drop the faintest models in F475W (a sub-file's flux cut)
    keep = seds[:, 2] > np.quantile(seds[:, 2], 0.15)
    out = {"dir": d, "n": n, "cuts": cuts}
    out["full"] = synth.write_grid(d / "P_seds.grid.hd5", seds, cols)
    out["subs"] = []
    for g in range(3):
        sl = slice(cuts[g], cuts[g + 1])
        out["subs"].append(
            synth.write_grid(d / f"P_seds.gridsub{g}.hd5", seds[sl], {k: v[sl] for k, v in cols.items()})
        )
    rows = np.flatnonzero(keep)
    out["trim"] = synth.write_grid(
        d / "P_bin0_sub0_seds_trim.grid.hd5", seds[rows], {k: v[rows] for k, v in cols.items()}, fullgrid_idx=rows
    )
    out["trim_noise"] = synth.write_noise(d / "P_bin0_sub0_noisemodel_trim.grid.hd5", seds[rows])
    out["trim_subs"], out["trim_sub_noise"] = [], []
    for g in range(3):
        r = rows[(rows >= cuts[g]) & (rows < cuts[g + 1])]
        out["trim_subs"].append(
            synth.write_grid(
                d / f"P_bin0_sub0_gridsub{g}_seds_trim.grid.hd5",
                seds[r],
                {k: v[r] for k, v in cols.items()},
                fullgrid_idx=r - cuts[g],
            )
        )
        out["trim_sub_noise"].append(synth.write_noise(d / f"P_bin0_sub0_gridsub{g}_noisemodel_trim.grid.hd5", seds[r]))
    for u, (ns, seed) in enumerate([(40, 11), (25, 12)]):
        cat = simulate_observations(out["trim"], out["trim_noise"], ns, seed, synth.VEGA)
        if u == 0:  # a missing measurement: that band is dropped for this star
            cat = cat.with_columns(cat["F275W_RATE"].scatter(3, float("nan")))
        p = d / f"P_bin0_sub{u}.parquet"
        cat.write_parquet(p)
        out[f"cat{u}"] = str(p)
    return out
