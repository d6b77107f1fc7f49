"""Fitting: likelihood of every trimmed-grid model for every star, posterior
summaries (stats, 1-D/2-D PDFs, sparse lnP samples) and exact merging.

Modules: ``grid_info`` (fixed PDF bins from the FULL grid), ``likelihood``
(numba kernels, parallel over models, streaming chunks), ``stats``
(percentiles, column names), ``pdfs`` (bin assignment), ``lnp`` (sparse
samples), ``fitting`` (``run_fit``), ``merge`` (``run_merge``), ``outputs``
(artifact writers/readers).  No Prefect imports here.
"""
