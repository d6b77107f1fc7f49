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
import json  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

# the parts of the comparison, one module each (bench/beast_compare/): the BEAST side
# (peer), beastflow's inputs from it (convert), the stages run and compared (stages,
# checks, metrics), the effects study (effects), the printed tables (report)
from beast_compare.common import PEER_DIR  # noqa: E402
from beast_compare.convert import to_bf_grid, to_bf_noise, write_inputs  # noqa: E402
from beast_compare.effects import do_effects  # noqa: E402
from beast_compare.peer import Peer, read_beast_grid, read_beast_noise, retime_beast_fit, run_peer  # noqa: E402
from beast_compare.report import report  # noqa: E402
from beast_compare.stages import do_fit, do_noise, do_physics, do_trim, stage  # noqa: E402

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
