"""Speed of beastflow against BEAST 2.1.0: the SED grid build and the fit, per core.

Called by bench/compare_beast.py (``make compare-beast``; ``--speed-only`` runs
just this part on an existing or fresh peer run).  Both codes get the same
inputs: the SED build starts from the spectral grid with priors of the same
isochrones and library (BEAST: its ``spec_w_priors`` grid loaded in memory;
beastflow: ``build_spectral_grid`` of the same settings, outside the clock)
and writes the extinguished SED grid of the same dust grid; the fit runs on
BEAST's own trimmed grid and noise model (converted) and the same catalog.

Measured: CPU seconds (user + system) of the stage's own call, one core
(BLAS / numba / OpenMP at 1 thread), best of ``repeat``, the runs interleaved
(BEAST, beastflow, BEAST, beastflow, ...) so that both see the same load on a
shared machine.  BEAST's side is ``make_extinguished_sed_grid`` and
``summary_table_memory`` clocked inside the peer's own process
(bench/peer_cpu_time.py, run with the peer venv's python); beastflow's side is
``plan_dust`` + ``build_sed_subgrid`` and ``run_fit``, after one untimed
warm-up call each (numba's cached kernels loaded: the first-call cost is
measured elsewhere, bench/bench_fit.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

#: the issue's goals, BEAST CPU time / beastflow CPU time
SED_GOAL = 20.0
FIT_GOAL = 50.0


def beast_sed_file(peer_run: Path) -> Path:
    project = json.loads((peer_run / "peer_report.json").read_text())["config"]["project"]
    return peer_run / project / f"{project}_seds.grid.hd5"


def beast_cpu(peer_home: Path, peer_dir: Path, peer_run: Path, stage: str) -> dict[str, float]:
    """CPU (and wall) seconds of BEAST's own call in ``stage`` (seds or fit), one core."""
    if stage == "seds":
        # make_extinguished_sed_grid returns at once when its output exists: the
        # peer's grid is moved aside for the run and put back after it
        grid = beast_sed_file(peer_run)
        kept = grid.with_name(grid.name + ".speed-kept")
        os.replace(grid, kept)
        try:
            return _beast_cpu(peer_home, peer_dir, peer_run, stage)
        finally:
            os.replace(kept, grid)
    return _beast_cpu(peer_home, peer_dir, peer_run, stage)


def _beast_cpu(peer_home: Path, peer_dir: Path, peer_run: Path, stage: str) -> dict[str, float]:
    env = dict(
        os.environ,
        PEER_HOME=str(peer_home),
        BEAST_LIBS=str(peer_home / "libs") + "/",
        PYTHONDONTWRITEBYTECODE="1",
    )
    for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
        env[v] = "1"
    py = peer_home / "venv" / "bin" / "python"
    cmd = [str(py), str(HERE / "peer_cpu_time.py"), stage, str(peer_run), str(peer_dir)]
    r = subprocess.run(cmd, env=env, cwd=peer_run, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"BEAST {stage} failed (exit {r.returncode}): {r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def _clock(fn, *a, **kw) -> tuple[Any, float]:
    c0 = time.process_time()
    out = fn(*a, **kw)
    return out, time.process_time() - c0


def measure(
    settings,
    peer_home: Path,
    peer_dir: Path,
    peer_run: Path,
    fit_grid: str,
    fit_noise: str,
    catalog: str,
    workdir: Path,
    repeat: int = 3,
) -> dict[str, Any]:
    """Interleaved best-of-``repeat`` CPU times of both codes; returns the figures and ratios."""
    import numba

    from beastflow.fit.fitting import run_fit
    from beastflow.physics.physicsmodel import build_sed_subgrid, plan_dust
    from beastflow.physics.spectral_grid import build_spectral_grid

    workdir.mkdir(parents=True, exist_ok=True)
    threads = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        settings.activate()
        sg = build_spectral_grid(settings)
        sed_url = str(workdir / "speed_seds.grid.hd5")
        fit_prefix = str(workdir / "speed_fit")

        def ours_sed() -> int:
            return build_sed_subgrid(settings, sg, plan_dust(settings), (0, sg.n_rows), sed_url, {}, {})

        def ours_fit() -> None:
            run_fit(settings, fit_grid, fit_noise, catalog, None, fit_prefix)

        n_models, _ = _clock(ours_sed)  # warm-up: numba cache load, extinction curves
        _clock(ours_fit)
        t: dict[str, list[float]] = {"beast_sed": [], "ours_sed": [], "beast_fit": [], "ours_fit": []}
        for _ in range(repeat):
            t["beast_sed"].append(beast_cpu(peer_home, peer_dir, peer_run, "seds")["cpu_s"])
            t["ours_sed"].append(_clock(ours_sed)[1])
        for _ in range(repeat):
            t["beast_fit"].append(beast_cpu(peer_home, peer_dir, peer_run, "fit")["cpu_s"])
            t["ours_fit"].append(_clock(ours_fit)[1])
    finally:
        numba.set_num_threads(threads)
    info = json.loads((peer_run / "stage_info.json").read_text())
    best = {k: min(v) for k, v in t.items()}
    return {
        "sed_models": int(n_models),
        "beast_sed_models": info.get("seds", {}).get("n_models"),
        "fit_models": info.get("fit", {}).get("n_models"),
        "fit_stars": info.get("fit", {}).get("n_stars"),
        "repeat": repeat,
        "cpu_s": t,
        "best_cpu_s": best,
        "sed_ratio": best["beast_sed"] / best["ours_sed"],
        "fit_ratio": best["beast_fit"] / best["ours_fit"],
    }


def report(res: dict[str, Any]) -> None:
    b = res["best_cpu_s"]
    print(
        f"\nSpeed against BEAST 2.1.0: CPU seconds of the stage call, one core, best of {res['repeat']} "
        "interleaved runs (BEAST, beastflow, ...)"
    )
    rows = [
        ("SED grid build", f"{res['sed_models']:,} models", b["beast_sed"], b["ours_sed"], res["sed_ratio"], SED_GOAL),
        (
            "fit (BEAST's trimmed grid)",
            f"{res['fit_models']:,} models x {res['fit_stars']} stars",
            b["beast_fit"],
            b["ours_fit"],
            res["fit_ratio"],
            FIT_GOAL,
        ),
    ]
    print(f"  {'stage':28s} {'size':28s} {'BEAST s':>9s} {'beastflow s':>12s} {'ratio':>8s}  goal")
    for name, size, bs, os_, ratio, goal in rows:
        ok = "met" if ratio >= goal else "NOT met"
        print(f"  {name:28s} {size:28s} {bs:9.3f} {os_:12.3f} {ratio:7.1f}x  >= {goal:g}x {ok}")
    print(f"  (all runs, s: {json.dumps({k: [round(x, 3) for x in v] for k, v in res['cpu_s'].items()})})")


if __name__ == "__main__":
    sys.exit("run through bench/compare_beast.py (--speed-only for this part alone)")
