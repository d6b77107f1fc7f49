"""Physics model: stellar and dust priors, grid weights, extinction laws, SED grid.

Pure science functions (no Prefect).  Import the submodules directly, e.g.
``from beastflow.physics.grid_weights import compute_grid_weights``.
"""
