"""``beastflow density-map | cut | split | ast-inputs SETTINGS``.

Each command takes the settings file; inputs default to the previous stage's
artifacts under ``project.output`` (and to ``observations.catalog`` /
``observations.ast_results`` for the raw files), so the commands chain.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from beastflow import plan, storage

if TYPE_CHECKING:
    from beastflow.settings import Settings


def _settings(args) -> Settings:
    from beastflow.settings import load_settings

    return load_settings(args.settings).activate()


def _cmd_density(args) -> int:
    from beastflow.observations.density import run_density_map

    s = _settings(args)
    r = run_density_map(s, args.catalog or s.observations.catalog)
    print(f"{r.n_sources} sources, {r.n_tiles} tiles, mag cut {r.mag_cut[0]:.2f}-{r.mag_cut[1]:.2f}, bins {r.bins}")
    print(f"wrote {r.map_url}\nwrote {r.image_url}\nwrote {r.catalog_url}")
    return 0


def _cmd_cut(args) -> int:
    from beastflow.observations.cuts import run_cut

    s = _settings(args)
    r = run_cut(s, args.catalog or plan.Names.of(s).catalog_sd(), args.asts or s.observations.ast_results)
    for k, v in r.counts.items():
        print(f"{k}: {v}")
    for u in [r.catalog_url, r.ast_url, *r.region_urls]:
        if u:
            print(f"wrote {u}")
    return 0


def _cmd_split(args) -> int:
    from beastflow.observations.split import run_split

    s = _settings(args)
    names = plan.Names.of(s)
    ast = args.asts or names.asts_cut()
    if not args.asts and not storage.exists(ast):
        ast = None
    r = run_split(
        s,
        args.catalog or names.catalog_cut(),
        ast,
        args.map or names.density_map(),
    )
    print(f"bins {r.bins}: {len(r.subfile_urls)} sub-files, {len(r.ast_urls)} AST files")
    print(f"wrote {r.manifest_url}")
    return 0


def _default_grids(s: Settings) -> list[str]:
    from beastflow.cli.noise import find_grids

    return [u for _, u in find_grids(s)]


def _cmd_ast_inputs(args) -> int:
    from beastflow.observations.ast_inputs import run_ast_inputs

    s = _settings(args)
    names = plan.Names.of(s)
    cat = args.catalog or names.catalog_sd()
    if not args.catalog and not storage.exists(cat):
        cat = s.observations.catalog or cat  # before density-map: the raw catalog
    mp = args.map or names.density_map()
    r = run_ast_inputs(s, args.grid or _default_grids(s), cat, mp if storage.exists(mp) or args.map else None)
    print(f"{r.n_seds} SEDs, {r.n_rows} AST input rows")
    for b in r.unfilled_bins[:20]:
        print(f"unfilled flux bin: {b}")
    for u in r.urls:
        print(f"wrote {u}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("density-map", help="source-density map and the catalog annotated with density bins")
    p.add_argument("settings", help="settings TOML file")
    p.add_argument("--catalog", help="photometry catalog (default: observations.catalog)")
    p.set_defaults(func=_cmd_density)

    p = sub.add_parser("cut", help="cut the photometry and apply the same cuts to the ASTs")
    p.add_argument("settings")
    p.add_argument("--catalog", help="annotated catalog (default: P_catalog_sd.parquet)")
    p.add_argument("--asts", help="AST results (default: observations.ast_results)")
    p.set_defaults(func=_cmd_cut)

    p = sub.add_parser("split", help="split the cut catalogs by density bin and flux")
    p.add_argument("settings")
    p.add_argument("--catalog", help="cut catalog (default: P_catalog_cut.parquet)")
    p.add_argument("--asts", help="cut ASTs (default: P_asts_cut.parquet if present)")
    p.add_argument("--map", help="density map (default: P_sourceden_map.parquet)")
    p.set_defaults(func=_cmd_split)

    p = sub.add_parser("ast-inputs", help="choose AST SEDs and positions (P_inputAST.parquet/.txt)")
    p.add_argument("settings")
    p.add_argument("--grid", nargs="+", help="SED grid or subgrids (default: found under project.output)")
    p.add_argument("--catalog", help="photometry catalog (default: P_catalog_sd.parquet)")
    p.add_argument("--map", help="density map (default: P_sourceden_map.parquet if present)")
    p.set_defaults(func=_cmd_ast_inputs)
