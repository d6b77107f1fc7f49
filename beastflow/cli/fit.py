"""``beastflow grid-info``, ``beastflow fit`` and ``beastflow merge``."""

from __future__ import annotations

import argparse
import time


def _prefix(x: str) -> str:
    """A fit output prefix from a prefix or any of its four files."""
    for suf in ("_stats.parquet", "_pdf1d.hd5", "_pdf2d.hd5", "_lnp.hd5"):
        if x.endswith(suf):
            return x[: -len(suf)]
    return x


def cmd_grid_info(args: argparse.Namespace) -> int:
    from beastflow.fit.grid_info import read_grid_info, run_grid_info
    from beastflow.settings import load_settings

    s = load_settings(args.settings)
    res = run_grid_info(s, args.grids, out_url=args.out)
    info = read_grid_info(res.grid_info)
    print(f"grid info: {info['n_models']:,} models in {len(info['subgrids'])} grid(s), "
          f"{len(info['qnames'])} quantities -> {res.grid_info}")
    return 0


def cmd_fit(args: argparse.Namespace) -> int:
    from beastflow.fit.fitting import run_fit
    from beastflow.fit.outputs import read_stats
    from beastflow.settings import load_settings

    s = load_settings(args.settings)
    t0 = time.perf_counter()
    res = run_fit(s, args.grid, args.noise, args.catalog, args.grid_info, args.out,
                  subgrid=args.subgrid, tag=args.tag, trim_index=args.trim)
    dt = time.perf_counter() - t0
    st, info = read_stats(res.stats)
    print(f"fit: {len(st):,} stars x {info['meta']['n_models']:,} models in {dt:.1f} s "
          f"({len(st) / max(dt, 1e-9):.1f} stars/s)")
    for u in (res.stats, res.pdf1d, res.pdf2d, res.lnp):
        print(f"  {u}")
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    from beastflow.fit.merge import run_merge
    from beastflow.settings import load_settings

    s = load_settings(args.settings)
    res = run_merge(s, [_prefix(x) for x in args.fits], args.out)
    print("merged:")
    for u in (res.stats, res.pdf1d, res.pdf2d, res.lnp):
        print(f"  {u}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("grid-info", help="fixed PDF bins for the field from the FULL SED grid (all subgrids)")
    p.add_argument("settings", help="settings TOML file (any fsspec URL)")
    p.add_argument("grids", nargs="+", help="SED grid URL(s): the full grid, or every subgrid in order")
    p.add_argument("--out", help="output URL (default: OUTPUT/P_grid_info.json)")
    p.set_defaults(func=cmd_grid_info)

    p = sub.add_parser("fit", help="fit one sub-file against its trimmed (sub)grid")
    p.add_argument("settings", help="settings TOML file (any fsspec URL)")
    p.add_argument("--grid", required=True, help="SED (sub)grid: the full one with --trim, else a trimmed copy")
    p.add_argument("--noise", required=True, help="noise model row-aligned with --grid")
    p.add_argument("--trim", help="trim index P_bin{s}_sub{u}[_gridsub{g}]_trim.hd5 (fit only its kept models)")
    p.add_argument("--catalog", required=True, help="sub-file catalog (Parquet with {B}_RATE columns)")
    p.add_argument("--grid-info", help="P_grid_info.json (full-grid PDF bins; needed to merge)")
    p.add_argument("--out", required=True, help="output prefix, e.g. OUTPUT/P_bin3_sub0")
    p.add_argument("--subgrid", type=int, help="subgrid index (default: gridsub{g} in the grid's name)")
    p.add_argument("--tag", help="sub-file tag bin{s}_sub{u} (default: from the output prefix)")
    p.set_defaults(func=cmd_fit)

    p = sub.add_parser("merge", help="merge fits over subgrids (exact), then over sub-files/density bins")
    p.add_argument("settings", help="settings TOML file (any fsspec URL)")
    p.add_argument("fits", nargs="+", help="fit output prefixes (or any of their files)")
    p.add_argument("--out", help="output prefix (default: OUTPUT/P)")
    p.set_defaults(func=cmd_merge)
