"""beastflow's inputs from the peer run's exact inputs; BEAST grids in beastflow's formats."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .common import KURUCZ
from .peer import Peer, read_beast_grid, read_beast_noise

# ------------------------------------------------------------------ beastflow inputs


def write_inputs(peer: Peer, bfdir: Path, compat: str, name: str, noise: str = "toothpick") -> dict[str, Any]:
    """Settings TOML + input files for beastflow from the peer run's exact inputs."""
    bfdir.mkdir(parents=True, exist_ok=True)
    iso = bfdir / "iso.csv"
    if not iso.exists():
        # same rows; the '#' comment lines are dropped because beastflow's
        # physics.isochrones.read_table (astropy ascii.csv) does not skip them
        lines = peer.path("iso.csv").read_text().splitlines()
        iso.write_text("\n".join(ln for ln in lines if not ln.lstrip().startswith("#")) + "\n")
    cat = bfdir / "obs.parquet"
    if not cat.exists():
        from beastflow.observations.catalogs import normalise_columns, read_table

        df = normalise_columns(read_table(str(peer.run / "data" / "obs.fits")), "obs.fits")
        df.write_parquet(cat)
    cfg = peer.config
    filters = peer.setting("filters")
    priors_map = {
        "age": "age",
        "mass": "mass",
        "met": "metallicity",
        "distance": "distance",
        "av": "av",
        "rv": "rv",
        "fA": "fA",
    }
    priors = {}
    for b, ours in priors_map.items():
        p = peer.setting(f"{b}_prior_model", {"name": "flat"})
        priors[ours] = p
    dist = peer.setting("distances", [24.47])
    dunit = "mag" if "units.mag" in peer.settings_text else "pc"
    fit_info = peer.stages.get("fit", {}).get("info", {})
    lines = [
        f'compat = "{compat}"',
        "[project]",
        f'name = "{name}"',
        'output = "out"',
        "seed = 0",
        "[physics]",
        "filters = " + json.dumps(filters),
        "distances = " + json.dumps([float(x) for x in dist]),
        f'distance_unit = "{dunit}"',
        f"velocity = {float(peer.setting('velocity', -300.0))}",
        "n_subgrid = 1",
        "[physics.isochrones]",
        'source = "table"',
        'table = "iso.csv"',
        "logt = " + json.dumps(cfg["logt"]),
        "z = " + json.dumps(cfg["z"]),
        "[physics.stellar_library]",
        'libraries = ["kurucz"]',
        f'files = {{ kurucz = "{KURUCZ}" }}',
        "[physics.extinction]",
        'law = "gordon16"',
        "avs = " + json.dumps(cfg["avs"]),
        "rvs = " + json.dumps(cfg["rvs"]),
        "fAs = " + json.dumps(cfg["fAs"]),
        "[physics.priors]",
    ]
    for k, v in priors.items():
        lines.append(f"{k} = {{ " + ", ".join(f"{kk} = {json.dumps(vv)}" for kk, vv in v.items()) + " }")
    lines += (
        ["[noise_model]", f'model = "{noise}"']
        + ([f"n_flux_bins = {int(cfg.get('nfluxbins', 4))}"] if noise == "toothpick" else [])
        + [
            # BEAST-style trimmed copies (the default artifact is the kept-row index), compared file to file
            "[trim]",
            "sigma_fac = 3.0",
            "materialize = true",
            "[fit]",
            "lnp_npts = 500",
            "lnp_threshold = -10.0",
            f"pdf_max_nbins = {int(fit_info.get('max_nbins', 200))}",
            'pdf2d_pairs = [["Av", "M_ini"], ["Av", "logT"], ["M_ini", "logT"]]',
            f'surveyname = "{peer.setting("surveyname", "PHAT")}"',
            "[execution]",
            "progress = false",
        ]
    )
    sfile = bfdir / f"{name}.toml"
    sfile.write_text("\n".join(lines) + "\n")
    from beastflow.settings import load_settings

    return {
        "settings": load_settings(str(sfile)),
        "settings_file": str(sfile),
        "catalog": str(cat),
        "asts": str(peer.run / "data" / "asts.hd5"),
        "out": bfdir / "out",
    }


def to_bf_grid(path: Path, out: Path) -> str:
    from beastflow.io.sed_grid import write_sed_grid

    filters, lamb, seds, cols = read_beast_grid(path)
    write_sed_grid(str(out), filters, lamb, seds, cols)
    return str(out)


def to_bf_noise(path: Path, filters: list[str], out: Path) -> str:
    from beastflow.io.noise_model import write_noise_model

    n = read_beast_noise(path)
    write_noise_model(str(out), filters, n["bias"], n["error"], n["completeness"])
    return str(out)
