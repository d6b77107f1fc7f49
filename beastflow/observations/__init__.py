"""Observed photometry and artificial-star catalogs before the noise model and fit.

Modules: ``catalogs`` (read/normalise/validate/write Parquet), ``geometry``
(convex hulls, polygon clipping and erosion), ``density_bins`` (tile binning),
``background`` (background variant of the map),
``density`` (source-density / background map, stage ``run_density_map``),
``cuts`` (``run_cut``), ``split`` (``run_split``), ``ast_inputs``
(``run_ast_inputs``).  Pure functions; no workflow-engine imports.
"""
