"""Measured effect of ``compat = "beast-2.1"`` on the embedded demo field.

    .venv/bin/python bench/compat_effect_demo.py [--nstars 1000] [--seed 1] [--size default]
                                                 [--workdir DIR] [--force]

1. Prepares the demo field once (``beastflow.demo.prepare_demo``) in
   ``WORKDIR/field``: one catalogue, one truth table, one seed for both modes.
2. Runs the whole pipeline (``beastflow.flows.pipeline.pipeline_flow``) twice on it,
   default mode (``compat = "none"``) in ``WORKDIR/default`` and BEAST 2.1 mode
   (``compat = "beast-2.1"``) in ``WORKDIR/compat``; the settings differ only in
   ``compat`` and ``project.output``.  Each mode therefore builds its own SED
   grid, AST inputs (the demo instrument "observes" them), noise model, trim
   and fit, so the wall time of a mode is the whole pipeline.
3. Prints, per fitted quantity (A(V), log age, log M_ini, log T_eff, log L,
   R(V), f_A, distance where the stats have them): the median over the stars
   fitted in both modes of the shift of p50 (compat - default) and its 90th
   percentile of |shift|; per mode the median of (fit - truth) / sigma and the
   fraction of truths inside p16-p84 (sigma as in the report's recovery:
   the p16-p50 or p50-p84 half-width on the side of the truth); the number of
   stars fitted; wall time per mode and seconds per stage.

Everything printed is also written to ``WORKDIR/compat_effect_demo.json``.  A
mode that fails is reported (stage, exception, message) and the table is
printed for the mode that ran.
"""

from __future__ import annotations

import os

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from beastflow import run_records  # noqa: E402

#: (label, stats/truth column, take log10 of the values)
QUANTITIES = [
    ("A(V) [mag]", "Av", False),
    ("log age", "logA", False),
    ("log M_ini", "M_ini", True),
    ("log T_eff", "logT", False),
    ("log L", "logL", False),
    ("R(V)", "Rv", False),
    ("f_A", "f_A", False),
    ("distance", "distance", False),
]
MODES = {"default": "none", "compat": "beast-2.1"}


def read_table(url: str) -> dict[str, np.ndarray]:
    tab = pq.read_table(url)
    return {c: tab.column(c).to_numpy() for c in tab.column_names}


def by_star(table: dict[str, np.ndarray]) -> dict[int, int]:
    """star_id -> row."""
    return {int(s): i for i, s in enumerate(np.asarray(table["star_id"]).astype(np.int64))}


def values(table: dict[str, np.ndarray], name: str, rows: np.ndarray, log10: bool) -> np.ndarray:
    v = np.asarray(table[name], float)[rows]
    if log10:
        with np.errstate(divide="ignore", invalid="ignore"):
            v = np.where(v > 0, np.log10(np.where(v > 0, v, 1.0)), np.nan)
    return v


def recovery(p16: np.ndarray, p50: np.ndarray, p84: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Median (fit - truth) / sigma and coverage of p16-p84 (sigma on the truth's side).

    A zero-width side (posterior piled on one grid value) falls back to half
    the p16-p84 width; stars with zero width on both sides are left out of
    the median (as in the report's recovery section).
    """
    ok = np.isfinite(p16) & np.isfinite(p50) & np.isfinite(p84) & np.isfinite(truth)
    p16, p50, p84, t = p16[ok], p50[ok], p84[ok], truth[ok]
    if not len(t):
        return {"n": 0, "median_z": float("nan"), "coverage": float("nan")}
    side = np.where(p50 < t, p84 - p50, p50 - p16)
    side = np.where(side > 0, side, 0.5 * (p84 - p16))
    z = (p50 - t)[side > 0] / side[side > 0]
    return {
        "n": int(len(t)),
        "median_z": float(np.median(z)) if len(z) else float("nan"),
        "coverage": float(np.mean((t >= p16) & (t <= p84))),
    }


def stage_seconds(output: str) -> dict[str, float]:
    """Seconds per stage, in pipeline order, from the run's unit records."""
    return run_records.stage_timings(output)[0]


def grid_prior(output: str, project: str) -> dict[str, float]:
    """The prior a mode fits with, read off its full SED grid (column ``weight`` = grid weight x prior).

    The demo draws its stars from the DEFAULT grid's weights, so a mode whose
    prior differs is fitting with a prior that is not the truth's.
    """
    from beastflow.io.sed_grid import SEDGrid

    url = os.path.join(output, f"{project}_seds.grid.hd5")
    if not os.path.exists(url):
        return {}
    g = SEDGrid(url)
    w = np.asarray(g.column("weight"), float)
    w = np.where(np.isfinite(w) & (w > 0), w, 0.0) / np.sum(w[np.isfinite(w) & (w > 0)])
    out: dict[str, float] = {"n_models": int(len(w))}
    for col in ("logA", "Av"):
        v = np.asarray(g.column(col), float)
        order = np.argsort(v, kind="stable")
        cum = np.cumsum(w[order])
        out[f"{col}_median"] = float(v[order][np.searchsorted(cum, 0.5)])
    logA = np.asarray(g.column("logA"), float)
    out["share_logA_lt_8"] = float(w[logA < 8.0].sum())
    out["share_logA_ge_9"] = float(w[logA >= 9.0].sum())
    return out


def prefect_warmup() -> float:
    """Run an empty flow first, so that neither mode's wall time holds the start of Prefect's temporary API."""
    from prefect import flow

    @flow(name="compat-effect-warmup", log_prints=False)
    def _warmup() -> int:
        return 0

    t0 = time.perf_counter()
    _warmup()
    return time.perf_counter() - t0


def run_mode(settings, mode: str, compat: str, workdir: Path) -> dict:
    """One pipeline run; returns wall time, stats URL, per-stage seconds, or the error."""
    from beastflow.flows.pipeline import pipeline_flow

    output = str(workdir / mode)
    s = settings.model_copy(
        update={
            "compat": compat,
            "project": settings.project.model_copy(update={"output": output}),
            "execution": settings.execution.model_copy(update={"progress": False}),
        }
    )
    print(f"--- {mode}: compat = {compat!r}, output {output}", flush=True)
    t0 = time.perf_counter()
    try:
        run = pipeline_flow(s)
    except Exception as exc:  # reported, the other mode still counts
        wall = time.perf_counter() - t0
        tb = traceback.format_exc()
        print(tb, flush=True)
        return {
            "mode": mode,
            "compat": compat,
            "output": output,
            "wall_s": wall,
            "ok": False,
            "error": f"{type(exc).__name__}: {exc}",
            "traceback_tail": tb.strip().splitlines()[-12:],
            "stage_s": stage_seconds(output),
        }
    wall = time.perf_counter() - t0
    stats = [u for u in run.urls["merge"] if str(u).endswith("_stats.parquet")]
    if len(stats) != 1:
        raise RuntimeError(f"{mode}: expected one merged *_stats.parquet among {run.urls['merge']}")
    print(f"    {mode}: {run.summary.get('stars', '?')} stars fitted in {wall:.1f} s", flush=True)
    return {
        "mode": mode,
        "compat": compat,
        "output": output,
        "wall_s": wall,
        "ok": True,
        "stats": stats[0],
        "summary": {k: v for k, v in run.summary.items() if isinstance(v, (int, float, str))},
        "stage_s": stage_seconds(output),
        "prior": grid_prior(output, s.project.name),
    }


def measure(runs: dict[str, dict], truth: dict[str, np.ndarray]) -> dict:
    """The table: shifts over the stars fitted in both modes, recovery per mode."""
    tables = {m: read_table(r["stats"]) for m, r in runs.items() if r["ok"]}
    tmap = by_star(truth)
    rows_t = {}
    for m, tab in tables.items():
        ids = np.asarray(tab["star_id"]).astype(np.int64)
        keep = np.array([int(i) in tmap for i in ids])
        rows_t[m] = (np.flatnonzero(keep), np.array([tmap[int(i)] for i in ids[keep]], dtype=np.int64))
    both = None
    if len(tables) == 2:
        d, c = by_star(tables["default"]), by_star(tables["compat"])
        common = sorted(set(d) & set(c))
        both = (np.array([d[i] for i in common], dtype=np.int64), np.array([c[i] for i in common], dtype=np.int64))
    result = {
        "n_fitted": {m: int(len(t["star_id"])) for m, t in tables.items()},
        "n_with_truth": {m: int(len(r[0])) for m, r in rows_t.items()},
        "n_both": int(len(both[0])) if both is not None else 0,
        "quantities": [],
    }
    for label, col, log10 in QUANTITIES:
        if not all(f"{col}_{p}" in t for t in tables.values() for p in ("p16", "p50", "p84")) or not tables:
            continue
        q: dict = {"label": label, "column": col, "log10": log10}
        if both is not None:
            shift = values(tables["compat"], f"{col}_p50", both[1], log10) - values(
                tables["default"], f"{col}_p50", both[0], log10
            )
            shift = shift[np.isfinite(shift)]
            q["median_shift"] = float(np.median(shift)) if len(shift) else float("nan")
            q["p90_abs_shift"] = float(np.percentile(np.abs(shift), 90)) if len(shift) else float("nan")
            q["frac_moved"] = float(np.mean(np.abs(shift) > 1e-9)) if len(shift) else float("nan")
            if col == "Av":  # relative shift: the attenuation law scales A(V) for the same dimming
                a_d = values(tables["default"], "Av_p50", both[0], False)
                a_c = values(tables["compat"], "Av_p50", both[1], False)
                ok = np.isfinite(a_d) & np.isfinite(a_c) & (a_d > 0)
                q["median_ratio"] = float(np.median(a_c[ok] / a_d[ok])) if ok.any() else float("nan")
                q["ratio_of_medians"] = float(np.median(a_c[ok]) / np.median(a_d[ok])) if ok.any() else float("nan")
        for m, tab in tables.items():
            if col not in truth:
                continue
            r_fit, r_truth = rows_t[m]
            t = values(truth, col, r_truth, log10)
            q[m] = recovery(*(values(tab, f"{col}_{p}", r_fit, log10) for p in ("p16", "p50", "p84")), t)
            q[m]["median_abs_error"] = float(np.nanmedian(np.abs(values(tab, f"{col}_p50", r_fit, log10) - t)))
        result["quantities"].append(q)
    return result


def fmt(x: float, spec: str) -> str:
    return "—" if x is None or not np.isfinite(x) else format(x, spec)


def print_table(result: dict, runs: dict[str, dict]) -> None:
    modes = [m for m in MODES if m in result["n_fitted"]]
    head = ["quantity", "median shift p50 (compat − default)", "90th pct \\|shift\\|"]
    for m in modes:
        head += [f"{m}: median (fit − truth)/σ", f"{m}: truth in p16–p84"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for q in result["quantities"]:
        cells = [q["label"], fmt(q.get("median_shift"), "+.3f"), fmt(q.get("p90_abs_shift"), ".3f")]
        for m in modes:
            rec = q.get(m)
            cells += [fmt(rec["median_z"], "+.2f"), fmt(100 * rec["coverage"], ".0f") + " %"] if rec else ["—", "—"]
        print("| " + " | ".join(cells) + " |")
    print()
    for q in result["quantities"]:
        if "median_ratio" in q:
            print(
                f"A(V) p50 compat / default: median of per-star ratios {q['median_ratio']:.3f}, "
                f"ratio of medians {q['ratio_of_medians']:.3f}"
            )
    print(
        "stars fitted: "
        + ", ".join(f"{m} {n}" for m, n in result["n_fitted"].items())
        + f"; in both: {result['n_both']}"
    )
    for m, r in runs.items():
        stages = ", ".join(f"{k} {v:.1f}" for k, v in r["stage_s"].items())
        status = "ok" if r["ok"] else f"FAILED ({r['error']})"
        print(
            f"wall time {m}: {r['wall_s']:.1f} s, {status}; stage compute seconds "
            f"(sum {sum(r['stage_s'].values()):.1f}): {stages}"
        )
    for m, r in runs.items():
        p = r.get("prior") or {}
        if p:
            print(
                f"prior of the {m} grid ({p['n_models']} models): weighted median log age {p['logA_median']:.2f}, "
                f"A(V) {p['Av_median']:.2f}; weight share log age < 8: {p['share_logA_lt_8']:.3f}, "
                f">= 9: {p['share_logA_ge_9']:.3f}"
            )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nstars", type=int, default=1000, help="catalogue size of the demo field (default 1000)")
    ap.add_argument("--seed", type=int, default=1, help="project seed of the demo field and both runs")
    ap.add_argument("--size", choices=["default", "small"], default="default", help="demo grid size")
    ap.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "beastflow-compat-effect-demo"))
    ap.add_argument("--force", action="store_true", help="rewrite the field and rerun both modes (no cache)")
    args = ap.parse_args(argv)

    from beastflow.demo import prepare_demo

    workdir = Path(args.workdir).resolve()
    field = workdir / "field"
    t0 = time.perf_counter()
    settings = prepare_demo(str(field), n_stars=args.nstars, size=args.size, seed=args.seed, force=args.force)
    if args.force:
        settings = settings.model_copy(update={"execution": settings.execution.model_copy(update={"cache": False})})
    prep_s = time.perf_counter() - t0
    print(
        f"demo field: {args.nstars} stars, size {args.size!r}, seed {args.seed}, in {field} ({prep_s:.1f} s)",
        flush=True,
    )
    truth = read_table(str(field / "demo_truth.parquet"))

    warm_s = prefect_warmup()
    print(f"Prefect warm-up (temporary API start, not counted in either mode): {warm_s:.1f} s", flush=True)
    runs = {mode: run_mode(settings, mode, compat, workdir) for mode, compat in MODES.items()}
    result = measure(runs, truth)
    print()
    print_table(result, runs)
    report = {
        "nstars": args.nstars,
        "size": args.size,
        "seed": args.seed,
        "prepare_s": prep_s,
        "warmup_s": warm_s,
        "runs": runs,
        "result": result,
    }
    (workdir / "compat_effect_demo.json").write_text(json.dumps(report, indent=2, default=str))
    print(f"\nwritten: {workdir / 'compat_effect_demo.json'}")
    return 0 if all(r["ok"] for r in runs.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
