"""Compile the fit and trim kernels into numba's on-disk cache ahead of the first fit.

The kernels are ``cache=True``: compiled once (about a minute and a half of CPU on a
small machine), then loaded from the cache in about a second by every later process.
A SLURM array whose tasks start together would otherwise compile in every task.

The pipeline does this by itself: before it hands fit units to a process pool or a
SLURM array it runs this warm-up once (on the pool's machine, or as one SLURM job on
the array's partition) unless the cache already holds this installation's kernels,
and every task gets ``execution.numba_cache_dir`` as ``NUMBA_CACHE_DIR``
(``beastflow.flows.executors``).  By hand, e.g. after an upgrade:

    python -m beastflow.fit.warmup --cache-dir /shared/numba-cache

(without ``--cache-dir``: ``NUMBA_CACHE_DIR``, else numba's default, ``__pycache__``
next to the sources).  numba keys its cache on the source files' paths and
modification times, so a fresh checkout or install compiles again; a stamp file
in the cache folder (``stamp_path``), keyed the same way, tells that this
installation was warmed up there.

It fits a tiny synthetic field in the default mode and in compat mode (every kernel
signature a fit uses: diagonal and truncheon noise models share them), and trims it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

FILTERS = ["HST_WFC3_F275W", "HST_ACS_WFC_F475W", "HST_WFC3_F160W"]


def warm_up(verbose: bool = False) -> float:
    """Fit a tiny field in both modes and trim it; returns the wall time (s) it took."""
    from beastflow.fit.fitting import run_fit
    from beastflow.io.noise_model import write_noise_model
    from beastflow.io.sed_grid import write_sed_grid
    from beastflow.noise.trim import trim_patterns
    from beastflow.physics.vega import vega_band_fluxes
    from beastflow.settings import settings_from_dict
    from beastflow.simulate import simulate_observations

    t0 = time.perf_counter()
    rng = np.random.default_rng(0)
    n = 600
    seds = 10 ** rng.uniform(-19, -17, size=(n, len(FILTERS)))
    cols = {
        "Av": rng.choice([0.0, 0.5, 1.0], n),
        "M_ini": 10 ** rng.uniform(0, 1, n),
        "logA": rng.choice([7.0, 8.0, 9.0], n),
        "weight": rng.uniform(0.5, 1.0, n),
        "specgrid_indx": np.arange(n, dtype=float),
    }
    vega = vega_band_fluxes(FILTERS)  # what the fit converts the simulated rates with
    quiet = logging.getLogger("beastflow")
    level = quiet.level
    if not verbose:
        quiet.setLevel(logging.ERROR)  # the tiny field's warnings (no grid info...) are expected
    try:
        with tempfile.TemporaryDirectory(prefix="beastflow-warmup-") as d:
            grid = write_sed_grid(f"{d}/W_seds.grid.hd5", FILTERS, np.array([2750.0, 4750.0, 16000.0]), seds, cols)
            noise = write_noise_model(
                f"{d}/W_noisemodel.grid.hd5", FILTERS, np.zeros_like(seds), 0.05 * seds, np.full_like(seds, 0.9)
            )
            cat = simulate_observations(grid, noise, 8, 1, vega)
            # a star without its first band: the kernels' missing-band path
            cat = cat.with_columns(cat["F275W_RATE"].scatter(0, np.nan))
            cat.write_parquet(f"{d}/W_bin0_sub0.parquet")
            for compat in ("none", "beast-2.1"):
                for npts in (5, 0):  # with and without lnP samples
                    s = settings_from_dict(
                        {
                            "compat": compat,
                            "project": {"output": d, "name": "W"},
                            "fit": {"lnp_npts": npts, "pdf2d_pairs": [["Av", "M_ini"]]},
                        }
                    )
                    run_fit(s, grid, noise, f"{d}/W_bin0_sub0.parquet", None, f"{d}/W_{compat}_{npts}")
            # the trim stage's kernel: trimming arrays of SLURM tasks load it too
            trim_patterns(
                seds, np.zeros_like(seds), 0.05 * seds, np.full_like(seds, 0.9), seds[:2], seds[2:4], 3.0, True
            )
    finally:
        quiet.setLevel(level)
    return time.perf_counter() - t0


def default_cache_dir() -> str:
    """Where numba caches the fit kernels when no cache folder is named: next to their sources."""
    return str(Path(__file__).resolve().parent / "__pycache__")


def install_key() -> str:
    """What numba's cache of this installation's kernels depends on, as a digest.

    numba finds a kernel by its source file's absolute path, modification time and
    size, and its own version; a stamp under this key is stale as soon as any of
    these change (an upgrade, a fresh checkout, an edited module).
    """
    import llvmlite
    import numba

    pkg = Path(__file__).resolve().parents[1]
    files = [[str(f), f.stat().st_mtime_ns, f.stat().st_size] for f in sorted(pkg.rglob("*.py"))]
    body = {
        "python": sys.version,
        "numba": numba.__version__,
        "llvmlite": llvmlite.__version__,
        "numpy": np.__version__,
        "files": files,
    }
    return hashlib.sha256(json.dumps(body).encode()).hexdigest()


def stamp_path(cache_dir: str | None) -> str:
    """The file a finished warm-up leaves in ``cache_dir`` (None: numba's default folder)."""
    return os.path.join(cache_dir or default_cache_dir(), f"beastflow-warmup-{install_key()[:20]}.json")


def is_warm(cache_dir: str | None) -> bool:
    """Whether this installation's kernels were compiled into ``cache_dir`` already."""
    return os.path.exists(stamp_path(cache_dir))


def use_cache_dir(cache_dir: str | None) -> None:
    """Make numba cache in ``cache_dir`` from now on, in this process and its children.

    ``NUMBA_CACHE_DIR`` is read when numba is imported; where numba is imported
    already, its config is set too: a kernel module imported afterwards caches
    there (kernels imported before keep their folder).
    """
    if not cache_dir:
        return
    os.environ["NUMBA_CACHE_DIR"] = cache_dir
    numba = sys.modules.get("numba")
    if numba is not None:
        numba.config.CACHE_DIR = cache_dir


def warm_up_cache(cache_dir: str | None = None, verbose: bool = False) -> float:
    """``warm_up`` with numba's cache in ``cache_dir``, then the stamp; returns the seconds.

    Meant for a fresh process (a SLURM job, ``python -m beastflow.fit.warmup``):
    kernels imported before the cache folder is set are not compiled into it.
    """
    use_cache_dir(cache_dir)
    dt = warm_up(verbose)
    import numba
    from llvmlite import binding

    where = numba.config.CACHE_DIR or default_cache_dir()  # type: ignore[attr-defined]
    # the machine it compiled for: numba keeps one entry per CPU in its cache, so a
    # node of another CPU type compiles once more (and adds its entry)
    stamp = {
        "seconds": round(dt, 3),
        "host": platform.node(),
        "cpu": numba.config.CPU_NAME or binding.get_host_cpu_name(),  # type: ignore[attr-defined]
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    # written whole under another name, then renamed: a reader sees no stamp or all of it
    path = stamp_path(where)
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        os.makedirs(where, exist_ok=True)
        with open(tmp, "w") as f:
            json.dump(stamp, f)
        os.replace(tmp, path)
    except OSError as exc:
        # a read-only installation: numba then caches in the user's cache folder, and
        # only the next warm-up check misses (it reloads the kernels, a few seconds)
        logging.getLogger(__name__).warning("kernels compiled, but no warm-up stamp in %s: %s", where, exc)
    return dt


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache-dir", help="numba cache folder (default: $NUMBA_CACHE_DIR, else next to the sources)")
    args = ap.parse_args(argv)
    dt = warm_up_cache(args.cache_dir or os.environ.get("NUMBA_CACHE_DIR") or None)
    import numba

    where = numba.config.CACHE_DIR or "next to the sources (__pycache__)"  # type: ignore[attr-defined]
    print(f"fit kernels compiled or loaded in {dt:.1f} s; numba cache: {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
