"""The printed report: agreement, wall time, fit speed, the effects study."""

from __future__ import annotations

from typing import Any

from .common import (
    MIN_STARS_FRACTION,
    NOT_AVAILABLE,
    SPEED_GOAL,
    TOL_CHI2,
    TOL_NOISE,
    TOL_PDF_PEAK,
    TOL_SED,
    fmt,
    print_table,
)
from .peer import Peer

# ------------------------------------------------------------------ report


def report(R: dict[str, Any], peer: Peer) -> bool:
    """Print every table; True when every agreement criterion is met.  Also sets ``R["speed"]``."""
    n_stars = peer.stages.get("fit", {}).get("info", {}).get("n_stars", peer.config.get("nstars_used"))
    rows: list[list[Any]] = []
    ok_all = True
    for section in (physics_rows, noise_rows, trim_rows, fit_rows):
        r, ok = section(R)
        rows += r
        ok_all &= ok
    print_table(
        f'Agreement, beastflow compat = "beast-2.1" vs BEAST 2.1.0 ({peer.config.get("grid")} grid, {n_stars} stars)',
        ["stage", "measure", "value", "criterion", "pass"],
        rows,
    )
    print_timing(R, peer)
    R["speed"] = speed_table(R, peer, n_stars)
    print_effects(R)
    print("\nresult:", "ALL AGREEMENT CRITERIA MET" if ok_all else "SOME AGREEMENT CRITERIA NOT MET")
    return ok_all


def status(R: dict[str, Any], name: str) -> str:
    r = R.get(name)
    if r is None:
        return NOT_AVAILABLE
    return r.get("status", "ok")


# each agreement section: (its table rows, whether its criteria are met)


def physics_rows(R: dict[str, Any]) -> tuple[list[list[Any]], bool]:
    rows: list[list[Any]] = []
    ok_all = True
    ph = R.get("physics", {})
    if status(R, "physics") == "ok":
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
    return rows, ok_all


def noise_rows(R: dict[str, Any]) -> tuple[list[list[Any]], bool]:
    rows: list[list[Any]] = []
    ok_all = True
    no = R.get("noise", {})
    if status(R, "noise") == "ok":
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
    return rows, ok_all


def trim_rows(R: dict[str, Any]) -> tuple[list[list[Any]], bool]:
    rows: list[list[Any]] = []
    ok_all = True
    tr = R.get("trim", {})
    if status(R, "trim") == "ok":
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
    return rows, ok_all


def fit_rows(R: dict[str, Any]) -> tuple[list[list[Any]], bool]:
    rows: list[list[Any]] = []
    ok_all = True
    fi = R.get("fit", {})
    if status(R, "fit") == "ok":
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
    return rows, ok_all


def print_timing(R: dict[str, Any], peer: Peer) -> None:
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


def speed_table(R: dict[str, Any], peer: Peer, n_stars: int | None) -> dict[str, Any]:
    """Fit time per star, BEAST's star loop against ours; printed, and returned for the JSON."""
    fi = R.get("fit", {})
    finfo = peer.stages.get("fit", {}).get("info", {})
    speed: dict[str, Any] = {}
    if status(R, "fit") == "ok" and finfo.get("fit_loop_s") and n_stars:
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
    return speed


def print_effects(R: dict[str, Any]) -> None:
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
