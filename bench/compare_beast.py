"""beastflow (compat = "beast-2.1") against the reference BEAST 2.1.0, stage by stage.

    .venv/bin/python bench/compare_beast.py [--nstars 20] [--workdir DIR] [--no-check] [--effects]
                                            [--noise toothpick|splinter] [--speed-only]

1. Runs BEAST 2.1.0 through ``../shared/peer-beast/run.sh small N`` (its own
   venv under ``PEER_HOME``; the project never imports it).  ``--peer-run DIR``
   reuses an existing peer run folder instead.
2. Gives beastflow the peer run's exact inputs: its isochrone table
   (``P_iso.csv``), the Kurucz grid of ``../shared/data/stellib``, the same 6
   filters, distance, velocity, dust grid, priors, the catalog it fitted
   (``data/obs.fits``), its converted ASTs (``data/asts.hd5``), the same number
   of AST flux bins, lnp sample size and PDF bin cap.
3. Runs every beastflow stage in compat mode, on one core (numba, BLAS: 1
   thread), and compares:

   - physics model: SED fluxes and every grid column, models matched by
     (specgrid_indx, Av, Rv, f_A);
   - noise model: bias, error, completeness, evaluated on BEAST's SED grid
     (stage alone) and on our own grid (chain);
   - trim: the set of ``fullgrid_idx`` kept, on BEAST's grid + noise model and
     on our chain;
   - fit on BEAST's trimmed grid + noise model (stage alone) and on our chain:
     stats Best/Exp/p16/p50/p84 per quantity, as |diff| / (grid range of the
     quantity); 1D and 2D PDFs bin by bin, as |diff| / (PDF peak); chi2min
     and chi2min_indx star by star (criteria), Pmax, indices; lnp samples
     where BEAST keeps every candidate;
   - wall time per stage, and the fit time per star (BEAST's star loop, which
     includes binning and writing outputs, against our whole ``run_fit`` and
     against our likelihood kernel alone).

   ``--effects`` also runs beastflow's default mode on the same inputs (all
   stages, and default physics with compat noise/trim/fit) and prints the
   median shift of the fitted parameters: the measured effect of the
   deliberate differences (docs/differences-from-beast.md, "Measured effect").

4. Speed (bench/compare_speed.py; ``--speed-only`` runs only this part): the
   SED grid build and the fit, CPU time of each code's stage call on one core,
   best of ``--speed-repeat`` (3) runs interleaved BEAST / beastflow.

Everything is printed and written to ``WORKDIR/compare_beast.json``.
The exit status is 1 (unless ``--no-check``) when an agreement criterion of the issue fails
(SED fluxes and noise model to 1e-4 relative, same trimmed models, stats within
1 % of the grid range for >= 99 % of the stars, 1D PDFs to 1e-3 of the peak,
chi2min to 1e-6 relative on every star, chi2min_indx equal on every star when
fitting BEAST's own trimmed grid).

``--noise splinter`` runs both codes with the AST-free splinter noise model
(10 % flux errors): phat_small's 175 ASTs give a toothpick model under which
nearly every posterior collapses onto one model, so chi2min over the sparse set S
(lnP > max - 10) and over all models coincide; with the splinter model the
posteriors are wide (the chi2-best model is not the max-posterior one for 145
of 269 stars), yet the chi2-best model still lies inside S for every star.
``bench/lowprior_field.py`` makes a catalog where it does not (stars whose
chi2-best model is > 11 ln units below the peak): give it to the peer with
``--obsfile`` and compare that run with ``--peer-run``.
A stage that beastflow does not provide (yet) is reported as "not available".
"""

from __future__ import annotations

import os

# one core, set before numpy / numba are imported: the comparison is per core
for _v in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_v] = "1"

import argparse  # noqa: E402
import ast  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import re  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import h5py  # noqa: E402
import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("BEASTFLOW_SHARED", REPO.parent / "shared"))
PEER_DIR = SHARED / "peer-beast"
KURUCZ = SHARED / "data" / "stellib" / "kurucz91_solar.grid.fits"

# the issue's acceptance thresholds
TOL_SED = 1e-4
TOL_NOISE = 1e-4
TOL_STATS_RANGE = 0.01
MIN_STARS_FRACTION = 0.99
TOL_PDF_PEAK = 1e-3
TOL_CHI2 = 1e-6
SPEED_GOAL = 50.0
#: rows of the repeated catalog used for the per-star cost at a sub-file size
REPEAT_ROWS = 5000

STAT_SUFFIXES = ("Best", "Exp", "p16", "p50", "p84")
NOT_AVAILABLE = "not available"

log = logging.getLogger("compare_beast")


# ------------------------------------------------------------------ helpers


class Unavailable(RuntimeError):
    """A beastflow stage (or its input) is missing: reported, never faked."""


def timed(fn, *a, **kw) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn(*a, **kw)
    return out, time.perf_counter() - t0


def process_seconds(code: str) -> float | None:
    """Wall time of a fresh one-core Python process running ``code`` (start-up and imports
    included, as BEAST's per-stage processes are timed); None if it fails."""
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        log.warning("timing process failed: %s", r.stderr[-2000:])
        return None
    return dt


def max_rel(a: np.ndarray, b: np.ndarray) -> dict[str, Any]:
    """max |a - b| / |b| over the entries with b != 0; entries with b == 0 must agree exactly."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        return {"max_rel": float("inf"), "shape": [list(a.shape), list(b.shape)]}
    d = np.abs(a - b)
    nz = b != 0
    both_nan = np.isnan(a) & np.isnan(b)
    rel = np.where(nz, d / np.where(nz, np.abs(b), 1.0), np.where(d > 0, np.inf, 0.0))
    rel = np.where(both_nan, 0.0, rel)
    rel = np.where(np.isnan(rel), np.inf, rel)
    return {
        "max_rel": float(rel.max()) if rel.size else 0.0,
        "max_abs": float(np.nanmax(d)) if d.size and not np.all(np.isnan(d)) else 0.0,
        "n_zero_mismatch": int(((b == 0) != (a == 0)).sum()),
    }


def centre_shift(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| in units of the bin spacing of b (of |b| for a single bin); inf if shapes differ."""
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    if a.shape != b.shape:
        return float("inf")
    if len(b) > 1:
        step = np.abs(np.diff(b))
        w = np.minimum(np.concatenate([step, [np.inf]]), np.concatenate([[np.inf], step]))
    else:
        w = np.maximum(np.abs(b), 1e-300)
    return float(np.max(np.abs(a - b) / w))


def fmt(x: Any, spec: str = ".1e") -> str:
    if x is None:
        return "-"
    if isinstance(x, str):
        return x
    if isinstance(x, (bool, np.bool_)):
        return "yes" if x else "NO"
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    if not np.isfinite(x):
        return str(x)
    return format(float(x), spec)


def print_table(title: str, header: list[str], rows: list[list[Any]]) -> None:
    cells = [[str(h) for h in header]] + [[c if isinstance(c, str) else fmt(c) for c in r] for r in rows]
    w = [max(len(r[i]) for r in cells) for i in range(len(header))]
    print(f"\n## {title}\n")
    print("| " + " | ".join(c.ljust(w[i]) for i, c in enumerate(cells[0])) + " |")
    print("|" + "|".join("-" * (x + 2) for x in w) + "|")
    for r in cells[1:]:
        print("| " + " | ".join(c.ljust(w[i]) for i, c in enumerate(r)) + " |")


# ------------------------------------------------------------------ BEAST side


def run_peer(args, peer_run: Path) -> None:
    env = dict(os.environ, PEER_HOME=str(args.peer_home), WORKDIR=str(peer_run))
    if not args.no_setup:
        print(f"[peer] setup.sh (PEER_HOME={args.peer_home})", flush=True)
        subprocess.run(["bash", str(PEER_DIR / "setup.sh")], env=env, check=True, stdout=subprocess.DEVNULL)
    cmd = ["bash", str(PEER_DIR / "run.sh"), args.grid, str(args.nstars)] + (
        ["--noise", "splinter"] if args.noise == "splinter" else []
    )
    print(f"[peer] {' '.join(cmd)}  -> {peer_run}", flush=True)
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        sys.stderr.write(r.stdout[-4000:] + r.stderr[-4000:])
        raise SystemExit(f"the BEAST run failed (exit {r.returncode}); logs in {peer_run}/timing/")


def retime_beast_fit(args, peer: Peer, times: int) -> list[float]:
    """Run BEAST's fit stage again (same harness call, one core) and return its star-loop
    times: BEAST and beastflow are then timed close together on a shared machine."""
    py = args.peer_home / "venv" / "bin" / "python"
    env = dict(
        os.environ,
        PEER_HOME=str(args.peer_home),
        BEAST_LIBS=str(args.peer_home / "libs") + "/",
        PYTHONDONTWRITEBYTECODE="1",
    )
    out = []
    for _ in range(times):
        r = subprocess.run(
            [str(py), str(PEER_DIR / "beast_peer.py"), "fit", "--workdir", str(peer.run)],
            env=env,
            cwd=peer.run,
            capture_output=True,
            text=True,
        )
        if r.returncode != 0:
            log.warning("BEAST fit re-run failed: %s", r.stderr[-2000:])
            break
        info = json.loads((peer.run / "stage_info.json").read_text()).get("fit", {})
        out.append(float(info["fit_loop_s"]))
    return out


class Peer:
    """The files and timings of one peer-beast run folder."""

    def __init__(self, run: Path):
        self.run = run
        rep = json.loads((run / "peer_report.json").read_text())
        self.config = rep["config"]
        self.stages = {s["stage"]: s for s in rep["stages"]}
        bad = [s for s, v in self.stages.items() if v.get("exit") != 0]
        if bad:
            raise SystemExit(f"{run}: BEAST stages {bad} failed; rerun the peer")
        self.project = self.config["project"]
        self.settings_text = (run / "beast_settings.txt").read_text()

    def path(self, suffix: str) -> Path:
        return self.run / self.project / f"{self.project}_{suffix}"

    def setting(self, name: str, default: Any = None) -> Any:
        m = re.search(rf"^{re.escape(name)}\s*=\s*(.+)$", self.settings_text, re.M)
        if not m:
            return default
        rhs = m.group(1).strip()
        if rhs.startswith(("[", "{", "'", '"')) or re.fullmatch(r"-?[\d.eE+]+", rhs):
            return ast.literal_eval(rhs)
        m2 = re.match(r"(-?[\d.eE+]+)\s*\*", rhs)  # e.g. "-300 * units.km / units.s"
        return float(m2.group(1)) if m2 else default

    def wall(self, *stages: str) -> float | None:
        try:
            return float(sum(self.stages[s]["wall_s"] for s in stages))
        except KeyError:
            return None


def read_beast_grid(path: Path) -> tuple[list[str], np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    with h5py.File(path, "r") as f:
        g = f["grid"][...]
        filters = f["grid"].attrs["filters"]
        filters = (filters.decode() if isinstance(filters, bytes) else str(filters)).split()
        cols = {c: g[c].astype(np.int64 if c == "fullgrid_idx" else np.float64) for c in g.dtype.names}
        return filters, f["lamb"][...], f["seds"][...], cols


def read_beast_noise(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as f:
        return {k: f[k][...] for k in ("bias", "error", "completeness")}


# ------------------------------------------------------------------ beastflow inputs


def write_inputs(peer: Peer, bfdir: Path, compat: str, name: str, noise: str = "toothpick") -> dict[str, Any]:
    """Settings TOML + input files for beastflow from the peer run's exact inputs."""
    bfdir.mkdir(parents=True, exist_ok=True)
    iso = bfdir / "iso.csv"
    if not iso.exists():
        # same rows; the '#' comment lines are dropped because beastflow's
        # physics.isochrones.read_table (astropy ascii.csv) does not skip them
        lines = peer.path("iso.csv").read_text().splitlines()
        iso.write_text("\n".join(ln for ln in lines if not ln.lstrip().startswith("#")) + "\n")
    cat = bfdir / "obs.parquet"
    if not cat.exists():
        from beastflow.observations.catalogs import normalise_columns, read_table

        df = normalise_columns(read_table(str(peer.run / "data" / "obs.fits")), "obs.fits")
        df.write_parquet(cat)
    cfg = peer.config
    filters = peer.setting("filters")
    priors_map = {
        "age": "age",
        "mass": "mass",
        "met": "metallicity",
        "distance": "distance",
        "av": "av",
        "rv": "rv",
        "fA": "fA",
    }
    priors = {}
    for b, ours in priors_map.items():
        p = peer.setting(f"{b}_prior_model", {"name": "flat"})
        priors[ours] = p
    dist = peer.setting("distances", [24.47])
    dunit = "mag" if "units.mag" in peer.settings_text else "pc"
    fit_info = peer.stages.get("fit", {}).get("info", {})
    lines = [
        f'compat = "{compat}"',
        "[project]",
        f'name = "{name}"',
        'output = "out"',
        "seed = 0",
        "[physics]",
        "filters = " + json.dumps(filters),
        "distances = " + json.dumps([float(x) for x in dist]),
        f'distance_unit = "{dunit}"',
        f"velocity = {float(peer.setting('velocity', -300.0))}",
        "n_subgrid = 1",
        "[physics.isochrones]",
        'source = "table"',
        'table = "iso.csv"',
        "logt = " + json.dumps(cfg["logt"]),
        "z = " + json.dumps(cfg["z"]),
        "[physics.stellar_library]",
        'libraries = ["kurucz"]',
        f'files = {{ kurucz = "{KURUCZ}" }}',
        "[physics.extinction]",
        'law = "gordon16"',
        "avs = " + json.dumps(cfg["avs"]),
        "rvs = " + json.dumps(cfg["rvs"]),
        "fAs = " + json.dumps(cfg["fAs"]),
        "[physics.priors]",
    ]
    for k, v in priors.items():
        lines.append(f"{k} = {{ " + ", ".join(f"{kk} = {json.dumps(vv)}" for kk, vv in v.items()) + " }")
    lines += (
        ["[noise_model]", f'model = "{noise}"']
        + ([f"n_flux_bins = {int(cfg.get('nfluxbins', 4))}"] if noise == "toothpick" else [])
        + [
            # BEAST-style trimmed copies (the default artifact is the kept-row index), compared file to file
            "[trim]",
            "sigma_fac = 3.0",
            "materialize = true",
            "[fit]",
            "lnp_npts = 500",
            "lnp_threshold = -10.0",
            f"pdf_max_nbins = {int(fit_info.get('max_nbins', 200))}",
            'pdf2d_pairs = [["Av", "M_ini"], ["Av", "logT"], ["M_ini", "logT"]]',
            f'surveyname = "{peer.setting("surveyname", "PHAT")}"',
            "[execution]",
            "progress = false",
        ]
    )
    sfile = bfdir / f"{name}.toml"
    sfile.write_text("\n".join(lines) + "\n")
    from beastflow.settings import load_settings

    return {
        "settings": load_settings(str(sfile)),
        "settings_file": str(sfile),
        "catalog": str(cat),
        "asts": str(peer.run / "data" / "asts.hd5"),
        "out": bfdir / "out",
    }


def to_bf_grid(path: Path, out: Path) -> str:
    from beastflow.io.sed_grid import write_sed_grid

    filters, lamb, seds, cols = read_beast_grid(path)
    write_sed_grid(str(out), filters, lamb, seds, cols)
    return str(out)


def to_bf_noise(path: Path, filters: list[str], out: Path) -> str:
    from beastflow.io.noise_model import write_noise_model

    n = read_beast_noise(path)
    write_noise_model(str(out), filters, n["bias"], n["error"], n["completeness"])
    return str(out)


# ------------------------------------------------------------------ comparisons


def compare_sed_grids(ours_url: str, beast_path: Path) -> dict[str, Any]:
    from beastflow.io.sed_grid import open_sed_grid

    g = open_sed_grid(ours_url)
    blk = g.read()
    filters, _, bseds, bcols = read_beast_grid(beast_path)
    res: dict[str, Any] = {"n_models": [g.n_models, len(bseds)], "filters_equal": list(g.filters) == filters}
    if g.n_models != len(bseds) or not res["filters_equal"]:
        res["ok"] = False
        return res
    keys = ["specgrid_indx", "Av", "Rv", "f_A"]
    ka = np.column_stack([blk.columns[k] for k in keys])
    kb = np.column_stack([bcols[k] for k in keys])
    oa = np.lexsort(ka.T[::-1])
    ob = np.lexsort(kb.T[::-1])
    res["keys_equal"] = bool(np.allclose(ka[oa], kb[ob], rtol=1e-12, atol=1e-12))
    res["same_row_order"] = bool(np.allclose(ka, kb, rtol=1e-12, atol=1e-12))
    if not res["keys_equal"]:
        res["ok"] = False
        return res
    seds_a, seds_b = blk.seds[oa], bseds[ob]
    res["seds"] = max_rel(seds_a, seds_b)
    res["seds_per_band"] = {f: max_rel(seds_a[:, k], seds_b[:, k])["max_rel"] for k, f in enumerate(filters)}
    cols = {}
    for c, v in bcols.items():
        if c in blk.columns:
            cols[c] = max_rel(blk.columns[c][oa], v[ob])["max_rel"]
        else:
            cols[c] = "missing"
    res["columns"] = cols
    res["extra_columns"] = sorted(set(blk.columns) - set(bcols))
    res["ok"] = bool(res["seds"]["max_rel"] <= TOL_SED)
    return res


def compare_spec_grids(ours_url: str, beast_path: Path) -> dict[str, Any]:
    """Spectral grid with priors: wavelengths, spectra (BEAST stores them in other units:
    compared up to one constant factor, reported), and the grid columns."""
    with h5py.File(ours_url, "r") as a, h5py.File(beast_path, "r") as b:
        la, lb = a["lamb"][...], b["lamb"][...]
        sa = a["spectra"][...][a["star_index"][...]] * a["scale"][...][:, None]
        sb = b["seds"][...]
        bg = b["grid"][...]
        res: dict[str, Any] = {"n_rows": [len(sa), len(sb)], "n_lamb": [len(la), len(lb)]}
        if sa.shape != sb.shape:
            res["ok"] = False
            return res
        res["lamb"] = max_rel(la, lb)["max_rel"]
        pos = (sb > 0) & (sa > 0)
        factor = float(np.median(sa[pos] / sb[pos])) if pos.any() else float("nan")
        res["unit_factor_ours_over_beast"] = factor
        res["spectra_after_factor"] = max_rel(sa / factor, sb)["max_rel"]
        res["columns"] = {
            c: (max_rel(a["grid"][c][...], bg[c])["max_rel"] if c in a["grid"] else "missing") for c in bg.dtype.names
        }
    res["ok"] = bool(res["lamb"] <= TOL_SED and res["spectra_after_factor"] <= TOL_SED)
    return res


def compare_noise(ours_url: str, beast: dict[str, np.ndarray], row_map: np.ndarray | None = None) -> dict[str, Any]:
    from beastflow.io.noise_model import open_noise_model

    n = open_noise_model(ours_url).read()
    out: dict[str, Any] = {}
    for k in ("bias", "error", "completeness"):
        a = n.arrays[k] if row_map is None else n.arrays[k][row_map]
        out[k] = max_rel(a, beast[k])
    # the bias changes sign inside the AST flux range: relative to itself it is
    # ill-conditioned near zero, so it is also measured against its natural scale
    a = n.arrays["bias"] if row_map is None else n.arrays["bias"][row_map]
    scale = np.maximum(np.abs(beast["bias"]), np.abs(beast["error"]))
    d = np.abs(a - beast["bias"])
    sc = np.where(scale > 0, d / np.where(scale > 0, scale, 1.0), np.where(d > 0, np.inf, 0.0))
    out["bias_vs_max_bias_error"] = float(sc.max())
    out["bias_over_error"] = float(
        np.max(np.where(beast["error"] != 0, d / np.abs(np.where(beast["error"] != 0, beast["error"], 1)), 0))
    )
    out["error_sign_mismatch"] = int(
        (np.sign(n.arrays["error"] if row_map is None else n.arrays["error"][row_map]) != np.sign(beast["error"])).sum()
    )
    out["ok"] = bool(
        out["error"]["max_rel"] <= TOL_NOISE
        and out["completeness"]["max_rel"] <= TOL_NOISE
        and out["bias_vs_max_bias_error"] <= TOL_NOISE
        and out["error_sign_mismatch"] == 0
    )
    return out


def compare_trim(ours_grid_url: str, beast_trim: Path, row_map: np.ndarray | None = None) -> dict[str, Any]:
    from beastflow.io.sed_grid import open_sed_grid
    from beastflow.io.trim_index import read_trim_index
    from beastflow.noise.trim import index_url_for

    a = open_sed_grid(ours_grid_url).column("fullgrid_idx").astype(np.int64)
    # the trim artifact the pipeline's fit reads (kept rows) must be the copy's rows
    index_same = bool(np.array_equal(read_trim_index(index_url_for(ours_grid_url)).kept, a))
    if row_map is not None:  # our full-grid rows -> BEAST's full-grid rows
        a = row_map[a]
    with h5py.File(beast_trim, "r") as f:
        b = f["grid"]["fullgrid_idx"].astype(np.int64)
    sa, sb = set(a.tolist()), set(b.tolist())
    return {
        "n_models": [len(a), len(b)],
        "only_ours": len(sa - sb),
        "only_beast": len(sb - sa),
        "same_order": bool(len(a) == len(b) and np.array_equal(a, b)),
        "index_matches_copy": index_same,
        "ok": sa == sb and index_same,
    }


def compare_fit(
    prefix: str, peer: Peer, full_grid: dict[str, np.ndarray], full_noise_bias: np.ndarray, full_seds: np.ndarray
) -> dict[str, Any]:
    import polars as pl
    from astropy.io import fits
    from astropy.table import Table

    from beastflow.fit.outputs import read_lnp, read_pdf1d, read_pdf2d

    ours = pl.read_parquet(f"{prefix}_stats.parquet")
    bt = Table.read(peer.path("stats.fits"), hdu=1)
    res: dict[str, Any] = {"n_stars": [ours.height, len(bt)]}
    if ours.height != len(bt):
        res["ok"] = False
        return res
    res["names_equal"] = [str(x) for x in ours["Name"].to_list()] == [str(x).strip() for x in bt["Name"]]
    filters = peer.setting("filters")
    sl = np.sign(full_seds + full_noise_bias) * np.log10(1 + np.abs(full_seds + full_noise_bias) / 1e-20)
    qnames = [c[:-5] for c in bt.colnames if c.endswith("_Best")]
    per_q = {}
    worst_frac = 1.0
    for q in qnames:
        if q in full_grid:
            v = full_grid[q]
        elif q.startswith("symlog") and q.endswith("_wd_bias"):
            v = sl[:, filters.index(q[len("symlog") : -len("_wd_bias")])]
        else:
            v = None
        if f"{q}_Best" not in ours.columns:
            per_q[q] = "missing"
            worst_frac = 0.0
            continue
        rng = float(np.nanmax(v) - np.nanmin(v)) if v is not None else 0.0
        row = {"range": rng}
        for s in STAT_SUFFIXES:
            a = ours[f"{q}_{s}"].cast(pl.Float64).to_numpy()
            b = np.asarray(bt[f"{q}_{s}"], dtype=np.float64)
            scale = rng if rng > 0 else max(float(np.nanmax(np.abs(b))), 1e-300)
            d = np.abs(a - b) / scale
            d = np.where(np.isnan(a) & np.isnan(b), 0.0, d)
            frac = float(np.mean(d <= TOL_STATS_RANGE))
            row[s] = {"max": float(np.nanmax(d)) if np.isfinite(d).any() else float("inf"), "frac_ok": frac}
            worst_frac = min(worst_frac, frac)
        per_q[q] = row
    res["stats"] = per_q
    res["stats_worst_frac"] = worst_frac
    res["stats_max"] = max(
        (r[s]["max"] for r in per_q.values() if isinstance(r, dict) for s in STAT_SUFFIXES), default=float("inf")
    )
    other = {}
    for c in ("chi2min", "Pmax", "total_log_norm"):
        other[c] = max_rel(ours[c].to_numpy(), np.asarray(bt[c], float))["max_rel"]
    for c in ("chi2min_indx", "Pmax_indx", "specgrid_indx"):
        other[c + "_equal"] = bool(
            np.array_equal(ours[c].to_numpy().astype(np.int64), np.asarray(bt[c]).astype(np.int64))
        )
    # chi2min star by star: BEAST takes it over the sparse set S only, which
    # differs from the all-model minimum when the posterior is wide
    a, b = ours["chi2min"].to_numpy().astype(np.float64), np.asarray(bt["chi2min"], dtype=np.float64)
    rel = np.abs(a - b) / np.maximum(np.abs(b), 1e-300)
    ia = ours["chi2min_indx"].to_numpy().astype(np.int64)
    ib = np.asarray(bt["chi2min_indx"]).astype(np.int64)
    other["chi2min_stars_off"] = int((rel > TOL_CHI2).sum())
    other["chi2min_indx_stars_off"] = int((ia != ib).sum())
    other["chi2min_lower_than_beast"] = int((a < b * (1 - TOL_CHI2)).sum())
    other["chi2min_not_pmax_model"] = int((ib != np.asarray(bt["Pmax_indx"]).astype(np.int64)).sum())
    res["other"] = other

    # 1D PDFs
    p1 = read_pdf1d(f"{prefix}_pdf1d.hd5")
    pdf1: dict[str, Any] = {}
    worst1 = 0.0
    with fits.open(peer.path("pdf1d.fits")) as hb:
        for h in hb[1:]:
            q = h.name
            B, cb = h.data[:-1].astype(np.float64), h.data[-1].astype(np.float64)
            if q not in p1["pdf"]:
                pdf1[q] = "missing"
                worst1 = float("inf")
                continue
            A, ca = p1["pdf"][q], p1["centres"][q]
            if A.shape != B.shape:
                pdf1[q] = f"shape {list(A.shape)} vs {list(B.shape)}"
                worst1 = float("inf")
                continue
            peak = B.max(axis=1, keepdims=True)
            d = float((np.abs(A - B) / np.where(peak > 0, peak, 1.0)).max())
            cen = centre_shift(ca, cb)
            pdf1[q] = {"nbins": int(B.shape[1]), "max_over_peak": d, "centre_shift_over_bin": cen}
            # bins that moved by more than the tolerance make the bin-by-bin test meaningless
            worst1 = max(worst1, d, 0.0 if cen <= TOL_PDF_PEAK else float("inf"))
    res["pdf1d"] = pdf1
    res["pdf1d_max"] = worst1

    # 2D PDFs
    pdf2: dict[str, Any] = {}
    try:
        p2 = read_pdf2d(f"{prefix}_pdf2d.hd5")
        with fits.open(peer.path("pdf2d.fits")) as hb:
            for h in hb[1:]:
                q = h.name
                n = len(bt)
                B = h.data[:n].astype(np.float64)
                if q not in p2["pdf"]:
                    pdf2[q] = "missing"
                    continue
                A = p2["pdf"][q]
                if A.shape != B.shape:
                    pdf2[q] = f"shape {list(A.shape)} vs {list(B.shape)}"
                    continue
                peak = B.reshape(n, -1).max(axis=1)[:, None, None]
                pdf2[q] = {
                    "max_over_peak": float((np.abs(A - B) / np.where(peak > 0, peak, 1.0)).max()),
                    "centre_shift_a": centre_shift(p2["axes"][q]["centres_a"], h.data[n][:, 0]),
                    "centre_shift_b": centre_shift(p2["axes"][q]["centres_b"], h.data[n + 1][0, :]),
                }
    except Exception as exc:  # noqa: BLE001 - reported, not fatal
        pdf2["error"] = repr(exc)
    res["pdf2d"] = pdf2

    # lnp samples: comparable where both keep every candidate (BEAST draws 500 at random)
    try:
        L = read_lnp(f"{prefix}_lnp.hd5")
        n_cmp = n_same = 0
        dl = 0.0
        with h5py.File(peer.path("lnp.hd5"), "r") as fb:
            for e in range(len(bt)):
                g = fb[f"star_{e}"]
                bidx = np.asarray(g["idx"][...]).ravel().astype(np.int64)
                lo, hi = L["offsets"][e], L["offsets"][e + 1]
                if L["n_candidates"][e] > 500 or len(bidx) >= 500:
                    continue
                n_cmp += 1
                aidx = L["idx"][lo:hi]
                if set(aidx.tolist()) == set(bidx.tolist()):
                    n_same += 1
                    oa, ob = np.argsort(aidx), np.argsort(bidx)
                    bl = np.asarray(g["lnp"][...], dtype=np.float64).ravel()[ob]
                    # BEAST stores lnP as float32: compare relative to max(1, |lnP|)
                    dl = max(dl, float(np.max(np.abs(L["lnp"][lo:hi][oa] - bl) / np.maximum(1.0, np.abs(bl)))))
        res["lnp"] = {"stars_compared": n_cmp, "same_model_sets": n_same, "max_rel_lnp_diff": dl}
    except Exception as exc:  # noqa: BLE001
        res["lnp"] = {"error": repr(exc)}
    res["ok"] = bool(worst_frac >= MIN_STARS_FRACTION and worst1 <= TOL_PDF_PEAK and other["chi2min_stars_off"] == 0)
    return res


# ------------------------------------------------------------------ beastflow stages


def stage(name: str, results: dict[str, Any], fn, *a, **kw):
    """Run fn; a missing module / function is reported as "not available"."""
    try:
        return fn(*a, **kw)
    except Unavailable as exc:
        results[name] = {"status": NOT_AVAILABLE, "why": str(exc)}
    except ImportError as exc:
        results[name] = {"status": NOT_AVAILABLE, "why": f"{type(exc).__name__}: {exc}"}
    except Exception as exc:  # noqa: BLE001 - a failing stage is a finding, reported
        results[name] = {
            "status": "failed",
            "why": f"{type(exc).__name__}: {exc}",
            "traceback": traceback.format_exc(limit=6),
        }
    print(f"[{name}] {results[name]['status']}: {results[name]['why']}", flush=True)
    return None


def do_physics(inp: dict[str, Any], peer: Peer, R: dict[str, Any]) -> str:
    from beastflow.physics.physicsmodel import run_physicsmodel

    s = inp["settings"]
    r, cold = timed(run_physicsmodel, s, force=True)
    r, warm = timed(run_physicsmodel, s, force=True)
    url = r.sed_grids[0]
    proc = process_seconds(
        "from beastflow.settings import load_settings\n"
        "from beastflow.physics.physicsmodel import run_physicsmodel\n"
        f"run_physicsmodel(load_settings({inp['settings_file']!r}), force=True)\n"
    )
    cmp_ = compare_sed_grids(url, peer.path("seds.grid.hd5"))
    try:
        if r.spec_grid:
            cmp_["spec_grid"] = compare_spec_grids(r.spec_grid, peer.path("spec_w_priors.grid.hd5"))
    except Exception as exc:  # noqa: BLE001 - a diagnostic; the SED grid is the criterion
        cmp_["spec_grid"] = {"error": repr(exc)}
    R["physics"] = {"status": "ok", "time_cold_s": cold, "time_s": warm, "time_process_s": proc, "url": url, **cmp_}
    return url


def row_map_ours_to_beast(ours_url: str, beast_path: Path) -> np.ndarray:
    """Row of BEAST's full grid for each row of ours (matched on the model keys)."""
    from beastflow.io.sed_grid import open_sed_grid

    keys = ["specgrid_indx", "Av", "Rv", "f_A"]
    g = open_sed_grid(ours_url).read(columns=keys, seds=False)
    _, _, _, b = read_beast_grid(beast_path)
    ka = np.column_stack([g.columns[k] for k in keys])
    kb = np.column_stack([b[k] for k in keys])
    oa, ob = np.lexsort(ka.T[::-1]), np.lexsort(kb.T[::-1])
    m = np.empty(len(ka), np.int64)
    m[oa] = ob
    return m


def do_noise(inp, peer, R, beast_grid_url: str, ours_grid_url: str | None, bnoise) -> dict[str, str]:
    from beastflow.noise.toothpick import run_noisemodel

    s, out = inp["settings"], inp["out"]
    res: dict[str, Any] = {"status": "ok"}
    urls = {}
    u = str(out / "noise_on_beast_grid.hd5")
    _, cold = timed(run_noisemodel, s, beast_grid_url, inp["asts"], u)
    _, warm = timed(run_noisemodel, s, beast_grid_url, inp["asts"], u)
    res["time_cold_s"], res["time_s"] = cold, warm
    res["time_process_s"] = process_seconds(
        "from beastflow.settings import load_settings\n"
        "from beastflow.noise.toothpick import run_noisemodel\n"
        f"run_noisemodel(load_settings({inp['settings_file']!r}), {beast_grid_url!r}, {inp['asts']!r}, {u!r})\n"
    )
    res["on_beast_grid"] = compare_noise(u, bnoise)
    urls["beast_grid"] = u
    if ours_grid_url:
        u2 = str(out / "noise_on_our_grid.hd5")
        run_noisemodel(s, ours_grid_url, inp["asts"], u2)
        m = row_map_ours_to_beast(ours_grid_url, peer.path("seds.grid.hd5"))
        inv = np.empty_like(m)
        inv[m] = np.arange(len(m))
        res["chain"] = compare_noise(u2, bnoise, row_map=inv)
        urls["our_grid"] = u2
    res["ok"] = bool(res["on_beast_grid"]["ok"] and res.get("chain", {"ok": True})["ok"])
    R["noise"] = res
    return urls


def do_trim(inp, peer, R, beast_grid_url, beast_noise_url, ours_grid_url, ours_noise_url) -> dict[str, tuple]:
    from beastflow.noise.trim import TrimJob, run_trim

    s, out = inp["settings"], inp["out"]
    res: dict[str, Any] = {"status": "ok"}
    ga, na = str(out / "trimB_seds.grid.hd5"), str(out / "trimB_noise.grid.hd5")
    job = [TrimJob(inp["catalog"], ga, na)]
    _, cold = timed(run_trim, s, beast_grid_url, beast_noise_url, job)
    _, warm = timed(run_trim, s, beast_grid_url, beast_noise_url, job)
    res["time_cold_s"], res["time_s"] = cold, warm
    res["time_process_s"] = process_seconds(
        "from beastflow.settings import load_settings\n"
        "from beastflow.noise.trim import TrimJob, run_trim\n"
        f"run_trim(load_settings({inp['settings_file']!r}), {beast_grid_url!r}, {beast_noise_url!r}, "
        f"[TrimJob({inp['catalog']!r}, {ga!r}, {na!r})])\n"
    )
    res["on_beast_inputs"] = compare_trim(ga, peer.path("seds_trim.grid.hd5"))
    urls = {"beast": (ga, na)}
    if ours_grid_url and ours_noise_url:
        gc, nc = str(out / "trim_chain_seds.grid.hd5"), str(out / "trim_chain_noise.grid.hd5")
        run_trim(s, ours_grid_url, ours_noise_url, [TrimJob(inp["catalog"], gc, nc)])
        m = row_map_ours_to_beast(ours_grid_url, peer.path("seds.grid.hd5"))
        res["chain"] = compare_trim(gc, peer.path("seds_trim.grid.hd5"), row_map=m)
        urls["chain"] = (gc, nc)
    res["ok"] = bool(res["on_beast_inputs"]["ok"] and res.get("chain", {"ok": True})["ok"])
    R["trim"] = res
    return urls


def kernel_seconds(s, grid_url: str, noise_url: str, catalog: str, repeat: int = 5) -> float:
    """Best-of-N time of the likelihood + statistics kernel alone (fit_arrays), all stars."""
    from beastflow.fit import fitting as F
    from beastflow.fit.pdfs import binset_from_trimmed
    from beastflow.io.noise_model import open_noise_model
    from beastflow.io.sed_grid import open_sed_grid
    from beastflow.physics.vega import vega_band_fluxes

    grid, noise = open_sed_grid(grid_url), open_noise_model(noise_url)
    f = s.fit
    opts = F._resolve_options(s, grid, None)
    bs = binset_from_trimmed(grid, noise, f.pdf_max_nbins, f.pdf2d_pairs, f.chunk_models)
    cat = F.read_catalog(catalog)
    Y = F.observed_fluxes(cat, list(grid.filters), vega_band_fluxes(list(grid.filters), compat=s.beast_compat), catalog)
    ids = np.arange(len(cat))
    best = float("inf")
    for _ in range(repeat):
        _, t = timed(F.fit_arrays, grid, noise, Y, ids, bs, opts, 0, f.chunk_models, f.star_block)
        best = min(best, t)
    return best


def do_fit(inp, peer, R, trims: dict[str, tuple], full: dict[str, Any]) -> None:
    from beastflow.fit.fitting import run_fit

    s, out = inp["settings"], inp["out"]
    res: dict[str, Any] = {"status": "ok"}
    # BEAST's own trimmed grid and noise model, converted: the fit stage alone
    filters = peer.setting("filters")
    gb = to_bf_grid(peer.path("seds_trim.grid.hd5"), out / "beast_trim_seds.grid.hd5")
    nb = to_bf_noise(peer.path("noisemodel_trim.grid.hd5"), filters, out / "beast_trim_noise.grid.hd5")
    pre = str(out / "fit_on_beast_trim")
    _, cold = timed(run_fit, s, gb, nb, inp["catalog"], None, pre)
    times = [timed(run_fit, s, gb, nb, inp["catalog"], None, pre)[1] for _ in range(3)]
    res["time_cold_s"], res["time_s"] = cold, min(times)
    try:  # uses fitting.py internals: a change there must not hide the rest of the comparison
        res["kernel_s"] = kernel_seconds(s, gb, nb, inp["catalog"])
    except Exception as exc:  # noqa: BLE001
        res["kernel_s"] = None
        res["kernel_error"] = repr(exc)
    res["time_process_s"] = process_seconds(
        "from beastflow.settings import load_settings\n"
        "from beastflow.fit.fitting import run_fit\n"
        f"run_fit(load_settings({inp['settings_file']!r}), {gb!r}, {nb!r}, {inp['catalog']!r}, None, {pre!r})\n"
    )
    res["on_beast_trim"] = compare_fit(pre, peer, full["cols"], full["bias"], full["seds"])
    # per-star cost at a production sub-file size: the same stars repeated
    try:
        import polars as pl

        cat = pl.read_parquet(inp["catalog"])
        k = max(1, -(-REPEAT_ROWS // max(1, cat.height)))
        rep_cat = out / "obs_repeated.parquet"
        pl.concat([cat] * k).write_parquet(rep_cat)
        pre_r = str(out / "fit_repeated")
        t_r = min(timed(run_fit, s, gb, nb, str(rep_cat), None, pre_r)[1] for _ in range(2))
        res["repeated"] = {"n_stars": cat.height * k, "time_s": t_r}
    except Exception as exc:  # noqa: BLE001
        res["repeated"] = {"error": repr(exc)}
    # diagnostic: the same with BEAST's Vega band fluxes (vega.hd5 /sed LUM), to
    # show how much of what is left comes from the Vega fluxes alone
    try:
        vega = beast_vega(peer, filters)
        if vega is not None:
            pre_v = str(out / "fit_on_beast_trim_beastvega")
            run_fit(s, gb, nb, inp["catalog"], None, pre_v, vega_fluxes=vega)
            res["on_beast_trim_beast_vega"] = compare_fit(pre_v, peer, full["cols"], full["bias"], full["seds"])
    except Exception as exc:  # noqa: BLE001
        res["on_beast_trim_beast_vega"] = {"error": repr(exc)}
    if "chain" in trims:
        gc, nc = trims["chain"]
        pre_c = str(out / "fit_chain")
        run_fit(s, gc, nc, inp["catalog"], None, pre_c)
        res["chain"] = compare_fit(pre_c, peer, full["cols"], full["bias"], full["seds"])
    # the trimmed-grid rows are BEAST's own there, so the chi2min model must be the same row
    res["ok"] = bool(
        res["on_beast_trim"]["ok"]
        and res["on_beast_trim"].get("other", {}).get("chi2min_indx_stars_off", 1) == 0
        and res.get("chain", {"ok": True})["ok"]
    )
    R["fit"] = res


def beast_vega(peer: Peer, filters: list[str]) -> np.ndarray | None:
    p = Path(peer.config.get("stellib", "")).parent / "vega.hd5"
    if not p.exists():
        return None
    with h5py.File(p, "r") as f:
        sed = f["sed"][...]
    names = [x.decode() if isinstance(x, bytes) else str(x) for x in sed["FNAME"]]
    return np.array([sed["LUM"][names.index(n)] for n in filters], dtype=np.float64)


# ------------------------------------------------------------------ effects of default mode


EFFECT_QUANTITIES = ["Av", "Rv", "f_A", "logA", "M_ini", "logT", "logL", "Z"]


def splinter_noise(grid_url: str, out_url: str, frac: float = 0.1) -> str:
    """BEAST's AST-free "splinter" model: error = frac x flux, no bias, completeness 1."""
    from beastflow.noise.splinter import write_splinter_noise_model

    return write_splinter_noise_model(grid_url, out_url, frac)


def run_chain(inp: dict[str, Any], phys_settings, tag: str, noise: str = "toothpick") -> dict[str, Any]:
    """Physics with ``phys_settings``, then noise / trim / fit with inp's settings."""
    from beastflow.fit.fitting import run_fit
    from beastflow.fit.grid_info import run_grid_info
    from beastflow.noise.toothpick import run_noisemodel
    from beastflow.noise.trim import TrimJob, run_trim
    from beastflow.physics.physicsmodel import run_physicsmodel

    s, out = inp["settings"], inp["out"]
    out.mkdir(parents=True, exist_ok=True)
    g = run_physicsmodel(phys_settings, force=True).sed_grids[0]
    n = str(out / f"{tag}_noise.hd5")
    if noise == "splinter":
        splinter_noise(g, n)
    else:
        run_noisemodel(s, g, inp["asts"], n)
    gt, nt = str(out / f"{tag}_trim_seds.hd5"), str(out / f"{tag}_trim_noise.hd5")
    tr = run_trim(s, g, n, [TrimJob(inp["catalog"], gt, nt)])
    info = None if s.beast_compat else run_grid_info(s, [g], str(out / f"{tag}_grid_info.json")).grid_info
    pre = str(out / f"{tag}_fit")
    run_fit(s, gt, nt, inp["catalog"], info, pre)
    return {"grid": g, "n_trim": tr[0].n_kept, "stats": f"{pre}_stats.parquet", "trim": (gt, nt), "info": info}


def fit_variant(
    inp: dict[str, Any], chain: dict[str, Any], tag: str, fit_changes: dict[str, Any], use_info: bool = True
) -> str:
    """Default-mode fit of ``chain``'s trimmed grid with some [fit] keys changed: isolates one difference."""
    import tomllib

    from beastflow.fit.fitting import run_fit
    from beastflow.settings import settings_from_dict

    sfile = Path(inp["settings_file"])
    data = tomllib.loads(sfile.read_text())
    data.setdefault("fit", {}).update(fit_changes)
    s = settings_from_dict(data, where=str(sfile), base_dir=str(sfile.parent))
    pre = str(inp["out"] / f"{tag}_fit")
    run_fit(s, *chain["trim"], inp["catalog"], chain["info"] if use_info else None, pre)
    return f"{pre}_stats.parquet"


def effect_table(ref_stats: str, other_stats: str) -> dict[str, Any]:
    import polars as pl

    a, b = pl.read_parquet(ref_stats), pl.read_parquet(other_stats)
    out = {}
    for q in EFFECT_QUANTITIES:
        row = {}
        for s in ("p50", "Exp", "Best"):
            c = f"{q}_{s}"
            if c not in a.columns or c not in b.columns:
                continue
            x, y = a[c].to_numpy().astype(float), b[c].to_numpy().astype(float)
            if q == "M_ini":  # a mass shift is a factor: measured in dex
                x, y = np.log10(x), np.log10(y)
            d = y - x
            row[s] = {
                "median": float(np.nanmedian(d)),
                "median_abs": float(np.nanmedian(np.abs(d))),
                "p90_abs": float(np.nanpercentile(np.abs(d), 90)),
            }
        out[q] = row
    return out


def do_effects(peer: Peer, workdir: Path, R: dict[str, Any], noise: str = "toothpick") -> None:
    """Default mode vs compat on the same inputs: which difference moves which parameter.

    ``noise = "splinter"`` replaces the toothpick model by BEAST's AST-free 10 % model in
    both modes (phat_small's 175 ASTs give a toothpick model under which almost every
    posterior collapses onto one model, so shifts come in whole grid steps)."""
    inp_c = write_inputs(peer, workdir / "beastflow", "beast-2.1", "bf_compat")
    inp_d = write_inputs(peer, workdir / "beastflow_default", "none", "bf_default")
    # the default fit keeps lnp/PDF settings as in compat so that only the modes differ
    A = run_chain(inp_c, inp_c["settings"], "A_compat", noise)
    B = run_chain(inp_c, inp_d["settings"], "B_defaultphys", noise)
    C = run_chain(inp_d, inp_d["settings"], "C_default", noise)
    # fit-stage differences one at a time (each default-mode [fit] key set to BEAST's behaviour)
    variants = {
        "fit: completeness term (default 'min' vs BEAST none)": fit_variant(
            inp_d, C, "C_nocompl", {"completeness": "none"}
        ),
        "fit: statistics over all models (vs BEAST lnP > max - 10)": fit_variant(
            inp_d, C, "C_thr10", {"stats_threshold": -10.0}
        ),
        "fit: PDF bins of the full grid (vs BEAST trimmed grid)": fit_variant(
            inp_d, C, "C_trimbins", {}, use_info=False
        ),
    }
    sed = {}
    try:
        from beastflow.io.sed_grid import open_sed_grid

        ga, gd = open_sed_grid(A["grid"]).read(), open_sed_grid(B["grid"]).read()
        if ga.seds.shape == gd.seds.shape:
            keys = ["specgrid_indx", "Av", "Rv", "f_A"]
            ka = np.column_stack([ga.columns[k] for k in keys])
            kd = np.column_stack([gd.columns[k] for k in keys])
            oa, od = np.lexsort(ka.T[::-1]), np.lexsort(kd.T[::-1])
            if np.allclose(ka[oa], kd[od]):
                dmag = -2.5 * np.log10(gd.seds[od] / ga.seds[oa])
                av = ga.columns["Av"][oa]
                sel = av > 0
                sed = {
                    "median_dmag_per_band": dict(zip(ga_filters(A["grid"]), np.median(dmag[sel], axis=0).tolist())),
                    "median_dmag_per_AV": dict(
                        zip(ga_filters(A["grid"]), np.median(dmag[sel] / av[sel, None], axis=0).tolist())
                    ),
                }
    except Exception as exc:  # noqa: BLE001
        sed = {"error": repr(exc)}
    R.setdefault("effects", {})[noise] = {
        "n_trim": {"compat": A["n_trim"], "default_physics": B["n_trim"], "default": C["n_trim"]},
        "physics_model_only": effect_table(A["stats"], B["stats"]),
        "noise_trim_fit_only": effect_table(B["stats"], C["stats"]),
        "all": effect_table(A["stats"], C["stats"]),
        "fit_variants": {k: effect_table(v, C["stats"]) for k, v in variants.items()},
        "sed_grid_default_minus_compat": sed,
    }


def ga_filters(url: str) -> list[str]:
    from beastflow.io.sed_grid import open_sed_grid

    return list(open_sed_grid(url).filters)


# ------------------------------------------------------------------ report


def report(R: dict[str, Any], peer: Peer) -> bool:
    n_stars = peer.stages.get("fit", {}).get("info", {}).get("n_stars", peer.config.get("nstars_used"))
    rows = []
    ok_all = True

    def status(name):
        r = R.get(name)
        if r is None:
            return NOT_AVAILABLE
        return r.get("status", "ok")

    # agreement
    ph = R.get("physics", {})
    if status("physics") == "ok":
        rows.append(["physics model", "SED fluxes, max rel diff", ph["seds"]["max_rel"], f"<= {TOL_SED:g}", ph["ok"]])
        worst_col = max(((c, v) for c, v in ph["columns"].items() if not isinstance(v, str)), key=lambda cv: cv[1])
        rows.append(["", f"grid columns, worst: {worst_col[0]}", worst_col[1], "", ""])
        rows.append(
            ["", "same models, same row order", f"{fmt(ph['keys_equal'])}, {fmt(ph['same_row_order'])}", "", ""]
        )
        sg = ph.get("spec_grid", {})
        if "spectra_after_factor" in sg:
            rows.append(
                [
                    "",
                    "spectral grid w/ priors: spectra rel (after BEAST's unit factor), lamb rel",
                    f"{fmt(sg['spectra_after_factor'])}, {fmt(sg['lamb'])}",
                    "",
                    "",
                ]
            )
        ok_all &= ph["ok"]
    else:
        rows.append(["physics model", ph.get("why", NOT_AVAILABLE), "", "", "NO"])
        ok_all = False
    no = R.get("noise", {})
    if status("noise") == "ok":
        for lab, key in (("on BEAST's grid", "on_beast_grid"), ("chain (our grid)", "chain")):
            if key not in no:
                continue
            r = no[key]
            rows.append(
                [
                    "noise model" if key == "on_beast_grid" else "",
                    f"{lab}: error / completeness rel",
                    f"{fmt(r['error']['max_rel'])} / {fmt(r['completeness']['max_rel'])}",
                    f"<= {TOL_NOISE:g}",
                    r["ok"],
                ]
            )
            rows.append(
                [
                    "",
                    f"{lab}: bias, |d|/max(|bias|,err) (rel {fmt(r['bias']['max_rel'])})",
                    r["bias_vs_max_bias_error"],
                    f"<= {TOL_NOISE:g}",
                    r["bias_vs_max_bias_error"] <= TOL_NOISE,
                ]
            )
        ok_all &= no["ok"]
    else:
        rows.append(["noise model", no.get("why", NOT_AVAILABLE), "", "", "NO"])
        ok_all = False
    tr = R.get("trim", {})
    if status("trim") == "ok":
        for lab, key in (("on BEAST's grid+noise", "on_beast_inputs"), ("chain", "chain")):
            if key not in tr:
                continue
            r = tr[key]
            rows.append(
                [
                    "trim" if key == "on_beast_inputs" else "",
                    f"{lab}: models ours/BEAST, only-ours/only-BEAST",
                    f"{r['n_models'][0]}/{r['n_models'][1]}, {r['only_ours']}/{r['only_beast']}",
                    "same set",
                    r["ok"],
                ]
            )
        ok_all &= tr["ok"]
    else:
        rows.append(["trim", tr.get("why", NOT_AVAILABLE), "", "", "NO"])
        ok_all = False
    fi = R.get("fit", {})
    if status("fit") == "ok":
        for lab, key in (
            ("on BEAST's trimmed grid", "on_beast_trim"),
            ("chain", "chain"),
            ("BEAST trim + BEAST Vega", "on_beast_trim_beast_vega"),
        ):
            r = fi.get(key)
            if not r or "stats" not in r:
                continue
            first = "fit" if key == "on_beast_trim" else ""
            crit = key != "on_beast_trim_beast_vega"  # the Vega run is a diagnostic
            rows.append(
                [
                    first,
                    f"{lab}: stats, stars within 1% of range (worst q)",
                    r["stats_worst_frac"],
                    f">= {MIN_STARS_FRACTION:g}" if crit else "",
                    r["stats_worst_frac"] >= MIN_STARS_FRACTION if crit else "",
                ]
            )
            rows.append(["", f"{lab}: stats, max |d|/range", r["stats_max"], "", ""])
            rows.append(
                [
                    "",
                    f"{lab}: 1D PDF max |d|/peak",
                    r["pdf1d_max"],
                    f"<= {TOL_PDF_PEAK:g}" if crit else "",
                    r["pdf1d_max"] <= TOL_PDF_PEAK if crit else "",
                ]
            )
            p2 = [v["max_over_peak"] for v in r["pdf2d"].values() if isinstance(v, dict)]
            rows.append(["", f"{lab}: 2D PDF max |d|/peak", max(p2) if p2 else "-", "", ""])
            o = r["other"]
            if "chi2min_stars_off" in o:
                rows.append(
                    [
                        "",
                        f"{lab}: stars with chi2min off by > {TOL_CHI2:g} rel / chi2min_indx differing "
                        f"(chi2min model != Pmax model for {o['chi2min_not_pmax_model']})",
                        f"{o['chi2min_stars_off']} / {o['chi2min_indx_stars_off']}",
                        "0 / 0" if key == "on_beast_trim" else ("0 / -" if crit else ""),
                        (o["chi2min_stars_off"] == 0 and (key != "on_beast_trim" or o["chi2min_indx_stars_off"] == 0))
                        if crit
                        else "",
                    ]
                )
            rows.append(
                [
                    "",
                    f"{lab}: chi2min / Pmax rel; indices equal",
                    f"{fmt(o['chi2min'])} / {fmt(o['Pmax'])}; "
                    f"{fmt(o['chi2min_indx_equal'] and o['Pmax_indx_equal'] and o['specgrid_indx_equal'])}",
                    "",
                    "",
                ]
            )
            lp = r.get("lnp", {})
            if "stars_compared" in lp:
                same = f"{lp['same_model_sets']}/{lp['stars_compared']} same"
                rows.append(
                    [
                        "",
                        f"{lab}: lnp samples (stars with <500 candidates)",
                        f"{same}, lnP rel {fmt(lp['max_rel_lnp_diff'])}",
                        "",
                        "",
                    ]
                )
        ok_all &= fi["ok"]
    else:
        rows.append(["fit", fi.get("why", NOT_AVAILABLE), "", "", "NO"])
        ok_all = False
    print_table(
        f'Agreement, beastflow compat = "beast-2.1" vs BEAST 2.1.0 ({peer.config.get("grid")} grid, {n_stars} stars)',
        ["stage", "measure", "value", "criterion", "pass"],
        rows,
    )

    # timing
    trow = []
    pairs = [
        ("physics model (iso+spec+priors+seds)", ("iso", "spec", "priors", "seds"), "physics"),
        ("noise model", ("noise",), "noise"),
        ("trim", ("trim",), "trim"),
        ("fit", ("fit",), "fit"),
    ]

    def f3(x):
        return fmt(x, ".3f") if isinstance(x, (int, float)) and not isinstance(x, bool) else (x or "-")

    for lab, bst, ours in pairs:
        b = peer.wall(*bst)
        r = R.get(ours, {})
        if r.get("status") != "ok":
            trow.append([lab, f3(b), NOT_AVAILABLE, "-", "-", "-", "-"])
            continue
        o = r.get("time_process_s")
        c = r.get("time_cold_s")
        trow.append(
            [
                lab,
                f3(b),
                f3(o),
                fmt(b / o, ".1f") if (b and o) else "-",
                f3(c),
                fmt(b / c, ".1f") if (b and c) else "-",
                f3(r.get("time_s")),
            ]
        )
    print_table(
        "Wall time per stage, one core.  process: a fresh process running the stage, start-up and "
        "imports included (as BEAST's stages are timed); in-process: the stage function alone, first "
        "call (cold: numba cache load, file reads) and best later call (warm)",
        [
            "stage",
            "BEAST process s",
            "beastflow process s",
            "ratio",
            "beastflow in-process cold s",
            "ratio (BEAST process / cold)",
            "in-process warm s",
        ],
        trow,
    )
    finfo = peer.stages.get("fit", {}).get("info", {})
    speed = {}
    if status("fit") == "ok" and finfo.get("fit_loop_s") and n_stars:
        loops = [finfo["fit_loop_s"]] + list(R.get("beast_fit_loop_reruns_s", []))
        b_ps = min(loops) / n_stars
        c_ps = fi["time_cold_s"] / n_stars
        o_ps = fi["time_s"] / n_stars
        k_ps = (fi["kernel_s"] or float("nan")) / n_stars
        speed = {
            "beast_s_per_star": b_ps,
            "ours_run_fit_first_s_per_star": c_ps,
            "ours_run_fit_s_per_star": o_ps,
            "ours_kernel_s_per_star": k_ps,
            "ratio_run_fit_first": b_ps / c_ps,
            "ratio_run_fit": b_ps / o_ps,
            "ratio_kernel": b_ps / k_ps,
            "n_models": finfo.get("n_models"),
            "n_stars": n_stars,
        }
        speed["beast_fit_loop_s_all"] = loops
        print_table(
            f"Fit, same trimmed grid ({finfo.get('n_models')} models) and {n_stars} stars, one core each "
            f"(BEAST: best of {len(loops)} runs of its fit stage)",
            ["", "s per star", "BEAST / beastflow", f"goal >= {SPEED_GOAL:g}x"],
            [
                ["BEAST fit.summary_table_memory (bins, star loop, outputs; grid loaded)", fmt(b_ps, ".2e"), "1", ""],
                [
                    "beastflow run_fit, first call (load, bins, kernel, all outputs)",
                    fmt(c_ps, ".2e"),
                    fmt(b_ps / c_ps, ".1f"),
                    fmt(b_ps / c_ps >= SPEED_GOAL),
                ],
                [
                    "beastflow run_fit, later calls (best of 3)",
                    fmt(o_ps, ".2e"),
                    fmt(b_ps / o_ps, ".1f"),
                    fmt(b_ps / o_ps >= SPEED_GOAL),
                ],
                [
                    "beastflow fit_arrays (likelihood + stats + PDF kernel, best of 5)",
                    fmt(k_ps, ".2e"),
                    fmt(b_ps / k_ps, ".1f"),
                    fmt(b_ps / k_ps >= SPEED_GOAL),
                ],
            ]
            + (
                [
                    [
                        f"beastflow run_fit, same stars repeated to {fi['repeated']['n_stars']} rows (sub-file size)",
                        fmt(fi["repeated"]["time_s"] / fi["repeated"]["n_stars"], ".2e"),
                        fmt(b_ps * fi["repeated"]["n_stars"] / fi["repeated"]["time_s"], ".1f"),
                        fmt(b_ps * fi["repeated"]["n_stars"] / fi["repeated"]["time_s"] >= SPEED_GOAL),
                    ]
                ]
                if "time_s" in fi.get("repeated", {})
                else []
            ),
        )
        if "time_s" in fi.get("repeated", {}):
            speed["ours_run_fit_repeated_s_per_star"] = fi["repeated"]["time_s"] / fi["repeated"]["n_stars"]
            speed["ratio_run_fit_repeated"] = b_ps / speed["ours_run_fit_repeated_s_per_star"]
    R["speed"] = speed

    for noise_kind, eff in R.get("effects", {}).items():
        rows = []
        parts = [(p_, eff[p_]) for p_ in ("physics_model_only", "noise_trim_fit_only", "all")]
        parts += list(eff.get("fit_variants", {}).items())
        for part, tab in parts:
            for q, v in tab.items():
                if "p50" in v:
                    rows.append(
                        [
                            part,
                            q + (" (dex)" if q == "M_ini" else ""),
                            v["p50"]["median"],
                            v["p50"]["median_abs"],
                            v["p50"]["p90_abs"],
                            v.get("Exp", {}).get("median", "-"),
                        ]
                    )
        if "n_trim" not in eff:
            continue
        print_table(
            f"Measured effect of the default mode, {noise_kind} noise model (default minus compat, p50 "
            f"unless noted; trimmed models compat/default-physics/default = {eff['n_trim']})",
            ["differences", "quantity", "median shift", "median |shift|", "90% |shift|", "Exp median shift"],
            [
                [a, b, fmt(c, ".3g"), fmt(d, ".3g"), fmt(e, ".3g"), fmt(f, ".3g") if not isinstance(f, str) else f]
                for a, b, c, d, e, f in rows
            ],
        )
        sd = eff.get("sed_grid_default_minus_compat", {})
        if "median_dmag_per_AV" in sd:
            print(
                "\nSED grid, default minus compat, median delta mag per mag of A(V): "
                + ", ".join(f"{k.split('_')[-1]} {v:+.3f}" for k, v in sd["median_dmag_per_AV"].items())
            )
    print("\nresult:", "ALL AGREEMENT CRITERIA MET" if ok_all else "SOME AGREEMENT CRITERIA NOT MET")
    return ok_all


# ------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--nstars", type=int, default=20, help="stars fitted (0 = all 269); default 20")
    p.add_argument("--grid", default="small", choices=["small", "large"])
    p.add_argument(
        "--workdir", type=Path, default=None, help="where both runs go (default: $TMPDIR/beastflow-compare/GRID_N)"
    )
    p.add_argument(
        "--peer-home",
        type=Path,
        default=Path(os.environ.get("PEER_HOME", os.path.join(os.environ.get("TMPDIR", "/tmp"), "peer-beast"))),
    )
    p.add_argument(
        "--peer-run",
        type=Path,
        default=None,
        help="use this existing peer run folder (with peer_report.json) instead of running BEAST",
    )
    p.add_argument("--no-setup", action="store_true", help="do not call the peer's setup.sh")
    p.add_argument(
        "--retime-beast-fit",
        type=int,
        default=None,
        help="re-run BEAST's fit stage this many times for its timing (default 2, or 0 with "
        "--peer-run: that folder is not rewritten unless asked)",
    )
    p.add_argument(
        "--noise",
        default="toothpick",
        choices=["toothpick", "splinter"],
        help="noise model of both codes: toothpick from the ASTs, or the AST-free splinter "
        "model (10%% errors; wide posteriors, the case the chi2min check needs)",
    )
    p.add_argument("--effects", action="store_true", help="also measure the effect of the default mode")
    p.add_argument(
        "--effects-noise",
        default="both",
        choices=["toothpick", "splinter", "both"],
        help="noise model of the --effects runs (splinter: BEAST's AST-free 10%% model)",
    )
    p.add_argument(
        "--check",
        action="store_true",
        default=True,
        help="exit 1 if an agreement criterion fails (the default; make compare-beast relies on it)",
    )
    p.add_argument("--no-check", dest="check", action="store_false", help="always exit 0 after the report")
    p.add_argument("--json", type=Path, default=None, help="results file (default WORKDIR/compare_beast.json)")
    p.add_argument("--speed-only", action="store_true", help="only the speed ratios (bench/compare_speed.py)")
    p.add_argument("--speed-repeat", type=int, default=3, help="interleaved runs per code for the speed ratios")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    for noisy in ("numba",):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    args.peer_home = args.peer_home.resolve()
    workdir = (
        args.workdir
        or Path(os.environ.get("TMPDIR", "/tmp"))
        / "beastflow-compare"
        / f"{args.grid}_{args.nstars}{'_splinter' if args.noise == 'splinter' else ''}"
    ).resolve()
    workdir.mkdir(parents=True, exist_ok=True)

    if args.peer_run:
        peer_run = args.peer_run.resolve()
    else:
        peer_run = workdir / "peer"
        run_peer(args, peer_run)
    peer = Peer(peer_run)
    print(
        f"[peer] {peer_run}: {peer.stages.get('seds', {}).get('info', {}).get('n_models')} models, "
        f"{peer.config.get('nstars_used')} stars",
        flush=True,
    )

    R: dict[str, Any] = {
        "peer_run": str(peer_run),
        "workdir": str(workdir),
        "peer_config": peer.config,
        "peer_stages": peer.stages,
    }
    import shutil

    bfdir = workdir / "beastflow"
    if bfdir.exists():
        shutil.rmtree(bfdir)
    inp = stage("inputs", R, write_inputs, peer, bfdir, "beast-2.1", "bf_compat", args.noise)
    if inp is None:
        print_and_dump(R, args, workdir)
        return 1
    inp["out"].mkdir(parents=True, exist_ok=True)
    print(f"[beastflow] settings {inp['settings_file']}", flush=True)
    if args.speed_only:
        speed_vs_beast(args, peer, inp, R)
        print_and_dump(R, args, workdir)
        return 0 if R["speed_vs_beast"]["status"] == "ok" else 1

    # full BEAST grid / noise, converted once (stage-alone comparisons use them)
    filters = peer.setting("filters")
    beast_grid_url = stage("convert", R, to_bf_grid, peer.path("seds.grid.hd5"), inp["out"] / "beast_seds.grid.hd5")
    bnoise = read_beast_noise(peer.path("noisemodel.grid.hd5"))
    beast_noise_url = stage(
        "convert", R, to_bf_noise, peer.path("noisemodel.grid.hd5"), filters, inp["out"] / "beast_noise.grid.hd5"
    )
    _, _, bseds, bcols = read_beast_grid(peer.path("seds.grid.hd5"))
    full = {"cols": bcols, "seds": bseds, "bias": bnoise["bias"]}

    print("[beastflow] physics model", flush=True)
    ours_grid = stage("physics", R, do_physics, inp, peer, R)
    print("[beastflow] noise model", flush=True)
    nurls = stage("noise", R, do_noise, inp, peer, R, beast_grid_url, ours_grid, bnoise) or {}
    print("[beastflow] trim", flush=True)
    trims = (
        stage("trim", R, do_trim, inp, peer, R, beast_grid_url, beast_noise_url, ours_grid, nurls.get("our_grid")) or {}
    )
    print("[beastflow] fit", flush=True)
    if trims:
        stage("fit", R, do_fit, inp, peer, R, trims, full)
    else:
        stage("fit", R, do_fit, inp, peer, R, {}, full)
    if args.effects:
        print("[beastflow] default mode (effects)", flush=True)
        kinds = ["toothpick", "splinter"] if args.effects_noise == "both" else [args.effects_noise]
        for kind in kinds:
            stage(f"effects_{kind}", R, do_effects, peer, workdir / f"effects_{kind}", R, kind)

    n_retime = args.retime_beast_fit if args.retime_beast_fit is not None else (0 if args.peer_run else 2)
    if n_retime > 0 and R.get("fit", {}).get("status") == "ok":
        print(f"[peer] BEAST fit stage again x{n_retime} (timing)", flush=True)
        R["beast_fit_loop_reruns_s"] = retime_beast_fit(args, peer, n_retime)
    ok = report(R, peer)
    speed_vs_beast(args, peer, inp, R)
    R["ok"] = ok
    print_and_dump(R, args, workdir)
    return 0 if (ok or not args.check) else 1


def speed_vs_beast(args, peer: Peer, inp: dict[str, Any], R: dict[str, Any]) -> None:
    """SED build and fit speed ratios against BEAST (bench/compare_speed.py), into R["speed_vs_beast"]."""
    import compare_speed

    print("[speed] BEAST and beastflow, interleaved, CPU time", flush=True)
    gb = to_bf_grid(peer.path("seds_trim.grid.hd5"), inp["out"] / "speed_beast_trim_seds.grid.hd5")
    nb = to_bf_noise(
        peer.path("noisemodel_trim.grid.hd5"), peer.setting("filters"), inp["out"] / "speed_beast_trim_noise.grid.hd5"
    )
    args_ = (inp["settings"], args.peer_home, PEER_DIR, peer.run, gb, nb, inp["catalog"], inp["out"] / "speed")
    res = stage("speed_vs_beast", R, compare_speed.measure, *args_, repeat=args.speed_repeat)
    if res is not None:
        compare_speed.report(res)
        R["speed_vs_beast"] = {"status": "ok", **res}


def print_and_dump(R: dict[str, Any], args, workdir: Path) -> None:
    out = args.json or workdir / "compare_beast.json"

    def default(o):
        if isinstance(o, (np.integer,)):
            return int(o)
        if isinstance(o, (np.floating,)):
            return float(o)
        if isinstance(o, np.ndarray):
            return o.tolist()
        if isinstance(o, Path):
            return str(o)
        return repr(o)

    R = {k: v for k, v in R.items() if k != "settings"}
    out.write_text(json.dumps(R, indent=1, default=default))
    print(f"\nresults: {out}")


if __name__ == "__main__":
    sys.exit(main())
