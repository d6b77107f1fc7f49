"""Benchmark of the fit kernel on a ~1e6-model trimmed grid with 6 filters.

Prints stars per second (all threads and one thread), the per-star cost per
model, the peak memory of the fitting process, and the ratio against a plain
numpy implementation of the same likelihood and summary sums, run in the same
process on the same grid.

    .venv/bin/python bench/bench_fit.py [--stars 64] [--numpy-stars 3] [--dir /tmp/bench_fit]
                                         [--repeat 3] [--stages] [--cold] [--json]

Also, on a sub-file of ~80k models x 500 stars (every 12th model of the full
grid, bins from the full grid's info): run_fit's CPU time outside the kernels
(``overhead_s``), its wall time on 1 and 2 threads, and the wall time of the
first run_fit of a fresh process (``first_call_s``; numba cache warm; ``--cold``
also times it with an empty cache, i.e. with the compile).

``--stages`` also prints where run_fit spends its CPU time on that sub-file
(kernels, 2-D / 1-D PDF writing, lnP samples, stats table...).

``--json`` ends the output with one JSON line: models, bands, stars (the 1e6
grid), ns_per_model_star_1thread (kernels, CPU time on one thread),
ns_per_model_star_2threads (kernels, WALL time on two threads: the ratio of the
two is the 2-thread speed-up), first_call_s, overhead_s.  Every timing is the
best of ``--repeat`` (the machine may be shared).

The grid (synthetic, physically shaped: tests/fit/synth.py) is generated once
in a subprocess (so its memory is not counted) and kept in --dir.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # the numpy reference runs on one core

import numpy as np  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

GEN = r"""
import sys, numpy as np
sys.path.insert(0, {repo!r})
from tests.fit import synth
seds, cols = synth.make_models(n_mass=106, logas=tuple(np.arange(7.0, 10.01, 0.125)),
                               avs=tuple(np.arange(0.0, 5.01, 0.25)))
synth.write_grid({grid!r}, seds, cols, fullgrid_idx=np.arange(len(seds)))
synth.write_noise({noise!r}, seds, scale=3.0)
synth.write_grid({full!r}, seds, cols)
# a sub-file's trimmed grid of ~80k models (every 12th model of the full grid)
rows = np.arange(0, len(seds), 12)
synth.write_grid({sub!r}, seds[rows], {{k: v[rows] for k, v in cols.items()}}, fullgrid_idx=rows)
synth.write_noise({subnoise!r}, seds[rows], scale=3.0)
print(len(seds))
"""


def numpy_reference(grid_blk, noise_blk, y, bs, ln_norm):
    """Plain numpy: lnP of every model, then the same sums the kernel makes."""
    from beastflow.fit.grid_info import symlog

    m = grid_blk.seds + noise_blk.bias
    e = noise_blk.error
    ivar = 1.0 / e**2
    const = (
        np.log(grid_blk.columns["weight"])
        - ln_norm
        + np.log(noise_blk.completeness.min(axis=1))
        - np.log(e).sum(axis=1)
        - 0.5 * m.shape[1] * math.log(2 * math.pi)
    )
    nphys = sum(1 for q in bs.qnames if not q.startswith("symlog"))
    qvals = np.column_stack([grid_blk.columns[q] for q in bs.qnames[:nphys]] + [symlog(m)])
    b1, b2 = (np.ascontiguousarray(a.T) for a in bs.assign(np.ascontiguousarray(qvals.T), "bench"))
    t0 = time.process_time()
    for s in range(len(y)):
        chi2 = (((y[s] - m) ** 2) * ivar).sum(axis=1)
        lnp = const - 0.5 * chi2
        M = lnp.max()
        w = np.exp(lnp - M)
        s0 = w.sum()
        _exp = (w @ qvals) / s0
        _h1 = np.bincount(b1.ravel(), weights=np.repeat(w, b1.shape[1]), minlength=bs.n1) / s0
        _h2 = np.bincount(b2.ravel(), weights=np.repeat(w, b2.shape[1]), minlength=max(bs.n2, 1)) / s0
        _ = (M + math.log(s0), lnp.argmax(), chi2.min())
    return (time.process_time() - t0) / len(y)


def stage_breakdown(call) -> None:
    """CPU time of ``call()`` by stage: module functions of beastflow.fit wrapped with timers."""
    import functools

    from beastflow.fit import fitting as F
    from beastflow.fit import likelihood as lk
    from beastflow.fit import outputs as O
    from beastflow.observations import catalogs as C

    acc: dict[str, float] = {}
    undo = []

    def wrap(obj, name, label):
        fn = getattr(obj, name)

        @functools.wraps(fn)
        def timed_fn(*a, **kw):
            t0 = time.process_time()
            try:
                return fn(*a, **kw)
            finally:
                acc[label] = acc.get(label, 0.0) + time.process_time() - t0

        setattr(obj, name, timed_fn)
        undo.append((obj, name, fn))

    for name in getattr(lk, "KERNELS", ("pass_max", "pass_accumulate")):
        label = "kernel pass 1 (peak)" if name.endswith("max") else "kernel pass 2 (sums, PDFs, lnP)"
        wrap(lk, name, label)
    for name, label in [
        ("_prepare", "grid preparation"),
        ("binset_from_trimmed", "PDF bins (trimmed grid)"),
        ("reduce_heaps_flat", "lnP samples (heap reduction)"),
        ("write_pdf1d", "write 1-D PDFs"),
        ("write_lnp", "write lnP samples"),
        ("stats_table", "stats table"),
        ("write_stats", "write stats"),
    ]:
        if hasattr(F, name):
            wrap(F, name, label)
    # the fit reads its sub-file through the observations reader
    wrap(C, "read_table", "read catalog")
    for name in ("write", "write_compact"):
        if hasattr(O.PDF2DWriter, name):
            wrap(O.PDF2DWriter, name, "write 2-D PDFs")
    try:
        t0 = time.process_time()
        call()
        total = time.process_time() - t0
    finally:
        for obj, name, fn in undo:
            setattr(obj, name, fn)
    print(f"run_fit by stage (CPU s; {total:.3f} s in all):")
    for label, v in sorted(acc.items(), key=lambda kv: -kv[1]):
        print(f"  {label:34s} {v:8.3f} s  {100 * v / total:5.1f} %")
    print(f"  {'other (reads, setup, hashing)':34s} {total - sum(acc.values()):8.3f} s")


def _timed_kernels(acc: dict[str, float]):
    """Wrap the kernel entry points of ``likelihood`` (``lk.KERNELS``, or the two
    passes of older versions) so that their CPU and wall time add up into ``acc``."""
    import functools

    from beastflow.fit import likelihood as lk

    undo = []
    for name in getattr(lk, "KERNELS", ("pass_max", "pass_accumulate")):
        fn = getattr(lk, name)

        @functools.wraps(fn)
        def timed_fn(*a, _fn=fn, **kw):
            t0, w0 = time.process_time(), time.perf_counter()
            try:
                return _fn(*a, **kw)
            finally:
                acc["cpu"] = acc.get("cpu", 0.0) + time.process_time() - t0
                acc["wall"] = acc.get("wall", 0.0) + time.perf_counter() - w0

        setattr(lk, name, timed_fn)
        undo.append((name, fn))

    def restore():
        for name, fn in undo:
            setattr(lk, name, fn)

    return restore


FIRST_CALL = r"""
import sys, time
sys.path.insert(0, {repo!r})
from beastflow.fit.fitting import run_fit
from beastflow.settings import settings_from_dict
from tests.fit import synth
s = settings_from_dict({{"project": {{"output": {d!r}, "name": "P"}}, "fit": {{"lnp_npts": 500}}}})
t = time.perf_counter()
run_fit(s, {grid!r}, {noise!r}, {cat!r}, {gi!r}, {prefix!r})
print(time.perf_counter() - t)
"""


def first_call(args, sub, gi, cache_dir: str | None) -> float:
    """Wall time of the first run_fit of a fresh process (imports excluded)."""
    env = dict(os.environ)
    if cache_dir is not None:
        env["NUMBA_CACHE_DIR"] = cache_dir
    code = FIRST_CALL.format(
        repo=REPO, d=args.dir, grid=sub[0], noise=sub[1], cat=sub[2], gi=gi, prefix=f"{args.dir}/F_bin0_sub0"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, env=env, capture_output=True, text=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stars", type=int, default=64)
    ap.add_argument("--numpy-stars", type=int, default=3)
    ap.add_argument("--sub-stars", type=int, default=500, help="stars of the ~80k-model sub-file")
    ap.add_argument("--repeat", type=int, default=3, help="best of this many timings (shared machine)")
    ap.add_argument("--dir", default="/tmp/bench_fit")
    ap.add_argument("--stages", action="store_true", help="also print run_fit's CPU time by stage")
    ap.add_argument("--cold", action="store_true", help="also time a first call with an empty numba cache")
    ap.add_argument("--json", action="store_true", help="end with one JSON line of the headline figures")
    args = ap.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    grid_url, noise_url = f"{args.dir}/P_seds_trim.grid.hd5", f"{args.dir}/P_noisemodel_trim.grid.hd5"
    full_url = f"{args.dir}/P_seds.grid.hd5"
    sub_grid, sub_noise = (
        f"{args.dir}/S_bin0_sub0_seds_trim.grid.hd5",
        f"{args.dir}/S_bin0_sub0_noisemodel_trim.grid.hd5",
    )
    if not all(os.path.exists(u) for u in (grid_url, noise_url, full_url, sub_grid, sub_noise)):
        t = time.perf_counter()
        code = GEN.format(repo=REPO, grid=grid_url, noise=noise_url, full=full_url, sub=sub_grid, subnoise=sub_noise)
        subprocess.run([sys.executable, "-c", code], check=True)
        print(f"generated grids in {time.perf_counter() - t:.0f} s")

    import numba
    import pytest

    from beastflow.fit.fitting import _OneBlock, _resolve_options, fit_arrays, run_fit
    from beastflow.fit.grid_info import read_grid_info, run_grid_info
    from beastflow.fit.pdfs import binset_from_info
    from beastflow.io.noise_model import open_noise_model
    from beastflow.io.sed_grid import open_sed_grid
    from beastflow.settings import settings_from_dict
    from beastflow.simulate import simulate_observations
    from tests.fit import synth
    from tests.seams import patch_vega_fluxes

    # the stages see the Vega fluxes the synthetic field is simulated with, for the whole bench
    patch_vega_fluxes(pytest.MonkeyPatch(), synth.VEGA)
    s = settings_from_dict({"project": {"output": args.dir, "name": "P"}, "fit": {"lnp_npts": 500}})
    grid, noise = open_sed_grid(grid_url), open_noise_model(noise_url)
    gi = run_grid_info(s, [grid_url]).grid_info
    info = read_grid_info(gi)
    gi_full = run_grid_info(s, [full_url], out_url=f"{args.dir}/S_grid_info.json").grid_info
    cat = simulate_observations(grid_url, noise_url, args.stars, 1, synth.VEGA)
    cat.write_parquet(f"{args.dir}/P_bin0_sub0.parquet")
    sub_cat = f"{args.dir}/S_bin0_sub0.parquet"
    simulate_observations(sub_grid, sub_noise, args.sub_stars, 2, synth.VEGA).write_parquet(sub_cat)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    T = numba.config.NUMBA_NUM_THREADS
    print(
        f"grid: {grid.n_models:,} models x {grid.n_bands} bands, {len(info['qnames'])} quantities, "
        f"{len(s.fit.pdf2d_pairs)} 2-D PDFs; {T} thread(s) available"
    )

    # end to end (read, prepare, fit, write 4 artifacts)
    t = time.perf_counter()
    run_fit(s, grid_url, noise_url, f"{args.dir}/P_bin0_sub0.parquet", gi, f"{args.dir}/P_bin0_sub0")
    e2e = time.perf_counter() - t
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"run_fit end to end: {args.stars} stars in {e2e:.2f} s ({args.stars / e2e:.1f} stars/s incl. I/O, "
        f"hashing and writing); peak RSS {rss:.0f} MiB (before the fit: {rss0:.0f} MiB)"
    )
    if args.stages:
        stage_breakdown(lambda: run_fit(s, sub_grid, sub_noise, sub_cat, gi_full, f"{args.dir}/S_bin0_sub0"))

    # the kernels alone, on the grid read once (CPU time: the machine is shared, wall
    # time would measure the neighbours; CPU time is summed over threads)
    bs = binset_from_info(info, grid.columns, grid.filters, s.fit.pdf_max_nbins, s.fit.pdf2d_pairs, False, "b")
    opts = _resolve_options(s, grid, info)
    bands = [c[:-5] for c in cat.columns if c.endswith("_RATE") and "INPUT" not in c]
    Y = np.column_stack([cat[f"{b}_RATE"].to_numpy() for b in bands]) * synth.VEGA
    cols = sorted({q for q in bs.qnames if not q.startswith("symlog")} | {"weight", "fullgrid_idx", "specgrid_indx"})
    t = time.perf_counter()
    g1, n1 = _OneBlock(grid, grid.read(columns=cols)), _OneBlock(noise, noise.read())
    print(f"read the grid once: {time.perf_counter() - t:.1f} s")
    ns = len(Y)
    nm = grid.n_models

    def kernels(threads):
        numba.set_num_threads(threads)
        cpu = wall = math.inf
        for _ in range(max(2, args.repeat)):  # the first call may include loading the compiled kernels
            acc: dict[str, float] = {}
            restore = _timed_kernels(acc)
            try:
                fit_arrays(g1, n1, Y, np.arange(ns), bs, opts, 0, s.fit.chunk_models, s.fit.star_block)
            finally:
                restore()
            cpu, wall = min(cpu, acc["cpu"]), min(wall, acc["wall"])
        return cpu, wall  # each the best of the repeats

    cpu_all, wall_all = kernels(T)
    cpu1, wall1 = kernels(1)
    cpu2, wall2 = kernels(2) if T >= 2 else (cpu1, wall1)
    numba.set_num_threads(T)
    per = lambda x: x / ns / nm * 1e9  # noqa: E731  ns per model per star
    print(
        f"kernels, 1 thread: {per(cpu1):.1f} ns CPU per model per star ({cpu1 / ns * 1e3:.1f} ms CPU per star "
        f"-> {ns / cpu1:.1f} stars/s per core); wall {per(wall1):.1f} ns"
    )
    print(
        f"kernels, 2 threads: {per(wall2):.1f} ns wall per model per star ({per(cpu2):.1f} ns CPU), "
        f"speed-up {wall1 / wall2:.2f}x wall; {T} threads: {per(wall_all):.1f} ns wall ({per(cpu_all):.1f} ns CPU)"
    )
    g_all, n_all = grid.read(), noise.read()
    t_np = numpy_reference(g_all, n_all, Y[: args.numpy_stars], bs, opts.ln_norm)
    del g_all, n_all
    print(f"numpy reference (same likelihood + sums, 1 star at a time): {t_np * 1e3:.0f} ms CPU per star")
    print(
        f"ratio numpy / numba (CPU time per star): {t_np / (cpu1 / ns):.1f}x (numba 1 thread), "
        f"{t_np / (wall2 / ns):.1f}x (numba 2 threads, wall)"
    )

    # the whole stage on a sub-file of ~80k models x 500 stars: overhead outside the
    # kernels (1 thread, CPU), 1 vs 2 threads (wall), first call of a fresh process
    sub = (sub_grid, sub_noise, sub_cat)
    nsub = open_sed_grid(sub_grid).n_models

    def stage(threads):
        numba.set_num_threads(threads)
        best = (math.inf, math.inf, math.inf)
        for _ in range(args.repeat):
            acc: dict[str, float] = {}
            restore = _timed_kernels(acc)
            t0, w0 = time.process_time(), time.perf_counter()
            try:
                run_fit(s, sub_grid, sub_noise, sub_cat, gi_full, f"{args.dir}/S_bin0_sub0")
            finally:
                restore()
            cpu, wall = time.process_time() - t0, time.perf_counter() - w0
            best = (min(best[0], cpu), min(best[1], wall), min(best[2], cpu - acc["cpu"]))
        return best

    s_cpu1, s_wall1, overhead = stage(1)
    s_cpu2, s_wall2, _ = stage(2) if T >= 2 else (s_cpu1, s_wall1, overhead)
    numba.set_num_threads(T)
    print(
        f"run_fit {nsub:,} models x {args.sub_stars} stars: 1 thread {s_wall1:.2f} s wall ({s_cpu1:.2f} s CPU, "
        f"{overhead:.3f} s CPU outside the kernels); 2 threads {s_wall2:.2f} s wall ({s_cpu2:.2f} s CPU): "
        f"speed-up {s_wall1 / s_wall2:.2f}x"
    )
    t_first = first_call(args, sub, gi_full, None)
    print(f"first run_fit of a fresh process (numba cache warm): {t_first:.2f} s wall")
    if args.cold:
        import tempfile

        with tempfile.TemporaryDirectory() as cold:
            t_cold = first_call(args, sub, gi_full, cold)
        print(f"first run_fit of a fresh process with an empty numba cache (compiles): {t_cold:.1f} s wall")
    print(f"peak RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    if args.json:
        print(
            json.dumps(
                {
                    "models": nm,
                    "bands": grid.n_bands,
                    "stars": ns,
                    "ns_per_model_star_1thread": round(per(cpu1), 3),
                    "ns_per_model_star_2threads": round(per(wall2), 3),
                    "first_call_s": round(t_first, 3),
                    "overhead_s": round(overhead, 4),
                }
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
