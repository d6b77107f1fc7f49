"""Noise (observation) model and trimming stages.

- ``ast_stats``: binned artificial-star statistics of one band, table readers.
- ``toothpick``: the toothpick noise model (bands independent) and ``run_noisemodel``.
- ``absflux``: absolute flux calibration covariance.
- ``trim``: per-sub-file trimming of SED grid + noise model, ``run_trim``.

Pure library code: no Prefect imports (docs/stages.md).
"""
