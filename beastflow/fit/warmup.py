"""Compile the fit kernels into numba's on-disk cache ahead of the first fit.

The kernels are ``cache=True``: compiled once (about a minute and a half of CPU on a
small machine), then loaded from the cache in about a second by every later process.
A SLURM array whose tasks start together would otherwise compile in every task.
Run once per installation (and after an upgrade) before submitting the array:

    NUMBA_CACHE_DIR=/shared/numba-cache python -m beastflow.fit.warmup

with ``NUMBA_CACHE_DIR`` exported to the tasks too when the installation directory
is not writable or not shared (numba otherwise writes next to the sources, in
``__pycache__``).  The cache is keyed on the source files' paths and modification
times, so a fresh checkout or install compiles again.

It fits a tiny synthetic field in the default mode and in compat mode: every kernel
signature a fit uses (diagonal and truncheon noise models share them).
"""

from __future__ import annotations

import logging
import sys
import tempfile
import time

import numpy as np

FILTERS = ["HST_WFC3_F275W", "HST_ACS_WFC_F475W", "HST_WFC3_F160W"]


def warm_up(verbose: bool = False) -> float:
    """Fit a tiny field in both modes; returns the wall time (s) it took."""
    from beastflow.fit.fitting import run_fit
    from beastflow.io.noise_model import write_noise_model
    from beastflow.io.sed_grid import write_sed_grid
    from beastflow.physics.vega import vega_band_fluxes
    from beastflow.settings import settings_from_dict
    from beastflow.simulate import simulate_observations

    t0 = time.perf_counter()
    rng = np.random.default_rng(0)
    n = 600
    seds = 10 ** rng.uniform(-19, -17, size=(n, len(FILTERS)))
    cols = {
        "Av": rng.choice([0.0, 0.5, 1.0], n),
        "M_ini": 10 ** rng.uniform(0, 1, n),
        "logA": rng.choice([7.0, 8.0, 9.0], n),
        "weight": rng.uniform(0.5, 1.0, n),
        "specgrid_indx": np.arange(n, dtype=float),
    }
    vega = vega_band_fluxes(FILTERS)  # what the fit converts the simulated rates with
    quiet = logging.getLogger("beastflow")
    level = quiet.level
    if not verbose:
        quiet.setLevel(logging.ERROR)  # the tiny field's warnings (no grid info...) are expected
    try:
        with tempfile.TemporaryDirectory(prefix="beastflow-warmup-") as d:
            grid = write_sed_grid(f"{d}/W_seds.grid.hd5", FILTERS, np.array([2750.0, 4750.0, 16000.0]), seds, cols)
            noise = write_noise_model(
                f"{d}/W_noisemodel.grid.hd5", FILTERS, np.zeros_like(seds), 0.05 * seds, np.full_like(seds, 0.9)
            )
            cat = simulate_observations(grid, noise, 8, 1, vega)
            # a star without its first band: the kernels' missing-band path
            cat = cat.with_columns(cat["F275W_RATE"].scatter(0, np.nan))
            cat.write_parquet(f"{d}/W_bin0_sub0.parquet")
            for compat in ("none", "beast-2.1"):
                for npts in (5, 0):  # with and without lnP samples
                    s = settings_from_dict(
                        {
                            "compat": compat,
                            "project": {"output": d, "name": "W"},
                            "fit": {"lnp_npts": npts, "pdf2d_pairs": [["Av", "M_ini"]]},
                        }
                    )
                    run_fit(s, grid, noise, f"{d}/W_bin0_sub0.parquet", None, f"{d}/W_{compat}_{npts}")
    finally:
        quiet.setLevel(level)
    return time.perf_counter() - t0


def main() -> int:
    dt = warm_up()
    import numba

    where = numba.config.CACHE_DIR or "next to the sources (__pycache__)"  # type: ignore[attr-defined]
    print(f"fit kernels compiled or loaded in {dt:.1f} s; numba cache: {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
