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
import re
from typing import TYPE_CHECKING

from beastflow import storage

if TYPE_CHECKING:
    from beastflow.settings import Settings


def _settings(args) -> Settings:
    from beastflow.settings import load_settings

    return load_settings(args.settings).activate()


def find_grids(s: Settings) -> list[tuple[int | None, str]]:
    """[(subgrid index or None, url)] of the run's SED grid(s)."""
    name = s.project.name
    full = s.artifact(f"{name}_seds.grid.hd5")
    if storage.exists(full):
        return [(None, full)]
    pat = re.compile(rf"{re.escape(name)}_seds\.gridsub(\d+)\.hd5$")
    subs: list[tuple[int | None, str]] = sorted(
        (int(m.group(1)), u) for u in storage.listdir(s.output) if (m := pat.search(u))
    )
    if not subs:
        raise FileNotFoundError(
            f"no SED grid {full} nor {name}_seds.gridsub*.hd5 under {s.output}; "
            "run `beastflow physicsmodel` first or pass --grid"
        )
    return subs


def _grid_args(s: Settings, grids: list[str] | None) -> list[tuple[int | None, str]]:
    if not grids:
        return find_grids(s)
    out = []
    for u in grids:
        m = re.search(r"gridsub(\d+)", posixpath.basename(u))
        out.append((int(m.group(1)) if m else None, u))
    return out


def _manifest(s: Settings) -> dict | None:
    url = s.artifact(f"{s.project.name}_split_manifest.json")
    return storage.read_json(url) if storage.exists(url) else None


def noisemodel_url(s: Settings, b: int | str | None, g: int | None) -> str:
    """``P_bin{s}_gridsub{g}_noisemodel.hd5`` (docs/stages.md; g = 0 for a single full grid, as the flows)."""
    parts = [s.project.name] + ([f"bin{b}"] if b is not None else []) + [f"gridsub{g if g is not None else 0}"]
    return s.artifact("_".join(parts) + "_noisemodel.hd5")


def _cmd_noisemodel(args) -> int:
    from beastflow.noise.toothpick import run_noisemodel

    s = _settings(args)
    grids = _grid_args(s, args.grid)
    ast_list: list[tuple[int | str | None, str | None]]
    if s.noise_model.model == "splinter":
        if args.asts:
            raise ValueError(f'--asts given, but [noise_model] model = "splinter" uses no ASTs ({args.asts})')
        ast_list = [(None, None)]  # one model per (sub)grid: a fixed fraction of each model flux
    elif args.asts:
        ast_list = [(None, args.asts)]
    else:
        man = _manifest(s)
        if man and man.get("asts"):
            ast_list = [(e["bin"], storage.resolve(e["url"], s.output)) for e in man["asts"]]
        elif s.observations.ast_results:
            ast_list = [(None, s.observations.ast_results)]
        else:
            raise FileNotFoundError(
                "no ASTs: no split manifest with per-bin ASTs under "
                f"{s.output} and no [observations] ast_results; pass --asts"
            )
    for b, ast_url in ast_list:
        for g, grid_url in grids:
            out = noisemodel_url(s, b, g)
            if storage.exists(out) and not args.force:
                print(f"exists {out}")
                continue
            run_noisemodel(s, grid_url, ast_url, out)
            print(f"wrote {out}")
    return 0


def _cmd_trim(args) -> int:
    from beastflow.noise.trim import TrimJob, run_trim, trimmed_urls

    s = _settings(args)
    grids = _grid_args(s, args.grid)
    if args.catalog:
        # explicit sub-files: one noise model (per grid) for all of them
        subfiles = [(None, posixpath.splitext(posixpath.basename(c))[0], c) for c in args.catalog]
    else:
        man = _manifest(s)
        if not man:
            raise FileNotFoundError(
                f"no split manifest {s.project.name}_split_manifest.json under {s.output}; "
                "run `beastflow split` first or pass --catalog"
            )
        subfiles = [
            (e["bin"], e["sub"], storage.resolve(e["url"], s.output)) for e in man["subfiles"] if e.get("n_rows", 1) > 0
        ]
    if args.bins:
        subfiles = [t for t in subfiles if str(t[0]) in set(args.bins)]
    by_bin: dict = {}
    for b, u, url in subfiles:
        by_bin.setdefault(b, []).append((u, url))
    n_written = 0
    for g, grid_url in grids:
        for b, items in by_bin.items():
            # splinter: one noise model per (sub)grid, shared by every density bin
            noise = args.noise or noisemodel_url(s, None if s.noise_model.model == "splinter" else b, g)
            if not storage.exists(noise):
                raise FileNotFoundError(f"{noise}: noise model not found; run `beastflow noisemodel` first")
            jobs = []
            for u, url in items:
                if args.catalog:
                    stem = storage.join(s.output, f"{u}" + (f"_gridsub{g}" if g is not None else ""))
                    gu, nu = stem + "_seds_trim.grid.hd5", stem + "_noisemodel_trim.grid.hd5"
                else:
                    gu, nu = trimmed_urls(s, b, u, g)
                job = TrimJob(url, gu, nu)
                if storage.exists(job.index_url) and not args.force:
                    print(f"exists {job.index_url}")
                    continue
                jobs.append(job)
            if not jobs:
                continue
            for r in run_trim(s, grid_url, noise, jobs):
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
