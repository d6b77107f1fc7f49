"""Truncheon ("trunchen") noise model (spec noise-model.md §6): full band covariance.

Needs ASTs in which every injected model SED was measured many times
(``[asts] realization_per_model`` ~ 20):

1. group the fake stars by identical input magnitude in the last band (one
   group = one injected model); groups with <= ``trunchen_min_group`` members
   are skipped;
2. keep the members recovered in at least one band; skip the group if <=
   ``trunchen_min_group`` remain; completeness = kept / group size (one value
   per model, not per band);
3. per band d = F_out - F_in (physical); bias = mean(d), covariance =
   sum (d - bias)(d - bias)^T / (n - 1);
4. for each grid model: the ``trunchen_k`` nearest AST models in
   log10(input flux) space (KD-tree), distances < 0.01 set to 0.01, weights
   proportional to 1/distance; weighted means of bias, covariance and
   completeness;
5. plus the calibration covariance A_kl F_k F_l;
6. stored: bias, error = sqrt(diag C), completeness (per band, the model's
   value repeated), and q_norm = -1/2 ln det C, C^-1 as diagonal + packed
   strict upper triangle (k = 0..n-2, l = k+1..n-1).

The likelihood of spec §6.7 uses q_norm and C^-1; the trimming stage uses
bias/error/completeness exactly as for the toothpick model and carries the
truncheon arrays along.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from beastflow.filters import short_names
from beastflow.io.noise_model import NoiseModelWriter, icov_exponents_for
from beastflow.io.sed_grid import SEDGrid
from beastflow.noise import absflux
from beastflow.noise.ast_stats import table_columns
from beastflow.observations import catalogs
from beastflow.physics import vega as vega_table  # looked up at call time (tests/seams.py)
from beastflow.provenance import make_provenance

if TYPE_CHECKING:
    from beastflow.settings import Settings

log = logging.getLogger(__name__)

#: models per internal sub-block: the gathered k neighbour covariances are
#: k x N_bands^2 floats per model
_SUB_BLOCK = 16_384


@dataclass(frozen=True)
class TrunchenStats:
    """One row per injected AST model (physical units)."""

    filters: list[str]
    in_flux: np.ndarray  # [M, nb] input fluxes
    bias: np.ndarray  # [M, nb]
    cov: np.ndarray  # [M, nb, nb]
    completeness: np.ndarray  # [M]
    n_members: np.ndarray  # [M] fake stars in the group
    n_kept: np.ndarray  # [M] recovered in at least one band
    n_groups_skipped: int

    def __len__(self) -> int:
        return len(self.in_flux)


def ast_model_stats(
    ast_df: Any,
    filters: Sequence[str],
    vega_fluxes: Sequence[float] | np.ndarray,
    min_group: int = 5,
    raw_recovery: bool = False,
) -> TrunchenStats:
    """Steps 1-3: per injected model bias, covariance and completeness.

    ``raw_recovery`` (``NoiseBehaviour.trunchen_raw_recovery``): BEAST counts a non-finite
    RATE or CUT_FLAG > 0 as recovered.
    """
    filters = list(filters)
    bands = short_names(filters)
    vega = np.asarray(vega_fluxes, dtype=np.float64)
    cols = table_columns(
        ast_df, [f"{b}_IN" for b in bands] + [f"{b}_RATE" for b in bands], optional=["CUT_FLAG"], what="AST table"
    )
    mag_in = np.column_stack([cols[f"{b}_IN"] for b in bands])
    rate = np.column_stack([cols[f"{b}_RATE"] for b in bands])
    if not raw_recovery:
        # a NaN measurement is a non-recovery; a quality-cut fake star too
        rate = np.where(np.isfinite(rate), rate, 0.0)
        if "CUT_FLAG" in cols:
            rate[cols["CUT_FLAG"] > 0] = 0.0
    key = mag_in[:, -1]
    ok = np.isfinite(key)
    rows = np.flatnonzero(ok)
    uniq, inv, counts = np.unique(key[rows], return_inverse=True, return_counts=True)
    order = np.argsort(inv, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)])
    out_in, out_b, out_c, out_comp, out_n, out_k = [], [], [], [], [], []
    skipped = 0
    for g in range(len(uniq)):
        members = rows[order[starts[g] : starts[g + 1]]]
        if len(members) <= min_group:
            skipped += 1
            continue
        rec = np.any(rate[members] != 0.0, axis=1)
        kept = members[rec]
        f_in = 10.0 ** (-0.4 * mag_in[kept]) * vega
        if len(kept) <= min_group or not np.all(np.isfinite(f_in)):
            # too few recoveries, or a band not inserted: no covariance to estimate
            skipped += 1
            continue
        d = rate[kept] * vega - f_in
        b = d.mean(axis=0)
        r = d - b
        out_in.append(f_in.mean(axis=0))
        out_b.append(b)
        out_c.append(r.T @ r / (len(kept) - 1))
        out_comp.append(len(kept) / len(members))
        out_n.append(len(members))
        out_k.append(len(kept))
    nb = len(filters)
    if not out_in:
        return TrunchenStats(
            filters,
            np.zeros((0, nb)),
            np.zeros((0, nb)),
            np.zeros((0, nb, nb)),
            np.zeros(0),
            np.zeros(0, int),
            np.zeros(0, int),
            skipped,
        )
    return TrunchenStats(
        filters,
        np.array(out_in),
        np.array(out_b),
        np.array(out_c),
        np.array(out_comp),
        np.array(out_n),
        np.array(out_k),
        skipped,
    )


class TrunchenEvaluator:
    """Steps 4-6 on blocks of models; the KD-tree is built once."""

    def __init__(self, stats: TrunchenStats, k: int = 10, a_matrix: np.ndarray | None = None):
        from scipy.spatial import cKDTree

        if len(stats) == 0:
            raise ValueError("no AST model with enough realisations for the truncheon model")
        self.stats = stats
        self.k = min(k, len(stats))
        self.tree = cKDTree(np.log10(stats.in_flux))
        self.a = None if a_matrix is None else np.asarray(a_matrix, dtype=np.float64)
        nb = stats.in_flux.shape[1]
        self.iu = np.triu_indices(nb, k=1)

    def __call__(self, seds: np.ndarray) -> dict[str, np.ndarray]:
        seds = np.asarray(seds, dtype=np.float64)
        parts = [self._sub(seds[i : i + _SUB_BLOCK]) for i in range(0, len(seds), _SUB_BLOCK)]
        if not parts:
            return self._sub(seds)
        return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}

    def _sub(self, seds: np.ndarray) -> dict[str, np.ndarray]:
        n, nb = seds.shape
        st = self.stats
        good = np.all(np.isfinite(seds) & (seds > 0), axis=1)
        q = np.log10(np.where(good[:, None], seds, 1.0))
        dist, idx = self.tree.query(q, k=self.k)
        dist = dist.reshape(n, self.k)
        idx = idx.reshape(n, self.k)
        w = 1.0 / np.maximum(dist, 0.01)
        w /= w.sum(axis=1, keepdims=True)
        bias = np.einsum("nj,njb->nb", w, st.bias[idx])
        cov = np.einsum("nj,njab->nab", w, st.cov[idx])
        comp = np.einsum("nj,nj->n", w, st.completeness[idx])
        if self.a is not None:
            if self.a.ndim == 1:
                cov[:, np.arange(nb), np.arange(nb)] += self.a[None, :] ** 2 * seds**2
            else:
                cov += self.a[None] * seds[:, :, None] * seds[:, None, :]
        sign, logdet = np.linalg.slogdet(cov)
        posdef = good & (sign > 0) & np.isfinite(logdet)
        safe = np.where(posdef[:, None, None], cov, np.eye(nb)[None])
        icov = np.linalg.inv(safe)
        sigma = np.sqrt(np.clip(np.diagonal(cov, axis1=1, axis2=2), 0.0, None))
        # a model whose covariance is not positive definite cannot be fitted:
        # zero completeness, so trimming removes it (negative error = invalid)
        comp = np.where(posdef, comp, 0.0)
        comp_b = np.repeat(comp[:, None], nb, axis=1)
        error = np.where(comp_b > 0, sigma, -sigma)
        nan = np.full((n, nb), np.nan)
        return {
            "bias": np.where(good[:, None], bias, nan),
            "error": np.where(good[:, None], error, nan),
            "completeness": comp_b,
            "q_norm": np.where(posdef, -0.5 * logdet, np.nan),
            "icov_diag": np.where(posdef[:, None], np.diagonal(icov, axis1=1, axis2=2), np.nan),
            "icov_offdiag": np.where(posdef[:, None], icov[:, self.iu[0], self.iu[1]], np.nan),
        }


def run_trunchen(settings: Settings, sed_grid_url: str, ast_url: str, out_url: str) -> str:
    """Truncheon noise model of ``ast_url`` evaluated on one SED (sub)grid, streamed."""
    nm = settings.noise_model
    beh = settings.resolved_behaviour
    grid = SEDGrid(sed_grid_url)
    filters = grid.filters
    vega = np.asarray(vega_table.vega_band_fluxes(filters, beh.physics.vega_positive_points), dtype=np.float64)
    stats = ast_model_stats(
        catalogs.read_asts(ast_url, filters), filters, vega, nm.trunchen_min_group, beh.noise.trunchen_raw_recovery
    )
    if len(stats) == 0:
        raise ValueError(
            f"{ast_url}: no injected model has more than {nm.trunchen_min_group} realisations with a recovery "
            "(fake stars grouped by identical input magnitude in the last band); the truncheon model needs "
            'repeated ASTs ([asts] realization_per_model ~ 20) -- use [noise_model] model = "toothpick"'
        )
    a_matrix = absflux.load_absflux_matrix(nm.absflux_covariance, len(filters)) if nm.absflux_covariance else None
    ev = TrunchenEvaluator(stats, nm.trunchen_k, a_matrix)
    inputs = {"asts": ast_url, "sed_grid": sed_grid_url}
    if nm.absflux_covariance:
        inputs["absflux_covariance"] = nm.absflux_covariance
    prov = make_provenance(
        "noisemodel",
        settings.section_hash("compat", "noise_model"),
        inputs=inputs,
        extra={"vega_fluxes": vega.tolist()},
    )
    meta = {
        "model": "trunchen",
        "compat": settings.compat,
        "n_ast_models": len(stats),
        "n_groups_skipped": stats.n_groups_skipped,
        "k": ev.k,
        "absflux_matrix": None if a_matrix is None else a_matrix.tolist(),
    }
    precision = nm.precision or beh.noise.trunchen_precision
    with NoiseModelWriter(
        out_url,
        filters,
        n_models=grid.n_models,
        provenance=prov,
        sed_grid=sed_grid_url,
        meta=meta,
        with_trunchen=True,
        precision=precision,
        icov_exponents=icov_exponents_for(vega),
        one_completeness=True,
    ) as w:
        for block in grid.iter_chunks(nm.chunk_models, columns=[]):
            w.append(ev(block.seds))
    log.info("trunchen noise model %s: %d models from %d AST models", out_url, grid.n_models, len(stats))
    return out_url
