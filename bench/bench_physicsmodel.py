"""Benchmark of the physics-model stage: SED grid of >= 1e6 models, built in chunks.

    .venv/bin/python bench/bench_physicsmodel.py [--avs-step 0.1] [--keep DIR] [--json] [--repeat 3]

Builds a grid with the analytic Planck library (offline), the default PARSEC
ages (5 isochrones), and a dense dust grid; prints models/s of the whole
stage and of the SED loop alone, the peak memory (tracemalloc: numpy
allocations; ru_maxrss: whole process), and the speed-up over a plain-numpy
reference (per model: transmission, then one ``np.trapezoid`` per filter, as a
straightforward port of BEAST's loop would do), timed on a subset in the same
run and extrapolated to the full grid.

``--json`` also times the SED build alone (``build_sed_subgrid``: spectral grid
in memory -> extinguished band fluxes -> grid file written) in two fresh
processes, one with 1 numba thread and one with 2 (BLAS at 1 thread in both:
the build puts its own threads on the block products), best of
``--repeat`` builds each, and prints as its last line one JSON object:
``models``, ``models_per_s_1thread`` (models / CPU seconds of the 1-thread
process: per core, robust to other jobs on a shared machine),
``models_per_s_2threads`` (models / wall seconds with 2 threads) and
``peak_rss_mb`` (largest ru_maxrss of the two processes).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc

import numpy as np


def bench_settings(out: str, avs_step: float, chunk_models: int, kurucz: str | None = None):
    from beastflow.settings import settings_from_dict

    lib = {"libraries": ["kurucz"], "files": {"kurucz": kurucz}} if kurucz else {"libraries": ["planck"]}
    return settings_from_dict(
        {
            "project": {"name": "bench", "output": out},
            "physics": {
                "chunk_models": chunk_models,
                "stellar_library": lib,
                "extinction": {"avs": [0.0, 10.0, avs_step], "rvs": [2.0, 6.0, 0.5], "fAs": [0.0, 1.0, 0.2]},
            },
        }
    )


def reference_seconds_per_model(settings, n_models: int = 1500) -> float:
    """Plain-numpy per-model loop on a subset of models (seconds per model)."""
    from beastflow.physics import photometry
    from beastflow.physics.extinction import transmission
    from beastflow.physics.physicsmodel import plan_dust
    from beastflow.physics.spectral_grid import build_spectral_grid

    sg = build_spectral_grid(settings)
    dust = plan_dust(settings)
    lam = sg.lamb
    filts = photometry.load_filters(sg.filters)
    T = [f.interpolated(lam) for f in filts]
    rng = np.random.default_rng(0)
    rows = rng.integers(0, sg.n_rows, n_models)
    dps = rng.integers(0, dust.n, n_models)
    curves = {}
    t0 = time.perf_counter()
    out = np.empty((n_models, len(filts)))
    for i, (r, c) in enumerate(zip(rows, dps)):
        key = (dust.Rv[c], dust.f_A[c], dust.Rv_A[c])
        if key not in curves:  # curve cached per (R, f_A): favours the reference
            curves[key] = dust.law.curve(lam, *key)
        spec = sg.star_spectra[sg.star_index[r]] * sg.scale[r]
        f = spec * transmission(dust.Av[c] * curves[key], False)
        for b, t in enumerate(T):
            out[i, b] = np.trapezoid(lam * t * f, lam) / np.trapezoid(lam * t, lam)
    return (time.perf_counter() - t0) / n_models


def sed_build_worker(avs_step: float, chunk_models: int, kurucz: str | None, repeat: int) -> dict:
    """Best-of-``repeat`` CPU and wall time of the SED build alone, in this process."""
    from beastflow.physics.physicsmodel import build_sed_subgrid, plan_dust
    from beastflow.physics.spectral_grid import build_spectral_grid

    out = tempfile.mkdtemp(prefix="bench_sed_build_")
    try:
        s = bench_settings(out, avs_step, chunk_models, kurucz)
        s.activate()
        sg = build_spectral_grid(s)
        dust = plan_dust(s)
        url = os.path.join(out, "seds.grid.hd5")
        rows = (0, sg.n_rows)
        cpu, wall, main = [], [], []
        n = 0
        for _ in range(repeat + 1):  # the first build pays numba's cache load / compilation
            c0, w0, m0 = time.process_time(), time.perf_counter(), time.thread_time()
            n = build_sed_subgrid(s, sg, dust, rows, url, {}, {})
            cpu.append(time.process_time() - c0)
            wall.append(time.perf_counter() - w0)
            main.append(time.thread_time() - m0)
        return {
            "models": int(n),
            "cpu_s": min(cpu[1:]),
            "wall_s": min(wall[1:]),
            "main_thread_cpu_s": main[1 + int(np.argmin(cpu[1:]))],
            "bytes": os.path.getsize(url),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        }
    finally:
        shutil.rmtree(out, ignore_errors=True)


def sed_build_in_process(threads: int, args) -> dict:
    """``sed_build_worker`` in a fresh process with ``threads`` numba threads."""
    env = dict(os.environ, NUMBA_NUM_THREADS=str(threads))
    # the build spreads its units and block products over numba's threads itself;
    # BLAS threads inside each product would only compete with them for the cores
    for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[v] = "1"
    cmd = [sys.executable, __file__, "--worker", "--avs-step", str(args.avs_step)]
    cmd += ["--chunk-models", str(args.chunk_models), "--repeat", str(args.repeat)]
    if args.kurucz:
        cmd += ["--kurucz", args.kurucz]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


def json_summary(args) -> dict:
    one = sed_build_in_process(1, args)
    two = sed_build_in_process(2, args)
    n = one["models"]
    print(
        f"SED build alone ({n:,} models, file {one['bytes'] / 2**20:.0f} MiB), best of {args.repeat}: "
        f"1 thread {one['cpu_s']:.2f} s CPU ({n / one['cpu_s']:,.0f} models/s per core), "
        f"{one['wall_s']:.2f} s wall; 2 threads {two['wall_s']:.2f} s wall ({n / two['wall_s']:,.0f} models/s, "
        f"x{one['wall_s'] / two['wall_s']:.2f} the 1-thread wall time), {two['cpu_s']:.2f} s CPU; "
        f"peak RSS {one['peak_rss_mb']:.0f} / {two['peak_rss_mb']:.0f} MiB"
    )
    # on a busy machine the 2-thread wall time says little: the work of the
    # 2-thread run, spread over 2 free cores, cannot finish before its main
    # thread's share (products, writes) nor before half of all its CPU time
    bound = max(two["main_thread_cpu_s"], two["cpu_s"] / 2)
    print(
        f"2 threads, CPU split: main thread {two['main_thread_cpu_s']:.2f} s of {two['cpu_s']:.2f} s -> "
        f"on 2 free cores at best {bound:.2f} s wall, x{one['cpu_s'] / bound:.2f} the 1-thread CPU time"
    )
    return {
        "models": n,
        "models_per_s_1thread": round(n / one["cpu_s"]),
        "models_per_s_2threads": round(n / two["wall_s"]),
        "peak_rss_mb": round(max(one["peak_rss_mb"], two["peak_rss_mb"]), 1),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--avs-step", type=float, default=0.1, help="A(V) grid step (smaller: more models)")
    ap.add_argument("--chunk-models", type=int, default=262_144)
    ap.add_argument("--kurucz", help="use this Kurucz library file instead of the analytic Planck library")
    ap.add_argument("--keep", help="write the grid here and keep it (default: temporary folder, removed)")
    ap.add_argument("--json", action="store_true", help="end with the JSON summary line of the SED build")
    ap.add_argument("--repeat", type=int, default=3, help="timed SED builds per thread count (--json)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.worker:
        print(json.dumps(sed_build_worker(args.avs_step, args.chunk_models, args.kurucz, args.repeat)))
        return 0

    from beastflow.io.sed_grid import SEDGrid
    from beastflow.physics.physicsmodel import run_physicsmodel

    out = args.keep or tempfile.mkdtemp(prefix="bench_physicsmodel_")
    try:
        s = bench_settings(out, args.avs_step, args.chunk_models, args.kurucz)
        # first run pays the one-time costs (imports, numba compilation of the
        # library interpolation, dust-curve setup); the second is the timed one
        t0 = time.perf_counter()
        run_physicsmodel(s, force=True)
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        res = run_physicsmodel(s, force=True)
        wall = time.perf_counter() - t0
        maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
        # second, traced run for the peak of numpy allocations (tracemalloc
        # slows the run, so it is not the timed one)
        tracemalloc.start()
        run_physicsmodel(s, force=True)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        n = res.n_models
        g = SEDGrid(res.sed_grids[0])
        size = sum(x["bytes"] for x in res.summary["grids"])
        # a second run of only the spectral grid isolates the SED loop's time
        from beastflow.physics.spectral_grid import build_spectral_grid

        t1 = time.perf_counter()
        build_spectral_grid(s)
        t_spec = time.perf_counter() - t1
        ref = reference_seconds_per_model(s)
        sed_time = max(wall - t_spec, 1e-9)
        print(f"library: {g.stellar_library}")
        print(
            f"models: {n:,} ({g.meta['n_spec_rows']} spectral rows x {g.meta['n_valid_dust']} dust points, "
            f"{len(g.filters)} bands, {len(g.columns)} columns), file {size / 2**20:.0f} MiB"
        )
        print(f"first run (incl. one-time imports/JIT): {first:.2f} s")
        print(
            f"stage wall time: {wall:.2f} s  -> {n / wall:,.0f} models/s "
            f"(spectral grid {t_spec:.2f} s; SED loop incl. HDF5 writes {n / sed_time:,.0f} models/s)"
        )
        print(
            f"peak memory: tracemalloc {peak / 2**20:.0f} MiB, ru_maxrss {maxrss:.0f} MiB "
            f"(grid itself would be {g.nbytes / 2**20:.0f} MiB in memory)"
        )
        print(
            f"plain-numpy per-model reference: {1 / ref:,.0f} models/s -> {ref * n:.0f} s for this grid "
            f"(extrapolated); speed-up x{ref * n / wall:,.0f} (whole stage), x{ref * n / sed_time:,.0f} (SED loop)"
        )
    finally:
        if not args.keep:
            shutil.rmtree(out, ignore_errors=True)
    if args.json:
        print(json.dumps(json_summary(args)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
