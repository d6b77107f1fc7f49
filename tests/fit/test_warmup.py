"""The kernel warm-up (issue 14, cold start).  Its own module: the fit tests swap the
Vega lookup for their synthetic field, and the warm-up fits with the real one."""


def test_warmup_fits_both_modes():
    """``python -m beastflow.fit.warmup`` (compile the kernels into the cache before a SLURM
    array) fits its tiny field in default and compat mode without error."""
    from beastflow.fit.warmup import warm_up

    assert warm_up() > 0
