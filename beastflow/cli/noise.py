"""``beastflow noisemodel SETTINGS`` and ``beastflow trim SETTINGS``.

Inputs default to the previous stages' artifacts under ``project.output``:
the SED grid (``P_seds.grid.hd5`` or the subgrids ``P_seds.gridsub{g}.hd5``)
and the split manifest (``P_split_manifest.json``: per-bin ASTs and the
sub-files).  Without a manifest the noise model is built from
``observations.ast_results`` and trimming needs ``--catalog``.  The splinter
model (``[noise_model] model = "splinter"``) reads no ASTs: one
``P_gridsub{g}_noisemodel.hd5`` per (sub)grid serves every density bin.  Existing
outputs are skipped unless ``--force``, so an interrupted run resumes.
"""

from __future__ import annotations

import argparse
import posixpath
from typing import TYPE_CHECKING

from beastflow import plan, storage

if TYPE_CHECKING:
    from beastflow.settings import Settings


def _settings(args) -> Settings:
    from beastflow.settings import load_settings

    return load_settings(args.settings).activate()


def find_grids(s: Settings) -> list[tuple[int | None, str]]:
    """[(subgrid index or None, url)] of the run's SED grid(s)."""
    names = plan.Names.of(s)
    full = names.sed_grid(None)
    if storage.exists(full):
        return [(None, full)]
    subs: list[tuple[int | None, str]] = sorted(
        (g, u)
        for u in storage.listdir(s.output)
        if (g := plan.subgrid_in_name(u)) is not None and posixpath.basename(u) == posixpath.basename(names.sed_grid(g))
    )
    if not subs:
        raise FileNotFoundError(
            f"no SED grid {full} nor {s.project.name}_seds.gridsub*.hd5 under {s.output}; "
            "run `beastflow physicsmodel` first or pass --grid"
        )
    return subs


def _grid_args(s: Settings, grids: list[str] | None) -> list[tuple[int | None, str]]:
    if not grids:
        return find_grids(s)
    return [(plan.subgrid_in_name(u), u) for u in grids]


def split_layout(s: Settings) -> plan.Layout | None:
    """The split manifest's sub-files and per-bin ASTs (None: no split has run)."""
    url = plan.Names.of(s).split_manifest()
    return plan.read_layout(url, need_asts=False) if storage.exists(url) else None


def _no_manifest(s: Settings, then: str) -> FileNotFoundError:
    return FileNotFoundError(
        f"no split manifest {s.project.name}_split_manifest.json under {s.output}; run `beastflow split` first{then}"
    )


def _cmd_noisemodel(args) -> int:
    from beastflow.noise.toothpick import run_noisemodel

    s = _settings(args)
    names = plan.Names.of(s)
    grids = dict(_grid_args(s, args.grid))
    asts: dict[int | None, str | None]
    if s.noise_model.model == "splinter":
        if args.asts:
            raise ValueError(f'--asts given, but [noise_model] model = "splinter" uses no ASTs ({args.asts})')
        asts = {None: None}  # one model per (sub)grid: a fixed fraction of each model flux
    elif args.asts:
        asts = {None: args.asts}
    else:
        layout = split_layout(s)
        if layout and layout.asts:
            asts = {b: u for b, u in layout.asts.items()}
        elif s.observations.ast_results:
            asts = {None: s.observations.ast_results}
        else:
            raise FileNotFoundError(
                "no ASTs: no split manifest with per-bin ASTs under "
                f"{s.output} and no [observations] ast_results; pass --asts"
            )
    for c in plan.noise_cells(asts, list(grids)):
        out = names.noise_model(c.bin, c.subgrid)
        if storage.exists(out) and not args.force:
            print(f"exists {out}")
            continue
        run_noisemodel(s, grids[c.subgrid], c.ast_url, out)
        print(f"wrote {out}")
    return 0


def _trim_targets(s: Settings, args, grids: list[int | None]) -> list[tuple[int | None, int | None, str, str]]:
    """(subgrid g, density bin or None, artifact prefix, catalog) of every sub-file to trim."""
    names = plan.Names.of(s)
    if args.catalog:
        # explicit sub-files, named after their catalogs: one noise model (per grid) for all of them
        stems = [(posixpath.splitext(posixpath.basename(c))[0], c) for c in args.catalog]
        return [(g, None, names.stem_prefix(stem, g), c) for g in grids for stem, c in stems]
    layout = split_layout(s)
    if layout is None:
        raise _no_manifest(s, " or pass --catalog")
    return [
        (c.subgrid, c.subfile.bin, names.prefix(c.subfile.bin, c.subfile.sub, c.subgrid), c.subfile.url)
        for c in plan.cells(layout.only_bins(args.bins), grids)
    ]


def _cmd_trim(args) -> int:
    from beastflow.noise.trim import TrimJob, run_trim

    s = _settings(args)
    names = plan.Names.of(s)
    grids = dict(_grid_args(s, args.grid))
    # one pass over a grid and noise model per (subgrid, density bin)
    batches: dict[tuple[int | None, int | None], list[tuple[str, str]]] = {}
    for g, b, prefix, url in _trim_targets(s, args, list(grids)):
        batches.setdefault((g, b), []).append((prefix, url))
    n_written = 0
    for (g, b), items in batches.items():
        # splinter: one noise model per (sub)grid, shared by every density bin
        noise = args.noise or names.noise_model(None if s.noise_model.model == "splinter" else b, g)
        if not storage.exists(noise):
            raise FileNotFoundError(f"{noise}: noise model not found; run `beastflow noisemodel` first")
        jobs = []
        for prefix, url in items:
            job = TrimJob(url, *names.trimmed(prefix))
            if storage.exists(job.index_url) and not args.force:
                print(f"exists {job.index_url}")
                continue
            jobs.append(job)
        if not jobs:
            continue
        for r in run_trim(s, grids[g], noise, jobs):
            extra = f", skipped bands {r.skipped_bands}" if r.skipped_bands else ""
            copies = f" (+ {r.grid_url}, {r.noise_url})" if r.grid_url else ""
            print(f"wrote {r.index_url}{copies}: {r.n_kept} of {r.n_models_in} models for {r.n_stars} stars{extra}")
            n_written += 1
    print(f"{n_written} sub-file(s) trimmed")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "noisemodel",
        help="noise model per density bin and (sub)grid (toothpick / trunchen "
        "from ASTs; splinter: per (sub)grid, no ASTs)",
    )
    p.add_argument("settings", help="settings TOML file")
    p.add_argument("--grid", nargs="+", help="SED grid or subgrids (default: found under project.output)")
    p.add_argument(
        "--asts",
        help="one AST results table (default: the split manifest's per-bin ASTs, else observations.ast_results)",
    )
    p.add_argument("--force", action="store_true", help="rebuild existing noise models")
    p.set_defaults(func=_cmd_noisemodel)

    p = sub.add_parser("trim", help="trim SED grid + noise model per catalog sub-file")
    p.add_argument("settings", help="settings TOML file")
    p.add_argument("--grid", nargs="+", help="SED grid or subgrids (default: found under project.output)")
    p.add_argument("--catalog", nargs="+", help="sub-file(s) to trim for (default: the split manifest's)")
    p.add_argument("--noise", help="noise model (default: P_bin{s}_gridsub{g}_noisemodel.hd5)")
    p.add_argument("--bins", nargs="+", help="only these density bins")
    p.add_argument("--force", action="store_true", help="redo existing trimmed files")
    p.set_defaults(func=_cmd_trim)
