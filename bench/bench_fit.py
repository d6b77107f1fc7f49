"""Benchmark of the fit kernel on a ~1e6-model trimmed grid with 6 filters.

Prints stars per second (all threads and one thread), the per-star cost per
model, the peak memory of the fitting process, and the ratio against a plain
numpy implementation of the same likelihood and summary sums, run in the same
process on the same grid.

    .venv/bin/python bench/bench_fit.py [--stars 64] [--numpy-stars 3] [--dir /tmp/bench_fit] [--stages]

``--stages`` also prints where run_fit spends its CPU time (kernels, 2-D / 1-D
PDF writing, lnP samples, stats table...), from a second, instrumented call.

The grid (synthetic, physically shaped: tests/fit/synth.py) is generated once
in a subprocess (so its memory is not counted) and kept in --dir.
"""

from __future__ import annotations

import argparse
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

    for name, label in [("pass_max", "kernel pass 1 (peak)"), ("pass_accumulate", "kernel pass 2 (sums, PDFs, lnP)")]:
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stars", type=int, default=64)
    ap.add_argument("--numpy-stars", type=int, default=3)
    ap.add_argument("--dir", default="/tmp/bench_fit")
    ap.add_argument("--stages", action="store_true", help="also print run_fit's CPU time by stage")
    args = ap.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    grid_url, noise_url = f"{args.dir}/P_seds_trim.grid.hd5", f"{args.dir}/P_noisemodel_trim.grid.hd5"
    if not (os.path.exists(grid_url) and os.path.exists(noise_url)):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", GEN.format(repo=REPO, grid=grid_url, noise=noise_url)], check=True)
        print(f"generated grid in {time.perf_counter() - t:.0f} s")

    import numba
    import pytest

    from beastflow.fit import likelihood as lk
    from beastflow.fit.fitting import _prepare, _resolve_options, run_fit
    from beastflow.fit.grid_info import read_grid_info, run_grid_info
    from beastflow.fit.lnp import star_seeds
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
    cat = simulate_observations(grid_url, noise_url, args.stars, 1, synth.VEGA)
    cat.write_parquet(f"{args.dir}/P_bin0_sub0.parquet")
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
        stage_breakdown(
            lambda: run_fit(
                s,
                grid_url,
                noise_url,
                f"{args.dir}/P_bin0_sub0.parquet",
                gi,
                f"{args.dir}/P_bin0_sub0",
            )
        )

    # the kernels alone on the prepared grid (CPU time: the machine is shared,
    # wall time would measure the neighbours; CPU time summed over threads)
    bs = binset_from_info(info, grid.columns, grid.filters, s.fit.pdf_max_nbins, s.fit.pdf2d_pairs, False, "b")
    opts = _resolve_options(s, grid, info)
    bands = [c[:-5] for c in cat.columns if c.endswith("_RATE") and "INPUT" not in c]
    Y = np.column_stack([cat[f"{b}_RATE"].to_numpy() for b in bands]) * synth.VEGA
    cols = sorted({q for q in bs.qnames if not q.startswith("symlog")} | {"weight", "fullgrid_idx", "specgrid_indx"})
    t = time.perf_counter()
    chunk = _prepare(
        grid.read(columns=cols),
        noise.read(names=["bias", "error", "completeness"]),
        bs,
        opts,
        0,
        grid_url,
        {"zero_weight": 0, "invalid_noise": 0},
    )
    print(f"read + prepare the grid once per sub-file: {time.perf_counter() - t:.1f} s")
    y = np.ascontiguousarray(Y)
    used = np.isfinite(y)
    ns = len(y)
    seeds = star_seeds(1, range(ns))

    def kernels(threads):
        numba.set_num_threads(threads)
        best = None
        for _ in range(2):  # the first call may include loading the compiled kernels
            M, bi, c2, c2i = np.full(ns, -np.inf), np.full(ns, -1), np.full(ns, np.inf), np.full(ns, -1)
            t0 = time.process_time()
            w0 = time.perf_counter()
            lk.pass_max(
                y,
                used,
                chunk.m,
                chunk.ivar,
                chunk.lne,
                chunk.icd,
                chunk.ico,
                chunk.full,
                chunk.const,
                0,
                M,
                bi,
                c2,
                c2i,
                threads,
            )
            ta = time.process_time() - t0
            k, nq = s.fit.lnp_npts, len(bs.qnames)
            z = lambda *sh, v=0.0, dt=float: np.full(sh, v, dt)  # noqa: E731
            acc = (
                z(threads, ns),
                z(threads, ns, nq),
                z(threads, ns, bs.n1),
                z(threads, ns, bs.n2),
                z(threads, ns, v=np.inf),
                z(threads, ns, v=-1, dt=np.int64),
                z(threads, ns, dt=np.int64),
                z(threads, ns, k, v=np.inf),
                z(threads, ns, k, dt=np.int64),
                z(threads, ns, k),
                z(threads, ns, k),
                z(threads, ns, dt=np.int64),
                z(ns, nq),
                z(ns, dt=np.int64),
                z(ns, dt=np.int64),
            )
            t0 = time.process_time()
            lk.pass_accumulate(
                y,
                used,
                chunk.m,
                chunk.ivar,
                chunk.lne,
                chunk.icd,
                chunk.ico,
                chunk.full,
                chunk.const,
                0,
                M,
                opts.stat_thr,
                opts.lnp_thr,
                chunk.qvals,
                chunk.bins1,
                chunk.bins2,
                chunk.gid,
                chunk.specgrid,
                bi,
                seeds,
                *acc,
            )
            tb = time.process_time() - t0
            wall = time.perf_counter() - w0
            if best is None or ta + tb < best[0] + best[1]:
                best = (ta, tb, wall)
        return best

    ta, tb, wall = kernels(T)
    cpu = (ta + tb) / ns
    print(
        f"kernels ({T} thread(s)): pass 1 (peak) {ta / ns * 1e3:.1f} + pass 2 (sums, PDFs, lnp sample) "
        f"{tb / ns * 1e3:.1f} = {cpu * 1e3:.1f} ms CPU per star per core "
        f"({cpu / grid.n_models * 1e9:.1f} ns per model per star) -> {1 / cpu:.1f} stars/s per core, "
        f"{ns / wall:.1f} stars/s wall on this (shared) machine"
    )
    ta1, tb1, _ = kernels(1)
    cpu1 = (ta1 + tb1) / ns
    print(f"kernels (1 thread): {cpu1 * 1e3:.1f} ms CPU per star -> {1 / cpu1:.1f} stars/s per core")
    numba.set_num_threads(T)
    t_one = cpu1
    t_all = cpu
    g_all, n_all = grid.read(), noise.read()
    t_np = numpy_reference(g_all, n_all, Y[: args.numpy_stars], bs, opts.ln_norm)
    print(f"numpy reference (same likelihood + sums, 1 star at a time): {t_np * 1e3:.0f} ms CPU per star")
    print(
        f"ratio numpy / numba (CPU time per star): {t_np / t_one:.1f}x (numba 1 thread), "
        f"{t_np / t_all:.1f}x (numba {T} threads)"
    )
    print(f"peak RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
