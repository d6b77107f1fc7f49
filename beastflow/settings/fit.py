"""[fit] settings: likelihood, PDFs, sparse posterior samples."""

from __future__ import annotations

from pydantic import Field

from .base import Section


class Fit(Section):
    #: number of random models kept per star in the sparse log-likelihood sample
    lnp_npts: int = Field(default=500, ge=0)
    pdf_max_nbins: int = Field(default=50, ge=2)
    #: parameter pairs for 2-D PDFs
    pdf2d_pairs: list[list[str]] = Field(
        default_factory=lambda: [["Av", "M_ini"], ["Av", "logA"], ["logA", "M_ini"], ["Av", "Rv"]]
    )
    #: models per chunk when streaming a trimmed grid through the kernel
    chunk_models: int = Field(default=1_048_576, ge=1024)
    #: stars fitted per block
    star_block: int = Field(default=64, ge=1)
