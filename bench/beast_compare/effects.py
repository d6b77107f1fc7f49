"""The effects study: beastflow's default mode against compat on the same inputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .convert import write_inputs
from .metrics import shift_summary
from .peer import Peer

# ------------------------------------------------------------------ effects of default mode


EFFECT_QUANTITIES = ["Av", "Rv", "f_A", "logA", "M_ini", "logT", "logL", "Z"]


def splinter_noise(grid_url: str, out_url: str, frac: float = 0.1) -> str:
    """BEAST's AST-free "splinter" model: error = frac x flux, no bias, completeness 1."""
    from beastflow.noise.splinter import write_splinter_noise_model

    return write_splinter_noise_model(grid_url, out_url, frac)


def run_chain(inp: dict[str, Any], phys_settings, tag: str, noise: str = "toothpick") -> dict[str, Any]:
    """Physics with ``phys_settings``, then noise / trim / fit with inp's settings."""
    from beastflow.fit.fitting import run_fit
    from beastflow.fit.grid_info import run_grid_info
    from beastflow.noise.toothpick import run_noisemodel
    from beastflow.noise.trim import TrimJob, run_trim
    from beastflow.physics.physicsmodel import run_physicsmodel

    s, out = inp["settings"], inp["out"]
    out.mkdir(parents=True, exist_ok=True)
    g = run_physicsmodel(phys_settings, force=True).sed_grids[0]
    n = str(out / f"{tag}_noise.hd5")
    if noise == "splinter":
        splinter_noise(g, n)
    else:
        run_noisemodel(s, g, inp["asts"], n)
    gt, nt = str(out / f"{tag}_trim_seds.hd5"), str(out / f"{tag}_trim_noise.hd5")
    tr = run_trim(s, g, n, [TrimJob(inp["catalog"], gt, nt)])
    # BEAST normalises over the trimmed grid and bins from it: no grid info
    info = None if s.compat == "beast-2.1" else run_grid_info(s, [g], str(out / f"{tag}_grid_info.json")).grid_info
    pre = str(out / f"{tag}_fit")
    run_fit(s, gt, nt, inp["catalog"], info, pre)
    return {"grid": g, "n_trim": tr[0].n_kept, "stats": f"{pre}_stats.parquet", "trim": (gt, nt), "info": info}


def fit_variant(
    inp: dict[str, Any], chain: dict[str, Any], tag: str, fit_changes: dict[str, Any], use_info: bool = True
) -> str:
    """Default-mode fit of ``chain``'s trimmed grid with some [fit] keys changed: isolates one difference."""
    import tomllib

    from beastflow.fit.fitting import run_fit
    from beastflow.settings import settings_from_dict

    sfile = Path(inp["settings_file"])
    data = tomllib.loads(sfile.read_text())
    data.setdefault("fit", {}).update(fit_changes)
    s = settings_from_dict(data, where=str(sfile), base_dir=str(sfile.parent))
    pre = str(inp["out"] / f"{tag}_fit")
    run_fit(s, *chain["trim"], inp["catalog"], chain["info"] if use_info else None, pre)
    return f"{pre}_stats.parquet"


def effect_table(ref_stats: str, other_stats: str) -> dict[str, Any]:
    import polars as pl

    a, b = pl.read_parquet(ref_stats), pl.read_parquet(other_stats)
    out = {}
    for q in EFFECT_QUANTITIES:
        row = {}
        for s in ("p50", "Exp", "Best"):
            c = f"{q}_{s}"
            if c not in a.columns or c not in b.columns:
                continue
            # a mass shift is a factor: measured in dex
            row[s] = shift_summary(a[c].to_numpy().astype(float), b[c].to_numpy().astype(float), log10=q == "M_ini")
        out[q] = row
    return out


def do_effects(peer: Peer, workdir: Path, R: dict[str, Any], noise: str = "toothpick") -> None:
    """Default mode vs compat on the same inputs: which difference moves which parameter.

    ``noise = "splinter"`` replaces the toothpick model by BEAST's AST-free 10 % model in
    both modes (phat_small's 175 ASTs give a toothpick model under which almost every
    posterior collapses onto one model, so shifts come in whole grid steps)."""
    inp_c = write_inputs(peer, workdir / "beastflow", "beast-2.1", "bf_compat")
    inp_d = write_inputs(peer, workdir / "beastflow_default", "none", "bf_default")
    # the default fit keeps lnp/PDF settings as in compat so that only the modes differ
    A = run_chain(inp_c, inp_c["settings"], "A_compat", noise)
    B = run_chain(inp_c, inp_d["settings"], "B_defaultphys", noise)
    C = run_chain(inp_d, inp_d["settings"], "C_default", noise)
    # fit-stage differences one at a time (each default-mode [fit] key set to BEAST's behaviour)
    variants = {
        "fit: completeness term (default 'min' vs BEAST none)": fit_variant(
            inp_d, C, "C_nocompl", {"completeness": "none"}
        ),
        "fit: statistics over all models (vs BEAST lnP > max - 10)": fit_variant(
            inp_d, C, "C_thr10", {"stats_threshold": -10.0}
        ),
        "fit: PDF bins of the full grid (vs BEAST trimmed grid)": fit_variant(
            inp_d, C, "C_trimbins", {}, use_info=False
        ),
    }
    sed = {}
    try:
        from beastflow.io.sed_grid import open_sed_grid

        ga, gd = open_sed_grid(A["grid"]).read(), open_sed_grid(B["grid"]).read()
        if ga.seds.shape == gd.seds.shape:
            keys = ["specgrid_indx", "Av", "Rv", "f_A"]
            ka = np.column_stack([ga.columns[k] for k in keys])
            kd = np.column_stack([gd.columns[k] for k in keys])
            oa, od = np.lexsort(ka.T[::-1]), np.lexsort(kd.T[::-1])
            if np.allclose(ka[oa], kd[od]):
                dmag = -2.5 * np.log10(gd.seds[od] / ga.seds[oa])
                av = ga.columns["Av"][oa]
                sel = av > 0
                sed = {
                    "median_dmag_per_band": dict(zip(ga_filters(A["grid"]), np.median(dmag[sel], axis=0).tolist())),
                    "median_dmag_per_AV": dict(
                        zip(ga_filters(A["grid"]), np.median(dmag[sel] / av[sel, None], axis=0).tolist())
                    ),
                }
    except Exception as exc:  # noqa: BLE001
        sed = {"error": repr(exc)}
    R.setdefault("effects", {})[noise] = {
        "n_trim": {"compat": A["n_trim"], "default_physics": B["n_trim"], "default": C["n_trim"]},
        "physics_model_only": effect_table(A["stats"], B["stats"]),
        "noise_trim_fit_only": effect_table(B["stats"], C["stats"]),
        "all": effect_table(A["stats"], C["stats"]),
        "fit_variants": {k: effect_table(v, C["stats"]) for k, v in variants.items()},
        "sed_grid_default_minus_compat": sed,
    }


def ga_filters(url: str) -> list[str]:
    from beastflow.io.sed_grid import open_sed_grid

    return list(open_sed_grid(url).filters)
