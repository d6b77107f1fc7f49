"""A scale run, measured: N synthetic stars on the demo grid through the whole pipeline.

    .venv/bin/python bench/bench_scale.py                      # 200,000 stars (long: hours on 2 cores)
    .venv/bin/python bench/bench_scale.py --n-stars 3000       # smoke test (minutes)

The field is the embedded demo's (``prepare_demo``: same physics grid, same
instrument, same density gradient; the patch grows with N so the source
density stays realistic).  Trim and fit run on the process-pool executor
(``[execution] executor = "processes"``, ``--workers`` processes).  Every stage
flow is called in pipeline order and timed: wall seconds, and CPU seconds of
this process plus the worker processes it waited for (getrusage SELF +
CHILDREN).  Prints ONE JSON line:

    {"stars": ..., "models": ..., "stages": {stage: {"wall_s", "cpu_s", "bytes"}}, "wall_s", "cpu_s",
     "peak_rss_mb", "bytes_written", "bytes_per_star", "subfiles", "kept_models_mean", ...}

``bytes_written`` is the size of the output folder after the run (the catalog
and settings included), ``stages.*.bytes`` what each stage added to it.
docs/scaling.md uses these numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _folder_bytes(path: Path) -> int:
    return int(subprocess.check_output(["du", "-sb", str(path)]).split()[0])


def _cpu_s() -> float:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _peak_rss_mb() -> float:
    # ru_maxrss is in KiB on Linux: the largest of this process and of any waited-for worker
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return max(me.ru_maxrss, kids.ru_maxrss) / 1024.0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n-stars", type=int, default=200_000, help="stars in the synthetic field (default 200000)")
    p.add_argument(
        "--size",
        default="default",
        choices=["default", "small"],
        help="demo grid: 'default' (~2.6e5 models) or 'small' (~1e4, quick checks)",
    )
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes for trim and fit")
    p.add_argument("--workdir", type=Path, default=None, help="output folder (default: a new temporary one)")
    p.add_argument("--seed", type=int, default=None)
    args = p.parse_args(argv)
    if args.n_stars < 10:
        p.error("--n-stars must be at least 10")

    # a private Prefect home: the run's flow/task records do not mix with anyone's
    os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="bench-scale-prefect-"))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "300")

    from beastflow.demo import prepare_demo
    from beastflow.flows import pipeline as P
    from beastflow.flows.stages import split_layout
    from beastflow.io.sed_grid import SEDGrid

    work = (args.workdir or Path(tempfile.mkdtemp(prefix="bench-scale-"))).resolve()
    stages: dict[str, dict[str, float]] = {}

    def timed(name, fn, *a, **kw):
        b0, t0, c0 = _folder_bytes(work), time.perf_counter(), _cpu_s()
        out = fn(*a, **kw)
        stages[name] = {
            "wall_s": round(time.perf_counter() - t0, 2),
            "cpu_s": round(_cpu_s() - c0, 2),
            "bytes": _folder_bytes(work) - b0,
        }
        return out

    t_all, c_all = time.perf_counter(), _cpu_s()
    work.mkdir(parents=True, exist_ok=True)
    s = timed("prepare_field", prepare_demo, str(work), n_stars=args.n_stars, size=args.size, seed=args.seed)
    ex = s.execution.model_copy(update={"executor": "processes", "workers": args.workers, "progress": False})
    s = P.load(s.model_copy(update={"execution": ex}))

    from beastflow.lease import output_lease

    runs: dict = {}
    with output_lease(s.output, wait_s=0):
        runs["physicsmodel"] = timed("physicsmodel", P.physicsmodel_flow, s)
        runs["density"] = timed("density", P.density_flow, s)
        runs["ast_inputs"] = timed(
            "ast_inputs", P.ast_inputs_flow, s, physics=runs["physicsmodel"], density=runs["density"]
        )
        asts, _ = timed("demo_asts", P.ast_results, s, ast_inputs=runs["ast_inputs"])
        runs["cut"] = timed("cut", P.cut_flow, s, density=runs["density"], asts=asts)
        runs["split"] = timed("split", P.split_flow, s, cut=runs["cut"], density=runs["density"])
        runs["noisemodel"] = timed(
            "noisemodel", P.noisemodel_flow, s, physics=runs["physicsmodel"], split=runs["split"]
        )
        runs["trim"] = timed(
            "trim", P.trim_flow, s, physics=runs["physicsmodel"], split=runs["split"], noise=runs["noisemodel"]
        )
        runs["grid_info"] = timed("grid_info", P.grid_info_flow, s, physics=runs["physicsmodel"])
        runs["fit"] = timed("fit", P.fit_flow, s, split=runs["split"], trim=runs["trim"], grid_info=runs["grid_info"])
        runs["merge"] = timed("merge", P.merge_flow, s, fit=runs["fit"])

    trims = [t for ts in runs["trim"].results.values() for t in ts]
    layout = split_layout(next(iter(runs["split"].results.values())))
    grid_url = runs["physicsmodel"].results["seds"].sed_grids[0]
    total = _folder_bytes(work)
    stars = int(runs["merge"].summary.get("stars", 0))
    out = {
        "stars": stars,
        "stars_requested": args.n_stars,
        "models": SEDGrid(grid_url).n_models,
        "subfiles": len(layout.subfiles),
        "density_bins": len(layout.asts),
        "kept_models_mean": round(sum(t.n_kept for t in trims) / max(1, len(trims))),
        "workers": args.workers,
        "cpu_count": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "stages": stages,
        "wall_s": round(time.perf_counter() - t_all, 2),
        "cpu_s": round(_cpu_s() - c_all, 2),
        "fit_stars_per_cpu_s": round(stars / max(stages["fit"]["cpu_s"], 1e-9), 2),
        "peak_rss_mb": round(_peak_rss_mb(), 1),
        "bytes_written": total,
        "bytes_per_star": round(total / max(stars, 1), 1),
        "workdir": str(work),
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
