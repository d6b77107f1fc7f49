"""A catalog on which chi2min over the sparse set and over all models differ (for compare_beast.py).

    .venv/bin/python bench/lowprior_field.py PEER_RUN OUT.fits [--nstars 25] [--max-candidates 30000]

BEAST reports chi2min over S = {lnP > max lnP - 10} only.  On phat_small the
best-chi2 model of every star lies in S (with the toothpick model the
posteriors collapse onto one model; with the splinter model they are wide, but
the chi2-best model still has a prior weight close to the peak's), so a
compat run that took the all-model minimum passed unnoticed.  This script
draws stars from BEAST's own full grid of a peer run (``PEER_RUN``, a
``run.sh small 0 --noise splinter`` folder): model fluxes times a 10 %
log-normal scatter per band, kept only when, under the splinter noise model
(error = 0.1 F), the model of smallest chi2 has lnP more than 11 below the
peak.  About 1 in 1000 draws qualifies on the small grid (~15 min on one busy
core for 25 stars).  The catalog (rates = flux / BEAST's Vega flux, with
ra/dec) then goes to the peer and to the comparison:

    PEER_HOME=... WORKDIR=/tmp/peer-low bash ../shared/peer-beast/run.sh small 0 --noise splinter \\
        --obsfile OUT.fits
    .venv/bin/python bench/compare_beast.py --noise splinter --peer-run /tmp/peer-low --retime-beast-fit 0
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import h5py
import numpy as np

#: ln units below the peak that put the chi2-best model safely outside S (BEAST's cut: 10)
MARGIN = 11.0
SPLINTER = 0.10


#: the peer harness's fixed band set (peer-beast README, "--obsfile")
FILTERS = [
    "HST_WFC3_F275W",
    "HST_WFC3_F336W",
    "HST_ACS_WFC_F475W",
    "HST_ACS_WFC_F814W",
    "HST_WFC3_F110W",
    "HST_WFC3_F160W",
]


def read_full_grid(peer_run: Path) -> tuple[np.ndarray, np.ndarray]:
    """(seds [N, bands], weight [N]) of BEAST's full SED grid of the run."""
    path = next(peer_run.glob("*/*_seds.grid.hd5"))
    with h5py.File(path, "r") as h5:
        return np.asarray(h5["seds"], dtype=np.float64), np.asarray(h5["grid"]["weight"], dtype=np.float64)


def draw_stars(
    seds: np.ndarray, weight: np.ndarray, n_stars: int, max_candidates: int, seed: int = 11, batch: int = 50
) -> np.ndarray:
    """Fluxes of stars whose smallest-chi2 model lies more than MARGIN below the lnP peak."""
    ok = (weight > 0) & np.all(seds > 0, axis=1)
    F = seds[ok]
    err = SPLINTER * F
    const = np.log(weight[ok]) - np.log(err).sum(axis=1)  # lnP without the chi2 term
    ivar = 1.0 / err**2
    rng = np.random.default_rng(seed)
    kept: list[np.ndarray] = []
    tried = 0
    while len(kept) < n_stars and tried < max_candidates:
        y = F[rng.integers(0, len(F), batch)] * np.exp(rng.normal(0.0, 0.1, (batch, F.shape[1])))
        tried += batch
        chi2 = ((y[:, None, :] - F[None, :, :]) ** 2 * ivar[None]).sum(axis=2)
        lnp = const[None, :] - 0.5 * chi2
        best_chi2 = chi2.argmin(axis=1)
        below = lnp.max(axis=1) - lnp[np.arange(batch), best_chi2]
        kept.extend(y[below > MARGIN])
    print(f"{len(kept)} stars from {tried} draws")
    return np.array(kept[:n_stars]).reshape(-1, F.shape[1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("peer_run", type=Path, help="peer-beast run folder (run.sh small 0 --noise splinter)")
    p.add_argument("out", type=Path, help="catalog to write (FITS)")
    p.add_argument("--nstars", type=int, default=25)
    p.add_argument("--max-candidates", type=int, default=30000)
    args = p.parse_args(argv)
    from astropy.table import Table

    seds, weight = read_full_grid(args.peer_run)
    stars = draw_stars(seds, weight, args.nstars, args.max_candidates)
    if not len(stars):
        raise SystemExit("no qualifying star found; raise --max-candidates")
    # rates against BEAST's own Vega fluxes, so that BEAST sees exactly these fluxes
    config = json.loads((args.peer_run / "peer_report.json").read_text())["config"]
    with h5py.File(Path(config["stellib"]).parent / "vega.hd5", "r") as f:
        sed = f["sed"][...]
    names = [x.decode() if isinstance(x, bytes) else str(x) for x in sed["FNAME"]]
    vega = np.array([sed["LUM"][names.index(n)] for n in FILTERS])
    t = Table()
    for k, name in enumerate(FILTERS):
        t[name.split("_")[-1].lower() + "_rate"] = stars[:, k] / vega[k]
    t["ra"] = 11.2335 + np.arange(len(stars)) * 1e-5
    t["dec"] = 41.9 + np.arange(len(stars)) * 1e-5
    t.write(args.out, overwrite=True)
    print(f"wrote {args.out}: {len(t)} stars")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
