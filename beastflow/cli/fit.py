"""``beastflow grid-info``, ``beastflow fit`` and ``beastflow merge``."""

from __future__ import annotations

import argparse
import sys
import time


def cmd_grid_info(args: argparse.Namespace) -> int:
    from beastflow.cli.noise import find_grids
    from beastflow.fit.grid_info import read_grid_info, run_grid_info
    from beastflow.settings import load_settings

    s = load_settings(args.settings).activate()
    grids = args.grids or [u for _, u in find_grids(s)]
    res = run_grid_info(s, grids, out_url=args.out)
    info = read_grid_info(res.grid_info)
    print(
        f"grid info: {info['n_models']:,} models in {len(info['subgrids'])} grid(s), "
        f"{len(info['qnames'])} quantities -> {res.grid_info}"
    )
    return 0


def fit_jobs(s, bins: list[str] | None = None) -> list[dict]:
    """Every (sub-file, subgrid) fit of the split manifest, with the trimmed files
    and output prefix the pipeline uses (``P_bin{s}_sub{u}[_gridsub{g}]``)."""
    from beastflow import plan, storage
    from beastflow.cli.noise import _no_manifest, find_grids, split_layout

    layout = split_layout(s)
    if layout is None:
        raise _no_manifest(s, " and `beastflow trim`, or pass --grid, --noise, --catalog and --out")
    names = plan.Names.of(s)
    full_grids = dict(find_grids(s))
    jobs = []
    for c in plan.cells(layout.only_bins(bins), list(full_grids)):
        f = c.subfile
        prefix = names.prefix(f.bin, f.sub, c.subgrid)
        grid, noise = names.trimmed(prefix)
        index = plan.trim_index_for(grid)
        trim = None
        if storage.exists(index):  # the trim stage's artifact: the full grid read through the index
            trim, grid = index, full_grids[c.subgrid]
            noise = names.noise_model(f.bin, c.subgrid)
            if not storage.exists(noise):  # a splinter model: one per grid, shared by the bins
                noise = names.noise_model(None, c.subgrid)
        jobs.append(
            {
                "grid": grid,
                "noise": noise,
                "catalog": f.url,
                "out": prefix,
                "subgrid": c.subgrid,
                "tag": c.tag,
                "trim": trim,
            }
        )
    return jobs


def _star_counter(what: str, enabled: bool):
    """A one-line "fitting X: done/total stars" counter on a terminal, updated per block of stars."""
    import contextlib

    if not enabled:
        return contextlib.nullcontext()
    from beastflow.fit.fitting import stars_progress

    def show(done: int, total: int) -> None:
        print(f"\rfitting {what}: {done}/{total} stars", end="" if done < total else "\n", file=sys.stderr, flush=True)

    return stars_progress(show)


def cmd_fit(args: argparse.Namespace) -> int:
    from beastflow import plan, storage
    from beastflow.fit.fitting import run_fit
    from beastflow.fit.outputs import read_stats
    from beastflow.settings import load_settings

    s = load_settings(args.settings).activate()
    explicit = {"--grid": args.grid, "--noise": args.noise, "--catalog": args.catalog, "--out": args.out}
    if any(explicit.values()):
        missing = [k for k, v in explicit.items() if not v]
        if missing:
            raise ValueError(
                f"fit: {', '.join(missing)} missing; --grid, --noise, --catalog and --out go "
                "together (without any of them every sub-file of the split manifest is fitted)"
            )
        jobs = [
            {
                "grid": args.grid,
                "noise": args.noise,
                "catalog": args.catalog,
                "out": args.out,
                # the user's files follow the pipeline's names unless --subgrid / --tag say otherwise
                "subgrid": args.subgrid if args.subgrid is not None else plan.subgrid_in_name(args.grid),
                "tag": args.tag or plan.tag_in_name(args.out),
                "trim": args.trim,
            }
        ]
    else:
        jobs = fit_jobs(s, args.bins)
    grid_info = args.grid_info
    if grid_info is None:
        default = plan.Names.of(s).grid_info()
        if storage.exists(default):
            grid_info = default
        elif len(jobs) > 1:
            raise FileNotFoundError(
                f"{default}: no grid info; run `beastflow grid-info {args.settings}` first "
                "(fits of several sub-files must share its PDF bins to be merged)"
            )
    done = 0
    for job in jobs:
        if not any(explicit.values()) and storage.exists(job["out"] + "_stats.parquet") and not args.force:
            print(f"exists {job['out']}_stats.parquet")
            continue
        for k in ("grid", "noise", "trim"):
            if job[k] and not storage.exists(job[k]):
                raise FileNotFoundError(f"{job[k]}: {k} not found; run `beastflow trim` first")
        t0 = time.perf_counter()
        with _star_counter(job["tag"] or job["out"], enabled=sys.stderr.isatty() and not args.quiet):
            res = run_fit(
                s,
                job["grid"],
                job["noise"],
                job["catalog"],
                grid_info,
                job["out"],
                subgrid=job["subgrid"],
                tag=job["tag"],
                trim_index=job["trim"],
            )
        dt = time.perf_counter() - t0
        st, info = read_stats(res.stats)
        print(
            f"fit {job['tag'] or job['out']}: {len(st):,} stars x {info['meta']['n_models']:,} models in "
            f"{dt:.1f} s ({len(st) / max(dt, 1e-9):.1f} stars/s)"
        )
        for u in (res.stats, res.pdf1d, res.pdf2d, res.lnp):
            print(f"  {u}")
        done += 1
    print(f"{done} fit(s) run")
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    from beastflow import plan
    from beastflow.fit.merge import run_merge
    from beastflow.settings import load_settings

    s = load_settings(args.settings).activate()
    fits = [plan.fit_prefix_of(x) for x in args.fits] or [j["out"] for j in fit_jobs(s)]
    res = run_merge(s, fits, args.out)
    print("merged:")
    for u in (res.stats, res.pdf1d, res.pdf2d, res.lnp):
        print(f"  {u}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("grid-info", help="fixed PDF bins for the field from the FULL SED grid (all subgrids)")
    p.add_argument("settings", help="settings TOML file (any fsspec URL)")
    p.add_argument(
        "grids",
        nargs="*",
        help="SED grid URL(s): the full grid, or every subgrid in order "
        "(default: P_seds.grid.hd5 or P_seds.gridsub*.hd5 under project.output)",
    )
    p.add_argument("--out", help="output URL (default: OUTPUT/P_grid_info.json)")
    p.set_defaults(func=cmd_grid_info)

    p = sub.add_parser("fit", help="fit every sub-file of the split manifest (or one, given its files)")
    p.add_argument("settings", help="settings TOML file (any fsspec URL)")
    p.add_argument(
        "--grid",
        help="SED (sub)grid: the full one with --trim, else a trimmed copy "
        "(default: the manifest's sub-files, through their trim indices)",
    )
    p.add_argument("--noise", help="noise model row-aligned with --grid")
    p.add_argument("--trim", help="trim index P_bin{s}_sub{u}[_gridsub{g}]_trim.hd5 (fit only its kept models)")
    p.add_argument(
        "--catalog",
        help="sub-file catalog with {B}_RATE columns (F475W_RATE, ...; flux / Vega flux): FITS, HDF5, Parquet or CSV",
    )
    p.add_argument("--grid-info", help="P_grid_info.json (default: OUTPUT/P_grid_info.json when it exists)")
    p.add_argument("--out", help="output prefix, e.g. OUTPUT/P_bin3_sub0 (default: the pipeline's)")
    p.add_argument("--subgrid", type=int, help="subgrid index (default: gridsub{g} in the grid's name)")
    p.add_argument("--tag", help="sub-file tag bin{s}_sub{u} (default: from the output prefix)")
    p.add_argument("--bins", nargs="+", help="only the sub-files of these density bins")
    p.add_argument("--force", action="store_true", help="refit sub-files whose stats exist")
    p.set_defaults(func=cmd_fit)

    p = sub.add_parser("merge", help="merge fits over subgrids (exact), then over sub-files/density bins")
    p.add_argument("settings", help="settings TOML file (any fsspec URL)")
    p.add_argument(
        "fits", nargs="*", help="fit output prefixes (or any of their files); default: every fit of the split manifest"
    )
    p.add_argument("--out", help="output prefix (default: OUTPUT/P)")
    p.set_defaults(func=cmd_merge)
