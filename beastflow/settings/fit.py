"""[fit] settings: likelihood, statistics, PDFs, sparse posterior samples.

Every key is documented in ``beastflow/data/settings_template.toml``.  With
``compat = "beast-2.1"`` several keys are overridden by named fields of
``beastflow.behaviour.FitBehaviour`` (``stats_threshold``, ``lnp_threshold``,
``completeness``; a warning says so when the user changed the key; see
docs/differences-from-beast.md, "Behaviour fields").
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from .base import Section


class Fit(Section):
    #: random models kept per star in the sparse log-posterior sample (0 = none)
    lnp_npts: int = Field(default=500, ge=0)
    #: the lnp sample is drawn among models with lnP - max(lnP) > lnp_threshold
    lnp_threshold: float = Field(default=-10.0, lt=0)
    #: statistics and PDFs use models with lnP - max(lnP) > stats_threshold;
    #: None = every model: only weights that together are < 1e-9 of the peak model's
    #: are skipped (likelihood.all_models_threshold; BEAST: -10, behaviour.fit.stats_threshold)
    stats_threshold: float | None = None
    #: detection-probability term in the likelihood from the noise model's
    #: per-band completeness c_k: "min" = ln min_k c_k, "product" = sum_k ln c_k,
    #: "none" = no term (BEAST: behaviour.fit.completeness)
    completeness: Literal["min", "product", "none"] = "min"
    #: most bins of a 1-D / 2-D PDF axis (fewer when the grid has fewer unique values)
    pdf_max_nbins: int = Field(default=50, ge=2)
    #: parameter pairs for 2-D PDFs
    pdf2d_pairs: list[list[str]] = Field(
        default_factory=lambda: [["Av", "M_ini"], ["Av", "logA"], ["logA", "M_ini"], ["Av", "Rv"]]
    )
    #: models per chunk when streaming a trimmed grid through the kernel
    chunk_models: int = Field(default=1_048_576, ge=1024)
    #: stars fitted per block (per-thread accumulators scale with it)
    star_block: int = Field(default=64, ge=1)
    #: prefix of the IAU-style ``Name`` column of the stats table
    surveyname: str = "PHAT"
    #: seed of the lnp sampling (None = project.seed)
    seed: int | None = None
    #: a band's flux more negative than this many times the noise model's largest
    #: error in that band is dropped (and flagged) as a bad measurement; see
    #: docs/formats.md "Bad measurements" (compat = "beast-2.1" fits it as measured)
    negative_flux_sigma: float = Field(default=5.0, gt=0)

    @field_validator("pdf2d_pairs")
    @classmethod
    def _pairs(cls, v: list[list[str]]) -> list[list[str]]:
        for p in v:
            if len(p) != 2 or p[0] == p[1]:
                raise ValueError(f"each 2-D PDF pair must name two different parameters, got {p}")
        return v

    @field_validator("stats_threshold")
    @classmethod
    def _neg(cls, v: float | None) -> float | None:
        if v is not None and v >= 0:
            raise ValueError(f"stats_threshold must be negative (ln units below the peak) or unset, got {v}")
        return v
