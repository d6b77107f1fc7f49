"""``beastflow physicsmodel SETTINGS``: build the SED grid(s) and print a summary."""

from __future__ import annotations

import argparse


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024.0
    return f"{n} B"  # pragma: no cover


def format_summary(res) -> str:
    s = res.summary
    lines = [
        f"physics model: {res.n_models:,} models in {len(res.sed_grids)} SED grid(s)"
        + (" (up to date, nothing rebuilt)" if s.get("cached") else "")
    ]
    lib = s.get("library", {})
    if lib:
        kept, total = lib.get("kept"), lib.get("isochrone_points")
        cover = (
            f"{kept:,} of {total:,} isochrone points kept, {lib.get('dropped', 0):,} outside coverage dropped"
            if kept is not None and total is not None
            else ""
        )
        lines.append(f"  stellar library: {lib.get('stellar_library', lib.get('label', '?'))}")
        if cover:
            lines.append(f"  library coverage: {cover}")
    labels = {
        "logA": "log age [yr]",
        "M_ini": "M_ini [Msun]",
        "Z": "Z",
        "Av": "A(V) [mag]",
        "Rv": "R(V)",
        "f_A": "f_A",
        "distance": "distance [pc]",
    }
    for c, (lo, hi) in s.get("ranges", {}).items():
        lines.append(f"  {labels.get(c, c):<15} {lo:.6g} .. {hi:.6g}")
    total_bytes = 0
    for g in s.get("grids", []):
        total_bytes += g["bytes"]
        sub = "" if g.get("subgrid") is None else f"subgrid {g['subgrid']}: "
        lines.append(f"  {sub}{g['n_models']:,} models, {_size(g['bytes'])}  {g['url']}")
    if s.get("spec_grid"):
        lines.append(f"  spectral grid with priors: {s['spec_grid']}")
    lines.append(f"  total size {_size(total_bytes)}; time {s.get('seconds', 0.0):.1f} s")
    return "\n".join(lines)


def cmd_physicsmodel(args: argparse.Namespace) -> int:
    from beastflow.physics.physicsmodel import run_physicsmodel
    from beastflow.settings import load_settings

    settings = load_settings(args.settings).activate()
    res = run_physicsmodel(settings, subgrids=args.subgrid, force=args.force)
    print(format_summary(res))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("physicsmodel", help="build the SED model grid (isochrones x atmospheres x dust)")
    p.add_argument("settings", help="settings TOML file (any fsspec URL)")
    p.add_argument(
        "--subgrid",
        type=int,
        action="append",
        metavar="G",
        help="build only subgrid G (repeatable; default: all of physics.n_subgrid)",
    )
    p.add_argument("--force", action="store_true", help="rebuild even if up-to-date grids exist")
    p.set_defaults(func=cmd_physicsmodel)
